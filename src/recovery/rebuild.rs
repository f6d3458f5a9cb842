//! Rebuilding a sale Redis has lost, from JetStream: the sale definitions bucket says what
//! the sale is, the order stream says what was sold.
//!
//! Every script refuses to decide on a sale Redis does not hold (`StoreError::SaleMissing`).
//! The caller then comes here: [`Recovery::on_sale`] rebuilds the sale (or finds that it was
//! never defined) and runs the operation again. Requests of one replica for one sale wait for
//! a single rebuild, bounded by `FLASHSALE_REBUILD_TIMEOUT_MS` (then 503, retryable).
//! Replicas that meet the same loss may each fold the stream, but `lua/restore.lua` installs
//! the result only where Redis holds no sale, so the first wins and nothing counts twice.
//!
//! The default sale (`/kill`) is defined here on first use, with its configured stock, and
//! then created through the same rebuild, so it survives a loss like any other sale.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

use crate::domain::sale::SaleSettings;
use crate::domain::snapshot::{SaleSnapshot, UnreadableEvent};
use crate::domain::{OrderId, Sku};
use crate::events::jetstream::{EventsRead, StreamError, next_sequence, read_events};
use crate::recovery::archive::ArchivedHistories;
use crate::recovery::definitions::{DefinitionError, SaleDefinition, SaleDefinitions};
use crate::store::{Failed, Rebuild, StoreError};
use crate::support::settings::Settings;

