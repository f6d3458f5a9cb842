//! The order lifecycle: a payment window (`payment_timeout_secs`), `POST /v1/orders/{id}/pay`,
//! the expiry sweeper, and the paid / expired events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::DateTime;
use flashsale::domain::event::EventKind;
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::nats::{
    Delivered, assert_each_order_in_order, assert_no_duplicates, delivered,
};
use crate::helpers::postgres::{TestDb, spawn_consumer};
use crate::helpers::process::spawn_process;
use crate::helpers::redis_fixtures::LosableRedis;
use crate::helpers::redis_fixtures::{command_calls, delta};
use crate::helpers::users;
use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_audit_clean, error_of, spawn_app, spawn_app_from, spawn_app_with,
    test_settings, unique,
};
use crate::helpers::{order_id_of_field, read_order};

async fn pay(app: &TestApp, order_id: &str, payment_ref: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/orders/{order_id}/pay")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "payment_ref": payment_ref }))
        .send()
        .await
        .expect("pay answered")
}

async fn cancel(app: &TestApp, order_id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/orders/{order_id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("cancel answered")
}

fn millis(time: &Value) -> i64 {
    DateTime::parse_from_rfc3339(time.as_str().expect("an RFC 3339 time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Moments spread at random (xorshift; the seed is printed so a failure can be replayed).
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let seed = now_ms() as u64 | 1;
        println!("random seed {seed}");
        Self(seed)
    }

    /// A number in 0..n.
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as i64
    }
}

/// order_id → status, as Redis holds the sale's orders.
async fn redis_statuses(app: &TestApp, sku: &str) -> HashMap<String, String> {
    let mut redis = app.redis.clone();
    let records: HashMap<String, String> = redis
        .hgetall(app.key(sku, "orders"))
        .await
        .expect("HGETALL");
    let oid = app.redis_hget(sku, "sale", "oid").await.unwrap_or_default();
    records
        .into_iter()
        .map(|(field, record)| {
            let status = record.lines().next().unwrap_or_default().to_owned();
            (order_id_of_field(&oid, &field), status)
        })
        .collect()
}

/// Waits (up to `timeout`) until no order of the sale awaits payment.
async fn wait_until_none_pending(app: &TestApp, sku: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pending = redis_statuses(app, sku)
            .await
            .values()
            .filter(|s| *s == "pending_payment")
            .count();
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} orders still pending_payment after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the stream holds `expected` events of the sale.
async fn sale_events(app: &TestApp, sku: &str, expected: usize) -> Vec<Delivered> {
    for _ in 0..200 {
        let events: Vec<Delivered> = delivered(&app.settings)
            .await
            .into_iter()
            .filter(|m| m.event.sku == sku)
            .collect();
        if events.len() >= expected {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {expected} events of {sku} reached the stream in 20 s");
}

/// For each order, the kinds of its events in stream order.
fn kinds_by_order(events: &[Delivered]) -> HashMap<String, Vec<EventKind>> {
    let mut kinds: HashMap<String, Vec<EventKind>> = HashMap::new();
    for m in events {
        kinds
            .entry(m.event.order_id.clone())
            .or_default()
            .push(m.event.event);
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_orders_end_paid_or_expired_exactly_once() {
    let db = TestDb::create().await;
    // A process of its own: the transition counts below are this test's alone.
    let (_process, app) = crate::helpers::spawn_metered(crate::helpers::test_settings()).await;
    let consumer = spawn_consumer(&app.settings, &db);
    let sku = unique("window");
    let put = app
        .put_sale(
            &sku,
            json!({"stock": 1000, "price": 5, "payment_timeout_secs": 2}),
        )
        .await;
    assert_eq!(put.status(), 201);
    let sale: Value = put.json().await.expect("sale");
    assert_eq!(sale["payment_timeout_secs"], 2);

    let orders = buy_all_accepted(&app, &sku, &users("w", 1000)).await;
    for order in &orders {
        assert_eq!(order["status"], "pending_payment");
        assert_eq!(
            millis(&order["pay_by"]) - millis(&order["created_at"]),
            2000,
            "pay_by is created_at plus the window: {order}"
        );
    }

    // Half are paid at random moments; a fifth of those within ±50 ms of pay_by.
    let mut random = Random::seeded();
    let payments: Vec<(String, i64)> = orders
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(i, order)| {
            let (created, pay_by) = (millis(&order["created_at"]), millis(&order["pay_by"]));
            let at = if i % 5 == 0 {
                pay_by - 50 + random.below(101)
            } else {
                created + random.below(pay_by - 300 - created)
            };
            (order["order_id"].as_str().expect("id").to_owned(), at)
        })
        .collect();
    // (order id, status, body, sent at, answered at), times in ms on this host's clock, which
    // is Redis's clock too (the same machine).
    let answers: Vec<(String, u16, Value, i64, i64)> = futures::stream::iter(&payments)
        .map(|(id, at)| {
            let app = &app;
            async move {
                let wait = (*at - now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let sent_at = now_ms();
                let response = pay(app, id, &format!("psp-{id}")).await;
                let answered_at = now_ms();
                let status = response.status().as_u16();
                let body = response.json().await.expect("JSON");
                (id.clone(), status, body, sent_at, answered_at)
            }
        })
        .buffer_unordered(payments.len())
        .collect()
        .await;

    wait_until_none_pending(&app, &sku, Duration::from_secs(10)).await;
    let statuses = redis_statuses(&app, &sku).await;
    assert_eq!(statuses.len(), 1000);
    let paid: HashSet<&String> = statuses
        .iter()
        .filter(|(_, s)| *s == "paid")
        .map(|(id, _)| id)
        .collect();
    let expired = statuses.values().filter(|s| *s == "expired").count();
    assert_eq!(paid.len() + expired, 1000, "every order paid or expired");
    // Decided by the clock: a payment is accepted only up to pay_by, and refused only once
    // pay_by had passed before the answer came (1 ms: the clock's resolution).
    let pay_by: HashMap<&str, i64> = orders
        .iter()
        .map(|o| (o["order_id"].as_str().expect("id"), millis(&o["pay_by"])))
        .collect();
    for (id, status, body, sent_at, answered_at) in &answers {
        match status {
            200 => {
                assert!(
                    paid.contains(id),
                    "{id} answered paid but is {}",
                    statuses[id]
                );
                assert_eq!(body["status"], "paid");
                let paid_at = millis(&body["paid_at"]);
                assert!(paid_at <= pay_by[id.as_str()], "paid after pay_by: {body}");
                assert!((sent_at - 1..=answered_at + 1).contains(&paid_at), "{body}");
            }
            409 => {
                assert_eq!(body["error"], "order_expired", "{body}");
                assert_eq!(statuses[id], "expired");
                assert!(
                    *answered_at + 1 > pay_by[id.as_str()],
                    "refused before pay_by"
                );
            }
            other => panic!("pay of {id} answered {other}: {body}"),
        }
    }
    let paid_answers = answers.iter().filter(|a| a.1 == 200).count();
    assert_eq!(paid.len(), paid_answers, "only an answered payment pays");
    assert!(!paid.is_empty() && expired > 0, "both ends occur");

    // The units returned are the expired units, and they sell again.
    let sale = app.sale_json(&sku).await;
    assert_eq!(sale["sold"], paid.len() as u64);
    assert_eq!(sale["remaining"], expired as u64);

    // Each expiry within 1 s of pay_by: the record keeps the outbox id (Redis's clock, ms) of
    // the expired event.
    let mut redis = app.redis.clone();
    let records: HashMap<String, String> = redis
        .hgetall(app.key(&sku, "orders"))
        .await
        .expect("HGETALL");
    // Never before pay_by; how long after is the sweeper's lag, a figure for
    // flashsale_expiry_lag_seconds and the benchmarks, not an assertion.
    let mut latest = 0;
    for record in records.values().filter(|r| r.starts_with("expired\n")) {
        let fields: Vec<&str> = record.split('\n').collect();
        let pay_by: i64 = fields[4].parse().expect("pay_by");
        let expired_at: i64 = fields[6]
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("event id");
        assert!(
            expired_at > pay_by,
            "expired {} ms before pay_by",
            pay_by - expired_at
        );
        latest = latest.max(expired_at - pay_by);
    }
    println!("the latest expiry came {latest} ms after its pay_by");

    // The stream: exactly one created then one terminal event per order, matching Redis.
    let events = sale_events(&app, &sku, 2000).await;
    assert_no_duplicates(&events);
    assert_each_order_in_order(&events);
    let kinds = kinds_by_order(&events);
    assert_eq!(kinds.len(), 1000);
    for (id, kinds) in &kinds {
        let end = match statuses[id].as_str() {
            "paid" => EventKind::Paid,
            _ => EventKind::Expired,
        };
        assert_eq!(kinds, &[EventKind::Created, end], "{id}");
    }
    let paid_event = events
        .iter()
        .find(|m| m.event.event == EventKind::Paid)
        .expect("a paid event");
    assert_eq!(
        paid_event.message_id,
        format!("{}.paid", paid_event.event.order_id)
    );
    assert_eq!(
        paid_event.event.payment_ref.as_deref(),
        Some(format!("psp-{}", paid_event.event.order_id).as_str())
    );
    assert!(paid_event.subject.ends_with(&format!(".paid.{sku}")));

    // PostgreSQL agrees, row by row.
    let rows = db.wait_for_rows(1000, Duration::from_secs(20)).await;
    for _ in 0..100 {
        if db.rows().await == statuses {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        db.rows().await,
        statuses,
        "postgres holds {} rows",
        rows.len()
    );
    assert_audit_clean(&app.settings, Some(&db.url)).await;

    // Each transition counted once, and the sweeper's expiries with their lag.
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "flashsale_order_transitions_total{to=\"expired\"}"
        ),
        expired as f64
    );
    assert_eq!(
        sample(&metrics, "flashsale_order_transitions_total{to=\"paid\"}"),
        paid.len() as f64
    );
    // The sweeper's expiries have a lag; a late pay that found its order overdue expired it
    // itself, with none (its 409 reads the same as one that found the sweeper done).
    let refused_pays = answers.iter().filter(|a| a.1 == 409).count();
    let lags = sample(&metrics, "flashsale_expiry_lag_seconds_count");
    assert!(
        ((expired - refused_pays) as f64..=expired as f64).contains(&lags),
        "{lags} expiry lags for {expired} expiries, {refused_pays} pays refused"
    );

    // The expired units sell again. Orders from now on get an hour to pay: with the 2 s
    // window, the first of these could expire (and free its unit) before the last is bought
    // on a loaded machine, and "one more" would find it.
    let longer = app
        .put_sale(
            &sku,
            json!({"stock": 1000, "price": 5, "payment_timeout_secs": 3600}),
        )
        .await;
    assert_eq!(longer.status(), 200);
    let again = buy_all_accepted(&app, &sku, &users("again", expired)).await;
    assert_eq!(again.len(), expired);
    assert_eq!(app.order(&sku, "one-more", 1).await.status(), 409);

    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_and_a_cancel_at_once_end_in_exactly_one() {
    let app = spawn_app().await;
    let sku = unique("race");
    app.create_sale(&sku, json!({"stock": 40, "payment_timeout_secs": 60}))
        .await;
    let orders = buy_all_accepted(&app, &sku, &users("r", 40)).await;

    let outcomes: Vec<(u16, u16)> = futures::stream::iter(&orders)
        .map(|order| {
            let app = &app;
            async move {
                let id = order["order_id"].as_str().expect("id");
                let (paid, cancelled) = tokio::join!(pay(app, id, "ref-1"), cancel(app, id));
                (paid.status().as_u16(), cancelled.status().as_u16())
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let cancelled = outcomes.iter().filter(|o| **o == (409, 200)).count();
    let paid = outcomes.iter().filter(|o| **o == (200, 409)).count();
    assert_eq!(
        cancelled + paid,
        40,
        "one of the two wins each race: {outcomes:?}"
    );

    let sale = app.sale_json(&sku).await;
    assert_eq!(sale["sold"], paid as u64, "only cancelled units came back");
    app.wait_until_relay_idle(&sku).await;
    let events = sale_events(&app, &sku, 80).await;
    assert_no_duplicates(&events);
    for kinds in kinds_by_order(&events).values() {
        assert_eq!(kinds.len(), 2, "created and one ending: {kinds:?}");
        assert!([EventKind::Paid, EventKind::Cancelled].contains(&kinds[1]));
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_repeated_late_after_cancel_and_without_a_window() {
    let app = spawn_app().await;
    let sku = unique("pay");
    app.create_sale(&sku, json!({"stock": 10, "payment_timeout_secs": 3}))
        .await;
    let order = &buy_all_accepted(&app, &sku, &users("p", 3)).await;
    let pay_by = millis(&order[2]["pay_by"]);
    let id = |i: usize| order[i]["order_id"].as_str().expect("id").to_owned();

    // Paid, then the same payment again: the same order; another reference: a conflict.
    let first = pay(&app, &id(0), "ref-a").await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("order");
    assert_eq!(first["status"], "paid");
    assert_eq!(first["payment_ref"], "ref-a");
    app.wait_until_relay_idle(&sku).await;
    let again = pay(&app, &id(0), "ref-a").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("order");
    assert_eq!(again["paid_at"], first["paid_at"]);
    assert_eq!(
        again["delivered"], true,
        "the paid event has left the outbox"
    );
    assert_eq!(
        error_of(pay(&app, &id(0), "ref-b").await).await,
        (409, "payment_conflict".into())
    );
    // A paid order is not cancelled (no refunds here).
    assert_eq!(
        error_of(cancel(&app, &id(0)).await).await,
        (409, "order_paid".into())
    );
    // Cancelled, then paid: refused.
    assert_eq!(cancel(&app, &id(1)).await.status(), 200);
    assert_eq!(
        error_of(pay(&app, &id(1), "ref-c").await).await,
        (409, "order_cancelled".into())
    );
    // Past pay_by: expired, whether or not the sweeper got there first.
    tokio::time::sleep(Duration::from_millis(
        (pay_by + 300 - now_ms()).max(0) as u64
    ))
    .await;
    assert_eq!(
        error_of(pay(&app, &id(2), "ref-d").await).await,
        (409, "order_expired".into())
    );
    assert_eq!(
        error_of(cancel(&app, &id(2)).await).await,
        (409, "order_expired".into())
    );
    let late = read_order(&app, &id(2)).await;
    assert_eq!(late["status"], "expired");
    assert_eq!(late["paid_at"], Value::Null);
    assert_eq!(
        app.sale_json(&sku).await["sold"],
        1,
        "only the paid unit is held"
    );

    // A sale without a window: orders are final when accepted.
    let plain = unique("plain");
    app.create_sale(&plain, json!({"stock": 1})).await;
    let order: Value = app.order(&plain, "u", 1).await.json().await.expect("order");
    assert_eq!(order["status"], "created");
    assert!(order.get("pay_by").is_none(), "{order}");
    let id = order["order_id"].as_str().expect("id");
    assert_eq!(
        error_of(pay(&app, id, "ref").await).await,
        (409, "not_payable".into())
    );
    assert_eq!(read_order(&app, id).await["status"], "created");
    assert_eq!(
        app.get_sale(&plain)
            .await
            .json::<Value>()
            .await
            .expect("sale")["payment_timeout_secs"],
        Value::Null
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payments_are_json_errors_and_change_nothing() {
    let app = spawn_app().await;
    let sku = unique("badpay");
    app.create_sale(&sku, json!({"stock": 5, "payment_timeout_secs": 600}))
        .await;
    let order: Value = app.order(&sku, "u", 1).await.json().await.expect("order");
    let id = order["order_id"].as_str().expect("id");
    app.wait_until_relay_idle(&sku).await;
    let before = app.snapshot().await;

    let path = format!("/v1/orders/{id}/pay");
    let post = |body: Value, token: Option<&str>| {
        let mut request = app.client.post(app.url(&path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let token = Some(ADMIN_TOKEN);
    for (body, why) in [
        (json!({"payment_ref": ""}), "empty"),
        (json!({"payment_ref": "x".repeat(129)}), "129 characters"),
        (json!({"payment_ref": "a\nb"}), "a newline"),
        (json!({"payment_ref": 7}), "not a string"),
        (json!({}), "missing"),
        (
            json!({"payment_ref": "ok", "amount": 1}),
            "an unknown field",
        ),
    ] {
        let answer = error_of(post(body, token).await.expect("answered")).await;
        assert_eq!(answer, (400, "invalid_request".into()), "{why}");
    }
    for token in [None, Some("wrong-token")] {
        let answer = error_of(
            post(json!({"payment_ref": "ok"}), token)
                .await
                .expect("answered"),
        );
        assert_eq!(answer.await, (401, "unauthorized".into()));
    }
    // An id of this sale that was never issued, and one this service cannot have issued.
    let unknown = format!("{}999999", id);
    for unknown in [unknown.as_str(), "no-such-order"] {
        assert_eq!(
            error_of(pay(&app, unknown, "ok").await).await,
            (404, "order_not_found".into())
        );
    }
    assert_eq!(app.snapshot().await, before, "nothing changed in Redis");
    assert_eq!(read_order(&app, id).await["status"], "pending_payment");

    let zero = app
        .put_sale(&sku, json!({"stock": 5, "payment_timeout_secs": 0}))
        .await;
    assert_eq!(error_of(zero).await, (400, "invalid_request".into()));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_orders_expire_once_when_a_replica_starts_again() {
    let settings = test_settings();
    let (mut first, app) = spawn_process(&settings).await;
    let (mut second, other) = spawn_process(&settings).await;
    let sku = unique("down");
    app.create_sale(&sku, json!({"stock": 100, "payment_timeout_secs": 1}))
        .await;
    let mut orders = buy_all_accepted(&app, &sku, &users("a", 30)).await;
    orders.extend(buy_all_accepted(&other, &sku, &users("b", 30)).await);
    for replica in [&mut first, &mut second] {
        replica.start_kill().expect("SIGKILL sent");
        replica.wait().await.expect("process gone");
    }
    // A replica that died between a purchase's script and its index write leaves a deadline
    // out of the index; the next start indexes every sale again.
    let mut redis = app.redis.clone();
    let _: () = redis
        .del(format!("{}:payment_due", settings.redis.namespace))
        .await
        .expect("DEL index");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statuses = redis_statuses(&app, &sku).await;
    assert!(
        statuses.values().all(|s| s == "pending_payment"),
        "nothing expires while every replica is down"
    );

    let (mut restarted, app) = spawn_process(&settings).await;
    wait_until_none_pending(&app, &sku, Duration::from_secs(5)).await;
    let statuses = redis_statuses(&app, &sku).await;
    assert!(statuses.values().all(|s| s == "expired"), "{statuses:?}");
    assert_eq!(app.redis_sold(&sku).await, 0, "all 60 units back, once");
    let events = sale_events(&app, &sku, 120).await;
    assert_no_duplicates(&events);
    let expired = events
        .iter()
        .filter(|m| m.event.event == EventKind::Expired)
        .count();
    assert_eq!(expired, 60, "one expired event per order");
    assert_audit_clean(&app.settings, None).await;
    restarted.start_kill().expect("SIGKILL sent");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_sale_keeps_payments_and_deadlines() {
    let mut redis = LosableRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url()).await;
    let sku = unique("rebuilt");
    app.create_sale(&sku, json!({"stock": 10, "payment_timeout_secs": 2}))
        .await;
    let orders = buy_all_accepted(&app, &sku, &users("k", 6)).await;
    let id = |i: usize| orders[i]["order_id"].as_str().expect("id").to_owned();
    // Paid and cancelled answers wait for JetStream (FLASHSALE_CONFIRM=jetstream): they
    // survive the loss.
    for i in 0..2 {
        let paid: Value = pay(&app, &id(i), &format!("ref-{i}"))
            .await
            .json()
            .await
            .expect("order");
        assert_eq!(paid["delivered"], true, "{paid}");
    }
    assert_eq!(cancel(&app, &id(2)).await.status(), 200);
    // No waiting for the relay: every answer above waited for JetStream itself.
    redis.restart_empty_for(&[&app]).await;
    let paid = read_order(&app, &id(0)).await;
    assert_eq!(
        (paid["status"].as_str(), paid["payment_ref"].as_str()),
        (Some("paid"), Some("ref-0"))
    );
    assert_eq!(read_order(&app, &id(2)).await["status"], "cancelled");
    assert_eq!(read_order(&app, &id(3)).await["status"], "pending_payment");
    assert_eq!(
        app.sale_json(&sku).await["sold"],
        5,
        "2 paid and 3 pending hold units"
    );
    assert_eq!(
        error_of(pay(&app, &id(1), "other").await).await,
        (409, "payment_conflict".into()),
        "the rebuilt sale knows the payment"
    );

    // The rebuilt deadlines still expire the unpaid orders.
    wait_until_none_pending(&app, &sku, Duration::from_secs(5)).await;
    let statuses = redis_statuses(&app, &sku).await;
    for i in 3..6 {
        assert_eq!(statuses[&id(i)], "expired");
    }
    assert_eq!(app.sale_json(&sku).await["sold"], 2);
    let events = sale_events(&app, &sku, 6 + 6).await;
    assert_no_duplicates(&events);
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sales_cost_the_sweeper_and_the_relay_nothing() {
    let redis = LosableRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url()).await;
    let skus: Vec<String> = (0..300).map(|_| unique("idle")).collect();
    futures::stream::iter(&skus)
        .for_each_concurrent(16, |sku| {
            let app = &app;
            async move {
                app.create_sale(sku, json!({"stock": 5, "payment_timeout_secs": 1}))
                    .await
            }
        })
        .await;
    // One sale had an order, paid at once: its index entry falls due once, then is gone.
    let order: Value = app
        .order(&skus[0], "u", 1)
        .await
        .json()
        .await
        .expect("order");
    let id = order["order_id"].as_str().expect("id");
    assert_eq!(pay(&app, id, "ref").await.status(), 200);
    let index = format!("{}:payment_due", app.settings.redis.namespace);
    let mut indexes = app.redis.clone();
    for _ in 0..150 {
        let due: u64 = indexes.zcard(&index).await.expect("ZCARD");
        if due == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let due: u64 = indexes.zcard(&index).await.expect("ZCARD");
    assert_eq!(due, 0, "the paid order's sale left the index once due");
    // Its events delivered (on a busy machine the relay may still be at it): all idle now.
    app.wait_until_relay_idle(&skus[0]).await;

    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    let before = command_calls(&mut check).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = command_calls(&mut check).await;
    assert_eq!(
        delta(&before, &after, "evalsha"),
        0,
        "no script call for any of 300 idle sales"
    );
    let index_reads = delta(&before, &after, "zrange");
    let relay_reads = delta(&before, &after, "smembers");
    let outbox_reads: u64 = ["xlen", "xrange", "hvals"]
        .iter()
        .map(|command| delta(&before, &after, command))
        .sum();
    println!(
        "300 idle sales, 2 s: sweeper {index_reads} index reads, relay {relay_reads} index \
         reads and {outbox_reads} outbox reads, 0 script calls"
    );
    assert_eq!(outbox_reads, 0, "the relay visits no idle sale");
    assert!(
        (1..=50).contains(&relay_reads),
        "one relay index read per pass (every 50 ms), not per sale: {relay_reads} in 2 s"
    );
    assert!(
        (1..=15).contains(&index_reads),
        "one index read per tick (≤ 200 ms), not per sale: {index_reads} in 2 s"
    );
    let mut redis_check = app.redis.clone();
    let indexed: u64 = redis_check
        .zcard(format!("{}:payment_due", app.namespace))
        .await
        .expect("ZCARD");
    assert_eq!(
        indexed, 0,
        "no sale with an order awaiting payment is indexed"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_units_sell_again_on_every_replica_long_before_its_mark_lapses() {
    let mut settings = test_settings();
    // Marks would otherwise last ten minutes: only the expiry's notice can reopen the sale.
    settings.redis.sold_out_recheck = Duration::from_secs(600);
    let first = spawn_app_from(settings.clone()).await;
    let second = spawn_app_from(settings).await;
    let sku = unique("reopen");
    first
        .create_sale(&sku, json!({"stock": 2, "payment_timeout_secs": 1}))
        .await;
    // One order of both units: one sweeper expires it, so the other replica's mark can only
    // be lifted by the notice (two orders' deadlines, a millisecond apart, let each replica's
    // sweeper expire one and lift its own mark: that passed without the notice).
    assert_eq!(first.order(&sku, "early", 2).await.status(), 201);
    for replica in [&first, &second] {
        assert_eq!(
            replica.order(&sku, "late", 1).await.status(),
            409,
            "sold out"
        );
    }

    // Neither order is paid: both expire, on whichever replica's sweeper gets there first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while first.redis_sold(&sku).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the orders expire");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Only the expiry's notice can reopen a replica's mark before its ten minutes: the units
    // selling on both within a generous 30 s proves the notice (how soon is a benchmark's).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (replica, buyer) in [(&second, "again-2"), (&first, "again-1")] {
        loop {
            if replica.order(&sku, buyer, 1).await.status() == 201 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the expired units never sold again on {}",
                replica.address
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    first.cleanup().await;
}

/// The sweeper that expires orders tells every replica the units are back (a restock
/// notice): one replica alone, so no other sweep of the sale can send it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_that_frees_units_sends_a_restock_notice() {
    let app = spawn_app().await;
    let sku = unique("noticed");
    let nats = async_nats::connect(app.settings.nats.urls.as_slice())
        .await
        .expect("nats");
    let subject = format!("{}_changes.{sku}", app.settings.nats.subject_prefix);
    let mut restocks = nats.subscribe(subject).await.expect("subscribe");
    nats.flush().await.expect("flush");
    app.create_sale(&sku, json!({"stock": 1, "payment_timeout_secs": 1}))
        .await;
    // A PUT is a restock too: that notice first.
    tokio::time::timeout(Duration::from_secs(5), restocks.next())
        .await
        .expect("the PUT's notice")
        .expect("a notice");
    assert_eq!(app.order(&sku, "buyer", 1).await.status(), 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.redis_sold(&sku).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the order expires");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), restocks.next())
        .await
        .expect("a restock notice after the expiry")
        .expect("a notice");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_migrates_a_first_version_table_in_place() {
    let db = TestDb::create_empty().await;
    // The table as the first version of sql/schema.sql made it, with a row in it.
    db.execute(
        "CREATE TABLE orders (
             order_id text PRIMARY KEY, sku text NOT NULL, user_id text NOT NULL,
             quantity integer NOT NULL CHECK (quantity > 0),
             unit_price bigint NOT NULL CHECK (unit_price >= 0),
             total_amount bigint NOT NULL CHECK (total_amount >= 0),
             created_at timestamptz NOT NULL,
             status text NOT NULL CHECK (status IN ('created', 'cancelled')),
             updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO orders VALUES ('old-1', 'old', 'u', 1, 5, 5, now(), 'created', now());",
    )
    .await;
    let app = spawn_app().await;
    let consumer = spawn_consumer(&app.settings, &db);
    let sku = unique("migrated");
    app.create_sale(&sku, json!({"stock": 5, "payment_timeout_secs": 600}))
        .await;
    let order = &buy_all_accepted(&app, &sku, &users("m", 2)).await;
    let id = |i: usize| order[i]["order_id"].as_str().expect("id").to_owned();
    assert_eq!(pay(&app, &id(0), "psp-9").await.status(), 200);

    let expected = HashMap::from([
        ("old-1".to_owned(), "created".to_owned()),
        (id(0), "paid".to_owned()),
        (id(1), "pending_payment".to_owned()),
    ]);
    for _ in 0..100 {
        if db.rows().await == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(db.rows().await, expected);
    let row = db
        .query_one(&format!(
            "SELECT payment_ref, paid_at IS NOT NULL, pay_by IS NOT NULL FROM orders WHERE order_id = '{}'",
            id(0)
        ))
        .await;
    let (payment_ref, paid, due): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((payment_ref.as_str(), paid, due), ("psp-9", true, true));
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

/// The deadline index outlives a sale whose own keys were lost (on a cluster they live on
/// different masters): the sweeper alone, with no request for the sale, rebuilds it from
/// JetStream and expires its overdue order. (The relay is held, so its own rebuild of a sale
/// with waiting events cannot stand in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_rebuilds_a_lost_sale_it_still_has_deadlines_for() {
    let app = spawn_app_with(|s| s.relay.hold = true).await;
    let sku = unique("swept");
    app.create_sale(&sku, json!({"stock": 5, "payment_timeout_secs": 3}))
        .await;
    // The check connection opened before the clock starts.
    app.namespace_keys().await;
    let order = app.order(&sku, "u1", 1).await;
    assert_eq!(order.status(), 201, "its handler put it in JetStream");
    let order: Value = order.json().await.expect("order");
    let id = order["order_id"].as_str().expect("id").to_owned();

    // Only the sale's own keys are lost, before the order is due; the namespace's deadline
    // index stays.
    let tag = format!("{{{sku}}}");
    for key in app.namespace_keys().await {
        if key.contains(&tag) {
            let _: () = app.redis.clone().del(&key).await.expect("DEL");
        }
    }
    assert!(
        now_ms() < millis(&order["pay_by"]),
        "the keys went only after the order was due: the scenario needs a faster machine"
    );
    assert_eq!(
        app.redis_hget(&sku, "orders", &app.order_field(&sku, &id).await)
            .await,
        None
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = app
            .redis_hget(&sku, "orders", &app.order_field(&sku, &id).await)
            .await;
        if record
            .as_deref()
            .is_some_and(|r| r.starts_with("expired\n"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never expired with no request to rebuild its sale: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.redis_sold(&sku).await, 0, "its unit is back");
    app.cleanup().await;
}

/// Buys one unit for each user; every purchase must be accepted. Returns the orders.
async fn buy_all_accepted(app: &TestApp, sku: &str, users: &[String]) -> Vec<Value> {
    crate::helpers::buy_each(app, sku, users, 64)
        .await
        .into_iter()
        .map(|(status, order)| {
            assert!([201, 202].contains(&status), "{status}: {order}");
            order
        })
        .collect()
}

/// What a pay or a cancel answers besides the status (`lua/transition.lua`): a cancel, the
/// units the sale has left afterwards; a pay, whether the order's latest event has reached
/// JetStream (`delivered`), read from the outbox, not assumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_or_a_cancel_answers_the_units_left_and_whether_its_event_left_the_outbox() {
    // Events wait in the outbox: the relay holds them and no handler confirms.
    let held = spawn_app_with(|s| {
        s.relay.hold = true;
        s.nats.confirm = flashsale::support::settings::Confirm::Redis;
    })
    .await;
    let sku = unique("answers");
    held.create_sale(&sku, json!({"stock": 2, "payment_timeout_secs": 600}))
        .await;
    let orders = buy_all_accepted(&held, &sku, &users("t", 2)).await;
    let id = |i: usize| orders[i]["order_id"].as_str().expect("id").to_owned();

    assert_eq!(pay(&held, &id(0), "ref").await.status(), 200);
    // Paid already: the answer reads whether the paid event left the outbox.
    let paid: Value = pay(&held, &id(0), "ref").await.json().await.expect("order");
    assert_eq!(
        (&paid["status"], &paid["delivered"]),
        (&json!("paid"), &json!(false)),
        "its event waiting: {paid}"
    );
    let cancelled: Value = cancel(&held, &id(1)).await.json().await.expect("order");
    assert_eq!(
        (&cancelled["status"], &cancelled["remaining"]),
        (&json!("cancelled"), &json!(1)),
        "its unit back: {cancelled}"
    );
    // The unit sells again: none left.
    assert_eq!(held.order(&sku, "t-late", 1).await.status(), 201);

    // A replica whose relay runs delivers the events; repeated, each answer says so.
    let mut relaying = held.settings.clone();
    relaying.relay.hold = false;
    let relaying = spawn_app_from(relaying).await;
    relaying.wait_until_relay_idle(&sku).await;
    let again: Value = cancel(&held, &id(1)).await.json().await.expect("order");
    assert_eq!(
        (&again["status"], &again["remaining"]),
        (&json!("cancelled"), &json!(0)),
        "sold again: {again}"
    );
    let paid_again: Value = pay(&held, &id(0), "ref").await.json().await.expect("order");
    assert_eq!(
        (&paid_again["status"], &paid_again["delivered"]),
        (&json!("paid"), &json!(true)),
        "{paid_again}"
    );
    relaying.cleanup().await;
}
