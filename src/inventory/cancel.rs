use redis::{AsyncCommands, Value};

use super::reply::Reply;
use super::{Inventory, StoreError, sale_registry, sku_digest};
use crate::domain::{OrderId, Sku};
use crate::order::Order;

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no order with this id")]
    OrderNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Inventory {
    /// Cancels an order: one call of `lua/cancel.lua`, after finding the order's sale from the
    /// sku digest its id starts with. Cancelling twice changes nothing the second time.
    pub async fn cancel(&self, order_id: &OrderId) -> Result<Order, CancelError> {
        let sku = self
            .sku_of(order_id)
            .await?
            .ok_or(CancelError::OrderNotFound)?;
        let keys = self.keys(&sku);
        let mut call = self.cancel_script.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(keys.outbox())
            .arg(order_id.as_str());
        let mut redis = self.redis.clone();
        let reply: Vec<Value> = self.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "cancelled" => {
                let order = reply.order(&sku)?;
                log::info!(
                    "order {} cancelled: {} units back to sale {sku}",
                    order.order_id,
                    order.quantity
                );
                Ok(order)
            }
            "already_cancelled" => Ok(reply.order(&sku)?),
            "order_not_found" => Err(CancelError::OrderNotFound),
            _ => Err(reply.corrupt().into()),
        }
    }

    /// The sale whose sku digest starts `order_id`: a registered sale or the default one.
    async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
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
