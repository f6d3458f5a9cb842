//! `flashsale audit`: for the morning after an incident. For every sale it sets what Redis
//! holds (sold, orders by status, outbox) against what JetStream holds (created minus
//! expired and cancelled events), and against PostgreSQL when `FLASHSALE_DATABASE_URL` is set; prints one
//! table and exits 1 on any difference that deliveries still pending do not explain.
//!
//! Redis is expected to equal JetStream's events plus its own outbox (events accepted but not
//! yet delivered); PostgreSQL to equal JetStream, or to trail it by at most what the order
//! consumer has still to apply. Run it while traffic is quiet: a purchase between the reads
//! shows as a difference.

use secrecy::ExposeSecret;
use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;

use crate::domain::Sku;
use crate::domain::event::OrderEvent;
use crate::domain::snapshot::{SaleSnapshot, UnreadableEvent};
use crate::events::jetstream::StreamError;
use crate::events::jetstream::read_events;
use crate::recovery::definitions::{SaleDefinition, SaleDefinitions};
use crate::store::{OrderCounts, Store, StoreError};
use crate::support::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("redis: {0}")]
    Redis(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("jetstream holds an unreadable event: {0}")]
    History(#[from] UnreadableEvent),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// One sale's figures from each store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SaleAudit {
    pub sku: String,
    pub stock: Option<u64>,
    /// `None`: Redis does not hold the sale (lost, rebuilt on its next use).
    pub redis: Option<OrderCounts>,
    /// Live orders and units in JetStream (created minus expired and cancelled).
    pub jetstream_orders: u64,
    pub jetstream_units: u64,
    /// Live orders and units Redis should hold: JetStream plus the outbox.
    pub expected_orders: u64,
    pub expected_units: u64,
    /// Live orders and units in PostgreSQL, when it is checked.
    pub postgres: Option<(u64, u64)>,
    /// Live orders and units JetStream holds for the sku in all: more than the sale's own
    /// when a PUT started it anew after an archive (PostgreSQL keeps every sale of a sku).
    pub record_orders: u64,
    pub record_units: u64,
    /// Live orders and units the definition recorded when the sale was archived.
    pub archived: Option<(u64, u64)>,
}

/// What a row of the table concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Differences that deliveries still under way explain.
    Pending(String),
    Mismatch(String),
}

impl SaleAudit {
    /// `consumer_pending`: events the PostgreSQL consumer has yet to apply (None: no consumer).
    pub fn verdict(&self, consumer_pending: Option<u64>) -> Verdict {
        let mut pending = Vec::new();
        if let Some(stock) = self.stock
            && self.jetstream_units > stock
        {
            return Verdict::Mismatch(format!(
                "oversold: {} units in JetStream",
                self.jetstream_units
            ));
        }
        if let Some(archived) = self.archived {
            if archived != (self.jetstream_orders, self.jetstream_units) {
                return Verdict::Mismatch(format!(
                    "archived with {} orders / {} units, JetStream holds {} / {}",
                    archived.0, archived.1, self.jetstream_orders, self.jetstream_units
                ));
            }
            if self.redis.is_some() {
                pending.push("archived, its keys not yet dropped".to_owned());
            }
        } else if let Some(redis) = &self.redis {
            if redis.sold > redis.stock {
                return Verdict::Mismatch(format!("oversold: redis sold {}", redis.sold));
            }
            if redis.sold != redis.live_units {
                return Verdict::Mismatch(format!(
                    "redis sold {} but its orders hold {}",
                    redis.sold, redis.live_units
                ));
            }
            if (redis.live_orders, redis.live_units) != (self.expected_orders, self.expected_units)
            {
                return Verdict::Mismatch(format!(
                    "redis holds {} orders / {} units, JetStream and outbox {} / {}",
                    redis.live_orders, redis.live_units, self.expected_orders, self.expected_units
                ));
            }
            if redis.outbox > 0 {
                pending.push(format!("{} events in the outbox", redis.outbox));
            }
        }
        if let Some((orders, units)) = self.postgres
            && (orders, units) != (self.record_orders, self.record_units)
        {
            let behind = self.record_orders.abs_diff(orders);
            match consumer_pending {
                Some(waiting) if waiting > 0 && behind <= waiting => {
                    pending.push(format!(
                        "postgres {behind} orders behind, {waiting} events to apply"
                    ));
                }
                _ => {
                    return Verdict::Mismatch(format!(
                        "postgres holds {orders} orders / {units} units, JetStream {} / {}",
                        self.record_orders, self.record_units
                    ));
                }
            }
        }
        if pending.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Pending(pending.join("; "))
        }
    }
}

