//! What the API's operations do, below the HTTP edge: a purchase, a pay, a cancel, a PUT, the
//! reads. Each runs on a sale rebuilt first if Redis lost it (`recovery`), and a change's
//! event is confirmed with JetStream when the settings ask for it (`events::confirm`). The
//! handlers in `http/` only parse the request, call one of these and answer; `/kill` and
//! `POST /v1/sales/{sku}/orders` buy through the same [`Operations::purchase`].

use std::future::Future;
use std::sync::Arc;

use crate::domain::event::{EventKind, OrderMessage};
use crate::domain::order::{Order, OrderView};
use crate::domain::queue::Place;
use crate::domain::refusal::{OrderRefusal, PurchaseRefusal};
use crate::domain::sale::Sale;
use crate::domain::{IdempotencyKey, OrderId, PaymentRef, Quantity, Sku, UserId};
use crate::events::confirm::{Confirmation, Delivery};
use crate::events::sale_changes::SaleChanges;
use crate::recovery::archive::{buyer_orders_of_record, order_of_record};
use crate::recovery::{Absent, Recovery, RecoveryError};
use crate::store::{
    CreatedEvent, Ended, Failed, OrderQuery, Purchase, PurchaseRequest, Sales, StoreError,
    TransitionError, WrittenEntry,
};
use crate::support::metrics::Outcome;

mod definitions;
pub mod errors;
mod queue;

pub use crate::domain::order::LISTED_ORDERS;
pub use crate::store::Listing;
pub use errors::{OperationError, Unanswered};
pub use queue::{JoinAnswer, QueueSwitch};

pub struct Operations {
    store: Sales,
    recovery: Arc<Recovery>,
    /// Confirms events with JetStream before they are answered (FLASHSALE_CONFIRM).
    confirmation: Confirmation,
    sale_changes: SaleChanges,
    /// The waiting rooms' copies for the gate, and their place reservations.
    lines: queue::Lines,
}

impl Operations {
    pub fn new(
        store: Sales,
        recovery: Arc<Recovery>,
        confirmation: Confirmation,
        sale_changes: SaleChanges,
    ) -> Self {
        Self {
            store,
            recovery,
            confirmation,
            sale_changes,
            lines: queue::Lines::default(),
        }
    }

    /// A purchase: decided by Redis, then, for a new order, confirmed with JetStream when so
    /// configured.
    pub async fn purchase(
        &self,
        sku: &Sku,
        user: &UserId,
        quantity: Quantity,
        idempotency_key: Option<&IdempotencyKey>,
        listing: Listing,
        place: Option<Place>,
    ) -> Result<(Purchase, Delivery), OperationError<PurchaseRefusal>> {
        if let Some(place) = place {
            self.gate(sku, place).await.map_err(|refusal| {
                self.store.metrics().outcome(match refusal {
                    PurchaseRefusal::NotAdmitted { .. } => Outcome::NotAdmitted,
                    _ => Outcome::QueueTokenRequired,
                });
                OperationError::Refused(refusal)
            })?;
        }
        let purchase = self
            .recovery
            .on_sale(sku, || {
                let request = PurchaseRequest {
                    user: user.clone(),
                    quantity,
                    idempotency_key: idempotency_key.cloned(),
                    listing,
                    place: place.map(|p| p.place),
                };
                self.store.purchase(sku, request)
            })
            .await?;
        let purchase = match purchase {
            Ok(purchase) => purchase,
            Err(Absent::Undefined) => {
                self.store.metrics().outcome(Outcome::SaleNotFound);
                return Err(OperationError::Refused(PurchaseRefusal::SaleNotFound));
            }
            Err(Absent::Archived(_)) => {
                self.store.metrics().outcome(Outcome::SaleNotOpen);
                return Err(OperationError::Refused(PurchaseRefusal::SaleArchived));
            }
        };
        if !purchase.replayed {
            // The live streams of every replica (`live/`): throttled, and at once on a sell-out.
            if purchase.order.remaining == 0 {
                self.sale_changes.state_changed(sku).await;
            } else {
                self.sale_changes.sold(sku).await;
            }
        }
        // A replay whose event waits in the outbox is confirmed as the first answer was meant
        // to be, so a 200 is as durable as a 201; one whose event left the outbox is in
        // JetStream.
        let delivery = match &purchase.event {
            CreatedEvent::Delivered => self.confirmation.already_delivered(),
            CreatedEvent::Written(written) => self.confirmation.confirm(written).await,
            CreatedEvent::Waiting(entry) => self.confirmation.confirm_waiting(sku, entry).await,
        };
        Ok((purchase, delivery))
    }

