//! Settings, read from the environment and validated once at start-up.
//!
//! Every value is typed here, so nothing later can fail on configuration: a bad value stops
//! the process before it binds, with one line naming the variable (exit code 2, see main).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::Sku;

/// Every setting, by the part of the service it configures; each part is handed only its own.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    pub redis: RedisSettings,
    pub nats: NatsSettings,
    pub relay: RelaySettings,
    pub recovery: RecoverySettings,
    pub consumer: ConsumerSettings,
    pub telemetry: TelemetrySettings,
}

/// The HTTP edge: where it listens, who may call it, how fast.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    pub admin_token: Option<SecretString>,
    /// Storefront bearer tokens (FLASHSALE_API_TOKENS); when any, purchases, payments and
    /// order reads need one (or the admin token).
    pub api_tokens: Vec<SecretString>,
    /// HMAC key of buyer tickets (FLASHSALE_TICKET_KEY).
    pub ticket_key: Option<SecretString>,
    /// HMAC key of the waiting rooms' queue tokens (FLASHSALE_QUEUE_KEY); the same on every
    /// replica. Without it no sale may have a queue.
    pub queue_key: Option<SecretString>,
    /// Purchases without a valid ticket are refused (FLASHSALE_REQUIRE_TICKET).
    pub require_ticket: bool,
    /// Purchases per second and burst allowed to one buyer (per replica); `None` = no limit.
    pub buyer_rate: Option<RateLimit>,
    /// Purchases per second and burst allowed to one client address (per replica).
    pub client_rate: Option<RateLimit>,
    /// Proxies whose `X-Forwarded-For` names the client address (else the socket's peer).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Storefront origins whose pages may call the buyer's routes (FLASHSALE_CORS_ORIGINS).
    pub cors_origins: Vec<String>,
    /// Live-stream viewers one replica serves at most (FLASHSALE_LIVE_VIEWERS).
    pub live_viewers: usize,
    /// How long one live stream lasts before the browser is sent to reconnect
    /// (FLASHSALE_LIVE_MAX_SECS): viewers then spread over replicas added since.
    pub live_max: Duration,
    /// How often a sale's live feed reads the sale without a notice (FLASHSALE_LIVE_REFRESH_MS):
    /// the most a lost notice leaves viewers behind.
    pub live_refresh: Duration,
}

/// Redis: where it is, and how long and how carefully to wait for it.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One `redis://` URL, or several comma-separated seed nodes of a Redis Cluster.
    pub url: String,
    /// Talk to a Redis Cluster: several URLs in `redis_url`, or FLASHSALE_REDIS_CLUSTER=on.
    pub cluster: bool,
    pub namespace: String,
    /// How long one Redis command may take before the request answers 503.
    pub timeout: Duration,
    /// Replicas that must hold a script call's writes (Redis `WAIT`, once per batch) before
    /// its new orders are answered 201 in `redis` confirm mode; 0 = do not wait.
    pub wait_replicas: u32,
    /// How long that `WAIT` may take; past it a new order is answered 202 pending.
    pub wait_timeout: Duration,
    /// Connections of their own for the script calls followed by that `WAIT` (it blocks the
    /// connection it is sent on); 0 = send them on the shared connection.
    pub wait_connections: u32,
    /// How long a replayable Idempotency-Key is remembered.
    pub idempotency_ttl: Duration,
    /// How long a replica trusts its own "sold out" mark before asking Redis again.
    pub sold_out_recheck: Duration,
}

/// NATS and the order stream, and when a change counts as delivered.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// NATS servers, parsed from the comma-separated FLASHSALE_NATS_URL.
    pub urls: Vec<async_nats::ServerAddr>,
    pub stream: String,
    pub subject_prefix: String,
    /// Copies JetStream keeps of the order stream and the sale definitions (1–5; 3 on a
    /// three-node cluster). Applies when flashsale creates them.
    pub stream_replicas: usize,
    /// When a purchase is answered 201 (see [`Confirm`]).
    pub confirm: Confirm,
    /// In `Confirm::JetStream`, how long a purchase waits for JetStream's acknowledgement
    /// before answering 202 with `"delivery": "pending"`.
    pub confirm_timeout: Duration,
    /// Limits of the order stream (FLASHSALE_STREAM_MAX_AGE_SECS, _MAX_BYTES).
    pub stream_retention: Retention,
    /// Limits of the sale definitions bucket (FLASHSALE_DEFINITIONS_MAX_AGE_SECS, _MAX_BYTES).
    pub definitions_retention: Retention,
}

