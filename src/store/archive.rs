//! A sale leaving Redis (`lua/archive.lua`): sealed when it ended and settled, dropped once
//! JetStream's definition says archived, unsealed when a PUT got there first. The archiver
//! that drives these steps is `recovery/archive.rs`.

use redis::Value;

use super::reply::Reply;
use super::{Store, StoreError, sale_registry};
use crate::domain::Sku;
use crate::domain::sale::{ArchiveRecord, OrderTally};

impl Store {
    /// Seals the sale if it ended and settled `after` ago, and its last Idempotency-Key has
    /// expired (`lua/archive.lua`): the sale's final figures and the revision it is sealed
    /// at (now or earlier; `archived_at_ms` left for the caller), or `None` while it is not
    /// due. `SaleMissing` when Redis holds no copy to decide on.
    pub(super) async fn seal(
        &self,
        sku: &Sku,
        after: std::time::Duration,
    ) -> Result<Option<ArchiveRecord>, StoreError> {
        let mut call = self.archive_call(sku);
        call.arg("seal")
            .arg(after.as_millis() as u64)
            .arg(self.idempotency_ttl.as_millis() as u64);
        let reply: Vec<Value> = self
            .redis
            .observe(call.invoke_async(&mut self.redis.connection()).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "sealed" => {
                let total = reply.uint(4)?;
                let (paid, expired, cancelled) = (reply.uint(5)?, reply.uint(6)?, reply.uint(7)?);
                Ok(Some(ArchiveRecord {
                    archived_at_ms: 0,
                    sold: reply.uint(3)?,
                    orders: OrderTally {
                        total,
                        // Nothing awaits payment in a sealed sale.
                        created: total.saturating_sub(paid + expired + cancelled),
                        pending_payment: 0,
                        paid,
                        expired,
                        cancelled,
                    },
                    sealed_revision: reply.uint(1)?,
                }))
            }
            // Not ended or not settled; or ended and settled, not long enough ago.
            "live" | "waiting" => Ok(None),
            "sale_missing" => Err(StoreError::SaleMissing),
            _ => Err(reply.corrupt()),
        }
    }

    /// Lifts the seal of `revision` (the definition's archive lost to a PUT); false when
    /// the sale is not sealed at it (a PUT lifted it already).
    pub(super) async fn unseal(&self, sku: &Sku, revision: u64) -> Result<bool, StoreError> {
        self.sealed_step(sku, "unseal", revision).await
    }

    /// Removes every key of the sale if it is still sealed at `revision` (or is a copy
    /// another primary wrote); false (nothing removed) when a PUT reopened it or another
    /// replica dropped it first, so each archive is counted once. The caller
    /// then takes it out of the registry ([`Store::unregister`]); the relay's and the
    /// sweeper's indexes drop it by themselves when they find nothing in it, as they drop
    /// any idle sale (removing it here could remove a sale started anew meanwhile).
    pub(super) async fn drop_sealed(&self, sku: &Sku, revision: u64) -> Result<bool, StoreError> {
        self.sealed_step(sku, "drop", revision).await
    }

    /// Takes the sale out of the registry. The caller checks afterwards that no new sale of
    /// the sku registered meanwhile (a PUT records its definition before it registers) and
    /// registers it again if one did ([`Store::register`]).
    pub(super) async fn unregister(&self, sku: &Sku) -> Result<(), StoreError> {
        // The registry lies in a slot of its own: a command of its own on a cluster.
        let mut redis = self.redis.connection();
        let removed: Result<(), _> = redis::cmd("HDEL")
            .arg(sale_registry(self.redis.namespace()))
            .arg(sku.digest())
            .query_async(&mut redis)
            .await;
        self.redis.observe(removed)
    }

    async fn sealed_step(&self, sku: &Sku, step: &str, revision: u64) -> Result<bool, StoreError> {
        let mut call = self.archive_call(sku);
        call.arg(step).arg(revision);
        let reply: Vec<Value> = self
            .redis
            .observe(call.invoke_async(&mut self.redis.connection()).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "dropped" | "unsealed" => Ok(true),
            "kept" | "gone" => Ok(false),
            _ => Err(reply.corrupt()),
        }
    }

    fn archive_call(&self, sku: &Sku) -> redis::ScriptInvocation<'_> {
        let keys = self.redis.keys(sku);
        let mut call = self.scripts.archive.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(keys.outbox())
            .key(keys.deadlines())
            .key(keys.relay_lease())
            .key(keys.queue_early())
            .key(keys.queue_places());
        call
    }
}
