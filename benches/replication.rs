//! What Redis Cluster and `WAIT` cost a purchase, as ratios measured in one run:
//!
//! - `replication/single_server`: 64 purchases of one sale in flight, through the store
//!   (group commit), on the single Redis of `scripts/services.sh`: the reference;
//! - `replication/cluster`: the same on the Redis Cluster of `scripts/cluster.sh` (3 masters,
//!   3 replicas): the cluster client's routing;
//! - `replication/cluster_wait_1_replica`: the same with FLASHSALE_REDIS_WAIT_REPLICAS=1, a
//!   `WAIT` after each batch's script call;
//! - `replication/cluster_64_sales`: 64 purchases of 64 sales spread over the 3 masters
//!   (no batching), and `…_wait_1_replica` with `WAIT`: a `WAIT` per purchase, each call and
//!   its `WAIT` on a connection of its own (FLASHSALE_REDIS_WAIT_CONNECTIONS, 16), and
//!   `…_wait_1_replica_shared`: the same on the shared connection (`0`);
//! - `paused_replica/{own,shared}_connections`: 64 purchases of 16 sales on a master of the
//!   bench's own whose one replica is paused (SIGSTOP), `WAIT` timing out after 100 ms: what
//!   a slow replica costs the other sales of its master, with `WAIT` on 16 connections of
//!   its own, and on the shared one.
//!
//! Needs `scripts/services.sh` and `scripts/cluster.sh up` (and `redis-server` for the
//! paused replica). Works in its own namespace and deletes it after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::domain::sale::SaleSettings;
use flashsale::domain::{Quantity, Sku, UserId};
use flashsale::store::{PurchaseRequest, Sales, Store};
use flashsale::support::settings::{Confirm, MAX_STOCK, Settings};
use futures::future::join_all;

/// The bench's keys start with this, then the process id.
const NAMESPACE: &str = "fsbench-replication";

const CLUSTER_SEEDS: &str =
    "redis://127.0.0.1:21001,redis://127.0.0.1:21002,redis://127.0.0.1:21003";

/// How a bench store waits for replicas.
#[derive(Clone, Copy)]
struct Waits {
    replicas: u32,
    /// FLASHSALE_REDIS_WAIT_CONNECTIONS.
    connections: u32,
    timeout: Duration,
    /// FLASHSALE_REDIS_TIMEOUT_MS: how long a purchase may wait for Redis in all.
    patience: Duration,
}

const NO_WAIT: Waits = Waits {
    replicas: 0,
    connections: 0,
    timeout: Duration::from_millis(100),
    patience: Duration::from_secs(1),
};

fn settings(redis_url: &str, waits: Waits) -> Settings {
    let mut settings = Settings::from_lookup(|_| None).expect("defaults are valid");
    settings.redis.namespace = format!("{NAMESPACE}-{}", std::process::id());
    settings.redis.url = redis_url.to_owned();
    settings.nats.confirm = Confirm::Redis;
    settings.redis.wait_replicas = waits.replicas;
    settings.redis.wait_connections = waits.connections;
    settings.redis.wait_timeout = waits.timeout;
    settings.redis.timeout = waits.patience;
    settings
}

/// The purchase handle of a store on `redis_url` with the sales of `skus` created.
fn sales_on(
    runtime: &tokio::runtime::Runtime,
    redis_url: &str,
    waits: Waits,
    skus: &[Sku],
) -> Sales {
    runtime.block_on(async {
        let store = Store::new(&settings(redis_url, waits).redis).expect("redis client");
        for sku in skus {
            store
                .rebuild()
                .put_sale(sku, &SaleSettings::plain(MAX_STOCK, 100), None, 0)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "bench needs {redis_url} (scripts/services.sh, scripts/cluster.sh up): {e}"
                    )
                });
        }
        store.sales()
    })
}

