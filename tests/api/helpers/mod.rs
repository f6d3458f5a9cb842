//! One way to start the service for a test: [`spawn_app`], on a random port, against the real
//! Redis and NATS, in a namespace (Redis key prefix) and with a default sku no other test uses.

pub mod metrics;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod redis_fixtures;
pub mod sse;

use std::collections::{BTreeMap, HashSet};

use flashsale::startup::Application;
use flashsale::store::RedisConnection;
use flashsale::support::settings::Settings;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

pub use crate::servers::{
    free_port, private_redis_with, redis_connection, signal, unique, wait_for_port,
};

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The key the test apps sign their waiting rooms' queue tokens with.
pub const QUEUE_KEY: &str = "test-queue-key";

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub namespace: String,
    pub default_sku: String,
    pub client: reqwest::Client,
    /// A direct connection to the Redis the app uses (one server or the cluster), to check
    /// its state independently (it reconnects, as tests restart their private servers).
    pub redis: RedisConnection,
}

/// A script of `lua/` as the repository holds it now (read at run time, so a mutation run of
/// `scripts/mutate-lua.py` reaches the tests that call a script directly too).
/// Joined as the service joins it: the layout line, `prelude.lua`, then the script.
pub fn lua_source(file: &str) -> String {
    let read = |file: &str| {
        let path = format!("{}/lua/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let layout = flashsale::store::LAYOUT;
    format!(
        "local LAYOUT = '{layout}'\n{}{}",
        read("prelude.lua"),
        read(file)
    )
}

/// Settings of a test app: defaults of the contract, port 0, its own namespace and sku, and
/// the single NATS server FLASHSALE_TEST_NATS_URL names (scripts/test.sh: the durable one;
/// unset, the default 127.0.0.1:4222).
pub fn test_settings() -> Settings {
    let mut settings = Settings::from_lookup(|_| None).expect("defaults are valid");
    settings.http.bind = "127.0.0.1:0".parse().expect("valid address");
    settings.redis.namespace = unique("fstest");
    settings.recovery.default_sku =
        flashsale::domain::Sku::parse(&unique("default")).expect("valid sku");
    settings.http.admin_token = Some(ADMIN_TOKEN.into());
    settings.http.queue_key = Some(QUEUE_KEY.into());
    settings.http.workers = 2;
    settings.nats.stream = unique("FSTEST");
    settings.nats.subject_prefix = unique("fstest");
    // Dead replicas' leftovers are claimed quickly in tests.
    settings.relay.claim_idle = std::time::Duration::from_millis(1000);
    // Tests assert outcomes, not latency: on a starved machine (CI beside a build) a reply
    // slower than the default second would turn a decided purchase into an ambiguous 503.
    settings.redis.timeout = std::time::Duration::from_secs(5);
    // The live feeds' own refresh out of the way: within a test a change reaches viewers by
    // its notice or the clock, or not at all (the refresh itself is tested on its own).
    settings.http.live_refresh = std::time::Duration::from_secs(600);
    if let Ok(url) = std::env::var("FLASHSALE_TEST_NATS_URL") {
        settings.nats.urls = vec![url.parse().expect("FLASHSALE_TEST_NATS_URL is a nats url")];
    }
    if cluster_topology() {
        settings.redis.url = redis_cluster_seeds().join(",");
        settings.nats.urls = nats_cluster_seeds();
        settings.nats.stream_replicas = 3;
        // A new stream's first acknowledgements wait for its three copies to elect a leader,
        // and a stampede's for three copies on two shared cores.
        settings.nats.confirm_timeout = std::time::Duration::from_secs(10);
    }
    settings
}

/// Whether the suite runs on the clusters of `scripts/cluster.sh` (FLASHSALE_TEST_TOPOLOGY=
/// cluster) rather than on the single Redis and NATS (`single`, the default). Tests that
/// start servers of their own keep using those.
pub fn cluster_topology() -> bool {
    match std::env::var("FLASHSALE_TEST_TOPOLOGY").as_deref() {
        Err(_) | Ok("single") => false,
        Ok("cluster") => true,
        Ok(other) => panic!("FLASHSALE_TEST_TOPOLOGY={other}: expected single or cluster"),
    }
}

/// Seed nodes of the Redis Cluster (FLASHSALE_TEST_REDIS_CLUSTER, comma-separated; default:
/// the first three of `scripts/cluster.sh`).
pub fn redis_cluster_seeds() -> Vec<String> {
    std::env::var("FLASHSALE_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:21001,redis://127.0.0.1:21002,redis://127.0.0.1:21003".into()
        })
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The NATS cluster's servers (FLASHSALE_TEST_NATS_CLUSTER; default: `scripts/cluster.sh`'s).
pub fn nats_cluster_seeds() -> Vec<async_nats::ServerAddr> {
    std::env::var("FLASHSALE_TEST_NATS_CLUSTER")
        .unwrap_or_else(|_| {
            "nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224".into()
        })
        .split(',')
        .map(|url| url.parse().expect("nats url"))
        .collect()
}

/// Points `settings` at a NATS server of the test's own: a single server, so one copy of
/// each stream.
pub fn use_nats(settings: &mut Settings, url: &str) {
    settings.nats.urls = vec![url.parse().expect("nats url")];
    settings.nats.stream_replicas = 1;
}

/// A connection to each master of the Redis Cluster that `seed` belongs to, by address.
pub async fn cluster_masters(seed: &str) -> Vec<(String, MultiplexedConnection)> {
    let mut any = redis_connection(seed).await;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut any)
        .await
        .unwrap_or_else(|e| {
            panic!("redis cluster at {seed} does not answer (scripts/cluster.sh up): {e}")
        });
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail") {
            let address = fields[1].split('@').next().unwrap_or_default().to_owned();
            let connection = redis_connection(&format!("redis://{address}")).await;
            masters.push((address, connection));
        }
    }
    masters
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with [`test_settings`] changed by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    adjust(&mut settings);
    spawn_app_from(settings).await
}

