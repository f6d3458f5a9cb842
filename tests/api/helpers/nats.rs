//! NATS for tests: reading what reached a test's stream, and private nats-servers to stop.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use flashsale::support::settings::Settings;
use futures::StreamExt;
use tokio::process::{Child, Command};

pub use crate::stream::Delivered;

async fn client_of(settings: &Settings) -> async_nats::Client {
    async_nats::connect(settings.nats.urls.as_slice())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "tests need NATS at {:?} (scripts/services.sh): {e}",
                settings.nats.urls
            )
        })
}

/// Every message in the app's stream, in stream order (empty when the stream does not exist).
pub async fn delivered(settings: &Settings) -> Vec<Delivered> {
    crate::stream::stored_events(client_of(settings).await, &settings.nats.stream).await
}

/// Waits until the stream holds `expected` messages (failing after `timeout`), and returns them
/// as they stand half a second later: a quiet window in which an extra event sent with the last
/// ones (a repeat under another id, a stray expiry) would be stored too, for the caller's exact
/// count to see. Callers that need every publisher done first wait for the relay to go idle.
pub async fn wait_for_delivered(
    settings: &Settings,
    expected: usize,
    timeout: Duration,
) -> Vec<Delivered> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let messages = delivered(settings).await;
        if messages.len() >= expected {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return delivered(settings).await;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} of {expected} events reached the stream within {timeout:?}",
                messages.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that no order event is stored twice: one message per order and kind. (Keyed on the
/// event, not on `Nats-Msg-Id`: JetStream drops a repeated id itself, so only a repeat sent
/// under another id can reach the stream, and that is the bug to see.)
pub fn assert_no_duplicates(messages: &[Delivered]) {
    let mut seen: HashMap<(&str, flashsale::domain::event::EventKind), usize> = HashMap::new();
    for m in messages {
        *seen
            .entry((m.event.order_id.as_str(), m.event.event))
            .or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "events stored twice: {duplicated:?}");
}

/// One publish on the app's subjects, as a core NATS subscriber saw it.
#[derive(Debug, Clone)]
pub struct Published {
    pub subject: String,
    pub message_id: String,
    /// The orders whose events it carried, in order.
    pub order_ids: Vec<String>,
    /// The atomic batch it was sent in (`Nats-Batch-Id`), if any.
    pub batch: Option<String>,
}

/// Every publish on a test's order subjects, repeats included: JetStream drops a repeat within
/// its duplicate window before storing it, so only a subscriber on the subjects can count
/// what the publishers actually sent.
pub struct PublishTap {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
}

impl PublishTap {
    /// Subscribes to `<prefix>.>` and returns once every server of `settings` routes those
    /// subjects to it (on a cluster a publisher may sit on another node).
    pub async fn open(settings: &Settings) -> Self {
        let client = client_of(settings).await;
        let subscriber = client
            .subscribe(format!("{}.>", settings.nats.subject_prefix))
            .await
            .expect("subscribe");
        // A probe subject on the same connection: a node that routes the probe to us has the
        // earlier subscription too (a route passes subscriptions on in order).
        let probe_subject = crate::helpers::unique("fstest-probe");
        let mut probes = client
            .subscribe(probe_subject.clone())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        for server in &settings.nats.urls {
            let node = async_nats::connect(server.clone())
                .await
                .unwrap_or_else(|e| panic!("NATS at {server:?}: {e}"));
            let mut routed = false;
            for _ in 0..100 {
                node.publish(probe_subject.clone(), "probe".into())
                    .await
                    .expect("publish probe");
                node.flush().await.expect("flush");
                if tokio::time::timeout(Duration::from_millis(50), probes.next())
                    .await
                    .is_ok()
                {
                    routed = true;
                    break;
                }
            }
            assert!(routed, "{server:?} never routed the tap's subjects");
        }
        Self { client, subscriber }
    }

    /// What was published so far. Call it once every publisher is done (the relay idle, every
    /// purchase answered): it waits for the last of them to arrive, until nothing more comes
    /// for half a second.
    pub async fn published(&mut self) -> Vec<Published> {
        self.client.flush().await.expect("flush");
        let mut published = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), self.subscriber.next()).await
        {
            let message_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .expect("every publish carries Nats-Msg-Id");
            crate::event_contract::assert_follows_contract(
                &message.subject,
                &message_id,
                &message.payload,
            );
            let events = flashsale::domain::event::OrderMessage::decode(&message.payload)
                .expect("order events");
            published.push(Published {
                subject: message.subject.to_string(),
                message_id,
                batch: message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Batch-Id"))
                    .map(|v| v.as_str().to_owned()),
                order_ids: events.into_iter().map(|e| e.order_id).collect(),
            });
        }
        published
    }
}

