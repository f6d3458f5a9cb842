//! One purchase through the inventory API (the purchase script's round trip), beside a bare
//! PING on the same multiplexed connection as the reference measured in the same run.
//!
//! Needs the Redis of `scripts/services.sh`. Works in its own namespace and deletes it after.

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::config::{MAX_STOCK, Settings};
use flashsale::domain::{Quantity, Sku, UserId};
use flashsale::inventory::Inventory;
use flashsale::sale::SaleSettings;

fn purchase(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut settings = Settings::from_env().expect("valid FLASHSALE_* settings");
    settings.namespace = format!("fsbench-{}", std::process::id());
    let sku = Sku::parse("bench").expect("valid sku");
    let user = UserId::parse("bench-user".into()).expect("valid user");

    let inventory = runtime.block_on(async {
        let inventory = Inventory::new(&settings).expect("redis client");
        let sale = SaleSettings {
            stock: MAX_STOCK,
            per_user_limit: None,
            price: 100,
            starts_at: None,
            ends_at: None,
        };
        inventory
            .put_sale(&sku, &sale)
            .await
            .expect("bench needs Redis: run scripts/services.sh");
        inventory
    });

    let mut group = c.benchmark_group("purchase");
    group.bench_function("script_round_trip", |b| {
        b.to_async(&runtime).iter(|| async {
            inventory
                .purchase(&sku, &user, Quantity::ONE, None)
                .await
                .expect("purchase accepted")
        })
    });
    group.bench_function("redis_ping", |b| {
        b.to_async(&runtime)
            .iter(|| async { inventory.ping().await.expect("PING") })
    });
    group.finish();

    runtime.block_on(async {
        let keys = inventory.keys(&sku);
        let client = redis::Client::open(settings.redis_url.as_str()).expect("redis url");
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let _: () = redis::cmd("DEL")
            .arg(keys.sale())
            .arg(keys.orders())
            .arg(keys.buyers())
            .query_async(&mut redis)
            .await
            .expect("DEL bench keys");
    });
}

criterion_group!(benches, purchase);
criterion_main!(benches);
