//! The end of an order: paid, expired or cancelled, each one call of `lua/transition.lua`,
//! which decides on Redis's clock and writes the event in the same step.

use redis::Value;

use super::record::order_view;
use super::reply::Reply;
use super::{Failed, Store, StoreError, TransitionError};
use crate::domain::order::{OrderStatus, OrderView};
use crate::domain::refusal::OrderRefusal;
use crate::domain::{OrderId, PaymentRef, Sku};
use crate::support::metrics::{record_expiry_lag, record_transition};

/// An order after a pay or a cancel call.
#[derive(Debug)]
pub struct Ended {
    pub order: OrderView,
    /// Units left in the sale afterwards.
    pub remaining: u64,
    /// False when the order had ended so already (a repeated pay or cancel).
    pub changed: bool,
    /// The outbox entry of the order's latest event ('' when none): this call's, if changed.
    pub outbox_entry: String,
}

/// What one sweep of a sale's overdue orders did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub orders: usize,
    pub units: u64,
    /// The earliest pay_by (ms) of the orders still awaiting payment.
    pub next_due: Option<i64>,
}

enum Action<'a> {
    Pay(&'a PaymentRef),
    Cancel,
}

impl Store {
    /// Marks a `pending_payment` order paid; the same `payment_ref` again answers the paid
    /// order unchanged.
    pub(super) async fn pay(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        payment_ref: &PaymentRef,
    ) -> Result<Ended, TransitionError> {
        self.end_order(sku, order_id, Action::Pay(payment_ref))
            .await
    }

    /// Cancels a `created` or `pending_payment` order: its units go back to the sale, once
    /// however often it is called.
    pub(super) async fn cancel(
        &self,
        sku: &Sku,
        order_id: &OrderId,
    ) -> Result<Ended, TransitionError> {
        self.end_order(sku, order_id, Action::Cancel).await
    }

    async fn end_order(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        action: Action<'_>,
    ) -> Result<Ended, TransitionError> {
        let mut call = self.transition_call(sku);
        match action {
            Action::Pay(payment_ref) => call
                .arg("pay")
                .arg(order_id.as_str())
                .arg(payment_ref.as_str()),
            Action::Cancel => call.arg("cancel").arg(order_id.as_str()),
        };
        let mut redis = self.redis.writer().await?;
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut *redis).await)?;
        let reply = Reply(&reply);
        let outcome = reply.text(0)?;
        let ended = |changed: bool| -> Result<Ended, StoreError> {
            let delivered = reply.int(4)? == 1;
            let order = order_view(reply.text(1)?, sku.as_str(), reply.text(2)?, delivered)
                .ok_or_else(|| reply.corrupt())?;
            Ok(Ended {
                order,
                remaining: reply.uint(3)?,
                changed,
                outbox_entry: reply.text(5)?.to_owned(),
            })
        };
        match outcome {
            "paid" | "cancelled" => {
                let ended = ended(true)?;
                // The answer stands either way (the move is decided); it only waits for
                // the replicas asked for, counted in flashsale_redis_replication_waits_total.
                self.redis.replicated(&mut redis, sku).await;
                drop(redis);
                self.wrote_outbox(sku);
                record_transition(ended.order.status.as_str());
                if ended.order.status == OrderStatus::Cancelled {
                    self.sold_out.clear(sku.as_str());
                    log::info!(
                        "order {} cancelled: {} units back to sale {sku}",
                        ended.order.order_id,
                        ended.order.quantity
                    );
                }
                Ok(ended)
            }
            "already_paid" | "already_cancelled" => Ok(ended(false)?),
            "expired" => {
                self.wrote_outbox(sku);
                self.sold_out.clear(sku.as_str());
                record_transition(OrderStatus::Expired.as_str());
                Err(Failed::Refused(OrderRefusal::OrderExpired {
                    released: true,
                }))
            }
            "order_expired" => Err(Failed::Refused(OrderRefusal::OrderExpired {
                released: false,
            })),
            "not_payable" => Err(Failed::Refused(OrderRefusal::NotPayable)),
            "order_cancelled" => Err(Failed::Refused(OrderRefusal::OrderCancelled)),
            "payment_conflict" => Err(Failed::Refused(OrderRefusal::PaymentConflict)),
            "order_paid" => Err(Failed::Refused(OrderRefusal::OrderPaid)),
            "order_not_found" => Err(Failed::Refused(OrderRefusal::OrderNotFound)),
            "sale_archived" => Err(Failed::Refused(OrderRefusal::SaleArchived)),
            "sale_missing" => Err(StoreError::SaleMissing.into()),
            _ => Err(reply.corrupt().into()),
        }
    }

    /// Expires up to `at_most` of the sale's orders whose pay_by has passed (Redis's clock).
    pub(super) async fn expire_overdue(
        &self,
        sku: &Sku,
        at_most: usize,
    ) -> Result<Expired, StoreError> {
        let mut call = self.transition_call(sku);
        call.arg("expire").arg(at_most);
        let mut redis = self.redis.connection();
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "expired" => {}
            "sale_missing" => return Err(StoreError::SaleMissing),
            _ => return Err(reply.corrupt()),
        }
        let expired = Expired {
            orders: reply.0.len().saturating_sub(3),
            units: reply.uint(2)?,
            next_due: reply.optional_int(1)?,
        };
        for at in 3..reply.0.len() {
            record_transition(OrderStatus::Expired.as_str());
            record_expiry_lag(reply.int(at)?);
        }
        if expired.orders > 0 {
            self.wrote_outbox(sku);
            self.sold_out.clear(sku.as_str());
        }
        Ok(expired)
    }

    fn transition_call(&self, sku: &Sku) -> redis::ScriptInvocation<'_> {
        let keys = self.redis.keys(sku);
        let mut call = self.scripts.transition.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(keys.outbox())
            .key(keys.deadlines());
        call
    }
}