/// Starts the app with exactly these settings (a second replica of another app, say).
pub async fn spawn_app_from(settings: Settings) -> TestApp {
    spawn_stoppable(settings).await.0
}

/// The app, what stops it, and the task that serves until then (it returns once every part of
/// the app has ended).
pub async fn spawn_stoppable(
    settings: Settings,
) -> (
    TestApp,
    flashsale::startup::Stopper,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let namespace = settings.redis.namespace.clone();
    let default_sku = settings.recovery.default_sku.to_string();
    let application = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let redis = check_connection(&settings);
    let stopper = application.stopper();
    let serving = tokio::spawn(application.run_until_stopped());
    let app = TestApp {
        address,
        settings,
        namespace,
        default_sku,
        client: http_client(),
        redis,
    };
    (app, stopper, serving)
}

/// A client that lets idle connections go well before the server does (75 s): reusing one the
/// server is closing fails the request mid-send (hyper's `IncompleteMessage`).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("a reqwest client with default TLS settings builds")
}

/// The app as a process of its own (the real binary, given `settings` through the environment):
/// its `/metrics` counts what this test did and nothing else. The recorder of in-process apps
/// is process-wide, shared by every test running beside them. The process dies with the
/// returned child.
pub async fn spawn_metered(settings: Settings) -> (tokio::process::Child, TestApp) {
    let (child, app) = process::spawn_process(&settings).await;
    app.wait_until_ready().await;
    (child, app)
}

