//! Parse, don't validate: each type here can only hold a valid value, so handlers and the
//! store never see raw strings from a request.

pub mod event;
mod idempotency_key;
pub mod order;
mod order_id;
mod payment_ref;
mod quantity;
pub mod queue;
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
