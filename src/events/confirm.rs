//! `FLASHSALE_CONFIRM=jetstream`: a purchase is answered 201 only once JetStream holds its
//! order event, so an order answered 201 survives Redis losing its data (the rebuild reads
//! it back from the stream). Payments and cancels wait for their events the same way.
//!
//! The handler hands the event to its sale's confirmation driver and waits for the PubAck up
//! to `FLASHSALE_CONFIRM_TIMEOUT_MS`. The driver publishes, with the same `Nats-Msg-Id` the
//! relay uses, every event handed to it while its previous publish was in flight, as one
//! atomic batch where the stream takes them (`support/group_commit.rs`): the orders one
//! script call decided cost JetStream one acknowledgement and, with `sync_interval: always`,
//! one fsync, not one each. A server without atomic batches gets them one by one, pipelined. Without it in time (NATS slow or
//! down) the answer is 202 `"delivery": "pending"`: Redis has decided, and the outbox entry,
//! written by the same script, still delivers the event. The outbox stays the guarantee of
//! delivery in both modes; this is only an earlier, confirmed copy. Once JetStream
//! acknowledged it, the driver removes the batch's entries from the outbox (one `XDEL`)
//! before the handlers answer, so the relay never reads it, and so every later read of the order says
//! `delivered` as the answer did: a reader never sees a delivery undone. The relay leaves
//! entries younger than [`relay_grace`] to their handlers; a repeat that slips through (a
//! confirmation slower than that) is dropped by JetStream's duplicate window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::oneshot;

use crate::domain::Sku;
use crate::domain::event::OrderEvent;
use crate::events::jetstream::{OrderStream, StreamError, StreamFeatures, ensure_stream};
use crate::events::publish::{MAX_ATOMIC_BATCH, PublishWay, publish_in_order};
use crate::store::Inventory;
use crate::support::group_commit::{Batches, DriverGuard};
use crate::support::metrics::Publisher;
use crate::support::settings::Confirm;

/// Pause before publishing again when no stream leader answered.
const NO_LEADER_RETRY: Duration = Duration::from_millis(20);

/// How long one try of a publish waits for its PubAck (well above a loaded cluster's
/// acknowledgement, well below an election's silence).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the relay leaves a new outbox entry to the handler confirming it: while the
/// handler's first try may still be waiting for its PubAck (the confirm timeout, at most one
/// try's 500 ms). Past that the handler sends again itself, or gave up (202), or nobody
/// confirms the entry (an expiry): it is the relay's. Shorter would have the relay repeat
/// what a slow JetStream (a loaded cluster) has not acknowledged yet, adding load where it
/// hurts; the price is that unconfirmed events reach JetStream up to this much later.
pub fn relay_grace(confirm_timeout: Duration) -> Duration {
    confirm_timeout.min(ATTEMPT_TIMEOUT)
}

/// How far a new order had got when it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `FLASHSALE_CONFIRM=redis`: not asked.
    Unconfirmed,
    /// JetStream acknowledged the order's event.
    Confirmed,
    /// JetStream did not acknowledge in time; the relay delivers it from the outbox.
    Pending,
}

impl Delivery {
    /// The answer's `"delivery"` field: absent when not asked.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Delivery::Unconfirmed => None,
            Delivery::Confirmed => Some("confirmed"),
            Delivery::Pending => Some("pending"),
        }
    }
}

pub struct Confirmation {
    mode: Confirm,
    nats: async_nats::Client,
    timeout: Duration,
    publisher: Arc<BatchPublisher>,
}

/// What the sales' confirmation drivers share.
struct BatchPublisher {
    jetstream: jetstream::Context,
    stream: OrderStream,
    /// Where the drivers remove the outbox entries JetStream acknowledged.
    inventory: Arc<Inventory>,
    timeout: Duration,
    /// Set once the order stream is known to exist (publishing needs it).
    stream_ready: tokio::sync::OnceCell<StreamFeatures>,
    /// Events waiting for their sale's next publish.
    waiting: Batches<Waiting>,
    /// Whether a batch goes atomic or one by one, learned from what each gave.
    way: PublishWay,
    /// From the handler handing its event over to the PubAck (the script wrote the event
    /// just before).
    delivery_lag: metrics::Histogram,
}

/// An event waiting for its sale's next batch, and where its answer goes: true once
/// JetStream holds it and the outbox no longer does.
struct Waiting {
    event: OrderEvent,
    outbox_entry: String,
    answer: oneshot::Sender<bool>,
    handed_over: Instant,
}

