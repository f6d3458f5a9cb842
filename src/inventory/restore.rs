//! Putting a sale back into Redis after Redis lost it: the state is folded from the sale's
//! events ([`SaleSnapshot`]), staged under keys of its own, and installed by `lua/restore.lua`
//! in one atomic step that refuses to overwrite a sale Redis holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::DateTime;
use redis::Value;

use super::reply::Reply;
use super::transition::Expired;
use super::{Inventory, StoreError};
use crate::definitions::SaleDefinition;
use crate::domain::Sku;
use crate::event::{EventKind, OrderEvent};
use crate::order::OrderStatus;

/// Fields per staging HSET: large enough to stage 100,000 orders in a few hundred commands,
/// small enough that no single command holds Redis for long.
const STAGE_CHUNK: usize = 2_000;
/// Staging keys of an attempt that died half-way expire after this.
const STAGE_TTL_MS: u64 = 120_000;

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
fn millis(event: &OrderEvent, field: &str, time: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("order {}: {field}: {e}", event.order_id))
}

impl SaleSnapshot {
    /// Applies an event still waiting in the outbox under `entry_id`.
    pub fn apply_waiting(&mut self, event: &OrderEvent, entry_id: &str) -> Result<(), String> {
        self.apply(event)?;
        if let Some(order) = self.orders.get_mut(&event.order_id) {
            order.event = entry_id.to_owned();
        }
        Ok(())
    }

