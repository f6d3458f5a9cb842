//! The registry of sales (sku digest → sku), kept beside the sales because Redis Cluster
//! cannot reach across hash slots from a script. Every sale Redis holds is in it: PUT and the
//! rebuild (`restore.rs`) write it before the sale itself.

use redis::AsyncCommands;

use super::{Store, StoreError, sale_registry};
use crate::domain::{OrderId, Sku};

impl Store {
    /// The sale whose sku digest starts `order_id`, if Redis knows it (after a loss, only
    /// JetStream may: see `recovery/rebuild.rs`).
    pub(super) async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
        let mut redis = self.redis.connection();
        let sku: Option<String> = self.redis.observe(
            redis
                .hget(sale_registry(self.redis.namespace()), order_id.sku_digest())
                .await,
        )?;
        sku.map(|sku| Sku::parse(&sku).map_err(|e| StoreError::Corrupt(e.0)))
            .transpose()
    }

    /// Every sale that may have an outbox.
    pub(super) async fn registered(&self) -> Result<Vec<Sku>, StoreError> {
        let mut redis = self.redis.connection();
        let registered: Vec<String> = self
            .redis
            .observe(redis.hvals(sale_registry(self.redis.namespace())).await)?;
        Ok(registered
            .iter()
            .filter_map(|sku| Sku::parse(sku).ok())
            .collect())
    }

    /// Adds the sale to the registry (before the sale itself is written). A command of its
    /// own: the registry lies in another hash slot than the sale, so on a cluster it can join
    /// neither the sale's script nor its pipelines.
    pub(super) async fn register(&self, sku: &Sku) -> Result<(), StoreError> {
        let mut redis = self.redis.connection();
        let registered: Result<(), _> = redis
            .hset(
                sale_registry(self.redis.namespace()),
                sku.digest(),
                sku.as_str(),
            )
            .await;
        self.redis.observe(registered)
    }
}
