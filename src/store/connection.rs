//! The connection to Redis: one server, or a Redis Cluster.
//!
//! A single server is one multiplexed connection ([`ConnectionManager`]) that every request
//! shares. A cluster is the redis crate's cluster client: it routes each command by its key's
//! slot (every key of a sale carries the sale's `{sku}` hash tag, so a script call goes to the
//! one master holding the sale), loads scripts on every master on `NOSCRIPT`, and follows
//! `MOVED` / `ASK` while slots move. Both are opened lazily, on first use, so the service
//! starts (and answers 503) while Redis is down.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::OnceCell;

use crate::support::settings::RedisSettings;

/// Commands of one cross-slot batch in flight at once on a cluster.
const CLUSTER_FAN_OUT: usize = 64;

#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

/// A cluster connection made on first use (and again by the client itself after failures);
/// shared, so a clone per command costs one reference count.
#[derive(Clone)]
pub struct LazyCluster(Arc<ClusterState>);

struct ClusterState {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> Result<ClusterConnection, RedisError> {
        self.0
            .connection
            .get_or_try_init(|| self.0.client.get_async_connection())
            .await
            .cloned()
    }
}

impl RedisConnection {
    /// One server, or a cluster when the settings name several seed nodes (or say so).
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let seeds = settings.seeds();
        if !settings.uses_cluster() {
            let client = redis::Client::open(seeds[0])?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                // Fail requests fast during an outage; the next request starts a new attempt.
                .set_number_of_retries(1)
                .set_max_delay(std::time::Duration::from_millis(100));
            return Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                client, config,
            )?));
        }
        let client = ClusterClient::builder(seeds)
            .connection_timeout(settings.timeout)
            .response_timeout(settings.timeout)
            .build()?;
        Ok(Self::Cluster(LazyCluster(Arc::new(ClusterState {
            client,
            connection: OnceCell::new(),
        }))))
    }

    /// Independent commands whose keys may lie in different hash slots, their replies in
    /// order: one pipeline on a single server; on a cluster, where a pipeline must stay in
    /// one slot, each command on its own, [`CLUSTER_FAN_OUT`] at a time.
    pub async fn query_each<T: FromRedisValue>(
        &mut self,
        commands: Vec<Cmd>,
    ) -> Result<Vec<T>, RedisError> {
        match self {
            Self::Single(connection) => pipeline(commands).query_async(connection).await,
            Self::Cluster(lazy) => {
                let connection = lazy.get().await?;
                futures::stream::iter(commands)
                    .map(|command| {
                        let mut connection = connection.clone();
                        async move { command.query_async::<T>(&mut connection).await }
                    })
                    .buffered(CLUSTER_FAN_OUT)
                    .try_collect()
                    .await
            }
        }
    }

    /// Commands whose keys may lie in different hash slots, run one after the other (the
    /// later ones see what the earlier did); the last one's reply. One pipeline on a single
    /// server.
    pub async fn query_in_order<T: FromRedisValue>(
        &mut self,
        commands: Vec<Cmd>,
    ) -> Result<T, RedisError> {
        let mut replies: Vec<Value> = match self {
            Self::Single(connection) => pipeline(commands).query_async(connection).await?,
            Self::Cluster(lazy) => {
                let mut connection = lazy.get().await?;
                let mut replies = Vec::with_capacity(commands.len());
                for command in commands {
                    replies.push(command.query_async::<Value>(&mut connection).await?);
                }
                replies
            }
        };
        let last = replies.pop().unwrap_or(Value::Nil);
        Ok(redis::from_redis_value(last)?)
    }
}

impl RedisConnection {
    /// Redis `WAIT`: how many replicas of the primary holding `key` acknowledged every write
    /// this connection made, after at most `timeout`.
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> Result<u32, RedisError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        self.query_on_primary_of(key, wait).await
    }

    /// A keyless command, run on the primary holding `key`. On a cluster the client would
    /// send one such as `WAIT` or `SCRIPT EXISTS` to every primary and merge the replies (for
    /// `WAIT` the smallest count, so one primary without replicas would fail every wait).
    pub async fn query_on_primary_of<T: FromRedisValue>(
        &mut self,
        key: &str,
        command: Cmd,
    ) -> Result<T, RedisError> {
        match self {
            Self::Single(connection) => command.query_async(connection).await,
            Self::Cluster(lazy) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let reply = lazy.get().await?.route_command(command, routing).await?;
                redis::from_redis_value(reply).map_err(Into::into)
            }
        }
    }
}

/// Connections of their own, for script calls followed by `WAIT`: `WAIT` blocks the
/// connection it is sent on until the replicas acknowledge (or its timeout), and on the
/// shared connection every command behind it (other sales' purchases, every read) would wait
/// with it. Each is opened lazily like the shared one (a server's own connection, or a
/// cluster client of its own) and held by one call and its `WAIT` at a time.
pub struct OwnConnections(RedisSettings);

impl OwnConnections {
    /// A pool of up to `size` of them; a caller waits at most the Redis timeout for one.
    pub fn pool(settings: &RedisSettings, size: u32) -> bb8::Pool<Self> {
        bb8::Pool::builder()
            .max_size(size)
            .min_idle(None)
            .connection_timeout(settings.timeout)
            // Connections are lazy and reconnect by themselves: nothing to test out.
            .test_on_check_out(false)
            .build_unchecked(Self(settings.clone()))
    }
}

impl bb8::ManageConnection for OwnConnections {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        RedisConnection::new(&self.0)
    }

    async fn is_valid(&self, _: &mut RedisConnection) -> Result<(), RedisError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut RedisConnection) -> bool {
        false
    }
}

fn pipeline(commands: Vec<Cmd>) -> Pipeline {
    let mut pipe = redis::pipe();
    for command in commands {
        pipe.add_command(command);
    }
    pipe
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
