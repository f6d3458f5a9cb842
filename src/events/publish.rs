//! Publishing order events: the one place an event becomes a message ([`send_event`]), and
//! the relay's delivery of a backlog ([`publish_in_order`]), in atomic batches where the
//! stream takes them.

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, header};

use super::jetstream::{OrderStream, StreamError};
use crate::domain::event::OrderEvent;

/// Sends one order event: the one place an event becomes a message. Its subject is the
/// contract's `<prefix>.<event>.<sku>` and its `Nats-Msg-Id` the event's own, so JetStream
/// drops a repeat whoever sends it (handler or relay). Resolves once the message is sent; the
/// returned future then resolves with JetStream's acknowledgement.
pub async fn send_event(
    js: &jetstream::Context,
    stream: &OrderStream,
    event: &OrderEvent,
) -> Result<PublishAckFuture, StreamError> {
    let payload = serde_json::to_vec(event)?;
    let message = PublishMessage::build()
        .payload(payload.into())
        .message_id(event.message_id());
    Ok(js
        .send_publish(event.subject(&stream.subject_prefix), message)
        .await?)
}

/// The most events one atomic batch carries: nats-server's limit. Each batch costs a fixed
/// ~6.5 ms on a single-replica file stream (its staging store), so the relay drains a
/// backlog faster the larger they are: 33.7–35.9k events/s at 1,000 against 21.8–22.5k at 256
/// (BENCHMARKS.md).
pub const MAX_ATOMIC_BATCH: usize = 1000;

/// Publishes events in order and returns how many of them, from the first, JetStream
/// acknowledged, and the first failure; events after a failure are left to the caller's next
/// try (JetStream drops a repeat). `None` stands for an entry with nothing to publish
/// (unreadable): it counts as delivered. `acknowledged` hears the index of each event
/// JetStream acknowledged.
///
/// With `atomic` (the stream takes atomic batches), the events go as one: one
/// acknowledgement, and with `sync_interval: always` one fsync, for all of them. A batch holding an event
/// JetStream already stored (a repeat after a lost acknowledgement, or after the handler
/// confirmed it) is refused whole; the events then go one by one, and JetStream drops the
/// repeats by `Nats-Msg-Id`.
pub async fn publish_in_order(
    js: &jetstream::Context,
    stream: &OrderStream,
    atomic: bool,
    events: &[Option<&OrderEvent>],
    mut acknowledged: impl FnMut(usize),
) -> (usize, Option<StreamError>) {
    let batch: Vec<&OrderEvent> = events.iter().flatten().copied().collect();
    let readable = batch.len();
    if atomic && (2..=MAX_ATOMIC_BATCH).contains(&readable) {
        match publish_atomic(js, stream, &batch).await {
            Ok(()) => {
                for (index, _) in events.iter().enumerate().filter(|(_, e)| e.is_some()) {
                    acknowledged(index);
                }
                return (events.len(), None);
            }
            Err(e) => log::debug!("atomic batch of {readable} events not stored ({e}): one by one"),
        }
    }
    publish_one_by_one(js, stream, events, acknowledged).await
}