/// A reconnecting connection for checks to the Redis of `settings` (a server or a cluster),
/// opened on first use (some tests point the app at a closed port on purpose); a test that
/// needs Redis and cannot reach it fails at that use.
pub fn check_connection(settings: &Settings) -> RedisConnection {
    RedisConnection::new(&settings.redis).expect("valid redis url")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let response = self.client.get(self.url(path)).send().await;
        response.unwrap_or_else(|e| panic!("GET {path} answered: {e}"))
    }

    pub async fn healthz_status(&self) -> u16 {
        self.get("/healthz").await.status().as_u16()
    }

    pub async fn put_sale(&self, sku: &str, body: Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/sales/{sku}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("PUT sale answered")
    }

    /// Creates a sale and checks it was created.
    pub async fn create_sale(&self, sku: &str, body: Value) {
        let response = self.put_sale(sku, body).await;
        assert_eq!(response.status().as_u16(), 201, "sale {sku} created");
    }

    pub async fn get_sale(&self, sku: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/sales/{sku}")))
            .send()
            .await
            .expect("GET sale answered")
    }

    pub async fn sale_json(&self, sku: &str) -> Value {
        let response = self.get_sale(sku).await;
        assert_eq!(response.status().as_u16(), 200, "sale {sku} exists");
        response.json().await.expect("sale is JSON")
    }

    /// One unit for `user`: the answer's status and body (null when it is not JSON).
    pub async fn buy(&self, sku: &str, user: &str) -> (u16, Value) {
        let response = self.order(sku, user, 1).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// One unit for `user`, which must be accepted (201, or 202 while JetStream is late):
    /// the order.
    pub async fn buy_accepted(&self, sku: &str, user: &str) -> Value {
        let (status, order) = self.buy(sku, user).await;
        assert!([201, 202].contains(&status), "{status}: {order}");
        order
    }

    pub async fn order(&self, sku: &str, user_id: &str, quantity: u64) -> reqwest::Response {
        self.order_with_key(sku, json!({"user_id": user_id, "quantity": quantity}), None)
            .await
    }

    pub async fn order_with_key(
        &self,
        sku: &str,
        body: Value,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/sales/{sku}/orders")))
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("POST order answered")
    }

    /// Cancels an order with the admin token.
    pub async fn cancel(&self, order_id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/orders/{order_id}/cancel")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("cancel answered")
    }

    pub async fn kill(&self, user_id: Option<&str>) -> (u16, String) {
        let url = match user_id {
            Some(user) => self.url(&format!("/kill?user_id={user}")),
            None => self.url("/kill"),
        };
        let response = self.client.get(url).send().await.expect("/kill answered");
        let status = response.status().as_u16();
        (status, response.text().await.expect("/kill has a body"))
    }

    pub fn key(&self, sku: &str, name: &str) -> String {
        format!("{}:{{{sku}}}:{name}", self.namespace)
    }

    /// The events waiting in the sale's outbox, oldest first, as (kind, order_id), read
    /// without the service: an entry holds the events of one script call, a line each, its
    /// order id first (entries of versions before batches: one event, in fields).
    pub async fn outbox_event_ids(&self, sku: &str) -> Vec<(String, String)> {
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut self.redis.clone(), self.key(sku, "outbox"))
                .await
                .expect("XRANGE");
        let mut events = Vec::new();
        for entry in &entries.ids {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            match entry.get::<String>("events") {
                Some(lines) => events.extend(lines.lines().map(|line| {
                    let id = line.split('\t').next().unwrap_or_default();
                    (field("kind"), id.to_owned())
                })),
                None => events.push((field("kind"), field("order_id"))),
            }
        }
        events
    }

    /// How many events wait in the sale's outbox.
    pub async fn outbox_events(&self, sku: &str) -> usize {
        self.outbox_event_ids(sku).await.len()
    }

    /// How many entries (messages to be) wait in the sale's outbox: what `/readyz` counts.
    pub async fn outbox_entries(&self, sku: &str) -> u64 {
        redis::AsyncCommands::xlen(&mut self.redis.clone(), self.key(sku, "outbox"))
            .await
            .expect("XLEN")
    }

    /// `sold` as Redis holds it, read without the service.
    pub async fn redis_sold(&self, sku: &str) -> u64 {
        self.redis_hget(sku, "sale", "sold")
            .await
            .map_or(0, |sold| sold.parse().expect("sold is a number"))
    }

    /// Waits until Redis counts at least `sold` units of the sale sold (a burst in flight
    /// beside it: the caller then strikes mid-burst); returns the count it saw, so the caller
    /// can show the strike landed before the stock ran out. Fails after 30 s.
    pub async fn wait_until_sold(&self, sku: &str, sold: u64) -> u64 {
        for _ in 0..6000 {
            let now = self.redis_sold(sku).await;
            if now >= sold {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("{sku}: {sold} units never sold within 30 s");
    }

    /// One field of one of the sale's hashes (`sale`, `orders`, `buyers`), read directly.
    pub async fn redis_hget(&self, sku: &str, hash: &str, field: &str) -> Option<String> {
        let mut redis = self.redis.clone();
        redis.hget(self.key(sku, hash), field).await.expect("HGET")
    }

    /// Order ids Redis recorded for the sale.
    pub async fn redis_order_ids(&self, sku: &str) -> Vec<String> {
        let mut redis = self.redis.clone();
        let fields: Vec<String> = redis
            .hkeys(self.key(sku, "orders"))
            .await
            .expect("HKEYS orders");
        let oid = self
            .redis_hget(sku, "sale", "oid")
            .await
            .unwrap_or_default();
        fields.iter().map(|f| order_id_of_field(&oid, f)).collect()
    }

    /// The field of order `id` in its sale's orders hash (see `lua/purchase.lua`'s KEYS[2]):
    /// its sequence number when it carries the sale's current oid, else the id without the
    /// sku digest.
    pub async fn order_field(&self, sku: &str, id: &str) -> String {
        let oid = self
            .redis_hget(sku, "sale", "oid")
            .await
            .unwrap_or_default();
        match id.strip_prefix(&format!("{oid}-")) {
            Some(seq) if !oid.is_empty() => seq.to_owned(),
            _ => id[17..].to_owned(),
        }
    }

    /// Waits (up to 10 s) until the relay is done with the sale: its outbox empty, no relay
    /// holding its lease, and the sale out of the relay's index of waiting outboxes, on two
    /// looks 250 ms apart. (A handler empties the outbox itself when JetStream confirms; the
    /// relay's next pass still indexes the sale, and the one after drops it again.)
    pub async fn wait_until_relay_idle(&self, sku: &str) {
        let mut redis = self.redis.clone();
        let mut quiet_looks = 0;
        // Up to 30 s: on a loaded CI machine a relay pass over a three-node cluster can lag.
        for _ in 0..600 {
            let (waiting, leased): (u64, bool) = redis::pipe()
                .cmd("XLEN")
                .arg(self.key(sku, "outbox"))
                .cmd("EXISTS")
                .arg(self.key(sku, "relay"))
                .query_async(&mut redis)
                .await
                .expect("XLEN, EXISTS");
            // The index lives in a slot of its own: a command of its own on a cluster.
            let indexed: bool = redis::cmd("SISMEMBER")
                .arg(format!("{}:outbox_waiting", self.namespace))
                .arg(sku)
                .query_async(&mut redis)
                .await
                .expect("SISMEMBER");
            if waiting == 0 && !leased && !indexed {
                quiet_looks += 1;
                if quiet_looks == 2 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                continue;
            }
            quiet_looks = 0;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the relay still works on {sku} after 30 s");
    }

    /// Every key of the namespace with its serialized value: two equal snapshots mean nothing
    /// was written in between.
    pub async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut redis = self.redis.clone();
        let mut snapshot = BTreeMap::new();
        for key in self.namespace_keys().await {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("DUMP");
            snapshot.insert(key, dump);
        }
        snapshot
    }

    /// Waits (up to 5 s) until the check connection answers: after a test restarted its
    /// Redis, the first command on the old connection fails and starts a reconnect.
    pub async fn wait_for_redis(&self) {
        let mut redis = self.redis.clone();
        for _ in 0..100 {
            let pong: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
            if pong.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("redis at {} does not answer", self.settings.redis.url);
    }

    /// Waits (up to 5 s) until the app reports ready (Redis and NATS connected).
    pub async fn wait_until_ready(&self) {
        for _ in 0..100 {
            if self.get("/readyz").await.status() == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{} not ready within 5 s", self.address);
    }

    /// Every key of the namespace: SCAN on the server, or on each master of a cluster.
    pub async fn namespace_keys(&self) -> Vec<String> {
        self.wait_for_redis().await;
        let pattern = format!("{}:*", self.namespace);
        let mut keys: Vec<String> = Vec::new();
        if self.settings.redis.uses_cluster() {
            let seed = self.settings.redis.seeds()[0].to_owned();
            for (_, mut master) in cluster_masters(&seed).await {
                let mut iter: redis::AsyncIter<String> =
                    master.scan_match(&pattern).await.expect("SCAN");
                while let Some(key) = iter.next_item().await {
                    keys.push(key.expect("SCAN item"));
                }
            }
            return keys;
        }
        let mut redis = self.redis.clone();
        let mut iter: redis::AsyncIter<String> = redis.scan_match(&pattern).await.expect("SCAN");
        while let Some(key) = iter.next_item().await {
            keys.push(key.expect("SCAN item"));
        }
        keys
    }

    /// Deletes every key of the test's namespace, and its JetStream stream.
    pub async fn cleanup(&self) {
        crate::helpers::nats::delete_stream(&self.settings).await;
        let keys = self.namespace_keys().await;
        if keys.is_empty() {
            return;
        }
        // One key a command: on a cluster the keys lie in many hash slots.
        let unlinks = keys.iter().map(|key| redis::cmd("UNLINK").arg(key).clone());
        let _: Vec<i64> = self
            .redis
            .clone()
            .query_each(unlinks.collect())
            .await
            .expect("UNLINK namespace keys");
    }
}

/// Runs `flashsale audit` on the stores of an app with `settings` (and on PostgreSQL at
/// `database_url`); returns its exit code and the table it printed.
pub async fn audit(settings: &Settings, database_url: Option<&str>) -> (i32, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"));
    command
        .arg("audit")
        .envs(process::env_of(settings, 0))
        .current_dir(std::env::temp_dir());
    if let Some(url) = database_url {
        command.env("FLASHSALE_DATABASE_URL", url);
    }
    let output = command.output().await.expect("flashsale audit runs");
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code().unwrap_or(-1),
        format!("{table}{stderr}"),
    )
}

/// Asserts that `flashsale audit` finds every store agreeing, and settled: a row "ok, pending"
/// (events still in an outbox, or not yet consumed) counts as clean to the audit, but right
/// after a burst it would let a difference hide behind work in flight, so this waits (up to
/// 30 s) for the pending work to finish and then wants plain "ok" on every row.
pub async fn assert_audit_clean(settings: &Settings, database_url: Option<&str>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, table) = audit(settings, database_url).await;
        assert_eq!(code, 0, "audit found differences:\n{table}");
        if !table.contains("ok, pending") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work still pending after 30 s:\n{table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A GET with the admin token.
pub async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    response.expect("answered")
}

/// A POST with the admin token and a JSON body.
pub async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    let request = app
        .client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body);
    request.send().await.expect("answered")
}

