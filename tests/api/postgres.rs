//! PostgreSQL for tests: each test gets its own schema in the `flashsale` database, and the
//! consumer is pointed at it through `search_path`.

use std::collections::HashMap;
use std::time::Duration;

use flashsale::config::Settings;
use tokio_postgres::{Client, NoTls};

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
    pub async fn create() -> Self {
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
    settings.database_url = db.url.clone();
    tokio::spawn(flashsale::consumer::run(settings, std::future::pending()))
}
