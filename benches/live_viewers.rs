//! 10,000 live viewers on one replica while its sale sells (`cargo bench --bench
//! live_viewers`; scripts/live-bench.sh raises the file limit first). Not a criterion bench:
//! what it measures is a process's RSS and CPU and a latency spread, over one run.
//!
//! The service runs as a process of its own (the bench build of the binary), against the
//! Redis and durable NATS of scripts/services.sh. Two phases sell at the same paced rate:
//! without viewers, then with VIEWERS of them connected, so the difference in the service's
//! CPU is the fan-out's, divided by the events it sent. Latency: from the Redis time of the
//! oldest purchase an event is the first to show (the order's `created_at`) to the moment a
//! viewer read the event; it includes the 100 ms coalescing by design.
//!
//!   LIVE_VIEWERS (10000)  LIVE_RATE purchases/s (1000)  LIVE_SECONDS per phase (10)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat; 12 and 13 after the command name and state.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Service {
    child: std::process::Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start_service(viewers: u64) -> Service {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let id = std::process::id();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .env("FLASHSALE_BIND", format!("127.0.0.1:{port}"))
        .env("FLASHSALE_NAMESPACE", format!("fsbench-live-{id}"))
        .env("FLASHSALE_STREAM", format!("FSBENCH_LIVE_{id}"))
        .env("FLASHSALE_SUBJECT_PREFIX", format!("fsbench-live-{id}"))
        .env(
            "FLASHSALE_NATS_URL",
            std::env::var("FLASHSALE_NATS_URL").unwrap_or("nats://127.0.0.1:4225".into()),
        )
        .env("FLASHSALE_ADMIN_TOKEN", ADMIN)
        .env("FLASHSALE_LIVE_VIEWERS", (viewers + 100).to_string())
        // Where no log4rs.yaml is: it logs to the console, which goes nowhere.
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the service starts");
    Service {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// created_at (ms) of the order that brought `sold` to each count.
type SoldAt = Arc<Mutex<HashMap<u64, i64>>>;

/// Buys one unit per request at `rate` a second for `seconds`; returns the orders made.
async fn sell(
    client: &reqwest::Client,
    base: &str,
    sku: &str,
    rate: u64,
    seconds: u64,
    stock: u64,
    sold_at: &SoldAt,
) -> u64 {
    let started = tokio::time::Instant::now();
    let total = rate * seconds;
    let made = futures::stream::iter(0..total)
        .map(|i| {
            let at = started + Duration::from_secs_f64(i as f64 / rate as f64);
            async move {
                tokio::time::sleep_until(at).await;
                let response = client
                    .post(format!("{base}/v1/sales/{sku}/orders"))
                    .json(&json!({"user_id": format!("b{}-{i}", started.elapsed().as_nanos())}))
                    .send()
                    .await
                    .ok()?;
                let order: Value = response.json().await.ok()?;
                let remaining = order["remaining"].as_u64()?;
                let created = millis(order["created_at"].as_str()?);
                sold_at.lock().insert(stock - remaining, created);
                Some(())
            }
        })
        .buffer_unordered(256)
        .filter_map(|made| async move { made })
        .count()
        .await;
    made as u64
}

#[tokio::main]
async fn main() {
    let viewers = env_number("LIVE_VIEWERS", 10_000);
    let rate = env_number("LIVE_RATE", 1_000);
    let seconds = env_number("LIVE_SECONDS", 10);
    let stock = rate * seconds * 3;
    let service = start_service(viewers);
    let pid = service.child.id();
    let client = reqwest::Client::new();
    let base = service.base.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the service never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sku = format!("live-{}", std::process::id());
    let put = client
        .put(format!("{base}/v1/sales/{sku}"))
        .bearer_auth(ADMIN)
        .json(&json!({"stock": stock}))
        .send()
        .await
        .expect("PUT answered");
    assert_eq!(put.status(), 201, "sale created");
    let sold_at: SoldAt = Arc::default();

    // Phase 1: selling, nobody watching.
    let (cpu0, rss_idle) = (cpu_seconds(pid), rss_mib(pid));
    let sold_alone = sell(&client, &base, &sku, rate, seconds, stock, &sold_at).await;
    let cpu_alone = cpu_seconds(pid) - cpu0;

    // Viewers connect, each on a connection of its own, and wait for the state.
    // Per event: the first purchase it shows (its sold count) and when a viewer read it. Paired
    // with the purchases' created_at after the run: a viewer may read an event before the
    // seller has read that purchase's answer.
    let received: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let viewer_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for _ in 0..viewers {
        let (client, base, sku) = (viewer_client.clone(), base.clone(), sku.clone());
        let (received, connected, stop, events) = (
            received.clone(),
            connected.clone(),
            stop.clone(),
            events.clone(),
        );
        tokio::spawn(async move {
            let Ok(response) = client
                .get(format!("{base}/v1/sales/{sku}/live"))
                .send()
                .await
            else {
                return;
            };
            connected.add_permits(1);
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            let mut shown: Option<u64> = None;
            let mut latencies = Vec::new();
            loop {
                let chunk = tokio::select! {
                    _ = stop.cancelled() => break,
                    chunk = body.next() => match chunk { Some(Ok(c)) => c, _ => break },
                };
                let at = now_ms();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let Ok(sale) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let sold = sale["sold"].as_u64().unwrap_or(0);
                    if let Some(before) = shown.filter(|&b| sold > b) {
                        events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        latencies.push((before + 1, at));
                    }
                    shown = Some(sold);
                }
            }
            received.lock().extend(latencies);
        });
    }
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        connected.acquire_many(viewers as u32),
    )
    .await;
    assert!(joined.is_ok(), "{viewers} viewers connected within 60 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_viewers = rss_mib(pid);

    // Phase 2: the same selling, watched.
    let cpu1 = cpu_seconds(pid);
    let sold_watched = sell(&client, &base, &sku, rate, seconds, stock, &sold_at).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_watched = cpu_seconds(pid) - cpu1;
    stop.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies: Vec<i64> = {
        let sold_at = sold_at.lock();
        let received = received.lock();
        received
            .iter()
            .filter_map(|(sold, at)| Some(at - sold_at.get(sold)?))
            .collect()
    };
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(-1)
    };
    let delivered = events.load(std::sync::atomic::Ordering::Relaxed);
    let per_viewer = delivered as f64 / viewers as f64;
    let fanout_cpu = cpu_watched - cpu_alone * sold_watched as f64 / sold_alone.max(1) as f64;
    println!("live_viewers: {viewers} viewers, {rate} purchases/s for {seconds} s per phase");
    println!("  sold: {sold_alone} unwatched, {sold_watched} watched");
    println!(
        "  service RSS: {rss_idle:.1} MiB before viewers, {rss_viewers:.1} MiB with them ({:.1} KiB per viewer)",
        (rss_viewers - rss_idle) * 1024.0 / viewers as f64
    );
    println!("  service CPU: {cpu_alone:.2} s unwatched, {cpu_watched:.2} s watched");
    println!(
        "  events per viewer while selling: {per_viewer:.1} ({:.1}/s); {delivered} viewer-events in all",
        per_viewer / seconds as f64
    );
    println!(
        "  fan-out CPU: {:.1} ms per change (one event to all {viewers} viewers), {:.2} µs per viewer-event",
        fanout_cpu * 1000.0 / per_viewer.max(1.0),
        fanout_cpu * 1e6 / delivered.max(1) as f64
    );
    println!(
        "  CPU per purchase unwatched: {:.1} µs",
        cpu_alone * 1e6 / sold_alone.max(1) as f64
    );
    println!(
        "  change-to-viewer latency (ms): p50 {} p90 {} p99 {} max {} over {} events",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0),
        latencies.len()
    );

    // Leave nothing behind.
    drop(service);
    let nats_url = std::env::var("FLASHSALE_NATS_URL").unwrap_or("nats://127.0.0.1:4225".into());
    if let Ok(nats) = async_nats::connect(nats_url).await {
        let jetstream = async_nats::jetstream::new(nats);
        let stream = format!("FSBENCH_LIVE_{}", std::process::id());
        let _ = jetstream.delete_key_value(format!("{stream}_SALES")).await;
        let _ = jetstream.delete_stream(stream).await;
    }
    let redis = redis::Client::open("redis://127.0.0.1:6379").expect("redis url");
    if let Ok(mut redis) = redis.get_multiplexed_async_connection().await {
        let pattern = format!("fsbench-live-{}:*", std::process::id());
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        for key in keys {
            let _: Result<i64, _> = redis::cmd("UNLINK").arg(&key).query_async(&mut redis).await;
        }
    }
}
