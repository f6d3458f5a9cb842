//! Changes to a sale's definition: a PUT, an end, a reopen (pausing and resuming its queue
//! are in `queue.rs`). Each is recorded in JetStream first, like every setting, so a sale
//! rebuilt after a Redis loss is as the operator left it.

use super::{OperationError, Operations};
use crate::domain::Sku;
use crate::domain::refusal::SaleRefusal;
use crate::domain::sale::{EarlyEnd, PutOutcome, Sale, SaleDefinition, SaleSettings};
use crate::recovery::RecoveryError;
use crate::store::StoreError;

impl Operations {
    /// Creates or replaces a sale, and tells the other replicas: stock or window may have
    /// changed, so they drop their sold-out marks. A sale ended early stays ended: only
    /// [`Operations::reopen_sale`] reopens it.
    pub async fn put_sale(
        &self,
        sku: &Sku,
        settings: &SaleSettings,
    ) -> Result<(Sale, PutOutcome), OperationError<SaleRefusal>> {
        let put = self
            .recovery
            .put_sale(sku, settings, EarlyEnd::Kept)
            .await?;
        self.lines.forget(sku);
        self.sale_changes.restocked(sku).await;
        Ok(put)
    }

    /// Ends a sale now (ending an ended sale keeps its first end).
    pub async fn end_sale(&self, sku: &Sku) -> Result<Sale, OperationError<SaleRefusal>> {
        self.end_or_reopen(sku, Switch::End).await
    }

    /// Reopens a sale ended early, to its window and stock.
    pub async fn reopen_sale(&self, sku: &Sku) -> Result<Sale, OperationError<SaleRefusal>> {
        self.end_or_reopen(sku, Switch::Reopen).await
    }

    /// Ends or reopens a sale. Recorded as a new revision of its definition in
    /// JetStream, like a PUT, so a rebuild after a Redis loss keeps it ended.
    async fn end_or_reopen(
        &self,
        sku: &Sku,
        switch: Switch,
    ) -> Result<Sale, OperationError<SaleRefusal>> {
        let ended = switch == Switch::End;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (sale, definition) = self
            .change_definition(sku, |definition| {
                Ok(SaleSettings {
                    ended_at: ended.then(|| definition.ended_at.unwrap_or(now_ms)),
                    ..definition.settings()
                })
            })
            .await?;
        let settings_ended_at = sale.ended_at.is_some();
        if definition.ended_at.is_some() != settings_ended_at {
            log::info!(
                "sale {sku} {}",
                if ended { "ended early" } else { "reopened" }
            );
        }
        // Reopening is as a restock to the replicas' sold-out marks; both change the state.
        if ended {
            self.sale_changes.state_changed(sku).await;
        } else {
            self.sale_changes.restocked(sku).await;
        }
        Ok(sale)
    }

    /// Records a new revision of a running sale's definition (an end, a reopen, a pause, a
    /// resume): `change` makes its settings from the definition as it stands. Returns the
    /// sale as Redis then holds it, and the definition it changed.
    pub(super) async fn change_definition(
        &self,
        sku: &Sku,
        change: impl FnOnce(&SaleDefinition) -> Result<SaleSettings, SaleRefusal>,
    ) -> Result<(Sale, SaleDefinition), OperationError<SaleRefusal>> {
        let definition = self
            .definition(sku)
            .await?
            .ok_or(OperationError::Refused(SaleRefusal::SaleNotFound))?;
        if definition.archived.is_some() {
            return Err(OperationError::Refused(SaleRefusal::SaleArchived));
        }
        let settings = change(&definition).map_err(OperationError::Refused)?;
        let (sale, _) = self
            .recovery
            .put_sale(sku, &settings, EarlyEnd::AsSettingsSay)
            .await?;
        self.lines.forget(sku);
        Ok((sale, definition))
    }

    pub(super) async fn definition(&self, sku: &Sku) -> Result<Option<SaleDefinition>, StoreError> {
        let definition = self.recovery.definitions().get(sku).await;
        Ok(definition.map_err(RecoveryError::from)?)
    }
}

/// What [`Operations::end_or_reopen`] does to a sale.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
    End,
    Reopen,
}
