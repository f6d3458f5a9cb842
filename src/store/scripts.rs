//! The script registry: every script of `lua/`, built once, loaded into Redis at start and
//! called by EVALSHA (the redis crate loads one again on `NOSCRIPT`: Redis restarted, or
//! `SCRIPT FLUSH`).

use redis::{RedisError, Script};

use super::LAYOUT;
use super::gate::Redis;

/// A script of `lua/`: the layout of a sale's keys as a line of Lua ([`LAYOUT`]), the shared
/// `prelude.lua`, then its files in order (the shared part first). Built into the binary;
/// with the `mutation` feature read from the repository when the store is made, so
/// `scripts/mutate-lua.py` tests each changed script without a rebuild.
macro_rules! lua_script {
    ($($file:literal),+) => {{
        #[cfg(not(feature = "mutation"))]
        let files = concat!(
            include_str!("../../lua/prelude.lua"),
            $(include_str!(concat!("../../lua/", $file))),+
        );
        #[cfg(feature = "mutation")]
        let files: String = ["prelude.lua", $($file),+]
            .iter()
            .map(|file| {
                let path = format!("{}/lua/{file}", env!("CARGO_MANIFEST_DIR"));
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
            })
            .collect();
        Script::new(&format!("local LAYOUT = '{LAYOUT}'\n{files}"))
    }};
}

/// One per script; a store call picks its script by name.
pub(super) struct Scripts {
    pub purchase: Script,
    pub put_sale: Script,
    pub transition: Script,
    pub relay_lease: Script,
    pub restore: Script,
    pub read_orders: Script,
    pub archive: Script,
    pub queue: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            purchase: lua_script!("purchase.lua"),
            put_sale: lua_script!("put_sale.lua"),
            transition: lua_script!("order_moves.lua", "transition.lua"),
            relay_lease: lua_script!("relay_lease.lua"),
            restore: lua_script!("order_moves.lua", "restore.lua"),
            read_orders: lua_script!("read_orders.lua"),
            archive: lua_script!("archive.lua"),
            queue: lua_script!("queue.lua"),
        }
    }

    /// Loads every script, so the first calls go straight to EVALSHA.
    pub async fn load(&self, redis: &Redis) -> Result<(), RedisError> {
        let mut connection = redis.connection();
        for (name, script) in [
            ("purchase", &self.purchase),
            ("put_sale", &self.put_sale),
            ("transition", &self.transition),
            ("relay_lease", &self.relay_lease),
            ("restore", &self.restore),
            ("read_orders", &self.read_orders),
            ("archive", &self.archive),
            ("queue", &self.queue),
        ] {
            let sha = script.prepare_invoke().load_async(&mut connection).await?;
            log::info!("lua script {name} loaded: {sha}");
        }
        Ok(())
    }
}
