use std::fmt;

use super::InvalidInput;

/// A sale's identifier: 1–64 characters of `[A-Za-z0-9_-]`.
///
/// The character set matters beyond tidiness: a sku is embedded in Redis keys as the
/// `{hash tag}` and in NATS subjects, where braces, dots and wildcards would change meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
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

    /// First 16 hex digits of SHA-1 of the sku: the prefix of its order ids. The Lua scripts
    /// compute the same with `redis.sha1hex`.
    pub fn digest(&self) -> String {
        let mut hex = sha1_smol::Sha1::from(self.as_str()).digest().to_string();
        hex.truncate(16);
        hex
    }
}

/// A sku read back from a stored record (a sale definition) is checked as one from a request.
impl TryFrom<String> for Sku {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, InvalidInput> {
        Self::parse(&raw)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
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
    fn digest_is_the_sha1_prefix() {
        // printf limit | sha1sum
        let sku = Sku::parse("limit").expect("valid sku");
        assert_eq!(sku.digest(), "e4d68c5a97e46632");
    }

    #[test]
    fn a_stored_sku_is_checked_as_a_requested_one() {
        let sku: Sku = serde_json::from_str("\"phone-1\"").expect("valid");
        assert_eq!(serde_json::to_string(&sku).expect("json"), "\"phone-1\"");
        assert!(serde_json::from_str::<Sku>("\"a.b\"").is_err());
    }

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
