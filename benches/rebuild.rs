//! How long a sale with 100,000 orders takes to come back after Redis lost it: the time a
//! request for it waits, from "Redis does not hold this sale" to the sale installed again
//! (reading its events from JetStream, folding them, staging and installing them in Redis,
//! and the rebuild's fixed settle time for publishes in flight). Beside it, the same for a
//! sale with no orders (the fixed part alone).
//!
//! Needs the Redis and NATS of `scripts/services.sh`. Works in its own namespace and stream
//! and deletes them after.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::domain::Sku;
use flashsale::domain::event::{EventKind, OrderEvent};
use flashsale::domain::sale::SaleSettings;
use flashsale::events::jetstream::ensure_stream;
use flashsale::recovery::Recovery;
use flashsale::recovery::definitions::SaleDefinition;
use flashsale::store::Store;
use flashsale::support::settings::Settings;
use redis::AsyncCommands;

const ORDERS: u64 = 100_000;

fn settings() -> Settings {
    let mut settings = Settings::from_env().expect("valid FLASHSALE_* settings");
    let run = std::process::id();
    settings.redis.namespace = format!("fsbench-rebuild-{run}");
    settings.nats.stream = format!("FSBENCH_REBUILD_{run}");
    settings.nats.subject_prefix = format!("fsbench-rebuild-{run}");
    settings
}

/// Defines the sale and publishes `orders` created events for it (a quarter with an
/// Idempotency-Key, one in ten cancelled), as the relay would have.
async fn record_sale(settings: &Settings, recovery: &Recovery, sku: &Sku, orders: u64) {
    let definition = SaleDefinition::new(
        sku,
        &SaleSettings {
            stock: orders * 2,
            per_user_limit: Some(5),
            price: 990,
            starts_at: None,
            ends_at: None,
            payment_timeout_secs: None,
            ended_at: None,
            queue: None,
        },
    );
    recovery
        .definitions()
        .put(&definition)
        .await
        .expect("bench needs NATS: run scripts/services.sh");
    let nats = async_nats::connect(settings.nats.urls.as_slice())
        .await
        .expect("nats");
    let js = jetstream::new(nats);
    ensure_stream(
        &js,
        &flashsale::events::jetstream::OrderStream::new(&settings.nats),
    )
    .await
    .expect("stream");
    let created_at = "2026-11-26T09:00:00.000Z".to_owned();
    let mut acks = Vec::new();
    for seq in 1..=orders {
        let mut event = OrderEvent {
            event: EventKind::Created,
            order_id: format!("0123456789abcdef-1795683600000-{seq}"),
            sku: sku.to_string(),
            user_id: format!("buyer-{}", seq % 40_000),
            quantity: 1,
            unit_price: 990,
            total_amount: 990,
            created_at: created_at.clone(),
            idempotency_key: (seq % 4 == 0).then(|| format!("key-{seq}")),
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        };
        let mut kinds = vec![EventKind::Created];
        if seq % 10 == 0 {
            kinds.push(EventKind::Cancelled);
        }
        for kind in kinds {
            event.event = kind;
            let message = PublishMessage::build()
                .payload(serde_json::to_vec(&event).expect("json").into())
                .message_id(event.message_id());
            acks.push(
                js.send_publish(event.subject(&settings.nats.subject_prefix), message)
                    .await
                    .expect("publish"),
            );
        }
        if acks.len() >= 1_000 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// Forgets the sale in Redis (all its keys), as a restart would.
async fn lose(redis: &mut redis::aio::MultiplexedConnection, namespace: &str, sku: &Sku) {
    let keys: Vec<String> = redis
        .keys(format!("{namespace}:{{{sku}}}:*"))
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis.del(keys).await.expect("DEL");
    }
}

fn rebuild(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let settings = settings();
    let big = Sku::parse("rebuild-100k").expect("sku");
    let empty = Sku::parse("rebuild-empty").expect("sku");
    let (recovery, mut redis) = runtime.block_on(async {
        let store = Store::new(&settings.redis).expect("redis client");
        let nats = async_nats::connect(settings.nats.urls.as_slice())
            .await
            .expect("nats");
        let recovery = Recovery::new(store.rebuild(), nats, &settings);
        let started = Instant::now();
        record_sale(&settings, &recovery, &big, ORDERS).await;
        record_sale(&settings, &recovery, &empty, 0).await;
        eprintln!("recorded {ORDERS} orders in {:?}", started.elapsed());
        let redis = redis::Client::open(settings.redis.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("bench needs Redis: run scripts/services.sh");
        (recovery, redis)
    });

    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, sku) in [
        ("sale_with_100k_orders", &big),
        ("sale_without_orders", &empty),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let (recovery, namespace) = (&recovery, &settings.redis.namespace);
                let mut redis = redis.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        lose(&mut redis, namespace, sku).await;
                        let started = Instant::now();
                        assert!(recovery.restore(sku).await.expect("rebuilt").is_none());
                        total += started.elapsed();
                    }
                    total
                }
            })
        });
    }
    group.finish();

    runtime.block_on(async {
        lose(&mut redis, &settings.redis.namespace, &big).await;
        lose(&mut redis, &settings.redis.namespace, &empty).await;
        let _: () = redis
            .del(format!("{}:sales", settings.redis.namespace))
            .await
            .expect("DEL registry");
        if let Ok(nats) = async_nats::connect(settings.nats.urls.as_slice()).await {
            let js = jetstream::new(nats);
            let _ = js.delete_stream(&settings.nats.stream).await;
            let _ = recovery.definitions().delete_bucket().await;
        }
    });
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
