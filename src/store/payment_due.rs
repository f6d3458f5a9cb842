//! The cross-sale index of payment deadlines ([`payment_due`]): which sales have an order
//! awaiting payment, and from when one may be overdue. The sweeper (`expiry.rs`) reads only
//! this, so its cost follows the sales with deadlines, not the sales that exist.
//!
//! The index lives outside every sale's hash slot, so no sale script can write it. Its one
//! rule: a sale's score is at or before the earliest pay_by in the sale's own deadlines ZSET
//! (written atomically by `purchase.lua`). Everyone keeps it by writing the index *after*
//! the sale's keys: a purchase whose order became the sale's earliest deadline (the script
//! says so; with a fixed window, the first order pending) adds its pay_by with `ZADD LT`
//! after its script, and any other purchase writes nothing, its deadline being later than
//! one the index already covers; the sweeper,
//! after expiring, sets the next deadline (or removes the sale) and then reads the sale's
//! deadlines once more, lowering the score to what it finds. A purchase whose script ran
//! before that re-read is seen by it; one that ran after it writes its own `ZADD LT` after
//! the sweeper's write. So no deadline is ever left out; at worst a score is early and
//! costs one look. A process dying between a purchase's script and its `ZADD` is covered by
//! [`Store::index_all_deadlines`], run at start and now and then.

use redis::RedisError;

use super::keys::payment_due;
use super::{Store, StoreError};
use crate::domain::Sku;

/// Sales re-read per pipeline by [`Store::index_all_deadlines`].
const INDEX_CHUNK: usize = 500;

/// Sales whose earliest deadline may have passed, by Redis's clock.
#[derive(Debug, Default)]
pub struct DueSales {
    pub due: Vec<Sku>,
    /// When the earliest sale not yet due becomes due (Redis's clock, ms), if any.
    pub next_at: Option<i64>,
    /// Redis's clock when this was read (ms).
    pub now_ms: i64,
}

/// The sweeper's cross-sale index of payment deadlines (see the module's comment).
pub struct PaymentIndex<'a>(&'a Store);

impl Store {
    pub(super) fn payment_due(&self) -> PaymentIndex<'_> {
        PaymentIndex(self)
    }
}

impl PaymentIndex<'_> {
    /// Records that `sku` has an order due by `pay_by_ms` (lowering, never raising, its
    /// score).
    pub async fn index(&self, sku: &Sku, pay_by_ms: i64) -> Result<(), StoreError> {
        let mut redis = self.0.redis.connection();
        let added: Result<(), RedisError> = redis::cmd("ZADD")
            .arg(payment_due(self.0.redis.namespace()))
            .arg("LT")
            .arg(pay_by_ms)
            .arg(sku.as_str())
            .query_async(&mut redis)
            .await;
        self.0.redis.observe(added)
    }

    /// Up to `at_most` sales that may have an overdue order, in one round trip.
    pub async fn due(&self, at_most: usize) -> Result<DueSales, StoreError> {
        let mut redis = self.0.redis.connection();
        let ((secs, micros), earliest): ((i64, i64), Vec<(String, f64)>) = self.0.redis.observe(
            redis::pipe()
                .cmd("TIME")
                .zrange_withscores(payment_due(self.0.redis.namespace()), 0, at_most as isize)
                .query_async(&mut redis)
                .await,
        )?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut due_sales = DueSales {
            now_ms,
            ..DueSales::default()
        };
        for (sku, score) in earliest {
            let score = score as i64;
            if score >= now_ms {
                due_sales.next_at = Some(score);
                break;
            }
            match Sku::parse(&sku) {
                Ok(sku) => due_sales.due.push(sku),
                Err(_) => log::error!("payment index: {sku:?} is no sku, ignored"),
            }
        }
        Ok(due_sales)
    }

    /// After a sweep of `sku`: the index holds its next deadline, or not the sale when none
    /// is left, and then (see the module) is checked against the sale's deadlines again.
    pub async fn reindex(&self, sku: &Sku, next_due: Option<i64>) -> Result<(), StoreError> {
        let index = payment_due(self.0.redis.namespace());
        let mut update = redis::Cmd::new();
        match next_due {
            Some(at) => update.arg("ZADD").arg(&index).arg(at).arg(sku.as_str()),
            None => update.arg("ZREM").arg(&index).arg(sku.as_str()),
        };
        let mut recheck = redis::Cmd::new();
        recheck
            .arg("ZRANGE")
            .arg(self.0.redis.keys(sku).deadlines())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        // The index and the sale lie in different slots: in this order, not at once.
        let mut redis = self.0.redis.connection();
        let earliest: Vec<(String, f64)> = self
            .0
            .redis
            .observe(redis.query_in_order(vec![update, recheck]).await)?;
        match earliest.first() {
            Some((_, at)) if next_due.is_none_or(|next| (*at as i64) < next) => {
                self.0.payment_due().index(sku, *at as i64).await
            }
            _ => Ok(()),
        }
    }

    /// Puts every registered sale's earliest deadline into the index: the safety net for a
    /// purchase whose process died between its script and its [`Store::index_deadline`].
    /// Visits every sale, so it runs at start and then seldom.
    pub async fn index_all(&self) -> Result<usize, StoreError> {
        let sales = self.0.registered().await?;
        let mut indexed = 0;
        let mut redis = self.0.redis.connection();
        for chunk in sales.chunks(INDEX_CHUNK) {
            let reads = chunk
                .iter()
                .map(|sku| {
                    let mut read = redis::Cmd::new();
                    read.arg("ZRANGE")
                        .arg(self.0.redis.keys(sku).deadlines())
                        .arg(0)
                        .arg(0)
                        .arg("WITHSCORES");
                    read
                })
                .collect();
            let earliest: Vec<Vec<(String, f64)>> =
                self.0.redis.observe(redis.query_each(reads).await)?;
            let mut add = redis::pipe();
            let before = indexed;
            for (sku, first) in chunk.iter().zip(&earliest) {
                if let Some((_, at)) = first.first() {
                    add.cmd("ZADD")
                        .arg(payment_due(self.0.redis.namespace()))
                        .arg("LT")
                        .arg(*at as i64)
                        .arg(sku.as_str())
                        .ignore();
                    indexed += 1;
                }
            }
            if indexed > before {
                let added: Result<(), RedisError> = add.query_async(&mut redis).await;
                self.0.redis.observe(added)?;
            }
        }
        Ok(indexed)
    }
}
