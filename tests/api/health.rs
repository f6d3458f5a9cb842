//! Health, readiness, and what the service does while Redis is away.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::{
    error_of, free_port, private_redis, redis_connection, spawn_app, spawn_app_with, spawn_metered,
    test_settings, unique,
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
    let app = spawn_app_with(|s| s.redis.url = format!("redis://127.0.0.1:{port}")).await;
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
    let app = spawn_app_with(|s| s.redis.url = url.clone()).await;
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

#[tokio::test]
async fn metrics_count_outcomes_fast_path_and_latencies() {
    // A process of its own: every count below is this test's alone.
    let (_process, app) = spawn_metered(test_settings()).await;
    let sku = unique("metrics");
    app.create_sale(&sku, json!({"stock": 1})).await;
    let before = scrape(&app).await;
    assert_eq!(app.order(&sku, "u1", 1).await.status(), 201);
    // u1's answer left nothing: the replica now knows the sale sold out. A request with an
    // Idempotency-Key still asks Redis (it may hold the key's order); one without does not.
    let keyed = app
        .order_with_key(&sku, json!({"user_id": "u2", "quantity": 1}), Some("k2"))
        .await;
    assert_eq!(keyed.status(), 409); // Redis says sold out
    assert_eq!(app.order(&sku, "u3", 1).await.status(), 409); // answered from memory
    assert_eq!(app.order(&unique("none"), "u4", 1).await.status(), 404);
    let after = scrape(&app).await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);

    assert_eq!(
        moved(r#"flashsale_purchases_total{outcome="created"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"flashsale_purchases_total{outcome="sold_out"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"flashsale_purchases_total{outcome="sale_not_found"}"#),
        1.0
    );
    // The new order was confirmed by JetStream (the default FLASHSALE_CONFIRM).
    assert_eq!(
        moved(r#"flashsale_confirmations_total{result="confirmed"}"#),
        1.0
    );
    assert_eq!(moved("flashsale_sold_out_fast_path_total"), 1.0);
    // The confirmed event's lag; the purchases sent to Redis, u1, u2 and u4 (which found no
    // such sale), u3 answered from memory; a script call each.
    assert_eq!(
        moved(r#"flashsale_event_delivery_lag_seconds_count{publisher="confirm"}"#),
        1.0
    );
    assert_eq!(moved("flashsale_purchase_batch_size_sum"), 3.0);
    assert_eq!(moved("flashsale_script_duration_seconds_count"), 3.0);
    // Five requests: the four purchases and the scrape before them.
    assert_eq!(moved("flashsale_http_request_duration_seconds_count"), 5.0);
    // By status class: the scrape and the 201; two 409s and a 404; no 5xx.
    assert_eq!(moved(r#"flashsale_http_responses_total{class="2xx"}"#), 2.0);
    assert_eq!(moved(r#"flashsale_http_responses_total{class="4xx"}"#), 3.0);
    assert_eq!(moved(r#"flashsale_http_responses_total{class="5xx"}"#), 0.0);
    // Readiness as of the scrape, for the alerts.
    assert_eq!(
        sample(&after, r#"flashsale_dependency_up{dependency="redis"}"#),
        1.0
    );
    assert_eq!(
        sample(&after, r#"flashsale_dependency_up{dependency="nats"}"#),
        1.0
    );
    for series in [
        "flashsale_outbox_pending",
        r#"flashsale_http_request_duration_seconds_bucket{le="0.001"}"#,
    ] {
        assert!(after.contains(series), "{series} in /metrics");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn the_relay_reports_how_long_events_waited() {
    // A NATS of the test's own, stopped while the orders are taken: each event then waits in
    // the outbox at least as long as NATS stays down, a lag the histogram must show.
    let mut nats = crate::helpers::nats::PrivateNats::start().await;
    let mut settings = test_settings();
    settings.nats.confirm = flashsale::support::settings::Confirm::Redis;
    crate::helpers::use_nats(&mut settings, &nats.url());
    let (_process, app) = spawn_metered(settings).await;
    let sku = unique("lag");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let count = r#"flashsale_event_delivery_lag_seconds_count{publisher="relay"}"#;
    let sum = r#"flashsale_event_delivery_lag_seconds_sum{publisher="relay"}"#;
    let before = scrape(&app).await;
    let started = std::time::Instant::now();
    nats.stop().await;
    for user in ["u1", "u2", "u3"] {
        assert_eq!(app.order(&sku, user, 1).await.status(), 201);
    }
    let outage = Duration::from_secs(1);
    tokio::time::sleep(outage).await;
    nats.restart().await;
    app.wait_until_relay_idle(&sku).await;
    let waited = started.elapsed().as_secs_f64();
    let after = scrape(&app).await;
    assert_eq!(
        sample(&after, count) - sample(&before, count),
        3.0,
        "three events relayed"
    );
    // Each lag lies between the outage and the whole test, in seconds (a lag in
    // milliseconds would be a thousand times too large, one not measured would be 0).
    let lag = sample(&after, sum) - sample(&before, sum);
    assert!(
        (3.0 * outage.as_secs_f64()..=3.0 * waited).contains(&lag),
        "{lag} s of lag for 3 events held at least {outage:?}, within {waited} s"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|s| s.telemetry.metrics = false).await;
    let response = app.get("/metrics").await;
    assert_eq!(error_of(response).await, (404, "not_found".into()));
}
