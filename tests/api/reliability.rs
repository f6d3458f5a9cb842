//! Nothing comes back from the dead: what a rebuild decides from the clock, a copy that sells
//! past its stock answered with a clear error, and money at the edge of its range.
//!
//! The window in which Redis loses events JetStream does not hold yet is forced, not hoped
//! for: the app's relay holds every event (FLASHSALE_RELAY_HOLD), so what no handler
//! confirmed (an expiry, a cancel while NATS was down) is still in the outbox when Redis
//! restarts empty.

use std::time::Duration;

use flashsale::domain::event::EventKind;
use flashsale::support::settings::{Confirm, Settings};
use serde_json::{Value, json};

use crate::helpers::nats::{PrivateNats, delivered};
use crate::helpers::read_order;
use crate::helpers::redis_fixtures::LosableRedis;
use crate::helpers::{
    ADMIN_TOKEN, TestApp, audit, error_of, spawn_app, spawn_app_from, spawn_app_with,
    test_settings, unique,
};

/// Settings of an app on a Redis and a NATS of the test's own, whose relay holds everything.
fn held_relay(redis: &LosableRedis, nats: &PrivateNats) -> Settings {
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    crate::helpers::use_nats(&mut settings, &nats.url());
    settings.nats.confirm = Confirm::JetStream;
    settings.relay.hold = true;
    settings
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("answered")
}

async fn order_status(app: &TestApp, order_id: &str) -> String {
    let order = read_order(app, order_id).await;
    order["status"].as_str().unwrap_or_default().to_owned()
}

