//! What a purchase costs Redis, counted by Redis itself (`INFO commandstats`) on a private
//! redis-server, so no other test's traffic is in the figures: one EVALSHA per purchase, and
//! none at all once a sale is known to be sold out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

use flashsale::support::settings::Confirm;

use crate::helpers::nats::PrivateNats;
use crate::helpers::redis_fixtures::{command_calls, delta};
use crate::helpers::{
    TestApp, error_of, free_port, private_redis, redis_connection, spawn_app_from, spawn_app_with,
    test_settings, unique,
};
use crate::helpers::{buy_each, users};

/// An app on its own redis-server and nats-server. The test defines its sales, then stops
/// NATS ([`Isolated::stop_nats`]) so that the relay sends Redis only its status reads and
/// nothing else; purchases are then confirmed by Redis alone.
struct Isolated {
    app: TestApp,
    _redis: tokio::process::Child,
    nats: PrivateNats,
    check: MultiplexedConnection,
}

impl Isolated {
    async fn start(recheck: Duration) -> Self {
        let port = free_port();
        let redis = private_redis(port).await;
        let url = format!("redis://127.0.0.1:{port}");
        let nats = PrivateNats::start().await;
        let nats_url = nats.url();
        let app = spawn_app_with(|s| {
            s.redis.url = url.clone();
            crate::helpers::use_nats(s, &nats_url);
            s.redis.sold_out_recheck = recheck;
            s.nats.confirm = Confirm::Redis;
        })
        .await;
        let check = redis_connection(&url).await;
        Self {
            app,
            _redis: redis,
            nats,
            check,
        }
    }

    async fn stop_nats(&mut self) {
        self.nats.stop().await;
    }
}

