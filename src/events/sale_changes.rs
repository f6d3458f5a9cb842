//! Change notices between replicas over NATS core: "sale X may have stock again" (after a
//! PUT or a cancel), so every replica drops its sold-out mark at once instead of at its
//! next re-check.
//!
//! The same subjects carry what the live streams need (`live/`): "sale X sold" (its counts
//! changed) and "sale X changed state" (sold out, ended, reopened), so every replica re-reads a
//! watched sale within a moment of a change on any replica.
//!
//! Subjects, all outside the order stream's `<prefix>.>`, so never stored as events:
//! - `<prefix>_changes.<sku>`: stock may be back (a PUT, a cancel, an expiry);
//! - `<prefix>_changes.<sku>.sold`: units sold, at most [`SOLD_NOTICE_INTERVAL`] apart per
//!   sale and replica (the last sale of a burst is always told);
//! - `<prefix>_changes.<sku>.state`: the state changed without stock coming back.
//!
//! A lost notice costs at most the sold-out re-check interval, and a live stream's count a
//! moment's staleness until the next notice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::domain::Sku;
use crate::store::sold_out::SoldOutCache;
use crate::support::throttle::{Admit, Throttle};

/// The most "sold" notices one replica sends for one sale in this time: one.
pub const SOLD_NOTICE_INTERVAL: Duration = Duration::from_millis(100);

/// What a notice tells, read back from its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Stock may be back.
    Restocked,
    /// Units sold.
    Sold,
    /// The state changed (sold out, ended, reopened).
    State,
}

#[derive(Clone)]
pub struct SaleChanges {
    nats: async_nats::Client,
    subject_prefix: String,
    sold: Arc<Throttle<Sku>>,
}

impl SaleChanges {
    pub fn new(nats: async_nats::Client, order_subject_prefix: &str) -> Self {
        Self {
            nats,
            subject_prefix: format!("{order_subject_prefix}_changes"),
            sold: Arc::new(Throttle::new(SOLD_NOTICE_INTERVAL)),
        }
    }

    /// Tells every replica that `sku` sold units, and not its last ones. Called on every new
    /// order; sends at most one notice per [`SOLD_NOTICE_INTERVAL`].
    pub async fn sold(&self, sku: &Sku) {
        match self.sold.admit(sku) {
            Admit::Now => self.send(sku, ".sold").await,
            Admit::Pending => {}
            Admit::After(wait) => {
                let changes = self.clone();
                let sku = sku.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    changes.sold.fired(&sku);
                    changes.send(&sku, ".sold").await;
                });
            }
        }
    }

    /// Tells every replica that the state of `sku` changed while its stock did not come back.
    pub async fn state_changed(&self, sku: &Sku) {
        self.send(sku, ".state").await
    }

    async fn send(&self, sku: &Sku, suffix: &str) {
        let subject = format!("{}.{sku}{suffix}", self.subject_prefix);
        if let Err(e) = self.nats.publish(subject, bytes::Bytes::new()).await {
            log::debug!("sale change notice for {sku} not sent: {e}");
        }
    }

    /// Every notice, as `(sku, change)`, until the subscription ends (the live streams).
    pub async fn subscribe(
        &self,
    ) -> Result<impl futures::Stream<Item = (Sku, Change)> + use<>, async_nats::SubscribeError>
    {
        let prefix = format!("{}.", self.subject_prefix);
        let notices = self.nats.subscribe(format!("{prefix}>")).await?;
        Ok(notices.filter_map(move |notice| {
            let parsed = notice
                .subject
                .strip_prefix(prefix.as_str())
                .and_then(parse_notice);
            std::future::ready(parsed)
        }))
    }

    /// Tells every replica that `sku` may have stock again. Best effort: the re-check
    /// interval bounds what a lost notice costs.
    pub async fn restocked(&self, sku: &Sku) {
        self.send(sku, "").await
    }

    /// Drops sold-out marks as notices arrive, until the subscription ends.
    pub async fn listen(self, sold_out: Arc<SoldOutCache>) {
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
                sold_out.clear(sku.as_str());
            }
        }
    }
}

/// `<sku>`, `<sku>.sold` or `<sku>.state`, as the subject after the prefix reads.
fn parse_notice(rest: &str) -> Option<(Sku, Change)> {
    let (sku, change) = match rest.split_once('.') {
        None => (rest, Change::Restocked),
        Some((sku, "sold")) => (sku, Change::Sold),
        Some((sku, "state")) => (sku, Change::State),
        Some(_) => return None,
    };
    Some((Sku::parse(sku).ok()?, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_their_sale_and_change() {
        let sku = |s| Sku::parse(s).expect("valid sku");
        assert_eq!(parse_notice("a-1"), Some((sku("a-1"), Change::Restocked)));
        assert_eq!(parse_notice("a-1.sold"), Some((sku("a-1"), Change::Sold)));
        assert_eq!(parse_notice("a-1.state"), Some((sku("a-1"), Change::State)));
        assert_eq!(parse_notice("a-1.other"), None);
        assert_eq!(parse_notice("no good.sold"), None);
    }
}