/// Runs the audit, prints the table; `Ok(true)` when nothing is wrong.
pub async fn run(settings: &Settings) -> Result<bool, AuditError> {
    let store = Store::new(&settings.redis).map_err(StoreError::from)?;
    let nats = async_nats::connect(settings.nats.urls.as_slice())
        .await
        .map_err(|e| AuditError::Nats(e.to_string()))?;
    let js = jetstream::new(nats.clone());
    let definitions = SaleDefinitions::new(nats, &settings.nats);

    let mut defined: BTreeMap<String, SaleDefinition> = definitions
        .all()
        .await
        .map_err(|e| AuditError::Nats(e.to_string()))?
        .into_iter()
        .map(|d| (d.sku.to_string(), d))
        .collect();
    let mut by_sku: BTreeMap<String, Vec<OrderEvent>> = BTreeMap::new();
    let all = format!("{}.>", settings.nats.subject_prefix);
    for event in read_events(&js, &settings.nats.stream, &all, 1)
        .await?
        .events
    {
        by_sku.entry(event.sku.clone()).or_default().push(event);
    }
    let mut skus: BTreeSet<String> = defined.keys().chain(by_sku.keys()).cloned().collect();
    skus.extend(store.archive().sales().await?.iter().map(Sku::to_string));

    let postgres = if settings.consumer.database_url_explicit {
        Some(postgres_counts(settings.consumer.database_url.expose_secret()).await?)
    } else {
        None
    };
    let consumer_pending = if postgres.is_some() {
        consumer_pending(&js, &settings.nats.stream, &settings.consumer.name).await
    } else {
        None
    };

    let mut audits = Vec::new();
    for sku in skus {
        let Ok(parsed) = Sku::parse(&sku) else {
            continue;
        };
        let definition = defined.remove(&sku);
        let all_events = by_sku.remove(&sku).unwrap_or_default();
        let mut record = SaleSnapshot::default();
        for event in &all_events {
            record.apply(event)?;
        }
        // The sale's own events: from where its history starts (a PUT after an archive).
        let events = match definition.as_ref().and_then(|d| d.history_from) {
            Some(from) => {
                let subjects = format!("{}.*.{sku}", settings.nats.subject_prefix);
                read_events(&js, &settings.nats.stream, &subjects, from)
                    .await?
                    .events
            }
            None => all_events,
        };
        let mut jetstream = SaleSnapshot::default();
        for event in &events {
            jetstream.apply(event)?;
        }
        let mut expected = SaleSnapshot::default();
        let outbox = store.outbox().entries(&parsed).await?;
        let waiting = outbox.iter().flat_map(|entry| entry.message.events());
        for event in events.iter().chain(waiting) {
            expected.apply(event)?;
        }
        let redis = match store.sales().order_counts(&parsed).await {
            Ok(counts) => Some(counts),
            Err(StoreError::SaleMissing) => None,
            Err(e) => return Err(e.into()),
        };
        let archived = definition
            .as_ref()
            .and_then(|d| d.archived.as_ref())
            .map(|a| {
                let orders = &a.orders;
                let ended = orders.expired + orders.cancelled;
                (orders.total.saturating_sub(ended), a.sold)
            });
        audits.push(SaleAudit {
            stock: definition.map(|d| d.stock).or(redis.map(|r| r.stock)),
            record_orders: record.live_orders() as u64,
            record_units: record.sold(),
            archived,
            sku,
            redis,
            jetstream_orders: jetstream.live_orders() as u64,
            jetstream_units: jetstream.sold(),
            expected_orders: expected.live_orders() as u64,
            expected_units: expected.sold(),
            postgres: postgres
                .as_ref()
                .map(|counts| counts.get(&parsed.to_string()).copied().unwrap_or((0, 0))),
        });
    }
    let (table, clean) = render(&audits, consumer_pending);
    print!("{table}");
    Ok(clean)
}

