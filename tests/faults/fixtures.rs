//! What a fault test runs and breaks: servers of its own (redis-server, nats-server), the
//! service and the order consumer as processes of their own, a PostgreSQL schema of its
//! own, and readings of what reached JetStream and PostgreSQL.
//!
//! Each server here can be killed (`kill -9`), paused (`SIGSTOP`/`SIGCONT`) and started
//! again, which is what the fault tests do to them; everything is killed when dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use tokio::process::{Child, Command};

pub use crate::servers::{free_port, redis_server_args, signal, unique, wait_for_port};

pub const ADMIN_TOKEN: &str = "faults-admin-token";
pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/flashsale";

/// Held by each fault test for its whole run: they measure a service alone, so they run one
/// after another.
pub static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A process's resident memory, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// A scratch directory of the test's own (logs, stores).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A server process of the test's own on a fixed port, started again by [`Server::start`].
pub struct Server {
    pub port: u16,
    program: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    pub async fn start(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is installed (scripts/services.sh installs it): {e}",
                    self.program
                )
            });
        self.child = Some(child);
        wait_for_port(self.port).await;
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the server runs")
    }

    /// `kill -9`, as a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

/// A redis-server that keeps nothing on disk: killed and started again, it is empty.
pub async fn redis_server() -> Server {
    let port = free_port();
    let dir = scratch("faults-redis");
    let mut server = Server {
        port,
        program: "redis-server".into(),
        args: redis_server_args(port, &dir),
        child: None,
    };
    server.start().await;
    server
}

/// A nats-server with JetStream and a store of its own, kept across restarts: the one the
/// README ships (nats-server 2.15 with the repository's nats-server.conf: every write fsynced,
/// atomic batches), or Debian's 2.9 without a configuration when
/// FLASHSALE_TEST_FAULTS_NATS=debian (scripts/test.sh runs the overload tests on both).
pub async fn nats_server() -> Server {
    let port = free_port();
    let store = scratch("faults-nats");
    let debian = std::env::var("FLASHSALE_TEST_FAULTS_NATS").is_ok_and(|v| v == "debian");
    let (program, mut args) = if debian {
        ("nats-server".into(), Vec::new())
    } else {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/nats-server.conf");
        (
            crate::servers::durable_nats_server()
                .to_string_lossy()
                .into_owned(),
            vec!["-c".to_owned(), config.to_owned()],
        )
    };
    args.extend(
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &store.to_string_lossy(),
        ]
        .map(str::to_owned),
    );
    let mut server = Server {
        port,
        program,
        args,
        child: None,
    };
    server.start().await;
    server
}

/// What the service and the consumer processes are configured with.
#[derive(Clone, Debug)]
pub struct Environment {
    pub redis_url: String,
    pub nats_url: String,
    pub namespace: String,
    pub stream: String,
    pub subject_prefix: String,
    pub database_url: String,
    /// More FLASHSALE_* variables.
    pub extra: Vec<(String, String)>,
}

impl Environment {
    /// On `redis_url` (one server, or a cluster's comma-separated seeds) and `nats_url`
    /// (comma-separated servers).
    pub fn new(redis_url: &str, nats_url: &str) -> Self {
        Self {
            redis_url: redis_url.to_owned(),
            nats_url: nats_url.to_owned(),
            namespace: unique("faults"),
            stream: unique("FAULTS"),
            subject_prefix: unique("faults"),
            database_url: DATABASE_URL.into(),
            extra: Vec::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: impl ToString) {
        self.extra.push((name.to_owned(), value.to_string()));
    }

    fn vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("FLASHSALE_REDIS_URL", &self.redis_url),
            ("FLASHSALE_NATS_URL", &self.nats_url),
            ("FLASHSALE_NAMESPACE", &self.namespace),
            ("FLASHSALE_STREAM", &self.stream),
            ("FLASHSALE_SUBJECT_PREFIX", &self.subject_prefix),
            ("FLASHSALE_DATABASE_URL", &self.database_url),
        ]
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .to_vec();
        vars.push(("FLASHSALE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        vars.extend(self.extra.iter().cloned());
        vars
    }
}

/// The binary under test: FLASHSALE_TEST_BINARY (a release build, say, relative to the
/// repository), else the debug build cargo made for the tests.
pub fn binary() -> PathBuf {
    match std::env::var("FLASHSALE_TEST_BINARY") {
        // Relative to the repository, as scripts/test.sh gives it; the processes run
        // elsewhere.
        Ok(path) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        Err(_) => PathBuf::from(env!("CARGO_BIN_EXE_flashsale")),
    }
}

/// The service (or `consume-orders`) as a process of its own, its log in a scratch file.
pub struct Process {
    pub port: u16,
    command: Option<&'static str>,
    environment: Environment,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub async fn service(environment: &Environment) -> Self {
        Self::start_new(environment, None).await
    }

