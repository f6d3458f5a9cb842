//! What the relay last saw of the outboxes: read by `/readyz`, written after each pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::Backlog;
use crate::support::backoff;

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

/// The longest the relay waits between failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The relay's failed passes in a row, and since when: logged once when they start and once
/// when they end, with how long they lasted, never a line per attempt.
#[derive(Debug, Default)]
pub(super) struct Failures {
    count: u32,
    since: Option<Instant>,
}

impl Failures {
    pub fn count(&self) -> u32 {
        self.count
    }

    /// A pass failed; true for the first of a run (counted as NATS lost).
    pub fn failed(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        let first = self.since.is_none();
        if first {
            self.since = Some(Instant::now());
            crate::support::metrics::record_dependency_lost("nats");
        }
        first
    }

    /// A pass delivered: the run of failures it ends, if any (how long, how many).
    pub fn ended(&mut self) -> Option<(Duration, u32)> {
        let since = self.since.take()?;
        Some((since.elapsed(), std::mem::take(&mut self.count)))
    }

    /// How long to wait before the next pass after a failure: doubling from 200 ms.
    pub fn backoff(&self) -> Duration {
        backoff::doubling(Duration::from_millis(200), self.count, MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_told_once_and_ends_with_its_length() {
        let mut failures = Failures::default();
        assert_eq!(failures.ended(), None, "nothing failed");
        assert!(failures.failed(), "the first failure starts a run");
        assert!(
            !failures.failed() && !failures.failed(),
            "the others do not"
        );
        assert_eq!(failures.backoff(), Duration::from_millis(800));
        let (_, attempts) = failures.ended().expect("a run ended");
        assert_eq!((attempts, failures.count()), (3, 0));
        assert_eq!(failures.ended(), None, "told once");
    }
}
