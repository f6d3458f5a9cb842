//! The handles the modules outside `store/` hold, one per role. Each offers what its holder's
//! job needs and nothing more, so a module's field says what it may do to Redis: the sweeper
//! cannot sell, the relay cannot cancel, the archiver cannot read a buyer's orders. All of
//! them share the one [`Store`] (its connection, scripts and outage gate).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::outbox::OutboxEntry;
use super::payment_due::PaymentIndex;
use super::restore::Restored;
use super::sales::OrderCounts;
use super::sold_out::SoldOutCache;
use super::transition::{Ended, Expired};
use super::{
    JoinError, JoinReply, OrderQuery, Outbox, Purchase, PurchaseError, PurchaseRequest,
    PutSaleError, Reservation, Store, StoreError, TransitionError,
};
use crate::domain::order::OrderView;
use crate::domain::sale::{ArchiveRecord, PutOutcome, Sale, SaleDefinition, SaleSettings};
use crate::domain::snapshot::SaleSnapshot;
use crate::domain::{OrderId, PaymentRef, Sku, UserId};
use crate::support::metrics::PurchaseMetrics;

impl Store {
    /// The operations' handle.
    pub fn sales(self: &Arc<Self>) -> Sales {
        Sales(self.clone())
    }

    /// The relay's and the confirming handlers' handle.
    pub fn outbox(self: &Arc<Self>) -> Outbox {
        Outbox(self.clone())
    }

    /// The sweeper's handle.
    pub fn expiry(self: &Arc<Self>) -> Expiry {
        Expiry(self.clone())
    }

    /// The archiver's handle.
    pub fn archive(self: &Arc<Self>) -> Archive {
        Archive(self.clone())
    }

    /// Recovery's handle.
    pub fn rebuild(self: &Arc<Self>) -> Rebuild {
        Rebuild(self.clone())
    }

    /// This replica's sold-out marks, for the listener that lifts them on a restock.
    pub fn sold_out(&self) -> Arc<SoldOutCache> {
        self.sold_out.clone()
    }
}

/// The operations' handle (`operations.rs`): purchases, payments and cancels, order and sale
/// reads, and whether Redis answers (`/readyz`).
#[derive(Clone)]
pub struct Sales(Arc<Store>);

impl Sales {
    /// `user` joins the sale's waiting room (`lua/queue.lua`).
    pub async fn join(
        &self,
        sku: &Sku,
        user: &UserId,
        score: u64,
        reservation: Option<Reservation>,
    ) -> Result<JoinReply, JoinError> {
        self.0.join(sku, user, score, reservation).await
    }

    pub async fn purchase(
        &self,
        sku: &Sku,
        request: PurchaseRequest,
    ) -> Result<Purchase, PurchaseError> {
        self.0.purchase(sku, request).await
    }

    pub async fn pay(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        payment_ref: &PaymentRef,
    ) -> Result<Ended, TransitionError> {
        self.0.pay(sku, order_id, payment_ref).await
    }

    pub async fn cancel(&self, sku: &Sku, order_id: &OrderId) -> Result<Ended, TransitionError> {
        self.0.cancel(sku, order_id).await
    }

    pub async fn read_orders(
        &self,
        sku: &Sku,
        query: &OrderQuery<'_>,
    ) -> Result<Vec<OrderView>, StoreError> {
        self.0.read_orders(sku, query).await
    }

    pub async fn sale(&self, sku: &Sku) -> Result<Sale, StoreError> {
        self.0.sale(sku).await
    }

    /// The sale's orders by state, as Redis counts them (`flashsale audit`).
    pub async fn order_counts(&self, sku: &Sku) -> Result<OrderCounts, StoreError> {
        self.0.order_counts(sku).await
    }

    pub async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
        self.0.sku_of(order_id).await
    }

    /// The purchase path's metrics, for outcomes decided outside the store (a sale that
    /// does not exist anywhere).
    pub fn metrics(&self) -> &PurchaseMetrics {
        &self.0.purchases.metrics
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.0.redis.ping().await
    }
}

