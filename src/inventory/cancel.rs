use redis::Value;

use super::reply::Reply;
use super::{Inventory, StoreError};
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
    /// Cancels an order of `sku` (found from the digest its id starts with): one call of
    /// `lua/cancel.lua`. Cancelling twice changes nothing the second time.
    pub async fn cancel(&self, sku: &Sku, order_id: &OrderId) -> Result<Order, CancelError> {
        let keys = self.keys(sku);
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
                let order = reply.order(sku)?;
                self.outbox_written.notify_one();
                self.sold_out.clear(sku.as_str());
                log::info!(
                    "order {} cancelled: {} units back to sale {sku}",
                    order.order_id,
                    order.quantity
                );
                Ok(order)
            }
            "already_cancelled" => Ok(reply.order(sku)?),
            "order_not_found" => Err(CancelError::OrderNotFound),
            "sale_missing" => Err(StoreError::SaleMissing.into()),
            _ => Err(reply.corrupt().into()),
        }
    }
}