/// The kinds and order ids of the events waiting in the sale's outbox.
async fn outbox(app: &TestApp, sku: &str) -> Vec<(String, String)> {
    app.outbox_event_ids(sku).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_installs_an_overdue_order_expired_and_sells_its_unit_once() {
    let mut redis = LosableRedis::start().await;
    let nats = PrivateNats::start().await;
    let app = spawn_app_from(held_relay(&redis, &nats)).await;
    let sku = unique("overdue");
    app.create_sale(&sku, json!({"stock": 1, "payment_timeout_secs": 1}))
        .await;

    // A wins the unit and does not pay; the sweeper expires the order (its event waits in
    // the held outbox: JetStream holds only A's order.created).
    let (status, first) = app.buy(&sku, "a").await;
    assert_eq!(
        (status, first["delivery"].as_str()),
        (201, Some("confirmed"))
    );
    let first_id = first["order_id"].as_str().expect("order_id").to_owned();
    let mut expired = false;
    for _ in 0..100 {
        if order_status(&app, &first_id).await == "expired" {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "the sweeper expired the unpaid order");
    assert_eq!(
        outbox(&app, &sku).await,
        [("expired".to_owned(), first_id.clone())],
        "the expiry's event waits in the outbox"
    );
    // Later orders get an hour to pay, so nothing else expires during the test.
    let replaced = app
        .put_sale(&sku, json!({"stock": 1, "payment_timeout_secs": 3600}))
        .await;
    assert_eq!(replaced.status(), 200);
    let (status, second) = app.buy(&sku, "b").await;
    assert_eq!(
        (status, second["delivery"].as_str()),
        (201, Some("confirmed"))
    );
    let second_id = second["order_id"].as_str().expect("order_id").to_owned();

    // Redis loses everything, the expiry's event with it.
    redis.restart_empty_for(&[&app]).await;

    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(1), Some(0)),
        "the overdue order came back expired, its unit is B's only: {sale}"
    );
    assert_eq!(order_status(&app, &first_id).await, "expired");
    assert_eq!(order_status(&app, &second_id).await, "pending_payment");
    let (status, third) = app.buy(&sku, "c").await;
    assert_eq!((status, third["error"].as_str()), (409, Some("sold_out")));
    assert_eq!(
        outbox(&app, &sku).await,
        [("expired".to_owned(), first_id.clone())],
        "the rebuild queued the expiry's event again"
    );

    // A relay that delivers: A's expiry reaches JetStream, once, under its usual message id.
    let mut delivering = app.settings.clone();
    delivering.relay.hold = false;
    let relay = spawn_app_from(delivering).await;
    relay.wait_until_relay_idle(&sku).await;
    let expiries: Vec<String> = delivered(&app.settings)
        .await
        .into_iter()
        .filter(|m| m.event.event == EventKind::Expired)
        .map(|m| m.message_id)
        .collect();
    assert_eq!(expiries, [format!("{first_id}.expired")]);
    crate::helpers::assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_sells_past_the_stock_is_refused_clearly_until_mended() {
    let mut redis = LosableRedis::start().await;
    let mut nats = PrivateNats::start().await;
    let mut settings = held_relay(&redis, &nats);
    settings.nats.confirm_timeout = Duration::from_millis(300);
    // Every purchase asks Redis (no sold-out answers from this replica's memory).
    settings.redis.sold_out_recheck = Duration::ZERO;
    let (_process, app) = crate::helpers::spawn_metered(settings).await;
    let sku = unique("inconsistent");
    app.create_sale(&sku, json!({"stock": 1})).await;

    let (status, first) = app.buy(&sku, "a").await;
    assert_eq!(
        (status, first["delivery"].as_str()),
        (201, Some("confirmed"))
    );
    let first_id = first["order_id"].as_str().expect("order_id").to_owned();
    // Cancelled while NATS is down: decided in Redis, its event only in the (held) outbox.
    nats.stop().await;
    let cancelled = admin_post(&app, &format!("/v1/orders/{first_id}/cancel"), None).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("order");
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["delivery"].as_str()),
        (Some("cancelled"), Some("pending")),
        "the cancel says its event is not in JetStream"
    );
    nats.restart().await;
    app.wait_until_ready().await;
    let (status, second) = app.buy(&sku, "b").await;
    assert_eq!(
        (status, second["delivery"].as_str()),
        (201, Some("confirmed"))
    );

    // Redis loses the cancel: JetStream's history holds two live orders for one unit.
    redis.restart_empty_for(&[&app]).await;
    let response = app.order(&sku, "c", 1).await;
    assert_eq!(
        response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(error_of(response).await, (503, "sale_inconsistent".into()));
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(2), Some(0))
    );
    let (code, table) = audit(&app.settings, None).await;
    assert_eq!(code, 1, "the audit reports the oversold sale:\n{table}");
    let scraped = crate::helpers::metrics::scrape(&app).await;
    assert!(
        crate::helpers::metrics::sample(&scraped, "flashsale_sale_oversold_folds_total") == 1.0,
        "the fold is counted, once"
    );

    // The cancel, made again, answers (no 500) and mends the sale.
    let again = admin_post(&app, &format!("/v1/orders/{first_id}/cancel"), None).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("order");
    assert_eq!(
        (again["status"].as_str(), again["remaining"].as_u64()),
        (Some("cancelled"), Some(0))
    );
    let (status, third) = app.buy(&sku, "c").await;
    assert_eq!((status, third["error"].as_str()), (409, Some("sold_out")));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_price_times_the_largest_quantity_is_exact_and_one_more_is_refused() {
    let app = spawn_app().await;
    let sku = unique("price");
    let max_price = flashsale::domain::sale::MAX_PRICE;
    let refused = app
        .put_sale(&sku, json!({"stock": 100, "price": max_price + 1}))
        .await;
    assert_eq!(error_of(refused).await, (400, "invalid_request".into()));
    app.create_sale(&sku, json!({"stock": 100, "price": max_price}))
        .await;
    let response = app.order(&sku, "whale", 100).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["total_amount"].as_u64(), Some(max_price * 100));
    assert_eq!(order["unit_price"].as_u64(), Some(max_price));
    let read = read_order(&app, order["order_id"].as_str().expect("id")).await;
    assert_eq!(read["total_amount"].as_u64(), Some(max_price * 100));
    app.wait_until_relay_idle(&sku).await;
    let events = delivered(&app.settings).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.total_amount, max_price * 100);
    app.cleanup().await;
}

