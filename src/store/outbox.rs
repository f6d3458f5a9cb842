//! The Redis side of the outbox: each sale's stream of order events.
//!
//! The stream holds only events JetStream has not acknowledged yet: the relay that holds the
//! sale's lease reads from its start (`XRANGE`) and, once JetStream has acknowledged a prefix,
//! drops that prefix with one `XTRIM MINID`. No consumer group: the lease already makes one
//! replica the reader of a sale, and a reader that dies leaves its entries where they were,
//! for the next lease holder to read again (JetStream drops what it had published twice).
//! Against XREADGROUP + XACK + XDEL per entry this costs Redis about a third (BENCHMARKS.md).

use std::time::Duration;

use redis::{AsyncCommands, RedisError};

use super::{Store, StoreError};
use crate::domain::Sku;
use crate::domain::event::{EventKind, OrderEvent, OrderMessage};
use crate::domain::sale::format_time;

/// What waits in one outbox (or, summed, in all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    /// Milliseconds since the oldest waiting entry was written (Redis's clock).
    pub oldest_age_ms: u64,
    /// Redis's clock when this was read, in milliseconds (the latest, summed).
    pub read_at_ms: u64,
}

impl Backlog {
    pub fn add(&mut self, other: Backlog) {
        self.pending += other.pending;
        self.oldest_age_ms = self.oldest_age_ms.max(other.oldest_age_ms);
        self.read_at_ms = self.read_at_ms.max(other.read_at_ms);
    }
}

/// The millisecond an outbox entry was written (Redis's clock): its stream id starts with it.
pub fn written_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// One outbox entry: its stream id and the events it records, one JetStream message.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: String,
    pub message: OrderMessage,
}

/// An outbox entry a script call just wrote, shared by the answers of that call: the
/// handlers that wait for JetStream publish it once between them (`events/confirm.rs`).
#[derive(Debug)]
pub struct WrittenEntry {
    pub sku: Sku,
    pub entry: OutboxEntry,
    /// Whether JetStream holds the message and the outbox no longer does (`None` while
    /// that is being found out): the delivery the first handler started, which the others
    /// wait for (`events/confirm.rs`).
    pub delivery: tokio::sync::OnceCell<tokio::sync::watch::Receiver<Option<bool>>>,
    /// When the script that wrote it answered (or the entry was read back): the handlers'
    /// delivery ends within the confirm timeout of it, before the relay's grace lets the relay
    /// read the entry (`events/confirm.rs`).
    pub answered: std::time::Instant,
}

/// Where an accepted purchase's `order.created` stands when the script answers.
#[derive(Debug, Clone)]
pub enum CreatedEvent {
    /// It left the outbox: JetStream holds it.
    Delivered,
    /// In the outbox entry this script call wrote, with the other orders it made.
    Written(std::sync::Arc<WrittenEntry>),
    /// In the outbox entry an earlier call wrote (a replay), still waiting: its id.
    Waiting(String),
}

impl WrittenEntry {
    pub fn new(sku: Sku, id: String, message: OrderMessage) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            sku,
            entry: OutboxEntry { id, message },
            delivery: tokio::sync::OnceCell::new(),
            answered: std::time::Instant::now(),
        })
    }
}

/// The outboxes as the relay and the confirming handlers see them: a sale's entries, its
/// relay lease, and the index of sales with waiting entries (`waiting.rs`).
#[derive(Clone)]
pub struct Outbox(pub(super) std::sync::Arc<Store>);

impl Outbox {
    /// Entries waiting in the sale's outbox, or `None` when it is empty or absent.
    pub async fn backlog(&self, sku: &Sku) -> Result<Option<Backlog>, StoreError> {
        let outbox = self.0.redis.keys(sku).outbox();
        let mut redis = self.0.redis.connection();
        let (pending, oldest, (secs, micros)): (u64, Vec<(String, ())>, (u64, u64)) =
            self.0.redis.observe(
                redis::pipe()
                    .xlen(&outbox)
                    .cmd("XRANGE")
                    .arg(&outbox)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("TIME")
                    .query_async(&mut redis)
                    .await,
            )?;
        if pending == 0 {
            return Ok(None);
        }
        let now_ms = secs * 1000 + micros / 1000;
        let written_ms = oldest
            .first()
            .and_then(|(id, ())| written_ms(id))
            .unwrap_or(now_ms);
        Ok(Some(Backlog {
            pending,
            oldest_age_ms: now_ms.saturating_sub(written_ms),
            read_at_ms: now_ms,
        }))
    }

