//! `FLASHSALE_CONFIRM=jetstream`: a purchase is answered 201 only once JetStream holds its
//! order event, so an order answered 201 survives Redis losing its data (the rebuild reads
//! it back from the stream). Payments and cancels wait for their events the same way.
//!
//! The handler publishes the event itself, with the same `Nats-Msg-Id` the relay uses, and
//! waits for the PubAck up to `FLASHSALE_CONFIRM_TIMEOUT_MS`. Without it in time (NATS slow or
//! down) the answer is 202 `"delivery": "pending"`: Redis has decided, and the outbox entry,
//! written by the same script, still delivers the event. The outbox stays the guarantee of
//! delivery in both modes; this is only an earlier, confirmed copy. So that the relay does
//! not publish everything twice, it skips entries this process has confirmed already
//! ([`ConfirmedEvents`]); a repeat that slips through is dropped by JetStream's duplicate
//! window.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};

use crate::config::Confirm;
use crate::event::{EventKind, OrderEvent};
use crate::jetstream::{OrderStream, ensure_stream};
use crate::monitoring::Publisher;

/// Message ids remembered for the relay at most; past it the set starts afresh (the relay
/// then re-publishes a few events, which JetStream drops as duplicates).
const REMEMBERED: usize = 100_000;

/// Pause before publishing again when no stream leader answered.
const NO_LEADER_RETRY: Duration = Duration::from_millis(20);

/// How long one try of a publish waits for its PubAck (well above a loaded cluster's
/// acknowledgement, well below an election's silence).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Message ids of events this process saw JetStream acknowledge.
#[derive(Debug, Default)]
pub struct ConfirmedEvents(Mutex<HashSet<String>>);

impl ConfirmedEvents {
    fn insert(&self, message_id: String) {
        if let Ok(mut ids) = self.0.lock() {
            if ids.len() >= REMEMBERED {
                ids.clear();
            }
            ids.insert(message_id);
        }
    }

    /// True (once) when JetStream already acknowledged this event to this process.
    pub fn take(&self, event: &OrderEvent) -> bool {
        let Ok(mut ids) = self.0.lock() else {
            return false;
        };
        match event.event {
            // The message id of a created event is the order id: no allocation per entry.
            EventKind::Created => ids.remove(event.order_id.as_str()),
            _ => ids.remove(&event.message_id()),
        }
    }
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

pub struct Confirmation {
    mode: Confirm,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    timeout: Duration,
    confirmed: std::sync::Arc<ConfirmedEvents>,
    stream: OrderStream,
    /// Set once the order stream is known to exist (publishing needs it).
    stream_ready: tokio::sync::OnceCell<()>,
    /// From the handler's publish to the PubAck: the script wrote the event just before.
    delivery_lag: metrics::Histogram,
}

impl Confirmation {
    pub fn new(
        mode: Confirm,
        nats: async_nats::Client,
        stream: OrderStream,
        timeout: Duration,
        confirmed: std::sync::Arc<ConfirmedEvents>,
    ) -> Self {
        let mut jetstream = jetstream::new(nats.clone());
        jetstream.set_timeout(timeout);
        Self {
            mode,
            nats,
            jetstream,
            timeout,
            confirmed,
            stream,
            stream_ready: tokio::sync::OnceCell::new(),
            delivery_lag: crate::monitoring::delivery_lag_histogram(Publisher::Confirm),
        }
    }

    /// Publishes an event a script just wrote to the outbox (a new order, a payment) and
    /// waits for JetStream, in `jetstream` mode.
    pub async fn confirm(&self, event: &OrderEvent) -> Delivery {
        if self.mode == Confirm::Redis {
            return Delivery::Unconfirmed;
        }
        let confirmed = match self.publish(event).await {
            Ok(()) => true,
            Err(e) => {
                log::debug!(
                    "event {} not confirmed by jetstream: {e}",
                    event.message_id()
                );
                false
            }
        };
        crate::monitoring::record_confirmation(confirmed);
        if confirmed {
            Delivery::Confirmed
        } else {
            Delivery::Pending
        }
    }

    /// Publishes the event and waits for its PubAck, within the timeout.
    async fn publish(&self, event: &OrderEvent) -> Result<(), String> {
        // Waiting would only run into the timeout.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("nats is not connected".into());
        }
        // One check at a time: concurrent creations of a replicated stream leave all but
        // one request unanswered (seen on a 3-node cluster: the others waited out the
        // timeout), so the others wait for that one.
        self.stream_ready
            .get_or_try_init(|| ensure_stream(&self.jetstream, &self.stream))
            .await
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let message_id = event.message_id();
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&message_id);
        let subject = event.subject(&self.stream.subject_prefix);
        tokio::time::timeout(self.timeout, async {
            loop {
                let acknowledged = async {
                    self.jetstream
                        .send_publish(subject.clone(), message.clone())
                        .await?
                        .await
                };
                // A stream without a leader (a replicated stream just created, an election
                // after a NATS node left) answers "no responders", or nothing at all. Each
                // try is bounded, and the next goes out under the same message id (JetStream
                // drops a repeat), until the overall timeout.
                match tokio::time::timeout(ATTEMPT_TIMEOUT, acknowledged).await {
                    Ok(Err(e)) if e.kind() == PublishErrorKind::StreamNotFound => {
                        tokio::time::sleep(NO_LEADER_RETRY).await;
                    }
                    Ok(acknowledged) => return acknowledged,
                    Err(_) => {}
                }
            }
        })
        .await
        .map_err(|_| format!("no acknowledgement within {:?}", self.timeout))?
        .map_err(|e| e.to_string())?;
        self.delivery_lag.record(started.elapsed());
        self.confirmed.insert(message_id);
        Ok(())
    }
}
