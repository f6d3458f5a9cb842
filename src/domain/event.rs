//! The order event: what JetStream subscribers receive, one JSON object per message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    #[serde(rename = "order.created")]
    Created,
    #[serde(rename = "order.cancelled")]
    Cancelled,
    #[serde(rename = "order.paid")]
    Paid,
    #[serde(rename = "order.expired")]
    Expired,
}

impl EventKind {
    /// The subject token after the prefix: `<prefix>.created.<sku>`.
    pub fn token(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Cancelled => "cancelled",
            EventKind::Paid => "paid",
            EventKind::Expired => "expired",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            "created" => Some(EventKind::Created),
            "cancelled" => Some(EventKind::Cancelled),
            "paid" => Some(EventKind::Paid),
            "expired" => Some(EventKind::Expired),
            _ => None,
        }
    }
}

/// The payload of `<prefix>.<created|paid|expired|cancelled>.<sku>`. Every event carries the
/// whole order as it stood after the transition, so a subscriber needs no earlier event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderEvent {
    pub event: EventKind,
    pub order_id: String,
    pub sku: String,
    pub user_id: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub total_amount: u64,
    /// When the order was accepted (also in a cancellation): RFC 3339, UTC, milliseconds.
    pub created_at: String,
    /// The `Idempotency-Key` the order was bought with, if any: after Redis loses a sale, the
    /// rebuilt sale remembers it, so a retry still gets this order back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When payment is due, in every event of an order of a sale with a payment window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<String>,
    /// In `order.paid`: when Redis accepted the payment, and the caller's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
}

impl OrderEvent {
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.event.token(), self.sku)
    }

    /// `Nats-Msg-Id`: JetStream drops a second message with the same id inside its duplicate
    /// window, which makes the relay's re-publishing harmless.
    pub fn message_id(&self) -> String {
        match self.event {
            EventKind::Created => self.order_id.clone(),
            kind => format!("{}.{}", self.order_id, kind.token()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_ids_and_payload_follow_the_contract() {
        let event = OrderEvent {
            event: EventKind::Cancelled,
            order_id: "abc-1-2".into(),
            sku: "phone".into(),
            user_id: "u1".into(),
            quantity: 2,
            unit_price: 5,
            total_amount: 10,
            created_at: "2026-11-25T15:04:52.123Z".into(),
            idempotency_key: None,
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        };
        assert_eq!(event.subject("orders"), "orders.cancelled.phone");
        assert_eq!(event.message_id(), "abc-1-2.cancelled");
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["event"], "order.cancelled");
        assert_eq!(json["total_amount"], 10);
        assert!(
            json.get("idempotency_key").is_none(),
            "absent when the order had none"
        );
        let paid = OrderEvent {
            event: EventKind::Paid,
            paid_at: Some("2026-11-25T15:05:00.000Z".into()),
            ..event
        };
        assert_eq!(paid.subject("orders"), "orders.paid.phone");
        assert_eq!(paid.message_id(), "abc-1-2.paid");
        let json = serde_json::to_value(&paid).expect("serializes");
        assert_eq!(json["event"], "order.paid");
        assert_eq!(json["paid_at"], "2026-11-25T15:05:00.000Z");
        let expired = OrderEvent {
            event: EventKind::Expired,
            ..paid
        };
        assert_eq!(expired.message_id(), "abc-1-2.expired");
    }
}
