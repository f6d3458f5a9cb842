//! Health, readiness, and what the service does while Redis is away.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    error_of, free_port, private_redis, redis_connection, spawn_app, spawn_app_with, unique,
};

#[tokio::test]
async fn healthz_and_readyz_answer_when_everything_is_up() {
    let app = spawn_app().await;
    assert_eq!(app.healthz_status().await, 200);
    let (status, body) = ready(&app.client, &app.url("/readyz")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["redis"].as_str(), body["nats"].as_str()),
        (Some("up"), Some("up"))
    );
    assert_eq!(body["outbox"]["pending"], 0);
}

async fn ready(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("/readyz answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("/readyz is JSON"))
}

#[tokio::test]
async fn redis_on_a_closed_port_means_503_not_a_crash() {
    let port = free_port();
    let app = spawn_app_with(|s| s.redis_url = format!("redis://127.0.0.1:{port}")).await;
    let sku = unique("down");

    let (status, code) = error_of(app.order(&sku, "u1", 1).await).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let (status, code) = error_of(app.get_sale(&sku).await).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let (status, body) = ready(&app.client, &app.url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(
        (body["error"].as_str(), body["redis"].as_str()),
        (Some("unavailable"), Some("down"))
    );
    assert_eq!(app.kill(None).await.0, 503);
    assert_eq!(app.healthz_status().await, 200);
}

#[tokio::test]
async fn service_recovers_when_redis_comes_back() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut redis = private_redis(port).await;
    let app = spawn_app_with(|s| s.redis_url = url.clone()).await;
    let sku = unique("flaky");
    assert_eq!(app.put_sale(&sku, json!({"stock": 10})).await.status(), 201);
    assert_eq!(app.order(&sku, "u1", 1).await.status(), 201);

    redis.kill().await.expect("private redis stopped");
    let (status, code) = error_of(app.order(&sku, "u2", 1).await).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert_eq!(ready(&app.client, &app.url("/readyz")).await.0, 503);
    assert_eq!(app.healthz_status().await, 200, "alive");

    let _redis = private_redis(port).await;
    let mut recovered = false;
    for _ in 0..50 {
        if ready(&app.client, &app.url("/readyz")).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "/readyz is 200 again within 5 s");
    // The private server kept nothing: the PUT finds the sale JetStream recorded, rebuilt
    // with the unit sold before (so it replaces, 200); scripts reload by themselves
    // (NOSCRIPT).
    assert_eq!(app.put_sale(&sku, json!({"stock": 10})).await.status(), 200);
    assert_eq!(app.order(&sku, "u2", 1).await.status(), 201);
    let mut check = redis_connection(&url).await;
    let sold: u64 = redis::cmd("HGET")
        .arg(app.key(&sku, "sale"))
        .arg("sold")
        .query_async(&mut check)
        .await
        .expect("HGET");
    assert_eq!(sold, 2, "the unit sold before the loss still counts");
    app.cleanup().await;
}

/// The value of one sample line of the Prometheus text, 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn scrape(app: &crate::helpers::TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

#[tokio::test]
async fn metrics_count_outcomes_fast_path_and_latencies() {
    let app = spawn_app().await;
    let sku = unique("metrics");
    app.create_sale(&sku, json!({"stock": 1})).await;
    // The recorder is process-wide and other tests buy too: compare before and after.
    let before = scrape(&app).await;
    assert_eq!(app.order(&sku, "u1", 1).await.status(), 201);
    assert_eq!(app.order(&sku, "u2", 1).await.status(), 409); // Redis says sold out
    assert_eq!(app.order(&sku, "u3", 1).await.status(), 409); // answered from memory
    assert_eq!(app.order(&unique("none"), "u4", 1).await.status(), 404);
    let after = scrape(&app).await;

    let created = r#"flashsale_purchases_total{outcome="created"}"#;
    let sold_out = r#"flashsale_purchases_total{outcome="sold_out"}"#;
    assert!(sample(&after, created) >= sample(&before, created) + 1.0);
    assert!(sample(&after, sold_out) >= sample(&before, sold_out) + 2.0);
    let not_found = r#"flashsale_purchases_total{outcome="sale_not_found"}"#;
    assert!(sample(&after, not_found) >= sample(&before, not_found) + 1.0);
    // The new order was confirmed by JetStream (the default FLASHSALE_CONFIRM).
    let confirmed = r#"flashsale_confirmations_total{result="confirmed"}"#;
    assert!(sample(&after, confirmed) >= sample(&before, confirmed) + 1.0);
    let fast = "flashsale_sold_out_fast_path_total";
    assert!(sample(&after, fast) >= sample(&before, fast) + 1.0);
    // The confirmed event's lag, and the two purchases Redis decided (in one call or two).
    let lag = r#"flashsale_event_delivery_lag_seconds_count{publisher="confirm"}"#;
    assert!(sample(&after, lag) >= sample(&before, lag) + 1.0);
    let batched = "flashsale_purchase_batch_size_sum";
    assert!(sample(&after, batched) >= sample(&before, batched) + 2.0);
    for series in [
        "flashsale_script_duration_seconds_count",
        "flashsale_http_request_duration_seconds_count",
        "flashsale_outbox_pending",
        r#"flashsale_http_request_duration_seconds_bucket{le="0.001"}"#,
    ] {
        assert!(after.contains(series), "{series} in /metrics");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn the_relay_reports_how_long_events_waited() {
    let app = spawn_app_with(|s| s.confirm = flashsale::config::Confirm::Redis).await;
    let sku = unique("lag");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let series = r#"flashsale_event_delivery_lag_seconds_count{publisher="relay"}"#;
    let before = sample(&scrape(&app).await, series);
    for user in ["u1", "u2", "u3"] {
        assert_eq!(app.order(&sku, user, 1).await.status(), 201);
    }
    app.wait_until_relay_idle(&sku).await;
    let after = scrape(&app).await;
    assert!(
        sample(&after, series) >= before + 3.0,
        "three events relayed"
    );
    let total = sample(
        &after,
        r#"flashsale_event_delivery_lag_seconds_sum{publisher="relay"}"#,
    );
    assert!(total >= 0.0 && total.is_finite());
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|s| s.metrics = false).await;
    let response = app.get("/metrics").await;
    assert_eq!(error_of(response).await, (404, "not_found".into()));
}
