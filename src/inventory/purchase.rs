use std::time::Instant;

use redis::Value;

use super::reply::Reply;
use super::{Inventory, StoreError};
use crate::domain::{IdempotencyKey, Quantity, Sku, UserId};
use crate::monitoring::Outcome;
use crate::order::Order;

/// An accepted purchase: a new order, or the order an earlier request with the same
/// Idempotency-Key created (`replayed`).
#[derive(Debug)]
pub struct Purchase {
    pub order: Order,
    pub replayed: bool,
}

/// Why a purchase took nothing.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error("no sale with this sku")]
    SaleNotFound,
    #[error("the sale is not open now")]
    SaleNotOpen,
    #[error("this user already holds the most units the sale allows per user")]
    UserLimitReached,
    #[error("sold out: {remaining} left, fewer than asked for")]
    SoldOut { remaining: u64 },
    #[error("quantity is above the sale's per_user_limit of {limit}")]
    QuantityAboveLimit { limit: u64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyConflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PurchaseError {
    fn outcome(&self) -> Outcome {
        match self {
            PurchaseError::SaleNotFound => Outcome::SaleNotFound,
            PurchaseError::SaleNotOpen => Outcome::SaleNotOpen,
            PurchaseError::UserLimitReached => Outcome::UserLimitReached,
            PurchaseError::SoldOut { .. } => Outcome::SoldOut,
            PurchaseError::QuantityAboveLimit { .. } => Outcome::InvalidQuantity,
            PurchaseError::IdempotencyConflict => Outcome::IdempotencyConflict,
            PurchaseError::Store(_) => Outcome::Unavailable,
        }
    }
}

impl Inventory {
    /// One purchase: one EVALSHA of `lua/purchase.lua`, which decides and records atomically;
    /// none at all when this replica knows the sale is sold out. A sale Redis does not hold
    /// is `Store(SaleMissing)`: nothing was decided (see `recovery.rs`).
    pub async fn purchase(
        &self,
        sku: &Sku,
        user: &UserId,
        quantity: Quantity,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Purchase, PurchaseError> {
        // Fast path: an empty sale is answered from memory. A request with an
        // Idempotency-Key still goes to Redis, which may hold its earlier order to replay.
        if idempotency_key.is_none() && self.sold_out.is_sold_out(sku) {
            self.metrics.fast_path();
            self.metrics.outcome(Outcome::SoldOut);
            return Err(PurchaseError::SoldOut { remaining: 0 });
        }
        let started = Instant::now();
        let result = self
            .run_purchase(sku, user, quantity, idempotency_key)
            .await;
        self.metrics.script(started.elapsed());
        // A missing sale is decided by the call after its rebuild, and counted then.
        if !matches!(result, Err(PurchaseError::Store(StoreError::SaleMissing))) {
            self.metrics.outcome(match &result {
                Ok(purchase) if purchase.replayed => Outcome::Replayed,
                Ok(_) => Outcome::Created,
                Err(e) => e.outcome(),
            });
        }
        result
    }

    async fn run_purchase(
        &self,
        sku: &Sku,
        user: &UserId,
        quantity: Quantity,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Purchase, PurchaseError> {
        let keys = self.keys(sku);
        let mut call = self.purchase_script.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(keys.outbox())
            .key(keys.buyer_orders(user.as_str()))
            .key(keys.deadlines());
        if let Some(key) = idempotency_key {
            call.key(keys.idempotency(key));
        }
        call.arg(user.as_str())
            .arg(quantity.get())
            .arg(&self.idempotency_ttl_secs)
            .arg(idempotency_key.map_or("", IdempotencyKey::as_str));

        let mut redis = self.redis.clone();
        let reply: Vec<Value> = self.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            outcome @ ("created" | "replayed") => {
                let order = reply.order(sku)?;
                if outcome == "created" {
                    self.wrote_outbox(sku);
                    // The sale's earliest deadline: the sweeper must know the sale has
                    // one (payment_due.rs: why after the script is safe, and why a later
                    // deadline needs no write).
                    if reply.optional_int(9)? == Some(1)
                        && let Some(pay_by) = reply.optional_int(8)?
                        && let Err(e) = self.index_deadline(sku, pay_by).await
                    {
                        log::warn!("sale {sku}: payment deadline not indexed yet: {e}");
                    }
                    if order.remaining == 0 {
                        self.sold_out.mark(sku);
                        log::info!("sale {sku} sold out");
                    }
                }
                Ok(Purchase {
                    order,
                    replayed: outcome == "replayed",
                })
            }
            "sold_out" => {
                let remaining = reply.uint(1)?;
                if remaining == 0 {
                    self.sold_out.mark(sku);
                }
                Err(PurchaseError::SoldOut { remaining })
            }
            "quantity_above_limit" => Err(PurchaseError::QuantityAboveLimit {
                limit: reply.uint(1)?,
            }),
            "sale_missing" => Err(StoreError::SaleMissing.into()),
            "sale_not_open" => Err(PurchaseError::SaleNotOpen),
            "user_limit_reached" => Err(PurchaseError::UserLimitReached),
            "idempotency_conflict" => Err(PurchaseError::IdempotencyConflict),
            _ => Err(reply.corrupt().into()),
        }
    }
}
