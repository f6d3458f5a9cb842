//! An accepted order, as the API answers it.

use serde::Serialize;

use crate::domain::IdempotencyKey;
use crate::domain::event::{EventKind, OrderEvent};
use crate::domain::sale::format_time;

/// The most orders a buyer's list shows, and keeps in Redis: the newest (`lua/purchase.lua`'s
/// LISTED).
pub const LISTED_ORDERS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// When payment is due, for an order of a sale with a payment window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<String>,
    /// In `FLASHSALE_CONFIRM=jetstream`, on a new order: `confirmed` (JetStream holds its
    /// event, 201) or `pending` (it will, from the outbox; 202); the same on a replay (200) and
    /// on a cancel that changed the order (its `order.cancelled` event). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub delivery: Option<Delivered>,
}

/// An answer's `"delivery"`: how far the event of the change it answers had got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivered {
    /// JetStream holds it.
    Confirmed,
    /// Not yet acknowledged: the outbox delivers it.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Final when accepted (a sale without a payment window).
    Created,
    /// Holds its units until `pay_by`; then `paid` or `expired`.
    PendingPayment,
    Paid,
    /// Not paid in time: its units went back to the sale.
    Expired,
    Cancelled,
}

impl Order {
    /// The order as the purchase and cancel answers show it, `remaining` units left in its
    /// sale.
    pub fn new(view: OrderView, remaining: u64) -> Self {
        Self {
            order_id: view.order_id,
            sku: view.sku,
            user_id: view.user_id,
            quantity: view.quantity,
            unit_price: view.unit_price,
            total_amount: view.total_amount,
            created_at: view.created_at,
            remaining,
            status: view.status,
            pay_by: view.pay_by,
            delivery: None,
        }
    }

    /// The `order.created` event `purchase.lua` wrote for this order.
    pub fn created_event(&self, key: Option<&IdempotencyKey>) -> OrderEvent {
        OrderEvent {
            event: EventKind::Created,
            order_id: self.order_id.clone(),
            sku: self.sku.clone(),
            user_id: self.user_id.clone(),
            quantity: self.quantity,
            unit_price: self.unit_price,
            total_amount: self.total_amount,
            created_at: self.created_at.clone(),
            idempotency_key: key.map(|k| k.as_str().to_owned()),
            pay_by: self.pay_by.clone(),
            paid_at: None,
            payment_ref: None,
        }
    }
}

/// What an order costs: `unit_price × quantity`, checked. The PUT caps prices
/// ([`crate::domain::sale::MAX_PRICE`]) so that no sale's order can overflow; `None` means the
/// numbers did not come from a sale (foreign data in Redis), and the caller refuses them.
pub fn total_amount(unit_price: u64, quantity: u32) -> Option<u64> {
    unit_price.checked_mul(u64::from(quantity))
}

/// An order as `GET /v1/orders/{order_id}` and `GET /v1/sales/{sku}/orders` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub sku: String,
    pub user_id: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub total_amount: u64,
    pub created_at: String,
    pub status: OrderStatus,
    /// When payment is due (sales with a payment window); null otherwise.
    pub pay_by: Option<String>,
    pub paid_at: Option<String>,
    pub payment_ref: Option<String>,
    /// Whether the order's latest event has reached JetStream.
    pub delivered: bool,
}

impl OrderView {
    /// The event of the transition that left the order as it is now (`order.paid`, say).
    pub fn event(&self, kind: EventKind) -> OrderEvent {
        OrderEvent {
            event: kind,
            order_id: self.order_id.clone(),
            sku: self.sku.clone(),
            user_id: self.user_id.clone(),
            quantity: self.quantity,
            unit_price: self.unit_price,
            total_amount: self.total_amount,
            created_at: self.created_at.clone(),
            idempotency_key: None,
            pay_by: self.pay_by.clone(),
            paid_at: self.paid_at.clone(),
            payment_ref: self.payment_ref.clone(),
        }
    }
}

impl OrderStatus {
    pub fn parse(status: &str) -> Option<Self> {
        match status {
            "created" => Some(OrderStatus::Created),
            "pending_payment" => Some(OrderStatus::PendingPayment),
            "paid" => Some(OrderStatus::Paid),
            "expired" => Some(OrderStatus::Expired),
            "cancelled" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }

    /// The name in records, JSON and PostgreSQL.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the order holds its units (counts as sold).
    pub fn holds_units(self) -> bool {
        !matches!(self, OrderStatus::Expired | OrderStatus::Cancelled)
    }
}
/// An order's fields as its sale keeps them (the scripts' order record, whose encoding is
/// the store's: `store/record.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord<'a> {
    pub status: OrderStatus,
    pub quantity: u32,
    pub unit_price: u64,
    pub created_at_ms: i64,
    pub pay_by_ms: Option<i64>,
    pub paid_at_ms: Option<i64>,
    /// The outbox entry of the order's latest event; empty once JetStream holds it.
    pub event: &'a str,
    pub payment_ref: Option<&'a str>,
    pub user_id: &'a str,
}

impl OrderRecord<'_> {
    /// The order as the API shows it; `None` when its total overflows (no script writes one).
    pub fn view(&self, order_id: &str, sku: &str, delivered: bool) -> Option<OrderView> {
        Some(OrderView {
            order_id: order_id.to_owned(),
            sku: sku.to_owned(),
            user_id: self.user_id.to_owned(),
            quantity: self.quantity,
            unit_price: self.unit_price,
            total_amount: total_amount(self.unit_price, self.quantity)?,
            created_at: format_time(self.created_at_ms),
            status: self.status,
            pay_by: self.pay_by_ms.map(format_time),
            paid_at: self.paid_at_ms.map(format_time),
            payment_ref: self.payment_ref.map(str::to_owned),
            delivered,
        })
    }
}
