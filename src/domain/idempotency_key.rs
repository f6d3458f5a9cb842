use super::InvalidInput;

/// The `Idempotency-Key` header: 1–128 visible ASCII characters (`!` to `~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &[u8]) -> Result<Self, InvalidInput> {
        let visible = raw.iter().all(|b| (b'!'..=b'~').contains(b));
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !visible {
            return Err(InvalidInput(format!(
                "Idempotency-Key must be 1-{} visible ASCII characters",
                Self::MAX_LEN
            )));
        }
        // Visible ASCII is valid UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii_only() {
        assert!(IdempotencyKey::parse(b"order-7f3a:{x}").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 128]).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 129]).is_err());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"has space").is_err());
        assert!(IdempotencyKey::parse("ключ".as_bytes()).is_err());
    }
}
