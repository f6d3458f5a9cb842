//! Parse, don't validate: each type here can only hold a valid value, so handlers and the
//! inventory never see raw strings from a request.

mod idempotency_key;
mod order_id;
mod payment_ref;
mod quantity;
mod sku;
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
