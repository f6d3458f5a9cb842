use super::InvalidInput;

/// The caller's reference of a payment (`POST /v1/orders/{id}/pay`): 1–128 printable
/// characters, no control characters (an order record keeps it on a line of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRef(String);

impl PaymentRef {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: String) -> Result<Self, InvalidInput> {
        super::free_text("payment_ref", raw, Self::MAX_CHARS).map(Self)
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
