//! Reading orders: `GET /v1/orders/{order_id}` and `GET /v1/sales/{sku}/orders?user_id=…`.

use std::time::Duration;

use flashsale::support::settings::Confirm;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::nats::PrivateNats;
use crate::helpers::redis_fixtures::LosableRedis;
use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_audit_clean, error_of, read_order, spawn_app, spawn_app_with,
    unique,
};

async fn read(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered")
}

/// Reads the order until `delivered` is true (the relay trims what JetStream holds).
async fn read_delivered(app: &TestApp, order_id: &str) -> Value {
    // Up to 30 s: the relay takes an entry after the confirm timeout and its margin, and after
    // an outage its back-off may still run.
    for _ in 0..600 {
        let order = read_order(app, order_id).await;
        if order["delivered"] == true {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order_id} not delivered within 30 s");
}

/// The ids `GET /v1/sales/{sku}/orders?user_id=` lists (`user` URL-encoded), in its order.
async fn listed_ids(app: &TestApp, sku: &str, user: &str) -> Vec<Value> {
    let path = format!("/v1/sales/{sku}/orders?user_id={user}");
    let response = read(app, &path).await;
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.expect("list");
    assert_eq!(listed["sku"], sku);
    listed["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["order_id"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_reads_back_with_its_status_and_delivery() {
    let app = spawn_app().await;
    let sku = unique("read");
    app.create_sale(&sku, json!({"stock": 5, "price": 250}))
        .await;
    let bought = app.buy_accepted(&sku, "reader").await;
    let id = bought["order_id"].as_str().expect("id");

    let order = read_delivered(&app, id).await;
    for field in [
        "order_id",
        "sku",
        "user_id",
        "quantity",
        "unit_price",
        "total_amount",
        "created_at",
    ] {
        assert_eq!(order[field], bought[field], "{field}");
    }
    assert_eq!(order["status"], "created");
    for field in ["pay_by", "paid_at", "payment_ref"] {
        assert!(
            order[field].is_null(),
            "{field} is null without a payment window"
        );
    }

    let cancelled = app
        .client
        .post(app.url(&format!("/v1/orders/{id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(cancelled.status(), 200);
    let order = read_order(&app, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(read_delivered(&app, id).await["status"], "cancelled");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_undelivered_while_nats_is_down() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let app = spawn_app_with(|s| crate::helpers::use_nats(s, &url)).await;
    let sku = unique("undelivered");
    app.create_sale(&sku, json!({"stock": 5})).await;
    nats.stop().await;
    let bought = app.buy_accepted(&sku, "patient").await;
    assert_eq!(bought["delivery"], "pending");
    let id = bought["order_id"].as_str().expect("id");
    assert_eq!(read_order(&app, id).await["delivered"], false);

    nats.restart().await;
    assert_eq!(read_delivered(&app, id).await["status"], "created");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyers_orders_are_listed_newest_first() {
    let app = spawn_app_with(|s| s.nats.confirm = Confirm::Redis).await;
    let sku = unique("listed");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.buy_accepted(&sku, "repeat buyer").await["order_id"].clone());
    }
    app.buy_accepted(&sku, "someone else").await;
    ids.reverse();

    assert_eq!(
        listed_ids(&app, &sku, "repeat%20buyer").await,
        ids,
        "newest first, only this buyer's"
    );
    assert!(listed_ids(&app, &sku, "nobody").await.is_empty());
    let (status, code) = error_of(read(&app, &format!("/v1/sales/{sku}/orders")).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    let unknown = format!("/v1/sales/{}/orders?user_id=x", unique("none"));
    let (status, code) = error_of(read(&app, &unknown).await).await;
    assert_eq!((status, code.as_str()), (404, "sale_not_found"));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_token_and_an_order_that_exists() {
    let app = spawn_app().await;
    let sku = unique("guarded");
    app.create_sale(&sku, json!({"stock": 5})).await;
    let id = app.buy_accepted(&sku, "u").await["order_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let anonymous = app
        .client
        .get(app.url(&format!("/v1/orders/{id}")))
        .send()
        .await
        .expect("answered");
    // RFC 6750: a 401 names the scheme it wants.
    assert_eq!(
        anonymous
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(error_of(anonymous).await, (401, "unauthorized".to_owned()));
    let wrong = app
        .client
        .get(app.url(&format!("/v1/orders/{id}")))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(wrong).await, (401, "unauthorized".to_owned()));
    let listing = app
        .client
        .get(app.url(&format!("/v1/sales/{sku}/orders?user_id=u")))
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(listing).await, (401, "unauthorized".to_owned()));

    let (prefix, _) = id.rsplit_once('-').expect("sequence");
    for unknown in [
        format!("{prefix}-999"),
        "0123456789abcdef-1-1".to_owned(),
        "not-an-order".to_owned(),
    ] {
        let (status, code) = error_of(read(&app, &format!("/v1/orders/{unknown}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "order_not_found"),
            "{unknown}"
        );
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_read_back_after_redis_lost_them_and_a_list_keeps_the_newest_hundred() {
    let mut redis = LosableRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|s| s.redis.url = url).await;
    let sku = unique("read-rebuilt");
    app.create_sale(&sku, json!({"stock": 310})).await;
    // Three times what a list shows (LISTED_ORDERS), enough for Redis to cut the list
    // (purchase.lua's LISTED_BYTES) while they sell: the oldest drop out of it.
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(app.buy_accepted(&sku, "loyal").await["order_id"].clone());
    }
    let cancelled = ids[299].as_str().expect("id").to_owned();
    assert_eq!(app.cancel(&cancelled).await.status(), 200);
    ids.reverse();
    let newest: Vec<Value> = ids[..100].to_vec();
    assert_eq!(
        listed_ids(&app, &sku, "loyal").await,
        newest,
        "newest first, at most 100, a cancelled order included"
    );
    let kept = app
        .redis_hget(&sku, "buyers", "loyal")
        .await
        .expect("buyer");
    assert!(
        kept.matches(',').count() < 299,
        "Redis keeps a bounded list: {} ids",
        kept.matches(',').count() + 1
    );

    redis.restart_empty_for(&[&app]).await;
    let order = read_order(&app, &cancelled).await;
    assert_eq!(
        (&order["status"], &order["delivered"]),
        (&json!("cancelled"), &json!(true)),
        "rebuilt from JetStream, which holds it"
    );
    // The list comes back with the sale, in the same step.
    assert_eq!(
        listed_ids(&app, &sku, "loyal").await,
        newest,
        "the list came back"
    );
    // The tally came back with it: the buyer holds 299 units, the cancelled one is free.
    assert_eq!(app.redis_sold(&sku).await, 299);
    let more = app.buy_accepted(&sku, "loyal").await["order_id"].clone();
    let listed = listed_ids(&app, &sku, "loyal").await;
    assert_eq!(
        (listed.len(), &listed[0]),
        (100, &more),
        "a new order heads the list"
    );
    assert_eq!(listed[1..], newest[..99], "and the oldest left it");
    app.cleanup().await;
}

/// Upgrading from the first layout of a sale's keys (orders keyed by their whole id, a tally
/// per buyer, a list key per buyer): the new scripts take such a sale for a copy from
/// elsewhere and rebuild it from JetStream in their own layout before anything is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_the_first_layout_wrote_is_rebuilt_in_this_one() {
    let app = spawn_app_with(|s| s.nats.confirm = Confirm::Redis).await;
    let sku = unique("old-layout");
    app.create_sale(&sku, json!({"stock": 10, "per_user_limit": 2}))
        .await;
    let first = app.buy_accepted(&sku, "twice").await["order_id"].clone();
    let second = app.buy_accepted(&sku, "twice").await["order_id"].clone();
    app.wait_until_relay_idle(&sku).await;

    // Rewrite the sale as layout 1 held it.
    let mut redis = app.redis.clone();
    let oid = app.redis_hget(&sku, "sale", "oid").await.expect("oid");
    let fields: Vec<String> = redis.hkeys(app.key(&sku, "orders")).await.expect("HKEYS");
    for field in &fields {
        let record = app.redis_hget(&sku, "orders", field).await.expect("record");
        let id = crate::helpers::order_id_of_field(&oid, field);
        let _: () = redis
            .hdel(app.key(&sku, "orders"), field)
            .await
            .expect("HDEL");
        let _: () = redis
            .hset(app.key(&sku, "orders"), &id, record)
            .await
            .expect("HSET");
    }
    let _: () = redis
        .hset(app.key(&sku, "buyers"), "twice", 2)
        .await
        .expect("HSET");
    let ids = [second.as_str().expect("id"), first.as_str().expect("id")];
    let _: () = redis
        .rpush(app.key(&sku, "buyer_orders:twice"), &ids[..])
        .await
        .expect("RPUSH");
    let primary = app
        .redis_hget(&sku, "sale", "primary")
        .await
        .expect("primary");
    let bare = primary.strip_suffix("/2").expect("layout 2 writes /2");
    let _: () = redis
        .hset(app.key(&sku, "sale"), "primary", bare)
        .await
        .expect("HSET");

    let order = read_order(&app, ids[1]).await;
    assert_eq!(order["status"], "created", "read from the rebuilt sale");
    assert_eq!(
        listed_ids(&app, &sku, "twice").await,
        [second.clone(), first.clone()],
        "the buyer's list, newest first, in the new layout"
    );
    assert_eq!(
        app.redis_hget(&sku, "sale", "primary").await.as_deref(),
        Some(primary.as_str()),
        "written again by this layout"
    );
    let again = app.order(&sku, "twice", 1).await;
    assert_eq!(error_of(again).await.1, "user_limit_reached");
    assert_eq!(app.buy_accepted(&sku, "new").await["remaining"], 7);
    app.wait_until_relay_idle(&sku).await;
    assert_audit_clean(&app.settings, None).await;
    let _: () = redis
        .del(app.key(&sku, "buyer_orders:twice"))
        .await
        .expect("DEL");
    app.cleanup().await;
}

#[tokio::test]
async fn a_corrupt_record_is_a_500_json_error_and_the_service_goes_on() {
    let app = spawn_app().await;
    let sku = unique("corrupt");
    app.create_sale(&sku, json!({"stock": 5})).await;
    let id = app.buy_accepted(&sku, "u").await["order_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Something other than this service wrote the record.
    let _: () = redis::AsyncCommands::hset(
        &mut app.redis.clone(),
        app.key(&sku, "orders"),
        app.order_field(&sku, &id).await,
        "not a record",
    )
    .await
    .expect("HSET");
    let (status, code) = error_of(read(&app, &format!("/v1/orders/{id}")).await).await;
    assert_eq!((status, code.as_str()), (500, "internal"));
    // Nothing else is affected: the sale still sells.
    assert_eq!(app.buy_accepted(&sku, "next").await["status"], "created");
    app.cleanup().await;
}

/// A buyer's list as Redis stores it (`purchase.lua`: "held:ids", newest first): it grows
/// until it passes LISTED_BYTES (1024), then keeps only the newest LISTED (100) ids, so a
/// buyer with thousands of orders pays for the cut once in many purchases. Checked after
/// each of 500 purchases of one buyer (two cuts) against that rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyers_stored_list_grows_past_1024_bytes_then_keeps_the_newest_hundred() {
    let app = spawn_app().await;
    let sku = unique("list-cut");
    app.create_sale(&sku, json!({"stock": 1000})).await;
    let (mut expected, mut cuts) = (Vec::<String>::new(), 0);
    for k in 1..=500 {
        let order = app.buy_accepted(&sku, "collector").await;
        let id = order["order_id"].as_str().expect("id");
        let field = id.rsplit('-').next().expect("a seq").to_owned();
        expected.insert(0, field);
        if expected.join(",").len() > 1024 {
            expected.truncate(100);
            cuts += 1;
        }
        let stored = app.redis_hget(&sku, "buyers", "collector").await;
        assert_eq!(
            stored,
            Some(format!("{k}:{}", expected.join(","))),
            "after purchase {k}"
        );
    }
    assert_eq!(cuts, 2, "the list was cut twice");
    app.cleanup().await;
}