    /// Takes or renews this replica's lease on the sale's outbox; false when another holds it.
    pub async fn take_lease(
        &self,
        sku: &Sku,
        consumer: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut redis = self.0.redis.connection();
        let held: Result<i64, RedisError> = self
            .0
            .scripts
            .relay_lease
            .key(self.0.redis.keys(sku).relay_lease())
            .arg(consumer)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut redis)
            .await;
        Ok(self.0.redis.observe(held)? == 1)
    }

    /// Up to `count` entries from the start of the sale's outbox, oldest first, written no
    /// later than `written_until_ms` (Redis's clock) when given: every one is waiting for
    /// JetStream (delivered entries are trimmed), and before any this replica's handlers are
    /// delivering (`delivering.rs`). An entry no subscriber could use (never written by our
    /// scripts) is logged and returned as `None`, to be trimmed.
    pub async fn read(
        &self,
        sku: &Sku,
        count: usize,
        written_until_ms: Option<u64>,
    ) -> Result<Vec<(String, Option<OrderMessage>)>, StoreError> {
        let outbox = self.0.redis.keys(sku).outbox();
        let mut redis = self.0.redis.connection();
        // A stream id starts with the millisecond it was written: `XRANGE … - <ms>` ends
        // with the last entry of that millisecond.
        let end = written_until_ms.map_or_else(|| "+".to_owned(), |ms| ms.to_string());
        let read: Result<redis::streams::StreamRangeReply, RedisError> =
            redis.xrange_count(&outbox, "-", end, count).await;
        Ok(self
            .0
            .redis
            .observe(read)?
            .ids
            .into_iter()
            .map(|entry| {
                let message = entry_message(sku, &entry);
                if message.is_none() {
                    log::error!("outbox {outbox}: unreadable entry {} dropped", entry.id);
                }
                (entry.id, message)
            })
            // Up to the first entry this replica's handlers are delivering (theirs to publish,
            // whatever its age): the relay leaves it and the rest to a later pass, in order.
            .take_while(|(id, _)| !self.is_delivering(sku, id))
            .collect())
    }

    /// Every entry still in the sale's outbox, oldest first (delivered or not): a rebuild
    /// folds them in, as JetStream may not have them yet.
    pub async fn entries(&self, sku: &Sku) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut redis = self.0.redis.connection();
        let read: Result<redis::streams::StreamRangeReply, RedisError> =
            redis.xrange_all(self.0.redis.keys(sku).outbox()).await;
        Ok(self
            .0
            .redis
            .observe(read)?
            .ids
            .iter()
            .filter_map(|entry| {
                Some(OutboxEntry {
                    message: entry_message(sku, entry)?,
                    id: entry.id.clone(),
                })
            })
            .collect())
    }

    /// The entry `id` of the sale's outbox, while it waits there (`None` once delivered).
    pub async fn entry(&self, sku: &Sku, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let mut redis = self.0.redis.connection();
        let read: Result<redis::streams::StreamRangeReply, RedisError> =
            redis.xrange(self.0.redis.keys(sku).outbox(), id, id).await;
        Ok(self.0.redis.observe(read)?.ids.first().and_then(|entry| {
            Some(OutboxEntry {
                message: entry_message(sku, entry)?,
                id: entry.id.clone(),
            })
        }))
    }

    /// Removes entries, unread, whose events JetStream acknowledged to a handler
    /// (`events/confirm.rs`): the relay need not publish them again.
    pub async fn drop_confirmed(&self, sku: &Sku, entries: &[&str]) -> Result<(), StoreError> {
        let outbox = self.0.redis.keys(sku).outbox();
        let mut removal = redis::pipe();
        // Bounded commands: Redis runs nothing else while one runs.
        for chunk in entries.chunks(1000) {
            removal.cmd("XDEL").arg(&outbox).arg(chunk).ignore();
        }
        let mut redis = self.0.redis.connection();
        let removed: Result<(), RedisError> = removal.query_async(&mut redis).await;
        self.0.redis.observe(removed)
    }

    /// Drops the entries up to and including `last` (delivered): the outbox then holds
    /// only what JetStream has not acknowledged. Entries written later have greater ids, so
    /// they are never touched.
    pub async fn trim(&self, sku: &Sku, last: &str) -> Result<(), StoreError> {
        let Some(next) = next_entry_id(last) else {
            return Err(StoreError::Corrupt(format!("outbox entry id {last}")));
        };
        let mut redis = self.0.redis.connection();
        let trimmed: Result<u64, RedisError> = redis::cmd("XTRIM")
            .arg(self.0.redis.keys(sku).outbox())
            .arg("MINID")
            .arg(next)
            .query_async(&mut redis)
            .await;
        self.0.redis.observe(trimmed).map(drop)
    }
}