impl Outbox {
    /// Woken when this replica wrote an order event to an outbox.
    pub fn written(&self) -> &Notify {
        &self.0.outboxes.wake_relay
    }

    /// Whether Redis holds a copy of the sale this primary wrote.
    pub async fn sale_exists(&self, sku: &Sku) -> Result<bool, StoreError> {
        self.0.sale_exists(sku).await
    }
}

/// The sweeper's handle (`expiry.rs`): the index of payment deadlines, and expiring.
#[derive(Clone)]
pub struct Expiry(Arc<Store>);

impl Expiry {
    pub fn payment_due(&self) -> PaymentIndex<'_> {
        self.0.payment_due()
    }

    pub async fn expire_overdue(&self, sku: &Sku, at_most: usize) -> Result<Expired, StoreError> {
        self.0.expire_overdue(sku, at_most).await
    }
}

/// The archiver's handle (`recovery/archive.rs`): the registry of sales and a sale's way
/// out of Redis.
#[derive(Clone)]
pub struct Archive(Arc<Store>);

impl Archive {
    /// Every sale Redis registered.
    pub async fn sales(&self) -> Result<Vec<Sku>, StoreError> {
        self.0.registered().await
    }

    pub async fn seal(
        &self,
        sku: &Sku,
        after: Duration,
    ) -> Result<Option<ArchiveRecord>, StoreError> {
        self.0.seal(sku, after).await
    }

    pub async fn unseal(&self, sku: &Sku, revision: u64) -> Result<bool, StoreError> {
        self.0.unseal(sku, revision).await
    }

    pub async fn drop_sealed(&self, sku: &Sku, revision: u64) -> Result<bool, StoreError> {
        self.0.drop_sealed(sku, revision).await
    }

    pub async fn unregister(&self, sku: &Sku) -> Result<(), StoreError> {
        self.0.unregister(sku).await
    }

    pub async fn register(&self, sku: &Sku) -> Result<(), StoreError> {
        self.0.register(sku).await
    }
}

/// Recovery's handle (`recovery/`): a sale's definition into Redis (PUT), and the sale back
/// into Redis after a loss.
#[derive(Clone)]
pub struct Rebuild(Arc<Store>);

impl Rebuild {
    pub async fn put_sale(
        &self,
        sku: &Sku,
        settings: &SaleSettings,
        defined_before: Option<&SaleDefinition>,
        revision: u64,
    ) -> Result<(Sale, PutOutcome), PutSaleError> {
        self.0
            .put_sale(sku, settings, defined_before, revision)
            .await
    }

    pub async fn sale_exists(&self, sku: &Sku) -> Result<bool, StoreError> {
        self.0.sale_exists(sku).await
    }

    pub async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, StoreError> {
        self.0.sku_of(order_id).await
    }

    /// The events still waiting in the sale's outbox (the rebuild folds them in).
    pub async fn waiting_events(&self, sku: &Sku) -> Result<Vec<OutboxEntry>, StoreError> {
        Outbox(self.0.clone()).entries(sku).await
    }

    pub async fn restore(
        &self,
        definition: &SaleDefinition,
        snapshot: &SaleSnapshot,
    ) -> Result<Option<Restored>, StoreError> {
        self.0.restore(definition, snapshot).await
    }

    /// Tells the sweeper the rebuilt sale has an order due by `pay_by_ms`.
    pub async fn index_deadline(&self, sku: &Sku, pay_by_ms: i64) -> Result<(), StoreError> {
        self.0.payment_due().index(sku, pay_by_ms).await
    }

    /// Drops a sealed sale whose archive JetStream holds (a PUT of an archived sku).
    pub async fn drop_sealed(&self, sku: &Sku, revision: u64) -> Result<bool, StoreError> {
        self.0.drop_sealed(sku, revision).await
    }
}
