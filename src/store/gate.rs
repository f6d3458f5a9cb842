//! Redis as every store call reaches it: the shared connection, the connections of their own
//! for calls followed by `WAIT`, and what this replica knows of Redis's health (the outage
//! gate), so an outage is logged once and answered fast.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::RedisError;

use super::StoreError;
use super::connection::{OwnConnections, RedisConnection};
use super::keys::SaleKeys;
use crate::domain::Sku;
use crate::support::settings::RedisSettings;

pub(super) struct Redis {
    connection: RedisConnection,
    namespace: String,
    /// Replicas a script call's writes must reach (`WAIT`), and for how long at most.
    wait_replicas: u32,
    wait_timeout: Duration,
    /// Where the calls followed by that `WAIT` go: connections of their own, unless
    /// FLASHSALE_REDIS_WAIT_CONNECTIONS says 0 (the shared one) or nothing waits.
    own_connections: Option<bb8::Pool<OwnConnections>>,
    /// Last known state of Redis, so an outage is logged once, not once per request; while
    /// false, purchases fail fast but for one probe at a time (`probing`).
    available: AtomicBool,
    /// Since when Redis has been unreachable, and how many calls failed since: said once,
    /// when it is back.
    outage: Mutex<Option<(Instant, u64)>>,
    probing: AtomicBool,
    /// How long a purchase waits for Redis in all (its sale's queue and its call).
    pub timeout: Duration,
}

impl Redis {
    /// Prepares the connection without opening it: the service starts (and answers 503)
    /// while Redis is down, and connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        Ok(Self {
            connection: RedisConnection::new(settings)?,
            namespace: settings.namespace.clone(),
            wait_replicas: settings.wait_replicas,
            wait_timeout: settings.wait_timeout,
            own_connections: (settings.wait_replicas > 0 && settings.wait_connections > 0)
                .then(|| OwnConnections::pool(settings, settings.wait_connections)),
            available: AtomicBool::new(true),
            outage: Mutex::new(None),
            probing: AtomicBool::new(false),
            timeout: settings.timeout,
        })
    }

    /// A handle on the shared connection.
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// The prefix of every key this service writes.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn keys(&self, sku: &Sku) -> SaleKeys {
        SaleKeys::new(&self.namespace, sku)
    }

    /// The connection for a script call that writes the sale and may be followed by
    /// [`Redis::replicated`] (which must go on the same connection: `WAIT` counts the
    /// writes of the connection it is sent on). One of its own while replicas are waited
    /// for, held until dropped; the shared one otherwise.
    pub async fn writer(&self) -> Result<Writer, StoreError> {
        let Some(pool) = &self.own_connections else {
            return Ok(Writer::Shared(self.connection()));
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
    pub async fn replicated(&self, redis: &mut RedisConnection, sku: &Sku) -> bool {
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
    pub async fn answering(&self) -> bool {
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
        let mut redis = self.connection();
        let reply = redis::cmd("PING").query_async::<String>(&mut redis).await;
        self.observe(reply).map(drop)
    }

    /// Passes a Redis result through, logging the transitions between reachable and not:
    /// one line when Redis is lost, one when it is back with how long and how many calls
    /// failed meanwhile, never a line per failed call.
    pub fn observe<T>(&self, result: Result<T, RedisError>) -> Result<T, StoreError> {
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
                    *self.outage.lock() = Some((Instant::now(), 1));
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

/// Where a script call that writes a sale goes ([`Redis::writer`]).
pub(super) enum Writer {
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
