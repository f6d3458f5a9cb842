//! Group commit: concurrent purchases of one sale in this replica share one script call.
//!
//! While a call for a sale is in flight, purchases of that sale that arrive queue here, and
//! the next call carries all of them (at most [`MAX_BATCH`]), in arrival order. There is no
//! timer: a purchase that finds no call in flight starts one at once, so a lone purchase
//! waits for nothing and only a crowd is batched. Under a stampede this turns N round trips,
//! N script dispatches and N `TIME` / `HMGET` reads into one each.
//!
//! The calls of a sale run in a task of their own (the sale's driver), not in a request's
//! future: a client that hangs up drops its request's future, and the purchases queued
//! behind it must still be decided and answered.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::purchase::{Purchase, PurchaseError, PurchaseRequest};

/// The most purchases one script call decides. Bounded because Redis runs nothing else
/// during the call: at the ~10 µs of Redis time a purchase measured in a batch
/// (BENCHMARKS.md), a full batch holds it for about 1.3 ms.
pub const MAX_BATCH: usize = 128;

/// A purchase waiting for its sale's next call, and where its answer goes.
pub(super) struct Queued {
    pub request: PurchaseRequest,
    pub answer: oneshot::Sender<Result<Purchase, PurchaseError>>,
}

/// The purchases waiting per sale. A sale is in the map exactly while its driver runs.
#[derive(Default)]
pub(super) struct Batches {
    waiting: Mutex<HashMap<String, Vec<Queued>>>,
}

impl Batches {
    /// Queues a purchase. True when the sale had no driver: the caller must start one.
    pub fn enqueue(&self, sku: &str, queued: Queued) -> bool {
        let mut waiting = self.lock();
        // Looked up by &str first: the sku is copied only for the purchase that starts a
        // driver, not for each one that joins the queue.
        if let Some(queue) = waiting.get_mut(sku) {
            queue.push(queued);
            return false;
        }
        waiting.insert(sku.to_owned(), vec![queued]);
        true
    }

    /// The next batch of a sale, oldest first. `None` when nothing waits: the driver then
    /// ends, and leaves the map in the same step, so the next purchase starts a new one.
    pub fn next(&self, sku: &str) -> Option<Vec<Queued>> {
        let mut waiting = self.lock();
        let queue = waiting.get_mut(sku)?;
        if queue.is_empty() {
            waiting.remove(sku);
            return None;
        }
        let rest = queue.split_off(queue.len().min(MAX_BATCH));
        Some(std::mem::replace(queue, rest))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Queued>>> {
        // A panic while holding the lock cannot leave the map half-updated (each critical
        // section is one map operation), so a poisoned lock is safe to use.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