    /// Cancels an order: the stock comes back exactly once however often it is called. The
    /// cancelled order, with its event's delivery when that was asked for.
    pub async fn cancel(&self, order_id: &OrderId) -> Result<Order, OperationError<OrderRefusal>> {
        let sku = self.sale_of(order_id).await?;
        let ended = self
            .end_order(&sku, || self.store.cancel(&sku, order_id))
            .await?;
        let mut delivery = None;
        if ended.changed {
            // Stock is back: other replicas drop their sold-out mark. In jetstream mode the
            // answer also waits for the event, so a cancel answered "delivery": "confirmed"
            // outlives a Redis loss; "pending" may be undone by one (docs/durability.md, After Redis loses
            // its data). Counted in flashsale_confirmations_total; the relay delivers it
            // either way.
            let written = written_entry(&sku, &ended, EventKind::Cancelled);
            let ((), confirmed) = tokio::join!(
                self.sale_changes.restocked(&sku),
                self.confirmation.confirm(&written)
            );
            delivery = confirmed.shown();
        }
        let mut order = Order::new(ended.order, ended.remaining);
        order.delivery = delivery;
        Ok(order)
    }

    /// Pays an order awaiting payment, decided by Redis's clock against its pay_by. In
    /// jetstream mode the answer waits for JetStream to hold the paid event (`delivered`).
    pub async fn pay(
        &self,
        order_id: &OrderId,
        payment_ref: &PaymentRef,
    ) -> Result<OrderView, OperationError<OrderRefusal>> {
        let sku = self.sale_of(order_id).await?;
        let mut ended = self
            .end_order(&sku, || self.store.pay(&sku, order_id, payment_ref))
            .await?;
        if ended.changed {
            let written = written_entry(&sku, &ended, EventKind::Paid);
            let delivery = self.confirmation.confirm(&written).await;
            ended.order.delivered = delivery == Delivery::Confirmed;
        }
        Ok(ended.order)
    }

