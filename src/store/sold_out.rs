//! The sold-out fast path: once a sale is known to be empty, this replica answers `sold_out`
//! from memory instead of asking Redis, which is what most of a stampede asks.
//!
//! It can only delay a sale, never let one through: a mark only ever turns requests away,
//! and it is dropped (so the next request asks Redis again) when this or another replica
//! announces a restock or a cancellation, and in any case after `recheck`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::domain::Sku;

pub struct SoldOutCache {
    recheck: Duration,
    /// sku → when Redis last said it was empty.
    marks: RwLock<HashMap<String, Instant>>,
}

impl SoldOutCache {
    pub fn new(recheck: Duration) -> Self {
        Self {
            recheck,
            marks: RwLock::new(HashMap::new()),
        }
    }

    /// True while a fresh mark says the sale has nothing left.
    pub fn is_sold_out(&self, sku: &Sku) -> bool {
        self.marks
            .read()
            .get(sku.as_str())
            .is_some_and(|marked| marked.elapsed() < self.recheck)
    }

    /// Redis said the sale has nothing left.
    pub fn mark(&self, sku: &Sku) {
        self.marks.write().insert(sku.to_string(), Instant::now());
    }

    /// Stock may be back: ask Redis again.
    pub fn clear(&self, sku: &str) {
        self.marks.write().remove(sku);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire_and_clear() {
        let sku = Sku::parse("s").expect("sku");
        let cache = SoldOutCache::new(Duration::from_millis(30));
        assert!(!cache.is_sold_out(&sku));
        cache.mark(&sku);
        assert!(cache.is_sold_out(&sku));
        cache.clear("s");
        assert!(!cache.is_sold_out(&sku));
        cache.mark(&sku);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.is_sold_out(&sku), "re-checked after the interval");
    }
}