impl Confirmation {
    pub fn new(
        mode: Confirm,
        nats: async_nats::Client,
        stream: OrderStream,
        timeout: Duration,
        inventory: Arc<Inventory>,
    ) -> Self {
        let mut jetstream = jetstream::new(nats.clone());
        jetstream.set_timeout(timeout);
        Self {
            mode,
            nats,
            timeout,
            publisher: Arc::new(BatchPublisher {
                jetstream,
                stream,
                inventory,
                timeout,
                stream_ready: tokio::sync::OnceCell::new(),
                waiting: Batches::new(MAX_ATOMIC_BATCH),
                way: PublishWay::default(),
                delivery_lag: crate::support::metrics::delivery_lag_histogram(Publisher::Confirm),
            }),
        }
    }

    /// How far an event that has left the outbox got: JetStream holds it (entries leave the
    /// outbox only once JetStream acknowledged them), said in `jetstream` mode.
    pub fn already_delivered(&self) -> Delivery {
        match self.mode {
            Confirm::JetStream => Delivery::Confirmed,
            Confirm::Redis => Delivery::Unconfirmed,
        }
    }

    /// Publishes an event a script just wrote to the outbox of `sku` (a new order, a payment,
    /// a cancel) as entry `outbox_entry`, and waits for JetStream, in `jetstream` mode.
    /// Confirmed means JetStream holds the event and the outbox no longer does: an entry
    /// Redis did not let go of (unreachable right then) answers `Pending`, as every later
    /// read would say until the relay delivers it again (a duplicate JetStream drops).
    pub async fn confirm(&self, sku: &Sku, event: OrderEvent, outbox_entry: &str) -> Delivery {
        if self.mode == Confirm::Redis {
            return Delivery::Unconfirmed;
        }
        let confirmed = match self.hand_over(sku, event, outbox_entry).await {
            Ok(answered) => matches!(
                tokio::time::timeout(self.timeout, answered).await,
                Ok(Ok(true))
            ),
            Err(e) => {
                log::debug!("event of sale {sku} not confirmed by jetstream: {e}");
                false
            }
        };
        crate::support::metrics::record_confirmation(confirmed);
        if confirmed {
            Delivery::Confirmed
        } else {
            Delivery::Pending
        }
    }

    /// Queues the event for its sale's driver, starting one if none runs.
    async fn hand_over(
        &self,
        sku: &Sku,
        event: OrderEvent,
        outbox_entry: &str,
    ) -> Result<oneshot::Receiver<bool>, StreamError> {
        // Waiting would only run into the timeout.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(StreamError::NotConnected);
        }
        let publisher = &self.publisher;
        // One check at a time: concurrent creations of a replicated stream leave all but
        // one request unanswered (seen on a 3-node cluster: the others waited out the
        // timeout), so the others wait for that one.
        let features = *publisher
            .stream_ready
            .get_or_try_init(|| ensure_stream(&publisher.jetstream, &publisher.stream))
            .await?;
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            event,
            outbox_entry: outbox_entry.to_owned(),
            answer,
            handed_over: Instant::now(),
        };
        if publisher.waiting.enqueue(sku.as_str(), waiting) {
            tokio::spawn(publisher.clone().drive(sku.clone(), features));
        }
        Ok(answered)
    }
}

impl BatchPublisher {
    /// Publishes the sale's waiting events, a batch per publish, until none waits. While
    /// an atomic batch is out, the events that arrive wait and go together in the next; a
    /// batch going one by one holds nothing up (its messages are pipelined like any others).
    async fn drive(self: Arc<Self>, sku: Sku, features: StreamFeatures) {
        let mut guard = DriverGuard::new(&self.waiting, sku.as_str());
        while let Some(batch) = self.waiting.next(sku.as_str()) {
            // An event whose handler stopped waiting (timed out, hung up) is the relay's:
            // it is older than the relay's grace by then, or soon will be.
            let batch: Vec<Waiting> = batch
                .into_iter()
                .filter(|waiting| !waiting.answer.is_closed())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let way_atomic = features.atomic_batches && self.way.atomic(Instant::now());
            let atomic = way_atomic && batch.len() > 1;
            let publisher = self.clone();
            let sku = sku.clone();
            let confirming = tokio::spawn(async move {
                publisher
                    .confirm_batch(&sku, batch, atomic, way_atomic)
                    .await
            });
            if atomic {
                // One atomic batch out at a time: two at once were each staged as slowly on
                // a single-replica stream (20 ms for two halves against 10 ms for one whole),
                // so a crowd gathers while one is out. Err: the batch's task panicked; its
                // handlers were answered by the drop.
                let _ = confirming.await;
            }
        }
        guard.finished = true;
    }

