//! The stock, held in Redis. Every decision about a sale is one Lua script call (see `lua/`),
//! so this module only builds keys, calls scripts and reads their replies.
//!
//! Everything shares one connection ([`RedisConnection`]: one multiplexed connection, or the
//! cluster client): concurrent requests are pipelined onto it. 64 commands in flight take
//! 0.2 ms on it against 1.3–1.8 ms through a bb8-redis pool (`benches/connections.rs`). It
//! reconnects by itself. (One connection per thread measured no better, within noise, and
//! after a Redis restart each of them failed a request before reconnecting, where one
//! connection fails one.) The one exception: a script call followed by `WAIT`, which blocks
//! its connection, takes one of its own ([`Inventory::writer`]).

/// A script of `lua/`: the layout of a sale's keys as a line of Lua ([`LAYOUT`]), the shared
/// `prelude.lua`, then its files in order (the shared part first). Built into the binary;
/// with the `mutation` feature read from the repository when the store is made, so
/// `scripts/mutate-lua.py` tests each changed script without a rebuild.
macro_rules! lua_script {
    ($($file:literal),+) => {{
        #[cfg(not(feature = "mutation"))]
        let files = concat!(
            include_str!("../../lua/prelude.lua"),
            $(include_str!(concat!("../../lua/", $file))),+
        );
        #[cfg(feature = "mutation")]
        let files: String = ["prelude.lua", $($file),+]
            .iter()
            .map(|file| {
                let path = format!("{}/lua/{file}", env!("CARGO_MANIFEST_DIR"));
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
            })
            .collect();
        Script::new(&format!("local LAYOUT = '{LAYOUT}'\n{files}"))
    }};
}

mod archive;
mod connection;
mod delivering;
mod keys;
mod outbox;
mod payment_due;
mod purchase;
mod read;
mod registry;
mod reply;
mod restore;
mod sales;
pub mod sold_out;
mod transition;
mod waiting;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use redis::{RedisError, Script};
use tokio::sync::Notify;

use crate::domain::Sku;
use crate::store::sold_out::SoldOutCache;
use crate::support::group_commit::Batches;
use crate::support::metrics::PurchaseMetrics;
use crate::support::settings::RedisSettings;

use connection::OwnConnections;

/// The layout of a sale's keys, appended to the replication id a sale's `primary` field
/// records (see `lua/prelude.lua`: `this_primary`). A sale an earlier layout wrote then reads as a copy from
/// elsewhere and is rebuilt from JetStream in this layout, as after a failover: layout 2 (issue
/// 23) keys orders by a short field and keeps each buyer's list in the buyers hash.
pub const LAYOUT: &str = "/2";
pub use connection::RedisConnection;
pub use keys::{SaleKeys, payment_due, sale_registry};
pub use outbox::{Backlog, CreatedEvent, Outbox, OutboxEntry, WrittenEntry, written_ms};
pub use payment_due::{DueSales, PaymentIndex};
pub use purchase::{Listing, MAX_BATCH, Purchase, PurchaseError, PurchaseRequest};
pub use read::OrderQuery;
pub use restore::Restored;
pub use sales::{OrderCounts, PutSaleError};
pub use transition::{Ended, Expired, TransitionError};

/// Why Redis could not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] RedisError),
    /// A reply that does not match what the scripts return: a bug or foreign data.
    #[error("unexpected reply from redis: {0}")]
    Corrupt(String),
    /// Redis does not hold the sale: never created, or lost. Nothing was decided; the caller
    /// rebuilds it from JetStream (`recovery/rebuild.rs`) or answers that it does not exist.
    #[error("redis does not hold this sale")]
    SaleMissing,
    /// Redis lost the sale and it could not be rebuilt from JetStream (yet): NATS down, or
    /// the rebuild took longer than allowed.
    #[error("sale not rebuilt: {0}")]
    NotRebuilt(String),
    /// The task deciding a batch of purchases was torn down before it answered (the runtime
    /// shutting down): the purchase may or may not have been decided.
    #[error("purchase abandoned before its answer")]
    Abandoned,
    /// Redis gave no answer within FLASHSALE_REDIS_TIMEOUT_MS, a purchase's wait for its
    /// sale's next call included; or Redis is known not to answer (the last call failed) and
    /// another request is already finding out whether it is back.
    #[error("redis did not answer in time")]
    NotAnswering,
}