/// The table, and whether every row is clean.
pub fn render(audits: &[SaleAudit], consumer_pending: Option<u64>) -> (String, bool) {
    let mut clean = true;
    let mut out = format!(
        "{:<24} {:>8} {:>11} {:>13} {:>7} {:>15} {:>14}  {}\n",
        "sku",
        "stock",
        "redis_sold",
        "redis_orders",
        "outbox",
        "jetstream_sold",
        "postgres_sold",
        "verdict"
    );
    let or_dash = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    for audit in audits {
        let verdict = match audit.verdict(consumer_pending) {
            Verdict::Ok => "ok".to_owned(),
            Verdict::Pending(why) => format!("ok, pending: {why}"),
            Verdict::Mismatch(why) => {
                clean = false;
                format!("MISMATCH: {why}")
            }
        };
        let redis = audit.redis;
        out.push_str(&format!(
            "{:<24} {:>8} {:>11} {:>13} {:>7} {:>15} {:>14}  {}\n",
            audit.sku,
            or_dash(audit.stock),
            match (redis, audit.archived) {
                (Some(r), _) => r.sold.to_string(),
                (None, Some((_, sold))) => format!("archived:{sold}"),
                (None, None) => "lost".to_owned(),
            },
            redis.map_or("-".to_owned(), |r| format!(
                "{}+{}e",
                r.live_orders, r.ended_orders
            )),
            or_dash(redis.map(|r| r.outbox)),
            audit.jetstream_units,
            or_dash(audit.postgres.map(|(_, units)| units)),
            verdict
        ));
    }
    (out, clean)
}

/// Live orders and units per sku in PostgreSQL.
async fn postgres_counts(url: &str) -> Result<BTreeMap<String, (u64, u64)>, AuditError> {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT sku, count(*), coalesce(sum(quantity), 0)::bigint FROM orders \
             WHERE status NOT IN ('expired', 'cancelled') GROUP BY sku",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let orders: i64 = row.get(1);
            let units: i64 = row.get(2);
            (row.get::<_, String>(0), (orders as u64, units as u64))
        })
        .collect())
}

/// Events the order consumer has not acknowledged yet; `None` when it does not exist.
async fn consumer_pending(js: &jetstream::Context, stream: &str, name: &str) -> Option<u64> {
    let stream = js.get_stream(stream).await.ok()?;
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(name).await.ok()?;
    let info = consumer.info().await.ok()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> SaleAudit {
        let counts = OrderCounts {
            stock: 10,
            sold: 4,
            live_orders: 4,
            live_units: 4,
            ended_orders: 1,
            outbox: 0,
        };
        SaleAudit {
            sku: "s".into(),
            stock: Some(10),
            redis: Some(counts),
            jetstream_orders: 4,
            jetstream_units: 4,
            expected_orders: 4,
            expected_units: 4,
            postgres: Some((4, 4)),
            record_orders: 4,
            record_units: 4,
            archived: None,
        }
    }

    #[test]
    fn equal_stores_are_ok_and_pending_deliveries_explain_a_lag() {
        assert_eq!(audit().verdict(Some(0)), Verdict::Ok);
        let mut lagging = audit();
        lagging.postgres = Some((3, 3));
        assert!(matches!(lagging.verdict(Some(2)), Verdict::Pending(_)));
        assert!(matches!(lagging.verdict(Some(0)), Verdict::Mismatch(_)));
        assert!(matches!(lagging.verdict(None), Verdict::Mismatch(_)));
    }

    #[test]
    fn redis_must_equal_jetstream_plus_its_outbox() {
        let mut ahead = audit();
        if let Some(redis) = ahead.redis.as_mut() {
            redis.sold = 5;
            redis.live_units = 5;
            redis.live_orders = 5;
        }
        assert!(matches!(ahead.verdict(Some(0)), Verdict::Mismatch(_)));
        ahead.expected_orders = 5;
        ahead.expected_units = 5;
        if let Some(redis) = ahead.redis.as_mut() {
            redis.outbox = 1;
        }
        assert!(matches!(ahead.verdict(Some(0)), Verdict::Pending(_)));
    }

    #[test]
    fn an_archived_sale_must_hold_what_jetstream_holds_and_leave_redis() {
        let mut archived = audit();
        archived.archived = Some((4, 4));
        assert!(
            matches!(archived.verdict(Some(0)), Verdict::Pending(_)),
            "keys left"
        );
        archived.redis = None;
        assert_eq!(archived.verdict(Some(0)), Verdict::Ok);
        let (table, _) = render(std::slice::from_ref(&archived), Some(0));
        assert!(table.contains("archived:4"), "{table}");
        archived.archived = Some((4, 5));
        assert!(matches!(archived.verdict(Some(0)), Verdict::Mismatch(_)));
    }

    #[test]
    fn oversold_is_always_a_mismatch() {
        let mut oversold = audit();
        oversold.jetstream_units = 11;
        assert!(matches!(oversold.verdict(Some(0)), Verdict::Mismatch(_)));
        let (table, clean) = render(&[oversold], Some(0));
        assert!(!clean);
        assert!(table.contains("MISMATCH: oversold"));
    }
}
