//! Putting a sale back into Redis after Redis lost it: the state is folded from the sale's
//! events ([`SaleSnapshot`]), staged under keys of its own, and installed by `lua/restore.lua`
//! in one atomic step that refuses to overwrite a sale Redis holds.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::Value;

use super::record::{buyer_entry, encode, order_field};
use super::reply::Reply;
use super::transition::Expired;
use super::{Store, StoreError};
use crate::domain::order::OrderStatus;
use crate::domain::queue::Queue;
use crate::domain::sale::SaleDefinition;
use crate::domain::snapshot::SaleSnapshot;

/// Fields per staging HSET: large enough to stage 100,000 orders in a few hundred commands,
/// small enough that no single command holds Redis for long.
const STAGE_CHUNK: usize = 2_000;
/// Staging keys of an attempt that died half-way expire after this.
const STAGE_TTL_MS: u64 = 120_000;

/// What [`Store::restore`] installed (`None` from it: this primary held the sale
/// already, another replica restored it first, say).
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    /// Redis held a copy another primary wrote (a promoted replica, a moved slot), which may
    /// have been behind, and the rebuild replaced it; false: Redis held nothing of the sale
    /// (lost, or new).
    pub replaced_stale: bool,
    /// Orders the history left awaiting payment whose pay_by had passed on Redis's clock:
    /// installed expired, their events queued (`lua/restore.lua`).
    pub expired: Expired,
    /// Units sold once installed (after those expiries).
    pub sold: u64,
}

impl Store {
    /// Installs the rebuilt sale unless this Redis primary wrote the sale itself.
    pub(super) async fn restore(
        &self,
        definition: &SaleDefinition,
        snapshot: &SaleSnapshot,
    ) -> Result<Option<Restored>, StoreError> {
        let sku = &definition.sku;
        let keys = self.redis.keys(sku);
        let attempt = staging_token();
        let staged = |name: &str| keys.staging(&attempt, name);
        let (staged_orders, staged_buyers, staged_idem, staged_deadlines) = (
            staged("orders"),
            staged("buyers"),
            staged("idem"),
            staged("deadlines"),
        );

        let mut pipe = redis::pipe();
        let records = (snapshot.records()).map(|(id, record)| (order_field(id), encode(&record)));
        stage(&mut pipe, &staged_orders, records);
        let buyers = (snapshot.buyers().into_iter())
            .map(|(user, (held, ids))| (user, buyer_entry(held, &ids)));
        stage(&mut pipe, &staged_buyers, buyers);
        let ttl_ms = self.idempotency_ttl.as_millis() as i64;
        stage(
            &mut pipe,
            &staged_idem,
            snapshot
                .idempotency_keys()
                .map(|(key, id, created_at_ms)| (key, format!("{}:{id}", created_at_ms + ttl_ms))),
        );
        let deadlines: Vec<(i64, &str)> = snapshot.deadlines().map(|(id, at)| (at, id)).collect();
        for chunk in deadlines.chunks(STAGE_CHUNK) {
            pipe.zadd_multiple(&staged_deadlines, chunk).ignore();
        }
        for key in [
            &staged_orders,
            &staged_buyers,
            &staged_idem,
            &staged_deadlines,
        ] {
            pipe.pexpire(key, STAGE_TTL_MS as i64).ignore();
        }
        let mut redis = self.redis.connection();
        let staged_all: Result<(), _> = pipe.query_async(&mut redis).await;
        self.redis.observe(staged_all)?;
        // Registered before the sale exists, as a PUT does.
        self.register(sku).await?;

        let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
        let mut call = self.scripts.restore.prepare_invoke();
        call.key(keys.sale())
            .key(keys.orders())
            .key(keys.buyers())
            .key(&staged_orders)
            .key(&staged_buyers)
            .key(&staged_idem)
            .key(keys.deadlines())
            .key(&staged_deadlines)
            .key(keys.outbox())
            .arg(sku.as_str())
            .arg(definition.stock)
            .arg(snapshot.sold())
            .arg(optional(definition.per_user_limit.map(|l| l as i64)))
            .arg(definition.price)
            .arg(optional(definition.starts_at))
            .arg(optional(definition.ends_at))
            .arg(snapshot.seq())
            .arg(keys.idempotency_prefix())
            .arg(definition.revision)
            .arg(optional(definition.payment_timeout_secs.map(|t| t as i64)))
            .arg(optional(definition.ended_at))
            .arg(snapshot.count(OrderStatus::Paid))
            .arg(snapshot.count(OrderStatus::Expired))
            .arg(snapshot.count(OrderStatus::Cancelled))
            .arg(
                definition
                    .queue
                    .as_ref()
                    .map(Queue::encode)
                    .unwrap_or_default(),
            );
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "restored" => {
                // Stock may be back (a new empty sale): ask Redis again.
                self.sold_out.clear(sku.as_str());
                let restored = Restored {
                    replaced_stale: reply.int(2)? == 1,
                    expired: Expired {
                        orders: reply.uint(3)? as usize,
                        units: reply.uint(4)?,
                        next_due: reply.optional_int(6)?,
                    },
                    sold: reply.uint(5)?,
                };
                if restored.expired.orders > 0 {
                    self.wrote_outbox(sku);
                    for _ in 0..restored.expired.orders {
                        crate::support::metrics::record_transition(OrderStatus::Expired.as_str());
                    }
                }
                Ok(Some(restored))
            }
            "exists" => Ok(None),
            _ => Err(reply.corrupt()),
        }
    }
}

/// Adds `HSET key field value …` commands for `pairs`, in chunks.
fn stage<'a>(
    pipe: &mut redis::Pipeline,
    key: &str,
    pairs: impl Iterator<Item = (&'a str, String)>,
) {
    let mut chunk: Vec<(&str, String)> = Vec::with_capacity(STAGE_CHUNK);
    for pair in pairs {
        chunk.push(pair);
        if chunk.len() == STAGE_CHUNK {
            pipe.hset_multiple(key, &chunk).ignore();
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        pipe.hset_multiple(key, &chunk).ignore();
    }
}

/// Unique per restore attempt in this process and across replicas.
fn staging_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
