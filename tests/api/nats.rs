//! NATS for tests: reading what reached a test's stream, and private nats-servers to stop.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use flashsale::config::Settings;
use tokio::process::{Child, Command};

pub use crate::stream::Delivered;

async fn client_of(settings: &Settings) -> async_nats::Client {
    async_nats::connect(settings.nats_urls.as_slice())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "tests need NATS at {:?} (scripts/services.sh): {e}",
                settings.nats_urls
            )
        })
}

/// Every message in the app's stream, in stream order (empty when the stream does not exist).
pub async fn delivered(settings: &Settings) -> Vec<Delivered> {
    crate::stream::stored_events(client_of(settings).await, &settings.stream).await
}

/// Waits until the stream holds `expected` messages (failing after `timeout`), then a little
/// longer to catch any extra one, and returns them.
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

/// Asserts no message id appears twice and returns the count per id.
pub fn assert_no_duplicates(messages: &[Delivered]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in messages {
        *seen.entry(m.message_id.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated events: {duplicated:?}");
}

/// Asserts that each order's events came in its own order: created before cancelled.
pub fn assert_each_order_in_order(messages: &[Delivered]) {
    let mut created: HashSet<&str> = HashSet::new();
    for m in messages {
        match m.event.event {
            flashsale::event::EventKind::Created => {
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
        .filter(|m| m.event.event == flashsale::event::EventKind::Created)
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

/// Deletes the app's order stream and its bucket of sale definitions.
pub async fn delete_stream(settings: &Settings) {
    if let Ok(client) = async_nats::connect(settings.nats_urls.as_slice()).await {
        let js = jetstream::new(client);
        let _ = js.delete_stream(&settings.stream).await;
        let _ = js
            .delete_key_value(flashsale::definitions::bucket_name(&settings.stream))
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
