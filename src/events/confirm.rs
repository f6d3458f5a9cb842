//! `FLASHSALE_CONFIRM=jetstream`: a purchase is answered 201 only once JetStream holds its
//! order event, so an order answered 201 survives Redis losing its data (the rebuild reads
//! it back from the stream). Payments and cancels wait for their events the same way.
//!
//! The handler publishes the event itself, with the same `Nats-Msg-Id` the relay uses, and
//! waits for the PubAck up to `FLASHSALE_CONFIRM_TIMEOUT_MS`. Without it in time (NATS slow or
//! down) the answer is 202 `"delivery": "pending"`: Redis has decided, and the outbox entry,
//! written by the same script, still delivers the event. The outbox stays the guarantee of
//! delivery in both modes; this is only an earlier, confirmed copy. Once JetStream
//! acknowledged it, the handler removes its entry from the outbox (`XDEL` by id) before it
//! answers, so the relay never reads it, and so every later read of the order says
//! `delivered` as the answer did: a reader never sees a delivery undone. The relay leaves
//! entries younger than [`relay_grace`] to their handlers; a repeat that slips through (a
//! confirmation slower than that) is dropped by JetStream's duplicate window.

use std::time::Duration;

use async_nats::jetstream;

use crate::domain::Sku;
use crate::domain::event::OrderEvent;
use crate::events::jetstream::{OrderStream, StreamError, StreamFeatures, ensure_stream};
use crate::events::publish::send_event;
use crate::store::Inventory;
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
    jetstream: jetstream::Context,
    timeout: Duration,
    /// Where the handler removes the outbox entries JetStream acknowledged.
    inventory: std::sync::Arc<Inventory>,
    stream: OrderStream,
    /// Set once the order stream is known to exist (publishing needs it).
    stream_ready: tokio::sync::OnceCell<StreamFeatures>,
    /// From the handler's publish to the PubAck: the script wrote the event just before.
    delivery_lag: metrics::Histogram,
}

impl Confirmation {
    pub fn new(
        mode: Confirm,
        nats: async_nats::Client,
        stream: OrderStream,
        timeout: Duration,
        inventory: std::sync::Arc<Inventory>,
    ) -> Self {
        let mut jetstream = jetstream::new(nats.clone());
        jetstream.set_timeout(timeout);
        Self {
            mode,
            nats,
            jetstream,
            timeout,
            inventory,
            stream,
            stream_ready: tokio::sync::OnceCell::new(),
            delivery_lag: crate::support::metrics::delivery_lag_histogram(Publisher::Confirm),
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
    pub async fn confirm(&self, sku: &Sku, event: &OrderEvent, outbox_entry: &str) -> Delivery {
        if self.mode == Confirm::Redis {
            return Delivery::Unconfirmed;
        }
        let confirmed = match self.publish(event).await {
            Ok(()) => match self
                .inventory
                .outbox()
                .drop_confirmed(sku, &[outbox_entry])
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    log::debug!(
                        "confirmed entry {outbox_entry} of sale {sku} left in the outbox: {e}"
                    );
                    false
                }
            },
            Err(e) => {
                log::debug!(
                    "event {} not confirmed by jetstream: {e}",
                    event.message_id()
                );
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

    /// Publishes the event and waits for its PubAck, within the timeout.
    async fn publish(&self, event: &OrderEvent) -> Result<(), StreamError> {
        // Waiting would only run into the timeout.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(StreamError::NotConnected);
        }
        // One check at a time: concurrent creations of a replicated stream leave all but
        // one request unanswered (seen on a 3-node cluster: the others waited out the
        // timeout), so the others wait for that one.
        self.stream_ready
            .get_or_try_init(|| ensure_stream(&self.jetstream, &self.stream))
            .await?;
        let started = std::time::Instant::now();
        tokio::time::timeout(self.timeout, async {
            loop {
                let acknowledged = async {
                    Ok::<_, StreamError>(
                        send_event(&self.jetstream, &self.stream, event)
                            .await?
                            .await?,
                    )
                };
                // A stream without a leader (a replicated stream just created, an election
                // after a NATS node left) answers "no responders", or nothing at all. Each
                // try is bounded, and the next goes out under the same message id (JetStream
                // drops a repeat), until the overall timeout.
                match tokio::time::timeout(ATTEMPT_TIMEOUT, acknowledged).await {
                    Ok(Err(e)) if e.stream_missing() => {
                        tokio::time::sleep(NO_LEADER_RETRY).await;
                    }
                    Ok(acknowledged) => return acknowledged,
                    Err(_) => {}
                }
            }
        })
        .await
        .map_err(|_| StreamError::NoAcknowledgement(self.timeout))??;
        self.delivery_lag.record(started.elapsed());
        Ok(())
    }
}
