//! A PUT of a sale: the definition is recorded in JetStream first, then written to Redis,
//! after the sale is rebuilt if Redis lost it; a PUT of an archived sku starts a new sale.

use crate::domain::Sku;
use crate::domain::queue::Queue;
use crate::domain::refusal::SaleRefusal;
use crate::domain::sale::{EarlyEnd, PutOutcome, Sale, SaleDefinition, SaleSettings};
use crate::recovery::{Recovery, RecoveryError};
use crate::store::{Failed, PutSaleError, StoreError};

impl Recovery {
    /// PUT: records the sale's settings in JetStream, then writes Redis. A sale JetStream
    /// knew but Redis lost is rebuilt first, so its sold units still count against the new
    /// stock. A refused PUT (stock below sold) puts the previous definition back.
    pub async fn put_sale(
        &self,
        sku: &Sku,
        settings: &SaleSettings,
        early_end: EarlyEnd,
    ) -> Result<(Sale, PutOutcome), PutSaleError> {
        let before = self
            .definitions()
            .get(sku)
            .await
            .map_err(RecoveryError::from)?;
        // A PUT of an archived sku starts a new sale, whose history starts where the order
        // stream stands now: its rebuilds and reads leave the archived sale's orders out.
        let archived = before.as_ref().and_then(|b| b.archived.as_ref());
        let history_from = match (archived, &before) {
            (Some(record), _) => {
                // What an interrupted archive left of the old sale goes first.
                self.rebuilder
                    .store
                    .drop_sealed(sku, record.sealed_revision)
                    .await?;
                Some(self.rebuilder.next_sequence().await?)
            }
            (None, Some(before)) => before.history_from,
            (None, None) => None,
        };
        // A PUT keeps what the sale ran to: its early end, and its queue's schedule (a new
        // rate from now on, a pause kept); ending, reopening, pausing and resuming say it.
        let running = before.as_ref().filter(|_| archived.is_none());
        let settings = &SaleSettings {
            ended_at: match (running, early_end) {
                (Some(before), EarlyEnd::Kept) => before.ended_at,
                (None, EarlyEnd::Kept) => None,
                _ => settings.ended_at,
            },
            queue: match early_end {
                EarlyEnd::Kept => settings.queue.as_ref().map(|queue| {
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let before = running.and_then(|b| b.queue.as_ref());
                    Queue::put(queue.settings, before, settings.starts_at, now_ms)
                }),
                EarlyEnd::AsSettingsSay => settings.queue.clone(),
            },
            ..settings.clone()
        };
        let definition = SaleDefinition {
            history_from,
            ..SaleDefinition::new(sku, settings)
        };
        let revision = self
            .definitions()
            .put(&definition)
            .await
            .map_err(RecoveryError::from)?;
        let put = self
            .on_sale(sku, || {
                self.rebuilder
                    .store
                    .put_sale(sku, settings, before.as_ref(), revision)
            })
            .await
            // Defined a moment ago: only a second loss in between finds no sale.
            .and_then(|found| found.map_err(|_| StoreError::SaleMissing.into()))
            // A new sale in place of an archived one is created, to the caller.
            .map(|(sale, put)| match archived {
                Some(_) => (sale, PutOutcome::Created),
                None => (sale, put),
            });
        if let (Err(Failed::Refused(SaleRefusal::StockBelowSold { .. })), Some(before)) =
            (&put, &before)
        {
            let reverted = match self.definitions().put(before).await {
                Ok(revision) => self
                    .rebuilder
                    .store
                    .put_sale(sku, &before.settings(), Some(before), revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = reverted {
                log::error!("sale {sku}: refused PUT not reverted: {e}");
            }
        }
        put
    }
}
