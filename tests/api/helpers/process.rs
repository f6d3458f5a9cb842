//! The service as a process of its own (its own metrics, signals, a restart).

use secrecy::ExposeSecret;
use std::time::Duration;

use flashsale::support::settings::{Confirm, Settings};

use super::{TestApp, free_port, wait_for_port};

/// Environment that makes the binary run with `settings` on `port`: every setting, by the
/// names docs/settings.md documents (`settings::the_environment_carries_every_setting` checks that
/// the binary reads them back as these settings).
pub fn env_of(settings: &Settings, port: u16) -> Vec<(&'static str, String)> {
    let on_off = |on: bool| if on { "on" } else { "off" }.to_owned();
    let millis = |d: Duration| d.as_millis().to_string();
    let joined = |items: Vec<String>| items.join(",");
    let mut env = vec![
        ("FLASHSALE_BIND", format!("127.0.0.1:{port}")),
        ("FLASHSALE_REDIS_URL", settings.redis.url.clone()),
        ("FLASHSALE_REDIS_CLUSTER", on_off(settings.redis.cluster)),
        (
            "FLASHSALE_STREAM_REPLICAS",
            settings.nats.stream_replicas.to_string(),
        ),
        (
            "FLASHSALE_NATS_URL",
            joined(
                settings
                    .nats
                    .urls
                    .iter()
                    .map(|u| format!("nats://{}:{}", u.host(), u.port()))
                    .collect(),
            ),
        ),
        ("FLASHSALE_NAMESPACE", settings.redis.namespace.clone()),
        ("FLASHSALE_STREAM", settings.nats.stream.clone()),
        (
            "FLASHSALE_SUBJECT_PREFIX",
            settings.nats.subject_prefix.clone(),
        ),
        (
            "FLASHSALE_REQUIRE_TICKET",
            on_off(settings.http.require_ticket),
        ),
        (
            "FLASHSALE_DEFAULT_SKU",
            settings.recovery.default_sku.to_string(),
        ),
        (
            "FLASHSALE_DEFAULT_STOCK",
            settings.recovery.default_stock.to_string(),
        ),
        ("FLASHSALE_REDIS_TIMEOUT_MS", millis(settings.redis.timeout)),
        (
            "FLASHSALE_REDIS_WAIT_REPLICAS",
            settings.redis.wait_replicas.to_string(),
        ),
        (
            "FLASHSALE_REDIS_WAIT_TIMEOUT_MS",
            millis(settings.redis.wait_timeout),
        ),
        (
            "FLASHSALE_REDIS_WAIT_CONNECTIONS",
            settings.redis.wait_connections.to_string(),
        ),
        (
            "FLASHSALE_IDEMPOTENCY_TTL_SECS",
            settings.redis.idempotency_ttl.as_secs().to_string(),
        ),
        (
            "FLASHSALE_ARCHIVE_AFTER_SECS",
            settings.recovery.archive_after.as_secs().to_string(),
        ),
        ("FLASHSALE_WORKERS", settings.http.workers.to_string()),
        (
            "FLASHSALE_LIVE_VIEWERS",
            settings.http.live_viewers.to_string(),
        ),
        (
            "FLASHSALE_LIVE_MAX_SECS",
            settings.http.live_max.as_secs().to_string(),
        ),
        (
            "FLASHSALE_LIVE_REFRESH_MS",
            millis(settings.http.live_refresh),
        ),
        (
            "FLASHSALE_RELAY_CLAIM_IDLE_MS",
            millis(settings.relay.claim_idle),
        ),
        (
            "FLASHSALE_SOLD_OUT_RECHECK_MS",
            millis(settings.redis.sold_out_recheck),
        ),
        (
            "FLASHSALE_DRAIN_TIMEOUT_SECS",
            settings.relay.drain_timeout.as_secs().to_string(),
        ),
        ("FLASHSALE_RELAY_HOLD", on_off(settings.relay.hold)),
        ("FLASHSALE_METRICS", on_off(settings.telemetry.metrics)),
        ("FLASHSALE_CONSUMER", settings.consumer.name.clone()),
        (
            "FLASHSALE_CONSUMER_ACK_WAIT_SECS",
            settings.consumer.ack_wait.as_secs().to_string(),
        ),
        (
            "FLASHSALE_REBUILD_TIMEOUT_MS",
            millis(settings.recovery.rebuild_timeout),
        ),
        (
            "FLASHSALE_CONFIRM",
            match settings.nats.confirm {
                Confirm::Redis => "redis",
                Confirm::JetStream => "jetstream",
            }
            .to_owned(),
        ),
        (
            "FLASHSALE_CONFIRM_TIMEOUT_MS",
            millis(settings.nats.confirm_timeout),
        ),
    ];
    let retention = settings.nats.stream_retention;
    let definitions = settings.nats.definitions_retention;
    let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs()).to_string();
    let bytes = |b: Option<u64>| b.unwrap_or(0).to_string();
    env.extend([
        ("FLASHSALE_STREAM_MAX_AGE_SECS", secs(retention.max_age)),
        ("FLASHSALE_STREAM_MAX_BYTES", bytes(retention.max_bytes)),
        (
            "FLASHSALE_DEFINITIONS_MAX_AGE_SECS",
            secs(definitions.max_age),
        ),
        (
            "FLASHSALE_DEFINITIONS_MAX_BYTES",
            bytes(definitions.max_bytes),
        ),
    ]);
    // Settings that are absent unless given.
    let optional = [
        ("FLASHSALE_ADMIN_TOKEN", exposed(&settings.http.admin_token)),
        ("FLASHSALE_TICKET_KEY", exposed(&settings.http.ticket_key)),
        ("FLASHSALE_QUEUE_KEY", exposed(&settings.http.queue_key)),
        (
            "FLASHSALE_API_TOKENS",
            Some(joined(
                settings
                    .http
                    .api_tokens
                    .iter()
                    .map(|token| token.expose_secret().to_owned())
                    .collect(),
            ))
            .filter(|t| !t.is_empty()),
        ),
        (
            "FLASHSALE_TRUSTED_PROXIES",
            Some(joined(
                settings
                    .http
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ))
            .filter(|p| !p.is_empty()),
        ),
        (
            "FLASHSALE_CORS_ORIGINS",
            Some(settings.http.cors_origins.join(",")).filter(|o| !o.is_empty()),
        ),
        (
            "FLASHSALE_DATABASE_URL",
            Some(settings.consumer.database_url.expose_secret().to_owned())
                .filter(|_| settings.consumer.database_url_explicit),
        ),
        (
            "FLASHSALE_LOG_CONFIG",
            Some(settings.telemetry.log_config.display().to_string())
                .filter(|_| settings.telemetry.log_config_explicit),
        ),
    ];
    env.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
    );
    for (limit, rate, burst) in [
        (
            settings.http.buyer_rate,
            "FLASHSALE_BUYER_RATE",
            "FLASHSALE_BUYER_BURST",
        ),
        (
            settings.http.client_rate,
            "FLASHSALE_CLIENT_RATE",
            "FLASHSALE_CLIENT_BURST",
        ),
    ] {
        if let Some(limit) = limit {
            env.push((rate, limit.per_second.to_string()));
            env.push((burst, limit.burst.to_string()));
        }
    }
    env
}

