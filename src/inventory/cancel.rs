use redis::Value;

use super::reply::Reply;
use super::{Inventory, StoreError};
use crate::domain::OrderId;
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
                self.outbox_written.notify_one();
                self.sold_out.clear(sku.as_str());
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
}
