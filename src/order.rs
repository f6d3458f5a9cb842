//! An accepted order, as the API answers it.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/sales/{sku}/orders`, as sent; the handler parses it into domain types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub user_id: String,
    pub quantity: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: String,
    pub sku: String,
    pub user_id: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub total_amount: u64,
    /// RFC 3339, UTC, milliseconds; taken from Redis's clock inside the purchase script.
    pub created_at: String,
    /// Units left in the sale right after this order (or at the replay, for a replay).
    pub remaining: u64,
    pub status: OrderStatus,
    /// In `FLASHSALE_CONFIRM=jetstream`, on a new order: `confirmed` (JetStream holds its
    /// event, 201) or `pending` (it will, from the outbox; 202). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Cancelled,
}
