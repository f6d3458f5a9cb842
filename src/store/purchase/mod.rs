mod answer;

use std::sync::Arc;
use std::time::Instant;

use redis::Value;
use tokio::sync::oneshot;

use super::outbox::CreatedEvent;
use super::{Failed, PurchaseError, Store, StoreError};
use crate::domain::order::Order;
use crate::domain::refusal::PurchaseRefusal;
use crate::domain::{IdempotencyKey, Quantity, Sku, UserId};
use crate::support::group_commit::{Batches, DriverGuard};
use crate::support::metrics::{Outcome, PurchaseMetrics};
use crate::support::settings::RedisSettings;

/// `purchase.lua`'s reply: what the call's new orders share, the (1-based) indices of the
/// purchases answered on their own, and those answers.
type ScriptReply = (Vec<Value>, Vec<usize>, Vec<Vec<Value>>);

/// An accepted purchase: a new order, or the order an earlier request with the same
/// Idempotency-Key created (`replayed`).
#[derive(Debug)]
pub struct Purchase {
    pub order: Order,
    pub replayed: bool,
    /// Whether the replicas FLASHSALE_REDIS_WAIT_REPLICAS asks for hold the new order (true
    /// when it asks for none).
    pub replicated: bool,
    /// pay_by (ms) of a new order that holds its sale's earliest payment deadline: the
    /// sweeper's cross-sale index must hear of it (`payment_due.rs`).
    pub(super) earliest_deadline: Option<i64>,
    /// Where the order's created event stands.
    pub event: CreatedEvent,
}

impl PurchaseError {
    fn outcome(&self) -> Outcome {
        let refusal = match self {
            Failed::Refused(refusal) => refusal,
            Failed::Store(_) => return Outcome::Unavailable,
        };
        match refusal {
            PurchaseRefusal::SaleNotFound => Outcome::SaleNotFound,
            PurchaseRefusal::SaleNotOpen | PurchaseRefusal::SaleArchived => Outcome::SaleNotOpen,
            PurchaseRefusal::UserLimitReached => Outcome::UserLimitReached,
            PurchaseRefusal::SoldOut { .. } => Outcome::SoldOut,
            PurchaseRefusal::SaleInconsistent { .. } => Outcome::SaleInconsistent,
            PurchaseRefusal::QuantityAboveLimit { .. } => Outcome::InvalidQuantity,
            PurchaseRefusal::IdempotencyConflict => Outcome::IdempotencyConflict,
            PurchaseRefusal::NotAdmitted { .. } => Outcome::NotAdmitted,
            PurchaseRefusal::AdmissionExpired => Outcome::AdmissionExpired,
            PurchaseRefusal::QueueTokenRequired | PurchaseRefusal::EarlierLine => {
                Outcome::QueueTokenRequired
            }
        }
    }
}

/// The most purchases one script call decides. Bounded because Redis runs nothing else
/// during the call: at the ~10 µs of Redis time a purchase measured in a batch
/// (BENCHMARKS.md), a full batch holds it for about 1.3 ms.
pub const MAX_BATCH: usize = 128;

/// The purchase path's own state: the purchases waiting for their sale's next script call
/// (`support/group_commit.rs`), and what it measures.
pub(super) struct Purchases {
    pub batches: Batches<Queued>,
    pub metrics: PurchaseMetrics,
    /// How long an Idempotency-Key's answer is kept, as the script takes it.
    pub idempotency_ttl_secs: String,
}

impl Purchases {
    pub fn new(settings: &RedisSettings) -> Self {
        Self {
            batches: Batches::new(MAX_BATCH),
            metrics: PurchaseMetrics::register(),
            idempotency_ttl_secs: settings.idempotency_ttl.as_secs().to_string(),
        }
    }
}

/// A purchase waiting for its sale's next call, and where its answer goes.
pub(crate) struct Queued {
    pub request: PurchaseRequest,
    pub answer: oneshot::Sender<Result<Purchase, PurchaseError>>,
}

/// One purchase as the caller asked for it, owned so it can wait in its sale's queue.
#[derive(Debug)]
pub struct PurchaseRequest {
    pub user: UserId,
    pub quantity: Quantity,
    pub idempotency_key: Option<IdempotencyKey>,
    pub listing: Listing,
    /// The buyer's place in the sale's line, from its queue token (signature checked).
    pub place: Option<u64>,
}

/// Whether an order goes on its buyer's list (`GET …/users/{user_id}/orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Listed,
    /// `/kill`'s anonymous buyer: the old app kept no buyer, and one list of every order only
    /// cost its cut. The buyer's tally (for a per-user limit) is kept all the same.
    Unlisted,
}