/// Status and `error` code of a JSON error answer.
pub async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error has a message: {body}"
    );
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A redis-server of the test's own, on a free port, killed when dropped.
pub async fn private_redis(port: u16) -> tokio::process::Child {
    private_redis_with(port, &[]).await
}

/// The order id whose field in the orders hash is `field`, in a sale whose oid is `oid`.
pub fn order_id_of_field(oid: &str, field: &str) -> String {
    if field.contains('-') {
        format!("{}{field}", &oid[..17])
    } else {
        format!("{oid}-{field}")
    }
}

pub fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Buys one unit for each user, `in_flight` at a time: each answer's status and body (the
/// one way tests buy in bulk).
pub async fn buy_each(
    app: &TestApp,
    sku: &str,
    users: &[String],
    in_flight: usize,
) -> Vec<(u16, Value)> {
    futures::stream::iter(users)
        .map(|user| async move {
            let response = app.order(sku, user, 1).await;
            let status = response.status().as_u16();
            (status, response.json().await.expect("JSON answer"))
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// Buys one unit for each user, `in_flight` at a time; returns the ids of the orders
/// accepted (201, or 202 when JetStream had not confirmed them yet).
pub async fn buy_all(
    app: &TestApp,
    sku: &str,
    users: &[String],
    in_flight: usize,
) -> HashSet<String> {
    buy_each(app, sku, users, in_flight)
        .await
        .into_iter()
        .filter(|(status, _)| *status == 201 || *status == 202)
        .map(|(_, order)| order["order_id"].as_str().expect("order_id").to_owned())
        .collect()
}

pub async fn read_order(app: &TestApp, order_id: &str) -> Value {
    let response = admin_get(app, &format!("/v1/orders/{order_id}")).await;
    let status = response.status();
    let order: Value = response.json().await.expect("order");
    assert_eq!(status, 200, "{order_id}: {order}");
    order
}
