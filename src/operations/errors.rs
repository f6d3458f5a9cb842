//! The operations' errors, in the words their callers (the HTTP edge, `/kill`) act on: a
//! refusal (`domain/refusal.rs`), or no answer now. The store's errors name Redis (a copy
//! missing, a reply unreadable, the outage gate closed, a rebuild not done); here they become
//! "try again" or "a bug", logged once where that is decided.

use crate::recovery::RecoveryError;
use crate::store::{Failed, StoreError};

/// Why an operation gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// Redis or JetStream cannot answer now; a retry may (with its Idempotency-Key).
    #[error("the service cannot answer now; try again")]
    Unavailable,
    /// A reply that matches nothing the scripts return: a bug or foreign data.
    #[error("internal error")]
    Internal,
}

/// Why an operation changed nothing: a refusal (`R`), or no answer.
#[derive(Debug, thiserror::Error)]
pub enum OperationError<R> {
    #[error(transparent)]
    Refused(R),
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
}

impl From<StoreError> for Unanswered {
    fn from(e: StoreError) -> Self {
        match e {
            // Already logged by the store's outage gate when Redis went away.
            StoreError::Unavailable(_) => Unanswered::Unavailable,
            StoreError::Corrupt(detail) => {
                log::error!("unexpected reply from redis: {detail}");
                Unanswered::Internal
            }
            // Retryable: the sale comes back once JetStream answers.
            StoreError::NotRebuilt(reason) => {
                log::warn!("{reason}");
                Unanswered::Unavailable
            }
            // Lost again right after its rebuild: rare, and a retry rebuilds it.
            StoreError::SaleMissing => Unanswered::Unavailable,
            // The process is stopping; a retry (with its Idempotency-Key) finds the outcome.
            StoreError::Abandoned => Unanswered::Unavailable,
            // Bounded wait, then a retryable answer (with Retry-After).
            StoreError::NotAnswering => Unanswered::Unavailable,
        }
    }
}

impl<R> From<Failed<R>> for OperationError<R> {
    fn from(e: Failed<R>) -> Self {
        match e {
            Failed::Refused(refusal) => OperationError::Refused(refusal),
            Failed::Store(e) => OperationError::Unanswered(e.into()),
        }
    }
}

impl<R> From<StoreError> for OperationError<R> {
    fn from(e: StoreError) -> Self {
        OperationError::Unanswered(e.into())
    }
}

impl From<RecoveryError> for Unanswered {
    fn from(e: RecoveryError) -> Self {
        StoreError::from(e).into()
    }
}
