//! What the relay last saw of the outboxes: read by `/readyz`, written after each pass.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Backlog;

/// What the relay last saw; read by `/readyz`.
#[derive(Debug, Default)]
pub struct RelayStatus {
    pending: AtomicU64,
    oldest_age_ms: AtomicU64,
}

impl RelayStatus {
    pub fn backlog(&self) -> Backlog {
        Backlog {
            pending: self.pending.load(Ordering::Relaxed),
            oldest_age_ms: self.oldest_age_ms.load(Ordering::Relaxed),
            ..Backlog::default()
        }
    }

    pub(super) fn record(&self, backlog: Backlog) {
        crate::support::metrics::record_backlog(backlog.pending, backlog.oldest_age_ms);
        self.pending.store(backlog.pending, Ordering::Relaxed);
        self.oldest_age_ms
            .store(backlog.oldest_age_ms, Ordering::Relaxed);
    }
}
