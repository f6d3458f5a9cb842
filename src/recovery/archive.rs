//! Ended sales leave Redis (渐出): the archiver, in every replica, and the reads of what left.
//!
//! A sale whose window closed, that an operator ended or that sold out, with no payment
//! pending and every event in JetStream, is archived `FLASHSALE_ARCHIVE_AFTER_SECS` after its
//! last change (and not before its last Idempotency-Key expired, so a retried purchase still
//! replays). Three steps, each idempotent, no lock (`lua/archive.lua` says why it is safe):
//! Redis seals the sale at the definition's revision; the definition in JetStream records
//! the archive (compare-and-set on that revision: a PUT in between wins); Redis drops the
//! sale's keys if it is still sealed. A rebuild of an archived definition installs nothing
//! (`rebuild.rs`); its orders are read from the record here, without writing Redis.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::domain::order::OrderView;
use crate::domain::sale::SaleDefinition;
use crate::domain::snapshot::SaleSnapshot;
use crate::domain::{OrderId, Sku, UserId};
use crate::recovery::{Recovery, RecoveryError};
use crate::store::{Archive, StoreError};
use crate::support::metrics;
use crate::support::settings::RecoverySettings;

/// The longest the archiver sleeps between passes.
const MAX_PASS_EVERY: Duration = Duration::from_secs(60);
/// Sales failing one after the other that end a pass.
const FAILURES_TO_STOP: usize = 3;

pub struct Archiver {
    store: Archive,
    recovery: Arc<Recovery>,
    /// FLASHSALE_ARCHIVE_AFTER_SECS.
    after: Duration,
    /// `/kill`'s sale stays: its buyers expect it there, and it has no window to end.
    default_sku: Sku,
}

impl Archiver {
    pub fn new(store: Archive, recovery: Arc<Recovery>, settings: &RecoverySettings) -> Self {
        Self {
            store,
            recovery,
            after: settings.archive_after,
            default_sku: settings.default_sku.clone(),
        }
    }

    /// Runs for the life of the process: a pass over the registry every quarter of the delay
    /// (at most a minute), so a sale leaves within about 1.25 delays of its last change.
    pub async fn run(self) {
        let every = (self.after / 4).clamp(Duration::from_millis(200), MAX_PASS_EVERY);
        let mut failing = false;
        loop {
            tokio::time::sleep(every).await;
            match self.pass().await {
                Ok(archived) => {
                    if failing {
                        log::info!("archiver running again");
                    }
                    failing = false;
                    if archived > 0 {
                        log::info!("archiver: {archived} sales left redis");
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!("archiver pass failed, trying again in {every:?}: {e}");
                    }
                    failing = true;
                }
            }
        }
    }

    /// One look at every sale Redis holds; how many it archived.
    pub async fn pass(&self) -> Result<usize, RecoveryError> {
        let (mut archived, mut failed_in_a_row) = (0, 0);
        for sku in self.store.sales().await? {
            if sku == self.default_sku {
                continue;
            }
            match self.archive(&sku).await {
                Ok(left) => {
                    archived += usize::from(left);
                    failed_in_a_row = 0;
                }
                // One sale's trouble (a definition that does not read, say) must not hold up
                // every other archive; several in a row mean Redis or NATS is away: stop, as
                // each would wait out its own timeout.
                Err(e) => {
                    metrics::record_archive(false);
                    failed_in_a_row += 1;
                    if failed_in_a_row == FAILURES_TO_STOP {
                        return Err(e);
                    }
                    log::warn!("archiver: sale {sku} not archived this pass: {e}");
                }
            }
        }
        Ok(archived)
    }

