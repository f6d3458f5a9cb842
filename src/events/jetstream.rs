//! The JetStream stream the orders go to, set up per the contract: subjects `<prefix>.>`,
//! file storage, a duplicate window of at least two minutes. An existing stream is used as it
//! is; its settings belong to whoever made it.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::domain::event::{OrderEvent, OrderMessage};
use crate::support::settings::{NatsSettings, Retention};

/// JetStream forgets a `Nats-Msg-Id` after this long; the relay re-publishes well inside it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("jetstream stream {stream}: {reason}")]
pub struct StreamSetupError {
    stream: String,
    reason: String,
}

/// Why an order event did not reach JetStream, or the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("nats is not connected")]
    NotConnected,
    #[error(transparent)]
    Setup(#[from] StreamSetupError),
    #[error("order event not encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{}", publish_failed(.0))]
    Publish(#[from] PublishError),
    #[error("no acknowledgement within {0:?}")]
    NoAcknowledgement(Duration),
    #[error("atomic batch: {0}")]
    Batch(String),
    #[error("reading the stream: {0}")]
    Read(String),
}

/// JetStream's "no stream found for given subject" reads as if the stream were gone; during
/// a stream leader election it only means no copy answers yet.
fn publish_failed(e: &PublishError) -> String {
    if e.kind() == PublishErrorKind::StreamNotFound {
        "no stream took the event: the stream is missing, or has no leader yet (as during a \
         leader election); a missing one is made again"
            .into()
    } else {
        format!("publish failed: {e}")
    }
}

impl StreamError {
    /// No stream took the message: none holds the subject (it was deleted, or never made),
    /// or a replicated stream has no leader yet. Either way the stream may need making.
    pub fn stream_missing(&self) -> bool {
        matches!(self, StreamError::Publish(e) if e.kind() == PublishErrorKind::StreamNotFound)
    }
}

/// The order stream as the settings name it.
#[derive(Debug, Clone)]
pub struct OrderStream {
    pub name: String,
    pub subject_prefix: String,
    /// Copies JetStream keeps of the stream (and of the sale definitions): 1, or 3 on a
    /// three-node cluster, so the record outlives a node.
    pub replicas: usize,
    /// What JetStream keeps of it (FLASHSALE_STREAM_MAX_AGE_SECS, _MAX_BYTES).
    pub retention: Retention,
}

impl OrderStream {
    pub fn new(settings: &NatsSettings) -> Self {
        Self {
            name: settings.stream.clone(),
            subject_prefix: settings.subject_prefix.clone(),
            replicas: settings.stream_replicas,
            retention: settings.stream_retention,
        }
    }
}

/// Sets `config`'s limits to `retention`; true when they changed. JetStream's "no limit" is
/// an age of 0 and bytes of -1.
pub fn apply_retention(config: &mut stream::Config, retention: Retention) -> bool {
    let max_age = retention.max_age.unwrap_or_default();
    let max_bytes = retention
        .max_bytes
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let changed = config.max_age != max_age || config.max_bytes != max_bytes;
    config.max_age = max_age;
    config.max_bytes = max_bytes;
    changed
}

/// Brings an existing stream's limits to `retention` (a setting changed since it was made).
pub async fn keep_retention(
    js: &jetstream::Context,
    existing: &stream::Info,
    retention: Retention,
) -> Result<(), String> {
    let mut config = existing.config.clone();
    if !apply_retention(&mut config, retention) {
        return Ok(());
    }
    js.update_stream(&config).await.map_err(|e| e.to_string())?;
    log::info!(
        "jetstream stream {} now keeps at most {:?} and {} bytes (0 s / -1: no limit)",
        config.name,
        config.max_age,
        config.max_bytes
    );
    Ok(())
}

/// What the stream lets a publisher do, found when the stream is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFeatures {
    /// Atomic batches (ADR-50: nats-server 2.12 or later, and the stream's `allow_atomic`):
    /// the events of a batch are stored together, under one acknowledgement.
    pub atomic_batches: bool,
}

/// Whether a nats-server of `version` (`2.15.1`, `2.12.0-beta.1`) takes atomic batches.
fn takes_atomic_batches(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 12)
}

