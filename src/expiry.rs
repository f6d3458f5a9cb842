//! The expiry sweeper (定时关单), in every replica: orders not paid by their pay_by expire,
//! and their units go back to the sale.
//!
//! It holds no lock and needs none: `lua/transition.lua` decides each expiry on Redis's clock,
//! exactly once, against any payment or cancel (and any other replica's sweeper) arriving at
//! the same moment. Replicas only share the work. Each tick reads the cross-sale index of
//! deadlines (`store/payment_due.rs`, one round trip) and visits only the sales with an
//! order overdue, so an idle sale costs nothing. The index lives in Redis, so after every
//! replica was down the first one to start expires what fell due meanwhile.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Sku;
use crate::events::sale_changes::SaleChanges;
use crate::recovery::Recovery;
use crate::store::{Expiry, StoreError};
use crate::support::backoff;

/// The longest the sweeper sleeps: an order expires within about this of its pay_by.
const TICK: Duration = Duration::from_millis(200);
/// Sales taken per index read, and overdue orders expired per script call (each call holds
/// Redis for about 10 µs per order).
const SALES_PER_TICK: usize = 100;
const ORDERS_PER_CALL: usize = 500;
/// How often every sale's deadlines are indexed again (the safety net; see payment_due.rs).
const FULL_INDEX_EVERY: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Sweeper {
    store: Expiry,
    recovery: Arc<Recovery>,
    sale_changes: SaleChanges,
}

impl Sweeper {
    pub fn new(store: Expiry, recovery: Arc<Recovery>, sale_changes: SaleChanges) -> Self {
        Self {
            store,
            recovery,
            sale_changes,
        }
    }

    /// Runs for the life of the process.
    pub async fn run(self) {
        let mut failures: u32 = 0;
        let mut indexed_at: Option<tokio::time::Instant> = None;
        loop {
            if indexed_at.is_none_or(|at| at.elapsed() >= FULL_INDEX_EVERY) {
                match self.store.payment_due().index_all().await {
                    Ok(sales) => {
                        log::info!("expiry sweeper: {sales} sales with orders awaiting payment");
                        indexed_at = Some(tokio::time::Instant::now());
                    }
                    Err(e) => log::debug!("deadlines not indexed yet: {e}"),
                }
            }
            let delay = match self.tick().await {
                Ok(delay) => {
                    if failures > 0 {
                        log::info!("expiry sweeper running again after {failures} failures");
                    }
                    failures = 0;
                    delay
                }
                Err(e) => {
                    if failures == 0 {
                        log::warn!("expiry sweeper cannot reach redis, backing off: {e}");
                    }
                    failures = failures.saturating_add(1);
                    backoff::doubling(Duration::from_millis(200), failures, MAX_BACKOFF)
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Expires what is overdue now; returns how long to sleep before the next look.
    async fn tick(&self) -> Result<Duration, StoreError> {
        let due = self.store.payment_due().due(SALES_PER_TICK).await?;
        let more = due.due.len() > SALES_PER_TICK;
        for sku in &due.due {
            self.sweep(sku).await?;
        }
        if more {
            return Ok(Duration::ZERO);
        }
        // Wake at the next deadline (+1 ms: expiry is for pay_by < now), or at the next tick.
        Ok(due
            .next_at
            .map(|at| Duration::from_millis((at - due.now_ms + 1).max(0) as u64))
            .map_or(TICK, |until| until.min(TICK)))
    }

    async fn sweep(&self, sku: &Sku) -> Result<(), StoreError> {
        let mut released = 0;
        let next_due = loop {
            let expired = self
                .recovery
                .on_sale(sku, || self.store.expire_overdue(sku, ORDERS_PER_CALL))
                .await?
                // Defined nowhere (deleted): nothing to expire, and out of the index.
                .unwrap_or_default();
            released += expired.units;
            if expired.orders > 0 {
                log::info!(
                    "sale {sku}: {} orders expired unpaid, {} units back",
                    expired.orders,
                    expired.units
                );
            }
            if expired.orders < ORDERS_PER_CALL {
                break expired.next_due;
            }
        };
        self.store.payment_due().reindex(sku, next_due).await?;
        if released > 0 {
            // Units are back: other replicas drop their sold-out mark, as after a cancel.
            self.sale_changes.restocked(sku).await;
        }
        Ok(())
    }
}