/// Sends each event, then awaits the acknowledgements (pipelined).
async fn publish_one_by_one(
    js: &jetstream::Context,
    stream: &OrderStream,
    events: &[Option<&OrderEvent>],
    mut acknowledged: impl FnMut(usize),
) -> (usize, Option<StreamError>) {
    let mut acks = Vec::with_capacity(events.len());
    let mut failure = None;
    for event in events {
        let Some(event) = event else {
            acks.push(None);
            continue;
        };
        match send_event(js, stream, event).await {
            Ok(ack) => acks.push(Some(ack)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let mut delivered = 0;
    let mut unbroken = true;
    for (index, ack) in acks.into_iter().enumerate() {
        if let Some(ack) = ack {
            match ack.await {
                Ok(_) => acknowledged(index),
                Err(e) => {
                    failure.get_or_insert(e.into());
                    unbroken = false;
                }
            }
        }
        if unbroken {
            delivered += 1;
        }
    }
    (delivered, failure)
}

/// One atomic batch (ADR-50): every event but the last published, the last with
/// `Nats-Batch-Commit` answered by the PubAck of the whole batch (or its refusal): one round
/// trip. Stored all together, or not at all. (The optional answer to the first event is
/// flow control for batches far larger than ours; waiting for it doubled the round trips.)
async fn publish_atomic(
    js: &jetstream::Context,
    stream: &OrderStream,
    events: &[&OrderEvent],
) -> Result<(), StreamError> {
    let client = js.client();
    let batch = batch_id();
    let last = events.len();
    for (index, event) in events.iter().enumerate() {
        let sequence = index + 1;
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, event.message_id().as_str());
        headers.insert(header::NATS_BATCH_ID, batch.as_str());
        headers.insert(header::NATS_BATCH_SEQUENCE, sequence.to_string().as_str());
        if sequence == last {
            headers.insert(header::NATS_BATCH_COMMIT, "1");
        }
        let subject = event.subject(&stream.subject_prefix);
        let payload = serde_json::to_vec(event)?.into();
        if sequence < last {
            client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| StreamError::Batch(e.to_string()))?;
            continue;
        }
        let reply = client
            .request_with_headers(subject, headers, payload)
            .await
            .map_err(|e| StreamError::Batch(e.to_string()))?;
        let ack: BatchAck = serde_json::from_slice(&reply.payload)
            .map_err(|e| StreamError::Batch(format!("unreadable batch ack: {e}")))?;
        return match ack {
            BatchAck {
                error: Some(error), ..
            } => Err(StreamError::Batch(error.to_string())),
            BatchAck { count, .. } if count != last => Err(StreamError::Batch(format!(
                "{count} of {last} events stored"
            ))),
            _ => Ok(()),
        };
    }
    Ok(())
}

/// The PubAck that ends an atomic batch.
#[derive(serde::Deserialize)]
struct BatchAck {
    #[serde(default)]
    count: usize,
    error: Option<serde_json::Value>,
}

/// A batch id unique across processes and calls (the server keys batches in flight by it).
fn batch_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which way the handlers' batches go where the stream takes both, learned from the
/// confirmation latency each way gives on this server, since neither wins everywhere
/// (BENCHMARKS.md, nats-server 2.15.1): an atomic batch of a single-replica file stream is
/// staged in a store of its own on disk, a fixed ~6.5 ms whatever its size, and the stream
/// takes nothing else meanwhile. With `sync_interval: always` each message alone costs an
/// fsync, and the batch wins (4.1k against 3.0k purchases/s); without, one by one wins
/// (7.5k against 3.6k). On a replicated stream batches are staged in memory and win
/// everywhere measured (25k against 16.5k events/s).
///
/// The publisher keeps to one way for an epoch and tries the other for a short one in
/// between; it switches when the other gave a lower mean latency. A whole epoch, not one
/// batch, because the ways interfere: a lone publish measured while atomic batches hold up
/// the stream would look as dear as they are.
pub struct PublishWay {
    state: parking_lot::Mutex<WayState>,
}

struct WayState {
    prefer_atomic: bool,
    trying_other: bool,
    epoch_started: Instant,
    /// Mean µs from hand-over to acknowledgement in the last epoch of the preferred way.
    preferred_mean_us: Option<u64>,
    latency_us: u64,
    events: u64,
}

/// How long the publisher keeps to its preferred way, and tries the other.
const PREFERRED_EPOCH: Duration = Duration::from_secs(5);
const TRIAL_EPOCH: Duration = Duration::from_millis(300);
/// The start of an epoch is not measured: the other way's batches may still be out.
const WARM_UP: Duration = Duration::from_millis(50);

impl Default for PublishWay {
    fn default() -> Self {
        Self::starting_at(Instant::now())
    }
}

impl PublishWay {
    /// Atomic first: it is the better way on two of the three kinds measured.
    pub fn starting_at(now: Instant) -> Self {
        Self {
            state: parking_lot::Mutex::new(WayState {
                prefer_atomic: true,
                trying_other: false,
                epoch_started: now,
                preferred_mean_us: None,
                latency_us: 0,
                events: 0,
            }),
        }
    }

    /// Whether the batches handed to JetStream now go atomic (batches of one never do).
    pub fn atomic(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.epoch_started);
        if !state.trying_other && elapsed >= PREFERRED_EPOCH {
            state.preferred_mean_us = state.mean_us();
            state.trying_other = true;
            state.restart(now);
        } else if state.trying_other && elapsed >= TRIAL_EPOCH {
            if let (Some(preferred), Some(other)) = (state.preferred_mean_us, state.mean_us()) {
                // A tenth better, so noise does not flip it back and forth.
                if other.saturating_mul(10) < preferred.saturating_mul(9) {
                    state.prefer_atomic = !state.prefer_atomic;
                    log::info!(
                        "order events now go to jetstream {}: {other} µs mean confirmation against {preferred} µs",
                        if state.prefer_atomic {
                            "in atomic batches"
                        } else {
                            "one by one"
                        }
                    );
                }
            }
            state.trying_other = false;
            state.restart(now);
        }
        state.prefer_atomic != state.trying_other
    }

    /// The confirmation latency of `events` events handed over while [`PublishWay::atomic`]
    /// said `atomic`, summed, all acknowledged.
    pub fn record(&self, atomic: bool, events: usize, latency_sum: Duration, now: Instant) {
        let mut state = self.state.lock();
        let current = state.prefer_atomic != state.trying_other;
        if atomic != current || now.saturating_duration_since(state.epoch_started) < WARM_UP {
            return;
        }
        state.latency_us += latency_sum.as_micros() as u64;
        state.events += events as u64;
    }
}

