//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its Prometheus
//! exporter.
//!
//! Hot-path metrics are registered once into handles ([`PurchaseMetrics`]), so recording is
//! an atomic add, not a registry lookup per request.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod purchase;
mod queue;

pub use purchase::{Outcome, PurchaseMetrics};
pub use queue::{record_join, record_line};

const PURCHASES: &str = "flashsale_purchases_total";
const FAST_PATH: &str = "flashsale_sold_out_fast_path_total";
const SCRIPT_SECONDS: &str = "flashsale_script_duration_seconds";
const REQUEST_SECONDS: &str = "flashsale_http_request_duration_seconds";
const OUTBOX_PENDING: &str = "flashsale_outbox_pending";
const OUTBOX_OLDEST: &str = "flashsale_outbox_oldest_age_seconds";
const CONFIRMATIONS: &str = "flashsale_confirmations_total";
const RATE_LIMITED: &str = "flashsale_rate_limited_total";
const REPLICATION_WAITS: &str = "flashsale_redis_replication_waits_total";
const REBUILDS: &str = "flashsale_sale_rebuilds_total";
const REBUILD_SECONDS: &str = "flashsale_sale_rebuild_seconds";
const OVERSOLD_FOLDS: &str = "flashsale_sale_oversold_folds_total";
const TRANSITIONS: &str = "flashsale_order_transitions_total";
const EXPIRY_LAG: &str = "flashsale_expiry_lag_seconds";
const PURCHASE_BATCH: &str = "flashsale_purchase_batch_size";
const DELIVERY_LAG: &str = "flashsale_event_delivery_lag_seconds";
const LIVE_VIEWERS: &str = "flashsale_live_viewers";
const RESPONSES: &str = "flashsale_http_responses_total";
const DEPENDENCY_UP: &str = "flashsale_dependency_up";
const DEPENDENCY_LOST: &str = "flashsale_dependency_lost_total";
const LIVE_DROPPED: &str = "flashsale_live_viewers_dropped_total";
const ARCHIVES: &str = "flashsale_sale_archives_total";

/// Seconds: from a fraction of a Redis round trip to a request stuck on a timeout.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Purchases per script call, up to the group commit's bound.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle), and keeps
/// its histograms trimmed. `None` when it cannot be installed.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(PURCHASE_BATCH.into()), &BATCH_BUCKETS)
                }) {
                Ok(builder) => builder,
                Err(e) => {
                    log::warn!("metrics disabled: {e}");
                    return None;
                }
            };
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    log::warn!("metrics disabled: {e}");
                    return None;
                }
            };
            describe();
            zero_counters();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| log::warn!("metrics upkeep thread not started: {e}"))
                .ok();
            Some(handle)
        })
        .clone()
}

/// Exports the counters the alerts and the dashboard watch at 0 from the start. A series
/// that appears at its first increment is invisible to `increase()` and `rate()` (they need
/// two samples), so the first rebuild after a restart would raise no alert.
fn zero_counters() {
    for counter in [
        counter!(REBUILDS),
        counter!(OVERSOLD_FOLDS),
        counter!(FAST_PATH),
        counter!(RATE_LIMITED, "limit" => "buyer"),
        counter!(RATE_LIMITED, "limit" => "client"),
        counter!(CONFIRMATIONS, "result" => "confirmed"),
        counter!(CONFIRMATIONS, "result" => "pending"),
        counter!(TRANSITIONS, "to" => "paid"),
        counter!(TRANSITIONS, "to" => "expired"),
        counter!(TRANSITIONS, "to" => "cancelled"),
        counter!(LIVE_DROPPED, "reason" => "refused"),
        counter!(LIVE_DROPPED, "reason" => "slow"),
        counter!(DEPENDENCY_LOST, "dependency" => "redis"),
        counter!(DEPENDENCY_LOST, "dependency" => "nats"),
        counter!(ARCHIVES, "result" => "archived"),
        counter!(ARCHIVES, "result" => "failed"),
    ] {
        counter.increment(0);
    }
    gauge!(LIVE_VIEWERS).set(0.0);
    queue::zero();
}

