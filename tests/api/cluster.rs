//! The service on a Redis Cluster (`scripts/cluster.sh up`: 3 masters, 3 replicas). The
//! seeds come from FLASHSALE_TEST_REDIS_CLUSTER (default: the script's first three ports);
//! a cluster that does not answer fails the test.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::helpers::redis_fixtures::{command_calls, delta};
use crate::helpers::{cluster_masters, nats_cluster_seeds, redis_cluster_seeds, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_spread_over_the_masters_and_none_oversells() {
    let mut masters = cluster_masters(&redis_cluster_seeds()[0]).await;
    assert_eq!(
        masters.len(),
        3,
        "three masters: {:?}",
        masters.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let app = spawn_app_with(|s| {
        s.redis.url = redis_cluster_seeds()[0].clone();
        s.redis.cluster = true;
        s.nats.confirm = flashsale::support::settings::Confirm::Redis;
    })
    .await;
    // Sku names fix the slots (the hash tag is the sku), so the spread does not depend on
    // this run's namespace; the purchases pick among them at random.
    let skus: Vec<String> = (0..100).map(|i| format!("spread-{i}")).collect();
    for sku in &skus {
        app.create_sale(sku, json!({"stock": 5})).await;
    }
    let mut before = Vec::new();
    for (_, redis) in masters.iter_mut() {
        before.push(command_calls(redis).await);
    }
    let picks: Vec<usize> = (0..1000).map(|_| rand_below(skus.len())).collect();
    let statuses: Vec<(usize, u16)> = futures::stream::iter(picks.iter().enumerate())
        .map(|(n, &pick)| {
            let app = &app;
            let sku = &skus[pick];
            async move {
                (
                    pick,
                    app.order(sku, &format!("buyer-{n}"), 1)
                        .await
                        .status()
                        .as_u16(),
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let mut created: HashMap<usize, u64> = HashMap::new();
    for (pick, status) in &statuses {
        assert!([201, 409].contains(status), "decided: {status}");
        if *status == 201 {
            *created.entry(*pick).or_default() += 1;
        }
    }
    for (i, sku) in skus.iter().enumerate() {
        let sale = app.sale_json(sku).await;
        let sold = sale["sold"].as_u64().expect("sold");
        assert!(sold <= 5, "{sku} sold {sold} of 5");
        assert_eq!(
            sold,
            created.get(&i).copied().unwrap_or(0),
            "{sku}: sold = answered 201"
        );
    }

    let mut calls = Vec::new();
    for ((address, redis), before) in masters.iter_mut().zip(&before) {
        let after = command_calls(redis).await;
        calls.push((address.clone(), delta(before, &after, "evalsha")));
    }
    let total: u64 = calls.iter().map(|(_, n)| n).sum();
    assert!(total > 0);
    let even = total as f64 / 3.0;
    for (address, n) in &calls {
        assert!(
            (*n as f64 - even).abs() <= even * 0.25,
            "script calls per master within ±25 % of even: {calls:?}"
        );
        assert!(*n > 0, "{address} ran none");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.cleanup().await;
}

/// A random index below `n`, from the standard library's hasher seeds.
fn rand_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(n);
    (hasher.finish() % n as u64) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_stream_and_definitions_are_replicated_three_times() {
    let app = spawn_app_with(|s| {
        s.nats.urls = nats_cluster_seeds();
        s.nats.stream_replicas = 3;
    })
    .await;
    let sku = crate::helpers::unique("replicated");
    app.create_sale(&sku, json!({"stock": 5})).await;
    let order = app.order(&sku, "buyer", 1).await;
    assert_eq!(order.status(), 201);
    let order: serde_json::Value = order.json().await.expect("order JSON");
    assert_eq!(
        order["delivery"], "confirmed",
        "confirmed by the replicated stream"
    );

    let nats = async_nats::connect(nats_cluster_seeds())
        .await
        .expect("nats cluster (scripts/cluster.sh up)");
    let js = async_nats::jetstream::new(nats);
    let bucket_stream = format!(
        "KV_{}",
        flashsale::recovery::definitions::bucket_name(&app.settings.nats.stream)
    );
    for name in [app.settings.nats.stream.clone(), bucket_stream] {
        let mut stream = js.get_stream(&name).await.expect("stream exists");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "{name}: replicas asked for");
        let cluster = info.cluster.as_ref().expect("clustered");
        assert!(cluster.leader.is_some(), "{name}: a leader");
        assert_eq!(cluster.replicas.len(), 2, "{name}: two followers");
    }
    app.cleanup().await;
}
