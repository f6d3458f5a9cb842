//! Reading orders as they stand: one call of `lua/read_orders.lua`.

use redis::Value;

use super::record::order_view;
use super::reply::Reply;
use super::{Store, StoreError};
use crate::domain::order::OrderView;
use crate::domain::{OrderId, Sku, UserId};

/// Which orders of a sale to read.
pub enum OrderQuery<'a> {
    /// These orders (none: only whether the sale is held).
    Ids(&'a [OrderId]),
    /// A buyer's newest orders, newest first.
    Buyer { user: &'a UserId, newest: usize },
}

impl Store {
    /// The orders asked for that exist; `SaleMissing` when Redis does not hold the sale.
    pub(super) async fn read_orders(
        &self,
        sku: &Sku,
        query: &OrderQuery<'_>,
    ) -> Result<Vec<OrderView>, StoreError> {
        let keys = self.redis.keys(sku);
        let mut call = self.scripts.read_orders.prepare_invoke();
        call.key(keys.sale()).key(keys.orders()).key(keys.outbox());
        match query {
            OrderQuery::Ids(ids) => call.arg(ids.iter().map(OrderId::as_str).collect::<Vec<_>>()),
            OrderQuery::Buyer { user, newest } => {
                call.key(keys.buyers()).arg(user.as_str()).arg(*newest)
            }
        };
        let mut redis = self.redis.connection();
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "sale_missing" => Err(StoreError::SaleMissing),
            "orders" => (1..reply.0.len())
                .step_by(3)
                .map(|at| {
                    order_view(
                        reply.text(at)?,
                        sku.as_str(),
                        reply.text(at + 1)?,
                        reply.int(at + 2)? == 1,
                    )
                    .ok_or_else(|| reply.corrupt())
                })
                .collect(),
            _ => Err(reply.corrupt()),
        }
    }
}