    pub fn apply(&mut self, event: &OrderEvent) -> Result<(), String> {
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
            .ok_or_else(|| format!("order id {} has no sequence", event.order_id))?;
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

    pub fn orders(&self) -> usize {
        self.orders.len()
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
    fn deadlines(&self) -> impl Iterator<Item = (&str, i64)> {
        self.orders.iter().filter_map(|(id, o)| match o.status {
            OrderStatus::PendingPayment => Some((id.as_str(), o.pay_by_ms?)),
            _ => None,
        })
    }

    fn buyers(&self) -> HashMap<&str, u64> {
        let mut buyers: HashMap<&str, u64> = HashMap::new();
        for order in self.live() {
            *buyers.entry(order.user_id.as_str()).or_default() += u64::from(order.quantity);
        }
        buyers
    }

    /// The order records in `purchase.lua`'s format.
    fn records(&self) -> impl Iterator<Item = (&str, String)> {
        let time = |ms: Option<i64>| ms.map(|ms| ms.to_string()).unwrap_or_default();
        self.orders.iter().map(move |(id, o)| {
            // status, quantity, unit_price, created_at, pay_by, paid_at, event, payment_ref,
            // user_id
            let record = format!(
                "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
                o.status.as_str(),
                o.quantity,
                o.unit_price,
                o.created_at_ms,
                time(o.pay_by_ms),
                time(o.paid_at_ms),
                o.event,
                o.payment_ref.as_deref().unwrap_or_default(),
                o.user_id
            );
            (id.as_str(), record)
        })
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

/// What [`Inventory::restore`] installed (`None` from it: this primary held the sale
/// already, another replica restored it first, say).
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    /// Redis held a copy another primary wrote (a promoted replica, a moved slot), which may
    /// have been behind, and the rebuild replaced it; false: Redis held nothing of the sale
    /// (lost, or new).
    pub replaced_stale: bool,
    /// Orders the history left awaiting payment whose pay_by had passed on Redis's clock:
    /// installed expired, their events queued (`lua/restore.lua`).
    pub expired: Expired,
    /// Units sold once installed (after those expiries).
    pub sold: u64,
}

impl Inventory {
    /// Installs the rebuilt sale unless this Redis primary wrote the sale itself.
    pub async fn restore(
        &self,
        definition: &SaleDefinition,
        snapshot: &SaleSnapshot,
    ) -> Result<Option<Restored>, StoreError> {
        let sku = Sku::parse(&definition.sku).map_err(|e| StoreError::Corrupt(e.0))?;
        let keys = self.keys(&sku);
        let attempt = staging_token();
        let staged = |name: &str| keys.staging(&attempt, name);
        let (staged_orders, staged_buyers, staged_idem, staged_deadlines) = (
            staged("orders"),
            staged("buyers"),
            staged("idem"),
            staged("deadlines"),
        );

        let mut pipe = redis::pipe();
        stage(&mut pipe, &staged_orders, snapshot.records());
        stage(
            &mut pipe,
            &staged_buyers,
            snapshot
                .buyers()
                .into_iter()
                .map(|(u, n)| (u, n.to_string())),
        );
        let ttl_ms = self.idempotency_ttl.as_millis() as i64;
        stage(
            &mut pipe,
            &staged_idem,
            snapshot.orders.iter().filter_map(|(id, o)| {
                let key = o.idempotency_key.as_deref()?;
                Some((key, format!("{}:{id}", o.created_at_ms + ttl_ms)))
            }),
        );
        let deadlines: Vec<(i64, &str)> = snapshot.deadlines().map(|(id, at)| (at, id)).collect();
        for chunk in deadlines.chunks(STAGE_CHUNK) {
            pipe.zadd_multiple(&staged_deadlines, chunk).ignore();
        }
        for key in [
            &staged_orders,
            &staged_buyers,
            &staged_idem,
            &staged_deadlines,
        ] {
            pipe.pexpire(key, STAGE_TTL_MS as i64).ignore();
        }
        let mut redis = self.redis();
        let staged_all: Result<(), _> = pipe.query_async(&mut redis).await;
        self.observe(staged_all)?;
        // Registered before the sale exists, as a PUT does.
        self.register(&sku).await?;

        let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
        let mut call = self.restore_script.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(&staged_orders)
            .key(&staged_buyers)
            .key(&staged_idem)
            .key(keys.deadlines())
            .key(&staged_deadlines)
            .key(keys.outbox())
            .arg(sku.as_str())
            .arg(definition.stock)
            .arg(snapshot.sold())
            .arg(optional(definition.per_user_limit.map(|l| l as i64)))
            .arg(definition.price)
            .arg(optional(definition.starts_at))
            .arg(optional(definition.ends_at))
            .arg(snapshot.seq)
            .arg(keys.idempotency_prefix())
            .arg(definition.revision)
            .arg(optional(definition.payment_timeout_secs.map(|t| t as i64)))
            .arg(keys.buyer_orders(""));
        let reply: Vec<Value> = self.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "restored" => {
                // Stock may be back (a new empty sale): ask Redis again.
                self.sold_out.clear(sku.as_str());
                let restored = Restored {
                    replaced_stale: reply.int(2)? == 1,
                    expired: Expired {
                        orders: reply.uint(3)? as usize,
                        units: reply.uint(4)?,
                        next_due: reply.optional_int(6)?,
                    },
                    sold: reply.uint(5)?,
                };
                if restored.expired.orders > 0 {
                    self.wrote_outbox(&sku);
                    for _ in 0..restored.expired.orders {
                        crate::monitoring::record_transition(OrderStatus::Expired);
                    }
                }
                Ok(Some(restored))
            }
            "exists" => Ok(None),
            _ => Err(reply.corrupt()),
        }
    }
}

impl Inventory {
    /// Appends each buyer's rebuilt orders to their list, after [`Inventory::restore`]
    /// installed the sale. The lists are an index for reads only: purchases made since the
    /// install pushed newer ids at the head, and these older ones go behind them, so each list
    /// stays newest first. One pipeline outside the install script (40,000 buyers' lists
    /// inside it held Redis for 0.6 s), which requests need not wait for.
    pub async fn restore_buyer_orders(
        &self,
        sku: &Sku,
        snapshot: &SaleSnapshot,
    ) -> Result<(), StoreError> {
        let keys = self.keys(sku);
        let lists = snapshot.buyer_orders();
        if lists.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (user, ids) in lists {
            for chunk in ids.chunks(STAGE_CHUNK) {
                pipe.rpush(keys.buyer_orders(user), chunk).ignore();
            }
        }
        let mut redis = self.redis();
        let written: Result<(), _> = pipe.query_async(&mut redis).await;
        self.observe(written)
    }
}

/// Adds `HSET key field value …` commands for `pairs`, in chunks.
fn stage<'a>(
    pipe: &mut redis::Pipeline,
    key: &str,
    pairs: impl Iterator<Item = (&'a str, String)>,
) {
    let mut chunk: Vec<(&str, String)> = Vec::with_capacity(STAGE_CHUNK);
    for pair in pairs {
        chunk.push(pair);
        if chunk.len() == STAGE_CHUNK {
            pipe.hset_multiple(key, &chunk).ignore();
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        pipe.hset_multiple(key, &chunk).ignore();
    }
}

/// Unique per restore attempt in this process and across replicas.
fn staging_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(snapshot.seq, 3);
        let buyers = snapshot.buyers();
        assert_eq!((buyers["u1"], buyers["u2"]), (1, 3));
        let records: HashMap<&str, String> = snapshot.records().collect();
        assert_eq!(
            records["abc-1-1"],
            "cancelled\n2\n7\n1764083092123\n\n\n\n\nu1"
        );
        assert_eq!(
            records["abc-1-2"],
            "created\n3\n7\n1764083092123\n\n\n\n\nu2"
        );
        let lists = snapshot.buyer_orders();
        assert_eq!(lists["u1"], ["abc-9-3", "abc-1-1"], "newest first");
        assert_eq!(lists["u2"], ["abc-1-2"]);
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
        let records: HashMap<&str, String> = snapshot.records().collect();
        assert_eq!(
            records["abc-1-1"],
            "paid\n2\n7\n1764083092123\n1764083152123\n1764083100000\n\npsp-1\nu1"
        );
        assert!(records["abc-1-2"].starts_with("expired\n"));
        assert!(records["abc-1-3"].starts_with("pending_payment\n"));
        let deadlines: Vec<(&str, i64)> = snapshot.deadlines().collect();
        assert_eq!(
            deadlines,
            [("abc-1-3", 1_764_083_152_123)],
            "only the pending order"
        );
        assert_eq!(snapshot.buyers()["u1"], 4);
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
}
