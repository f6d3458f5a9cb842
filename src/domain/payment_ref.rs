use super::InvalidInput;

/// The caller's reference of a payment (`POST /v1/orders/{id}/pay`): 1–128 printable
/// characters, no control characters (an order record keeps it on a line of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRef(String);

impl PaymentRef {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: String) -> Result<Self, InvalidInput> {
        let length = raw.chars().count();
        if !(1..=Self::MAX_CHARS).contains(&length) || raw.chars().any(char::is_control) {
            return Err(InvalidInput(format!(
                "payment_ref must be 1-{} printable characters",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_text_up_to_128_characters() {
        assert!(PaymentRef::parse("psp:ch_3Nf 支付".into()).is_ok());
        assert!(
            PaymentRef::parse("é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert!(PaymentRef::parse("x".repeat(129)).is_err());
        assert!(PaymentRef::parse(String::new()).is_err());
        assert!(PaymentRef::parse("line\nbreak".into()).is_err());
        assert!(PaymentRef::parse("nul\0".into()).is_err());
    }
}
