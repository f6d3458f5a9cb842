//! The stock, held in Redis. Every decision about a sale is one Lua script call (see `lua/`),
//! so this module only builds keys, calls scripts and reads their replies.
//!
//! [`Store`] is made of parts with one job each: [`Redis`](gate.rs) (the connection and
//! its outage gate), [`Scripts`](scripts.rs) (the script registry), the purchase batches
//! (`purchase/`), the outbox tracker (`waiting.rs`) and the sold-out marks. The modules outside
//! `store/` never hold the store itself: each holds the narrow handle of its role
//! (`handles.rs`): [`Sales`] for the operations, [`Outbox`] for the relay and the confirming
//! handlers, [`Expiry`] for the sweeper, [`Archive`] for the archiver, [`Rebuild`] for
//! recovery.
//!
//! Everything shares one connection ([`RedisConnection`]: one multiplexed connection, or the
//! cluster client): concurrent requests are pipelined onto it. 64 commands in flight take
//! 0.2 ms on it against 1.3–1.8 ms through a bb8-redis pool (`benches/connections.rs`). It
//! reconnects by itself. (One connection per thread measured no better, within noise, and
//! after a Redis restart each of them failed a request before reconnecting, where one
//! connection fails one.) The one exception: a script call followed by `WAIT`, which blocks
//! its connection, takes one of its own (`gate.rs`: `Redis::writer`).

mod archive;
mod connection;
mod delivering;
mod gate;
mod handles;
mod keys;
mod outbox;
mod payment_due;
mod purchase;
mod queue;
mod read;
pub(crate) mod record;
mod registry;
mod reply;
mod restore;
mod sales;
mod scripts;
pub mod sold_out;
mod transition;
mod waiting;

use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;

use crate::domain::refusal::{OrderRefusal, PurchaseRefusal, SaleRefusal};
use crate::store::sold_out::SoldOutCache;
use crate::support::settings::RedisSettings;

use gate::Redis;
use purchase::Purchases;
use scripts::Scripts;
use waiting::OutboxTracker;

/// The layout of a sale's keys, appended to the replication id a sale's `primary` field
/// records (see `lua/prelude.lua`: `this_primary`). A sale an earlier layout wrote then reads as a copy from
/// elsewhere and is rebuilt from JetStream in this layout, as after a failover: layout 2 (issue
/// 23) keys orders by a short field and keeps each buyer's list in the buyers hash.
pub const LAYOUT: &str = "/2";
pub use connection::RedisConnection;
pub use delivering::Delivering;
pub use handles::{Archive, Expiry, Rebuild, Sales};
pub use keys::{SaleKeys, payment_due, sale_registry};
pub use outbox::{Backlog, CreatedEvent, Outbox, OutboxEntry, WrittenEntry, written_ms};
pub use payment_due::{DueSales, PaymentIndex};
pub use purchase::{Listing, MAX_BATCH, Purchase, PurchaseRequest};
pub use queue::{JoinError, JoinReply, Joined, Reservation};
pub use read::OrderQuery;
pub use restore::Restored;
pub use sales::OrderCounts;
pub use transition::{Ended, Expired};

/// Why Redis could not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] RedisError),
    /// A reply that does not match what the scripts return: a bug or foreign data.
    #[error("unexpected reply from redis: {0}")]
    Corrupt(String),
    /// Redis does not hold the sale: never created, or lost. Nothing was decided; the caller
    /// rebuilds it from JetStream (`recovery/rebuild.rs`) or answers that it does not exist.
    #[error("redis does not hold this sale")]
    SaleMissing,
    /// Redis lost the sale and it could not be rebuilt from JetStream (yet): NATS down, or
    /// the rebuild took longer than allowed.
    #[error("sale not rebuilt: {0}")]
    NotRebuilt(String),
    /// The task deciding a batch of purchases was torn down before it answered (the runtime
    /// shutting down): the purchase may or may not have been decided.
    #[error("purchase abandoned before its answer")]
    Abandoned,
    /// Redis gave no answer within FLASHSALE_REDIS_TIMEOUT_MS, a purchase's wait for its
    /// sale's next call included; or Redis is known not to answer (the last call failed) and
    /// another request is already finding out whether it is back.
    #[error("redis did not answer in time")]
    NotAnswering,
}

/// A store call that changed nothing: a rule refused it (`R`, in the domain's words:
/// `domain/refusal.rs`), or Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Failed<R> {
    #[error(transparent)]
    Refused(R),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type PurchaseError = Failed<PurchaseRefusal>;
pub type TransitionError = Failed<OrderRefusal>;
pub type PutSaleError = Failed<SaleRefusal>;

/// The whole Redis store, built once at start; the rest of the service holds its handles.
pub struct Store {
    redis: Redis,
    scripts: Scripts,
    /// How long an Idempotency-Key's answer is kept: a restored order's key, and a sealed
    /// sale's keys, live as long.
    idempotency_ttl: Duration,
    outboxes: OutboxTracker,
    purchases: Purchases,
    sold_out: Arc<SoldOutCache>,
}

impl Store {
    /// Prepares the connection without opening it: the service starts (and answers 503)
    /// while Redis is down, and connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Arc<Self>, RedisError> {
        Ok(Arc::new(Self {
            redis: Redis::new(settings)?,
            scripts: Scripts::new(),
            idempotency_ttl: settings.idempotency_ttl,
            outboxes: OutboxTracker::default(),
            purchases: Purchases::new(settings),
            sold_out: Arc::new(SoldOutCache::new(settings.sold_out_recheck)),
        }))
    }

    /// Loads the scripts so the first purchases go straight to EVALSHA. Calls still recover
    /// from NOSCRIPT (Redis restarted or `SCRIPT FLUSH`) by loading again.
    pub async fn load_scripts(&self) -> Result<(), RedisError> {
        self.scripts.load(&self.redis).await
    }

    /// Whether Redis holds a copy of the sale it can decide on: one this primary wrote (the
    /// check every script makes first; a copy another primary wrote may be behind).
    async fn sale_exists(&self, sku: &crate::domain::Sku) -> Result<bool, StoreError> {
        match self.read_orders(sku, &OrderQuery::Ids(&[])).await {
            Ok(_) => Ok(true),
            Err(StoreError::SaleMissing) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
