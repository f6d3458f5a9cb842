//! Group commit: concurrent requests for one key (a sale) share one call to a server.
//!
//! While a call for a key is in flight, requests for that key that arrive queue here, and
//! the next call carries all of them (at most the queue's batch size), in arrival order.
//! There is no timer: a request that finds no call in flight starts one at once, so a lone
//! request waits for nothing and only a crowd is batched. Two use it: purchases share one
//! script call per sale (`store/purchase/`: one round trip, one script dispatch, one
//! `TIME` read for up to 128 purchases), and the events those purchases wrote share one
//! JetStream batch (`events/confirm.rs`: one acknowledgement and one fsync).
//!
//! The calls of a key run in a task of their own (the key's driver), not in a request's
//! future: a client that hangs up drops its request's future, and the requests queued
//! behind it must still be decided and answered. A driver that ends any other way than by
//! finding its queue empty (a panic) leaves through [`DriverGuard`], which takes its sale out
//! of the table and drops what waited: those purchases are answered 503 (retry with the
//! same Idempotency-Key), and the next purchase of the sale starts a new driver instead of
//! queueing behind one that is gone.

use std::collections::HashMap;

use parking_lot::Mutex;

/// The requests waiting per key (`T`: a request and where its answer goes; dropping it
/// answers the request as abandoned). A key is in the map exactly while its driver runs.
pub struct Batches<T> {
    waiting: Mutex<HashMap<String, Vec<T>>>,
    /// The most requests one call carries.
    max_batch: usize,
}

impl<T> Batches<T> {
    pub fn new(max_batch: usize) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues a purchase. True when the sale had no driver: the caller must start one.
    pub fn enqueue(&self, sku: &str, queued: T) -> bool {
        let mut waiting = self.waiting.lock();
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
    pub fn next(&self, sku: &str) -> Option<Vec<T>> {
        let mut waiting = self.waiting.lock();
        let queue = waiting.get_mut(sku)?;
        if queue.is_empty() {
            waiting.remove(sku);
            return None;
        }
        let rest = queue.split_off(queue.len().min(self.max_batch));
        Some(std::mem::replace(queue, rest))
    }
}

/// Held by a sale's driver for as long as it runs. Dropped after [`Batches::next`] found the
/// queue empty, it does nothing (the sale left the table in that step, and a new driver may
/// own the entry by now); dropped before that, the driver died with purchases queued
/// behind it: the sale leaves the table and the queued purchases' senders are dropped, so
/// each of them is answered (`StoreError::Abandoned`) rather than waiting for ever.
pub struct DriverGuard<'a, T> {
    batches: &'a Batches<T>,
    sku: &'a str,
    pub finished: bool,
}

impl<'a, T> DriverGuard<'a, T> {
    pub fn new(batches: &'a Batches<T>, sku: &'a str) -> Self {
        Self {
            batches,
            sku,
            finished: false,
        }
    }
}

impl<T> Drop for DriverGuard<'_, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let abandoned = self.batches.waiting.lock().remove(self.sku);
        log::error!(
            "sale {}: purchase driver died; {} queued purchases answered 503",
            self.sku,
            abandoned.map_or(0, |queue| queue.len())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A queued purchase is a sender of its answer; the test keeps the receiver.
    type Queued = oneshot::Sender<()>;

    fn queued() -> (Queued, oneshot::Receiver<()>) {
        oneshot::channel()
    }

    #[tokio::test]
    async fn a_driver_that_panics_leaves_the_sale_to_a_new_driver() {
        let batches = std::sync::Arc::new(Batches::<Queued>::new(8));
        let (first, first_answer) = queued();
        assert!(batches.enqueue("s", first), "no driver yet: start one");
        let driver = {
            let batches = batches.clone();
            tokio::spawn(async move {
                let _guard = DriverGuard::new(&batches, "s");
                let _batch = batches.next("s");
                panic!("a bug in the driver");
            })
        };
        assert!(driver.await.is_err(), "the driver panicked");
        assert!(
            first_answer.await.is_err(),
            "the purchase it held is answered (abandoned), not left waiting"
        );
        let (second, second_answer) = queued();
        assert!(
            batches.enqueue("s", second),
            "the next purchase starts a new driver instead of queueing behind a dead one"
        );
        drop(second_answer);
    }

    #[tokio::test]
    async fn a_driver_that_finishes_leaves_a_newer_driver_alone() {
        let batches = Batches::<Queued>::new(8);
        let (first, _first_answer) = queued();
        assert!(batches.enqueue("s", first));
        let mut guard = DriverGuard::new(&batches, "s");
        assert!(batches.next("s").is_some());
        assert!(batches.next("s").is_none(), "queue empty: the driver ends");
        guard.finished = true;
        // A new purchase starts a new driver before the old guard is dropped.
        let (second, _second_answer) = queued();
        assert!(batches.enqueue("s", second));
        drop(guard);
        let (third, _third_answer) = queued();
        assert!(
            !batches.enqueue("s", third),
            "the new driver's queue is still in the table"
        );
    }
}
