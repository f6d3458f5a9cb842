//! Does a connection pool pay? 64 requests in flight at once, as 64 HTTP connections make
//! them, against the same Redis, each way the service could hold its connections:
//!
//! - `redis_64_in_flight/multiplexed`: one multiplexed connection ([`ConnectionManager`]),
//!   what each thread of the service holds: the 64 commands are pipelined onto one socket;
//! - `redis_64_in_flight/bb8_pool_8`, `…/bb8_pool_64`: a bb8-redis pool, a connection checked
//!   out per command, one command in flight per connection.
//!
//! Each iteration sends 64 `INCR`s of one key concurrently and waits for all of them. Needs
//! the Redis of `scripts/services.sh`; uses one key of its own and deletes it after.

use bb8_redis::RedisConnectionManager;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::join_all;
use redis::aio::ConnectionManager;

const IN_FLIGHT: usize = 64;

fn redis_url() -> String {
    std::env::var("FLASHSALE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn connections(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = format!("fsbench-connections-{}", std::process::id());
    let client = redis::Client::open(redis_url()).expect("redis url");
    let multiplexed = runtime
        .block_on(ConnectionManager::new(client))
        .expect("bench needs Redis: run scripts/services.sh");
    let pool = |size: u32| {
        runtime.block_on(async {
            let manager = RedisConnectionManager::new(redis_url()).expect("redis url");
            bb8::Pool::builder()
                .max_size(size)
                .min_idle(Some(size))
                .build(manager)
                .await
                .expect("pool")
        })
    };
    let small_pool = pool(8);
    let large_pool = pool(IN_FLIGHT as u32);

    let mut group = c.benchmark_group("redis_64_in_flight");
    group.bench_function("multiplexed", |b| {
        b.to_async(&runtime).iter(|| async {
            join_all((0..IN_FLIGHT).map(|_| {
                let mut redis = multiplexed.clone();
                let key = &key;
                async move {
                    redis::cmd("INCR")
                        .arg(key)
                        .query_async::<u64>(&mut redis)
                        .await
                        .expect("INCR")
                }
            }))
            .await
        })
    });
    for (name, pool) in [("bb8_pool_8", &small_pool), ("bb8_pool_64", &large_pool)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                join_all((0..IN_FLIGHT).map(|_| {
                    let key = &key;
                    async move {
                        let mut redis = pool.get().await.expect("pooled connection");
                        redis::cmd("INCR")
                            .arg(key)
                            .query_async::<u64>(&mut *redis)
                            .await
                            .expect("INCR")
                    }
                }))
                .await
            })
        });
    }
    group.finish();

    runtime.block_on(async {
        let mut redis = multiplexed.clone();
        let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut redis).await;
    });
}

criterion_group!(benches, connections);
criterion_main!(benches);