/// Creates the stream when absent, taking atomic batches where the server can; leaves an
/// existing one alone (warning when its settings would weaken the delivery guarantee).
/// Returns what the stream allows.
pub async fn ensure_stream(
    js: &jetstream::Context,
    order_stream: &OrderStream,
) -> Result<StreamFeatures, StreamSetupError> {
    let name = order_stream.name.as_str();
    let subjects = format!("{}.>", order_stream.subject_prefix);
    let error = |reason: String| StreamSetupError {
        stream: name.to_owned(),
        reason,
    };
    match js.get_stream(name).await {
        Ok(existing) => {
            // Never a reason to stop delivering: the stream keeps its old limits meanwhile.
            if let Err(e) = keep_retention(js, existing.cached_info(), order_stream.retention).await
            {
                log::warn!("stream {name}: FLASHSALE_STREAM_MAX_* not applied: {e}");
            }
            let config = &existing.cached_info().config;
            if config.duplicate_window < DUPLICATE_WINDOW {
                log::warn!(
                    "stream {name} keeps duplicates only {:?}: a re-published order could be stored twice",
                    config.duplicate_window
                );
            }
            if !config.subjects.contains(&subjects) {
                log::warn!(
                    "stream {name} does not list {subjects}: {:?}",
                    config.subjects
                );
            }
            Ok(StreamFeatures {
                atomic_batches: config.allow_atomic_publish,
            })
        }
        Err(e) if is_stream_not_found(e.kind()) => {
            let atomic_batches = takes_atomic_batches(&js.client().server_info().version);
            let mut config = stream::Config {
                name: name.to_owned(),
                subjects: vec![subjects.clone()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                num_replicas: order_stream.replicas,
                allow_atomic_publish: atomic_batches,
                ..Default::default()
            };
            apply_retention(&mut config, order_stream.retention);
            let created = js.create_stream(config).await;
            match created {
                Ok(_) => {
                    log::info!(
                        "jetstream stream {name} created for {subjects} (atomic batches: {atomic_batches})"
                    );
                    Ok(StreamFeatures { atomic_batches })
                }
                // Another replica created it in between, or of concurrent creations on a
                // cluster only one was answered: the stream may exist all the same, its
                // settings read once its leader answers.
                Err(e) => match js.get_stream(name).await {
                    Ok(existing) => Ok(StreamFeatures {
                        atomic_batches: existing.cached_info().config.allow_atomic_publish,
                    }),
                    // It exists ("already in use"), its leader not elected yet: one event
                    // at a time, which any stream takes, until the next check.
                    Err(_) if e.to_string().contains("already in use") => {
                        Ok(StreamFeatures::default())
                    }
                    Err(_) => Err(error(e.to_string())),
                },
            }
        }
        Err(e) => Err(error(e.to_string())),
    }
}

/// Placements of a reading consumer tried, a pause apart, before giving up on a stream copy
/// catching up.
const CATCH_UP_TRIES: u32 = 50;
const CATCH_UP_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the consumer reads the stream leader's copy or one that is current (no lag). A
/// stream that is not replicated has one copy.
async fn reads_a_current_copy(
    stream: &mut jetstream::stream::Stream,
    consumer: &consumer::Info,
) -> Result<bool, StreamError> {
    let Some(host) = consumer.cluster.as_ref().and_then(|c| c.leader.clone()) else {
        return Ok(true);
    };
    let info = stream.info().await.map_err(read_failed)?;
    let Some(cluster) = info.cluster.as_ref() else {
        return Ok(true);
    };
    if cluster.replicas.is_empty() || cluster.leader.as_deref() == Some(host.as_str()) {
        return Ok(true);
    }
    Ok(cluster.replicas.iter().any(|peer| {
        peer.name == host && peer.current && !peer.offline && peer.lag.unwrap_or(0) == 0
    }))
}

fn read_failed(e: impl std::fmt::Display) -> StreamError {
    StreamError::Read(e.to_string())
}

fn is_stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Order events read from the stream (each message's, in order), and where the reading
/// stopped.
#[derive(Debug, Default)]
pub struct EventsRead {
    pub events: Vec<OrderEvent>,
    /// The stream sequence of the last event read (`from - 1` when none was).
    pub last_sequence: u64,
}

/// The sequence the stream's next message will get: 1 while the stream does not exist.
pub async fn next_sequence(js: &jetstream::Context, stream: &str) -> Result<u64, StreamError> {
    match js.get_stream(stream).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(read_failed)?;
            Ok(info.state.last_sequence + 1)
        }
        Err(e) if is_stream_not_found(e.kind()) => Ok(1),
        Err(e) => Err(read_failed(e)),
    }
}

