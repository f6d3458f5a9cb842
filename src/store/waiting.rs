//! Which sales have order events waiting in their outbox, so the relay visits those and not
//! every sale there is (its idle cost and its delivery lag then do not grow with the
//! catalogue).
//!
//! Two layers. In memory, the sales this replica wrote an event for since its relay last
//! looked ([`Store::wrote_outbox`]: a set insert on the hot path, no Redis command). In
//! Redis, the set [`outbox_waiting`] of sales whose outbox may hold events, for every
//! replica: the relay adds what this replica wrote (one `SADD` per pass, whatever the
//! purchase rate) before anything else, even while NATS is down, so a replica that dies
//! leaves its sales there for the others. A sale leaves the set when its outbox is found
//! empty, and is then checked once more, as for the deadline index: an event written in
//! between is seen by that check, or added again by its writer's next `SADD`. Only a process
//! dying between a script and its relay's next `SADD` (milliseconds) escapes both; the full
//! sweep ([`Store::outboxes_not_empty`]) at start and now and then finds that.

use std::collections::HashSet;

use parking_lot::Mutex;
use redis::RedisError;
use tokio::sync::Notify;

use super::keys::outbox_waiting;
use super::outbox::Outbox;
use super::{Store, StoreError};
use crate::domain::Sku;

/// What this replica knows of the outboxes without asking Redis.
#[derive(Default)]
pub(super) struct OutboxTracker {
    /// Signalled after each script call that wrote an outbox entry, to wake the relay.
    pub wake_relay: Notify,
    /// Sales this replica wrote outbox entries for since its relay last looked.
    pub written: Mutex<HashSet<String>>,
    /// Outbox entries this replica's handlers are delivering right now (sale, entry id): the
    /// relay stops short of them (`delivering.rs`).
    pub delivering: Mutex<HashSet<(Sku, String)>>,
}

/// Outboxes checked per round (one pipeline on a single server) by the full sweep.
const SWEEP_CHUNK: usize = 500;

impl Store {
    /// Records that a script call just wrote an event to the sale's outbox, and wakes the
    /// relay.
    pub(super) fn wrote_outbox(&self, sku: &Sku) {
        let mut written = self.outboxes.written.lock();
        if !written.contains(sku.as_str()) {
            written.insert(sku.to_string());
        }
        drop(written);
        self.outboxes.wake_relay.notify_one();
    }
}

impl Outbox {
    /// Moves the sales this replica wrote events for into the shared set.
    pub async fn index_written(&self) -> Result<(), StoreError> {
        let written: HashSet<String> = std::mem::take(&mut *self.0.outboxes.written.lock());
        if written.is_empty() {
            return Ok(());
        }
        let mut redis = self.0.redis.connection();
        let added: Result<(), RedisError> = redis::cmd("SADD")
            .arg(outbox_waiting(self.0.redis.namespace()))
            .arg(written.iter().collect::<Vec<_>>())
            .query_async(&mut redis)
            .await;
        if let Err(e) = added {
            // Kept for the next pass: nothing is forgotten while Redis is away.
            self.0.outboxes.written.lock().extend(written);
            return self.0.redis.observe(Err(e));
        }
        Ok(())
    }

    /// Every sale in the shared set: whose outbox may hold events, written by any replica.
    pub async fn waiting(&self) -> Result<Vec<Sku>, StoreError> {
        let mut redis = self.0.redis.connection();
        let members: Result<Vec<String>, RedisError> = redis::cmd("SMEMBERS")
            .arg(outbox_waiting(self.0.redis.namespace()))
            .query_async(&mut redis)
            .await;
        Ok(self
            .0
            .redis
            .observe(members)?
            .iter()
            .filter_map(|s| Sku::parse(s).ok())
            .collect())
    }

    /// Takes a sale whose outbox was found empty out of the shared set, then looks once more
    /// (see the module) and puts it back if an event arrived in between.
    pub async fn unindex_empty(&self, sku: &Sku) -> Result<(), StoreError> {
        let index = outbox_waiting(self.0.redis.namespace());
        let mut redis = self.0.redis.connection();
        // The set and the outbox lie in different slots: in this order, not at once.
        let remove = redis::cmd("SREM").arg(&index).arg(sku.as_str()).to_owned();
        let recheck = redis::cmd("XLEN")
            .arg(self.0.redis.keys(sku).outbox())
            .to_owned();
        let waiting: u64 = self
            .0
            .redis
            .observe(redis.query_in_order(vec![remove, recheck]).await)?;
        if waiting > 0 {
            let added: Result<(), RedisError> = redis::cmd("SADD")
                .arg(&index)
                .arg(sku.as_str())
                .query_async(&mut redis)
                .await;
            self.0.redis.observe(added)?;
        }
        Ok(())
    }

    /// The full sweep: every registered sale whose outbox holds events (one `XLEN` per sale,
    /// pipelined). The safety net of the shared set; it visits every sale, so it runs seldom.
    pub async fn not_empty(&self) -> Result<Vec<Sku>, StoreError> {
        let sales = self.0.registered().await?;
        let mut redis = self.0.redis.connection();
        let mut waiting = Vec::new();
        for chunk in sales.chunks(SWEEP_CHUNK) {
            let reads = chunk
                .iter()
                .map(|sku| {
                    redis::cmd("XLEN")
                        .arg(self.0.redis.keys(sku).outbox())
                        .to_owned()
                })
                .collect();
            let lengths: Vec<u64> = self.0.redis.observe(redis.query_each(reads).await)?;
            waiting.extend(
                chunk
                    .iter()
                    .zip(lengths)
                    .filter(|(_, length)| *length > 0)
                    .map(|(sku, _)| sku.clone()),
            );
        }
        // Into the shared set, so every replica's relay sees them from now on.
        if !waiting.is_empty() {
            let added: Result<(), RedisError> = redis::cmd("SADD")
                .arg(outbox_waiting(self.0.redis.namespace()))
                .arg(waiting.iter().map(Sku::as_str).collect::<Vec<_>>())
                .query_async(&mut redis)
                .await;
            self.0.redis.observe(added)?;
        }
        Ok(waiting)
    }
}
