//! The relay: hands the orders in the Redis outboxes to JetStream, in every replica.
//!
//! An order accepted by the purchase script is already in its sale's outbox (same atomic
//! step), so nothing is lost if NATS or this process dies: the entry waits. For each sale
//! whose outbox is not empty, the replica holding the sale's lease (so events of one sale are
//! published in order by one replica) reads the outbox from its start, publishes each entry
//! with `Nats-Msg-Id`, waits for the PubAcks, then trims the acknowledged prefix. Entries a
//! dead replica had read stay in the outbox and are read again by the next lease holder; a
//! publish repeated so is dropped by JetStream's duplicate window, which the lease time stays
//! far inside.
//!
//! It visits only the sales in the index of waiting outboxes (`store/waiting.rs`), so an
//! idle sale costs it nothing. It wakes when this replica writes an event, and polls the index
//! for the rest (other replicas' dead leftovers); it backs off while NATS is down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_nats::jetstream;
use tokio::sync::{Notify, watch};

use crate::domain::Sku;
use crate::events::confirm::relay_grace;
use crate::events::jetstream::{
    DUPLICATE_WINDOW, OrderStream, StreamError, StreamFeatures, ensure_stream,
};
use crate::events::publish::{MAX_ATOMIC_BATCH, publish_in_order};
use crate::events::relay_status::{Failures, RelayStatus};
use crate::store::{Backlog, Outbox, StoreError, written_ms};
use crate::support::metrics::Publisher;
use crate::support::settings::{Confirm, Settings};

/// Entries read and published per round trip: as many as one atomic batch carries.
const BATCH: usize = MAX_ATOMIC_BATCH;
/// How often the relay looks for work nobody woke it for: events other replicas wrote to a
/// sale whose lease this one holds, and dead replicas' leftovers. It bounds the delivery lag
/// of those events (with three replicas on one sale, a 250 ms poll measured a relay p99 up
/// to 1 s, BENCHMARKS.md); each look is one `SMEMBERS`, 20 a second per idle replica.
const POLL: Duration = Duration::from_millis(50);
/// How often it also checks every sale's outbox, the safety net of the index of waiting
/// sales (`store/waiting.rs`); and once at start. One `XLEN` per sale: with 20,000 sales,
/// 67 commands/s per replica on average.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(300);
/// While draining, how soon to look again at events that are still waiting.
const DRAIN_RETRY: Duration = Duration::from_millis(50);
/// Lag is logged at most this often while orders wait.
const LAG_LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("nats is not connected")]
    NatsDown,
}

pub struct Relay<R> {
    outbox: Outbox,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    stream: OrderStream,
    /// How long a sale's lease lasts unrenewed: a dead holder's sales wait this long.
    claim_idle: Duration,
    /// This process's name as a lease holder: unique per process, so a restarted replica
    /// waits out its old lease like any dead replica's.
    consumer: String,
    status: Arc<RelayStatus>,
    /// How long a new entry is left to the handler confirming it (`confirm::relay_grace` in
    /// `jetstream` confirm mode, zero in `redis` mode, where nobody else publishes).
    grace: Duration,
    /// Rebuilds a sale whose events wait while Redis lost its state.
    recovery: Arc<R>,
    /// FLASHSALE_RELAY_HOLD: deliver nothing (tests and drills).
    hold: bool,
    /// From an entry's write (its stream id: Redis's clock) to its PubAck (this clock).
    delivery_lag: metrics::Histogram,
    /// Signalled when the NATS client (re)connects: ends a back-off at once.
    connected: Arc<Notify>,
}

/// Rebuilds a sale Redis lost from its record. The recovery layer, above this one, provides
/// it (`recovery::Recovery`): the relay only asks.
pub trait SaleRebuilder: Send + Sync + 'static {
    type Error: std::fmt::Display;
    /// Rebuilds the sale unless Redis holds it; true when this call installed it.
    fn rebuild(&self, sku: &Sku) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Tells a running relay to drain: deliver what it can until the deadline, then stop.
pub type DrainSignal = watch::Sender<Option<Instant>>;