fn describe() {
    queue::describe();
    describe_counter!(PURCHASES, "Purchase attempts by outcome.");
    describe_gauge!(
        LIVE_VIEWERS,
        "Live-stream viewers connected to this replica."
    );
    describe_counter!(
        LIVE_DROPPED,
        "Live viewers refused (replica at its limit) or dropped (too slow), by reason."
    );
    describe_counter!(
        FAST_PATH,
        "Purchases answered sold_out from memory, without Redis."
    );
    describe_histogram!(
        SCRIPT_SECONDS,
        metrics::Unit::Seconds,
        "From a purchase's arrival at Redis's door (queued for its sale's next script call) to its answer."
    );
    describe_histogram!(
        DELIVERY_LAG,
        metrics::Unit::Seconds,
        "From an order event's write to the outbox to JetStream's acknowledgement, by who published it (confirm: the request's handler; relay: from the outbox)."
    );
    describe_histogram!(
        PURCHASE_BATCH,
        "Purchases decided per purchase script call (group commit)."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency."
    );
    describe_counter!(
        RESPONSES,
        "HTTP answers by status class: 2xx, 3xx, 4xx, 5xx (1xx counted with 2xx)."
    );
    describe_counter!(
        DEPENDENCY_LOST,
        "Times this replica lost redis (its calls failing) or nats (the relay failing to deliver)."
    );
    describe_gauge!(
        DEPENDENCY_UP,
        "1 when this replica reaches the dependency (redis, nats) at the scrape, else 0."
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Order events waiting in the outboxes for JetStream."
    );
    describe_gauge!(
        OUTBOX_OLDEST,
        metrics::Unit::Seconds,
        "Age of the oldest waiting order event."
    );
    describe_counter!(
        CONFIRMATIONS,
        "Events (new orders, payments, cancels) by whether JetStream confirmed them before the answer (FLASHSALE_CONFIRM=jetstream)."
    );
    describe_counter!(
        RATE_LIMITED,
        "Purchases answered 429 rate_limited, by the limit that refused them (buyer, client)."
    );
    describe_counter!(
        REPLICATION_WAITS,
        "Script calls that waited for Redis replicas (FLASHSALE_REDIS_WAIT_REPLICAS), by whether enough acknowledged in time."
    );
    describe_counter!(
        REBUILDS,
        "Sales rebuilt in Redis from JetStream after Redis had lost them."
    );
    describe_histogram!(
        REBUILD_SECONDS,
        metrics::Unit::Seconds,
        "Time to rebuild a lost sale from JetStream."
    );
    describe_counter!(
        OVERSOLD_FOLDS,
        "Rebuilds whose folded history sold more than the sale's stock (purchases answer 503 sale_inconsistent until it is mended)."
    );
    describe_counter!(
        TRANSITIONS,
        "Orders that left created / pending_payment, by where they went (paid, expired, cancelled)."
    );
    describe_counter!(
        ARCHIVES,
        "Ended sales this replica archived (their keys left Redis), and sales an archiver pass could not archive (tried again next pass), by result."
    );
    describe_histogram!(
        EXPIRY_LAG,
        metrics::Unit::Seconds,
        "From an order's pay_by to its expiry (Redis's clock)."
    );
}

/// Live-stream viewers connected to this replica now.
pub fn record_live_viewers(viewers: usize) {
    gauge!(LIVE_VIEWERS).set(viewers as f64);
}

/// A live viewer turned away (`refused`: the replica's limit) or dropped (`slow`).
pub fn record_live_dropped(reason: &'static str) {
    counter!(LIVE_DROPPED, "reason" => reason).increment(1);
}

/// An order moved to `status` (paid, expired, cancelled).
pub fn record_transition(status: &'static str) {
    counter!(TRANSITIONS, "to" => status).increment(1);
}

