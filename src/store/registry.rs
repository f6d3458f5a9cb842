//! The registry of sales (sku digest → sku), kept beside the sales because Redis Cluster
//! cannot reach across hash slots from a script. Every sale Redis holds is in it: PUT and the
//! rebuild (`restore.rs`) write it before the sale itself.

use redis::AsyncCommands;

use super::{Inventory, StoreError, sale_registry};
use crate::domain::{OrderId, Sku};

impl Inventory {
    /// The sale whose sku digest starts `order_id`, if Redis knows it (after a loss, only
    /// JetStream may: see `recovery/rebuild.rs`).
    pub(crate) async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
        let mut redis = self.redis();
        let sku: Option<String> = self.observe(
            redis
                .hget(sale_registry(&self.namespace), order_id.sku_digest())
                .await,
        )?;
        sku.map(|sku| Sku::parse(&sku).map_err(|e| StoreError::Corrupt(e.0)))
            .transpose()
    }

    /// Every sale that may have an outbox.
    pub async fn sales(&self) -> Result<Vec<Sku>, StoreError> {
        let mut redis = self.redis();
        let registered: Vec<String> =
            self.observe(redis.hvals(sale_registry(&self.namespace)).await)?;
        Ok(registered
            .iter()
            .filter_map(|sku| Sku::parse(sku).ok())
            .collect())
    }

    /// Adds the sale to the registry (before the sale itself is written). A command of its
    /// own: the registry lies in another hash slot than the sale, so on a cluster it can join
    /// neither the sale's script nor its pipelines.
    pub(crate) async fn register(&self, sku: &Sku) -> Result<(), StoreError> {
        let mut redis = self.redis();
        let registered: Result<(), _> = redis
            .hset(sale_registry(&self.namespace), sku.digest(), sku.as_str())
            .await;
        self.observe(registered)
    }
}