/// `n` purchases of new buyers, `in_flight` at a time, on a new sale of an isolated app (NATS
/// stopped, so nothing else reaches Redis but the relay's status reads): their statuses, and
/// Redis's command counts before and after.
async fn counted_purchases(
    sale: Value,
    n: usize,
    in_flight: usize,
) -> (Vec<u16>, HashMap<String, u64>, HashMap<String, u64>) {
    let mut isolated = Isolated::start(Duration::from_secs(1)).await;
    let sku = unique("counted");
    isolated.app.create_sale(&sku, sale).await;
    isolated.stop_nats().await;
    let Isolated { app, check, .. } = &mut isolated;
    let before = command_calls(check).await;
    // With several in flight, Redis holds every write for the first second: the first call
    // waits, and the purchases arriving meanwhile queue behind it and share the next (group
    // commit), however fast or slow this machine is.
    if in_flight > 1 {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1000)
            .arg("WRITE")
            .query_async(check)
            .await
            .expect("CLIENT PAUSE");
    }
    let statuses = statuses(buy_each(app, &sku, &users("u", n), in_flight).await);
    let after = command_calls(check).await;
    (statuses, before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_at_most_one_redis_round_trip_and_a_crowd_shares_them() {
    let (statuses, before, after) = counted_purchases(json!({"stock": 10_000}), 300, 64).await;

    assert!(statuses.iter().all(|s| *s == 201));
    let calls = delta(&before, &after, "evalsha");
    // 64 buyers at a time on one sale: the 63 that arrived while the first call waited out
    // Redis's pause shared one call (group commit), so at most 300 - 62.
    assert!(
        (3..=238).contains(&calls),
        "{calls} EVALSHA for 300 concurrent purchases"
    );
    // Whatever else Redis ran came from inside the script (counted by Redis too) or from the
    // relay's status reads; the purchase path sent nothing else.
    let script_or_relay = [
        "hmget",
        "hget",
        "hincrby",
        "hset",
        "xadd",
        "time",
        "get",
        "set",
        "lpush", // purchase.lua
        "hvals",
        "xlen",
        "xrange",
        "info",
        "client|pause", // relay status; this test's own
        "sadd",
        "smembers",
        "srem",   // the relay's index of waiting outboxes (once per pass)
        "zrange", // the expiry sweeper's look at the deadline index (every 200 ms)
    ];
    let others: Vec<(&String, u64)> = after
        .keys()
        .filter(|name| !script_or_relay.contains(&name.as_str()) && name.as_str() != "evalsha")
        .map(|name| (name, delta(&before, &after, name)))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    assert!(
        others.is_empty(),
        "no other command per purchase: {others:?}"
    );
    // The batch is the unit: one outbox entry a call (every call of this sale made orders),
    // the sale's counters written once a call, never incremented an order at a time.
    assert_eq!(
        delta(&before, &after, "xadd"),
        calls,
        "one outbox entry per script call"
    );
    assert_eq!(
        delta(&before, &after, "hincrby"),
        0,
        "counters set once a call"
    );
    assert_eq!(
        delta(&before, &after, "hset"),
        3 * calls,
        "one HSET a call each for the orders, the buyers and the sale"
    );
    assert_eq!(
        delta(&before, &after, "zadd"),
        0,
        "a sale without a payment window writes no deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_purchase_is_one_round_trip_at_once() {
    // One buyer at a time: each purchase finds no call in flight and goes at once, alone.
    let (statuses, before, after) = counted_purchases(json!({"stock": 10_000}), 40, 1).await;
    assert!(statuses.iter().all(|s| *s == 201));
    assert_eq!(delta(&before, &after, "evalsha"), 40, "one EVALSHA each");
    assert_eq!(delta(&before, &after, "xadd"), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_window_adds_an_index_write_per_sale_not_per_purchase() {
    let sale = json!({"stock": 10_000, "payment_timeout_secs": 600});
    let (statuses, before, after) = counted_purchases(sale, 300, 32).await;
    assert!(statuses.iter().all(|s| *s == 201));
    let calls = delta(&before, &after, "evalsha");
    assert!(calls <= 300, "one EVALSHA at most each");
    // One ZADD of the call's deadlines inside each call; outside it, only a call whose orders
    // became the sale's earliest deadline (the first) writes the cross-sale index.
    let index_writes = delta(&before, &after, "zadd") - calls;
    assert!(
        (1..=5).contains(&index_writes),
        "{index_writes} index writes for 300 purchases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_sale_is_answered_without_redis() {
    let mut isolated = Isolated::start(Duration::from_secs(600)).await;
    let sku = unique("fast-path");
    isolated.app.create_sale(&sku, json!({"stock": 5})).await;
    // The default sale is defined on its first use, which needs JetStream.
    assert_eq!(isolated.app.kill(None).await.0, 200);
    isolated.stop_nats().await;
    let Isolated { app, check, .. } = &mut isolated;
    let sold = statuses(buy_each(app, &sku, &users("u", 6), 32).await);
    assert_eq!(sold.iter().filter(|s| **s == 201).count(), 5);

    let before = command_calls(check).await;
    let statuses = statuses(buy_each(app, &sku, &users("u", 500), 32).await);
    for _ in 0..50 {
        assert_eq!(app.kill(None).await.0, 200);
    }
    let after = command_calls(check).await;
    assert!(statuses.iter().all(|s| *s == 409), "all sold out");
    let (status, code) = error_of(app.order(&sku, "late", 1).await).await;
    assert_eq!((status, code.as_str()), (409, "sold_out"));
    // The /kill calls above: the default sale is not sold out, so they do reach Redis.
    assert_eq!(
        delta(&before, &after, "evalsha"),
        50,
        "the 500 sold-out answers cost no EVALSHA"
    );

    // An Idempotency-Key still reaches Redis: it may name an order to replay.
    let replay = app
        .order_with_key(&sku, json!({"user_id": "u0"}), Some("k"))
        .await;
    assert_eq!(error_of(replay).await, (409, "sold_out".to_owned()));
    assert_eq!(delta(&after, &command_calls(check).await, "evalsha"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_unit_is_sold_again_on_another_replica_long_before_its_mark_lapses() {
    let mut settings = test_settings();
    // Marks would otherwise last ten minutes: only the change notice can reopen the sale.
    settings.redis.sold_out_recheck = Duration::from_secs(600);
    let first = spawn_app_from(settings.clone()).await;
    let second = spawn_app_from(settings).await;
    let sku = unique("reopen");
    first.create_sale(&sku, json!({"stock": 1})).await;
    let order: Value = first
        .order(&sku, "first", 1)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(
        second.order(&sku, "second", 1).await.status(),
        409,
        "second replica marks it sold out"
    );

    let cancelled = first.cancel(order["order_id"].as_str().expect("id")).await;
    assert_eq!(cancelled.status(), 200);
    // Only the cancel's notice can reopen the other replica's mark before its ten minutes:
    // selling there within a generous 30 s proves the notice (how soon is a benchmark's).
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.order(&sku, "second", 1).await.status() != 201 {
        assert!(
            Instant::now() < deadline,
            "the freed unit never sold on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.cleanup().await;
}

/// The replica that cancels drops its own sold-out mark before it answers: it needs no
/// notice (here NATS, which carries them, is down, and marks would last ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_unit_sells_at_once_on_the_replica_that_cancelled_it() {
    let mut isolated = Isolated::start(Duration::from_secs(600)).await;
    let sku = unique("own-mark");
    isolated.app.create_sale(&sku, json!({"stock": 1})).await;
    let Isolated { app, .. } = &isolated;
    let order: Value = app
        .order(&sku, "first", 1)
        .await
        .json()
        .await
        .expect("order");
    let (status, code) = error_of(app.order(&sku, "second", 1).await).await;
    assert_eq!((status, code.as_str()), (409, "sold_out"));
    isolated.stop_nats().await;
    let Isolated { app, .. } = &isolated;
    let cancelled = app.cancel(order["order_id"].as_str().expect("id")).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(app.order(&sku, "second", 1).await.status(), 201);
}

fn statuses(answers: Vec<(u16, Value)>) -> Vec<u16> {
    answers.into_iter().map(|(status, _)| status).collect()
}