/// An order expired `lag_ms` after its pay_by.
pub fn record_expiry_lag(lag_ms: i64) {
    histogram!(EXPIRY_LAG).record(lag_ms.max(0) as f64 / 1000.0);
}

/// Events' confirmations before the answer: `confirmed`, or `pending` (for a new order, the
/// 202). Registered once per holder: a labelled counter looked up per request costs a hash
/// and a lock on the hot path.
pub struct Confirmations {
    confirmed: Counter,
    pending: Counter,
}

impl Confirmations {
    pub fn register() -> Self {
        Self {
            confirmed: counter!(CONFIRMATIONS, "result" => "confirmed"),
            pending: counter!(CONFIRMATIONS, "result" => "pending"),
        }
    }

    pub fn record(&self, confirmed: bool) {
        if confirmed {
            &self.confirmed
        } else {
            &self.pending
        }
        .increment(1);
    }
}

/// A script call's `WAIT` for replicas (FLASHSALE_REDIS_WAIT_REPLICAS): enough of them
/// acknowledged in time, or not.
pub fn record_replication_wait(acknowledged: bool) {
    let result = if acknowledged {
        "acknowledged"
    } else {
        "short"
    };
    counter!(REPLICATION_WAITS, "result" => result).increment(1);
}

/// A purchase refused by a rate limit (`buyer` or `client`).
pub fn record_rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// A sale rebuilt after Redis lost it.
pub fn record_rebuild(took: Duration) {
    counter!(REBUILDS).increment(1);
    histogram!(REBUILD_SECONDS).record(took);
}

/// A sale archived by this replica (`true`), or one a pass could not archive (`false`).
pub fn record_archive(archived: bool) {
    let result = if archived { "archived" } else { "failed" };
    counter!(ARCHIVES, "result" => result).increment(1);
}

/// A rebuild folded a history that sells more than the stock.
pub fn record_oversold_fold() {
    counter!(OVERSOLD_FOLDS).increment(1);
}

/// Who hands an event to JetStream: the handler that answers for it (`FLASHSALE_CONFIRM=
/// jetstream`), or the relay from the outbox.
#[derive(Debug, Clone, Copy)]
pub enum Publisher {
    Confirm,
    Relay,
}

/// The delivery lag histogram of one publisher, registered once per holder.
pub fn delivery_lag_histogram(publisher: Publisher) -> Histogram {
    let label = match publisher {
        Publisher::Confirm => "confirm",
        Publisher::Relay => "relay",
    };
    histogram!(DELIVERY_LAG, "publisher" => label)
}

/// The HTTP latency histogram, registered once.
pub fn request_histogram() -> Histogram {
    histogram!(REQUEST_SECONDS)
}

/// HTTP answers by status class, registered once (the 5xx rate the alerts watch).
#[derive(Clone)]
pub struct ResponseCounters([Counter; 4]);

impl ResponseCounters {
    pub fn register() -> Self {
        Self(["2xx", "3xx", "4xx", "5xx"].map(|class| counter!(RESPONSES, "class" => class)))
    }

    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(2, 5) - 2;
        self.0[class].increment(1);
    }
}

/// This replica lost `dependency` (`redis`, `nats`): counted once per outage, as logged.
pub fn record_dependency_lost(dependency: &'static str) {
    counter!(DEPENDENCY_LOST, "dependency" => dependency).increment(1);
}

/// Whether `dependency` (`redis`, `nats`) answered this replica, as of the scrape.
pub fn record_dependency(dependency: &'static str, up: bool) {
    gauge!(DEPENDENCY_UP, "dependency" => dependency).set(if up { 1.0 } else { 0.0 });
}

/// The outboxes' size: events waiting, and the age of the oldest in milliseconds.
pub fn record_backlog(pending: u64, oldest_age_ms: u64) {
    gauge!(OUTBOX_PENDING).set(pending as f64);
    gauge!(OUTBOX_OLDEST).set(oldest_age_ms as f64 / 1000.0);
}