/// How long after it starts a rebuild reads the stream a last time, so that publishes in
/// flight when Redis lost the sale have landed. A Redis restart or failover takes longer
/// than this itself.
const SETTLE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Definitions(#[from] DefinitionError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the sale's history: {0}")]
    History(#[from] UnreadableEvent),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sale's rebuild took longer than {0:?}")]
    TimedOut(Duration),
    #[error("rebuilding the sale: {0}")]
    Failed(String),
}

/// An error of an operation on one sale that can say "Redis does not hold the sale".
pub trait SaleOperationError: From<RecoveryError> {
    fn sale_missing(&self) -> bool;
}

impl From<RecoveryError> for StoreError {
    fn from(e: RecoveryError) -> Self {
        match e {
            RecoveryError::Store(e) => e,
            other => StoreError::NotRebuilt(other.to_string()),
        }
    }
}

impl SaleOperationError for StoreError {
    fn sale_missing(&self) -> bool {
        matches!(self, StoreError::SaleMissing)
    }
}

/// The store calls that may be refused carry a `StoreError` as `Store(_)`.
impl<R> From<RecoveryError> for Failed<R> {
    fn from(e: RecoveryError) -> Self {
        Self::Store(e.into())
    }
}

impl<R> SaleOperationError for Failed<R> {
    fn sale_missing(&self) -> bool {
        matches!(self, Self::Store(StoreError::SaleMissing))
    }
}

/// Why Redis does not hold a sale after a rebuild was asked for.
#[derive(Debug, Clone)]
pub enum Absent {
    /// JetStream has no definition of it either.
    Undefined,
    /// It ended, settled and left Redis (`recovery/archive.rs`): its orders read from the
    /// record, nothing is decided on it.
    Archived(Arc<SaleDefinition>),
}

/// A rebuild under way, shared by every request of this replica that waits for it; `None`
/// when Redis holds the sale after it.
type RebuildTask = Shared<BoxFuture<'static, Result<Option<Absent>, String>>>;

pub struct Recovery {
    pub(super) rebuilder: Arc<Rebuilder>,
    /// Archived sales' histories this replica read (`archive.rs`).
    archived: ArchivedHistories,
    /// How long a request waits for a rebuild (the rebuild itself goes on).
    timeout: Duration,
}

/// What a rebuild needs; shared with the task that runs it.
pub(super) struct Rebuilder {
    pub(super) store: Rebuild,
    definitions: SaleDefinitions,
    jetstream: jetstream::Context,
    stream: String,
    subject_prefix: String,
    /// What `/kill`'s sale is when nobody defined it.
    default_sale: SaleDefinition,
    /// Rebuilds running in this replica, by sku: later requests wait for the same one.
    in_flight: Mutex<HashMap<String, RebuildTask>>,
}

impl Recovery {
    pub fn new(store: Rebuild, nats: async_nats::Client, settings: &Settings) -> Self {
        // `/kill`'s orders are final when accepted, as they always were.
        let default_settings = SaleSettings::plain(settings.recovery.default_stock, 0);
        let mut jetstream = jetstream::new(nats.clone());
        jetstream.set_timeout(Duration::from_secs(2));
        let rebuilder = Rebuilder {
            store,
            definitions: SaleDefinitions::new(nats, &settings.nats),
            jetstream,
            stream: settings.nats.stream.clone(),
            subject_prefix: settings.nats.subject_prefix.clone(),
            default_sale: SaleDefinition::new(&settings.recovery.default_sku, &default_settings),
            in_flight: Mutex::new(HashMap::new()),
        };
        Self {
            rebuilder: Arc::new(rebuilder),
            archived: ArchivedHistories::default(),
            timeout: settings.recovery.rebuild_timeout,
        }
    }

    pub fn definitions(&self) -> &SaleDefinitions {
        &self.rebuilder.definitions
    }

    pub(super) fn archived_histories(&self) -> &ArchivedHistories {
        &self.archived
    }

    /// Runs `operation` on the sale; when Redis does not hold the sale, rebuilds it from
    /// JetStream and runs it once more. `Ok(Err(absent))`: there is no sale to run it on
    /// (never defined, or archived), and the caller says what that means for its operation.
    pub async fn on_sale<T, E, F, Fut>(
        &self,
        sku: &Sku,
        operation: F,
    ) -> Result<Result<T, Absent>, E>
    where
        E: SaleOperationError,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match operation().await {
            Err(e) if e.sale_missing() => {}
            decided => return decided.map(Ok),
        }
        if let Some(why) = self.restore(sku).await? {
            return Ok(Err(why));
        }
        operation().await.map(Ok)
    }

    /// The sale an order id belongs to: from Redis's registry, or, when Redis lost it, from
    /// the sale definitions (keyed by the same sku digest).
    pub async fn sku_of(&self, order_id: &OrderId) -> Result<Option<Sku>, RecoveryError> {
        if let Some(sku) = self.rebuilder.store.sku_of(order_id).await? {
            return Ok(Some(sku));
        }
        let Some(definition) = self
            .definitions()
            .get_by_digest(order_id.sku_digest())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(definition.sku))
    }

    /// The sale's orders as its events from stream sequence `from` on leave them (the
    /// reads of an archived sale).
    pub async fn history(&self, sku: &Sku, from: u64) -> Result<SaleSnapshot, RecoveryError> {
        let mut snapshot = SaleSnapshot::default();
        for event in &self.rebuilder.sale_events(sku, from).await?.events {
            snapshot.apply(event)?;
        }
        Ok(snapshot)
    }

    /// Makes sure Redis holds the sale, rebuilding it from JetStream if it was defined there
    /// (`Ok(None)`); or says why not. The rebuild runs as a task of its own, shared by every
    /// request that waits for it, so a request giving up never cancels it half-way.
    pub async fn restore(&self, sku: &Sku) -> Result<Option<Absent>, RecoveryError> {
        let task = self.rebuilder.clone().task(sku);
        tokio::time::timeout(self.timeout, task)
            .await
            .map_err(|_| RecoveryError::TimedOut(self.timeout))?
            .map_err(RecoveryError::Failed)
    }
}

impl crate::events::relay::SaleRebuilder for Recovery {
    type Error = RecoveryError;
    fn rebuild(&self, sku: &Sku) -> impl Future<Output = Result<bool, RecoveryError>> + Send {
        self.restore(sku)
            .map(|restored| restored.map(|absent| absent.is_none()))
    }
}

impl Rebuilder {
    /// The rebuild of `sku` under way in this replica, or a new one.
    fn task(self: Arc<Self>, sku: &Sku) -> RebuildTask {
        let mut in_flight = self.in_flight.lock();
        if let Some(task) = in_flight.get(sku.as_str()) {
            return task.clone();
        }
        let task = self.clone().spawn(sku.clone());
        in_flight.insert(sku.to_string(), task.clone());
        task
    }

    fn spawn(self: Arc<Self>, sku: Sku) -> RebuildTask {
        let running = tokio::spawn(async move {
            let outcome = self.rebuild(&sku).await.map_err(|e| e.to_string());
            // Done: the next loss starts afresh (this waits for `task` to release the map).
            self.in_flight.lock().remove(sku.as_str());
            outcome
        });
        async move { running.await.unwrap_or_else(|e| Err(e.to_string())) }
            .boxed()
            .shared()
    }

