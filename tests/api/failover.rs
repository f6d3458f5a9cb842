//! Redis replication and failover: `WAIT` for replicas before a new order is answered 201
//! (FLASHSALE_REDIS_WAIT_REPLICAS), on a master and replica of the test's own.

use std::time::Duration;

use flashsale::config::Confirm;
use serde_json::{Value, json};

use crate::health::{sample, scrape};
use crate::helpers::{
    free_port, private_redis, private_redis_with, redis_connection, spawn_app_with, unique,
};

/// Sends a signal to a process (SIGSTOP pauses a replica: it stops acknowledging).
fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the replica runs").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name} {pid}");
}

/// Waits (up to 5 s) until the replica on `port` is in sync with its master.
async fn wait_for_sync(port: u16) {
    let mut replica = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
    for _ in 0..100 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut replica)
            .await
            .expect("INFO");
        if info.contains("master_link_status:up") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica on {port} never synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_is_201_only_once_a_replica_holds_it() {
    let master_port = free_port();
    let _master = private_redis(master_port).await;
    let replica_port = free_port();
    let replica = private_redis_with(
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    )
    .await;
    wait_for_sync(replica_port).await;
    let app = spawn_app_with(|s| {
        s.redis_url = format!("redis://127.0.0.1:{master_port}");
        s.confirm = Confirm::Redis;
        s.redis_wait_replicas = 1;
        s.redis_wait_timeout = Duration::from_millis(200);
    })
    .await;
    let sku = unique("replicated");
    app.create_sale(&sku, json!({"stock": 100})).await;
    let metrics = scrape(&app).await;
    let waits = |text: &str, result: &str| {
        sample(
            text,
            &format!("flashsale_redis_replication_waits_total{{result=\"{result}\"}}"),
        )
    };

    // Replica up: every new order is answered 201, and the replica holds it by then.
    let mut replica_check = redis_connection(&format!("redis://127.0.0.1:{replica_port}")).await;
    for i in 0..5 {
        let response = app.order(&sku, &format!("synced-{i}"), 1).await;
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("order");
        let on_replica: Option<String> = redis::cmd("HGET")
            .arg(app.key(&sku, "orders"))
            .arg(order["order_id"].as_str().expect("order_id"))
            .query_async(&mut replica_check)
            .await
            .expect("HGET on the replica");
        assert!(on_replica.is_some(), "the replica holds {order} at its 201");
    }

    // Replica paused: Redis still decides, but nothing acknowledges the copy in time, so the
    // order is 202 pending rather than a 201 a failover could take back.
    signal(&replica, "-STOP");
    let response = app.order(&sku, "unreplicated", 1).await;
    signal(&replica, "-CONT");
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["delivery"], "pending");
    assert_eq!(app.redis_sold(&sku).await, 6, "the order stands");

    let after = scrape(&app).await;
    assert!(waits(&after, "acknowledged") - waits(&metrics, "acknowledged") >= 5.0);
    assert!(waits(&after, "short") - waits(&metrics, "short") >= 1.0);
    app.cleanup().await;
}
