//! What Redis Cluster and `WAIT` cost a purchase, as ratios measured in one run:
//!
//! - `replication/single_server`: 64 purchases of one sale in flight, through the inventory
//!   (group commit), on the single Redis of `scripts/services.sh`: the reference;
//! - `replication/cluster`: the same on the Redis Cluster of `scripts/cluster.sh` (3 masters,
//!   3 replicas): the cluster client's routing;
//! - `replication/cluster_wait_1_replica`: the same with FLASHSALE_REDIS_WAIT_REPLICAS=1, a
//!   `WAIT` after each batch's script call;
//! - `replication/cluster_64_sales`: 64 purchases of 64 sales spread over the 3 masters
//!   (no batching), and `…_wait_1_replica` with `WAIT`: a `WAIT` per purchase.
//!
//! Needs `scripts/services.sh` and `scripts/cluster.sh up`. Works in its own namespace and
//! deletes it after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::domain::sale::SaleSettings;
use flashsale::domain::{Quantity, Sku, UserId};
use flashsale::store::{Inventory, PurchaseRequest};
use flashsale::support::settings::{Confirm, MAX_STOCK, Settings};
use futures::future::join_all;

const CLUSTER_SEEDS: &str =
    "redis://127.0.0.1:21001,redis://127.0.0.1:21002,redis://127.0.0.1:21003";

fn settings(redis_url: &str, wait_replicas: u32) -> Settings {
    let mut settings = Settings::from_lookup(|_| None).expect("defaults are valid");
    settings.redis.namespace = format!("fsbench-replication-{}", std::process::id());
    settings.redis.url = redis_url.to_owned();
    settings.nats.confirm = Confirm::Redis;
    settings.redis.wait_replicas = wait_replicas;
    settings
}

/// An inventory on `redis_url` with the sales of `skus` created.
fn inventory(
    runtime: &tokio::runtime::Runtime,
    redis_url: &str,
    wait_replicas: u32,
    skus: &[Sku],
) -> Arc<Inventory> {
    runtime.block_on(async {
        let inventory = Arc::new(
            Inventory::new(&settings(redis_url, wait_replicas).redis).expect("redis client"),
        );
        for sku in skus {
            inventory
                .put_sale(sku, &SaleSettings::plain(MAX_STOCK, 100), false, 0)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "bench needs {redis_url} (scripts/services.sh, scripts/cluster.sh up): {e}"
                    )
                });
        }
        inventory
    })
}

fn replication(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let one = vec![Sku::parse("bench-replication").expect("valid sku")];
    let many: Vec<Sku> = (0..64)
        .map(|i| Sku::parse(&format!("bench-replication-{i}")).expect("valid sku"))
        .collect();
    let single = inventory(&runtime, "redis://127.0.0.1:6379", 0, &one);
    let cluster = inventory(&runtime, CLUSTER_SEEDS, 0, &many);
    let waiting = inventory(&runtime, CLUSTER_SEEDS, 1, &many);
    runtime.block_on(async {
        for sku in &one {
            for inventory in [&cluster, &waiting] {
                inventory
                    .put_sale(sku, &SaleSettings::plain(MAX_STOCK, 100), false, 0)
                    .await
                    .expect("sale on the cluster");
            }
        }
    });

    let next_buyer = AtomicU64::new(0);
    let buyer = || {
        let n = next_buyer.fetch_add(1, Ordering::Relaxed);
        UserId::parse(format!("crowd-{n}")).expect("valid user")
    };
    // 64 purchases in flight, the i-th of `skus[i % len]`.
    let burst = |inventory: &Arc<Inventory>, skus: &[Sku]| {
        join_all((0..64).map(|i| {
            let request = PurchaseRequest {
                user: buyer(),
                quantity: Quantity::ONE,
                idempotency_key: None,
            };
            let inventory = inventory.clone();
            let sku = skus[i % skus.len()].clone();
            async move {
                let purchase = inventory.purchase(&sku, request).await.expect("accepted");
                assert!(purchase.replicated, "a replica acknowledged");
            }
        }))
    };

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
    group.finish();

    // The bench's keys, on the server and on each master (one key a command on a cluster).
    runtime.block_on(async {
        let pattern = format!("fsbench-replication-{}:*", std::process::id());
        let mut addresses = vec!["redis://127.0.0.1:6379".to_owned()];
        addresses.extend((21001..=21006).map(|p| format!("redis://127.0.0.1:{p}")));
        for address in addresses {
            let client = redis::Client::open(address.as_str()).expect("redis url");
            let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut redis)
                .await
                .unwrap_or_default();
            for key in keys {
                let _: Result<(), _> = redis::cmd("UNLINK").arg(key).query_async(&mut redis).await;
            }
        }
    });
}

criterion_group!(benches, replication);
criterion_main!(benches);
