//! `FLASHSALE_CONFIRM=jetstream`: a purchase is answered 201 only once JetStream holds its
//! order event, so an order answered 201 survives Redis losing its data (the rebuild reads
//! it back from the stream). Payments and cancels wait for their events the same way.
//!
//! A script call writes one outbox entry for all the orders it made; the handlers of those
//! orders share it ([`WrittenEntry`]) and publish it as one message, with the `Nats-Msg-Id`
//! the relay uses: the first handler to get there sends it, the others wait for the same
//! PubAck, up to `FLASHSALE_CONFIRM_TIMEOUT_MS`. One message, one acknowledgement and, with
//! `sync_interval: always`, one fsync for the whole batch. Without it in time (NATS slow or
//! down) the answer is 202 `"delivery": "pending"`: Redis has decided, and the outbox entry,
//! written by the same script, still delivers the event. The outbox stays the guarantee of
//! delivery in both modes; this is only an earlier, confirmed copy. Once JetStream
//! acknowledged it, the entry leaves the outbox (one `XDEL`) before the handlers answer, so
//! the relay never reads it, and every later read of the orders says `delivered` as the
//! answer did: a reader never sees a delivery undone. The handlers' delivery ends within the
//! confirm timeout of the script's answer, and the relay leaves entries younger than
//! [`relay_grace`] (that, and a margin) to them: a confirmed entry is published once. The
//! relay's repeat of one not confirmed in time is dropped by JetStream's duplicate window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::domain::Sku;
use crate::domain::order::Delivered;
use crate::events::jetstream::{OrderStream, StreamError, ensure_stream};
use crate::events::publish::send_message;
use crate::store::{Outbox, WrittenEntry};
use crate::support::metrics::Publisher;
use crate::support::settings::{Confirm, NatsSettings};

/// Pause before publishing again when no stream leader answered.
const NO_LEADER_RETRY: Duration = Duration::from_millis(20);

/// How long one try of a publish waits for its PubAck (well above a loaded cluster's
/// acknowledgement, well below an election's silence).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// What the relay's grace adds to the confirm timeout: room for the script's answer on its way
/// back, and for the handler's `XDEL` after its last PubAck.
const GRACE_MARGIN: Duration = Duration::from_millis(250);

/// How long the relay leaves a new outbox entry to the handlers confirming it. Their
/// delivery (publish, PubAck, `XDEL`) ends within the confirm timeout of the script's answer
/// ([`WrittenEntry::answered`]), so an entry they confirmed has left the outbox before the
/// relay may read it: it is published once. One they did not confirm in time (202) is the
/// relay's, and reaches JetStream up to this much later; if the handler's publish did arrive,
/// JetStream drops the relay's repeat.
pub fn relay_grace(confirm_timeout: Duration) -> Duration {
    confirm_timeout + GRACE_MARGIN
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
    pub fn shown(self) -> Option<Delivered> {
        match self {
            Delivery::Unconfirmed => None,
            Delivery::Confirmed => Some(Delivered::Confirmed),
            Delivery::Pending => Some(Delivered::Pending),
        }
    }
}

pub struct Confirmation {
    mode: Confirm,
    timeout: Duration,
    publisher: Arc<EntryPublisher>,
    /// From the script's answer to the PubAck (the script wrote the entry just before).
    delivery_lag: metrics::Histogram,
    confirmations: crate::support::metrics::Confirmations,
}

/// What publishes an entry, shared by the delivery tasks.
struct EntryPublisher {
    nats: async_nats::Client,
    timeout: Duration,
    jetstream: jetstream::Context,
    stream: OrderStream,
    /// Where the entries JetStream acknowledged are removed.
    outbox: Outbox,
    /// Set once the order stream is known to exist (publishing needs it).
    stream_ready: tokio::sync::OnceCell<()>,
}

