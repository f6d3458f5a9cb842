use std::fmt;

use super::InvalidInput;

/// A sale's identifier: 1–64 characters of `[A-Za-z0-9_-]`.
///
/// The character set matters beyond tidiness: a sku is embedded in Redis keys as the
/// `{hash tag}` and in NATS subjects, where braces, dots and wildcards would change meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !valid_chars {
            return Err(InvalidInput(format!(
                "sku must be 1-{} characters of [A-Za-z0-9_-]",
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by sku are looked up by `&str` without a copy (the derived Hash and Eq are the
/// string's own, as `Borrow` requires).
impl std::borrow::Borrow<str> for Sku {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet_up_to_64() {
        assert!(Sku::parse("iPhone_17-Pro").is_ok());
        assert!(Sku::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        for bad in ["", "a b", "a{b}", "a.b", "a*", "ü", "a/b"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Sku::parse(&"a".repeat(65)).is_err());
    }
}
