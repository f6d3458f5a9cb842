//! The seed-compatible endpoints behave as the Flask app did, without its overselling.

use futures::StreamExt;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn home_answers_ok() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/home"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_sells_exactly_the_default_stock_under_64_way_concurrency() {
    let app = spawn_app().await;
    let answers: Vec<(u16, String)> = futures::stream::iter(0..1100)
        .map(|_| app.kill(None))
        .buffer_unordered(64)
        .collect()
        .await;

    let accepted = answers
        .iter()
        .filter(|a| *a == &(200, "提交订单成功".to_owned()))
        .count();
    let sold_out = answers
        .iter()
        .filter(|a| *a == &(200, "商品已售完".to_owned()))
        .count();
    assert_eq!(accepted, 1000, "exactly the default stock of 1000");
    assert_eq!(sold_out, 100);
    assert_eq!(
        app.kill(None).await,
        (200, "商品已售完".to_owned()),
        "stays sold out"
    );
    assert_eq!(
        app.redis_sold(&app.default_sku).await,
        1000,
        "the counter stops at the stock"
    );
    let sale = app.sale_json(&app.default_sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(1000), Some(0))
    );
    // The anonymous buyer keeps its tally (for a per-user limit) but no list of orders.
    assert_eq!(
        app.redis_hget(&app.default_sku, "buyers", "anonymous")
            .await
            .as_deref(),
        Some("1000:")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_named_kill_buyer_has_a_list_the_anonymous_one_none() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.kill(Some("named")).await.0, 200);
        assert_eq!(app.kill(None).await.0, 200);
    }
    let named = app
        .redis_hget(&app.default_sku, "buyers", "named")
        .await
        .expect("named");
    let (held, listed) = named.split_once(':').expect("units:list");
    assert_eq!((held, listed.split(',').count()), ("3", 3), "{named}");
    assert_eq!(
        app.redis_hget(&app.default_sku, "buyers", "anonymous")
            .await
            .as_deref(),
        Some("3:")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_rejected_first_kill_sells_nothing() {
    let app = spawn_app_with(|s| s.recovery.default_stock = 0).await;
    assert_eq!(app.kill(Some("u1")).await, (200, "商品已售完".to_owned()));
    // The first use defined the sale (stock 0); the rejection took nothing.
    assert_eq!(app.redis_sold(&app.default_sku).await, 0);
    assert!(app.redis_order_ids(&app.default_sku).await.is_empty());
    let outbox: u64 = redis::cmd("XLEN")
        .arg(app.key(&app.default_sku, "outbox"))
        .query_async(&mut app.redis.clone())
        .await
        .expect("XLEN");
    assert_eq!(outbox, 0, "no event recorded");
    app.cleanup().await;
}

#[tokio::test]
async fn kill_refuses_a_bad_user_id_as_text() {
    let app = spawn_app().await;
    let (status, body) = app.kill(Some(&"u".repeat(129))).await;
    assert_eq!(status, 400);
    // The old app's clients read text: the refusal is text too, and says what is wrong.
    assert!(
        body.contains("user_id") && !body.trim_start().starts_with('{'),
        "a text refusal naming user_id: {body}"
    );
    assert!(app.snapshot().await.is_empty());
}

/// `/kill`'s refusals go through the service's one error mapping and say it as the old app
/// did: text, its words, its statuses (a sold-out is a 200), and the mapping's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_refuses_in_the_old_apps_words() {
    let app = spawn_app_with(|s| {
        s.http.buyer_rate = Some(flashsale::support::settings::RateLimit {
            per_second: 1,
            burst: 2,
        })
    })
    .await;
    // The default sale with a per-user limit of 1 (an admin's PUT).
    let put = app
        .put_sale(
            &app.default_sku,
            serde_json::json!({"stock": 5, "per_user_limit": 1}),
        )
        .await;
    assert!(put.status().is_success());
    assert_eq!(app.kill(Some("u1")).await, (200, "提交订单成功".to_owned()));
    assert_eq!(app.kill(Some("u1")).await, (409, "超出限购数量".to_owned()));
    let response = app
        .client
        .get(app.url("/kill?user_id=u1"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.text().await.expect("text"), "请求过于频繁");
    // Ended early: not open.
    let ended = app
        .client
        .post(app.url(&format!("/v1/sales/{}/end", app.default_sku)))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(ended.status(), 200);
    assert_eq!(
        app.kill(Some("u2")).await,
        (409, "活动未开始或已结束".to_owned())
    );
    app.cleanup().await;

    let ticketed = spawn_app_with(|s| {
        s.http.ticket_key = Some("key".into());
        s.http.require_ticket = true;
    })
    .await;
    assert_eq!(
        ticketed.kill(Some("u3")).await,
        (401, "需要购买凭证 (Buyer-Ticket)".to_owned())
    );
}