impl Confirmation {
    /// As `settings` ask (the mode, the timeout, the stream).
    pub fn new(settings: &NatsSettings, nats: async_nats::Client, outbox: Outbox) -> Self {
        let (mode, timeout) = (settings.confirm, settings.confirm_timeout);
        let stream = OrderStream::new(settings);
        let mut jetstream = jetstream::new(nats.clone());
        jetstream.set_timeout(timeout);
        Self {
            mode,
            timeout,
            publisher: Arc::new(EntryPublisher {
                nats,
                timeout,
                jetstream,
                stream,
                outbox,
                stream_ready: tokio::sync::OnceCell::new(),
            }),
            delivery_lag: crate::support::metrics::delivery_lag_histogram(Publisher::Confirm),
            confirmations: crate::support::metrics::Confirmations::register(),
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

    /// Publishes an entry a script just wrote (the orders of a purchase call, a payment, a
    /// cancel) and waits for JetStream, in `jetstream` mode. Every handler of the entry calls
    /// this; one message goes. Confirmed means JetStream holds the message and the outbox no
    /// longer does: an entry Redis did not let go of (unreachable right then) answers
    /// `Pending`, as every later read would say until the relay delivers it again (a
    /// duplicate JetStream drops).
    pub async fn confirm(&self, written: &Arc<WrittenEntry>) -> Delivery {
        if self.mode == Confirm::Redis {
            return Delivery::Unconfirmed;
        }
        let started = Instant::now();
        // The first handler here starts the entry's delivery in a task of its own: a handler
        // that stops waiting (its timeout, its client hanging up) stops nothing, so a slow
        // PubAck is never answered by a second publish of the same entry.
        let mut delivered = written
            .delivery
            .get_or_init(|| async {
                let (tell, told) = tokio::sync::watch::channel(None);
                let (publisher, written) = (self.publisher.clone(), written.clone());
                tokio::spawn(async move {
                    let delivered = publisher.deliver(&written).await;
                    let _ = tell.send(Some(delivered));
                });
                told
            })
            .await
            .clone();
        let answer = tokio::time::timeout(
            self.timeout,
            delivered.wait_for(|delivered| delivered.is_some()),
        )
        .await;
        let confirmed = matches!(answer, Ok(Ok(ref delivered)) if **delivered == Some(true));
        self.confirmations.record(confirmed);
        if confirmed {
            self.delivery_lag.record(started.elapsed());
            Delivery::Confirmed
        } else {
            Delivery::Pending
        }
    }

    /// A replay's event that an earlier call wrote and that still waits in the outbox: its
    /// entry is read back and confirmed as its first answer meant to.
    pub async fn confirm_waiting(&self, sku: &Sku, entry_id: &str) -> Delivery {
        if self.mode == Confirm::Redis {
            return Delivery::Unconfirmed;
        }
        match self.publisher.outbox.entry(sku, entry_id).await {
            Ok(Some(entry)) => {
                let written = WrittenEntry::new(sku.clone(), entry.id, entry.message);
                self.confirm(&written).await
            }
            // Delivered meanwhile (the relay, another handler): JetStream holds it.
            Ok(None) => Delivery::Confirmed,
            Err(e) => {
                log::debug!("outbox entry {entry_id} of sale {sku} not read: {e}");
                Delivery::Pending
            }
        }
    }
}

impl EntryPublisher {
    /// Publishes the entry's message, then removes the entry from the outbox; true once both
    /// are done.
    async fn deliver(&self, written: &WrittenEntry) -> bool {
        let sku = &written.sku;
        // This replica's relay stops short of the entry until it is delivered or given up.
        let outbox = &self.outbox;
        let _delivering = outbox.delivering(sku, &written.entry.id);
        if let Err(e) = self.publish(written).await {
            log::debug!("events of sale {sku} not confirmed by jetstream: {e}");
            return false;
        }
        match self
            .outbox
            .drop_confirmed(sku, &[written.entry.id.as_str()])
            .await
        {
            Ok(()) => true,
            Err(e) => {
                log::debug!("confirmed entry of sale {sku} left in the outbox: {e}");
                false
            }
        }
    }

    /// One message, tried again under the same message id within the timeout while no
    /// stream leader answers (a replicated stream just created, an election).
    async fn publish(&self, written: &WrittenEntry) -> Result<(), StreamError> {
        // Waiting would only run into the timeout.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(StreamError::NotConnected);
        }
        // One check at a time: concurrent creations of a replicated stream leave all but
        // one request unanswered (seen on a 3-node cluster: the others waited out the
        // timeout), so the others wait for that one.
        self.stream_ready
            .get_or_try_init(|| async {
                ensure_stream(&self.jetstream, &self.stream).await.map(drop)
            })
            .await?;
        // Within the confirm timeout of the script's answer (see relay_grace).
        let deadline = written.answered + self.timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT.min(remaining), async {
                send_message(&self.jetstream, &self.stream, &written.entry.message)
                    .await?
                    .await
                    .map_err(StreamError::from)
            })
            .await;
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.stream_missing() && !remaining.is_zero() => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) if Instant::now() < deadline => {}
                Err(_) => return Err(StreamError::NoAcknowledgement(self.timeout)),
            }
        }
    }
}
