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

    /// HASH order_id → the order's JSON record.
    pub fn orders(&self) -> String {
        self.key("orders")
    }

    /// HASH user_id → units held, for the per-user limit.
    pub fn buyers(&self) -> String {
        self.key("buyers")
    }

    /// STRING holding the order_id a given Idempotency-Key produced.
    pub fn idempotency(&self, key: &IdempotencyKey) -> String {
        format!("{}idem:{}", self.prefix, key.as_str())
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
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
        let idem = IdempotencyKey::parse(b"k{1}").expect("valid key");
        assert_eq!(keys.idempotency(&idem), "fs:test:{phone-1}:idem:k{1}");
    }
}