impl WayState {
    fn mean_us(&self) -> Option<u64> {
        (self.events > 0).then(|| self.latency_us / self.events)
    }

    fn restart(&mut self, now: Instant) {
        self.epoch_started = now;
        self.latency_us = 0;
        self.events = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `way` batches of 10 events at `latency_ms` each way, from `start`, for `for_ms`;
    /// the time it ends at.
    fn run(
        way: &PublishWay,
        start: Instant,
        for_ms: u64,
        atomic_ms: u64,
        single_ms: u64,
    ) -> Instant {
        let mut now = start;
        while now < start + Duration::from_millis(for_ms) {
            let atomic = way.atomic(now);
            let per_event = Duration::from_millis(if atomic { atomic_ms } else { single_ms });
            way.record(atomic, 10, per_event * 10, now);
            now += Duration::from_millis(10);
        }
        now
    }

    #[test]
    fn the_publisher_keeps_to_the_way_that_confirms_sooner() {
        let start = Instant::now();
        let way = PublishWay::starting_at(start);
        assert!(way.atomic(start), "atomic first");
        // One by one confirms sooner (an unsynced single-replica server): it is taken after
        // the first trial, and kept through later trials of atomic batches.
        let now = run(&way, start, 5_400, 9, 2);
        assert!(
            !way.atomic(now),
            "one by one after a trial showed it sooner"
        );
        let now = run(&way, now, 11_000, 9, 2);
        assert!(
            !way.atomic(now),
            "kept: the trials of atomic batches were slower"
        );
        // The server changes (now syncing every write): the next trial finds atomic sooner.
        let now = run(&way, now, 6_000, 9, 20);
        assert!(way.atomic(now), "back to atomic batches");
    }

    #[test]
    fn a_way_no_better_by_a_tenth_is_not_taken() {
        let start = Instant::now();
        let way = PublishWay::starting_at(start);
        let now = run(&way, start, 16_000, 10, 10);
        assert!(way.atomic(now), "equal latencies: no switch");
    }

    #[test]
    fn a_trial_without_traffic_changes_nothing() {
        let start = Instant::now();
        let way = PublishWay::starting_at(start);
        let now = run(&way, start, 5_000, 9, 2);
        assert!(!way.atomic(now), "a trial of one by one begins");
        // The trial epoch passes with nothing handed over.
        let later = now + Duration::from_secs(1);
        assert!(way.atomic(later), "nothing measured: atomic kept");
    }
}