/// How much of a JetStream record is kept; `None` = no limit (the default). What JetStream
/// drops past a limit can no longer rebuild a sale or be read (docs/operating.md, "Retention of the record").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// The relay that drains the outboxes.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// How long an outbox lease lasts unrenewed: after it, another replica takes over the
    /// sale's outbox, entries the dead holder had read included. Must stay well inside
    /// JetStream's duplicate window (2 minutes).
    pub claim_idle: Duration,
    /// For tests and drills only: the relay publishes nothing, so events no handler confirms
    /// (expiries, 202s, everything in `redis` mode) stay in the outbox. It lets a test force
    /// the window in which Redis loses events JetStream does not hold yet.
    pub hold: bool,
    /// On shutdown, how long the relay may keep delivering what is left.
    pub drain_timeout: Duration,
}

/// Rebuilding what Redis lost, and the default sale it defines on first use.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    /// How long requests for a sale Redis lost wait for its rebuild before answering 503.
    pub rebuild_timeout: Duration,
    pub default_sku: Sku,
    pub default_stock: u64,
    /// How long a sale that ended (window closed, ended early, or sold out) and settled (no
    /// payment pending, outbox empty) stays in Redis after its last change before it is
    /// archived: its keys leave Redis, its orders are read from JetStream.
    pub archive_after: Duration,
}

/// The order consumer (`flashsale consume-orders`) and the audit's PostgreSQL.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// PostgreSQL of the order consumer.
    /// It may hold a password: a secret, as the tokens are (`Debug` shows none of them).
    pub database_url: SecretString,
    /// Durable JetStream consumer name of the order consumer.
    pub name: String,
    /// Whether FLASHSALE_DATABASE_URL was given (`flashsale audit` then checks PostgreSQL).
    pub database_url_explicit: bool,
    /// How long JetStream waits for the consumer's acknowledgement of a message before it
    /// hands the message out again (a consumer that died holding it).
    pub ack_wait: Duration,
}

/// Logs and metrics.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_config: PathBuf,
    /// Whether FLASHSALE_LOG_CONFIG was given: only then is a missing file an error.
    pub log_config_explicit: bool,
    /// Whether `/metrics` is served and metrics are recorded.
    pub metrics: bool,
}

/// What a 201 for a purchase promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Redis decided and recorded the order, its event waits in the outbox.
    Redis,
    /// JetStream holds the order's event: the order survives Redis losing its data.
    JetStream,
}

pub mod table;
mod var;

use var::{Var, rate_limit};

/// A refused setting: which variable, what it held, what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

pub use crate::domain::sale::MAX_STOCK;

