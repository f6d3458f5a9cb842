//! Ended sales leave Redis (`recovery/archive.rs`): after `FLASHSALE_ARCHIVE_AFTER_SECS` a
//! sale that ended and settled has no key left in Redis, yet its orders, its buyers' lists
//! and its final figures still read, from JetStream; a PUT at the archive moment reopens it.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::{
    TestApp, admin_get, admin_post, assert_audit_clean, audit, error_of, free_port, private_redis,
    read_order, spawn_app_with, spawn_metered, test_settings, unique,
};

/// How long after its last change an ended sale is archived in these tests.
const ARCHIVE_AFTER: Duration = Duration::from_secs(1);

/// An app that archives a second after the last change (and remembers Idempotency-Keys for
/// as long), on the topology of the suite, or on the Redis at `redis_url`: a process of its
/// own, so its archive counters count this test's sales and no other's. It lives as long as
/// the returned child.
async fn archiving_app(redis_url: Option<String>) -> (tokio::process::Child, TestApp) {
    let mut settings = test_settings();
    settings.recovery.archive_after = ARCHIVE_AFTER;
    settings.redis.idempotency_ttl = ARCHIVE_AFTER;
    if let Some(url) = redis_url {
        settings.redis.url = url;
    }
    spawn_metered(settings).await
}

/// The process's `flashsale_sale_archives_total` of one result (`archived`, `failed`).
async fn archives(app: &TestApp, result: &str) -> f64 {
    let series = format!("flashsale_sale_archives_total{{result=\"{result}\"}}");
    sample(&scrape(app).await, &series)
}

async fn admin_sale(app: &TestApp, sku: &str) -> Value {
    let response = admin_get(app, &format!("/v1/sales/{sku}")).await;
    assert_eq!(response.status(), 200, "sale {sku}");
    response.json().await.expect("a sale")
}

/// The namespace's keys that belong to one of `skus` (their `{sku}` hash tag).
async fn keys_of(app: &TestApp, skus: &[String]) -> Vec<String> {
    let tags: Vec<String> = skus.iter().map(|sku| format!("{{{sku}}}")).collect();
    let keys = app.namespace_keys().await;
    keys.into_iter()
        .filter(|key| tags.iter().any(|tag| key.contains(tag.as_str())))
        .collect()
}

/// Waits (up to 60 s) until Redis holds no key of `skus`.
async fn wait_until_gone(app: &TestApp, skus: &[String]) {
    let mut left = Vec::new();
    for _ in 0..240 {
        left = keys_of(app, skus).await;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{} keys still in redis after 60 s, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
}

/// How one sale of the big test ends: by its window, by an operator, or sold out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    Window,
    Operator,
    SoldOut,
}

/// One sale's orders by buyer: the paid one, the cancelled one, the expired one, and for a
/// sold-out sale the one that took its last unit.
struct Sold {
    sku: String,
    ending: Ending,
    statuses: HashMap<String, &'static str>,
    paid_buyer_order: String,
}

async fn pay(app: &TestApp, order_id: &str) -> reqwest::Response {
    admin_post(
        app,
        &format!("/v1/orders/{order_id}/pay"),
        json!({"payment_ref": format!("psp-{order_id}")}),
    )
    .await
}