pub struct Inventory {
    redis: RedisConnection,
    namespace: String,
    idempotency_ttl: std::time::Duration,
    idempotency_ttl_secs: String,
    /// Replicas a script call's writes must reach (`WAIT`), and for how long at most.
    wait_replicas: u32,
    wait_timeout: std::time::Duration,
    /// Where the calls followed by that `WAIT` go: connections of their own, unless
    /// FLASHSALE_REDIS_WAIT_CONNECTIONS says 0 (the shared one) or nothing waits.
    own_connections: Option<bb8::Pool<OwnConnections>>,
    purchase_script: Script,
    put_sale_script: Script,
    transition_script: Script,
    relay_lease_script: Script,
    restore_script: Script,
    read_orders_script: Script,
    archive_script: Script,
    /// Last known state of Redis, so an outage is logged once, not once per request; while
    /// false, purchases fail fast but for one probe at a time (`probing`, purchase.rs).
    available: AtomicBool,
    /// Since when Redis has been unreachable, and how many calls failed since: said once,
    /// when it is back.
    outage: parking_lot::Mutex<Option<(std::time::Instant, u64)>>,
    probing: AtomicBool,
    /// How long a purchase waits for Redis in all (its sale's queue and its call).
    redis_timeout: std::time::Duration,
    /// Signalled after each script call that wrote an outbox entry, to wake the relay.
    outbox_written: Notify,
    /// Outbox entries this replica's handlers are delivering right now (sale, entry id): the
    /// relay stops short of them (`outbox.rs`: `Outbox::delivering`).
    delivering: Mutex<HashSet<(Sku, String)>>,
    /// Sales this replica wrote outbox entries for since its relay last looked (waiting.rs).
    written: Mutex<HashSet<String>>,
    /// Purchases waiting for their sale's next script call (support/group_commit.rs).
    batches: Batches<purchase::Queued>,
    sold_out: SoldOutCache,
    metrics: PurchaseMetrics,
}

