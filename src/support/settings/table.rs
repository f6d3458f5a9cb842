//! Every setting's variable, default and one line of meaning: the parser takes its defaults
//! from here and `flashsale --help` lists it, so neither can name a setting the other lacks.
//! docs/settings.md says more of each (a test holds it to this table).

/// One setting.
pub struct Setting {
    /// The environment variable, e.g. `FLASHSALE_BIND`; the flag is `--bind`.
    pub var: &'static str,
    /// Its value when the variable is unset; `None`: unset means off or none.
    pub default: Option<&'static str>,
    /// What it sets, with its range.
    pub help: &'static str,
}

const fn setting(var: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        var,
        default: Some(default),
        help,
    }
}

const fn unset(var: &'static str, help: &'static str) -> Setting {
    Setting {
        var,
        default: None,
        help,
    }
}

pub const SETTINGS: &[Setting] = &[
    // The HTTP edge.
    setting(
        "FLASHSALE_BIND",
        "127.0.0.1:8080",
        "HTTP listen address (port 0: any free one)",
    ),
    setting(
        "FLASHSALE_WORKERS",
        "0",
        "HTTP worker threads, 0-1024 (0: one per core but one)",
    ),
    unset(
        "FLASHSALE_ADMIN_TOKEN",
        "bearer token of the admin API (unset: it answers 403)",
    ),
    unset(
        "FLASHSALE_API_TOKENS",
        "storefront bearer tokens, comma-separated; when set, purchases, payments and order reads need one",
    ),
    unset(
        "FLASHSALE_TICKET_KEY",
        "HMAC-SHA256 key of buyer tickets, shared with the storefront",
    ),
    unset(
        "FLASHSALE_QUEUE_KEY",
        "HMAC-SHA256 key of the waiting rooms' queue tokens, the same on every replica (unset: no sale may have a queue)",
    ),
    setting(
        "FLASHSALE_REQUIRE_TICKET",
        "false",
        "true: a purchase without a valid ticket is 401 (needs FLASHSALE_TICKET_KEY)",
    ),
    unset(
        "FLASHSALE_BUYER_RATE",
        "purchases a second one buyer may make, per replica, 1-1000000 (unset: no limit)",
    ),
    unset(
        "FLASHSALE_BUYER_BURST",
        "purchases one buyer may make at once, 1-1000000 (unset: the rate)",
    ),
    unset(
        "FLASHSALE_CLIENT_RATE",
        "purchases a second one client address may make, per replica, 1-1000000",
    ),
    unset(
        "FLASHSALE_CLIENT_BURST",
        "purchases one client address may make at once (unset: the rate)",
    ),
    unset(
        "FLASHSALE_TRUSTED_PROXIES",
        "IP addresses of proxies whose X-Forwarded-For names the client, comma-separated",
    ),
    unset(
        "FLASHSALE_CORS_ORIGINS",
        "storefront origins whose pages may call the buyer's routes, comma-separated and exact",
    ),
    setting(
        "FLASHSALE_LIVE_VIEWERS",
        "10000",
        "live-stream viewers one replica serves at once, 0-1000000",
    ),
    setting(
        "FLASHSALE_LIVE_MAX_SECS",
        "600",
        "how long one live stream lasts before the browser reconnects, 1-86400",
    ),
    setting(
        "FLASHSALE_LIVE_REFRESH_MS",
        "5000",
        "how often a watched sale is read without a change notice, 100-600000",
    ),
    // Redis.
    setting(
        "FLASHSALE_REDIS_URL",
        "redis://127.0.0.1:6379",
        "Redis; several comma-separated URLs: a Redis Cluster's seed nodes",
    ),
    setting(
        "FLASHSALE_REDIS_CLUSTER",
        "off",
        "on: the one URL is a seed node of a Redis Cluster",
    ),
    setting(
        "FLASHSALE_NAMESPACE",
        "flashsale",
        "prefix of every Redis key the service owns ([A-Za-z0-9_.:-], at most 64)",
    ),
    setting(
        "FLASHSALE_REDIS_TIMEOUT_MS",
        "1000",
        "how long a request waits for Redis before 503, 1-60000",
    ),
    setting(
        "FLASHSALE_REDIS_WAIT_REPLICAS",
        "0",
        "replicas a script call's writes must reach (Redis WAIT) before its answer, 0-5",
    ),
    setting(
        "FLASHSALE_REDIS_WAIT_TIMEOUT_MS",
        "100",
        "how long that WAIT may take, 1-10000",
    ),
    setting(
        "FLASHSALE_REDIS_WAIT_CONNECTIONS",
        "16",
        "connections of their own for the calls followed by WAIT, 0-256",
    ),
    setting(
        "FLASHSALE_IDEMPOTENCY_TTL_SECS",
        "86400",
        "how long an Idempotency-Key is remembered, 1-2592000",
    ),
    setting(
        "FLASHSALE_SOLD_OUT_RECHECK_MS",
        "1000",
        "how long a replica answers sold_out from memory before asking Redis again, 0-3600000",
    ),
    // NATS and the record.
    setting(
        "FLASHSALE_NATS_URL",
        "nats://127.0.0.1:4222",
        "NATS server(s), comma-separated",
    ),
    setting(
        "FLASHSALE_STREAM",
        "ORDERS",
        "JetStream stream of the order events",
    ),
    setting(
        "FLASHSALE_SUBJECT_PREFIX",
        "orders",
        "first token of every order subject",
    ),
    setting(
        "FLASHSALE_STREAM_REPLICAS",
        "1",
        "copies of the order stream and the definitions bucket when created, 1-5",
    ),
    setting(
        "FLASHSALE_CONFIRM",
        "jetstream",
        "jetstream: 201 once JetStream holds the order's event; redis: once Redis decided",
    ),
    setting(
        "FLASHSALE_CONFIRM_TIMEOUT_MS",
        "1000",
        "how long an answer waits for JetStream in jetstream mode (then 202), 1-60000",
    ),
    setting(
        "FLASHSALE_STREAM_MAX_AGE_SECS",
        "0",
        "the most the order stream keeps, by age in seconds (0: no limit)",
    ),
    setting(
        "FLASHSALE_STREAM_MAX_BYTES",
        "0",
        "the most the order stream keeps, in bytes, at least 1 MiB (0: no limit)",
    ),
    setting(
        "FLASHSALE_DEFINITIONS_MAX_AGE_SECS",
        "0",
        "the same by age for the sale definitions bucket",
    ),
    setting(
        "FLASHSALE_DEFINITIONS_MAX_BYTES",
        "0",
        "the same in bytes for the sale definitions bucket",
    ),
    // The relay.
    setting(
        "FLASHSALE_RELAY_CLAIM_IDLE_MS",
        "5000",
        "outbox lease: how long before another replica takes a silent one's sales over, 100-60000",
    ),
    setting(
        "FLASHSALE_RELAY_HOLD",
        "off",
        "tests and drills only: on = the relay publishes nothing",
    ),
    setting(
        "FLASHSALE_DRAIN_TIMEOUT_SECS",
        "10",
        "on SIGTERM, how long the relay keeps delivering after the last request, 0-3600",
    ),
    // Recovery and the archive.
    setting(
        "FLASHSALE_REBUILD_TIMEOUT_MS",
        "5000",
        "how long requests wait for a lost sale's rebuild before 503, 100-600000",
    ),
    setting("FLASHSALE_DEFAULT_SKU", "limit", "the sale behind /kill"),
    setting(
        "FLASHSALE_DEFAULT_STOCK",
        "1000",
        "its stock when it is defined on first use",
    ),
    setting(
        "FLASHSALE_ARCHIVE_AFTER_SECS",
        "86400",
        "how long an ended, settled sale stays in Redis after its last change, 1-31622400",
    ),
    // The order consumer.
    setting(
        "FLASHSALE_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/flashsale",
        "PostgreSQL of the order consumer",
    ),
    setting(
        "FLASHSALE_CONSUMER",
        "orders-db",
        "durable JetStream consumer of the order consumer",
    ),
    setting(
        "FLASHSALE_CONSUMER_ACK_WAIT_SECS",
        "30",
        "how long JetStream waits for the consumer's acknowledgement, 1-3600",
    ),
    // Telemetry.
    setting(
        "FLASHSALE_LOG_CONFIG",
        "log4rs.yaml",
        "log4rs configuration (the default missing: logs to the console)",
    ),
    setting(
        "FLASHSALE_METRICS",
        "on",
        "off: no /metrics, nothing recorded",
    ),
];

/// The setting of `var`. Every name the parser asks for is in the table (a test holds it
/// to that), so a name missing here is a mistake in this file, not in a configuration.
pub fn setting_of(var: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.var == var)
}

/// `FLASHSALE_REDIS_URL` -> `redis-url`.
pub fn flag_of(var: &str) -> String {
    var.trim_start_matches("FLASHSALE_")
        .to_ascii_lowercase()
        .replace('_', "-")
}