/// `delivered` of every read of the order, on each replica, `rounds` times over ~250 ms.
async fn deliveries_read(apps: &[&TestApp], order_id: &str, rounds: usize) -> Vec<bool> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        for app in apps {
            let order = read_order(app, order_id).await;
            seen.push(order["delivered"].as_bool().expect("delivered"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_once_answered_is_never_undone_by_a_later_read() {
    let first = spawn_app().await;
    let second = spawn_app_from(first.settings.clone()).await;
    let replicas = [&first, &second];
    let sku = unique("delivered");
    first
        .create_sale(&sku, json!({"stock": 10, "payment_timeout_secs": 600}))
        .await;

    let (status, bought) = first.buy(&sku, "a").await;
    assert_eq!(
        (status, bought["delivery"].as_str()),
        (201, Some("confirmed"))
    );
    let paid_id = bought["order_id"].as_str().expect("order_id").to_owned();
    let seen = deliveries_read(&replicas, &paid_id, 10).await;
    assert!(
        seen.iter().all(|d| *d),
        "a confirmed order read undelivered: {seen:?}"
    );

    let paid = admin_post(
        &first,
        &format!("/v1/orders/{paid_id}/pay"),
        Some(json!({"payment_ref": "psp-1"})),
    )
    .await;
    assert_eq!(paid.status(), 200);
    let paid: Value = paid.json().await.expect("order");
    assert_eq!(paid["delivered"], true, "{paid}");
    let seen = deliveries_read(&replicas, &paid_id, 10).await;
    assert!(
        seen.iter().all(|d| *d),
        "a delivered payment read undelivered: {seen:?}"
    );

    let (_, other) = second.buy(&sku, "b").await;
    let cancelled_id = other["order_id"].as_str().expect("order_id").to_owned();
    let cancelled = admin_post(&second, &format!("/v1/orders/{cancelled_id}/cancel"), None).await;
    let cancelled: Value = cancelled.json().await.expect("order");
    assert_eq!(cancelled["delivery"], "confirmed", "{cancelled}");
    let seen = deliveries_read(&replicas, &cancelled_id, 10).await;
    assert!(
        seen.iter().all(|d| *d),
        "a confirmed cancel read undelivered: {seen:?}"
    );
    first.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_resumes_at_once_after_postgres_drops_its_connection() {
    let app = spawn_app().await;
    let db = crate::helpers::postgres::TestDb::create().await;
    // The consumer's connections carry the schema's name, so this test ends its own only.
    let mut db_url = db.url.clone();
    db_url.push_str(&format!("&application_name={}", db.schema));
    let mut consumer_settings = app.settings.clone();
    consumer_settings.consumer.database_url = db_url.into();
    // JetStream hands back a message held unacknowledged only after the ack wait: so long
    // here that a consumer relying on it (a batch not handed back with a NAK when PostgreSQL
    // went) could not pass.
    consumer_settings.consumer.ack_wait = Duration::from_secs(600);
    let consumer = tokio::spawn(flashsale::events::consumer::run(
        consumer_settings,
        std::future::pending(),
    ));
    let sku = unique("pg-drop");
    app.create_sale(&sku, json!({"stock": 1500})).await;
    let buyers = crate::helpers::users("pg", 1500);
    // Bought in four runs, each after a termination: rows keep coming after each (a message
    // carries a script call's orders, so a consumer now keeps up with any one burst).
    let bought = |range: std::ops::Range<usize>| {
        let run_buyers: Vec<String> = buyers[range].to_vec();
        let address = app.address.clone();
        let sku = sku.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            futures::StreamExt::collect::<Vec<u16>>(futures::StreamExt::buffer_unordered(
                futures::stream::iter(run_buyers.into_iter().map(|user| {
                    let (client, address, sku) = (client.clone(), address.clone(), sku.clone());
                    async move {
                        client
                            .post(format!("{address}/v1/sales/{sku}/orders"))
                            .json(&json!({"user_id": user, "quantity": 1}))
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0)
                    }
                })),
                32,
            ))
            .await
        })
    };

    // Three terminations while rows arrive; after each, the time to the next row.
    let admin = crate::helpers::postgres::admin_client().await;
    let mut resumed_after = Vec::new();
    let mut statuses = bought(0..300).await.expect("burst");
    for (at, next) in [(300, 300..800), (800, 800..1200), (1200, 1200..1500)] {
        db.wait_for_rows(at, Duration::from_secs(60)).await;
        let ended: Vec<bool> = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&db.schema],
            )
            .await
            .expect("pg_terminate_backend")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(ended.contains(&true), "the consumer's connection was ended");
        let before = db.count().await;
        let dropped = std::time::Instant::now();
        let run = bought(next);
        db.wait_for_rows(before + 1, Duration::from_secs(60)).await;
        resumed_after.push(dropped.elapsed());
        statuses.extend(run.await.expect("burst"));
    }
    assert!(
        statuses.iter().all(|s| *s == 201),
        "every purchase accepted"
    );
    // Rows came again after each termination within a tenth of the ack wait: its back-off
    // (at most 3.2 s) and the NAK, not JetStream's redelivery.
    println!("consumer resumed after each termination in {resumed_after:?}");
    assert!(
        resumed_after
            .iter()
            .all(|took| *took < Duration::from_secs(60)),
        "a resume waited for the ack wait: {resumed_after:?}"
    );
    let rows = db.wait_for_rows(1500, Duration::from_secs(60)).await;
    assert_eq!(rows.len(), 1500);
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_sale_keeps_its_orders_and_tallies_for_good() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url()).await;
    let sku = unique("rebuilt-for-good");
    app.create_sale(
        &sku,
        json!({"stock": 10, "per_user_limit": 1, "payment_timeout_secs": 3600}),
    )
    .await;
    let (status, _) = app.buy(&sku, "a").await;
    assert_eq!(status, 201);
    redis.restart_empty_for(&[&app]).await;
    assert_eq!(app.sale_json(&sku).await["sold"], 1, "rebuilt");

    // The rebuild stages its keys with an expiry (an abandoned attempt cleans up after
    // itself); the installed sale's keys must not inherit it, or the orders, tallies and
    // deadlines vanish two minutes later and every buyer may buy again.
    let mut check = app.redis.clone();
    for name in ["sale", "orders", "buyers", "deadlines"] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(app.key(&sku, name))
            .query_async(&mut check)
            .await
            .expect("PTTL");
        assert_eq!(ttl, -1, "{name} is kept for good (PTTL {ttl})");
    }
    let (status, refused) = app.buy(&sku, "a").await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (409, Some("user_limit_reached"))
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_as_durable_as_a_first_answer() {
    let mut redis = LosableRedis::start().await;
    let mut nats = PrivateNats::start().await;
    let mut settings = held_relay(&redis, &nats);
    settings.nats.confirm_timeout = Duration::from_millis(300);
    let app = spawn_app_from(settings).await;
    let sku = unique("replay-durable");
    app.create_sale(&sku, json!({"stock": 5})).await;
    // Confirmed once, so the stream exists; then NATS goes: the next order waits in the
    // (held) outbox and is answered 202.
    let (status, _) = app.buy(&sku, "first").await;
    assert_eq!(status, 201);
    nats.stop().await;
    let body = json!({"user_id": "late", "quantity": 1});
    let first = app
        .order_with_key(&sku, body.clone(), Some("late-key"))
        .await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("order");
    let order_id = first["order_id"].as_str().expect("order_id").to_owned();
    nats.restart().await;
    app.wait_until_ready().await;

    // The retry confirms the waiting event before it answers 200.
    let replay = app
        .order_with_key(&sku, body.clone(), Some("late-key"))
        .await;
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.expect("order");
    assert_eq!(
        (replay["order_id"].as_str(), replay["delivery"].as_str()),
        (Some(order_id.as_str()), Some("confirmed"))
    );
    assert!(
        outbox(&app, &sku).await.is_empty(),
        "nothing waits any more"
    );
    // And so it outlives Redis, though the relay never delivered it.
    redis.restart_empty_for(&[&app]).await;
    assert_eq!(order_status(&app, &order_id).await, "created");
    let again = app.order_with_key(&sku, body, Some("late-key")).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("order");
    assert_eq!(
        (again["order_id"].as_str(), again["delivery"].as_str()),
        (Some(order_id.as_str()), Some("confirmed"))
    );
    let created: Vec<String> = delivered(&app.settings)
        .await
        .into_iter()
        .filter(|m| m.event.event == EventKind::Created)
        .map(|m| m.event.order_id)
        .collect();
    assert_eq!(created.iter().filter(|id| **id == order_id).count(), 1);
    app.cleanup().await;
}