    /// A pay or cancel. An overdue order such a call expired has released its units: other
    /// replicas hear of it as of a cancel.
    async fn end_order<F, Fut>(&self, sku: &Sku, call: F) -> Result<Ended, TransitionError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Ended, TransitionError>>,
    {
        match self.recovery.on_sale(sku, call).await {
            Ok(Ok(ended)) => Ok(ended),
            Ok(Err(Absent::Undefined)) => Err(Failed::Refused(OrderRefusal::OrderNotFound)),
            Ok(Err(Absent::Archived(_))) => Err(Failed::Refused(OrderRefusal::SaleArchived)),
            Err(e @ Failed::Refused(OrderRefusal::OrderExpired { released: true })) => {
                self.sale_changes.restocked(sku).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The sale an order belongs to; `OrderNotFound` when its id names no sale.
    async fn sale_of(&self, order_id: &OrderId) -> Result<Sku, TransitionError> {
        self.recovery
            .sku_of(order_id)
            .await
            .map_err(StoreError::from)?
            .ok_or(Failed::Refused(OrderRefusal::OrderNotFound))
    }

    /// The order as it stands; `None` when there is no such order.
    pub async fn order(&self, order_id: &OrderId) -> Result<Option<OrderView>, Unanswered> {
        let sku = match self.sale_of(order_id).await {
            Ok(sku) => sku,
            Err(Failed::Store(e)) => return Err(e.into()),
            Err(_) => return Ok(None),
        };
        let query = OrderQuery::Ids(std::slice::from_ref(order_id));
        let read = self
            .recovery
            .on_sale(&sku, || self.store.read_orders(&sku, &query))
            .await?;
        let definition = match read {
            Ok(orders) if !orders.is_empty() => return Ok(orders.into_iter().next()),
            Err(Absent::Undefined) => return Ok(None),
            Err(Absent::Archived(definition)) => definition,
            // Not in the sale Redis holds: of an earlier sale of the sku, if a PUT started it
            // anew after an archive.
            Ok(_) => match self.definition(&sku).await? {
                Some(definition) if definition.history_from.is_some() => Arc::new(definition),
                _ => return Ok(None),
            },
        };
        Ok(order_of_record(&self.recovery, &definition, order_id)
            .await
            .map_err(StoreError::from)?)
    }

    /// A buyer's orders in a sale, newest first, at most [`LISTED_ORDERS`]; `None` when there
    /// is no such sale.
    pub async fn buyer_orders(
        &self,
        sku: &Sku,
        user: &UserId,
    ) -> Result<Option<Vec<OrderView>>, Unanswered> {
        let query = OrderQuery::Buyer {
            user,
            newest: LISTED_ORDERS,
        };
        let read = self
            .recovery
            .on_sale(sku, || self.store.read_orders(sku, &query))
            .await?;
        match read {
            Ok(orders) => Ok(Some(orders)),
            Err(Absent::Undefined) => Ok(None),
            Err(Absent::Archived(definition)) => {
                let orders =
                    buyer_orders_of_record(&self.recovery, &definition, user, LISTED_ORDERS);
                Ok(Some(orders.await.map_err(StoreError::from)?))
            }
        }
    }

    /// The operator's list: sales by their sku digest after `cursor` (a digest from the
    /// previous page), at most `limit`, and the cursor of the next page (`None`: the last).
    /// Read from JetStream's definitions, so a sale Redis lost is listed (and rebuilt).
    pub async fn sales(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Sale>, Option<String>), Unanswered> {
        use futures::{StreamExt, TryStreamExt};
        let definitions = self.recovery.definitions();
        let mut digests = definitions.digests().await.map_err(RecoveryError::from)?;
        digests.sort_unstable();
        let page: Vec<String> = digests
            .into_iter()
            .filter(|digest| cursor.is_none_or(|cursor| digest.as_str() > cursor))
            .take(limit + 1)
            .collect();
        let next = (page.len() > limit).then(|| page[limit - 1].clone());
        let sales: Vec<Option<Sale>> = futures::stream::iter(page.into_iter().take(limit))
            .map(|digest| async move {
                let Some(definition) = definitions
                    .get_by_digest(&digest)
                    .await
                    .map_err(RecoveryError::from)?
                else {
                    return Ok(None);
                };
                self.sale_in_store(&definition.sku).await
            })
            .buffered(16)
            .try_collect::<Vec<_>>()
            .await
            .map_err(Unanswered::from)?;
        Ok((sales.into_iter().flatten().collect(), next))
    }

    /// The sale with its live counters; `None` when there is no such sale.
    pub async fn sale(&self, sku: &Sku) -> Result<Option<Sale>, Unanswered> {
        Ok(self.sale_in_store(sku).await?)
    }

    async fn sale_in_store(&self, sku: &Sku) -> Result<Option<Sale>, StoreError> {
        self.recovery
            .on_sale(sku, || self.store.sale(sku))
            .await
            .map(|found| match found {
                Ok(sale) => Some(sale),
                Err(Absent::Undefined) => None,
                Err(Absent::Archived(definition)) => definition.archived_view(),
            })
    }

    /// Whether Redis answers a `PING` now (`/readyz`).
    pub async fn redis_answers(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}

/// The outbox entry a pay or cancel call wrote: its one event.
fn written_entry(sku: &Sku, ended: &Ended, kind: EventKind) -> Arc<WrittenEntry> {
    WrittenEntry::new(
        sku.clone(),
        ended.outbox_entry.clone(),
        OrderMessage::one(ended.order.event(kind)),
    )
}