    async fn rebuild(&self, sku: &Sku) -> Result<Option<Absent>, RecoveryError> {
        // Another request of this replica may have rebuilt it while this one waited (held
        // means: by this primary; a copy from elsewhere is rebuilt like a lost one).
        if self.store.sale_exists(sku).await? {
            return Ok(None);
        }
        let started = Instant::now();
        let (definition, settled) = match self.definitions.get(sku).await? {
            // An archived sale is read from the record, never installed again.
            Some(definition) if definition.archived.is_some() => {
                return Ok(Some(Absent::Archived(Arc::new(definition))));
            }
            // Events of orders the lost copy accepted may still be on their way to JetStream
            // (a purchase's confirmation, a relay batch: milliseconds each). The stream is
            // read now and once more from where it ended when SETTLE has passed, so those
            // count too, without making a large rebuild wait longer than its reading.
            Some(definition) => (definition, Some(started + SETTLE)),
            None if *sku == self.default_sale.sku => {
                (self.definitions.create(&self.default_sale).await?, None)
            }
            None => return Ok(Some(Absent::Undefined)),
        };
        let mut snapshot = SaleSnapshot::default();
        let read = self
            .sale_events(sku, definition.history_from.unwrap_or(1))
            .await?;
        let mut events = read.events;
        if let Some(settled) = settled {
            tokio::time::sleep_until(settled.into()).await;
        }
        // The outbox is read before the stream's last reading: an entry the relay trims in
        // between was acknowledged by JetStream first, so that reading holds it. (No script
        // adds entries meanwhile: they all refuse a sale Redis does not hold.)
        let waiting = self.store.waiting_events(sku).await?;
        if settled.is_some() {
            events.extend(self.sale_events(sku, read.last_sequence + 1).await?.events);
        }
        for event in &events {
            snapshot.apply(event)?;
        }
        // The outbox is folded in after the stream: whatever of it JetStream already holds
        // is the same order, applied once.
        for entry in &waiting {
            for event in entry.message.events() {
                snapshot.apply_waiting(event, &entry.id)?;
            }
        }
        let Some(restored) = self.store.restore(&definition, &snapshot).await? else {
            return Ok(None);
        };
        // A new default sale is no news; anything else means Redis had lost it.
        if snapshot.orders() > 0 || *sku != self.default_sale.sku {
            crate::support::metrics::record_rebuild(started.elapsed());
            let what = if restored.replaced_stale {
                "its copy was written by another primary (failover?)"
            } else {
                "redis had lost it"
            };
            log::warn!(
                "sale {sku} rebuilt from JetStream, {what}: {} orders, sold {} of {}, {} overdue orders expired on install ({} units back), in {:?}",
                snapshot.orders(),
                restored.sold,
                definition.stock,
                restored.expired.orders,
                restored.expired.units,
                started.elapsed()
            );
        } else {
            log::info!("default sale {sku} created with stock {}", definition.stock);
        }
        if restored.sold > definition.stock {
            // The record itself sells past the stock (a cancel or a payment whose event Redis
            // lost, its units sold again): say so loudly; purchases answer 503
            // sale_inconsistent until a cancel or a PUT mends it, and the audit exits 1.
            crate::support::metrics::record_oversold_fold();
            log::error!(
                "sale {sku} rebuilt with {} sold of a stock of {}: purchases refused (503 sale_inconsistent) until orders are cancelled or the stock is raised",
                restored.sold,
                definition.stock
            );
        }
        if let Some(first) = restored.expired.next_due {
            self.store.index_deadline(sku, first).await?;
        }
        Ok(None)
    }

    /// Where the order stream's next event will land (1 while it does not exist).
    pub(super) async fn next_sequence(&self) -> Result<u64, RecoveryError> {
        Ok(next_sequence(&self.jetstream, &self.stream).await?)
    }

    /// The sale's events in the order stream from sequence `from` on, oldest first.
    async fn sale_events(&self, sku: &Sku, from: u64) -> Result<EventsRead, RecoveryError> {
        let subjects = format!("{}.*.{sku}", self.subject_prefix);
        Ok(read_events(&self.jetstream, &self.stream, &subjects, from).await?)
    }
}