impl Inventory {
    /// Prepares the connection without opening it: the service starts (and answers 503)
    /// while Redis is down, and connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        Ok(Self {
            redis: RedisConnection::new(settings)?,
            namespace: settings.namespace.clone(),
            idempotency_ttl: settings.idempotency_ttl,
            idempotency_ttl_secs: settings.idempotency_ttl.as_secs().to_string(),
            wait_replicas: settings.wait_replicas,
            wait_timeout: settings.wait_timeout,
            own_connections: (settings.wait_replicas > 0 && settings.wait_connections > 0)
                .then(|| OwnConnections::pool(settings, settings.wait_connections)),
            purchase_script: lua_script!("purchase.lua"),
            put_sale_script: lua_script!("put_sale.lua"),
            transition_script: lua_script!("order_moves.lua", "transition.lua"),
            relay_lease_script: lua_script!("relay_lease.lua"),
            restore_script: lua_script!("order_moves.lua", "restore.lua"),
            read_orders_script: lua_script!("read_orders.lua"),
            archive_script: lua_script!("archive.lua"),
            available: AtomicBool::new(true),
            outage: parking_lot::Mutex::new(None),
            probing: AtomicBool::new(false),
            redis_timeout: settings.timeout,
            outbox_written: Notify::new(),
            delivering: Mutex::new(HashSet::new()),
            written: Mutex::new(HashSet::new()),
            batches: Batches::new(purchase::MAX_BATCH),
            sold_out: SoldOutCache::new(settings.sold_out_recheck),
            metrics: PurchaseMetrics::register(),
        })
    }

    /// Loads the scripts so the first purchases go straight to EVALSHA. Calls still recover
    /// from NOSCRIPT (Redis restarted or `SCRIPT FLUSH`) by loading again.
    pub async fn load_scripts(&self) -> Result<(), RedisError> {
        let mut redis = self.redis();
        for (name, script) in [
            ("purchase", &self.purchase_script),
            ("put_sale", &self.put_sale_script),
            ("transition", &self.transition_script),
            ("relay_lease", &self.relay_lease_script),
            ("restore", &self.restore_script),
            ("read_orders", &self.read_orders_script),
            ("archive", &self.archive_script),
        ] {
            let sha = script.prepare_invoke().load_async(&mut redis).await?;
            log::info!("lua script {name} loaded: {sha}");
        }
        Ok(())
    }

    /// A handle on the shared connection.
    fn redis(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// Whether Redis holds a copy of the sale it can decide on: one this primary wrote (the
    /// check every script makes first; a copy another primary wrote may be behind).
    pub async fn sale_exists(&self, sku: &Sku) -> Result<bool, StoreError> {
        match self.read_orders(sku, &OrderQuery::Ids(&[])).await {
            Ok(_) => Ok(true),
            Err(StoreError::SaleMissing) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The connection for a script call that writes the sale and may be followed by
    /// [`Inventory::replicated`] (which must go on the same connection: `WAIT` counts the
    /// writes of the connection it is sent on). One of its own while replicas are waited
    /// for, held until dropped; the shared one otherwise.
    pub(crate) async fn writer(&self) -> Result<Writer, StoreError> {
        let Some(pool) = &self.own_connections else {
            return Ok(Writer::Shared(self.redis()));
        };
        match pool.get_owned().await {
            Ok(connection) => Ok(Writer::Own(connection)),
            // Every one of them is held by a call waiting for its replicas.
            Err(bb8::RunError::TimedOut) => Err(StoreError::NotAnswering),
            Err(bb8::RunError::User(e)) => Err(StoreError::Unavailable(e)),
        }
    }

    /// Whether the writes of the script call that just wrote the sale on `redis` reached
    /// the replicas FLASHSALE_REDIS_WAIT_REPLICAS asks for (always, when it asks for none).
    /// With asynchronous replication a replica promoted after a failover may lack what its
    /// master acknowledged; `WAIT` makes that window a bounded wait instead. A failed `WAIT`
    /// counts as not replicated: the writes stand, only their answer is more careful.
    pub(crate) async fn replicated(&self, redis: &mut RedisConnection, sku: &Sku) -> bool {
        if self.wait_replicas == 0 {
            return true;
        }
        let acknowledged = redis
            .wait_for_replicas(
                &self.keys(sku).sale(),
                self.wait_replicas,
                self.wait_timeout,
            )
            .await;
        let replicated = match acknowledged {
            Ok(count) => count >= self.wait_replicas,
            Err(e) => {
                log::debug!("WAIT for sale {sku}: {e}");
                false
            }
        };
        crate::support::metrics::record_replication_wait(replicated);
        replicated
    }

    /// Whether to send Redis work now. True while Redis answers; after a failure, true for
    /// one caller at a time once its `PING` is answered, false (at once) for the others
    /// meanwhile. So an outage or a stalled Redis (paused, swapping) costs a purchase a fast
    /// 503 instead of a script call that waits out its timeout and stays queued on the
    /// connection, to be run, answer lost, when Redis returns: only the calls in flight at
    /// the moment it stalled have an unknown outcome. The first answer reopens the gate.
    pub(crate) async fn redis_answering(&self) -> bool {
        if self.available.load(Ordering::Relaxed) {
            return true;
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return false;
        }
        // Released however the probe ends (its task dropped mid-PING included), or every
        // later purchase would fail fast for good.
        struct Probe<'a>(&'a AtomicBool);
        impl Drop for Probe<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _probe = Probe(&self.probing);
        self.ping().await.is_ok()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut redis = self.redis();
        let reply = redis::cmd("PING").query_async::<String>(&mut redis).await;
        self.observe(reply).map(drop)
    }

    /// The purchase path's metrics, for outcomes decided outside the inventory (a sale that
    /// does not exist anywhere).
    pub fn metrics(&self) -> &PurchaseMetrics {
        &self.metrics
    }

    /// This replica's sold-out marks (the fast path of `purchase`).
    pub fn sold_out(&self) -> &SoldOutCache {
        &self.sold_out
    }

    /// Woken when this replica wrote an order event to an outbox.
    pub fn outbox_written(&self) -> &Notify {
        &self.outbox_written
    }

    pub fn keys(&self, sku: &Sku) -> SaleKeys {
        SaleKeys::new(&self.namespace, sku)
    }

    /// Passes a Redis result through, logging the transitions between reachable and not:
    /// one line when Redis is lost, one when it is back with how long and how many calls
    /// failed meanwhile, never a line per failed call.
    fn observe<T>(&self, result: Result<T, RedisError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                if !self.available.load(Ordering::Relaxed)
                    && !self.available.swap(true, Ordering::Relaxed)
                {
                    match self.outage.lock().take() {
                        Some((since, failed)) => log::info!(
                            "redis reachable again after {:.1} s ({failed} calls failed meanwhile)",
                            since.elapsed().as_secs_f64()
                        ),
                        None => log::info!("redis reachable again"),
                    }
                }
                Ok(value)
            }
            Err(e) => {
                if self.available.swap(false, Ordering::Relaxed) {
                    *self.outage.lock() = Some((std::time::Instant::now(), 1));
                    crate::support::metrics::record_dependency_lost("redis");
                    log::warn!("redis unreachable, answering 503 until it returns: {e}");
                } else if let Some((_, failed)) = self.outage.lock().as_mut() {
                    *failed += 1;
                }
                Err(StoreError::Unavailable(e))
            }
        }
    }
}

/// Where a script call that writes a sale goes ([`Inventory::writer`]).
pub(crate) enum Writer {
    Shared(RedisConnection),
    Own(bb8::PooledConnection<'static, OwnConnections>),
}

impl std::ops::Deref for Writer {
    type Target = RedisConnection;

    fn deref(&self) -> &RedisConnection {
        match self {
            Writer::Shared(connection) => connection,
            Writer::Own(connection) => connection,
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut RedisConnection {
        match self {
            Writer::Shared(connection) => connection,
            Writer::Own(connection) => connection,
        }
    }
}
