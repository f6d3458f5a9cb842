//! A sale survives Redis losing its data: each test runs on a redis-server of its own, which
//! it restarts empty (or whose sale keys it deletes) while the service keeps running, and
//! checks that the sale comes back from JetStream exactly as it was.

use std::collections::HashSet;
use std::time::Duration;

use flashsale::support::settings::{Confirm, Settings};
use futures::StreamExt;
use futures::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::nats::{
    Delivered, PrivateNats, assert_no_duplicates, delivered, wait_for_delivered,
};
use crate::helpers::redis_fixtures::LosableRedis;
use crate::helpers::users;
use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_audit_clean, audit, error_of, spawn_app_from, spawn_metered,
    test_settings, unique,
};

/// Settings of an app on `redis`.
fn settings_on(redis: &LosableRedis, confirm: Confirm) -> Settings {
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    settings.nats.confirm = confirm;
    settings
}

/// Settings of an app on `redis` and, when given, a NATS of the test's own.
fn settings_with(redis: &LosableRedis, confirm: Confirm, nats: Option<&PrivateNats>) -> Settings {
    let mut settings = settings_on(redis, confirm);
    if let Some(nats) = nats {
        crate::helpers::use_nats(&mut settings, &nats.url());
    }
    settings
}

/// Buys one unit for each user through `apps` in turn, `concurrency` at a time; returns the
/// answers.
async fn burst(
    apps: &[&TestApp],
    sku: &str,
    buyers: &[String],
    concurrency: usize,
) -> Vec<(u16, Value)> {
    futures::stream::iter(buyers.iter().enumerate())
        .map(|(i, user)| apps[i % apps.len()].buy(sku, user))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

fn ids_with(answers: &[(u16, Value)], statuses: &[u16]) -> HashSet<String> {
    answers
        .iter()
        .filter(|(status, _)| statuses.contains(status))
        .map(|(_, order)| order["order_id"].as_str().expect("order_id").to_owned())
        .collect()
}

fn created(messages: &[Delivered]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.event.event == flashsale::domain::event::EventKind::Created)
        .map(|m| m.event.order_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_sale_sells_exactly_its_stock_across_a_redis_restart() {
    sale_across_a_restart(None).await;
}

/// A sale of 300: 120 sold, Redis restarted empty, 600 more buyers: exactly 300 sold.
pub async fn sale_across_a_restart(nats: Option<&PrivateNats>) {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_with(&redis, Confirm::JetStream, nats)).await;
    let sku = unique("survivor");
    app.create_sale(&sku, json!({"stock": 300, "price": 700}))
        .await;

    let before = burst(&[&app], &sku, &users("before", 120), 64).await;
    assert_eq!(ids_with(&before, &[201]).len(), 120);
    redis.restart_empty_for(&[&app]).await;
    let after = burst(&[&app], &sku, &users("after", 600), 64).await;
    let accepted_after = ids_with(&after, &[201, 202]);
    assert_eq!(accepted_after.len(), 180, "only what was left sells");
    assert!(
        after.iter().all(|(s, _)| [201, 202, 409].contains(s)),
        "every answer decided: {:?}",
        after.iter().map(|(s, _)| *s).collect::<HashSet<_>>()
    );

    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(300), Some(0))
    );
    let messages = wait_for_delivered(&app.settings, 300, Duration::from_secs(30)).await;
    assert_no_duplicates(&messages);
    let ids: HashSet<String> = created(&messages).into_iter().collect();
    assert_eq!(ids.len(), 300, "300 created events, distinct ids");
    let answered: HashSet<String> = ids_with(&before, &[201])
        .union(&accepted_after)
        .cloned()
        .collect();
    assert_eq!(
        ids, answered,
        "the stream holds exactly the orders answered"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_sale_sells_exactly_its_stock_across_a_redis_restart() {
    let mut redis = LosableRedis::start().await;
    let mut settings = settings_on(&redis, Confirm::JetStream);
    settings.recovery.default_stock = 200;
    let app = spawn_app_from(settings).await;
    let kill_all = |n: usize| {
        let app = &app;
        futures::stream::iter(0..n)
            .map(move |_| async move { app.kill(None).await })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
    };

    let before = kill_all(150).await;
    assert_eq!(
        before
            .iter()
            .filter(|(_, text)| text == "提交订单成功")
            .count(),
        150
    );
    redis.restart_empty_for(&[&app]).await;
    let after = kill_all(400).await;
    assert_eq!(
        after
            .iter()
            .filter(|(_, text)| text == "提交订单成功")
            .count(),
        50,
        "the old app's counter ran to 15,268; a restart must not make this one run at all"
    );
    assert!(after.iter().all(|(status, _)| *status == 200));
    assert_eq!(app.redis_sold(&app.default_sku).await, 200);
    let messages = wait_for_delivered(&app.settings, 200, Duration::from_secs(30)).await;
    assert_no_duplicates(&messages);
    assert_eq!(created(&messages).iter().collect::<HashSet<_>>().len(), 200);
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_idempotency_keys_survive_the_loss() {
    let mut redis = LosableRedis::start().await;
    let (_process, app) = spawn_metered(settings_on(&redis, Confirm::JetStream)).await;
    let sku = unique("limits");
    app.create_sale(&sku, json!({"stock": 100, "per_user_limit": 2}))
        .await;
    let body = json!({"user_id": "holder", "quantity": 2});
    let first = app
        .order_with_key(&sku, body.clone(), Some("retry-me"))
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("order");
    assert_eq!(first["delivery"], "confirmed");
    // Two more buyers with keys of their own: every key comes back, not only the first.
    let mut others = Vec::new();
    for buyer in ["second", "third"] {
        let body = json!({"user_id": buyer, "quantity": 1});
        let key = format!("key-{buyer}");
        let order = app.order_with_key(&sku, body.clone(), Some(&key)).await;
        assert_eq!(order.status(), 201);
        let order: Value = order.json().await.expect("order");
        others.push((body, key, order["order_id"].clone()));
    }

    let rebuilds = "flashsale_sale_rebuilds_total";
    let before = sample(&scrape(&app).await, rebuilds);
    redis.restart_empty_for(&[&app]).await;
    let (status, code) = error_of(app.order(&sku, "holder", 1).await).await;
    assert_eq!(
        (status, code.as_str()),
        (409, "user_limit_reached"),
        "the tally came back"
    );
    assert_eq!(
        sample(&scrape(&app).await, rebuilds),
        before + 1.0,
        "the rebuild is counted, once"
    );
    let retry = app.order_with_key(&sku, body, Some("retry-me")).await;
    assert_eq!(
        retry.status(),
        200,
        "the key came back: a replay, not a new order"
    );
    let retry: Value = retry.json().await.expect("order");
    assert_eq!(retry["order_id"], first["order_id"]);
    for (body, key, order_id) in others {
        let retry = app.order_with_key(&sku, body, Some(&key)).await;
        assert_eq!(retry.status(), 200, "{key} came back");
        let retry: Value = retry.json().await.expect("order");
        assert_eq!(retry["order_id"], order_id, "{key}");
    }

    // Only this sale's keys lost this time; the sale comes back the same way.
    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    let keys: Vec<String> = check
        .keys(format!("{}:{{{sku}}}:*", app.namespace))
        .await
        .expect("KEYS");
    let _: () = check.del(keys).await.expect("DEL");
    let (status, code) = error_of(app.order(&sku, "holder", 1).await).await;
    assert_eq!(
        (status, code.as_str()),
        (409, "user_limit_reached"),
        "the tally came back again"
    );
    let other = app.order(&sku, "other", 2).await;
    assert_eq!(other.status(), 201);
    let other: Value = other.json().await.expect("order");
    assert_eq!(other["remaining"], 94, "100 less 2, 1, 1 and 2");
    assert_ne!(other["order_id"], first["order_id"], "ids never repeat");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_the_rebuild_returns_its_units_once() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_on(&redis, Confirm::JetStream)).await;
    let sku = unique("cancel-rebuilt");
    app.create_sale(&sku, json!({"stock": 10, "per_user_limit": 1}))
        .await;
    let orders = burst(&[&app], &sku, &users("c", 5), 5).await;
    let ids: Vec<String> = ids_with(&orders, &[201]).into_iter().collect();
    assert_eq!(ids.len(), 5);

    redis.restart_empty_for(&[&app]).await;
    // The first cancel finds neither the registry nor the sale: both come back from JetStream.
    let cancels = (0..4).map(|_| {
        app.client
            .post(app.url(&format!("/v1/orders/{}/cancel", ids[0])))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    });
    for response in join_all(cancels).await {
        assert_eq!(response.expect("answered").status(), 200);
    }
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(4), Some(6))
    );
    let messages = wait_for_delivered(&app.settings, 6, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 6, "5 created + 1 cancelled");
    assert_no_duplicates(&messages);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_the_loss_counts_what_was_sold() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_on(&redis, Confirm::JetStream)).await;
    let sku = unique("reput");
    app.create_sale(&sku, json!({"stock": 20})).await;
    assert_eq!(
        ids_with(&burst(&[&app], &sku, &users("p", 10), 10).await, &[201]).len(),
        10
    );

    redis.restart_empty_for(&[&app]).await;
    let (status, code) = error_of(app.put_sale(&sku, json!({"stock": 5})).await).await;
    assert_eq!((status, code.as_str()), (409, "stock_below_sold"));
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["stock"].as_u64(), sale["sold"].as_u64()),
        (Some(20), Some(10))
    );
    // The refused PUT left the recorded definition as it was: lose Redis once more.
    redis.restart_empty_for(&[&app]).await;
    assert_eq!(app.sale_json(&sku).await["stock"], 20);
    assert_eq!(app.put_sale(&sku, json!({"stock": 12})).await.status(), 200);
    assert_eq!(app.sale_json(&sku).await["remaining"], 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_a_lost_sale_is_unavailable_not_empty() {
    let mut redis = LosableRedis::start().await;
    let mut nats = PrivateNats::start().await;
    let mut settings = settings_on(&redis, Confirm::JetStream);
    crate::helpers::use_nats(&mut settings, &nats.url());
    settings.recovery.rebuild_timeout = Duration::from_millis(500);
    let app = spawn_app_from(settings).await;
    let sku = unique("no-record");
    app.create_sale(&sku, json!({"stock": 5})).await;
    assert_eq!(
        ids_with(&burst(&[&app], &sku, &users("n", 3), 3).await, &[201]).len(),
        3
    );
    assert_eq!(
        app.kill(None).await.1,
        "提交订单成功",
        "the default sale defined"
    );

    nats.stop().await;
    // Redis still decides while JetStream cannot confirm: 202, the order stands.
    let pending = app.order(&sku, "offline", 1).await;
    assert_eq!(pending.status(), 202);
    let pending: Value = pending.json().await.expect("order");
    assert_eq!(pending["delivery"], "pending");
    assert_eq!(app.kill(None).await, (200, "提交订单成功".to_owned()));

    redis.restart_empty().await;
    app.wait_for_redis().await;
    let _ = app.get("/readyz").await; // reconnects the app's Redis connection
    for _ in 0..3 {
        let (status, code) = error_of(app.order(&sku, "late", 1).await).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "unavailable"),
            "never decided on an empty copy"
        );
    }
    assert_eq!(app.kill(None).await.0, 503);
    nats.restart().await;
    let mut answer = 0;
    for _ in 0..50 {
        answer = app.order(&sku, "late", 1).await.status().as_u16();
        if answer != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answer == 201 || answer == 202,
        "rebuilt once NATS is back: what JetStream recorded counts ({answer})"
    );
    // The order answered 202 was still in the outbox when Redis lost it: gone, and its unit
    // sells again (docs/durability.md says so). The 3 recorded orders count; 2 units are left.
    assert_eq!(app.order(&sku, "later", 1).await.status(), 201);
    let (status, code) = error_of(app.order(&sku, "latest", 1).await).await;
    assert_eq!((status, code.as_str()), (409, "sold_out"), "and no more");
    let messages = wait_for_delivered(&app.settings, 5, Duration::from_secs(10)).await;
    assert!(
        messages
            .iter()
            .all(|m| m.event.order_id != pending["order_id"].as_str().unwrap_or_default()),
        "the unconfirmed order died with Redis"
    );
    app.cleanup().await;
}

