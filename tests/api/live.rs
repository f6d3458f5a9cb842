//! `GET /v1/sales/{sku}/live`: a sale's state and stock as Server-Sent Events, fed by changes
//! on any replica, read once per change and not per viewer, bounded, and open to the
//! storefront origins of FLASHSALE_CORS_ORIGINS.

use std::time::{Duration, Instant};

use flashsale::domain::sale::format_time;
use serde_json::json;

use crate::helpers::redis_fixtures::{command_calls, delta};
use crate::helpers::sse::LiveStream;
use crate::helpers::{
    ADMIN_TOKEN, buy_all, error_of, private_redis, redis_connection, spawn_app, spawn_app_from,
    spawn_app_with, test_settings, unique, users,
};

fn in_ms(ms: i64) -> String {
    format_time(chrono::Utc::now().timestamp_millis() + ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_sees_the_sale_open_sell_out_on_another_replica_and_come_back() {
    let viewed = spawn_app().await;
    let selling = spawn_app_from(viewed.settings.clone()).await;
    let sku = unique("live");
    let stock = 150;
    viewed
        .create_sale(&sku, json!({"stock": stock, "starts_at": in_ms(2_000)}))
        .await;

    let mut live = LiveStream::open(&viewed, &sku, None).await;
    let first = live.next().await;
    assert_eq!(
        live.retry,
        Some(2000),
        "a browser is told when to reconnect"
    );
    assert_eq!(first.state(), "scheduled");
    assert_eq!(first.remaining(), stock);
    assert!(
        first.data["server_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(first.data["starts_at"].is_string());

    // Opened by the clock alone: no request, no notice.
    let opened = live.next().await;
    assert_eq!(opened.state(), "open", "{opened:?}");

    // 300 buyers on the other replica, in waves of 60 at once; the viewer sees the count fall
    // to the sell-out.
    let selling_started = Instant::now();
    let buyers = users(&sku, 300);
    let waves = async {
        let mut won = std::collections::HashSet::new();
        for wave in buyers.chunks(60) {
            won.extend(buy_all(&selling, &sku, wave, 60).await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        won
    };
    let (won, events) = tokio::join!(waves, async {
        let mut seen = Vec::new();
        while let Some(event) = live.next_within(Duration::from_secs(10)).await {
            let sold_out = event.state() == "sold_out";
            seen.push(event);
            if sold_out {
                break;
            }
        }
        seen
    });
    let selling_took = selling_started.elapsed();
    assert_eq!(won.len() as u64, stock);
    let last = events.last().expect("events while selling");
    assert_eq!(last.state(), "sold_out", "{events:?}");
    assert_eq!(last.remaining(), 0);
    let counts: Vec<u64> = events.iter().map(|e| e.remaining()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "the count only falls: {counts:?}"
    );
    assert!(counts.len() >= 3, "the count fell in steps: {counts:?}");
    // Coalesced: at most ten a second, and the state change on top.
    let allowed = (selling_took.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(
        counts.len() <= allowed,
        "{} events in {selling_took:?}: {counts:?}",
        counts.len()
    );

    // A cancel on the other replica brings a unit back, and the sale reopens.
    let order_id = won.iter().next().expect("an order");
    let cancelled = selling
        .client
        .post(selling.url(&format!("/v1/orders/{order_id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("cancel answered");
    assert_eq!(cancelled.status(), 200);
    let back = live.next().await;
    assert_eq!((back.state(), back.remaining()), ("open", 1), "{back:?}");
    viewed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_browser_gets_the_current_state_first() {
    let app = spawn_app().await;
    let sku = unique("relive");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let mut live = LiveStream::open(&app, &sku, None).await;
    let first = live.next().await;
    assert_eq!(first.remaining(), 10);
    drop(live);

    app.buy_accepted(&sku, "u1").await;
    app.buy_accepted(&sku, "u2").await;
    // At once: the state as this replica last read it, at most one coalescing interval old;
    // the rest follows within it.
    let mut again = LiveStream::open(&app, &sku, Some(&first.id)).await;
    let mut current = again
        .next_within(Duration::from_millis(50))
        .await
        .expect("at once");
    while current.remaining() != 8 {
        current = again
            .next_within(Duration::from_secs(1))
            .await
            .expect("what happened while away");
    }
    let (before, now): (i64, i64) = (
        first.id.parse().expect("numeric id"),
        current.id.parse().expect("numeric id"),
    );
    assert!(now > before, "ids follow the clock: {before} then {now}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_past_the_replica_limit_are_refused_until_one_leaves() {
    let app = spawn_app_with(|s| s.http.live_viewers = 2).await;
    let sku = unique("crowd");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let mut first = LiveStream::open(&app, &sku, None).await;
    first.next().await;
    let mut second = LiveStream::open(&app, &sku, None).await;
    second.next().await;

    let refused = LiveStream::request(&app, &sku, None).await;
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(error_of(refused).await, (503, "too_many_viewers".into()));

    // The server learns a viewer left when a write to it fails: the second heartbeat after
    // it left (the first only draws the peer's reset), within 30 s.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let response = LiveStream::request(&app, &sku, None).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place of a viewer who left frees"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn an_unknown_sale_is_404_and_a_bad_sku_400() {
    let app = spawn_app().await;
    let unknown = LiveStream::request(&app, &unique("nosale"), None).await;
    assert_eq!(error_of(unknown).await, (404, "sale_not_found".into()));
    let bad = LiveStream::request(&app, "no%20good", None).await;
    assert_eq!(error_of(bad).await.0, 400);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_viewers_cost_redis_one_read_per_change() {
    // A Redis of the test's own: its command counts are this test's alone.
    let port = crate::helpers::free_port();
    let _redis = private_redis(port).await;
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{port}");
    settings.redis.cluster = false;
    let app = spawn_app_from(settings).await;
    let sku = unique("fanout");
    app.create_sale(&sku, json!({"stock": 10})).await;

    let mut counts = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
    let before = command_calls(&mut counts).await;
    let mut viewers = Vec::new();
    for _ in 0..300 {
        viewers.push(LiveStream::open(&app, &sku, None).await);
    }
    for viewer in &mut viewers {
        assert_eq!(viewer.next().await.remaining(), 10);
    }
    let joined = command_calls(&mut counts).await;
    let reads_to_join = delta(&before, &joined, "hmget");
    assert!(
        reads_to_join <= 2,
        "300 viewers joined with {reads_to_join} reads"
    );

    app.buy_accepted(&sku, "u1").await;
    for viewer in &mut viewers {
        assert_eq!(viewer.next().await.remaining(), 9);
    }
    // The purchase script's own HMGET, and one read for every viewer.
    let reads = delta(&joined, &command_calls(&mut counts).await, "hmget");
    assert!(
        reads <= 3,
        "one change reached 300 viewers with {reads} HMGETs"
    );
    drop(viewers);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_origins_get_cors_and_other_origins_do_not() {
    let shop = "http://shop.test:8000";
    let app = spawn_app_with(|s| s.http.cors_origins = vec![shop.into()]).await;
    let sku = unique("cors");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let preflight = |origin: &'static str, method: &'static str, path: String| {
        let app = &app;
        async move {
            app.client
                .request(reqwest::Method::OPTIONS, app.url(&path))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method)
                .header(
                    "Access-Control-Request-Headers",
                    "authorization,content-type,buyer-ticket,idempotency-key",
                )
                .send()
                .await
                .expect("preflight answered")
        }
    };
    let allowed = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };

    let purchase = preflight(shop, "POST", format!("/v1/sales/{sku}/orders")).await;
    assert_eq!(allowed(&purchase).as_deref(), Some(shop));
    let methods = purchase.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let headers = purchase.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("buyer-ticket") && headers.contains("authorization"),
        "{headers}"
    );

    let elsewhere = preflight(
        "http://evil.test",
        "POST",
        format!("/v1/sales/{sku}/orders"),
    )
    .await;
    assert_eq!(allowed(&elsewhere), None);
    let put = preflight(shop, "PUT", format!("/v1/sales/{sku}")).await;
    assert_eq!(allowed(&put), None, "admin calls stay same-origin");

    let stream = app
        .client
        .get(app.url(&format!("/v1/sales/{sku}/live")))
        .header("Origin", shop)
        .send()
        .await
        .expect("stream answered");
    assert_eq!(allowed(&stream).as_deref(), Some(shop));
    drop(stream);
    let from_evil = app
        .client
        .get(app.url(&format!("/v1/sales/{sku}")))
        .header("Origin", "http://evil.test")
        .send()
        .await
        .expect("answered");
    assert_eq!(from_evil.status(), 200, "served; the browser withholds it");
    assert_eq!(allowed(&from_evil), None);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_after_its_time_so_viewers_spread_over_new_replicas() {
    let app = spawn_app_with(|s| s.http.live_max = Duration::from_secs(1)).await;
    let sku = unique("lifetime");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let started = Instant::now();
    let mut live = LiveStream::open(&app, &sku, None).await;
    assert_eq!(live.next().await.remaining(), 10);
    assert_eq!(live.retry, Some(2000), "the browser comes back after 2 s");
    assert!(
        live.ends_within(Duration::from_secs(5)).await,
        "the stream ended"
    );
    // At most a tenth early.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_no_notice_told_of_still_reaches_viewers_within_seconds() {
    let app = spawn_app_with(|s| s.http.live_refresh = Duration::from_secs(1)).await;
    let sku = unique("unnoticed");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let mut live = LiveStream::open(&app, &sku, None).await;
    assert_eq!(live.next().await.remaining(), 10);
    // Sold behind the service's back: no replica sends a notice (as when one is lost).
    let _: i64 = redis::cmd("HINCRBY")
        .arg(app.key(&sku, "sale"))
        .arg("sold")
        .arg(3)
        .query_async(&mut app.redis.clone())
        .await
        .expect("HINCRBY");
    let seen = live
        .next_within(Duration::from_secs(4))
        .await
        .expect("the feed's own refresh (every second here) shows it");
    assert_eq!(seen.remaining(), 7);
    app.cleanup().await;
}

/// A viewer keeps its stream through a Redis outage: a feed whose read fails after the first
/// tries again (each second) instead of ending, so when Redis is back (empty: the sale is
/// rebuilt from JetStream) the next change reaches the viewers still watching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_keeps_its_stream_through_a_redis_outage() {
    let port = crate::helpers::free_port();
    let mut redis = private_redis(port).await;
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{port}");
    settings.redis.cluster = false;
    // The feed reads on its own every 300 ms, so it reads while Redis is gone.
    settings.http.live_refresh = Duration::from_millis(300);
    let app = spawn_app_from(settings).await;
    let sku = unique("live-outage");
    app.create_sale(&sku, json!({"stock": 10})).await;
    let mut viewer = LiveStream::open(&app, &sku, None).await;
    assert_eq!(viewer.next().await.remaining(), 10);

    redis.kill().await.expect("redis stopped");
    // A few of the feed's reads fail meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _redis = private_redis(port).await;
    // The first calls after Redis returns may still be answered 503 (the service finds out it
    // is back); a buyer retries with the same Idempotency-Key, as the answer says.
    let mut status = 0;
    for _ in 0..150 {
        let body = json!({"user_id": "u1"});
        status = (app
            .order_with_key(&sku, body, Some("outage-1"))
            .await
            .status())
        .as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!([201, 202].contains(&status), "{status}");
    let frame = viewer
        .next_within(Duration::from_secs(10))
        .await
        .expect("the stream outlived the outage");
    assert_eq!(frame.remaining(), 9);
    drop(viewer);
    app.cleanup().await;
}
