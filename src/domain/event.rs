//! The order event, and the message that carries the events of one outbox entry: what
//! JetStream subscribers receive.

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

/// One order event: an item of the `{"events": [...]}` payload of
/// `<prefix>.<created|paid|expired|cancelled>.<sku>` (docs/asyncapi.json). Every event carries
/// the whole order as it stood after the transition, so a subscriber needs no earlier event.
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

/// One JetStream message: the events of one outbox entry, all of one kind and one sale. A
/// purchase script call writes the orders it decided as one entry, a sweep the orders it
/// expired; a payment or a cancel is an entry of one event. One message a batch is one
/// PubAck and, with `sync_interval: always`, one fsync for all of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMessage {
    events: Vec<OrderEvent>,
}

/// The payload of a message: `{"events": [...]}`. Versions before batches published one
/// event a message, its object alone; a stream holds both, and readers take both.
#[derive(Serialize)]
struct BatchPayload<'a> {
    events: &'a [OrderEvent],
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    Batch { events: Vec<OrderEvent> },
    Single(Box<OrderEvent>),
}

/// What cannot be one message: no event, or events of several kinds or sales.
#[derive(Debug, thiserror::Error)]
#[error("an order message holds events of one kind and one sale, at least one")]
pub struct MixedMessage;

impl OrderMessage {
    pub fn new(events: Vec<OrderEvent>) -> Result<Self, MixedMessage> {
        let first = events.first().ok_or(MixedMessage)?;
        if events
            .iter()
            .any(|e| e.event != first.event || e.sku != first.sku)
        {
            return Err(MixedMessage);
        }
        Ok(Self { events })
    }

    /// The message of an entry of one event (a payment, a cancel).
    pub fn one(event: OrderEvent) -> Self {
        Self {
            events: vec![event],
        }
    }

    pub fn events(&self) -> &[OrderEvent] {
        &self.events
    }

    fn first(&self) -> &OrderEvent {
        // `new` refuses an empty message.
        &self.events[0]
    }

    /// `<prefix>.<kind>.<sku>`: the subject of every event it holds.
    pub fn subject(&self, prefix: &str) -> String {
        self.first().subject(prefix)
    }

    /// `Nats-Msg-Id`: the entry's own stable id, so JetStream drops the relay's re-sending of
    /// what a handler confirmed. One event: that event's id, as versions before batches
    /// gave it. Several: the first's id and how many, `<id>+<n>`; no other entry starts with
    /// the same event (an order is created once and ends once).
    pub fn message_id(&self) -> String {
        match self.events.len() {
            1 => self.first().message_id(),
            n => format!("{}+{n}", self.first().message_id()),
        }
    }

    pub fn payload(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&BatchPayload {
            events: &self.events,
        })
    }

    /// The events of a stored message, of either format.
    pub fn decode(payload: &[u8]) -> Result<Vec<OrderEvent>, serde_json::Error> {
        Ok(match serde_json::from_slice(payload)? {
            Payload::Batch { events } => events,
            Payload::Single(event) => vec![*event],
        })
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

    fn created(order_id: &str, sku: &str) -> OrderEvent {
        OrderEvent {
            event: EventKind::Created,
            order_id: order_id.into(),
            sku: sku.into(),
            user_id: "u1".into(),
            quantity: 1,
            unit_price: 5,
            total_amount: 5,
            created_at: "2026-11-25T15:04:52.123Z".into(),
            idempotency_key: None,
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        }
    }

    #[test]
    fn a_message_is_one_entry_of_one_kind_and_sale() {
        let one = OrderMessage::new(vec![created("a-1-7", "phone")]).expect("one event");
        assert_eq!(
            one.message_id(),
            "a-1-7",
            "one event: its own id, as before batches"
        );
        assert_eq!(one.subject("orders"), "orders.created.phone");
        let three = OrderMessage::new(vec![
            created("a-1-7", "phone"),
            created("a-1-8", "phone"),
            created("a-1-9", "phone"),
        ])
        .expect("three events");
        assert_eq!(three.message_id(), "a-1-7+3");
        let payload = three.payload().expect("serializes");
        let json: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(json["events"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            OrderMessage::decode(&payload).expect("decodes"),
            three.events()
        );
        assert!(OrderMessage::new(Vec::new()).is_err());
        assert!(
            OrderMessage::new(vec![created("a-1-7", "phone"), created("b-1-1", "tv")]).is_err()
        );
        let mut paid = created("a-1-8", "phone");
        paid.event = EventKind::Paid;
        assert!(OrderMessage::new(vec![created("a-1-7", "phone"), paid]).is_err());
    }

    #[test]
    fn a_message_of_the_format_before_batches_reads_as_its_one_event() {
        let event = created("a-1-7", "phone");
        let legacy = serde_json::to_vec(&event).expect("serializes");
        assert_eq!(OrderMessage::decode(&legacy).expect("decodes"), vec![event]);
        assert!(OrderMessage::decode(b"{\"hello\": 1}").is_err());
    }
}