/// What a burst with a Redis loss in the middle left.
pub struct BurstWithLoss {
    /// Order ids answered 201.
    answered: HashSet<String>,
    /// Answers 202.
    pending: usize,
    /// What the stream holds afterwards.
    messages: Vec<Delivered>,
    /// The order-id prefix of the copy Redis lost: ids it issued start with it.
    lost_prefix: String,
}

/// A burst on two replicas, Redis lost in the middle of it.
pub async fn loss_during_a_burst(confirm: Confirm, nats: Option<&PrivateNats>) -> BurstWithLoss {
    const STOCK: u64 = 400;
    let mut redis = LosableRedis::start().await;
    let mut settings = settings_with(&redis, confirm, nats);
    // Every purchase asks Redis: the units a loss freed (redis mode) sell in the last round
    // rather than hide behind a replica's sold-out mark, which would outlast a fast round.
    settings.redis.sold_out_recheck = Duration::ZERO;
    let first = spawn_app_from(settings.clone()).await;
    let second = spawn_app_from(settings).await;
    let sku = unique("mid-burst");
    first.create_sale(&sku, json!({"stock": STOCK})).await;
    let lost_prefix = first
        .redis_hget(&sku, "sale", "oid")
        .await
        .expect("the sale has an order-id prefix");

    let buyers = users("mid", 1500);
    let apps = [&first, &second];
    // 16 in flight, not more: the strike must land mid-burst, and on a loaded machine the
    // 5 ms polls below can be starved long enough for 64 in flight to sell out first.
    let (answers, sold_at_loss) = tokio::join!(burst(&apps, &sku, &buyers, 16), async {
        // Let part of the stock sell, then lose everything.
        let sold = first.wait_until_sold(&sku, STOCK / 3).await;
        redis.restart_empty().await;
        sold
    });
    assert!(
        sold_at_loss < STOCK,
        "Redis was lost mid-burst ({sold_at_loss} sold)"
    );
    // Whatever the burst left unsold goes to a last round.
    let rest = burst(&apps, &sku, &users("rest", 600), 64).await;
    let mut answered = ids_with(&answers, &[201]);
    answered.extend(ids_with(&rest, &[201]));
    let pending = ids_with(&answers, &[202]).len() + ids_with(&rest, &[202]).len();

    let sold = first.sale_json(&sku).await["sold"].as_u64().expect("sold");
    first.wait_for_redis().await;
    // Both replicas met the loss; whichever installed the sale second found it there and
    // dropped its staging: nothing is left half-restored, nothing counted twice.
    let staging: Vec<String> = redis::AsyncCommands::keys(
        &mut first.redis.clone(),
        format!("{}:{{{sku}}}:restore:*", first.namespace),
    )
    .await
    .expect("KEYS");
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    assert_ne!(
        first.redis_hget(&sku, "sale", "oid").await.as_deref(),
        Some(lost_prefix.as_str()),
        "the rebuilt sale issues ids under a new prefix"
    );
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for (status, _) in answers.iter().chain(&rest) {
        *statuses.entry(*status).or_default() += 1;
    }
    assert_eq!(
        sold, STOCK,
        "the stock sells out, and no further (answers: {statuses:?})"
    );
    // Every event the rebuilt sale's outbox took is out once the relays are idle.
    first.wait_until_relay_idle(&sku).await;
    let messages = delivered(&first.settings).await;
    assert_no_duplicates(&messages);
    assert_audit_clean(&first.settings, None).await;
    first.cleanup().await;
    BurstWithLoss {
        answered,
        pending,
        messages,
        lost_prefix,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_during_a_burst_on_two_replicas_loses_no_confirmed_order() {
    no_confirmed_order_lost(None).await;
}

/// In `jetstream` mode a loss mid-burst leaves every order answered 201 in the stream, and
/// exactly the stock.
pub async fn no_confirmed_order_lost(nats: Option<&PrivateNats>) {
    let BurstWithLoss {
        answered,
        pending,
        messages,
        ..
    } = loss_during_a_burst(Confirm::JetStream, nats).await;
    println!(
        "jetstream mode: {} orders answered 201, {pending} answered 202",
        answered.len()
    );
    let in_stream: HashSet<String> = created(&messages).into_iter().collect();
    let missing: Vec<&String> = answered.difference(&in_stream).collect();
    assert!(
        missing.is_empty(),
        "orders answered 201 and gone: {missing:?}"
    );
    assert_eq!(
        in_stream.len(),
        400,
        "exactly the stock in the stream ({pending} were 202)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_during_a_burst_in_redis_mode_loses_at_most_the_outbox() {
    let BurstWithLoss {
        answered,
        messages,
        lost_prefix,
        ..
    } = loss_during_a_burst(Confirm::Redis, None).await;
    let in_stream: HashSet<String> = created(&messages).into_iter().collect();
    let missing: Vec<&String> = answered.difference(&in_stream).collect();
    // Orders still in the lost outbox were answered 201 and are gone, and their units sold
    // again: docs/durability.md states this. Only the lost copy's orders may be missing; every order
    // of the rebuilt sale reached the stream, and the stream never holds more than the stock.
    assert!(
        in_stream.len() <= 400,
        "never more events than stock: {}",
        in_stream.len()
    );
    let after_rebuild: Vec<&&String> = missing
        .iter()
        .filter(|id| !id.starts_with(&format!("{lost_prefix}-")))
        .collect();
    assert!(
        after_rebuild.is_empty(),
        "orders of the rebuilt sale missing: {after_rebuild:?}"
    );
    // The stream holds exactly the stock, each of those orders answered; the buyers told yes
    // beyond the stock are exactly the ones whose events Redis lost.
    assert_eq!(in_stream.len(), 400, "the stock sold out in the stream");
    let unanswered: Vec<&String> = in_stream.difference(&answered).collect();
    assert!(
        unanswered.is_empty(),
        "orders in the stream nobody was told of: {unanswered:?}"
    );
    assert_eq!(
        answered.len(),
        400 + missing.len(),
        "oversold by exactly what the outbox lost"
    );
    println!(
        "redis mode: {} orders answered 201 were lost with the outbox",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_exits_1_on_a_difference_nothing_pending_explains() {
    let redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_on(&redis, Confirm::JetStream)).await;
    let sku = unique("audited");
    app.create_sale(&sku, json!({"stock": 10})).await;
    assert_eq!(
        ids_with(&burst(&[&app], &sku, &users("a", 3), 3).await, &[201]).len(),
        3
    );
    app.wait_until_relay_idle(&sku).await;
    assert_audit_clean(&app.settings, None).await;

    // A unit Redis counts that no event records: what a lost event would look like (a
    // whole record, as the scripts write it: the audit refuses a malformed one as corrupt).
    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    let _: () = check
        .hset(
            app.key(&sku, "orders"),
            "1-99",
            "created\n1\n0\n1\n\n\n\n\nghost",
        )
        .await
        .expect("HSET");
    let _: () = check
        .hincr(app.key(&sku, "sale"), "sold", 1)
        .await
        .expect("HINCRBY");
    let (code, table) = audit(&app.settings, None).await;
    assert_eq!(code, 1, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&sku))
        .expect("a row for the sale");
    assert!(row.contains("MISMATCH"), "{row}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_brings_back_a_sale_whose_events_wait_in_its_outbox() {
    let redis = LosableRedis::start().await;
    let mut nats = PrivateNats::start().await;
    let settings = settings_with(&redis, Confirm::Redis, Some(&nats));
    let app = spawn_app_from(settings).await;
    let sku = unique("relay-rebuilt");
    app.create_sale(&sku, json!({"stock": 50})).await;
    assert_eq!(
        ids_with(&burst(&[&app], &sku, &users("early", 10), 10).await, &[201]).len(),
        10
    );
    app.wait_until_relay_idle(&sku).await;
    nats.stop().await;
    assert_eq!(
        ids_with(
            &burst(&[&app], &sku, &users("waiting", 15), 15).await,
            &[201]
        )
        .len(),
        15
    );

    // Redis loses the sale's state but not its outbox, which holds the 15 undelivered events.
    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    for name in ["sale", "orders", "buyers"] {
        let _: () = check.del(app.key(&sku, name)).await.expect("DEL");
    }
    nats.restart().await;
    // No request for the sale: the relay delivers the events and rebuilds the sale from the
    // stream and what its outbox held.
    let mut sold = None;
    // Up to 30 s: the relay's back-off after the outage may still run.
    for _ in 0..300 {
        sold = app.redis_hget(&sku, "sale", "sold").await;
        if sold.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sold.as_deref(), Some("25"), "every order counted once");
    assert_eq!(app.redis_order_ids(&sku).await.len(), 25);
    let messages = wait_for_delivered(&app.settings, 25, Duration::from_secs(20)).await;
    assert_no_duplicates(&messages);
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_leave_redis_and_jetstream_with_the_same_definition() {
    let mut redis = LosableRedis::start().await;
    let settings = settings_on(&redis, Confirm::JetStream);
    let first = spawn_app_from(settings.clone()).await;
    let second = spawn_app_from(settings.clone()).await;
    let sku = unique("raced");
    first.create_sale(&sku, json!({"stock": 10})).await;

    for round in 0..10u64 {
        let (a, b) = tokio::join!(
            first.put_sale(&sku, json!({"stock": 100 + round})),
            second.put_sale(&sku, json!({"stock": 200 + round}))
        );
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        // Whichever PUT JetStream recorded last is the sale in Redis too: a loss changes
        // nothing.
        let live = first.sale_json(&sku).await["stock"].clone();
        redis.restart_empty_for(&[&first, &second]).await;
        assert_eq!(
            first.sale_json(&sku).await["stock"],
            live,
            "round {round}: rebuilt from the same definition Redis held"
        );
    }

    // A PUT overtaken by a later revision changes nothing.
    let store = flashsale::store::Store::new(&settings.redis).expect("store");
    let stale = flashsale::domain::sale::SaleSettings {
        stock: 1,
        per_user_limit: None,
        price: 0,
        starts_at: None,
        ends_at: None,
        payment_timeout_secs: None,
        ended_at: None,
        queue: None,
    };
    let sku_parsed = flashsale::domain::Sku::parse(&sku).expect("sku");
    let defined = flashsale::domain::sale::SaleDefinition::new(&sku_parsed, &stale);
    let (sale, put) = store
        .rebuild()
        .put_sale(&sku_parsed, &stale, Some(&defined), 1)
        .await
        .expect("answered");
    assert_eq!(put, flashsale::domain::sale::PutOutcome::Replaced);
    assert_ne!(sale.stock, 1, "the older revision was not applied");
    first.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_acknowledgement_a_purchase_is_202_and_still_delivered() {
    // A nats-server without JetStream: connected, but nothing acknowledges a publish.
    let port = crate::helpers::free_port();
    let _plain_nats = tokio::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server is installed (scripts/services.sh installs it)");
    crate::helpers::wait_for_port(port).await;
    let redis = LosableRedis::start().await;
    let settings = settings_on(&redis, Confirm::JetStream);
    let recorded = spawn_app_from(settings.clone()).await;
    let mut unacknowledged_settings = settings;
    crate::helpers::use_nats(
        &mut unacknowledged_settings,
        &format!("nats://127.0.0.1:{port}"),
    );
    let unacknowledged = spawn_app_from(unacknowledged_settings).await;
    let sku = unique("unacked");
    recorded.create_sale(&sku, json!({"stock": 5})).await;
    unacknowledged.wait_until_ready().await;

    let response = unacknowledged.order(&sku, "waiting", 1).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["delivery"], "pending");
    assert_eq!(unacknowledged.redis_sold(&sku).await, 1, "Redis decided");
    // The outbox still delivers it (here through the replica whose NATS has JetStream).
    let messages = wait_for_delivered(&recorded.settings, 1, Duration::from_secs(20)).await;
    assert_eq!(
        messages[0].event.order_id,
        order["order_id"].as_str().expect("id")
    );
    recorded.cleanup().await;
}

/// What a replica promoted after a failover holds: the sale as it was some writes ago, under
/// another primary. Redis is restarted empty and given back an older copy of the sale's keys;
/// the first request finds the copy written by another primary and catches the sale up from
/// JetStream before anything is decided: nothing oversold, no order id issued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_another_primary_wrote_is_caught_up_before_anything_is_decided() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_on(&redis, Confirm::Redis)).await;
    let sku = unique("stale-copy");
    app.create_sale(&sku, json!({"stock": 20, "per_user_limit": 2}))
        .await;
    let early = burst(&[&app], &sku, &users("early", 10), 10).await;
    assert_eq!(ids_with(&early, &[201]).len(), 10);
    app.wait_until_relay_idle(&sku).await;
    // The copy a replica had when its master died: 10 sold.
    let copy = app.snapshot().await;
    // What the master acknowledged after that copy was taken, and the relay delivered.
    let late = burst(&[&app], &sku, &users("late", 5), 5).await;
    let late_ids = ids_with(&late, &[201]);
    assert_eq!(late_ids.len(), 5);
    app.wait_until_relay_idle(&sku).await;

    redis.restart_empty_for(&[&app]).await;
    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    for (key, dump) in &copy {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .query_async(&mut check)
            .await
            .expect("RESTORE");
    }
    assert_eq!(app.redis_sold(&sku).await, 10, "the copy is behind");

    // The first read already finds the copy untrustworthy and catches it up.
    assert_eq!(app.sale_json(&sku).await["sold"], 15);
    // A buyer the copy did not know is at the per-user limit: the rebuild counts their units.
    let again = app.order(&sku, "late-0", 2).await;
    assert_eq!(error_of(again).await.1, "user_limit_reached");
    let after = burst(&[&app], &sku, &users("after", 10), 10).await;
    let after_ids = ids_with(&after, &[201]);
    assert_eq!(after_ids.len(), 5, "exactly the 5 units left sell");
    assert!(
        after_ids.is_disjoint(&late_ids),
        "no order id the copy missed is issued again"
    );
    assert_eq!(app.sale_json(&sku).await["sold"], 20);
    app.wait_until_relay_idle(&sku).await;
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

/// A rebuild is a rebuild whichever sale it is: the default sale, bought through `/kill` and
/// lost with Redis, is counted (and logged) like any other, not taken for its first use; and a
/// sale rebuilt sold out (sold = stock) is no oversold fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_default_sale_is_counted_as_a_rebuild() {
    let mut redis = LosableRedis::start().await;
    let mut settings = settings_on(&redis, Confirm::JetStream);
    settings.recovery.default_stock = 1;
    let (_process, app) = spawn_metered(settings).await;
    assert_eq!(
        app.kill(Some("first")).await,
        (200, "提交订单成功".to_owned())
    );
    let rebuilds = "flashsale_sale_rebuilds_total";
    assert_eq!(
        sample(&scrape(&app).await, rebuilds),
        0.0,
        "a first use is no rebuild"
    );
    redis.restart_empty_for(&[&app]).await;
    // A read rebuilds it (a purchase would be answered from this replica's sold-out mark).
    let sale = app.sale_json(&app.default_sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, rebuilds), 1.0);
    assert_eq!(
        sample(&metrics, "flashsale_sale_oversold_folds_total"),
        0.0,
        "sold out is not oversold"
    );
    assert_eq!(
        app.redis_sold(&app.default_sku).await,
        1,
        "the first purchase came back"
    );
    app.cleanup().await;
}

/// A PUT that finds a copy of its sale another primary wrote (`put_sale.lua`: 'sale_missing')
/// does not decide on it: the copy is caught up from JetStream first, then replaced, so the
/// new stock is checked against what was really sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_a_copy_another_primary_wrote_catches_it_up_first() {
    let app = spawn_app_from(test_settings()).await;
    let sku = unique("put-copy");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let sold = burst(&[&app], &sku, &users("b", 6), 6).await;
    assert_eq!(ids_with(&sold, &[201]).len(), 6);
    app.wait_until_relay_idle(&sku).await;
    // The copy now reads as one another primary wrote, and behind: 2 sold.
    let mut redis = app.redis.clone();
    let sale = app.key(&sku, "sale");
    let _: () = redis
        .hset_multiple(&sale, &[("primary", "another-primary/2"), ("sold", "2")])
        .await
        .expect("HSET");
    // 5 is below the 6 really sold: refused, on the caught-up sale.
    let below = app.put_sale(&sku, json!({"stock": 5})).await;
    assert_eq!(error_of(below).await, (409, "stock_below_sold".to_owned()));
    let raised = app.put_sale(&sku, json!({"stock": 12})).await;
    assert_eq!(raised.status(), 200);
    let view: Value = raised.json().await.expect("a sale");
    assert_eq!((&view["stock"], &view["sold"]), (&json!(12), &json!(6)));
    app.cleanup().await;
}

/// A copy another primary wrote is replaced whole (`restore.lua`), not written over: a
/// setting it holds that the sale's definition does not (here a per-user limit) is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_another_primary_wrote_keeps_no_setting_the_definition_lacks() {
    let app = spawn_app_from(test_settings()).await;
    let sku = unique("copy-whole");
    app.create_sale(&sku, json!({"stock": 10})).await;
    assert_eq!(app.order(&sku, "first", 1).await.status(), 201);
    app.wait_until_relay_idle(&sku).await;
    let mut redis = app.redis.clone();
    let _: () = redis
        .hset_multiple(
            app.key(&sku, "sale"),
            &[("primary", "another-primary/2"), ("per_user_limit", "1")],
        )
        .await
        .expect("HSET");
    // Caught up from JetStream first: no limit, as the definition says.
    assert_eq!(app.order(&sku, "first", 1).await.status(), 201);
    assert_eq!(app.redis_hget(&sku, "sale", "per_user_limit").await, None);
    app.cleanup().await;
}

/// A rebuilt sale reads as it did before the loss (`restore.lua`): its window, payment
/// window, limit and price, and its orders counted by where they ended; and it goes on
/// selling under the same rules (a new order awaits payment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_sale_reads_as_before_the_loss_and_keeps_its_rules() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_from(settings_on(&redis, Confirm::JetStream)).await;
    let sku = unique("as-before");
    let now = chrono::Utc::now();
    let window = json!({
        "stock": 10, "price": 250, "per_user_limit": 3, "payment_timeout_secs": 600,
        "starts_at": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
    });
    app.create_sale(&sku, window).await;
    let orders: Vec<Value> = futures::stream::iter(["payer", "canceller", "waiter"])
        .then(|buyer| app.buy_accepted(&sku, buyer))
        .collect()
        .await;
    let id = |i: usize| orders[i]["order_id"].as_str().expect("id").to_owned();
    let paid = crate::helpers::admin_post(
        &app,
        &format!("/v1/orders/{}/pay", id(0)),
        json!({"payment_ref": "psp-1"}),
    )
    .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(app.cancel(&id(1)).await.status(), 200);
    app.wait_until_relay_idle(&sku).await;
    let sale_view = || async {
        let response = crate::helpers::admin_get(&app, &format!("/v1/sales/{sku}")).await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("a sale")
    };
    let before = sale_view().await;
    assert_eq!(before["orders"]["paid"], 1, "{before}");

    redis.restart_empty_for(&[&app]).await;
    let after = sale_view().await;
    assert_eq!(after, before, "the same sale");
    let next = app.buy_accepted(&sku, "newcomer").await;
    assert_eq!(next["status"], "pending_payment", "{next}");
    app.cleanup().await;
}
