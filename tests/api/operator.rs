//! The operator's view: every sale, paged, with its orders by status; ending a sale early and
//! reopening it, recorded in JetStream so a Redis loss keeps it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::sse::LiveStream;
use crate::helpers::{TestApp, admin_get, admin_post, error_of, spawn_app, unique};

/// Redis forgets everything of the app's namespace, as after a restart without persistence.
async fn forget_redis(app: &TestApp) {
    for key in app.namespace_keys().await {
        let _: i64 = redis::cmd("UNLINK")
            .arg(&key)
            .query_async(&mut app.redis.clone())
            .await
            .expect("UNLINK");
    }
}

fn id(order: &Value) -> String {
    order["order_id"].as_str().expect("order_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_pages_through_every_sale_with_its_orders_by_status() {
    let app = spawn_app().await;
    let prefix = unique("ops");
    // Seven sales; two with orders in every status.
    let skus: Vec<String> = (0..7).map(|i| format!("{prefix}-{i}")).collect();
    for (i, sku) in skus.iter().enumerate() {
        let window = if i == 0 { 1 } else { 3600 };
        app.create_sale(
            sku,
            json!({"stock": 10 + i, "payment_timeout_secs": window}),
        )
        .await;
    }
    let plain = format!("{prefix}-plain");
    app.create_sale(&plain, json!({"stock": 5})).await;

    // Sale 0: one order left to expire (1 s window). Sale 1: paid, cancelled, pending.
    app.buy_accepted(&skus[0], "late").await;
    let orders: Vec<Value> = futures::future::join_all(
        ["payer", "canceller", "waiter"].map(|user| app.buy_accepted(&skus[1], user)),
    )
    .await;
    let paid = admin_post(
        &app,
        &format!("/v1/orders/{}/pay", id(&orders[0])),
        json!({"payment_ref": "r1"}),
    )
    .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(app.cancel(&id(&orders[1])).await.status(), 200);
    // The plain sale: orders final when accepted, one cancelled.
    let kept = app.buy_accepted(&plain, "keeper").await;
    let dropped = app.buy_accepted(&plain, "dropper").await;
    assert_eq!(app.cancel(&id(&dropped)).await.status(), 200);
    assert_ne!(id(&kept), id(&dropped));

    let tally = |sale: &Value| sale["orders"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sale: Value = admin_get(&app, &format!("/v1/sales/{}", skus[0]))
            .await
            .json()
            .await
            .expect("sale");
        if tally(&sale)["expired"] == 1 {
            assert_eq!(
                tally(&sale),
                json!({"total": 1, "created": 0, "pending_payment": 0, "paid": 0, "expired": 1, "cancelled": 0})
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overdue order expires: {sale}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let one: Value = admin_get(&app, &format!("/v1/sales/{}", skus[1]))
        .await
        .json()
        .await
        .expect("sale");
    assert_eq!(
        tally(&one),
        json!({"total": 3, "created": 0, "pending_payment": 1, "paid": 1, "expired": 0, "cancelled": 1})
    );
    let plain_sale: Value = admin_get(&app, &format!("/v1/sales/{plain}"))
        .await
        .json()
        .await
        .expect("sale");
    assert_eq!(
        tally(&plain_sale),
        json!({"total": 2, "created": 1, "pending_payment": 0, "paid": 0, "expired": 0, "cancelled": 1})
    );
    let public = app.sale_json(&skus[1]).await;
    assert!(
        public.get("orders").is_none(),
        "counts are the operator's: {public}"
    );

    // Pages of three: every sale once, then no cursor.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let page: Value = admin_get(&app, &format!("/v1/sales?limit=3{query}"))
            .await
            .json()
            .await
            .expect("page");
        pages += 1;
        let sales = page["sales"].as_array().expect("sales").clone();
        assert!(sales.len() <= 3);
        listed.extend(sales);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    // The app's own definitions bucket holds these eight sales (and its default sale, if used).
    let names: Vec<&str> = listed.iter().filter_map(|s| s["sku"].as_str()).collect();
    let unique_names: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique_names.len(), "no sale twice: {names:?}");
    for sku in skus.iter().chain([&plain]) {
        assert!(
            unique_names.contains(sku.as_str()),
            "{sku} listed: {names:?}"
        );
    }
    assert_eq!(pages, 3, "8 sales in pages of 3");
    let listed_one = listed
        .iter()
        .find(|s| s["sku"] == skus[1].as_str())
        .expect("listed");
    assert_eq!(listed_one["remaining"], 10 + 1 - 2);
    assert_eq!(tally(listed_one)["paid"], 1);

    // Refusals: no token, a bad limit, a made-up cursor.
    let anonymous = app.get("/v1/sales").await;
    assert_eq!(error_of(anonymous).await.0, 401);
    assert_eq!(
        error_of(admin_get(&app, "/v1/sales?limit=0").await).await.0,
        400
    );
    assert_eq!(
        error_of(admin_get(&app, "/v1/sales?limit=201").await)
            .await
            .0,
        400
    );
    assert_eq!(
        error_of(admin_get(&app, "/v1/sales?cursor=zz").await)
            .await
            .0,
        400
    );

    // Counts come back with a sale rebuilt from JetStream.
    app.wait_until_relay_idle(&skus[1]).await;
    forget_redis(&app).await;
    let rebuilt: Value = admin_get(&app, &format!("/v1/sales/{}", skus[1]))
        .await
        .json()
        .await
        .expect("sale");
    assert_eq!(tally(&rebuilt), tally(&one), "rebuilt: {rebuilt}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_ended_early_stays_ended_through_a_put_and_a_redis_loss_until_reopened() {
    let app = spawn_app().await;
    let sku = unique("end");
    app.create_sale(&sku, json!({"stock": 10})).await;
    app.buy_accepted(&sku, "early").await;
    let mut live = LiveStream::open(&app, &sku, None).await;
    assert_eq!(live.next().await.state(), "open");

    let ended = admin_post(&app, &format!("/v1/sales/{sku}/end"), json!({})).await;
    assert_eq!(ended.status(), 200);
    let ended: Value = ended.json().await.expect("sale");
    assert_eq!(ended["state"], "closed");
    let ended_at = ended["ended_at"].as_str().expect("ended_at").to_owned();
    assert_eq!(live.next().await.state(), "closed", "viewers see it end");
    assert_eq!(app.buy(&sku, "late").await.0, 409);

    // Ending again keeps the first end; a PUT (a restock) keeps it ended.
    let again: Value = admin_post(&app, &format!("/v1/sales/{sku}/end"), json!({}))
        .await
        .json()
        .await
        .expect("sale");
    assert_eq!(again["ended_at"], ended_at.as_str());
    assert_eq!(app.put_sale(&sku, json!({"stock": 20})).await.status(), 200);
    assert_eq!(app.sale_json(&sku).await["state"], "closed");

    // JetStream holds the end: a sale rebuilt after Redis lost it is still ended.
    app.wait_until_relay_idle(&sku).await;
    forget_redis(&app).await;
    let rebuilt = app.sale_json(&sku).await;
    assert_eq!(
        (rebuilt["state"].as_str(), rebuilt["ended_at"].as_str()),
        (Some("closed"), Some(ended_at.as_str()))
    );
    assert_eq!(rebuilt["sold"], 1);
    assert_eq!(app.buy(&sku, "after-loss").await.0, 409);

    let reopened = admin_post(&app, &format!("/v1/sales/{sku}/reopen"), json!({})).await;
    assert_eq!(reopened.status(), 200);
    let reopened: Value = reopened.json().await.expect("sale");
    assert_eq!(reopened["state"], "open");
    assert!(reopened.get("ended_at").is_none());
    assert_eq!(reopened["stock"], 20, "the PUT while ended held");
    app.buy_accepted(&sku, "reopened").await;

    let unknown = admin_post(
        &app,
        &format!("/v1/sales/{}/end", unique("nosale")),
        json!({}),
    )
    .await;
    assert_eq!(error_of(unknown).await, (404, "sale_not_found".into()));
    let anonymous = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/end")))
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(anonymous).await.0, 401);
    app.cleanup().await;
}
