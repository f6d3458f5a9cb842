//! Rate limits in front of the stock (FLASHSALE_BUYER_RATE / _CLIENT_RATE): refused requests
//! are 429 `rate_limited` with `Retry-After`, and never reach Redis.

use std::time::{Duration, Instant};

use flashsale::config::{Confirm, RateLimit};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::health::{sample, scrape};
use crate::helpers::{
    error_of, free_port, private_redis, redis_connection, spawn_app_with, spawn_metered,
    test_settings, unique,
};
use crate::nats::PrivateNats;
use crate::round_trips::{command_calls, delta};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_firing_1000_purchases_reaches_redis_at_most_its_burst() {
    let port = free_port();
    let _redis = private_redis(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    // NATS of its own, stopped once the sale is defined: the relay then sends this Redis no
    // script call, and every EVALSHA counted below is a purchase's.
    let mut nats = PrivateNats::start().await;
    let nats_url = nats.url();
    let mut settings = test_settings();
    settings.redis_url = url.clone();
    crate::helpers::use_nats(&mut settings, &nats_url);
    settings.confirm = Confirm::Redis;
    settings.buyer_rate = Some(RateLimit {
        per_second: 5,
        burst: 10,
    });
    let (_process, app) = spawn_metered(settings).await;
    let sku = unique("limited");
    app.create_sale(&sku, json!({"stock": 10000})).await;
    nats.stop().await;
    let mut check = redis_connection(&url).await;
    let metrics = scrape(&app).await;
    let before = command_calls(&mut check).await;

    let started = Instant::now();
    let answers: Vec<(u16, Option<String>, Value)> = futures::stream::iter(0..1000)
        .map(|_| async {
            let response = app.order(&sku, "bot", 1).await;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (
                status,
                retry_after,
                response.json().await.unwrap_or(Value::Null),
            )
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let after = command_calls(&mut check).await;

    // GCRA: the burst at once, then one more per 200 ms.
    let allowed = 10 + (elapsed.as_secs_f64() * 5.0).ceil() as u64;
    let created = answers.iter().filter(|(s, _, _)| *s == 201).count() as u64;
    let scripts = delta(&before, &after, "evalsha");
    println!(
        "1000 purchases of one buyer in {elapsed:?}: {created} created, {scripts} script calls"
    );
    assert!(created >= 10, "the burst passes: {created}");
    assert!(
        created <= allowed,
        "{created} passed, at most {allowed} allowed"
    );
    assert!(scripts <= allowed, "{scripts} script calls reached Redis");
    for (status, retry_after, body) in &answers {
        if *status == 201 {
            continue;
        }
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"], "rate_limited");
        let secs: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=2).contains(&secs), "Retry-After {secs}");
    }
    assert_eq!(app.redis_sold(&sku).await, created);
    let refused = sample(
        &scrape(&app).await,
        "flashsale_rate_limited_total{limit=\"buyer\"}",
    ) - sample(&metrics, "flashsale_rate_limited_total{limit=\"buyer\"}");
    assert_eq!(refused, (1000 - created) as f64, "every refusal counted");

    // Another buyer has an allowance of their own.
    assert_eq!(app.order(&sku, "human", 1).await.status(), 201);
    // The bot's allowance comes back with time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.order(&sku, "bot", 1).await.status(), 201);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_is_limited_and_forwarded_only_by_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.client_rate = Some(RateLimit {
            per_second: 1,
            burst: 3,
        });
    })
    .await;
    let sku = unique("per-client");
    app.create_sale(&sku, json!({"stock": 100})).await;
    // Three buyers from this address pass, the fourth is over the address's burst.
    for user in ["a", "b", "c"] {
        assert_eq!(app.order(&sku, user, 1).await.status(), 201);
    }
    let (status, code) = error_of(app.order(&sku, "d", 1).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // X-Forwarded-For from an untrusted peer changes nothing.
    let forwarded = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/orders")))
        .header("X-Forwarded-For", "203.0.113.7")
        .json(&json!({"user_id": "e", "quantity": 1}))
        .send()
        .await
        .expect("answered");
    assert_eq!(forwarded.status(), 429);
    assert_eq!(app.redis_sold(&sku).await, 3);
    app.cleanup().await;

    // Behind a trusted proxy each forwarded address has its own allowance.
    let proxied = spawn_app_with(|s| {
        s.client_rate = Some(RateLimit {
            per_second: 1,
            burst: 1,
        });
        s.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    proxied.create_sale(&sku, json!({"stock": 100})).await;
    for (i, address) in ["203.0.113.1", "203.0.113.2", "203.0.113.1"]
        .iter()
        .enumerate()
    {
        let response = proxied
            .client
            .post(proxied.url(&format!("/v1/sales/{sku}/orders")))
            .header("X-Forwarded-For", *address)
            .json(&json!({"user_id": format!("p{i}"), "quantity": 1}))
            .send()
            .await
            .expect("answered");
        let expected = if i < 2 { 201 } else { 429 };
        assert_eq!(response.status(), expected, "{address}, request {i}");
    }
    proxied.cleanup().await;
}