/// Every order event on `subjects` (a filter such as `orders.*.phone-17`) from stream
/// sequence `from` on, oldest first, read with an ordered consumer to the end; nothing when
/// the stream does not exist yet.
pub async fn read_events(
    js: &jetstream::Context,
    stream: &str,
    subjects: &str,
    from: u64,
) -> Result<EventsRead, StreamError> {
    let read = EventsRead {
        events: Vec::new(),
        last_sequence: from.saturating_sub(1),
    };
    let mut stream = match js.get_stream(stream).await {
        Ok(stream) => stream,
        Err(e) if is_stream_not_found(e.kind()) => return Ok(read),
        Err(e) => return Err(read_failed(e)),
    };
    let config = consumer::pull::OrderedConfig {
        filter_subject: subjects.to_owned(),
        deliver_policy: if from <= 1 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        },
        ..Default::default()
    };
    // On a NATS cluster the reading consumer may be placed on any copy of the stream, and a
    // copy that is catching up (its server just restarted) would end the reading early,
    // short of what the leader holds. Such a consumer is dropped and placed again.
    let mut tries = 0;
    let reader = loop {
        let reader = stream
            .create_consumer(config.clone())
            .await
            .map_err(read_failed)?;
        tries += 1;
        if reads_a_current_copy(&mut stream, reader.cached_info()).await? {
            break reader;
        }
        let name = reader.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        if tries >= CATCH_UP_TRIES {
            return Err(StreamError::Read(format!(
                "the stream copy a reading was placed on stayed behind its leader for {:?}",
                CATCH_UP_PAUSE * CATCH_UP_TRIES
            )));
        }
        tokio::time::sleep(CATCH_UP_PAUSE).await;
    };
    // Read, then delete the reading's consumer: left to expire, as ordered consumers are,
    // it would linger for seconds, and a server counts at most 1,000 consumers a stream by
    // default (2.15): reads of many archived orders at once would reach that.
    let name = reader.cached_info().name.clone();
    let outcome = read_to_end(reader, read).await;
    let _ = stream.delete_consumer(&name).await;
    outcome
}

/// What a reading's consumer delivers, to the stream's end as the consumer found it.
async fn read_to_end(
    reader: consumer::Consumer<consumer::pull::OrderedConfig>,
    mut read: EventsRead,
) -> Result<EventsRead, StreamError> {
    let mut left = reader.cached_info().num_pending;
    if left == 0 {
        return Ok(read);
    }
    read.events.reserve(left as usize);
    let mut messages = reader.messages().await.map_err(read_failed)?;
    let from = read.last_sequence + 1;
    while let Some(message) = messages.next().await {
        let message = message.map_err(read_failed)?;
        let info = message.info().map_err(read_failed)?;
        left = info.pending;
        // async-nats recreates an ordered consumer that missed its heartbeats (a loaded
        // server) from where it got to, but from the stream's first message when it had
        // delivered nothing yet (DeliverPolicy::All, not the reading's start): what comes
        // before `from` is not this reading's. (A sale started anew after an archive reads
        // from its `history_from`: the old sale's orders would count in it.)
        if info.stream_sequence >= from {
            read.last_sequence = info.stream_sequence;
            let events = OrderMessage::decode(&message.payload)
                .map_err(|e| read_failed(format!("{}: {e}", message.subject)))?;
            read.events.extend(events);
        }
        if left == 0 {
            break;
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_batches_from_2_12_on() {
        for (version, takes) in [
            ("2.9.10", false),
            ("2.11.9", false),
            ("2.12.0", true),
            ("2.12.0-beta.1", true),
            ("2.15.1", true),
            ("3.0.0", true),
            ("", false),
        ] {
            assert_eq!(takes_atomic_batches(version), takes, "{version}");
        }
    }
}