impl Store {
    /// One purchase, decided by `lua/purchase.lua` atomically with every other purchase of
    /// the sale; none at all when this replica knows the sale is sold out. Concurrent
    /// purchases of one sale share a script call (`support/group_commit.rs`), so a purchase costs
    /// Redis at most one call. A sale Redis does not hold is `Store(SaleMissing)`: nothing
    /// was decided (see `recovery/rebuild.rs`).
    pub(super) async fn purchase(
        self: &Arc<Self>,
        sku: &Sku,
        request: PurchaseRequest,
    ) -> Result<Purchase, PurchaseError> {
        // Fast path: an empty sale is answered from memory. A request with an
        // Idempotency-Key still goes to Redis, which may hold its earlier order to replay.
        if request.idempotency_key.is_none() && self.sold_out.is_sold_out(sku) {
            self.purchases.metrics.fast_path();
            self.purchases.metrics.outcome(Outcome::SoldOut);
            return Err(Failed::Refused(PurchaseRefusal::SoldOut { remaining: 0 }));
        }
        let started = Instant::now();
        let (answer, answered) = oneshot::channel();
        if self
            .purchases
            .batches
            .enqueue(sku.as_str(), Queued { request, answer })
        {
            tokio::spawn(self.clone().drive(sku.clone()));
        }
        // The driver answers every purchase it takes; a closed channel means it was torn
        // down (the runtime shutting down) before deciding this one. The wait is bounded:
        // a purchase still queued when it gives up is never sent (the driver skips a closed
        // channel); one already in a call has an unknown outcome, as any 503 says.
        let result = match tokio::time::timeout(self.redis.timeout, answered).await {
            Ok(answer) => answer.unwrap_or(Err(PurchaseError::Store(StoreError::Abandoned))),
            Err(_) => {
                self.purchases.metrics.outcome(Outcome::Unavailable);
                Err(PurchaseError::Store(StoreError::NotAnswering))
            }
        };
        self.purchases.metrics.script(started.elapsed());
        result
    }

    /// Decides the sale's queued purchases, a batch per script call, until none waits.
    async fn drive(self: Arc<Self>, sku: Sku) {
        let mut guard = DriverGuard::new(&self.purchases.batches, sku.as_str());
        while let Some(batch) = self.purchases.batches.next(sku.as_str()) {
            // Purchases whose caller stopped waiting (timed out, hung up) are not decided.
            let (requests, answers): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .filter(|queued| !queued.answer.is_closed())
                .map(|queued| (queued.request, queued.answer))
                .unzip();
            if requests.is_empty() {
                continue;
            }
            let results = if self.redis.answering().await {
                self.purchases.metrics.batch(requests.len());
                self.decide(&sku, &requests).await
            } else {
                requests
                    .iter()
                    .map(|_| Err(StoreError::NotAnswering.into()))
                    .collect()
            };
            for (answer, result) in answers.into_iter().zip(results) {
                // A missing sale is decided by the call after its rebuild, and counted then.
                if !matches!(result, Err(PurchaseError::Store(StoreError::SaleMissing))) {
                    self.purchases.metrics.outcome(match &result {
                        Ok(purchase) if purchase.replayed => Outcome::Replayed,
                        Ok(_) => Outcome::Created,
                        Err(e) => e.outcome(),
                    });
                }
                // Err: the client hung up; its purchase stands, like one whose answer was
                // lost on the wire (an Idempotency-Key retry replays it).
                let _ = answer.send(result);
            }
        }
        guard.finished = true;
    }

    /// One script call for a batch: one result per request, in order.
    async fn decide(
        &self,
        sku: &Sku,
        requests: &[PurchaseRequest],
    ) -> Vec<Result<Purchase, PurchaseError>> {
        let keys = self.redis.keys(sku);
        let mut call = self.scripts.purchase.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(keys.outbox())
            .key(keys.deadlines());
        for key in requests.iter().filter_map(|r| r.idempotency_key.as_ref()) {
            call.key(keys.idempotency(key));
        }
        call.arg(&self.purchases.idempotency_ttl_secs);
        for request in requests {
            call.arg(request.user.as_str())
                .arg(request.quantity.get())
                .arg(
                    request
                        .idempotency_key
                        .as_ref()
                        .map_or("", IdempotencyKey::as_str),
                );
            let listing = match request.listing {
                Listing::Listed => "1",
                Listing::Unlisted => "0",
            };
            // A queued buyer's place follows (`purchase.lua`, ARGV); only then a new string.
            match request.place {
                None => call.arg(listing),
                Some(place) => call.arg(format!("{listing}@{place}")),
            };
        }

        let mut redis = match self.redis.writer().await {
            Ok(redis) => redis,
            Err(e) => return requests.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let answer: Result<ScriptReply, _> = call.invoke_async(&mut *redis).await;
        let (shared, answered_at, answers) = match self.redis.observe(answer) {
            Ok(answer) => answer,
            Err(e) => return requests.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let mut results = answer::read_answer(sku, requests, &shared, &answered_at, &answers);
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|p| !p.replayed))
            && !self.redis.replicated(&mut redis, sku).await
        {
            for purchase in results.iter_mut().flatten() {
                purchase.replicated = false;
            }
        }
        drop(redis);
        self.after_batch(sku, &results).await;
        results
    }

    /// What a batch's new orders oblige this replica to do, once per batch: tell its relay,
    /// index the sale's earliest deadline, mark the sale sold out.
    async fn after_batch(&self, sku: &Sku, results: &[Result<Purchase, PurchaseError>]) {
        let created = || {
            results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .filter(|p| !p.replayed)
        };
        if created().next().is_some() {
            self.wrote_outbox(sku);
        }
        // The sale's earliest deadline: the sweeper must know the sale has one
        // (payment_due.rs: why after the script is safe, and why a later deadline needs no
        // write).
        let earliest = created().filter_map(|p| p.earliest_deadline).min();
        if let Some(pay_by) = earliest
            && let Err(e) = self.payment_due().index(sku, pay_by).await
        {
            log::warn!("sale {sku}: payment deadline not indexed yet: {e}");
        }
        let emptied = results.iter().any(|r| match r {
            Ok(p) => !p.replayed && p.order.remaining == 0,
            Err(Failed::Refused(PurchaseRefusal::SoldOut { remaining })) => *remaining == 0,
            Err(_) => false,
        });
        if emptied && !self.sold_out.is_sold_out(sku) {
            self.sold_out.mark(sku);
            if created().any(|p| p.order.remaining == 0) {
                log::info!("sale {sku} sold out");
            }
        }
    }
}
