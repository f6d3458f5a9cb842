//! At most one action per key per interval, the first at once and the last never lost: what
//! a replica needs to tell the others "this sale sold" without one message per purchase.
//!
//! A call in a quiet key acts now (the leading edge). Calls inside the interval after it
//! collapse into one action at the interval's end (the trailing edge), so the last change is
//! always told, at most one interval late.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// What the caller does with this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Act now.
    Now,
    /// Act after this long, then call [`Throttle::fired`]; later calls until then are
    /// [`Admit::Pending`].
    After(Duration),
    /// An action already waits for the interval's end and covers this call.
    Pending,
}

struct Slot {
    acted_at: Instant,
    trailing: bool,
}

pub struct Throttle<K> {
    interval: Duration,
    slots: Mutex<HashMap<K, Slot>>,
}

/// Keys past this many are pruned of those idle for a whole interval.
const PRUNE_ABOVE: usize = 1024;

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, key: &K) -> Admit {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get_mut(key) {
            if slot.trailing {
                return Admit::Pending;
            }
            let since = now.duration_since(slot.acted_at);
            if since < self.interval {
                slot.trailing = true;
                return Admit::After(self.interval - since);
            }
            slot.acted_at = now;
            return Admit::Now;
        }
        if slots.len() >= PRUNE_ABOVE {
            let interval = self.interval;
            slots.retain(|_, s| s.trailing || now.duration_since(s.acted_at) < interval);
        }
        slots.insert(
            key.clone(),
            Slot {
                acted_at: now,
                trailing: false,
            },
        );
        Admit::Now
    }

    /// The trailing action of `key` ran: the next interval starts now.
    pub fn fired(&self, key: &K) {
        if let Some(slot) = self.slots.lock().get_mut(key) {
            slot.acted_at = Instant::now();
            slot.trailing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_call_acts_at_once_and_a_burst_after_it_acts_once_at_the_interval_end() {
        let throttle = Throttle::new(Duration::from_millis(100));
        assert_eq!(throttle.admit(&"a"), Admit::Now);
        tokio::time::advance(Duration::from_millis(30)).await;
        assert_eq!(
            throttle.admit(&"a"),
            Admit::After(Duration::from_millis(70))
        );
        assert_eq!(throttle.admit(&"a"), Admit::Pending);
        assert_eq!(throttle.admit(&"b"), Admit::Now, "keys are apart");
        tokio::time::advance(Duration::from_millis(70)).await;
        throttle.fired(&"a");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(
            throttle.admit(&"a"),
            Admit::After(Duration::from_millis(90)),
            "the trailing action started a new interval"
        );
        throttle.fired(&"a");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(throttle.admit(&"a"), Admit::Now, "quiet for an interval");
    }
}
