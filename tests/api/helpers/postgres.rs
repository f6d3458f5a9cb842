//! PostgreSQL for tests: each test gets its own schema in the `flashsale` database, and the
//! consumer is pointed at it through `search_path`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use flashsale::support::settings::Settings;
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = include_str!("../../../sql/schema.sql");

pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/flashsale";

pub struct TestDb {
    pub schema: String,
    pub url: String,
    admin: Client,
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("tests need PostgreSQL at {url} (scripts/services.sh): {e}"));
    tokio::spawn(connection);
    client
}

/// A connection to the `flashsale` database, for what a test does beside its schema.
pub async fn admin_client() -> Client {
    connect(DATABASE_URL).await
}

impl TestDb {
    /// A schema with the consumer's table in it and a log of every row written: the primary
    /// key folds a second insert into the first, and an update leaves no trace, but the log
    /// shows both. (The consumer applies the same schema again, harmlessly.)
    pub async fn create() -> Self {
        let db = Self::create_empty().await;
        let schema = &db.schema;
        db.admin
            .batch_execute(&format!(
                "SET search_path TO {schema}; {SCHEMA}
                 CREATE TABLE {schema}.row_writes (
                     seq bigserial PRIMARY KEY, order_id text NOT NULL, op text NOT NULL,
                     status text NOT NULL);
                 CREATE FUNCTION {schema}.log_row_write() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     INSERT INTO {schema}.row_writes (order_id, op, status)
                         VALUES (NEW.order_id, TG_OP, NEW.status);
                     RETURN NULL;
                 END $$;
                 CREATE TRIGGER log_row_write AFTER INSERT OR UPDATE ON {schema}.orders
                     FOR EACH ROW EXECUTE FUNCTION {schema}.log_row_write();
                 SET search_path TO DEFAULT;"
            ))
            .await
            .expect("the orders table and its write log");
        db
    }

    /// An empty schema (for a test that makes an older table itself).
    pub async fn create_empty() -> Self {
        let schema = crate::helpers::unique("fstest").replace('-', "_");
        let admin = connect(DATABASE_URL).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("CREATE SCHEMA");
        Self {
            url: format!("{DATABASE_URL}?options=-csearch_path%3D{schema}"),
            schema,
            admin,
        }
    }

    /// order_id → status of every row (empty until the consumer made the table).
    pub async fn rows(&self) -> HashMap<String, String> {
        let query = format!("SELECT order_id, status FROM {}.orders", self.schema);
        match self.admin.query(&query, &[]).await {
            Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            Err(_) => HashMap::new(),
        }
    }

    pub async fn count(&self) -> usize {
        self.rows().await.len()
    }

    /// Every write the consumer made to the table, in order: (order_id, "INSERT" or "UPDATE",
    /// the status written).
    pub async fn writes(&self) -> Vec<(String, String, String)> {
        let query = format!(
            "SELECT order_id, op, status FROM {}.row_writes ORDER BY seq",
            self.schema
        );
        let rows = self.admin.query(&query, &[]).await.expect("row_writes");
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// Each order's writes, (op, status) in the order they were made.
    pub async fn writes_by_order(&self) -> HashMap<String, Vec<(String, String)>> {
        let mut per_order: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (order_id, op, status) in self.writes().await {
            per_order.entry(order_id).or_default().push((op, status));
        }
        per_order
    }

    /// Asserts the consumer wrote exactly `expected` per order: the writes' (op, status) in
    /// order, e.g. `[("INSERT", "created"), ("UPDATE", "cancelled")]`.
    pub async fn assert_writes(&self, orders: &HashSet<String>, expected: &[(&str, &str)]) {
        let per_order = self.writes_by_order().await;
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(op, status)| ((*op).to_owned(), (*status).to_owned()))
            .collect();
        let wrong: Vec<_> = per_order
            .iter()
            .filter(|(id, writes)| !orders.contains(*id) || **writes != expected)
            .take(5)
            .collect();
        assert!(
            wrong.is_empty(),
            "writes other than {expected:?}: {wrong:?}"
        );
        assert_eq!(per_order.len(), orders.len(), "every order written");
    }

    /// Waits (up to `timeout`) until the order consumer has acknowledged every event of the
    /// stream: nothing the table could still receive. Nothing pending is not enough: a
    /// consumer just made on a replicated stream reports nothing pending before it has
    /// counted, so its acknowledgement floor must also have reached the stream's last message.
    pub async fn wait_until_consumed(&self, settings: &Settings, timeout: Duration) {
        let client = async_nats::connect(settings.nats.urls.as_slice())
            .await
            .expect("NATS");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = consumer_lag(&js, settings).await;
            if left == Some(0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the consumer still has {left:?} events after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the table holds `expected` rows, failing after `timeout`.
    pub async fn wait_for_rows(
        &self,
        expected: usize,
        timeout: Duration,
    ) -> HashMap<String, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rows = self.rows().await;
            if rows.len() >= expected {
                return rows;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} of {expected} rows within {timeout:?}", rows.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs SQL in the test's schema.
    pub async fn execute(&self, sql: &str) {
        let sql = format!("SET search_path TO {}; {sql}", self.schema);
        self.admin.batch_execute(&sql).await.expect("SQL runs");
    }

    /// One row of a query in the test's schema.
    pub async fn query_one(&self, sql: &str) -> tokio_postgres::Row {
        self.admin
            .batch_execute(&format!("SET search_path TO {}", self.schema))
            .await
            .expect("SET search_path");
        self.admin.query_one(sql, &[]).await.expect("one row")
    }

    pub async fn drop_schema(&self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}

/// Runs the order consumer in this process until the handle is aborted.
pub fn spawn_consumer(settings: &Settings, db: &TestDb) -> tokio::task::JoinHandle<()> {
    let mut settings = settings.clone();
    settings.consumer.database_url = db.url.clone().into();
    tokio::spawn(flashsale::events::consumer::run(
        settings,
        std::future::pending(),
    ))
}

/// How many of the stream's messages the order consumer has yet to acknowledge (None while
/// the stream or the consumer cannot be read).
async fn consumer_lag(js: &async_nats::jetstream::Context, settings: &Settings) -> Option<u64> {
    let mut stream = js.get_stream(&settings.nats.stream).await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&settings.consumer.name)
        .await
        .ok()?;
    let info = consumer.info().await.ok()?;
    let unacknowledged = last.saturating_sub(info.ack_floor.stream_sequence);
    Some(unacknowledged.max(info.num_pending + info.num_ack_pending as u64))
}
