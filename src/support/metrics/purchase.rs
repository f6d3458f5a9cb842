//! The purchase path's metrics, registered once into handles so that recording is an atomic
//! add, not a registry lookup per request.

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use super::{FAST_PATH, PURCHASE_BATCH, PURCHASES, SCRIPT_SECONDS};

/// Purchase outcomes, as the `outcome` label says them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Replayed,
    SoldOut,
    UserLimitReached,
    SaleNotOpen,
    SaleNotFound,
    InvalidQuantity,
    IdempotencyConflict,
    SaleInconsistent,
    Unavailable,
    /// The waiting room's refusals: a place not admitted yet, an admission lapsed, no token
    /// (or a forged one, another buyer's, an earlier line's: `invalid_queue_token`).
    NotAdmitted,
    AdmissionExpired,
    QueueTokenRequired,
}

impl Outcome {
    const ALL: [Outcome; 13] = [
        Outcome::Created,
        Outcome::Replayed,
        Outcome::SoldOut,
        Outcome::UserLimitReached,
        Outcome::SaleNotOpen,
        Outcome::SaleNotFound,
        Outcome::InvalidQuantity,
        Outcome::IdempotencyConflict,
        Outcome::SaleInconsistent,
        Outcome::Unavailable,
        Outcome::NotAdmitted,
        Outcome::AdmissionExpired,
        Outcome::QueueTokenRequired,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Replayed => "replayed",
            Outcome::SoldOut => "sold_out",
            Outcome::UserLimitReached => "user_limit_reached",
            Outcome::SaleNotOpen => "sale_not_open",
            Outcome::SaleNotFound => "sale_not_found",
            Outcome::InvalidQuantity => "invalid_quantity",
            Outcome::IdempotencyConflict => "idempotency_conflict",
            Outcome::SaleInconsistent => "sale_inconsistent",
            Outcome::Unavailable => "unavailable",
            Outcome::NotAdmitted => "not_admitted",
            Outcome::AdmissionExpired => "admission_expired",
            Outcome::QueueTokenRequired => "invalid_queue_token",
        }
    }
}

/// Registered handles of the purchase path's metrics (no-ops when metrics are off).
pub struct PurchaseMetrics {
    outcomes: [Counter; Outcome::ALL.len()],
    fast_path: Counter,
    script: Histogram,
    batch: Histogram,
}

impl PurchaseMetrics {
    pub fn register() -> Self {
        Self {
            outcomes: Outcome::ALL.map(|o| counter!(PURCHASES, "outcome" => o.label())),
            fast_path: counter!(FAST_PATH),
            script: histogram!(SCRIPT_SECONDS),
            batch: histogram!(PURCHASE_BATCH),
        }
    }

    pub fn outcome(&self, outcome: Outcome) {
        // ALL lists every variant in declaration order.
        self.outcomes[outcome as usize].increment(1);
    }

    pub fn fast_path(&self) {
        self.fast_path.increment(1);
    }

    pub fn script(&self, took: Duration) {
        self.script.record(took);
    }

    /// Purchases one script call decided (group commit).
    pub fn batch(&self, purchases: usize) {
        self.batch.record(purchases as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_indexes_match_the_label_table() {
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{}", outcome.label());
        }
    }
}
