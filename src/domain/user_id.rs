use super::InvalidInput;

/// A buyer: 1–128 characters (not bytes), none of them a control character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: String) -> Result<Self, InvalidInput> {
        super::free_text("user_id", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes() {
        assert!(UserId::parse("买".repeat(128)).is_ok());
        assert!(UserId::parse("a".repeat(129)).is_err());
    }

    #[test]
    fn refuses_empty_and_control_characters() {
        assert!(UserId::parse(String::new()).is_err());
        assert!(UserId::parse("a\nb".into()).is_err());
        assert!(UserId::parse("a\u{0}".into()).is_err());
    }
}