fn replication(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(remove_keys());
    let one = vec![Sku::parse("bench-replication").expect("valid sku")];
    let many: Vec<Sku> = (0..64)
        .map(|i| Sku::parse(&format!("bench-replication-{i}")).expect("valid sku"))
        .collect();
    let single = sales_on(&runtime, "redis://127.0.0.1:6379", NO_WAIT, &one);
    // The cluster's handles sell `one` too (`single_server` on the cluster, below).
    let on_cluster = [many.as_slice(), one.as_slice()].concat();
    let cluster = sales_on(&runtime, CLUSTER_SEEDS, NO_WAIT, &on_cluster);
    let one_replica = Waits {
        replicas: 1,
        connections: 16,
        ..NO_WAIT
    };
    let waiting = sales_on(&runtime, CLUSTER_SEEDS, one_replica, &on_cluster);
    let shared = Waits {
        connections: 0,
        ..one_replica
    };
    let waiting_shared = sales_on(&runtime, CLUSTER_SEEDS, shared, &many);

    let next_buyer = AtomicU64::new(0);
    let buyer = || {
        let n = next_buyer.fetch_add(1, Ordering::Relaxed);
        UserId::parse(format!("crowd-{n}")).expect("valid user")
    };
    // 64 purchases in flight, the i-th of `skus[i % len]`; `replicated`: whether each must
    // have reached a replica.
    let purchases = |inventory: &Sales, skus: &[Sku], replicated: bool| {
        join_all((0..64).map(|i| {
            let request = PurchaseRequest {
                user: buyer(),
                quantity: Quantity::ONE,
                idempotency_key: None,
                listing: flashsale::store::Listing::Listed,
                place: None,
            };
            let inventory = inventory.clone();
            let sku = skus[i % skus.len()].clone();
            async move {
                let purchase = inventory.purchase(&sku, request).await.expect("accepted");
                assert_eq!(purchase.replicated, replicated, "replicas as expected");
            }
        }))
    };
    let burst = |inventory: &Sales, skus: &[Sku]| purchases(inventory, skus, true);

    let mut group = c.benchmark_group("replication");
    group.bench_function("single_server", |b| {
        b.to_async(&runtime).iter(|| burst(&single, &one))
    });
    group.bench_function("cluster", |b| {
        b.to_async(&runtime).iter(|| burst(&cluster, &one))
    });
    group.bench_function("cluster_wait_1_replica", |b| {
        b.to_async(&runtime).iter(|| burst(&waiting, &one))
    });
    group.bench_function("cluster_64_sales", |b| {
        b.to_async(&runtime).iter(|| burst(&cluster, &many))
    });
    group.bench_function("cluster_64_sales_wait_1_replica", |b| {
        b.to_async(&runtime).iter(|| burst(&waiting, &many))
    });
    group.bench_function("cluster_64_sales_wait_1_replica_shared", |b| {
        b.to_async(&runtime).iter(|| burst(&waiting_shared, &many))
    });
    group.finish();

    // A master and its replica of the bench's own, the replica paused.
    let master = RedisServer::start(21_101, &[]);
    let replica = RedisServer::start(21_102, &["--replicaof", "127.0.0.1", "21101"]);
    replica.wait_for_sync();
    let master_url = "redis://127.0.0.1:21101";
    // A WAIT the replica does not answer ends at the master's next event-loop tick after its
    // timeout: with Redis's default hz 10, 100 ms at the least, whatever the timeout asked.
    let paused = Waits {
        replicas: 1,
        connections: 16,
        timeout: Duration::from_millis(100),
        // On the shared connection the calls queue behind each other's WAIT: long enough
        // for all of them to be answered, so the time is measured rather than a 503.
        patience: Duration::from_secs(30),
    };
    let sixteen = &many[..16];
    let own = sales_on(&runtime, master_url, paused, sixteen);
    let on_shared = Waits {
        connections: 0,
        ..paused
    };
    let shared = sales_on(&runtime, master_url, on_shared, sixteen);
    replica.signal("-STOP");
    let mut group = c.benchmark_group("paused_replica");
    group.sample_size(10);
    group.bench_function("own_connections", |b| {
        b.to_async(&runtime)
            .iter(|| purchases(&own, sixteen, false))
    });
    group.bench_function("shared_connection", |b| {
        b.to_async(&runtime)
            .iter(|| purchases(&shared, sixteen, false))
    });
    group.finish();
    replica.signal("-CONT");
    drop((replica, master));

    runtime.block_on(remove_keys());
}

/// The bench's keys, on the server and on each master (one key a command on a cluster): those
/// of this run, and of any run that stopped before its end (a failed assertion, ^C), which
/// would otherwise stay: one left 585,000 keys that every SCAN of the tests then went through.
async fn remove_keys() {
    let mut addresses = vec!["redis://127.0.0.1:6379".to_owned()];
    addresses.extend((21001..=21006).map(|p| format!("redis://127.0.0.1:{p}")));
    for address in addresses {
        let client = redis::Client::open(address.as_str()).expect("redis url");
        let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{NAMESPACE}-*"))
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(key).query_async(&mut redis).await;
        }
    }
}

criterion_group!(benches, replication);
criterion_main!(benches);

/// A redis-server of the bench's own, nothing on disk, killed on drop.
struct RedisServer {
    port: u16,
    process: std::process::Child,
}

impl RedisServer {
    fn start(port: u16, more: &[&str]) -> Self {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} is taken (a redis-server an interrupted run left?)"
        );
        let process = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(more)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let server = Self { port, process };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {port} did not start");
    }

    fn wait_for_sync(&self) {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).expect("redis url");
        let mut redis = client.get_connection().expect("replica connection");
        for _ in 0..200 {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut redis)
                .expect("INFO");
            if info.contains("master_link_status:up") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the replica on {} never synced", self.port);
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([name, &self.process.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {name}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