    /// Archives the sale if it is due; true when its keys left Redis.
    async fn archive(&self, sku: &Sku) -> Result<bool, RecoveryError> {
        let definitions = self.recovery.definitions();
        let mut record = match self.store.seal(sku, self.after).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(false),
            // Not held here (lost, or a stale copy: a request rebuilds it first); if its
            // definition says archived, what is left of it goes.
            Err(StoreError::SaleMissing) => {
                if let Some(definition) = definitions.get(sku).await?
                    && let Some(archived) = definition.archived
                {
                    self.store
                        .drop_sealed(sku, archived.sealed_revision)
                        .await?;
                    self.leave_registry(sku).await?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        let revision = record.sealed_revision;
        let Some(mut definition) = definitions.get(sku).await? else {
            self.store.unseal(sku, revision).await?;
            return Ok(false);
        };
        match definition.archived.clone() {
            // Archived by another replica, or by a pass that stopped before the drop: drop.
            // (Its figures are rewritten if they differ: an unseal after a failed update.)
            Some(earlier) if earlier.sealed_revision == revision => {
                record.archived_at_ms = earlier.archived_at_ms;
                if earlier != record {
                    definition.archived = Some(record);
                    definitions.update(&definition).await?;
                }
            }
            // A PUT wrote a later definition: it reopened the sale, which stays.
            _ if definition.revision != revision => {
                self.store.unseal(sku, revision).await?;
                return Ok(false);
            }
            _ => {
                record.archived_at_ms = chrono::Utc::now().timestamp_millis();
                definition.archived = Some(record);
                // Lost to another write (a PUT, another replica's archive): the sale stays
                // sealed, and the next pass decides from the definition that won.
                if definitions.update(&definition).await?.is_none() {
                    return Ok(false);
                }
            }
        }
        let dropped = self.store.drop_sealed(sku, revision).await?;
        if dropped {
            self.leave_registry(sku).await?;
            metrics::record_archive(true);
            log::info!("sale {sku} archived: its keys left redis, its orders read from jetstream");
        }
        Ok(dropped)
    }

    /// Takes an archived sale out of the registry, unless a PUT started the sku anew: a PUT
    /// records its definition before it registers the new sale, so a definition read after
    /// the removal that no longer says archived means the new sale may have registered
    /// before it, and is registered again.
    async fn leave_registry(&self, sku: &Sku) -> Result<(), RecoveryError> {
        self.store.unregister(sku).await?;
        let definition = self.recovery.definitions().get(sku).await?;
        if definition.is_some_and(|d| d.archived.is_none()) {
            self.store.register(sku).await?;
        }
        Ok(())
    }
}

/// Archived sales' folded histories, kept by sku and definition revision. An archived sale's
/// events never change, so a replica reads them from JetStream once, not once a request:
/// each reading places a consumer on the stream, and buyers look at their orders long after
/// a sale ended.
#[derive(Default)]
pub struct ArchivedHistories {
    /// Oldest first: (sku, revision, history).
    held: Mutex<VecDeque<(String, u64, Arc<SaleSnapshot>)>>,
    /// Held while a history is read: the first reads of a sale, arriving together, wait for
    /// one reading instead of each placing a consumer (32 at once measured a p99 of 340 ms).
    reading: tokio::sync::Mutex<()>,
}

/// The most archived sales, and orders in all, a replica keeps folded (about 100 bytes an
/// order: 20 MB at most).
const CACHED_SALES: usize = 256;
const CACHED_ORDERS: usize = 200_000;

impl ArchivedHistories {
    fn get(&self, sku: &Sku, revision: u64) -> Option<Arc<SaleSnapshot>> {
        let held = self.held.lock();
        held.iter()
            .find(|(s, r, _)| s == sku.as_str() && *r == revision)
            .map(|(_, _, history)| history.clone())
    }

    fn keep(&self, sku: &Sku, revision: u64, history: Arc<SaleSnapshot>) {
        let mut held = self.held.lock();
        held.push_back((sku.to_string(), revision, history));
        let mut orders: usize = held.iter().map(|(_, _, h)| h.orders()).sum();
        while held.len() > 1 && (held.len() > CACHED_SALES || orders > CACHED_ORDERS) {
            if let Some((_, _, gone)) = held.pop_front() {
                orders -= gone.orders();
            }
        }
    }
}

/// An archived sale's history: folded once per replica (see [`ArchivedHistories`]).
async fn archived_history(
    recovery: &Recovery,
    definition: &SaleDefinition,
) -> Result<Arc<SaleSnapshot>, RecoveryError> {
    let (sku, revision) = (&definition.sku, definition.revision);
    let histories = recovery.archived_histories();
    if let Some(history) = histories.get(sku, revision) {
        return Ok(history);
    }
    let _reading = histories.reading.lock().await;
    if let Some(history) = histories.get(sku, revision) {
        return Ok(history);
    }
    let from = definition.history_from.unwrap_or(1);
    let history = Arc::new(recovery.history(sku, from).await?);
    histories.keep(sku, revision, history.clone());
    Ok(history)
}

/// The order from the record, for a sale Redis does not hold: archived (its own history), or
/// started anew by a PUT after an archive (then the order may be of an earlier sale of the
/// sku: the whole history is read). `None` when the record has no such order.
pub async fn order_of_record(
    recovery: &Recovery,
    definition: &SaleDefinition,
    order_id: &OrderId,
) -> Result<Option<OrderView>, RecoveryError> {
    let sku = definition.sku.as_str();
    if definition.archived.is_some() {
        let history = archived_history(recovery, definition).await?;
        return Ok(history.view(order_id.as_str(), sku));
    }
    let history = recovery.history(&definition.sku, 1).await?;
    Ok(history.view(order_id.as_str(), sku))
}

/// An archived sale's orders of one buyer from the record, newest first, at most `newest`.
pub async fn buyer_orders_of_record(
    recovery: &Recovery,
    definition: &SaleDefinition,
    user: &UserId,
    newest: usize,
) -> Result<Vec<OrderView>, RecoveryError> {
    let history = archived_history(recovery, definition).await?;
    Ok(history.buyer_views(user.as_str(), definition.sku.as_str(), newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_histories_are_kept_by_sku_and_revision() {
        let histories = ArchivedHistories::default();
        let sku = |i: usize| Sku::parse(&format!("s{i}")).expect("valid sku");
        for i in 0..CACHED_SALES + 10 {
            histories.keep(&sku(i), 7, Arc::new(SaleSnapshot::default()));
        }
        assert!(histories.get(&sku(0), 7).is_none(), "the oldest went");
        assert!(histories.get(&sku(CACHED_SALES + 9), 7).is_some());
        assert!(
            histories.get(&sku(CACHED_SALES + 9), 8).is_none(),
            "another revision is another history"
        );
        assert_eq!(histories.held.lock().len(), CACHED_SALES);
    }
}
