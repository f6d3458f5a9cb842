use redis::Value;

use super::record;
use super::reply::Reply;
use super::{Failed, PutSaleError, Store, StoreError};
use crate::domain::Sku;
use crate::domain::queue::Queue;
use crate::domain::refusal::SaleRefusal;
use crate::domain::sale::{OrderTally, PutOutcome, Sale, SaleDefinition, SaleSettings};

/// The sale-hash fields a [`Sale`] is built from, in reply order.
const SALE_FIELDS: [&str; 12] = [
    "stock",
    "sold",
    "per_user_limit",
    "price",
    "starts_at",
    "ends_at",
    "payment_timeout",
    "ended",
    "n_paid",
    "n_expired",
    "n_cancelled",
    "queue",
];

impl Store {
    /// Creates the sale or replaces its settings, and says which.
    /// `defined_before`: JetStream held a definition of the sale before this PUT, so a sale
    /// missing from Redis was lost and is `Store(SaleMissing)`, never created afresh.
    /// `revision`: the definition's revision in JetStream; a PUT that a later one overtook
    /// changes nothing and answers the sale as the later one left it.
    pub(super) async fn put_sale(
        &self,
        sku: &Sku,
        settings: &SaleSettings,
        defined_before: Option<&SaleDefinition>,
        revision: u64,
    ) -> Result<(Sale, PutOutcome), PutSaleError> {
        let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
        let mut call = self.scripts.put_sale.prepare_invoke();
        call.key(self.redis.keys(sku).sale())
            .arg(sku.as_str())
            .arg(settings.stock)
            .arg(optional(settings.per_user_limit.map(|l| l as i64)))
            .arg(settings.price)
            .arg(optional(settings.starts_at))
            .arg(optional(settings.ends_at))
            .arg(if defined_before.is_some() { "1" } else { "" })
            .arg(revision)
            .arg(optional(settings.payment_timeout_secs.map(|t| t as i64)))
            .arg(optional(settings.ended_at))
            .arg(
                settings
                    .queue
                    .as_ref()
                    .map(Queue::encode)
                    .unwrap_or_default(),
            );

        // Registered first: a sale that exists is always known to the relay and to cancel.
        self.register(sku).await?;
        let mut redis = self.redis.connection();
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut redis).await)?;
        let reply = Reply(&reply);
        match reply.text(0)? {
            "sale_missing" => return Err(StoreError::SaleMissing.into()),
            "superseded" => {
                log::info!("sale {sku}: PUT revision {revision} overtaken by a later one");
                return Ok((self.sale(sku).await?, PutOutcome::Replaced));
            }
            _ => {}
        }
        let sold = reply.uint(1)?;
        match reply.text(0)? {
            "stock_below_sold" => Err(Failed::Refused(SaleRefusal::StockBelowSold {
                stock: settings.stock,
                sold,
            })),
            outcome @ ("created" | "replaced") => {
                let put = match outcome {
                    "created" => PutOutcome::Created,
                    _ => PutOutcome::Replaced,
                };
                self.sold_out.clear(sku.as_str());
                log::info!(
                    "sale {sku} {outcome}: stock {}, sold {sold}",
                    settings.stock
                );
                Ok((Sale::new(sku, settings, sold, reply.int(2)?), put))
            }
            _ => Err(reply.corrupt().into()),
        }
    }

    /// The sale as it stands, read with Redis's clock in one round trip; `SaleMissing` when
    /// Redis does not hold it (or holds a copy another primary wrote, as the scripts count).
    pub(super) async fn sale(&self, sku: &Sku) -> Result<Sale, StoreError> {
        let mut redis = self.redis.connection();
        // One pipeline, routed by the sale's key: TIME and INFO run on the sale's primary.
        let keys = self.redis.keys(sku);
        type Read = (
            Vec<Option<String>>,
            (i64, i64),
            Option<String>,
            String,
            u64,
            u64,
        );
        let (fields, (secs, micros), written_by, info, orders, pending): Read =
            self.redis.observe(
                redis::pipe()
                    .cmd("HMGET")
                    .arg(keys.sale())
                    .arg(&SALE_FIELDS[..])
                    .cmd("TIME")
                    .hget(self.redis.keys(sku).sale(), "primary")
                    .cmd("INFO")
                    .arg("replication")
                    .hlen(keys.orders())
                    .zcard(keys.deadlines())
                    .query_async(&mut redis)
                    .await,
            )?;
        if !written_here(written_by.as_deref(), &info) {
            return Err(StoreError::SaleMissing);
        }
        let now_ms = secs * 1000 + micros / 1000;

        let number = |at: usize| -> Result<Option<i64>, StoreError> {
            match fields.get(at) {
                Some(Some(text)) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt(format!("{sku}: {fields:?}"))),
                _ => Ok(None),
            }
        };
        let unsigned = |at: usize| -> Result<Option<u64>, StoreError> {
            number(at)?
                .map(|n| {
                    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{sku}: {fields:?}")))
                })
                .transpose()
        };

        let Some(stock) = unsigned(0)? else {
            return Err(StoreError::SaleMissing);
        };
        let settings = SaleSettings {
            stock,
            per_user_limit: unsigned(2)?,
            price: unsigned(3)?.unwrap_or(0),
            starts_at: number(4)?,
            ends_at: number(5)?,
            payment_timeout_secs: unsigned(6)?,
            ended_at: number(7)?,
            queue: match fields.get(11) {
                Some(Some(text)) => Some(
                    Queue::decode(text)
                        .ok_or_else(|| StoreError::Corrupt(format!("{sku}: queue {text:?}")))?,
                ),
                _ => None,
            },
        };
        let mut sale = Sale::new(sku, &settings, unsigned(1)?.unwrap_or(0), now_ms);
        let ended = |at| unsigned(at).map(Option::unwrap_or_default);
        let (paid, expired, cancelled) = (ended(8)?, ended(9)?, ended(10)?);
        sale.orders = Some(OrderTally {
            total: orders,
            created: orders.saturating_sub(pending + paid + expired + cancelled),
            pending_payment: pending,
            paid,
            expired,
            cancelled,
        });
        Ok(sale)
    }
}