/// Creates a sale, sells it: a paid order, a cancelled one, one left to expire.
async fn open_and_sell(app: &TestApp, sku: String, ending: Ending) -> Sold {
    let stock = if ending == Ending::SoldOut { 2 } else { 10 };
    app.create_sale(
        &sku,
        json!({"stock": stock, "price": 100, "payment_timeout_secs": 1}),
    )
    .await;
    let mut statuses = HashMap::new();
    // With an Idempotency-Key: its key, too, is gone when the sale is.
    let bought = app
        .order_with_key(
            &sku,
            json!({"user_id": "payer"}),
            Some(&format!("key-{sku}")),
        )
        .await;
    assert!([201, 202].contains(&bought.status().as_u16()));
    let bought: Value = bought.json().await.expect("an order");
    let paid = bought["order_id"].as_str().expect("id").to_owned();
    assert_eq!(pay(app, &paid).await.status(), 200);
    statuses.insert(paid.clone(), "paid");
    let cancelled = app.buy_accepted(&sku, "canceller").await["order_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.cancel(&cancelled).await.status(), 200);
    statuses.insert(cancelled, "cancelled");
    let expiring = app.buy_accepted(&sku, "late").await["order_id"]
        .as_str()
        .expect("id")
        .to_owned();
    statuses.insert(expiring, "expired");
    Sold {
        sku,
        ending,
        statuses,
        paid_buyer_order: paid,
    }
}

/// Ends the sale its way, once its unpaid order expired.
async fn end(app: &TestApp, sold: &mut Sold) {
    match sold.ending {
        Ending::Operator => {
            let response = admin_post(app, &format!("/v1/sales/{}/end", sold.sku), json!({})).await;
            assert_eq!(response.status(), 200);
        }
        Ending::Window => {
            let closes = chrono::Utc::now() + chrono::Duration::milliseconds(300);
            let body = json!({"stock": 10, "price": 100, "payment_timeout_secs": 1,
                              "ends_at": closes.to_rfc3339()});
            assert_eq!(app.put_sale(&sold.sku, body).await.status(), 200);
        }
        Ending::SoldOut => {
            let last = app.buy_accepted(&sold.sku, "last").await["order_id"]
                .as_str()
                .expect("id")
                .to_owned();
            assert_eq!(pay(app, &last).await.status(), 200);
            sold.statuses.insert(last, "paid");
        }
    }
}

/// Waits (up to 30 s) until the sale's unpaid order reads expired.
async fn wait_until_expired(app: &TestApp, sale: &Sold) {
    let (order_id, _) = sale
        .statuses
        .iter()
        .find(|(_, status)| **status == "expired")
        .expect("an order left to expire");
    for _ in 0..150 {
        if read_order(app, order_id).await["status"] == "expired" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{order_id} of {} not expired after 30 s", sale.sku);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_ended_sales_leave_redis_and_everything_of_them_still_reads() {
    let (_process, app) = archiving_app(None).await;
    // A second replica of the same service: two archivers race for every sale, unlocked.
    let (_replica_process, replica) = spawn_metered(app.settings.clone()).await;
    let endings = [Ending::Window, Ending::Operator, Ending::SoldOut];
    let sales: Vec<(String, Ending)> = (0..300)
        .map(|i| (unique(&format!("arch{i}")), endings[i % 3]))
        .collect();
    let skus: Vec<String> = sales.iter().map(|(sku, _)| sku.clone()).collect();
    let app = &app;
    let mut sold: Vec<Sold> = futures::stream::iter(sales)
        .map(|(sku, ending)| open_and_sell(app, sku, ending))
        .buffer_unordered(32)
        .collect()
        .await;
    // The unpaid orders expire (payment window 1 s, the sweeper within 200 ms of it).
    futures::stream::iter(&sold)
        .for_each_concurrent(32, |sale| wait_until_expired(app, sale))
        .await;
    futures::stream::iter(sold.iter_mut())
        .for_each_concurrent(32, |sale| end(app, sale))
        .await;

    wait_until_gone(app, &skus).await;
    // Each counted once, by the replica that dropped it (after it left the registry: a
    // moment after its keys).
    let mut archived = 0.0;
    for _ in 0..100 {
        archived = archives(app, "archived").await + archives(&replica, "archived").await;
        if archived >= 300.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(archived, 300.0, "archives counted by the two replicas");

    let checks = futures::stream::iter(&sold).for_each_concurrent(16, |sale| async move {
        let sku = &sale.sku;
        let view = admin_sale(app, sku).await;
        let paid = if sale.ending == Ending::SoldOut { 2 } else { 1 };
        assert_eq!(view["state"], "archived", "{view}");
        assert!(view["archived_at"].is_string(), "{view}");
        assert_eq!(view["sold"], paid, "{view}");
        assert_eq!(
            view["orders"],
            json!({"total": sale.statuses.len(), "created": 0, "pending_payment": 0,
                   "paid": paid, "expired": 1, "cancelled": 1}),
            "{sku}"
        );
        for (order_id, status) in &sale.statuses {
            let order = read_order(app, order_id).await;
            assert_eq!(order["status"], *status, "{order}");
            assert_eq!(order["delivered"], true, "{order}");
        }
        let list = admin_get(app, &format!("/v1/sales/{sku}/orders?user_id=payer")).await;
        assert_eq!(list.status(), 200);
        let list: Value = list.json().await.expect("a list");
        assert_eq!(
            list["orders"][0]["order_id"],
            sale.paid_buyer_order.as_str()
        );
        assert_eq!(list["orders"].as_array().map(Vec::len), Some(1));
    });
    checks.await;

    // Nothing changes an archived sale, and nothing brings it back into Redis.
    let sale = &sold[0];
    let (status, code) = error_of(pay(app, &sale.paid_buyer_order).await).await;
    assert_eq!((status, code.as_str()), (409, "sale_archived"));
    let (status, code) = error_of(app.cancel(&sale.paid_buyer_order).await).await;
    assert_eq!((status, code.as_str()), (409, "sale_archived"));
    let (status, code) = error_of(app.order(&sale.sku, "newcomer", 1).await).await;
    assert_eq!((status, code.as_str()), (409, "sale_archived"));
    let end = admin_post(app, &format!("/v1/sales/{}/reopen", sale.sku), json!({})).await;
    assert_eq!(error_of(end).await, (409, "sale_archived".to_owned()));
    assert!(keys_of(app, &skus).await.is_empty(), "reads wrote nothing");
    // Out of the registry too: the archiver walks it, and would walk them forever.
    let registry = format!("{}:sales", app.namespace);
    for sku in &skus {
        let digest = flashsale::domain::Sku::parse(sku).expect("sku").digest();
        let registered: bool = redis::cmd("HEXISTS")
            .arg(&registry)
            .arg(digest)
            .query_async(&mut app.redis.clone())
            .await
            .expect("HEXISTS");
        assert!(!registered, "{sku} still registered");
    }

    assert_audit_clean(&app.settings, None).await;
    // The audit checked each of them as archived: its kept figures against JetStream.
    let (_, table) = audit(&app.settings, None).await;
    for sale in &sold {
        let paid = if sale.ending == Ending::SoldOut { 2 } else { 1 };
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("{} ", sale.sku)));
        let row = row.unwrap_or_else(|| panic!("{} not audited:\n{table}", sale.sku));
        assert!(row.contains(&format!("archived:{paid}")), "{row}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_at_the_archive_moment_reopens_the_sale_and_loses_no_order() {
    let (_process, app) = archiving_app(None).await;
    let app = &app;
    let skus: Vec<String> = (0..40).map(|i| unique(&format!("race{i}"))).collect();
    // Each sale: one order, then its window closes; it is due for the archive a second after
    // that PUT, and a PUT reopening it comes at a moment spread over that second's edge.
    let outcomes: Vec<(String, String, u16)> = futures::stream::iter(skus.iter().enumerate())
        .map(|(i, sku)| async move {
            app.create_sale(sku, json!({"stock": 5})).await;
            let order = app.buy_accepted(sku, "buyer").await["order_id"]
                .as_str()
                .expect("id")
                .to_owned();
            let closes = chrono::Utc::now() + chrono::Duration::milliseconds(100);
            let close = json!({"stock": 5, "ends_at": closes.to_rfc3339()});
            assert_eq!(app.put_sale(sku, close).await.status(), 200);
            let wait = 700 + (i as u64 * 1_000) / 40;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let reopened = app
                .put_sale(sku, json!({"stock": 5}))
                .await
                .status()
                .as_u16();
            (sku.clone(), order, reopened)
        })
        .buffer_unordered(40)
        .collect()
        .await;

    // Long enough for any archive the reopening did not stop.
    tokio::time::sleep(ARCHIVE_AFTER * 3).await;
    // Before any request touches them (a request would rebuild what was dropped): every
    // reopened sale still has its keys.
    for (sku, _, reopened) in &outcomes {
        let keys = keys_of(app, std::slice::from_ref(sku)).await;
        assert!(
            keys.iter().any(|key| key.ends_with(":sale")),
            "{sku} reopened ({reopened}) but its keys were dropped: {keys:?}"
        );
    }
    let mut kept = 0;
    for (sku, order_id, reopened) in &outcomes {
        let view = app.sale_json(sku).await;
        assert_eq!(view["state"], "open", "{sku} reopened ({reopened}): {view}");
        match reopened {
            // Reopened before the archive: the sale goes on with its order.
            200 => {
                kept += 1;
                assert_eq!(view["sold"], 1, "{view}");
            }
            // Archived first: the PUT started the sku anew.
            201 => assert_eq!(view["sold"], 0, "{view}"),
            other => panic!("PUT answered {other}"),
        }
        assert_eq!(read_order(app, order_id).await["status"], "created");
        let (status, _) = app.buy(sku, "after").await;
        assert_eq!(status, 201, "{sku} sells again");
    }
    println!(
        "{kept} of {} sales reopened before their archive, the rest after",
        outcomes.len()
    );
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

/// `used_memory` of the Redis at `url`.
async fn used_memory(url: &str) -> i64 {
    let mut redis = crate::helpers::redis_connection(url).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_memory_returns_to_its_start_once_the_sales_are_archived() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _redis = private_redis(port).await;
    // Redis 7 keeps a latency histogram per command name, made on the command's first call
    // (some 10 KiB each): a fixed cost of the commands the service uses, not of its sales,
    // which would read here as memory the archive failed to return.
    let mut check = crate::helpers::redis_connection(&url).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("latency-tracking")
        .arg("no")
        .query_async(&mut check)
        .await
        .expect("CONFIG SET latency-tracking no");
    let (_process, app) = archiving_app(Some(url.clone())).await;
    let app = &app;
    app.wait_until_ready().await;
    let start = used_memory(&url).await;

    let skus: Vec<String> = (0..100).map(|i| unique(&format!("mem{i}"))).collect();
    futures::stream::iter(&skus)
        .for_each_concurrent(16, |sku| async move {
            app.create_sale(sku, json!({"stock": 100})).await;
            for buyer in 0..20 {
                app.buy_accepted(sku, &format!("buyer-{buyer}")).await;
            }
        })
        .await;
    let peak = used_memory(&url).await;
    // Open sales stay; ended, they leave.
    futures::stream::iter(&skus)
        .for_each_concurrent(16, |sku| async move {
            let end = admin_post(app, &format!("/v1/sales/{sku}/end"), json!({})).await;
            assert_eq!(end.status(), 200);
        })
        .await;
    wait_until_gone(app, &skus).await;
    // What Redis holds for its clients (query and reply buffers) shrinks in its cron, not at
    // once: the bound is given a few seconds to be met, and is as strict.
    let bound = (peak - start) / 20;
    let mut end = used_memory(&url).await;
    for _ in 0..50 {
        if end - start < bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        end = used_memory(&url).await;
    }
    println!("used_memory: {start} at the start, {peak} with 100 sales of 20 orders, {end} after");
    assert!(
        end - start < bound,
        "{end} bytes after the archive, {start} before: more than 5 % of the {} the sales took",
        peak - start
    );
    app.cleanup().await;
}

/// One step of `lua/archive.lua` on the sale, called directly: its reply's first word.
async fn archive_step(app: &TestApp, sku: &str, args: &[&str]) -> String {
    archive_reply(app, sku, args).await.swap_remove(0)
}

/// A sale with one order, ended, its events delivered, then sealed by `archive.lua` itself
/// (the service's own archiver waits a day): its sku, the order's id and the revision sealed.
async fn sealed_sale(app: &TestApp, prefix: &str) -> (String, String, String) {
    let sku = unique(prefix);
    app.create_sale(&sku, json!({"stock": 5})).await;
    let order = app.buy_accepted(&sku, "buyer").await;
    let order_id = order["order_id"].as_str().expect("id").to_owned();
    let end = admin_post(app, &format!("/v1/sales/{sku}/end"), json!({})).await;
    assert_eq!(end.status(), 200);
    app.wait_until_relay_idle(&sku).await;
    assert_eq!(archive_step(app, &sku, &["seal", "0", "0"]).await, "sealed");
    let revision = app
        .redis_hget(&sku, "sale", "sealed")
        .await
        .expect("sealed");
    (sku, order_id, revision)
}

/// The archiver lifts its own seal (`lua/archive.lua` 'unseal') when the archive is not to
/// be, a later definition having won: only at the revision it sealed, and orders move again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_is_lifted_only_at_the_revision_it_was_made_at() {
    let app = spawn_app_with(|_| {}).await;
    let (sku, order_id, revision) = sealed_sale(&app, "unseal").await;
    let order_id = order_id.as_str();
    let other = (revision.parse::<u64>().expect("a revision") + 1).to_string();
    assert_eq!(archive_step(&app, &sku, &["unseal", &other]).await, "kept");
    assert_eq!(
        app.redis_hget(&sku, "sale", "sealed").await,
        Some(revision.clone())
    );
    assert_eq!(
        error_of(app.cancel(order_id).await).await,
        (409, "sale_archived".to_owned()),
        "still sealed"
    );
    assert_eq!(
        archive_step(&app, &sku, &["unseal", &revision]).await,
        "unsealed"
    );
    assert_eq!(app.redis_hget(&sku, "sale", "sealed").await, None);
    assert_eq!(
        app.cancel(order_id).await.status(),
        200,
        "orders move again"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_sealed_for_its_archive_and_reopened_by_a_put_keeps_its_keys() {
    // The service's own archiver waits a day: this test takes the steps itself, in the order
    // that makes the race (sealed, then a PUT, then the drop the archiver had decided on).
    let app = spawn_app_with(|_| {}).await;
    let (sku, order_id, revision) = sealed_sale(&app, "sealed").await;

    // Sealed: no order moves.
    let order_id = order_id.as_str();
    let (status, code) = error_of(app.cancel(order_id).await).await;
    assert_eq!((status, code.as_str()), (409, "sale_archived"));

    let reopen = admin_post(&app, &format!("/v1/sales/{sku}/reopen"), json!({})).await;
    assert_eq!(reopen.status(), 200, "the PUT path reopens it");
    assert_eq!(archive_step(&app, &sku, &["drop", &revision]).await, "kept");
    assert_eq!(app.redis_sold(&sku).await, 1, "its keys stayed");
    assert_eq!(archive_step(&app, &sku, &["seal", "0", "0"]).await, "live");
    assert_eq!(
        app.cancel(order_id).await.status(),
        200,
        "orders move again"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_definition_does_not_read_holds_up_no_other_archive() {
    let (_process, app) = archiving_app(None).await;
    // All eleven windows close at the same moment, far enough ahead that the definition of
    // the first is made unreadable (as a hand edit of the bucket would leave it) before any
    // of them can be due, however slow this machine is: the archiver meets it at some place
    // in the pass that finds them all due, the others around it.
    let closes = chrono::Utc::now() + chrono::Duration::seconds(8);
    let skus: Vec<String> = (0..11).map(|i| unique(&format!("poison{i}"))).collect();
    for sku in &skus {
        let body = json!({"stock": 5, "ends_at": closes.to_rfc3339()});
        assert_eq!(app.put_sale(sku, body).await.status(), 201, "{sku} created");
        app.buy_accepted(sku, "buyer").await;
    }
    let nats = async_nats::connect(app.settings.nats.urls.as_slice())
        .await
        .expect("nats");
    // (The bucket is made by the first PUT.)
    let bucket = flashsale::recovery::definitions::bucket_name(&app.settings.nats.stream);
    let store = async_nats::jetstream::new(nats)
        .get_key_value(bucket)
        .await
        .expect("the bucket");
    let poisoned = flashsale::domain::Sku::parse(&skus[0]).expect("sku");
    store
        .put(poisoned.digest(), "not a definition".into())
        .await
        .expect("written");
    assert!(
        chrono::Utc::now() < closes,
        "the set-up outran the windows; the test decides nothing"
    );
    // The ten others are archived; the first, counted as failed (each pass that meets it)
    // for the alert that says ended sales stay in Redis, keeps its keys, sealed.
    wait_until_gone(&app, &skus[1..]).await;
    for _ in 0..120 {
        if archives(&app, "failed").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(archives(&app, "failed").await >= 1.0);
    assert_eq!(archives(&app, "archived").await, 10.0);
    assert!(!keys_of(&app, &skus[..1]).await.is_empty());
    assert!(app.redis_hget(&skus[0], "sale", "sealed").await.is_some());
    app.cleanup().await;
}

/// The archive's "settled" guard (`lua/archive.lua`), each half decided alone: an ended sale
/// with an event still in its outbox (NATS down when it was written), or an order still
/// awaiting payment, is not sealed; once that is settled, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sale_is_not_sealed_while_an_event_waits_or_a_payment_is_due() {
    let app = spawn_app_with(|_| {}).await;

    // An event waiting in the outbox: as a purchase leaves it while JetStream is away.
    let sku = unique("unsent");
    app.create_sale(&sku, json!({"stock": 5})).await;
    app.buy_accepted(&sku, "buyer").await;
    let end = admin_post(&app, &format!("/v1/sales/{sku}/end"), json!({})).await;
    assert_eq!(end.status(), 200);
    app.wait_until_relay_idle(&sku).await;
    let mut redis = app.redis.clone();
    let waiting: String = redis::cmd("XADD")
        .arg(app.key(&sku, "outbox"))
        .arg("*")
        .arg("kind")
        .arg("created")
        .arg("events")
        .arg("not yet in JetStream")
        .query_async(&mut redis)
        .await
        .expect("XADD");
    assert_eq!(archive_step(&app, &sku, &["seal", "0", "0"]).await, "live");
    assert!(app.redis_hget(&sku, "sale", "sealed").await.is_none());
    let _: i64 = redis::cmd("XDEL")
        .arg(app.key(&sku, "outbox"))
        .arg(&waiting)
        .query_async(&mut redis)
        .await
        .expect("XDEL");
    assert_eq!(
        archive_step(&app, &sku, &["seal", "0", "0"]).await,
        "sealed",
        "settled once the outbox is empty"
    );

    // An order awaiting payment (its deadline a minute away).
    let due = unique("due");
    app.create_sale(&due, json!({"stock": 5, "payment_timeout_secs": 60}))
        .await;
    let order = app.buy_accepted(&due, "buyer").await;
    assert_eq!(order["status"], "pending_payment");
    let end = admin_post(&app, &format!("/v1/sales/{due}/end"), json!({})).await;
    assert_eq!(end.status(), 200);
    app.wait_until_relay_idle(&due).await;
    assert_eq!(archive_step(&app, &due, &["seal", "0", "0"]).await, "live");
    let order_id = order["order_id"].as_str().expect("id");
    assert_eq!(app.cancel(order_id).await.status(), 200);
    app.wait_until_relay_idle(&due).await;
    assert_eq!(
        archive_step(&app, &due, &["seal", "0", "0"]).await,
        "sealed",
        "settled once no payment is due"
    );
    app.cleanup().await;
}

/// `lua/archive.lua`'s whole reply to a step.
async fn archive_reply(app: &TestApp, sku: &str, args: &[&str]) -> Vec<String> {
    let script = redis::Script::new(&crate::helpers::lua_source("archive.lua"));
    let mut call = script.prepare_invoke();
    for name in [
        "sale",
        "orders",
        "buyers",
        "outbox",
        "deadlines",
        "relay",
        "queue:early",
        "queue:places",
    ] {
        call.key(app.key(sku, name));
    }
    for arg in args {
        call.arg(*arg);
    }
    let reply: Vec<redis::Value> = call
        .invoke_async(&mut app.redis.clone())
        .await
        .expect("EVALSHA archive.lua");
    reply
        .iter()
        .map(|value| redis::from_redis_value_ref::<String>(value).expect("a word or a number"))
        .collect()
}

/// Sets fields of the sale's hash directly: the state a script call is to meet.
async fn set_sale_fields(app: &TestApp, sku: &str, fields: &[(&str, String)]) {
    let mut command = redis::cmd("HSET");
    command.arg(app.key(sku, "sale"));
    for (field, value) in fields {
        command.arg(*field).arg(value);
    }
    let _: i64 = command
        .query_async(&mut app.redis.clone())
        .await
        .expect("HSET");
}

/// Redis's clock in ms, as the scripts read it.
async fn redis_now_ms(app: &TestApp) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut app.redis.clone())
        .await
        .expect("TIME");
    secs * 1000 + micros / 1000
}

/// When `archive.lua` seals, step by step on sales set up field by field: an ended, settled
/// sale waits the delay after its end and after its last change, and the Idempotency-Keys'
/// lifetime after that change; a copy another primary wrote is not sealed but rebuilt first;
/// an open sale is live whatever it counts. Each case fails with its mutant of the script
/// (`mutation/lua.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_waits_its_delays_and_refuses_a_copy_from_elsewhere_or_an_open_sale() {
    let app = spawn_app_with(|_| {}).await;
    let sku = unique("delays");
    app.create_sale(&sku, json!({"stock": 5})).await;
    app.wait_until_relay_idle(&sku).await;
    let (minute, hour) = (60_000, 3_600_000);
    let now = redis_now_ms(&app).await;

    // Ended by its window 30 s ago, changed an hour ago: the delay runs from the end.
    set_sale_fields(
        &app,
        &sku,
        &[
            ("ends_at", (now - 30_000).to_string()),
            ("changed", (now - hour).to_string()),
        ],
    )
    .await;
    assert_eq!(
        archive_step(&app, &sku, &["seal", &minute.to_string(), "0"]).await,
        "waiting"
    );
    // Ended an hour ago, changed 30 s ago: the delay runs from the change.
    set_sale_fields(
        &app,
        &sku,
        &[
            ("ends_at", (now - hour).to_string()),
            ("changed", (now - 30_000).to_string()),
        ],
    )
    .await;
    assert_eq!(
        archive_step(&app, &sku, &["seal", &minute.to_string(), "0"]).await,
        "waiting"
    );
    // Changed two minutes ago, keys living ten: the last key expires first.
    set_sale_fields(&app, &sku, &[("changed", (now - 2 * minute).to_string())]).await;
    assert_eq!(
        archive_step(
            &app,
            &sku,
            &["seal", &minute.to_string(), &(10 * minute).to_string()]
        )
        .await,
        "waiting"
    );

    // A copy another primary wrote, ended and settled: not sealed, rebuilt first.
    let primary = app
        .redis_hget(&sku, "sale", "primary")
        .await
        .expect("primary");
    set_sale_fields(&app, &sku, &[("primary", "0000/2".to_owned())]).await;
    assert_eq!(
        archive_step(&app, &sku, &["seal", "0", "0"]).await,
        "sale_missing"
    );
    set_sale_fields(&app, &sku, &[("primary", primary)]).await;

    // Open (no end, stock left) with orders paid: live.
    let open = unique("open");
    app.create_sale(&open, json!({"stock": 5})).await;
    set_sale_fields(&app, &open, &[("n_paid", "1".to_owned())]).await;
    assert_eq!(archive_step(&app, &open, &["seal", "0", "0"]).await, "live");

    // With no delay left, the ended sale is sealed.
    assert_eq!(
        archive_step(&app, &sku, &["seal", "0", "0"]).await,
        "sealed"
    );
    app.cleanup().await;
}

/// A seal reports the sale's final figures: its orders (not its buyers), and each ending
/// count, 0 when none ended so; and a drop takes every key of the sale, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_reports_the_final_figures_and_a_drop_takes_every_key_once() {
    let app = spawn_app_with(|_| {}).await;
    // One buyer, two orders, one cancelled: 2 orders, 0 paid, 0 expired, 1 cancelled.
    let two = unique("figures");
    app.create_sale(&two, json!({"stock": 5})).await;
    app.buy_accepted(&two, "buyer").await;
    let second = app.buy_accepted(&two, "buyer").await;
    let cancelled = app.cancel(second["order_id"].as_str().expect("id")).await;
    assert_eq!(cancelled.status(), 200);
    // One order, nothing ended: 1, 0, 0, 0.
    let one = unique("figures");
    app.create_sale(&one, json!({"stock": 5})).await;
    app.buy_accepted(&one, "buyer").await;
    for sku in [&two, &one] {
        let end = admin_post(&app, &format!("/v1/sales/{sku}/end"), json!({})).await;
        assert_eq!(end.status(), 200);
        app.wait_until_relay_idle(sku).await;
    }
    // { 'sealed', rev, stock, sold, orders, paid, expired, cancelled }
    let figures = |reply: Vec<String>| reply[2..].to_vec();
    assert_eq!(
        figures(archive_reply(&app, &two, &["seal", "0", "0"]).await),
        ["5", "1", "2", "0", "0", "1"]
    );
    assert_eq!(
        figures(archive_reply(&app, &one, &["seal", "0", "0"]).await),
        ["5", "1", "1", "0", "0", "0"]
    );

    // A copy another primary wrote, with an order awaiting payment, dropped (the archiver
    // asks that only for a sale whose definition says archived): every key goes.
    let copy = unique("copy");
    app.create_sale(&copy, json!({"stock": 5, "payment_timeout_secs": 600}))
        .await;
    app.buy_accepted(&copy, "buyer").await;
    app.wait_until_relay_idle(&copy).await;
    set_sale_fields(&app, &copy, &[("primary", "0000/2".to_owned())]).await;
    assert_eq!(archive_step(&app, &copy, &["drop", "0"]).await, "dropped");
    for name in ["sale", "orders", "buyers", "outbox", "deadlines"] {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(app.key(&copy, name))
            .query_async(&mut app.redis.clone())
            .await
            .expect("EXISTS");
        assert_eq!(exists, 0, "{name} left after the drop");
    }
    assert_eq!(
        archive_step(&app, &copy, &["drop", "0"]).await,
        "gone",
        "dropped once"
    );
    app.cleanup().await;
}
