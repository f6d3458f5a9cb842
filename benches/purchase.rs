//! Criterion benches of the purchase path, each beside a reference measured in the same run
//! so the figures read as ratios on a shared machine:
//!
//! - `purchase/script_round_trip`: one purchase through the inventory API (the EVALSHA),
//!   against `purchase/redis_ping`, a bare round trip on the same connection;
//! - `purchase_64_in_flight/group_commit`: 64 concurrent purchases of one sale through the
//!   inventory (they share script calls), against `…/one_call_each`: 64 concurrent script
//!   calls of one purchase each;
//! - `http/purchase`: one `POST /v1/sales/{sku}/orders` through the app in this process,
//!   against `http/healthz` on the same client and server;
//! - `json/decode_order_request`, `json/encode_order`: the hot JSON;
//! - `metrics/record_purchase`: what metrics add to one purchase (an outcome counter, the
//!   script and the request histograms), with the Prometheus recorder installed.
//!
//! Needs the Redis of `scripts/services.sh`. Works in its own namespace and deletes it after.
//! The in-process app points NATS at a closed port, so its relay stays idle: the HTTP figure
//! is the request path alone.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::domain::order::{Order, OrderStatus};
use flashsale::domain::sale::SaleSettings;
use flashsale::domain::{Quantity, Sku, UserId};
use flashsale::http::bodies::OrderRequest;
use flashsale::startup::Application;
use flashsale::store::{PurchaseRequest, SaleKeys, Store};
use flashsale::support::settings::{Confirm, MAX_STOCK, Settings};
use futures::future::join_all;

fn settings() -> Settings {
    let mut settings = Settings::from_env().expect("valid FLASHSALE_* settings");
    settings.redis.namespace = format!("fsbench-{}", std::process::id());
    settings.http.bind = "127.0.0.1:0".parse().expect("address");
    settings.http.admin_token = Some("bench".into());
    settings.telemetry.metrics = true;
    settings.nats.urls = vec!["nats://127.0.0.1:1".parse().expect("nats url")];
    // Without NATS, jetstream confirmation would answer 202 at once: measure the decision.
    settings.nats.confirm = Confirm::Redis;
    settings
}