/// What Redis holds of one sale's orders (for `flashsale audit`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrderCounts {
    pub stock: u64,
    pub sold: u64,
    /// Orders that hold units (not expired, not cancelled), and those units.
    pub live_orders: u64,
    pub live_units: u64,
    /// Orders that gave their units back: expired or cancelled.
    pub ended_orders: u64,
    /// Events waiting in the outbox for JetStream.
    pub outbox: u64,
}

impl Store {
    /// Counts the sale's orders by status; `SaleMissing` when Redis does not hold the sale.
    pub(super) async fn order_counts(&self, sku: &Sku) -> Result<OrderCounts, StoreError> {
        let keys = self.redis.keys(sku);
        let mut redis = self.redis.connection();
        type Counted = (
            Option<u64>,
            Option<u64>,
            Vec<String>,
            u64,
            Option<String>,
            String,
        );
        let (stock, sold, records, outbox, written_by, info): Counted = self.redis.observe(
            redis::pipe()
                .hget(keys.sale(), "stock")
                .hget(keys.sale(), "sold")
                .hvals(keys.orders())
                .xlen(keys.outbox())
                .hget(keys.sale(), "primary")
                .cmd("INFO")
                .arg("replication")
                .query_async(&mut redis)
                .await,
        )?;
        let Some(stock) = stock.filter(|_| written_here(written_by.as_deref(), &info)) else {
            return Err(StoreError::SaleMissing);
        };
        let mut counts = OrderCounts {
            stock,
            sold: sold.unwrap_or(0),
            outbox,
            ..OrderCounts::default()
        };
        for record in &records {
            let order = record::decode(record)
                .ok_or_else(|| StoreError::Corrupt(format!("{sku}: order record {record:?}")))?;
            if !order.status.holds_units() {
                counts.ended_orders += 1;
            } else {
                counts.live_orders += 1;
                counts.live_units += u64::from(order.quantity);
            }
        }
        Ok(counts)
    }
}

/// Whether the primary whose `INFO replication` is `info` wrote the sale (its `primary`
/// field): the check every script makes before it trusts a sale (see `lua/purchase.lua`).
fn written_here(written_by: Option<&str>, info: &str) -> bool {
    let primary = info
        .lines()
        .find_map(|line| line.strip_prefix("master_replid:"))
        .map(|id| format!("{}{}", id.trim(), super::LAYOUT));
    written_by.is_some() && written_by == primary.as_deref()
}
