//! The registry of sales (sku digest → sku), kept beside the sales because Redis Cluster
//! cannot reach across hash slots from a script.

use redis::AsyncCommands;

use super::{Inventory, StoreError, sale_registry, sku_digest};
use crate::domain::{OrderId, Sku};

impl Inventory {
    /// The sale whose sku digest starts `order_id`: a registered sale or the default one.
    pub(super) async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
        let digest = order_id.sku_digest();
        if digest == sku_digest(&self.default_sku) {
            return Ok(Some(self.default_sku.clone()));
        }
        let mut redis = self.redis.clone();
        let sku: Option<String> =
            self.observe(redis.hget(sale_registry(&self.namespace), digest).await)?;
        sku.map(|sku| Sku::parse(&sku).map_err(|e| StoreError::Corrupt(e.0)))
            .transpose()
    }

    /// Every sale that may have an outbox: the registered ones and the default sale.
    pub async fn sales(&self) -> Result<Vec<Sku>, StoreError> {
        let mut redis = self.redis.clone();
        let registered: Vec<String> =
            self.observe(redis.hvals(sale_registry(&self.namespace)).await)?;
        let mut skus: Vec<Sku> = registered
            .iter()
            .filter_map(|sku| Sku::parse(sku).ok())
            .collect();
        if !skus.contains(&self.default_sku) {
            skus.push(self.default_sku.clone());
        }
        Ok(skus)
    }
}