impl<R: SaleRebuilder> Relay<R> {
    pub fn new(
        settings: &Settings,
        outbox: Outbox,
        nats: async_nats::Client,
        status: Arc<RelayStatus>,
        recovery: Arc<R>,
    ) -> Self {
        let claim_idle = settings.relay.claim_idle;
        debug_assert!(claim_idle * 4 < DUPLICATE_WINDOW);
        let mut jetstream = jetstream::new(nats.clone());
        // A publish that gets no ack within this is retried; far inside the duplicate window.
        jetstream.set_timeout(Duration::from_secs(2));
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            outbox,
            nats,
            jetstream,
            stream: OrderStream::new(&settings.nats),
            claim_idle,
            consumer: format!("relay-{}-{started:x}", std::process::id()),
            status,
            grace: match settings.nats.confirm {
                Confirm::JetStream => relay_grace(settings.nats.confirm_timeout),
                Confirm::Redis => Duration::ZERO,
            },
            recovery,
            hold: settings.relay.hold,
            delivery_lag: crate::support::metrics::delivery_lag_histogram(Publisher::Relay),
            connected: Arc::new(Notify::new()),
        }
    }

    /// Wakes the relay from its back-off when `connected` is signalled (the NATS client's
    /// `Connected` event), so a backlog starts going out as soon as NATS is back.
    pub fn woken_on_connect(mut self, connected: Arc<Notify>) -> Self {
        self.connected = connected;
        self
    }

    /// Runs until drained: after the signal carries a deadline, it stops as soon as nothing
    /// waits, or at the deadline, leaving the rest in the outbox for the next process.
    pub async fn run(self, mut drain: watch::Receiver<Option<Instant>>) {
        // What the stream allows, once it is known to exist.
        let mut stream_features = None;
        let mut swept_at: Option<Instant> = None;
        let mut failures = Failures::default();
        let mut last_lag_log = Instant::now();
        log::info!("relay {} started", self.consumer);
        if self.hold {
            log::warn!(
                "relay {} holds every event (FLASHSALE_RELAY_HOLD=on): for tests and drills only",
                self.consumer
            );
        }
        // The lag gauges exist from the start; the first pass gives them their values.
        self.status.record(Backlog::default());
        // The NATS client connects in the background; give it a moment before the first pass
        // rather than reporting a failure that is only the start-up.
        for _ in 0..50 {
            if self.nats.connection_state() == async_nats::connection::State::Connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let draining = drain.borrow().is_some();
            let outcome = self
                .pass(&mut stream_features, &mut swept_at, draining)
                .await;
            // Marks the value seen, so `changed()` below waits for the next one.
            let deadline = *drain.borrow_and_update();
            match &outcome {
                Ok(backlog) => {
                    if let Some((took, attempts)) = failures.ended() {
                        let took = took.as_secs_f64();
                        log::info!(
                            "relay delivering again after {took:.1} s ({attempts} attempts)"
                        );
                    }
                    self.status.record(*backlog);
                    if backlog.pending > 0 && last_lag_log.elapsed() >= LAG_LOG_EVERY {
                        log::info!(
                            "relay lag: {} events waiting, oldest {} ms",
                            backlog.pending,
                            backlog.oldest_age_ms
                        );
                        last_lag_log = Instant::now();
                    }
                }
                Err(e) => {
                    if failures.failed() {
                        log::warn!("relay cannot deliver, backing off: {e}");
                    }
                    if let Ok(backlog) = self.backlog().await {
                        self.status.record(backlog);
                    }
                }
            }

            if let Some(deadline) = deadline {
                let left = self.status.backlog().pending;
                if (outcome.is_ok() && left == 0) || Instant::now() >= deadline {
                    if left > 0 {
                        log::warn!(
                            "relay stopped with {left} events left in the outbox for the next process"
                        );
                    } else {
                        log::info!("relay drained");
                    }
                    return;
                }
            }

            let mut delay = match outcome {
                Err(_) => failures.backoff(),
                // Draining and events still wait (held by another replica's lease, say).
                Ok(backlog) if backlog.pending > 0 && deadline.is_some() => DRAIN_RETRY,
                Ok(_) => POLL,
            };
            if let Some(deadline) = deadline {
                delay = delay.min(deadline.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Woken by this replica's writes only when it publishes them: in `jetstream`
                // mode their handlers do, and the poll finds what they leave.
                _ = self.outbox.written().notified(),
                    if failures.count() == 0 && self.grace.is_zero() => {}
                _ = self.connected.notified(), if failures.count() > 0 => {}
                changed = drain.changed() => {
                    // The application is gone without asking for a drain: so is the process.
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One round over the sales with events waiting; returns what still waits afterwards.
    async fn pass(
        &self,
        stream_features: &mut Option<StreamFeatures>,
        swept_at: &mut Option<Instant>,
        draining: bool,
    ) -> Result<Backlog, RelayError> {
        // First, NATS or not: the sales this replica wrote to go into the shared index, so
        // another replica finds them should this process die.
        self.outbox.index_written().await?;
        if self.hold {
            return Ok(self.backlog().await?);
        }
        // Draining, nobody is left to confirm the youngest entries.
        let grace_ms = if draining {
            0
        } else {
            self.grace.as_millis() as u64
        };
        // Without NATS this replica takes no lease, so a replica that has NATS can deliver.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(RelayError::NatsDown);
        }
        // The shared set holds this replica's sales now too.
        let mut sales: HashSet<Sku> = self.outbox.waiting().await?.into_iter().collect();
        if swept_at.is_none_or(|at| at.elapsed() >= FULL_SWEEP_EVERY) {
            sales.extend(self.outbox.not_empty().await?);
            *swept_at = Some(Instant::now());
        }
        let mut total = Backlog::default();
        for sku in &sales {
            let Some(waiting) = self.outbox.backlog(sku).await? else {
                self.outbox.unindex_empty(sku).await?;
                continue;
            };
            // Entries this young are still their handlers' to confirm (and then drop).
            if waiting.oldest_age_ms < grace_ms {
                total.add(waiting);
                continue;
            }
            let features = match *stream_features {
                Some(features) => features,
                None => {
                    // Atomic batches in both confirm modes: past the handlers' grace, events
                    // are rarely stored already (202s, expiries, an outage's backlog), and a
                    // batch holding one costs a round trip (refused whole, then one by one).
                    let features = ensure_stream(&self.jetstream, &self.stream)
                        .await
                        .map_err(StreamError::from)?;
                    *stream_features = Some(features);
                    features
                }
            };
            if self
                .outbox
                .take_lease(sku, &self.consumer, self.claim_idle)
                .await?
            {
                if let Err(e) = self.relay_sale(sku, features, waiting, grace_ms).await {
                    // The stream is gone (deleted by hand, say): make it again next pass
                    // rather than fail for good on a check made once.
                    if matches!(&e, RelayError::Stream(e) if e.stream_missing()) {
                        log::warn!("order stream not answering; made again if missing: {e}");
                        *stream_features = None;
                    }
                    return Err(e);
                }
                // Events waited for a sale whose state Redis lost (one sale's keys gone):
                // bring it back now rather than at its next request. Only a sale with
                // waiting events pays for this check.
                if !self.outbox.sale_exists(sku).await?
                    && let Err(e) = self.recovery.rebuild(sku).await
                {
                    log::warn!("sale {sku} lost in redis, not rebuilt yet: {e}");
                }
            }
            match self.outbox.backlog(sku).await? {
                Some(backlog) => total.add(backlog),
                None => self.outbox.unindex_empty(sku).await?,
            }
        }
        Ok(total)
    }

    /// What waits in the outboxes of the index, for the status while delivery fails.
    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let mut total = Backlog::default();
        for sku in self.outbox.waiting().await? {
            if let Some(backlog) = self.outbox.backlog(&sku).await? {
                total.add(backlog);
            }
        }
        Ok(total)
    }

    /// Publishes the sale's waiting entries but those younger than `grace_ms` (their
    /// handlers' to confirm), a batch per round trip, and trims what JetStream acknowledged.
    async fn relay_sale(
        &self,
        sku: &Sku,
        features: StreamFeatures,
        waiting: Backlog,
        grace_ms: u64,
    ) -> Result<(), RelayError> {
        // Entries younger than the grace are left for the next pass: sent now, each would
        // race its handler's batch (which a stored copy makes refused whole).
        let written_until_ms = (grace_ms > 0).then(|| waiting.read_at_ms.saturating_sub(grace_ms));
        loop {
            // Up to the first entry this replica's handlers deliver (then the pass ends).
            let entries = self.outbox.read(sku, BATCH, written_until_ms).await?;
            let messages: Vec<_> = entries
                .iter()
                .map(|(_, message)| message.as_ref())
                .collect();
            let (delivered, failure) = publish_in_order(
                &self.jetstream,
                &self.stream,
                features.atomic_batches,
                &messages,
                |acknowledged| {
                    if let Some(written_ms) = written_ms(&entries[acknowledged].0) {
                        let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH);
                        let lag_ms = now
                            .map_or(0, |d| d.as_millis() as u64)
                            .saturating_sub(written_ms);
                        self.delivery_lag.record(lag_ms as f64 / 1000.0);
                    }
                },
            )
            .await;
            if delivered > 0 {
                self.outbox.trim(sku, &entries[delivered - 1].0).await?;
            }
            if let Some(failure) = failure {
                return Err(failure.into());
            }
            // A long backlog outlasts the lease: renewed per batch, or another replica would
            // take the sale over and send the same entries beside this one.
            if entries.len() < BATCH
                || !self
                    .outbox
                    .take_lease(sku, &self.consumer, self.claim_idle)
                    .await?
            {
                return Ok(());
            }
        }
    }
}
