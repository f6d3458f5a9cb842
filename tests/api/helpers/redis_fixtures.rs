//! Redis fixtures: a server a test can empty, and its command counts.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;

use super::{TestApp, free_port, private_redis};

/// A redis-server of the test's own that can lose everything on demand.
pub struct LosableRedis {
    port: u16,
    child: tokio::process::Child,
}

impl LosableRedis {
    pub async fn start() -> Self {
        let port = free_port();
        Self {
            port,
            child: private_redis(port).await,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts an empty one on the same port, as a restart without
    /// persistence does.
    pub async fn restart_empty(&mut self) {
        self.child.kill().await.expect("redis-server killed");
        self.child = private_redis(self.port).await;
    }

    /// Restarts empty, then waits until `apps` have reconnected (the first request on a
    /// connection Redis dropped is answered 503, as during any outage).
    pub async fn restart_empty_for(&mut self, apps: &[&TestApp]) {
        self.restart_empty().await;
        for app in apps {
            app.wait_until_ready().await;
            app.wait_for_redis().await;
        }
    }
}

/// Calls per command, as `INFO commandstats` reports them.
pub async fn command_calls(redis: &mut MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, command: &str) -> u64 {
    after.get(command).copied().unwrap_or(0) - before.get(command).copied().unwrap_or(0)
}

/// Waits (up to 10 s) until a client of this Redis is held by a `CLIENT PAUSE` (counted as
/// blocked while it waits): a call that is in flight, not merely sent.
pub async fn wait_until_a_client_is_held(redis: &mut MultiplexedConnection) {
    for _ in 0..500 {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(redis)
            .await
            .expect("INFO clients");
        let blocked = info
            .lines()
            .find_map(|line| line.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("blocked_clients in INFO clients");
        if blocked > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no call reached the paused redis in 10 s");
}