impl RedisSettings {
    /// The Redis URLs given: one server, or a cluster's seed nodes.
    pub fn seeds(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).collect()
    }

    /// Whether to use the cluster client: several seeds, or FLASHSALE_REDIS_CLUSTER=on.
    pub fn uses_cluster(&self) -> bool {
        self.cluster || self.seeds().len() > 1
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can validate without touching the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Unset: the table's default ("" where unset means off or none).
        let var = |name: &'static str| Var {
            name,
            value: lookup(name).unwrap_or_else(|| {
                table::setting_of(name)
                    .and_then(|setting| setting.default)
                    .unwrap_or_default()
                    .to_owned()
            }),
        };

        // Set, or none (no default stands in for a token or a key).
        let given = |name: &'static str| lookup(name).map(|value| Var { name, value });
        let log_config = lookup("FLASHSALE_LOG_CONFIG");
        Ok(Settings {
            http: HttpSettings {
                bind: var("FLASHSALE_BIND").socket_addr()?,
                workers: var("FLASHSALE_WORKERS").number(0, 1024)? as usize,
                admin_token: given("FLASHSALE_ADMIN_TOKEN")
                    .map(Var::secret)
                    .transpose()?,
                api_tokens: given("FLASHSALE_API_TOKENS")
                    .map(Var::tokens)
                    .transpose()?
                    .unwrap_or_default(),
                ticket_key: given("FLASHSALE_TICKET_KEY").map(Var::secret).transpose()?,
                queue_key: given("FLASHSALE_QUEUE_KEY").map(Var::secret).transpose()?,
                require_ticket: {
                    let required = var("FLASHSALE_REQUIRE_TICKET").switch()?;
                    if required && lookup("FLASHSALE_TICKET_KEY").is_none() {
                        return Err(ConfigError {
                            variable: "FLASHSALE_REQUIRE_TICKET",
                            value: "true".into(),
                            expected:
                                "FLASHSALE_TICKET_KEY set: tickets cannot be checked without it"
                                    .into(),
                        });
                    }
                    required
                },
                buyer_rate: rate_limit(&lookup, "FLASHSALE_BUYER_RATE", "FLASHSALE_BUYER_BURST")?,
                client_rate: rate_limit(
                    &lookup,
                    "FLASHSALE_CLIENT_RATE",
                    "FLASHSALE_CLIENT_BURST",
                )?,
                trusted_proxies: given("FLASHSALE_TRUSTED_PROXIES")
                    .map(Var::ip_addrs)
                    .transpose()?
                    .unwrap_or_default(),
                cors_origins: var("FLASHSALE_CORS_ORIGINS").origins()?,
                live_viewers: var("FLASHSALE_LIVE_VIEWERS").number(0, 1_000_000)? as usize,
                live_max: Duration::from_secs(var("FLASHSALE_LIVE_MAX_SECS").number(1, 86_400)?),
                live_refresh: Duration::from_millis(
                    var("FLASHSALE_LIVE_REFRESH_MS").number(100, 600_000)?,
                ),
            },
            redis: RedisSettings {
                url: var("FLASHSALE_REDIS_URL").redis_url()?,
                cluster: var("FLASHSALE_REDIS_CLUSTER").switch()?,
                namespace: var("FLASHSALE_NAMESPACE").key_prefix()?,
                timeout: Duration::from_millis(
                    var("FLASHSALE_REDIS_TIMEOUT_MS").number(1, 60_000)?,
                ),
                wait_replicas: var("FLASHSALE_REDIS_WAIT_REPLICAS").number(0, 5)? as u32,
                wait_timeout: Duration::from_millis(
                    var("FLASHSALE_REDIS_WAIT_TIMEOUT_MS").number(1, 10_000)?,
                ),
                wait_connections: var("FLASHSALE_REDIS_WAIT_CONNECTIONS").number(0, 256)? as u32,
                idempotency_ttl: Duration::from_secs(
                    var("FLASHSALE_IDEMPOTENCY_TTL_SECS").number(1, 30 * 86400)?,
                ),
                sold_out_recheck: Duration::from_millis(
                    var("FLASHSALE_SOLD_OUT_RECHECK_MS").number(0, 3_600_000)?,
                ),
            },
            nats: NatsSettings {
                urls: var("FLASHSALE_NATS_URL").nats_urls()?,
                stream: var("FLASHSALE_STREAM").nats_token()?,
                subject_prefix: var("FLASHSALE_SUBJECT_PREFIX").nats_token()?,
                stream_replicas: var("FLASHSALE_STREAM_REPLICAS").number(1, 5)? as usize,
                confirm: var("FLASHSALE_CONFIRM").confirm()?,
                confirm_timeout: Duration::from_millis(
                    var("FLASHSALE_CONFIRM_TIMEOUT_MS").number(1, 60_000)?,
                ),
                stream_retention: Retention {
                    max_age: var("FLASHSALE_STREAM_MAX_AGE_SECS").seconds_or_none()?,
                    max_bytes: var("FLASHSALE_STREAM_MAX_BYTES").bytes_or_none()?,
                },
                definitions_retention: Retention {
                    max_age: var("FLASHSALE_DEFINITIONS_MAX_AGE_SECS").seconds_or_none()?,
                    max_bytes: var("FLASHSALE_DEFINITIONS_MAX_BYTES").bytes_or_none()?,
                },
            },
            relay: RelaySettings {
                claim_idle: Duration::from_millis(
                    var("FLASHSALE_RELAY_CLAIM_IDLE_MS").number(100, 60_000)?,
                ),
                hold: var("FLASHSALE_RELAY_HOLD").switch()?,
                drain_timeout: Duration::from_secs(
                    var("FLASHSALE_DRAIN_TIMEOUT_SECS").number(0, 3600)?,
                ),
            },
            recovery: RecoverySettings {
                rebuild_timeout: Duration::from_millis(
                    var("FLASHSALE_REBUILD_TIMEOUT_MS").number(100, 600_000)?,
                ),
                default_sku: var("FLASHSALE_DEFAULT_SKU").sku()?,
                default_stock: var("FLASHSALE_DEFAULT_STOCK").number(0, MAX_STOCK)?,
                archive_after: Duration::from_secs(
                    var("FLASHSALE_ARCHIVE_AFTER_SECS").number(1, 366 * 86400)?,
                ),
            },
            consumer: ConsumerSettings {
                database_url: var("FLASHSALE_DATABASE_URL").postgres_url()?.into(),
                name: var("FLASHSALE_CONSUMER").nats_token()?,
                database_url_explicit: lookup("FLASHSALE_DATABASE_URL").is_some(),
                ack_wait: Duration::from_secs(
                    var("FLASHSALE_CONSUMER_ACK_WAIT_SECS").number(1, 3600)?,
                ),
            },
            telemetry: TelemetrySettings {
                log_config_explicit: log_config.is_some(),
                log_config: PathBuf::from(var("FLASHSALE_LOG_CONFIG").value),
                metrics: var("FLASHSALE_METRICS").switch()?,
            },
        })
    }
}

