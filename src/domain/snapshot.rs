//! A sale's state folded from its order events: what JetStream (and a surviving outbox) says
//! the sale's orders are. The rebuild installs it into Redis (`store/restore.rs`); the audit
//! compares it with what Redis holds.

use std::collections::HashMap;

use chrono::DateTime;

use crate::domain::event::{EventKind, OrderEvent};
use crate::domain::order::{OrderRecord, OrderStatus, OrderView};

/// One order as the event history leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderState {
    status: OrderStatus,
    quantity: u32,
    unit_price: u64,
    created_at_ms: i64,
    pay_by_ms: Option<i64>,
    paid_at_ms: Option<i64>,
    payment_ref: Option<String>,
    user_id: String,
    idempotency_key: Option<String>,
    /// The order's sequence in its sale (what ends its id).
    seq: u64,
    /// The outbox id of its latest event while that event waits there; empty once JetStream
    /// holds it (every event read from the stream).
    event: String,
}

/// A sale's orders folded from its events. Applying an event twice changes nothing (JetStream
/// and a surviving outbox may both hold it), and the first event that ends an order (paid,
/// expired, cancelled) decides it whatever arrives after, so the fold is exact whatever
/// overlaps.
#[derive(Debug, Default)]
pub struct SaleSnapshot {
    orders: HashMap<String, OrderState>,
    /// The highest order sequence seen (the number that ends each order id).
    seq: u64,
}

/// Milliseconds since the epoch of an event's RFC 3339 time.
fn millis(event: &OrderEvent, field: &str, time: &str) -> Result<i64, UnreadableEvent> {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_millis())
        .map_err(|e| UnreadableEvent::new(event, format!("{field}: {e}")))
}

/// An event the fold cannot place: a time or an order id that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("order {order_id}: {reason}")]
pub struct UnreadableEvent {
    pub order_id: String,
    pub reason: String,
}

impl UnreadableEvent {
    fn new(event: &OrderEvent, reason: String) -> Self {
        Self {
            order_id: event.order_id.clone(),
            reason,
        }
    }
}

impl OrderState {
    fn record(&self) -> OrderRecord<'_> {
        OrderRecord {
            status: self.status,
            quantity: self.quantity,
            unit_price: self.unit_price,
            created_at_ms: self.created_at_ms,
            pay_by_ms: self.pay_by_ms,
            paid_at_ms: self.paid_at_ms,
            event: &self.event,
            payment_ref: self.payment_ref.as_deref(),
            user_id: &self.user_id,
        }
    }
}

impl SaleSnapshot {
    /// Applies an event still waiting in the outbox under `entry_id`.
    pub fn apply_waiting(
        &mut self,
        event: &OrderEvent,
        entry_id: &str,
    ) -> Result<(), UnreadableEvent> {
        self.apply(event)?;
        if let Some(order) = self.orders.get_mut(&event.order_id) {
            order.event = entry_id.to_owned();
        }
        Ok(())
    }