    pub async fn consumer(environment: &Environment) -> Self {
        Self::start_new(environment, Some("consume-orders")).await
    }

    async fn start_new(environment: &Environment, command: Option<&'static str>) -> Self {
        let mut process = Self {
            port: free_port(),
            command,
            environment: environment.clone(),
            log: scratch("faults-log").join("process.log"),
            child: None,
        };
        process.start().await;
        process
    }

    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(binary());
        command.args(self.command);
        let child = command
            .envs(self.environment.vars())
            .env("FLASHSALE_BIND", format!("127.0.0.1:{}", self.port))
            // A scratch directory: no log4rs.yaml, so the log goes to the console, into the file.
            .current_dir(self.log.parent().expect("log directory"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("flashsale binary starts");
        self.child = Some(child);
        if self.command.is_none() {
            wait_for_port(self.port).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the process runs")
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A client of the run's NATS server(s).
async fn nats_client(environment: &Environment) -> Result<async_nats::Client, String> {
    let servers: Vec<async_nats::ServerAddr> = environment
        .nats_url
        .split(',')
        .map(|url| url.parse().expect("nats url"))
        .collect();
    async_nats::connect(servers.as_slice())
        .await
        .map_err(|e| e.to_string())
}

pub use crate::stream::Delivered;

/// Every message in the run's stream, in stream order.
pub async fn delivered(environment: &Environment) -> Vec<Delivered> {
    let client = nats_client(environment).await.expect("tests need NATS");
    crate::stream::stored_events(client, &environment.stream).await
}

/// Deletes the test's stream and sale definitions.
pub async fn delete_stream(environment: &Environment) {
    if let Ok(client) = nats_client(environment).await {
        let js = jetstream::new(client);
        let _ = js.delete_stream(&environment.stream).await;
        let _ = js
            .delete_key_value(flashsale::recovery::definitions::bucket_name(
                &environment.stream,
            ))
            .await;
    }
}

/// Events waiting in the outboxes of the namespace, read directly (on a cluster, from
/// every master).
pub async fn outbox_backlog(environment: &Environment) -> Result<u64, redis::RedisError> {
    let mut settings =
        flashsale::support::settings::Settings::from_lookup(|_| None).expect("defaults");
    settings.redis.url = environment.redis_url.clone();
    let mut redis = flashsale::store::RedisConnection::new(&settings.redis)?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:outbox", environment.namespace))
        .query_async(&mut redis)
        .await?;
    let mut waiting = 0;
    for key in keys {
        let length: u64 = redis::cmd("XLEN").arg(key).query_async(&mut redis).await?;
        waiting += length;
    }
    Ok(waiting)
}

/// A PostgreSQL schema of the test's own in the `flashsale` database.
pub struct Schema {
    pub name: String,
    pub url: String,
    admin: tokio_postgres::Client,
}

impl Schema {
    pub async fn create() -> Self {
        let (admin, connection) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("tests need PostgreSQL at {DATABASE_URL} (scripts/services.sh): {e}")
            });
        tokio::spawn(connection);
        let name = unique("faults").replace('-', "_");
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("CREATE SCHEMA");
        Self {
            // The consumer's connections carry the schema's name, so a test ends its own.
            url: format!("{DATABASE_URL}?options=-csearch_path%3D{name}&application_name={name}"),
            name,
            admin,
        }
    }

    /// order_id → status of every row.
    pub async fn rows(&self) -> HashMap<String, String> {
        let query = format!("SELECT order_id, status FROM {}.orders", self.name);
        match self.admin.query(&query, &[]).await {
            Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// How long until the table holds more rows than now (None: not within `limit`).
    pub async fn rows_grow_after(&self, limit: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        let before = self.rows().await.len();
        while started.elapsed() < limit {
            if self.rows().await.len() > before {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Ends the consumer's PostgreSQL connections, as a database restart does.
    pub async fn terminate_connections(&self) -> usize {
        self.admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&self.name],
            )
            .await
            .map(|rows| rows.len())
            .unwrap_or(0)
    }

    pub async fn drop(&self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
    }
}

/// Runs `flashsale audit` on the test's stores; its exit code and output.
pub async fn audit(environment: &Environment) -> (i32, String) {
    let output = Command::new(binary())
        .arg("audit")
        .envs(environment.vars())
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("flashsale audit runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `PUT /v1/sales/{sku}` on the service at `base` (`http://host:port`); its status (0: no
/// answer).
pub async fn put_sale(base: &str, sku: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .put(format!("{base}/v1/sales/{sku}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
