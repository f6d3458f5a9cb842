//! A Server-Sent Events client for the live stream: the events as they arrive, parsed.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::TestApp;

/// One `event: sale` of the live stream.
#[derive(Debug, Clone)]
pub struct SaleEvent {
    pub id: String,
    pub data: Value,
}

impl SaleEvent {
    pub fn state(&self) -> &str {
        self.data["state"].as_str().unwrap_or_default()
    }
    pub fn remaining(&self) -> u64 {
        self.data["remaining"].as_u64().unwrap_or(u64::MAX)
    }
}

pub struct LiveStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// The `retry:` the server asked for, once seen.
    pub retry: Option<u64>,
    pub heartbeats: usize,
}

impl LiveStream {
    /// Opens `GET /v1/sales/{sku}/live`; panics unless it answers 200 text/event-stream.
    pub async fn open(app: &TestApp, sku: &str, last_event_id: Option<&str>) -> Self {
        let response = Self::request(app, sku, last_event_id).await;
        assert_eq!(response.status(), 200, "live stream of {sku} opened");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            retry: None,
            heartbeats: 0,
        }
    }

    /// The answer to the request, whatever it is (a refusal, say).
    pub async fn request(
        app: &TestApp,
        sku: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        // A client of its own: a stream holds its connection for as long as it is open.
        let mut request = reqwest::Client::new().get(app.url(&format!("/v1/sales/{sku}/live")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("live stream answered")
    }

    /// The next sale event, or `None` when none comes within `wait` (or the stream ended).
    pub async fn next_within(&mut self, wait: Duration) -> Option<SaleEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("stream readable")));
        }
    }

    /// The next sale event, which must come within 10 s.
    pub async fn next(&mut self) -> SaleEvent {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a live event within 10 s")
    }

    /// Whether the server ended the stream within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Takes one whole sale event off the buffer, counting what comes before it.
    fn parse_one(&mut self) -> Option<SaleEvent> {
        loop {
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if line.starts_with(':') {
                    self.heartbeats += 1;
                } else if let Some(v) = line.strip_prefix("retry: ") {
                    self.retry = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("event data is JSON"));
                }
            }
            if let (Some(id), Some("sale"), Some(data)) = (id, event.as_deref(), data) {
                return Some(SaleEvent { id, data });
            }
        }
    }
}