fn purchase(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let settings = settings();
    let sku = Sku::parse("bench").expect("valid sku");
    let user = UserId::parse("bench-user".into()).expect("valid user");

    let inventory = runtime.block_on(async {
        let store = Store::new(&settings.redis).expect("redis client");
        store
            .rebuild()
            .put_sale(&sku, &SaleSettings::plain(MAX_STOCK, 100), None, 0)
            .await
            .expect("bench needs Redis: run scripts/services.sh");
        store.sales()
    });

    let mut group = c.benchmark_group("purchase");
    group.bench_function("script_round_trip", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = PurchaseRequest {
                user: user.clone(),
                quantity: Quantity::ONE,
                idempotency_key: None,
                listing: flashsale::store::Listing::Listed,
                place: None,
            };
            inventory
                .purchase(&sku, request)
                .await
                .expect("purchase accepted")
        })
    });
    group.bench_function("redis_ping", |b| {
        b.to_async(&runtime)
            .iter(|| async { inventory.ping().await.expect("PING") })
    });
    group.finish();

    // 64 purchases of one sale in flight at once: through the inventory, which shares script
    // calls among them (group commit), against 64 script calls of one purchase each (what
    // every purchase cost before), on one multiplexed connection.
    let next_buyer = AtomicU64::new(0);
    let buyer = || {
        let n = next_buyer.fetch_add(1, Ordering::Relaxed);
        UserId::parse(format!("crowd-{n}")).expect("valid user")
    };
    let keys = SaleKeys::new(&settings.redis.namespace, &sku);
    let script = redis::Script::new(include_str!("../lua/purchase.lua"));
    let single = runtime.block_on(async {
        let client = redis::Client::open(settings.redis.url.as_str()).expect("redis url");
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("redis")
    });
    let mut group = c.benchmark_group("purchase_64_in_flight");
    group.bench_function("group_commit", |b| {
        b.to_async(&runtime).iter(|| async {
            join_all((0..64).map(|_| {
                let request = PurchaseRequest {
                    user: buyer(),
                    quantity: Quantity::ONE,
                    idempotency_key: None,
                    listing: flashsale::store::Listing::Listed,
                    place: None,
                };
                let inventory = &inventory;
                let sku = &sku;
                async move { inventory.purchase(sku, request).await.expect("accepted") }
            }))
            .await
        })
    });
    group.bench_function("one_call_each", |b| {
        b.to_async(&runtime).iter(|| async {
            join_all((0..64).map(|_| {
                let user = buyer();
                let mut call = script.prepare_invoke();
                call.key(keys.sale())
                    .key(keys.orders())
                    .key(keys.buyers())
                    .key(keys.outbox())
                    .key(keys.deadlines())
                    .arg(86_400)
                    .arg(user.as_str())
                    .arg(1)
                    .arg("")
                    .arg("1");
                let mut redis = single.clone();
                async move {
                    call.invoke_async::<redis::Value>(&mut redis)
                        .await
                        .expect("EVALSHA")
                }
            }))
            .await
        })
    });
    group.finish();

    let base = runtime.block_on(async {
        let app = Application::build(settings.clone()).await.expect("app");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        base
    });
    let client = reqwest::Client::new();
    let orders = format!("{base}/v1/sales/bench/orders");
    let healthz = format!("{base}/healthz");
    let next_user = AtomicU64::new(0);
    let mut group = c.benchmark_group("http");
    group.bench_function("purchase", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = next_user.fetch_add(1, Ordering::Relaxed);
            let response = client
                .post(&orders)
                .header("Content-Type", "application/json")
                .body(format!(r#"{{"user_id":"h{n}","quantity":1}}"#))
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 201);
            response.bytes().await.expect("body")
        })
    });
    group.bench_function("healthz", |b| {
        b.to_async(&runtime).iter(|| async {
            client
                .get(&healthz)
                .send()
                .await
                .expect("answered")
                .bytes()
                .await
                .expect("body")
        })
    });
    group.finish();

    runtime.block_on(async {
        let client = redis::Client::open(settings.redis.url.as_str()).expect("redis url");
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", settings.redis.namespace))
            .query_async(&mut redis)
            .await
            .expect("KEYS");
        // UNLINK: the orders hash and the outbox hold hundreds of thousands of entries by
        // now, and DEL would free them inside the command (past the response timeout).
        let _: () = redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut redis)
            .await
            .expect("UNLINK bench keys");
    });
}

fn json(c: &mut Criterion) {
    let body = br#"{"user_id":"u-123456","quantity":2}"#;
    let order = Order {
        order_id: "f6be6ca910984ef0-1795619575669-123456".into(),
        sku: "phone-17".into(),
        user_id: "u-123456".into(),
        quantity: 2,
        unit_price: 99_900,
        total_amount: 199_800,
        created_at: "2026-11-25T12:00:03.117Z".into(),
        remaining: 42,
        status: OrderStatus::Created,
        pay_by: None,
        delivery: None,
    };
    let mut group = c.benchmark_group("json");
    group.bench_function("decode_order_request", |b| {
        b.iter(|| serde_json::from_slice::<OrderRequest>(body).expect("valid"))
    });
    group.bench_function("encode_order", |b| {
        b.iter(|| serde_json::to_vec(&order).expect("serializes"))
    });
    group.finish();
}

fn metrics(c: &mut Criterion) {
    flashsale::support::metrics::install().expect("recorder installed");
    let purchase = flashsale::support::metrics::PurchaseMetrics::register();
    let request = flashsale::support::metrics::request_histogram();
    let took = std::time::Duration::from_micros(250);
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_purchase", |b| {
        b.iter(|| {
            purchase.outcome(flashsale::support::metrics::Outcome::Created);
            purchase.script(took);
            request.record(took);
        })
    });
    group.finish();
}

criterion_group!(benches, purchase, json, metrics);
criterion_main!(benches);