/// A rate limit: `per_second` requests a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = with(&[]).expect("defaults are valid");
        assert_eq!(s.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.redis.namespace, "flashsale");
        assert_eq!(s.nats.stream, "ORDERS");
        assert_eq!(s.nats.subject_prefix, "orders");
        assert_eq!(s.recovery.default_sku.as_str(), "limit");
        assert_eq!(s.recovery.default_stock, 1000);
        assert!(s.http.admin_token.is_none());
        assert!(!s.telemetry.log_config_explicit);
        assert_eq!(s.nats.confirm, Confirm::JetStream);
        assert!(!s.consumer.database_url_explicit);
        assert!(s.http.cors_origins.is_empty());
        assert_eq!(s.http.live_viewers, 10_000);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("FLASHSALE_BIND", "nonsense"),
            ("FLASHSALE_REDIS_URL", "http://x"),
            ("FLASHSALE_NATS_URL", "nats://host:notaport"),
            ("FLASHSALE_NAMESPACE", "a{b}"),
            ("FLASHSALE_STREAM", "a.b"),
            ("FLASHSALE_SUBJECT_PREFIX", "a>"),
            ("FLASHSALE_CORS_ORIGINS", "*"),
            ("FLASHSALE_CORS_ORIGINS", "https://shop.example/path"),
            ("FLASHSALE_CORS_ORIGINS", "shop.example"),
            ("FLASHSALE_LIVE_VIEWERS", "-1"),
            ("FLASHSALE_LIVE_MAX_SECS", "0"),
            ("FLASHSALE_STREAM_MAX_BYTES", "1000"),
            ("FLASHSALE_DEFINITIONS_MAX_AGE_SECS", "-5"),
            ("FLASHSALE_ADMIN_TOKEN", ""),
            ("FLASHSALE_DEFAULT_SKU", "no spaces"),
            ("FLASHSALE_DEFAULT_STOCK", "-1"),
            ("FLASHSALE_REDIS_TIMEOUT_MS", "0"),
            ("FLASHSALE_RELAY_CLAIM_IDLE_MS", "120000"),
            ("FLASHSALE_METRICS", "maybe"),
            ("FLASHSALE_DATABASE_URL", "postgres://host:port:port/x"),
            ("FLASHSALE_REBUILD_TIMEOUT_MS", "10"),
            ("FLASHSALE_CONFIRM", "kafka"),
            ("FLASHSALE_CONFIRM_TIMEOUT_MS", "0"),
            ("FLASHSALE_REDIS_URL", "redis://127.0.0.1:30001,http://x"),
            ("FLASHSALE_REDIS_CLUSTER", "maybe"),
            ("FLASHSALE_STREAM_REPLICAS", "0"),
        ];
        for (variable, value) in cases {
            let err = with(&[(variable, value)]).expect_err(variable);
            assert_eq!(err.variable, variable);
            assert!(err.to_string().contains(variable));
        }
    }

    #[test]
    fn the_parser_reads_exactly_the_settings_of_the_table() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Settings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            // A burst is read only beside its rate.
            name.ends_with("_RATE").then(|| "5".to_owned())
        })
        .expect("defaults are valid");
        let listed: std::collections::BTreeSet<String> = table::SETTINGS
            .iter()
            .map(|setting| setting.var.to_owned())
            .collect();
        assert_eq!(asked.into_inner(), listed);
    }

    #[test]
    fn several_redis_urls_are_a_cluster() {
        let one = with(&[]).expect("defaults are valid");
        assert!(!one.redis.uses_cluster());
        let seeds = with(&[(
            "FLASHSALE_REDIS_URL",
            "redis://127.0.0.1:30001, redis://127.0.0.1:30002",
        )])
        .expect("two seeds");
        assert!(seeds.redis.uses_cluster());
        assert_eq!(
            seeds.redis.seeds(),
            ["redis://127.0.0.1:30001", "redis://127.0.0.1:30002"]
        );
        let switched = with(&[
            ("FLASHSALE_REDIS_URL", "redis://127.0.0.1:30001"),
            ("FLASHSALE_REDIS_CLUSTER", "on"),
        ])
        .expect("one seed, cluster on");
        assert!(switched.redis.uses_cluster());
    }
}
