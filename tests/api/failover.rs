//! Redis replication and failover, on servers of the test's own: `WAIT` for replicas before a
//! new order is answered 201 (FLASHSALE_REDIS_WAIT_REPLICAS); a Redis Cluster master killed
//! during a burst.

use std::time::Duration;

use flashsale::support::settings::Confirm;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::nats::{assert_no_duplicates, delivered};
use crate::helpers::{
    TestApp, assert_audit_clean, free_port, private_redis, private_redis_with, redis_connection,
    spawn_app_with, spawn_metered, test_settings, unique,
};
use crate::servers::{PrivateNatsCluster, PrivateRedisCluster};

/// Sends a signal to a process (SIGSTOP pauses a replica: it stops acknowledging).
fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the replica runs").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name} {pid}");
}

/// Test settings on a Redis Cluster of the test's own.
fn on_cluster(cluster: &PrivateRedisCluster) -> flashsale::support::settings::Settings {
    let mut settings = test_settings();
    settings.redis.url = cluster.seeds();
    settings
}

/// Waits (up to 20 s) until the replica on `port` is in sync with its master.
async fn wait_for_sync(port: u16) {
    let mut replica = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
    for _ in 0..400 {
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

/// A Redis master and its replica of the test's own, the replica in sync; both die with it.
struct MasterAndReplica {
    master_port: u16,
    _master: tokio::process::Child,
    replica_port: u16,
    replica: tokio::process::Child,
}

impl MasterAndReplica {
    async fn start() -> Self {
        let master_port = free_port();
        let master = private_redis(master_port).await;
        let replica_port = free_port();
        let replica = private_redis_with(
            replica_port,
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
        )
        .await;
        wait_for_sync(replica_port).await;
        Self {
            master_port,
            _master: master,
            replica_port,
            replica,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_is_201_only_once_a_replica_holds_it() {
    let pair = MasterAndReplica::start().await;
    let (master_port, replica_port, replica) = (pair.master_port, pair.replica_port, &pair.replica);
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{master_port}");
    settings.nats.confirm = Confirm::Redis;
    settings.redis.wait_replicas = 1;
    // Generous: a loaded machine's replica still acknowledges within it, so a 201 below
    // cannot turn 202 by latency; only the paused replica runs it out.
    settings.redis.wait_timeout = Duration::from_secs(3);
    let (_process, app) = spawn_metered(settings).await;
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
            .arg(
                app.order_field(&sku, order["order_id"].as_str().expect("order_id"))
                    .await,
            )
            .query_async(&mut replica_check)
            .await
            .expect("HGET on the replica");
        assert!(on_replica.is_some(), "the replica holds {order} at its 201");
    }

    // Replica paused: Redis still decides, but nothing acknowledges the copy in time, so the
    // order is 202 pending rather than a 201 a failover could take back.
    signal(replica, "-STOP");
    let response = app.order(&sku, "unreplicated", 1).await;
    signal(replica, "-CONT");
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["delivery"], "pending");
    assert_eq!(app.redis_sold(&sku).await, 6, "the order stands");

    let after = scrape(&app).await;
    assert_eq!(
        waits(&after, "acknowledged") - waits(&metrics, "acknowledged"),
        5.0
    );
    assert_eq!(waits(&after, "short") - waits(&metrics, "short"), 1.0);
    app.cleanup().await;
}

/// How many clients of the Redis on the other end of `redis` are blocked in `WAIT`.
async fn blocked_in_wait(redis: &mut redis::aio::MultiplexedConnection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .expect("CLIENT LIST");
    clients
        .lines()
        .filter(|client| {
            client.contains(" cmd=wait ")
                && client
                    .split(' ')
                    .any(|field| field.starts_with("flags=") && field.contains('b'))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_slow_to_acknowledge_holds_up_only_the_calls_waiting_for_it() {
    // WAIT blocks the connection it is sent on. It goes on a connection of its own, so while
    // one sale's call waits for a paused replica, other sales' purchases are still decided
    // and reads still answered: the WAIT is still blocked when they are done (on the shared
    // connection they would queue behind it, FLASHSALE_REDIS_WAIT_CONNECTIONS=0).
    let pair = MasterAndReplica::start().await;
    let (master_port, replica) = (pair.master_port, &pair.replica);
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://127.0.0.1:{master_port}");
        s.nats.confirm = Confirm::Redis;
        s.redis.wait_replicas = 1;
        // Far longer than anything below may take: only a WAIT left blocked explains it.
        s.redis.wait_timeout = Duration::from_secs(10);
    })
    .await;
    let app = std::sync::Arc::new(app);
    let (waiting, other) = (unique("waiting"), unique("other"));
    app.create_sale(&waiting, json!({"stock": 10})).await;
    app.create_sale(&other, json!({"stock": 10})).await;
    assert_eq!(app.order(&other, "before", 1).await.status(), 201);
    let mut master = redis_connection(&format!("redis://127.0.0.1:{master_port}")).await;

    signal(replica, "-STOP");
    let first = {
        let app = app.clone();
        let waiting = waiting.clone();
        tokio::spawn(async move { app.order(&waiting, "first", 1).await.status().as_u16() })
    };
    let mut blocked = 0;
    for _ in 0..200 {
        blocked = blocked_in_wait(&mut master).await;
        if blocked > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        blocked, 1,
        "the first sale's WAIT blocks for the paused replica"
    );
    assert_eq!(
        app.redis_sold(&waiting).await,
        1,
        "its purchase was decided"
    );

    // Meanwhile: a read of another sale is answered, and a purchase of it decided.
    assert_eq!(app.sale_json(&other).await["sold"], 1);
    let second = {
        let app = app.clone();
        let other = other.clone();
        tokio::spawn(async move { app.order(&other, "second", 1).await.status().as_u16() })
    };
    let mut decided = false;
    for _ in 0..200 {
        if app.redis_sold(&other).await == 2 {
            decided = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(decided, "the other sale's purchase was decided");
    assert!(
        blocked_in_wait(&mut master).await >= 1 && !first.is_finished(),
        "all of that while the first WAIT was still blocked"
    );

    signal(replica, "-CONT");
    assert_eq!(
        first.await.expect("first purchase"),
        201,
        "replicated once resumed"
    );
    assert_eq!(second.await.expect("second purchase"), 201);
    app.cleanup().await;
}

/// Buys one unit with an Idempotency-Key of its own, again on 503 (what a storefront does
/// while Redis fails over) up to 30 s; the last answer, and the body.
async fn buy_until_decided(app: &TestApp, sku: &str, user: &str) -> (u16, Value) {
    let key = format!("{user}-key");
    for _ in 0..300 {
        let response = app
            .order_with_key(sku, json!({"user_id": user, "quantity": 1}), Some(&key))
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 503 {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user}: 503 for 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_during_a_burst_oversells_and_loses_nothing() {
    const STOCK: u64 = 60;
    let mut cluster = PrivateRedisCluster::start().await;
    let (_process, app) = spawn_metered(on_cluster(&cluster)).await;
    let skus: Vec<String> = (0..6).map(|_| unique("failover")).collect();
    for sku in &skus {
        app.create_sale(sku, json!({"stock": STOCK})).await;
    }
    let victim = cluster.master_of(&app.key(&skus[0], "sale")).await;
    let doomed: Vec<&String> = {
        let mut doomed = Vec::new();
        for sku in &skus {
            if cluster.master_of(&app.key(sku, "sale")).await == victim {
                doomed.push(sku);
            }
        }
        doomed
    };

    let metrics = scrape(&app).await;
    // 150 buyers a sale, all sales at once, 48 in flight; the master of the first sale (and
    // of any other in its slots) dies once a third of its stock is sold.
    let purchases: Vec<(String, String)> = (0..150)
        .flat_map(|i| {
            skus.iter()
                .map(move |sku| (sku.clone(), format!("buyer-{i}")))
        })
        .collect();
    let (answers, sold_at_kill) = tokio::join!(
        futures::stream::iter(&purchases)
            .map(|(sku, user)| {
                let app = &app;
                async move { (sku.clone(), buy_until_decided(app, sku, user).await) }
            })
            .buffer_unordered(48)
            .collect::<Vec<_>>(),
        async {
            let sold = app.wait_until_sold(&skus[0], STOCK / 3).await;
            cluster.kill(victim).await;
            sold
        }
    );
    assert!(
        sold_at_kill < STOCK,
        "the master died mid-burst ({sold_at_kill} sold)"
    );
    let survivors = cluster.alive();
    cluster.wait_until_ok(&survivors).await;
    assert_ne!(
        cluster.master_of(&app.key(&skus[0], "sale")).await,
        victim,
        "a replica took over"
    );

    // The promoted replica's copies were written by another primary: each sale on it was
    // caught up from JetStream before it decided again.
    let rebuilds = sample(&scrape(&app).await, "flashsale_sale_rebuilds_total")
        - sample(&metrics, "flashsale_sale_rebuilds_total");
    assert!(
        rebuilds >= doomed.len() as f64,
        "{rebuilds} rebuilds for {} sales on the dead master",
        doomed.len()
    );

    let mut ids = std::collections::HashSet::new();
    let mut confirmed = Vec::new();
    for (_, (status, body)) in &answers {
        assert!([200, 201, 202, 409].contains(status), "{status} {body}");
        if [200, 201, 202].contains(status) {
            let id = body["order_id"].as_str().expect("order_id").to_owned();
            if *status == 201 {
                assert!(ids.insert(id.clone()), "order id {id} answered twice");
                confirmed.push(id);
            }
        }
    }
    for sku in &skus {
        let sold = app.sale_json(sku).await["sold"].as_u64().expect("sold");
        assert_eq!(
            sold, STOCK,
            "{sku} sells out and no further (doomed: {doomed:?})"
        );
    }
    for sku in &skus {
        app.wait_until_relay_idle(sku).await;
    }
    let messages = delivered(&app.settings).await;
    assert_no_duplicates(&messages);
    let created: std::collections::HashSet<&str> = messages
        .iter()
        .filter(|m| m.event.event == flashsale::domain::event::EventKind::Created)
        .map(|m| m.event.order_id.as_str())
        .collect();
    for id in &confirmed {
        assert!(
            created.contains(id.as_str()),
            "order {id} answered 201 is in the stream"
        );
    }
    assert_eq!(
        created.len() as u64,
        STOCK * skus.len() as u64,
        "one created event per unit sold"
    );
    assert_audit_clean(&app.settings, None).await;
    crate::helpers::nats::delete_stream(&app.settings).await;

    // The master's death in the log: each loss and return once, not a line per attempt
    // (redis-rs alone warned ~90 times per replica).
    let log = crate::helpers::process::process_log(&app);
    assert!(
        log.contains("flashsale listening on"),
        "the process's log is read"
    );
    assert_eq!(log.matches("Failed to connect").count(), 0, "{log}");
    let warnings = log.lines().filter(|line| line.contains("WARN")).count();
    assert!(
        warnings <= 25,
        "{warnings} warnings across one master's death:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_sales_slot_during_a_burst_oversells_nothing() {
    const STOCK: u64 = 2000;
    let cluster = PrivateRedisCluster::start().await;
    let (_process, app) = spawn_metered(on_cluster(&cluster)).await;
    // A sale whose slot lies near the start of its master's range, so that a reshard of the
    // range's first slots moves it without moving thousands.
    let (sku, slot, start) = loop {
        let sku = unique("reshard");
        let (slot, start) = cluster.slot_and_range_start(&app.key(&sku, "sale")).await;
        if slot - start < 20 {
            break (sku, slot, start);
        }
    };
    app.create_sale(&sku, json!({"stock": STOCK})).await;
    let from = cluster.master_of(&app.key(&sku, "sale")).await;
    let mut masters = Vec::new();
    for port in &cluster.ports {
        let master = cluster.master_of(&format!("{{probe-{port}}}")).await;
        if !masters.contains(&master) {
            masters.push(master);
        }
    }
    let to = *masters
        .iter()
        .find(|p| **p != from)
        .expect("another master");
    let metrics = scrape(&app).await;

    let buyers: Vec<String> = (0..3000).map(|i| format!("buyer-{i}")).collect();
    let (answers, (sold_before, sold_after)) = tokio::join!(
        futures::stream::iter(&buyers)
            .map(|user| buy_until_decided(&app, &sku, user))
            .buffer_unordered(16)
            .collect::<Vec<_>>(),
        async {
            let before = app.wait_until_sold(&sku, STOCK / 20).await;
            cluster.reshard(from, to, slot - start + 1).await;
            (before, app.redis_sold(&sku).await)
        }
    );
    println!("sold when the reshard began: {sold_before}, when it ended: {sold_after}");
    assert!(sold_before < STOCK, "the reshard began during the burst");
    assert_eq!(
        cluster.master_of(&app.key(&sku, "sale")).await,
        to,
        "the sale moved"
    );
    let mut ids = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert!([200, 201, 202, 409].contains(status), "{status} {body}");
        if *status == 409 {
            assert_eq!(body["error"], "sold_out", "{body}");
        } else {
            let id = body["order_id"].as_str().expect("order_id").to_owned();
            assert!(ids.insert(id.clone()), "order id {id} answered twice");
        }
    }
    let sold = app.sale_json(&sku).await["sold"].as_u64().expect("sold");
    assert_eq!(sold, STOCK, "sold out, and no further");
    assert_eq!(ids.len() as u64, STOCK, "one answered order per unit");
    let unavailable = sample(
        &scrape(&app).await,
        "flashsale_purchases_total{outcome=\"unavailable\"}",
    ) - sample(
        &metrics,
        "flashsale_purchases_total{outcome=\"unavailable\"}",
    );
    println!(
        "reshard of {} slots during the burst: {unavailable} retryable 503s",
        slot - start + 1
    );
    // The moved copy was written by the old master: caught up from JetStream on the new one.
    let rebuilds = sample(&scrape(&app).await, "flashsale_sale_rebuilds_total")
        - sample(&metrics, "flashsale_sale_rebuilds_total");
    assert!(rebuilds >= 1.0, "the moved sale was caught up");
    app.wait_until_relay_idle(&sku).await;
    let messages = delivered(&app.settings).await;
    assert_no_duplicates(&messages);
    assert_audit_clean(&app.settings, None).await;
    crate::helpers::nats::delete_stream(&app.settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_node_killed_during_a_burst_loses_and_duplicates_nothing() {
    const STOCK: u64 = 600;
    let mut nats = PrivateNatsCluster::start().await;
    let app = spawn_app_with(|s| {
        s.nats.urls = nats.urls();
        s.nats.stream_replicas = 3;
        s.nats.confirm_timeout = Duration::from_secs(2);
    })
    .await;
    let db = crate::helpers::postgres::TestDb::create().await;
    let consumer = crate::helpers::postgres::spawn_consumer(&app.settings, &db);
    let sku = unique("nats-node");
    app.create_sale(&sku, json!({"stock": STOCK})).await;
    // The stream exists, with a leader, once the first order's event is in it (confirmed by
    // its handler, or by the relay when the new stream's election outlasted the answer); its
    // leader is the node to kill.
    let first = app.order(&sku, "first", 1).await.status().as_u16();
    assert!([201, 202].contains(&first), "{first}");
    app.wait_until_relay_idle(&sku).await;
    crate::helpers::nats::wait_for_delivered(&app.settings, 1, Duration::from_secs(30)).await;
    let leader = nats.leader_of(&app.settings.nats.stream).await;

    let buyers: Vec<String> = (0..900).map(|i| format!("buyer-{i}")).collect();
    let (answers, sold_at_kill) = tokio::join!(
        futures::stream::iter(&buyers)
            .map(|user| buy_until_decided(&app, &sku, user))
            .buffer_unordered(32)
            .collect::<Vec<_>>(),
        async {
            let sold = app.wait_until_sold(&sku, STOCK / 4).await;
            nats.kill(leader).await;
            sold
        }
    );
    assert!(
        sold_at_kill < STOCK,
        "the leader died mid-burst ({sold_at_kill} sold)"
    );
    let mut accepted = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert!([201, 202, 409].contains(status), "{status} {body}");
        if *status != 409 {
            accepted.insert(body["order_id"].as_str().expect("order_id").to_owned());
        }
    }
    assert_eq!(
        accepted.len() as u64,
        STOCK - 1,
        "the rest of the stock, once each"
    );
    let pending = answers.iter().filter(|(status, _)| *status == 202).count();
    println!(
        "stream leader n{leader} killed mid-burst: {pending} of {} orders answered 202",
        STOCK - 1
    );
    // The killed node comes back later and catches up from the others.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart(leader).await;

    let messages = crate::helpers::nats::wait_for_delivered(
        &app.settings,
        STOCK as usize,
        Duration::from_secs(60),
    )
    .await;
    assert_no_duplicates(&messages);
    let created: std::collections::HashSet<String> = messages
        .iter()
        .filter(|m| m.event.event == flashsale::domain::event::EventKind::Created)
        .map(|m| m.event.order_id.clone())
        .collect();
    assert_eq!(
        created.len() as u64,
        STOCK,
        "every order in the stream once"
    );
    assert!(
        accepted.is_subset(&created),
        "every accepted order is in the stream"
    );
    let rows = db
        .wait_for_rows(STOCK as usize, Duration::from_secs(60))
        .await;
    let stored: std::collections::HashSet<String> = rows.keys().cloned().collect();
    assert_eq!(
        stored, created,
        "PostgreSQL holds exactly the stream's orders"
    );
    app.wait_until_relay_idle(&sku).await;
    assert_audit_clean(&app.settings, Some(&db.url)).await;
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}
