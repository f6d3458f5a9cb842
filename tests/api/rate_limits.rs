//! Rate limits in front of the stock (FLASHSALE_BUYER_RATE / _CLIENT_RATE): refused requests
//! are 429 `rate_limited` with `Retry-After`, and never reach Redis.

use std::time::{Duration, Instant};

use flashsale::support::settings::{Confirm, RateLimit};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::metrics::{sample, scrape};
use crate::helpers::nats::PrivateNats;
use crate::helpers::redis_fixtures::{command_calls, delta};
use crate::helpers::{
    TestApp, free_port, private_redis, redis_connection, spawn_app_with, spawn_metered,
    test_settings, unique,
};

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
    settings.redis.url = url.clone();
    crate::helpers::use_nats(&mut settings, &nats_url);
    settings.nats.confirm = Confirm::Redis;
    settings.http.buyer_rate = Some(RateLimit {
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

/// Purchases of distinct buyers on `sku`, all at once, each with an `X-Forwarded-For` of its
/// own when given; the statuses, and how long they took.
async fn buy_at_once(
    app: &TestApp,
    sku: &str,
    buyers: &[(String, Option<&str>)],
) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = futures::future::join_all(buyers.iter().map(|(user, forwarded)| {
        let mut request = app
            .client
            .post(app.url(&format!("/v1/sales/{sku}/orders")))
            .json(&json!({"user_id": user, "quantity": 1}));
        if let Some(address) = forwarded {
            request = request.header("X-Forwarded-For", *address);
        }
        async move { request.send().await.expect("answered").status().as_u16() }
    }))
    .await;
    (statuses, started.elapsed())
}

/// At most what a limit of `burst` and one more a second lets through in `elapsed`: the bound
/// grows with a slow machine, so no latency can fail it, and a limit not applied exceeds it.
fn at_most(burst: usize, elapsed: Duration) -> usize {
    burst + elapsed.as_secs_f64().ceil() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_is_limited_and_forwarded_only_by_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.http.client_rate = Some(RateLimit {
            per_second: 1,
            burst: 3,
        });
    })
    .await;
    let sku = unique("per-client");
    app.create_sale(&sku, json!({"stock": 100})).await;
    // Ten buyers from this one address: its burst passes, and little more.
    let buyers: Vec<(String, Option<&str>)> = (0..10).map(|i| (format!("u{i}"), None)).collect();
    let (statuses, elapsed) = buy_at_once(&app, &sku, &buyers).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        statuses.iter().all(|s| [201, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(
        (3..=at_most(3, elapsed)).contains(&created),
        "{created} of 10 passed in {elapsed:?}"
    );
    // X-Forwarded-For from an untrusted peer changes nothing: ten "addresses" still share the
    // peer's drained allowance.
    let forwarded: Vec<(String, Option<&str>)> = (0..10)
        .map(|i| (format!("f{i}"), Some(["203.0.113.7", "203.0.113.8"][i % 2])))
        .collect();
    let (again, total) = buy_at_once(&app, &sku, &forwarded).await;
    let total = elapsed + total;
    let created = created + again.iter().filter(|s| **s == 201).count();
    assert!(
        created <= at_most(3, total),
        "{created} of 20 passed in {total:?}: a forwarded address was believed"
    );
    assert_eq!(app.redis_sold(&sku).await, created as u64);
    app.cleanup().await;

    // Behind a trusted proxy each forwarded address has its own allowance.
    let proxied = spawn_app_with(|s| {
        s.http.client_rate = Some(RateLimit {
            per_second: 1,
            burst: 1,
        });
        s.http.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    proxied.create_sale(&sku, json!({"stock": 100})).await;
    let addresses = ["203.0.113.1", "203.0.113.2"];
    let buyers: Vec<(String, Option<&str>)> = (0..10)
        .map(|i| (format!("p{i}"), Some(addresses[i % 2])))
        .collect();
    let (statuses, elapsed) = buy_at_once(&proxied, &sku, &buyers).await;
    for (parity, address) in addresses.iter().enumerate() {
        let created = statuses
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|s| **s == 201)
            .count();
        assert!(
            (1..=at_most(1, elapsed)).contains(&created),
            "{address}: {created} of 5 passed in {elapsed:?}"
        );
    }
    proxied.cleanup().await;
}