    /// Publishes one batch, removes what JetStream acknowledged from the outbox (one
    /// `XDEL`), and answers each handler.
    async fn confirm_batch(&self, sku: &Sku, batch: Vec<Waiting>, atomic: bool, way: bool) {
        let acknowledged = self.publish(&batch, atomic).await;
        if acknowledged.iter().all(|a| *a) {
            let now = Instant::now();
            let latency = batch.iter().map(|w| now - w.handed_over).sum();
            self.way.record(way, batch.len(), latency, now);
        }
        let entries: Vec<&str> = batch
            .iter()
            .zip(&acknowledged)
            .filter(|(_, acknowledged)| **acknowledged)
            .map(|(waiting, _)| waiting.outbox_entry.as_str())
            .collect();
        let dropped = entries.is_empty()
            || match self.inventory.outbox().drop_confirmed(sku, &entries).await {
                Ok(()) => true,
                Err(e) => {
                    log::debug!(
                        "{} confirmed entries of sale {sku} left in the outbox: {e}",
                        entries.len()
                    );
                    false
                }
            };
        for (waiting, acknowledged) in batch.into_iter().zip(acknowledged) {
            let confirmed = acknowledged && dropped;
            if confirmed {
                self.delivery_lag.record(waiting.handed_over.elapsed());
            }
            // Err: the handler stopped waiting; the event stands delivered.
            let _ = waiting.answer.send(confirmed);
        }
    }

    /// Publishes a batch's events (each message id once), as one atomic batch first if
    /// `atomic`, and says which JetStream acknowledged, trying again (one by one) within the
    /// timeout while no stream leader answers.
    async fn publish(&self, batch: &[Waiting], mut atomic: bool) -> Vec<bool> {
        let deadline = Instant::now() + self.timeout;
        let ids: Vec<String> = batch.iter().map(|w| w.event.message_id()).collect();
        // A replay still waiting in the outbox can meet its first answer's event here: one
        // message per id (an atomic batch holding an id twice would be refused whole).
        // The first copy of each id, in the order the handlers handed them over (an order's
        // events keep their order), and every copy of it.
        let mut firsts = Vec::with_capacity(batch.len());
        let mut copies: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, id) in ids.iter().enumerate() {
            let indices = copies.entry(id.as_str()).or_default();
            if indices.is_empty() {
                firsts.push(index);
            }
            indices.push(index);
        }
        let mut acknowledged = vec![false; batch.len()];
        loop {
            let unsent: Vec<usize> = firsts
                .iter()
                .copied()
                .filter(|&index| !acknowledged[index])
                .collect();
            let remaining = deadline.saturating_duration_since(Instant::now());
            if unsent.is_empty() || remaining.is_zero() {
                return acknowledged;
            }
            let events: Vec<Option<&OrderEvent>> = unsent
                .iter()
                .map(|&index| Some(&batch[index].event))
                .collect();
            let mut stored = Vec::with_capacity(unsent.len());
            // Each try is bounded; the next goes out under the same message ids (JetStream
            // drops a repeat), until the overall timeout.
            let attempt = tokio::time::timeout(
                ATTEMPT_TIMEOUT.min(remaining),
                publish_in_order(&self.jetstream, &self.stream, atomic, &events, |k| {
                    stored.push(unsent[k])
                }),
            )
            .await;
            atomic = false;
            for index in stored {
                for &copy in &copies[ids[index].as_str()] {
                    acknowledged[copy] = true;
                }
            }
            match attempt {
                Ok((_, None)) | Err(_) => {}
                // A stream without a leader (a replicated stream just created, an election
                // after a NATS node left) answers "no responders".
                Ok((_, Some(e))) if e.stream_missing() => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                Ok((_, Some(e))) => {
                    log::debug!(
                        "{} events of sale {} not confirmed by jetstream: {e}",
                        unsent.len(),
                        batch[unsent[0]].event.sku
                    );
                    return acknowledged;
                }
            }
        }
    }
}