    pub fn apply(&mut self, event: &OrderEvent) -> Result<(), UnreadableEvent> {
        let created_at_ms = millis(event, "created_at", &event.created_at)?;
        let optional_ms = |field: &str, time: &Option<String>| {
            time.as_deref().map(|t| millis(event, field, t)).transpose()
        };
        let pay_by_ms = optional_ms("pay_by", &event.pay_by)?;
        let paid_at_ms = optional_ms("paid_at", &event.paid_at)?;
        let seq = event
            .order_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| UnreadableEvent::new(event, "its id has no sequence".into()))?;
        self.seq = self.seq.max(seq);
        let order = self
            .orders
            .entry(event.order_id.clone())
            .or_insert_with(|| OrderState {
                status: if pay_by_ms.is_some() {
                    OrderStatus::PendingPayment
                } else {
                    OrderStatus::Created
                },
                quantity: event.quantity,
                unit_price: event.unit_price,
                created_at_ms,
                pay_by_ms,
                paid_at_ms: None,
                payment_ref: None,
                user_id: event.user_id.clone(),
                idempotency_key: None,
                seq,
                event: String::new(),
            });
        let ended = !matches!(
            order.status,
            OrderStatus::Created | OrderStatus::PendingPayment
        );
        match event.event {
            EventKind::Created => {
                if order.idempotency_key.is_none() {
                    order.idempotency_key = event.idempotency_key.clone();
                }
            }
            _ if ended => {}
            EventKind::Paid => {
                order.status = OrderStatus::Paid;
                order.paid_at_ms = paid_at_ms;
                order.payment_ref = event.payment_ref.clone();
            }
            EventKind::Expired => order.status = OrderStatus::Expired,
            EventKind::Cancelled => order.status = OrderStatus::Cancelled,
        }
        Ok(())
    }

    /// The highest order sequence seen: the rebuilt sale numbers its next order after it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The orders' Idempotency-Keys: (key, order id, created_at in ms).
    pub fn idempotency_keys(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.orders.iter().filter_map(|(id, o)| {
            Some((o.idempotency_key.as_deref()?, id.as_str(), o.created_at_ms))
        })
    }

    pub fn orders(&self) -> usize {
        self.orders.len()
    }

    /// Orders whose status is `status`.
    pub fn count(&self, status: OrderStatus) -> usize {
        self.orders.values().filter(|o| o.status == status).count()
    }

    /// Orders that hold their units (not expired, not cancelled).
    pub fn live_orders(&self) -> usize {
        self.live().count()
    }

    /// Units held by orders that are neither expired nor cancelled.
    pub fn sold(&self) -> u64 {
        self.live().map(|o| u64::from(o.quantity)).sum()
    }

    fn live(&self) -> impl Iterator<Item = &OrderState> {
        self.orders.values().filter(|o| o.status.holds_units())
    }

    /// Payment deadlines of the orders awaiting payment: the sweeper's index.
    pub fn deadlines(&self) -> impl Iterator<Item = (&str, i64)> {
        self.orders.iter().filter_map(|(id, o)| match o.status {
            OrderStatus::PendingPayment => Some((id.as_str(), o.pay_by_ms?)),
            _ => None,
        })
    }

    /// Each buyer as the sale's buyers hash keeps it (`lua/purchase.lua`): the units its live
    /// orders hold, then its order ids, newest first.
    pub fn buyers(&self) -> HashMap<&str, (u64, Vec<&str>)> {
        let mut held: HashMap<&str, u64> = HashMap::new();
        for order in self.live() {
            *held.entry(order.user_id.as_str()).or_default() += u64::from(order.quantity);
        }
        self.buyer_orders()
            .into_iter()
            .map(|(user, ids)| {
                let units = held.get(user).copied().unwrap_or(0);
                (user, (units, ids))
            })
            .collect()
    }

    /// Each order's record by its id, as the scripts would have written it.
    pub fn records(&self) -> impl Iterator<Item = (&str, OrderRecord<'_>)> {
        self.orders.iter().map(|(id, o)| (id.as_str(), o.record()))
    }

    /// The order as the API shows it, from its history alone (an archived sale's, whose
    /// events are all in JetStream).
    pub fn view(&self, order_id: &str, sku: &str) -> Option<OrderView> {
        self.orders
            .get(order_id)?
            .record()
            .view(order_id, sku, true)
    }

    /// A buyer's orders as the API shows them, newest first, at most `newest`.
    pub fn buyer_views(&self, user: &str, sku: &str, newest: usize) -> Vec<OrderView> {
        let mut ids: Vec<(u64, &str)> = (self.orders.iter())
            .filter(|(_, o)| o.user_id == user)
            .map(|(id, o)| (o.seq, id.as_str()))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        (ids.into_iter().take(newest))
            .filter_map(|(_, id)| self.view(id, sku))
            .collect()
    }

    /// Each buyer's order ids, newest first.
    fn buyer_orders(&self) -> HashMap<&str, Vec<&str>> {
        let mut by_buyer: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
        for (id, o) in &self.orders {
            by_buyer
                .entry(o.user_id.as_str())
                .or_default()
                .push((o.seq, id.as_str()));
        }
        by_buyer
            .into_iter()
            .map(|(user, mut ids)| {
                ids.sort_unstable_by(|a, b| b.cmp(a));
                (user, ids.into_iter().map(|(_, id)| id).collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{buyer_entry, encode, order_field};

    /// The records as the rebuild stages them (`store/restore.rs`).
    fn encoded_records(snapshot: &SaleSnapshot) -> HashMap<&str, String> {
        (snapshot.records())
            .map(|(id, record)| (order_field(id), encode(&record)))
            .collect()
    }

    fn encoded_buyers(snapshot: &SaleSnapshot) -> HashMap<&str, String> {
        (snapshot.buyers().into_iter())
            .map(|(user, (held, ids))| (user, buyer_entry(held, &ids)))
            .collect()
    }

    fn event(kind: EventKind, id: &str, user: &str, quantity: u32) -> OrderEvent {
        OrderEvent {
            event: kind,
            order_id: id.into(),
            sku: "s".into(),
            user_id: user.into(),
            quantity,
            unit_price: 7,
            total_amount: 7 * u64::from(quantity),
            created_at: "2025-11-25T15:04:52.123Z".into(),
            idempotency_key: Some(format!("key-{id}")),
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        }
    }

    #[test]
    fn folds_created_and_cancelled_events_once_each() {
        let mut snapshot = SaleSnapshot::default();
        let events = [
            event(EventKind::Created, "abc-1-1", "u1", 2),
            event(EventKind::Created, "abc-1-2", "u2", 3),
            event(EventKind::Created, "abc-1-2", "u2", 3), // a duplicate
            event(EventKind::Cancelled, "abc-1-1", "u1", 2),
            event(EventKind::Cancelled, "abc-1-1", "u1", 2), // a duplicate
            event(EventKind::Created, "abc-9-3", "u1", 1),
        ];
        for e in &events {
            snapshot.apply(e).expect("valid event");
        }
        assert_eq!(snapshot.orders(), 3);
        assert_eq!(snapshot.sold(), 4);
        assert_eq!(snapshot.seq(), 3);
        let buyers = encoded_buyers(&snapshot);
        assert_eq!(
            (buyers["u1"].as_str(), buyers["u2"].as_str()),
            ("1:9-3,1-1", "3:1-2"),
            "units held by live orders, then every order newest first, without the digest"
        );
        let records = encoded_records(&snapshot);
        assert_eq!(records["1-1"], "cancelled\n2\n7\n1764083092123\n\n\n\n\nu1");
        assert_eq!(records["1-2"], "created\n3\n7\n1764083092123\n\n\n\n\nu2");
    }

    #[test]
    fn the_first_ending_event_decides_an_order_awaiting_payment() {
        let pending = |kind, id: &str| OrderEvent {
            pay_by: Some("2025-11-25T15:05:52.123Z".into()),
            ..event(kind, id, "u1", 2)
        };
        let paid = OrderEvent {
            paid_at: Some("2025-11-25T15:05:00.000Z".into()),
            payment_ref: Some("psp-1".into()),
            ..pending(EventKind::Paid, "abc-1-1")
        };
        let mut snapshot = SaleSnapshot::default();
        for e in [
            pending(EventKind::Created, "abc-1-1"),
            paid.clone(),
            pending(EventKind::Expired, "abc-1-1"), // cannot follow a payment: ignored
            pending(EventKind::Created, "abc-1-2"),
            pending(EventKind::Expired, "abc-1-2"),
            paid, // a duplicate
            pending(EventKind::Created, "abc-1-3"),
        ] {
            snapshot.apply(&e).expect("valid event");
        }
        assert_eq!(
            snapshot.sold(),
            4,
            "paid and pending hold units, expired not"
        );
        let records = encoded_records(&snapshot);
        assert_eq!(
            records["1-1"],
            "paid\n2\n7\n1764083092123\n1764083152123\n1764083100000\n\npsp-1\nu1"
        );
        assert!(records["1-2"].starts_with("expired\n"));
        assert!(records["1-3"].starts_with("pending_payment\n"));
        let deadlines: Vec<(&str, i64)> = snapshot.deadlines().collect();
        assert_eq!(
            deadlines,
            [("abc-1-3", 1_764_083_152_123)],
            "only the pending order"
        );
        assert!(encoded_buyers(&snapshot)["u1"].starts_with("4:"));
    }

    #[test]
    fn refuses_an_event_it_cannot_place() {
        let mut snapshot = SaleSnapshot::default();
        let mut bad = event(EventKind::Created, "abc-1-x", "u", 1);
        assert!(snapshot.apply(&bad).is_err());
        bad.order_id = "abc-1-1".into();
        bad.created_at = "yesterday".into();
        assert!(snapshot.apply(&bad).is_err());
    }

    /// What the audit and the reads of an archived sale take from the fold: counts by state,
    /// the keys, an order's view and a buyer's list. An order that ended stays as it ended
    /// whatever ending event arrives after (JetStream and a surviving outbox may disagree on
    /// order only by duplicates, never by a second decision).
    #[test]
    fn an_ended_order_stays_ended_and_the_reads_show_the_fold() {
        let mut snapshot = SaleSnapshot::default();
        let paid = OrderEvent {
            paid_at: Some("2025-11-25T15:05:00.000Z".into()),
            payment_ref: Some("psp-9".into()),
            ..event(EventKind::Paid, "abc-1-1", "u1", 2)
        };
        for e in [
            event(EventKind::Created, "abc-1-1", "u1", 2),
            event(EventKind::Cancelled, "abc-1-1", "u1", 2),
            paid,                                          // after the cancel: ignored
            event(EventKind::Expired, "abc-1-1", "u1", 2), // ignored too
            event(EventKind::Created, "abc-1-2", "u2", 1),
            event(EventKind::Created, "abc-1-4", "u1", 3),
        ] {
            snapshot.apply(&e).expect("valid event");
        }
        let waiting = event(EventKind::Created, "abc-1-5", "u2", 1);
        snapshot
            .apply_waiting(&waiting, "1764083092999-0")
            .expect("valid event");

        assert_eq!(snapshot.seq(), 5);
        assert_eq!(snapshot.orders(), 4);
        assert_eq!(snapshot.count(OrderStatus::Cancelled), 1);
        assert_eq!(snapshot.count(OrderStatus::Created), 3);
        assert_eq!(snapshot.count(OrderStatus::Paid), 0);
        assert_eq!((snapshot.live_orders(), snapshot.sold()), (3, 5));
        let cancelled = snapshot.view("abc-1-1", "s").expect("its view");
        assert_eq!(
            (cancelled.status, cancelled.payment_ref, cancelled.paid_at),
            (OrderStatus::Cancelled, None, None)
        );
        assert_eq!((cancelled.quantity, cancelled.total_amount), (2, 14));
        assert!(snapshot.view("abc-1-3", "s").is_none(), "no such order");

        let mut keys: Vec<_> = snapshot.idempotency_keys().collect();
        keys.sort_unstable();
        let at = 1_764_083_092_123;
        assert_eq!(
            keys,
            [
                ("key-abc-1-1", "abc-1-1", at),
                ("key-abc-1-2", "abc-1-2", at),
                ("key-abc-1-4", "abc-1-4", at),
                ("key-abc-1-5", "abc-1-5", at),
            ]
        );

        let ids = |views: Vec<OrderView>| -> Vec<String> {
            views.into_iter().map(|v| v.order_id).collect()
        };
        assert_eq!(
            ids(snapshot.buyer_views("u1", "s", 10)),
            ["abc-1-4", "abc-1-1"]
        );
        assert_eq!(ids(snapshot.buyer_views("u1", "s", 1)), ["abc-1-4"]);
        assert_eq!(
            ids(snapshot.buyer_views("u2", "s", 10)),
            ["abc-1-5", "abc-1-2"]
        );

        // The waiting event's entry is kept, so the rebuilt outbox entry and its order agree.
        let records = encoded_records(&snapshot);
        assert!(
            records["1-5"].contains("\n1764083092999-0\n"),
            "{}",
            records["1-5"]
        );
        assert!(
            records["1-2"].contains("\n\n\n\n\n"),
            "no entry: {}",
            records["1-2"]
        );
    }
}
