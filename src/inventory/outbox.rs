//! The Redis side of the outbox: each sale's stream of order events, read by the relay
//! through the consumer group [`RELAY_GROUP`].

use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::{AsyncCommands, RedisError};

use super::{Inventory, StoreError};
use crate::domain::Sku;
use crate::event::{EventKind, OrderEvent};
use crate::sale::format_time;

/// The consumer group every replica's relay reads through.
pub const RELAY_GROUP: &str = "relay";

/// What waits in one outbox (or, summed, in all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    /// Milliseconds since the oldest waiting entry was written (Redis's clock).
    pub oldest_age_ms: u64,
}

impl Backlog {
    pub fn add(&mut self, other: Backlog) {
        self.pending += other.pending;
        self.oldest_age_ms = self.oldest_age_ms.max(other.oldest_age_ms);
    }
}

/// One outbox entry: its stream id and the event it records.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: String,
    pub event: OrderEvent,
}

impl Inventory {
    /// Entries waiting in the sale's outbox, or `None` when it is empty or absent.
    pub async fn outbox_backlog(&self, sku: &Sku) -> Result<Option<Backlog>, StoreError> {
        let outbox = self.keys(sku).outbox();
        let mut redis = self.redis.clone();
        let (pending, oldest, (secs, micros)): (u64, Vec<(String, ())>, (u64, u64)) = self
            .observe(
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
        // A stream id starts with the millisecond it was added.
        let written_ms = oldest
            .first()
            .and_then(|(id, ())| id.split('-').next()?.parse::<u64>().ok())
            .unwrap_or(now_ms);
        Ok(Some(Backlog {
            pending,
            oldest_age_ms: now_ms.saturating_sub(written_ms),
        }))
    }

    /// Takes or renews this replica's lease on the sale's outbox; false when another holds it.
    pub async fn take_outbox_lease(
        &self,
        sku: &Sku,
        consumer: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut redis = self.redis.clone();
        let held: Result<i64, RedisError> = self
            .relay_lease_script
            .key(self.keys(sku).relay_lease())
            .arg(consumer)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut redis)
            .await;
        Ok(self.observe(held)? == 1)
    }

    /// Makes sure the relay group exists, then takes over entries other consumers read but
    /// left unacknowledged for `min_idle` (their replica died or lost its lease).
    pub async fn claim_stale_outbox(
        &self,
        sku: &Sku,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<(), StoreError> {
        let outbox = self.keys(sku).outbox();
        let mut redis = self.redis.clone();
        // From id 0: the group sees every entry still in the stream, whenever it is created.
        let created: Result<(), RedisError> = redis.xgroup_create(&outbox, RELAY_GROUP, "0").await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => self.observe(other)?,
        }
        let mut cursor = "0-0".to_owned();
        loop {
            let (next, _claimed, _deleted): (String, Vec<String>, Vec<String>) = self.observe(
                redis::cmd("XAUTOCLAIM")
                    .arg(&outbox)
                    .arg(RELAY_GROUP)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("JUSTID")
                    .query_async(&mut redis)
                    .await,
            )?;
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Up to `count` entries this consumer holds, oldest first: first new entries are taken
    /// into the group (`>`), then everything pending to this consumer is read (`0`), so
    /// entries whose earlier publish failed come round again, in order.
    pub async fn read_outbox(
        &self,
        sku: &Sku,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let outbox = self.keys(sku).outbox();
        let mut redis = self.redis.clone();
        let read = |from: &'static str| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(RELAY_GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&outbox)
                .arg(from)
                .to_owned()
        };
        let _: Option<StreamReadReply> = self.observe(read(">").query_async(&mut redis).await)?;
        let held: Option<StreamReadReply> =
            self.observe(read("0").query_async(&mut redis).await)?;

        let mut entries = Vec::new();
        for stream in held.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                let event = entry_event(sku, &entry);
                match event {
                    Some(event) => entries.push(OutboxEntry {
                        id: entry.id,
                        event,
                    }),
                    // Nothing a subscriber could use; never written by our scripts.
                    None => {
                        log::error!("outbox {outbox}: unreadable entry {} skipped", entry.id);
                        self.ack_outbox(sku, std::slice::from_ref(&entry.id))
                            .await?;
                    }
                }
            }
        }
        Ok(entries)
    }

    /// Every entry still in the sale's outbox, oldest first (delivered or not): a rebuild
    /// folds them in, as JetStream may not have them yet.
    pub async fn outbox_entries(&self, sku: &Sku) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut redis = self.redis.clone();
        let read: Result<redis::streams::StreamRangeReply, RedisError> =
            redis.xrange_all(self.keys(sku).outbox()).await;
        Ok(self
            .observe(read)?
            .ids
            .iter()
            .filter_map(|entry| {
                Some(OutboxEntry {
                    event: entry_event(sku, entry)?,
                    id: entry.id.clone(),
                })
            })
            .collect())
    }

    /// Acknowledges delivered entries and removes them, so the outbox holds only what
    /// JetStream has not confirmed.
    pub async fn ack_outbox(&self, sku: &Sku, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let outbox = self.keys(sku).outbox();
        let mut redis = self.redis.clone();
        let done: Result<(), RedisError> = redis::pipe()
            .xack(&outbox, RELAY_GROUP, ids)
            .ignore()
            .xdel(&outbox, ids)
            .ignore()
            .query_async(&mut redis)
            .await;
        self.observe(done)
    }
}

/// The event an outbox entry records, as the scripts write it (`purchase.lua`,
/// `transition.lua`); `None` for anything else.
fn entry_event(sku: &Sku, entry: &redis::streams::StreamId) -> Option<OrderEvent> {
    let kind = EventKind::from_token(&entry.get::<String>("kind")?)?;
    let quantity: u32 = entry.get("quantity")?;
    let unit_price: u64 = entry.get("unit_price")?;
    // Written empty when unset; absent in entries older than the payment window.
    let text = |field: &str| entry.get::<String>(field).filter(|v| !v.is_empty());
    let time = |field: &str| text(field)?.parse::<i64>().ok().map(format_time);
    Some(OrderEvent {
        event: kind,
        order_id: entry.get("order_id")?,
        sku: sku.to_string(),
        user_id: entry.get("user_id")?,
        quantity,
        unit_price,
        total_amount: unit_price * u64::from(quantity),
        created_at: format_time(entry.get("created_at")?),
        // Written by every purchase, empty when it carried no Idempotency-Key.
        idempotency_key: text("idem"),
        pay_by: time("pay_by"),
        paid_at: time("paid_at"),
        payment_ref: text("payment_ref"),
    })
}
