//! Publishing order events: the one place an event becomes a message ([`send_event`]), and
//! the relay's delivery of a backlog ([`publish_in_order`]), in atomic batches where the
//! stream takes them.

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use async_nats::{HeaderMap, header};

use super::jetstream::{OrderStream, StreamError, StreamFeatures};
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

/// The most events one atomic batch carries (a server takes up to 1,000).
pub const MAX_ATOMIC_BATCH: usize = 256;

/// Publishes events in order and returns how many of them, from the first, JetStream
/// acknowledged, and the first failure; events after a failure are left to the caller's next
/// try (JetStream drops a repeat). `None` stands for an entry with nothing to publish
/// (unreadable): it counts as delivered. `acknowledged` hears the index of each event
/// JetStream acknowledged.
///
/// Where the stream takes atomic batches, the events go as one: one acknowledgement, and
/// with `sync_interval: always` one fsync, for all of them. A batch holding an event
/// JetStream already stored (a repeat after a lost acknowledgement, or after the handler
/// confirmed it) is refused whole; the events then go one by one, and JetStream drops the
/// repeats by `Nats-Msg-Id`.
pub async fn publish_in_order(
    js: &jetstream::Context,
    stream: &OrderStream,
    features: StreamFeatures,
    events: &[Option<&OrderEvent>],
    mut acknowledged: impl FnMut(usize),
) -> (usize, Option<StreamError>) {
    let batch: Vec<&OrderEvent> = events.iter().flatten().copied().collect();
    let readable = batch.len();
    if features.atomic_batches && (2..=MAX_ATOMIC_BATCH).contains(&readable) {
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

/// One atomic batch (ADR-50): the first event as a request the server answers empty, the
/// middle ones published, the last with `Nats-Batch-Commit` answered by the PubAck of the
/// whole batch. Stored all together, or not at all.
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
        if sequence > 1 && sequence < last {
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
        if sequence < last {
            // The start of a batch is answered empty; anything else is a refusal.
            if !reply.payload.is_empty() {
                return Err(StreamError::Batch(
                    String::from_utf8_lossy(&reply.payload).into_owned(),
                ));
            }
            continue;
        }
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
    use std::sync::atomic::{AtomicU64, Ordering};
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