/// The least stream id above `id` (`<ms>-<seq>`): `XTRIM MINID` keeps it and everything after.
fn next_entry_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

/// The message an outbox entry records, as the scripts write it; `None` for anything else.
/// An entry holds `kind` and `events`, a line an event (`lua/order_moves.lua`: event_line);
/// versions before batches wrote one event an entry, its fields as fields of the entry.
fn entry_message(sku: &Sku, entry: &redis::streams::StreamId) -> Option<OrderMessage> {
    let kind = EventKind::from_token(&entry.get::<String>("kind")?)?;
    let events = match entry.get::<String>("events") {
        Some(lines) => lines
            .split('\n')
            .map(|line| line_event(sku, kind, line))
            .collect::<Option<Vec<_>>>()?,
        None => vec![fields_event(sku, kind, entry)?],
    };
    OrderMessage::new(events).ok()
}

/// One event line: order_id, quantity, unit_price, created_at, pay_by, paid_at,
/// Idempotency-Key, payment_ref, user_id (tab-separated; user_id last takes the rest).
fn line_event(sku: &Sku, kind: EventKind, line: &str) -> Option<OrderEvent> {
    let mut fields = line.splitn(9, '\t');
    let mut next = || fields.next();
    let (order_id, quantity, unit_price, created_at) = (next()?, next()?, next()?, next()?);
    let (pay_by, paid_at, idem, payment_ref, user_id) =
        (next()?, next()?, next()?, next()?, next()?);
    event(
        sku,
        kind,
        Fields {
            order_id,
            user_id,
            quantity,
            unit_price,
            created_at,
            idem,
            pay_by,
            paid_at,
            payment_ref,
        },
    )
}

/// An entry written before batches: the event's fields are the entry's. (Written empty when
/// unset; absent in entries older than the payment window.)
fn fields_event(
    sku: &Sku,
    kind: EventKind,
    entry: &redis::streams::StreamId,
) -> Option<OrderEvent> {
    let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
    let (order_id, user_id, quantity) = (text("order_id"), text("user_id"), text("quantity"));
    let (unit_price, created_at, idem) = (text("unit_price"), text("created_at"), text("idem"));
    let (pay_by, paid_at, payment_ref) = (text("pay_by"), text("paid_at"), text("payment_ref"));
    if order_id.is_empty() || user_id.is_empty() {
        return None;
    }
    event(
        sku,
        kind,
        Fields {
            order_id: &order_id,
            user_id: &user_id,
            quantity: &quantity,
            unit_price: &unit_price,
            created_at: &created_at,
            idem: &idem,
            pay_by: &pay_by,
            paid_at: &paid_at,
            payment_ref: &payment_ref,
        },
    )
}

/// An event's fields as the outbox holds them: text, empty when unset.
struct Fields<'a> {
    order_id: &'a str,
    user_id: &'a str,
    quantity: &'a str,
    unit_price: &'a str,
    created_at: &'a str,
    idem: &'a str,
    pay_by: &'a str,
    paid_at: &'a str,
    payment_ref: &'a str,
}

fn event(sku: &Sku, kind: EventKind, f: Fields<'_>) -> Option<OrderEvent> {
    let quantity: u32 = f.quantity.parse().ok()?;
    let unit_price: u64 = f.unit_price.parse().ok()?;
    let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    // Unset: Some(None); unreadable: None.
    let time = |v: &str| match v {
        "" => Some(None),
        ms => ms.parse::<i64>().ok().map(|ms| Some(format_time(ms))),
    };
    Some(OrderEvent {
        event: kind,
        order_id: f.order_id.to_owned(),
        sku: sku.to_string(),
        user_id: f.user_id.to_owned(),
        quantity,
        unit_price,
        total_amount: crate::domain::order::total_amount(unit_price, quantity)?,
        created_at: format_time(f.created_at.parse().ok()?),
        idempotency_key: text(f.idem),
        pay_by: time(f.pay_by)?,
        paid_at: time(f.paid_at)?,
        payment_ref: text(f.payment_ref),
    })
}

#[cfg(test)]
mod tests {
    use super::next_entry_id;

    #[test]
    fn the_next_id_keeps_everything_after_the_last_delivered() {
        assert_eq!(
            next_entry_id("1700000000000-0").as_deref(),
            Some("1700000000000-1")
        );
        assert_eq!(
            next_entry_id(&format!("5-{}", u64::MAX)).as_deref(),
            Some("6-0")
        );
        assert_eq!(next_entry_id("garbage"), None);
        assert_eq!(next_entry_id("1-x"), None);
    }
}
