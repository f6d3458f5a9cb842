//! Change notices between replicas over NATS core: "sale X may have stock again" (after a
//! PUT or a cancel), so every replica drops its sold-out mark at once instead of at its
//! next re-check.
//!
//! The subject `<prefix>_changes.<sku>` lies outside the order stream's `<prefix>.>`, so the
//! notices are never stored as events. A lost notice costs at most the re-check interval.

use std::sync::Arc;

use futures::StreamExt;

use crate::domain::Sku;
use crate::store::Inventory;

#[derive(Clone)]
pub struct SaleChanges {
    nats: async_nats::Client,
    subject_prefix: String,
}

impl SaleChanges {
    pub fn new(nats: async_nats::Client, order_subject_prefix: &str) -> Self {
        Self {
            nats,
            subject_prefix: format!("{order_subject_prefix}_changes"),
        }
    }

    /// Tells every replica that `sku` may have stock again. Best effort: the re-check
    /// interval bounds what a lost notice costs.
    pub async fn announce(&self, sku: &str) {
        let subject = format!("{}.{sku}", self.subject_prefix);
        if let Err(e) = self.nats.publish(subject, bytes::Bytes::new()).await {
            log::debug!("sale change notice for {sku} not sent: {e}");
        }
    }

    /// Drops sold-out marks as notices arrive, until the subscription ends.
    pub async fn listen(self, inventory: Arc<Inventory>) {
        let subject = format!("{}.*", self.subject_prefix);
        let mut notices = match self.nats.subscribe(subject.clone()).await {
            Ok(notices) => notices,
            Err(e) => {
                log::warn!(
                    "cannot subscribe to {subject}; sold-out marks expire by re-check only: {e}"
                );
                return;
            }
        };
        while let Some(notice) = notices.next().await {
            if let Some(sku) = notice
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| Sku::parse(s).ok())
            {
                inventory.sold_out().clear(sku.as_str());
            }
        }
    }
}
