use super::InvalidInput;

/// An order id as the purchase script makes it: `<16 hex digits>-<digits>-<digits>`, the first
/// part being the digest of the order's sku (see `Sku::digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderId(String);

impl OrderId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let mut parts = raw.split('-');
        let digest = parts.next().unwrap_or_default();
        let numbers: Vec<&str> = parts.collect();
        let well_formed = raw.len() <= Self::MAX_LEN
            && digest.len() == 16
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && numbers.len() == 2
            && numbers
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            return Err(InvalidInput(
                "order_id is not an id this service issued".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The digest of the order's sku.
    pub fn sku_digest(&self) -> &str {
        &self.0[..16]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_issued_ids_only() {
        let id = OrderId::parse("f6be6ca910984ef0-1795619575669-1").expect("valid");
        assert_eq!(id.sku_digest(), "f6be6ca910984ef0");
        for bad in [
            "",
            "x",
            "f6be6ca910984ef0-1",
            "f6be6ca910984eF0-1-1",
            "f6be6ca910984ef0-1-a",
            "f6be6ca910984ef0-1-1-1",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