/// Where a process of [`spawn_process`] on `port` writes its log.
fn log_path(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("flashsale-test-{port}.log"))
}

/// What the process behind `app` has logged so far.
pub fn process_log(app: &TestApp) -> String {
    let port = app.address.rsplit(':').next().and_then(|p| p.parse().ok());
    port.map(|port| std::fs::read_to_string(log_path(port)).unwrap_or_default())
        .unwrap_or_default()
}

/// The real binary, in a scratch directory (so it logs to the console only: its output goes
/// to a file [`process_log`] reads).
pub async fn spawn_process(settings: &Settings) -> (tokio::process::Child, TestApp) {
    let port = free_port();
    let log = std::fs::File::create(log_path(port)).expect("a log file in the temp dir");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .envs(env_of(settings, port))
        .current_dir(std::env::temp_dir())
        // The console appender writes to stdout; panics go to stderr.
        .stderr(log.try_clone().expect("the log file twice"))
        .stdout(log)
        .kill_on_drop(true)
        .spawn()
        .expect("flashsale binary starts");
    wait_for_port(port).await;
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        settings: settings.clone(),
        namespace: settings.redis.namespace.clone(),
        default_sku: settings.recovery.default_sku.to_string(),
        client: crate::helpers::http_client(),
        redis: crate::helpers::check_connection(settings),
    };
    (child, app)
}

/// Waits until the service on `port` has accepted (taken off its listener's queue) at least
/// `connections` connections. A stop closes the listener: a connection still queued there is
/// reset, not served, so a test of what a stop finishes must first know what it started.
/// Reads the kernel's table (/proc/net/tcp): local port, state 0A (listening, whose rx_queue is
/// its accept queue) and 01 (established).
pub async fn wait_until_accepted(port: u16, connections: usize) {
    let port_hex = format!(":{port:04X}");
    for _ in 0..500 {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let (mut established, mut queued) = (0, u64::MAX);
        for fields in table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let (Some(local), Some(state), Some(queues)) =
                (fields.get(1), fields.get(3), fields.get(4))
            else {
                continue;
            };
            if !local.ends_with(&port_hex) {
                continue;
            }
            match *state {
                "01" => established += 1,
                "0A" => {
                    let rx = queues.split(':').nth(1).unwrap_or("0");
                    queued = u64::from_str_radix(rx, 16).expect("hex rx_queue");
                }
                _ => {}
            }
        }
        if established >= connections && queued == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the service on port {port} did not accept {connections} connections in 10 s");
}

/// A secret setting's value, for the environment of a test's process.
fn exposed(secret: &Option<secrecy::SecretString>) -> Option<String> {
    secret
        .as_ref()
        .map(|secret| secret.expose_secret().to_owned())
}
