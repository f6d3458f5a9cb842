//! Parse, don't validate: each type here can only hold a valid value, so handlers and the
//! store never see raw strings from a request.

pub mod event;
mod idempotency_key;
pub mod order;
mod order_id;
mod payment_ref;
mod quantity;
pub mod record;
pub mod refusal;
pub mod sale;
mod sku;
pub mod snapshot;
mod user_id;

pub use idempotency_key::IdempotencyKey;
pub use order_id::OrderId;
pub use payment_ref::PaymentRef;
pub use quantity::Quantity;
pub use sku::Sku;
pub use user_id::UserId;

/// Why a request value was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// The rule of the free-text values (`user_id`, `payment_ref`): 1 to `max` characters (not
/// bytes), none of them a control character (records keep each value on a line of its own).
fn free_text(field: &str, raw: String, max: usize) -> Result<String, InvalidInput> {
    let chars = raw.chars().count();
    if chars == 0 || chars > max || raw.chars().any(char::is_control) {
        return Err(InvalidInput(format!(
            "{field} must be 1-{max} characters without control characters"
        )));
    }
    Ok(raw)
}

/// Serde helpers for counts in request bodies: JSON has one number type, and `88.0` is the
/// same whole number as `88` (JSON Schema's `integer` takes both), so both are read as 88;
/// a fraction or a negative number is refused.
pub mod whole_number {
    use serde::{Deserialize, Deserializer, de::Error};

    fn whole(number: serde_json::Number) -> Option<u64> {
        number.as_u64().or_else(|| {
            let float = number.as_f64()?;
            // Below 2^64 and without a fraction: exact as u64.
            (float >= 0.0 && float.fract() == 0.0 && float < 18_446_744_073_709_551_616.0)
                .then_some(float as u64)
        })
    }

    pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        whole(number).ok_or_else(|| D::Error::custom("expected a whole number of at least 0"))
    }

    pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?
            .map(|number| {
                whole(number)
                    .ok_or_else(|| D::Error::custom("expected a whole number of at least 0"))
            })
            .transpose()
    }
}
