use crate::domain::{IdempotencyKey, Sku};

/// The Redis keys of one sale. All carry the `{sku}` hash tag, so on Redis Cluster they share
/// a slot and one script may touch them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleKeys {
    /// `<ns>:{<sku>}:`: every key of the sale starts with it.
    prefix: String,
}

impl SaleKeys {
    pub fn new(namespace: &str, sku: &Sku) -> Self {
        Self {
            prefix: format!("{namespace}:{{{sku}}}:"),
        }
    }

    /// HASH of the sale's settings and counters (stock, sold, ...).
    pub fn sale(&self) -> String {
        self.key("sale")
    }

    /// HASH order_id → the order's record (see `lua/purchase.lua`).
    pub fn orders(&self) -> String {
        self.key("orders")
    }

    /// HASH user_id → `<units held>:<order ids>`: the per-user limit's tally and the buyer's
    /// newest orders (see `lua/purchase.lua`).
    pub fn buyers(&self) -> String {
        self.key("buyers")
    }

    /// STREAM of order events waiting for the relay (the outbox).
    pub fn outbox(&self) -> String {
        self.key("outbox")
    }

    /// ZSET order_id → pay_by ms of the orders awaiting payment: the expiry sweeper's index.
    pub fn deadlines(&self) -> String {
        self.key("deadlines")
    }

    /// ZSET user_id → a random score: who joined the sale's waiting room before its start
    /// (`lua/queue.lua`).
    pub fn queue_early(&self) -> String {
        self.key("queue:early")
    }

    /// HASH user_id → place: who joined the waiting room after the start.
    pub fn queue_places(&self) -> String {
        self.key("queue:places")
    }

    /// STRING naming the replica that relays this sale's outbox (with a TTL).
    pub fn relay_lease(&self) -> String {
        self.key("relay")
    }

    /// STRING holding the order_id a given Idempotency-Key produced.
    pub fn idempotency(&self, key: &IdempotencyKey) -> String {
        format!("{}{}", self.idempotency_prefix(), key.as_str())
    }

    /// What every idempotency key of the sale starts with (`lua/restore.lua` appends the key).
    pub fn idempotency_prefix(&self) -> String {
        self.key("idem:")
    }

    /// A staging key of one restore attempt (`store/restore.rs`), in the sale's slot.
    pub fn staging(&self, attempt: &str, name: &str) -> String {
        format!("{}restore:{attempt}:{name}", self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// HASH of every sale created through the API: sku digest → sku. It lets a cancel find the
/// sale of an order id, and the relay find every outbox. It lives outside any sale's hash slot,
/// so it is written by its own command, before the sale itself.
pub fn sale_registry(namespace: &str) -> String {
    format!("{namespace}:sales")
}

/// ZSET sku → a time (ms, Redis's clock) at or before the earliest payment deadline of the
/// sale: the sweeper's index of sales to look at, so it never visits an idle sale. Like the
/// registry it is outside every sale's slot, so it is written by commands of its own after
/// the sale's script (see `payment_due.rs` for why that order cannot lose a deadline).
pub fn payment_due(namespace: &str) -> String {
    format!("{namespace}:payment_due")
}

/// SET of skus whose outbox may hold events not yet in JetStream: the relay's index, so it
/// never visits an idle sale (see `store/waiting.rs`). Outside every sale's slot.
pub fn outbox_waiting(namespace: &str) -> String {
    format!("{namespace}:outbox_waiting")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_sku_hash_tag_under_the_namespace() {
        let sku = Sku::parse("phone-1").expect("valid sku");
        let keys = SaleKeys::new("fs:test", &sku);
        assert_eq!(keys.sale(), "fs:test:{phone-1}:sale");
        assert_eq!(keys.orders(), "fs:test:{phone-1}:orders");
        assert_eq!(keys.outbox(), "fs:test:{phone-1}:outbox");
        let idem = IdempotencyKey::parse(b"k{1}").expect("valid key");
        assert_eq!(keys.idempotency(&idem), "fs:test:{phone-1}:idem:k{1}");
    }
}