/// Publishes per order: how many messages carried an event of it.
pub fn publishes_per_order(published: &[Published]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in published {
        for order_id in &p.order_ids {
            *counts.entry(order_id.clone()).or_default() += 1;
        }
    }
    counts
}

/// Asserts that every stored message's `Nats-Msg-Id` is its entry's: its first event's id,
/// and `+<n>` when it holds n > 1 events (docs/events.md).
pub fn assert_message_ids(messages: &[Delivered]) {
    let mut by_message: std::collections::BTreeMap<u64, Vec<&Delivered>> = Default::default();
    for m in messages {
        by_message.entry(m.sequence).or_default().push(m);
    }
    for events in by_message.values() {
        let first = &events[0].event;
        let expected = match events.len() {
            1 => first.message_id(),
            n => format!("{}+{n}", first.message_id()),
        };
        assert_eq!(
            events[0].message_id, expected,
            "message {}",
            events[0].sequence
        );
    }
}

/// Asserts that each order's events came in its own order: created before cancelled.
pub fn assert_each_order_in_order(messages: &[Delivered]) {
    let mut created: HashSet<&str> = HashSet::new();
    for m in messages {
        match m.event.event {
            flashsale::domain::event::EventKind::Created => {
                created.insert(m.event.order_id.as_str());
            }
            _ => assert!(
                created.contains(m.event.order_id.as_str()),
                "{} {:?} arrived before the order was created",
                m.event.order_id,
                m.event.event
            ),
        }
    }
}

/// Asserts that each sale's created events are in the order the sales accepted them (the
/// sequence number that ends each order id). The relay keeps that order; purchases confirmed
/// with JetStream (FLASHSALE_CONFIRM=jetstream) publish concurrently and need not.
pub fn assert_in_sale_order(messages: &[Delivered]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for m in messages
        .iter()
        .filter(|m| m.event.event == flashsale::domain::event::EventKind::Created)
    {
        let seq: u64 = m
            .event
            .order_id
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("order ids end with a sequence number");
        let previous = last.insert(m.event.sku.as_str(), seq).unwrap_or(0);
        assert!(
            seq > previous,
            "{} arrived after order {previous} of its sale",
            m.event.order_id
        );
    }
}

/// Publishes `payload` under `message_id` and waits until JetStream has stored it. A stream
/// just made at R3 has no leader for a while, and a starved cluster acknowledges late: both
/// are tried again under the same id (JetStream keeps one), for up to 30 s.
pub async fn publish_stored(
    js: &jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Vec<u8>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(message_id);
        let failure = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{message_id} was not stored within 30 s: {failure}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes the app's order stream and its bucket of sale definitions.
pub async fn delete_stream(settings: &Settings) {
    if let Ok(client) = async_nats::connect(settings.nats.urls.as_slice()).await {
        let js = jetstream::new(client);
        let _ = js.delete_stream(&settings.nats.stream).await;
        let _ = js
            .delete_key_value(flashsale::recovery::definitions::bucket_name(
                &settings.nats.stream,
            ))
            .await;
    }
}

pub use crate::servers::durable_nats_server;

/// A nats-server of the test's own, with JetStream, on a free port and its own store
/// directory; it can be stopped and started again on the same port and store.
pub struct PrivateNats {
    pub port: u16,
    store: std::path::PathBuf,
    child: Option<Child>,
    /// The durable kind: a current nats-server with the repository's nats-server.conf.
    durable: bool,
    /// Its HTTP monitoring port (`/varz`), durable kind only.
    monitor: u16,
}

impl PrivateNats {
    pub async fn start() -> Self {
        Self::start_kind(false).await
    }

    /// nats-server 2.15 with `nats-server.conf` (`sync_interval: always`): JetStream's
    /// durability boundary as docker-compose ships it.
    pub async fn start_durable() -> Self {
        Self::start_kind(true).await
    }

    async fn start_kind(durable: bool) -> Self {
        let port = crate::helpers::free_port();
        let store = std::env::temp_dir().join(crate::helpers::unique("fstest-nats"));
        let mut nats = Self {
            port,
            store,
            child: None,
            durable,
            monitor: crate::helpers::free_port(),
        };
        nats.restart().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let mut command = if self.durable {
            let server = durable_nats_server();
            assert!(
                server.exists(),
                "{} is missing: scripts/services.sh installs it",
                server.display()
            );
            let mut command = Command::new(server);
            command
                .arg("-c")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/nats-server.conf"))
                .args(["-m", &self.monitor_port().to_string()]);
            command
        } else {
            Command::new("nats-server")
        };
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is installed (scripts/services.sh installs it)");
        self.child = Some(child);
        crate::helpers::wait_for_port(self.port).await;
    }

    /// The HTTP monitoring port of a durable server (`/varz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as when
    /// a server stalls on its disk. [`PrivateNats::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Signals this test's own server process, by the pid of the child it started.
    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the server is running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("nats-server stopped");
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
