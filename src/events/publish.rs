//! Publishing order messages: the one place an outbox entry becomes a message
//! ([`send_message`]), and the relay's delivery of a backlog ([`publish_in_order`]), in
//! atomic batches where the stream takes them.

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::{HeaderMap, header};

use super::jetstream::{OrderStream, StreamError};
use crate::domain::event::OrderMessage;

/// Sends one outbox entry's message: the one place an entry becomes a message. Its subject
/// is the contract's `<prefix>.<event>.<sku>` and its `Nats-Msg-Id` the entry's own, so
/// JetStream drops a repeat whoever sends it (handler or relay). Resolves once the message is
/// sent; the returned future then resolves with JetStream's acknowledgement.
pub async fn send_message(
    js: &jetstream::Context,
    stream: &OrderStream,
    message: &OrderMessage,
) -> Result<PublishAckFuture, StreamError> {
    let published = PublishMessage::build()
        .payload(message.payload()?.into())
        .message_id(message.message_id());
    Ok(js
        .send_publish(message.subject(&stream.subject_prefix), published)
        .await?)
}

/// The most messages one atomic batch carries: nats-server's limit.
pub const MAX_ATOMIC_BATCH: usize = 1000;

/// The most events the relay packs into one atomic batch: a backlog of single-event entries
/// (an outage's payments, a version before batches) goes a thousand a batch, one of full
/// purchase entries a few entries a batch (each one a message already).
const MAX_ATOMIC_EVENTS: usize = 1000;

/// Publishes messages in order and returns how many of them, from the first, JetStream
/// acknowledged, and the first failure; messages after a failure are left to the caller's
/// next try (JetStream drops a repeat). `None` stands for an entry with nothing to publish
/// (unreadable): it counts as delivered. `acknowledged` hears the index of each message
/// JetStream acknowledged.
///
/// With `atomic` (the stream takes atomic batches), small messages are packed: a run of
/// them holding up to [`MAX_ATOMIC_EVENTS`] events goes as one atomic batch, one
/// acknowledgement and with `sync_interval: always` one fsync. A batch holding a message
/// JetStream already stored (a repeat after a lost acknowledgement, or after the handlers
/// confirmed it) is refused whole; the rest then goes one by one, and JetStream drops the
/// repeats by `Nats-Msg-Id`.
pub async fn publish_in_order(
    js: &jetstream::Context,
    stream: &OrderStream,
    atomic: bool,
    messages: &[Option<&OrderMessage>],
    mut acknowledged: impl FnMut(usize),
) -> (usize, Option<StreamError>) {
    let mut start = 0;
    while atomic && start < messages.len() {
        let run = atomic_run(&messages[start..]);
        let batch: Vec<&OrderMessage> = messages[start..start + run]
            .iter()
            .flatten()
            .copied()
            .collect();
        if batch.len() < 2 {
            break;
        }
        match publish_atomic(js, stream, &batch).await {
            Ok(()) => {
                for (index, message) in messages.iter().enumerate().skip(start).take(run) {
                    if message.is_some() {
                        acknowledged(index);
                    }
                }
                start += run;
            }
            Err(e) => {
                log::debug!(
                    "atomic batch of {} messages not stored ({e}): one by one",
                    batch.len()
                );
                break;
            }
        }
    }
    let (delivered, failure) = publish_one_by_one(js, stream, &messages[start..], |index| {
        acknowledged(start + index)
    })
    .await;
    (start + delivered, failure)
}

/// How many of `messages`, from the first, one atomic batch takes.
fn atomic_run(messages: &[Option<&OrderMessage>]) -> usize {
    let mut events = 0;
    let mut run = 0;
    for message in messages.iter().take(MAX_ATOMIC_BATCH) {
        let size = message.map_or(0, |m| m.events().len());
        if run > 0 && events + size > MAX_ATOMIC_EVENTS {
            break;
        }
        events += size;
        run += 1;
    }
    run
}

/// Sends each message, then awaits the acknowledgements (pipelined).
async fn publish_one_by_one(
    js: &jetstream::Context,
    stream: &OrderStream,
    messages: &[Option<&OrderMessage>],
    mut acknowledged: impl FnMut(usize),
) -> (usize, Option<StreamError>) {
    let mut acks = Vec::with_capacity(messages.len());
    let mut failure = None;
    for message in messages {
        let Some(message) = message else {
            acks.push(None);
            continue;
        };
        match send_message(js, stream, message).await {
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

/// One atomic batch (ADR-50): every message but the last published, the last with
/// `Nats-Batch-Commit` answered by the PubAck of the whole batch (or its refusal): one round
/// trip. Stored all together, or not at all. (The optional answer to the first event is
/// flow control for batches far larger than ours; waiting for it doubled the round trips.)
async fn publish_atomic(
    js: &jetstream::Context,
    stream: &OrderStream,
    messages: &[&OrderMessage],
) -> Result<(), StreamError> {
    let client = js.client();
    let batch = batch_id();
    let last = messages.len();
    for (index, message) in messages.iter().enumerate() {
        let sequence = index + 1;
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, message.message_id().as_str());
        headers.insert(header::NATS_BATCH_ID, batch.as_str());
        headers.insert(header::NATS_BATCH_SEQUENCE, sequence.to_string().as_str());
        if sequence == last {
            headers.insert(header::NATS_BATCH_COMMIT, "1");
        }
        let subject = message.subject(&stream.subject_prefix);
        let payload = message.payload()?.into();
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
                "{count} of {last} messages stored"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{EventKind, OrderEvent};

    /// A message of `events` order.created events.
    fn message(events: usize) -> OrderMessage {
        let event = |i: usize| OrderEvent {
            event: EventKind::Created,
            order_id: format!("0123456789abcdef-1-{i}"),
            sku: "s".into(),
            user_id: "u".into(),
            quantity: 1,
            unit_price: 0,
            total_amount: 0,
            created_at: "2026-12-08T00:00:00.000Z".into(),
            idempotency_key: None,
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        };
        OrderMessage::new((0..events).map(event).collect()).expect("one kind of event")
    }

    #[test]
    fn an_atomic_run_stops_before_the_events_bound_and_at_the_messages_bound() {
        let (half, one, big) = (
            message(MAX_ATOMIC_EVENTS / 2),
            message(1),
            message(MAX_ATOMIC_EVENTS + 5),
        );
        let run = |messages: &[Option<&OrderMessage>]| atomic_run(messages);
        // Two halves fill the bound exactly; a third message would pass it.
        assert_eq!(run(&[Some(&half), Some(&half), Some(&one)]), 2);
        // One event under the bound: the single event still fits.
        let under = message(MAX_ATOMIC_EVENTS / 2 - 1);
        assert_eq!(run(&[Some(&half), Some(&under), Some(&one), Some(&one)]), 3);
        // A first message over the bound is a run of its own; one after a run is left out.
        assert_eq!(run(&[Some(&big), Some(&one)]), 1);
        assert_eq!(run(&[Some(&one), Some(&big)]), 1);
        // Delivered entries (None) hold no events but take a place in the run.
        let many: Vec<Option<&OrderMessage>> = (0..MAX_ATOMIC_BATCH + 10)
            .map(|i| if i % 2 == 0 { None } else { Some(&one) })
            .collect();
        assert_eq!(run(&many), MAX_ATOMIC_BATCH);
        assert_eq!(run(&[]), 0);
    }
}
