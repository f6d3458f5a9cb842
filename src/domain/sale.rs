//! A sale: its settings (what an admin PUTs) and its view (what GET shows).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::queue::{Queue, QueueSettings};
use crate::domain::{InvalidInput, Quantity, Sku};

/// Largest stock a sale may hold: beyond 2^53 the Lua script's numbers lose precision.
pub const MAX_STOCK: u64 = 1 << 53;

/// The highest unit price: times the largest quantity (100) it is still exact in a Lua number
/// (2^53), where the scripts carry it, and far inside u64, where [`crate::domain::order::total_amount`]
/// multiplies it.
pub const MAX_PRICE: u64 = MAX_STOCK / Quantity::MAX;

/// The longest payment window a sale may give: a day.
pub const MAX_PAYMENT_TIMEOUT_SECS: u64 = 86_400;

/// Valid settings of one sale. Times are milliseconds since the Unix epoch, as the purchase
/// script compares them with Redis's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleSettings {
    pub stock: u64,
    pub per_user_limit: Option<u64>,
    pub price: u64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    /// Seconds a buyer has to pay an order; `None`: an order is final when accepted.
    pub payment_timeout_secs: Option<u64>,
    /// When an operator ended the sale early (ms); it stays closed until reopened. Not part
    /// of a PUT's body: a PUT keeps it as it was.
    pub ended_at: Option<i64>,
    /// The sale's waiting room (`domain/queue.rs`); `None`: buyers buy without one.
    pub queue: Option<Queue>,
}

impl SaleSettings {
    /// `stock` units at `price`, open now and for good, no per-user limit, orders final when
    /// accepted (`/kill`'s default sale, and the benches' and tests' plain sales).
    pub fn plain(stock: u64, price: u64) -> Self {
        Self {
            stock,
            per_user_limit: None,
            price,
            starts_at: None,
            ends_at: None,
            payment_timeout_secs: None,
            ended_at: None,
            queue: None,
        }
    }

    /// These settings if they keep a sale's rules (numbers a Lua number holds exactly, a
    /// per-user limit of at least 1, a payment window of a second to a day); otherwise which
    /// rule they break, in words for the caller.
    pub fn checked(self) -> Result<Self, InvalidInput> {
        if self.stock > MAX_STOCK {
            return Err(InvalidInput(format!("stock must be at most {MAX_STOCK}")));
        }
        if self.per_user_limit == Some(0) {
            return Err(InvalidInput(
                "per_user_limit must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        // Redis hands numbers back as Lua doubles and Rust reads them as i64: a limit past
        // the largest stock means nothing anyway (schemathesis found a larger one answered
        // 500 on the next read).
        if self.per_user_limit.is_some_and(|limit| limit > MAX_STOCK) {
            return Err(InvalidInput(format!(
                "per_user_limit must be at most {MAX_STOCK}"
            )));
        }
        if self.price > MAX_PRICE {
            return Err(InvalidInput(format!("price must be at most {MAX_PRICE}")));
        }
        // An ends_at at or before starts_at is an empty window: a sale that never opens
        // (state closed), not an error. JSON Schema cannot compare two fields, and the
        // document must describe every request the service accepts.
        if let Some(timeout) = self.payment_timeout_secs
            && !(1..=MAX_PAYMENT_TIMEOUT_SECS).contains(&timeout)
        {
            return Err(InvalidInput(format!(
                "payment_timeout_secs must be 1 to {MAX_PAYMENT_TIMEOUT_SECS} (leave it out for orders final when accepted)"
            )));
        }
        Ok(self)
    }
}

/// An RFC 3339 time (the API's one format) as milliseconds since the Unix epoch.
pub fn parse_time(field: &str, raw: Option<&str>) -> Result<Option<i64>, InvalidInput> {
    raw.map(|text| {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| InvalidInput(format!("{field} is not an RFC 3339 time: {e}")))
    })
    .transpose()
}

/// RFC 3339 in UTC with milliseconds, the one time format of the API and the events.
pub fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    Scheduled,
    Open,
    SoldOut,
    Closed,
    /// Ended and settled, and left Redis (`FLASHSALE_ARCHIVE_AFTER_SECS`): its figures are
    /// final, its orders read from the record; a PUT starts the sku anew.
    Archived,
}

/// What a PUT did to a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The sku had no sale (or an archived one): 201.
    Created,
    /// It had one: its settings were replaced, 200.
    Replaced,
}

/// Whether a PUT keeps a sale's early end (an operator's `/end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyEnd {
    /// A PUT's settings say nothing of it: a sale ended early stays ended.
    Kept,
    /// Ending and reopening decide it: as the settings say.
    AsSettingsSay,
}

/// A sale as `GET /v1/sales/{sku}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sale {
    pub sku: String,
    pub stock: u64,
    pub per_user_limit: Option<u64>,
    pub price: u64,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub payment_timeout_secs: Option<u64>,
    pub sold: u64,
    pub remaining: u64,
    pub state: SaleState,
    /// When an operator ended the sale early (`POST /v1/sales/{sku}/end`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// When the sale was archived (state `archived`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
    /// Its waiting room, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    /// How its orders stand: shown to the admin token only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<OrderTally>,
    /// When this view was read and the window's bounds, in ms on Redis's clock: what the live
    /// stream needs for its countdown and to know when the state changes by the clock alone.
    #[serde(skip)]
    pub clock: SaleClock,
}

/// A sale's waiting room as GET shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    #[serde(flatten)]
    pub settings: QueueSettings,
    /// When buyers may start to join.
    pub opens_at: String,
    /// Whether admission is paused (`POST /v1/sales/{sku}/queue/pause`).
    pub paused: bool,
    /// Places 1 to this are admitted (some may have lapsed) at the time of the read.
    pub admitted: u64,
    /// The queue itself, for the replicas' gate (`operations/queue.rs`).
    #[serde(skip)]
    pub queue: Queue,
}

impl QueueView {
    pub fn new(queue: &Queue, now_ms: i64) -> Self {
        Self {
            settings: queue.settings,
            opens_at: format_time(queue.opens_at()),
            paused: queue.paused(),
            admitted: queue.schedule.admitted(now_ms),
            queue: queue.clone(),
        }
    }
}

/// A sale's orders by status (the operator's view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderTally {
    /// Every order the sale took.
    pub total: u64,
    /// Final when accepted (a sale without a payment window).
    pub created: u64,
    pub pending_payment: u64,
    pub paid: u64,
    pub expired: u64,
    pub cancelled: u64,
}

/// A sale's times in ms on Redis's clock (see [`Sale::clock`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleClock {
    pub read_at_ms: i64,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
}

impl SaleClock {
    /// The next instant after the read at which the clock alone changes the sale's state
    /// (it opens or closes); `None` when no such instant lies ahead.
    pub fn next_change_ms(&self) -> Option<i64> {
        [self.starts_at_ms, self.ends_at_ms]
            .into_iter()
            .flatten()
            .filter(|&at| at > self.read_at_ms)
            .min()
    }
}

impl Sale {
    /// The view of `settings` with `sold` units gone, at `now_ms` on Redis's clock.
    pub fn new(sku: &Sku, settings: &SaleSettings, sold: u64, now_ms: i64) -> Self {
        let empty_window =
            matches!((settings.starts_at, settings.ends_at), (Some(s), Some(e)) if e <= s);
        let state = if empty_window
            || settings.ended_at.is_some()
            || settings.ends_at.is_some_and(|end| now_ms >= end)
        {
            SaleState::Closed
        } else if settings.starts_at.is_some_and(|start| now_ms < start) {
            SaleState::Scheduled
        } else if sold >= settings.stock {
            SaleState::SoldOut
        } else {
            SaleState::Open
        };
        Sale {
            sku: sku.to_string(),
            stock: settings.stock,
            per_user_limit: settings.per_user_limit,
            price: settings.price,
            starts_at: settings.starts_at.map(format_time),
            ends_at: settings.ends_at.map(format_time),
            payment_timeout_secs: settings.payment_timeout_secs,
            sold,
            remaining: settings.stock.saturating_sub(sold),
            state,
            ended_at: settings.ended_at.map(format_time),
            queue: settings.queue.as_ref().map(|q| QueueView::new(q, now_ms)),
            archived_at: None,
            orders: None,
            clock: SaleClock {
                read_at_ms: now_ms,
                starts_at_ms: settings.starts_at,
                ends_at_ms: settings.ends_at,
            },
        }
    }
}

/// One sale as recorded in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleDefinition {
    pub sku: Sku,
    pub stock: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_limit: Option<u64>,
    pub price: u64,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_timeout_secs: Option<u64>,
    /// Ended early at (ms); absent while the sale runs by its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// The waiting room and its admission schedule, rate changes included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
    /// Set once the sale ended, settled and left Redis (`recovery/archive.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<ArchiveRecord>,
    /// The order stream's sequence this sale's history starts at: set when a PUT starts an
    /// archived sku anew, so the new sale's rebuild and reads leave the old one's orders out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_from: Option<u64>,
    /// The bucket's revision of this definition (not part of the JSON): Redis keeps the
    /// revision it holds, so of two PUTs racing, the later definition wins in both stores.
    #[serde(skip)]
    pub revision: u64,
}

impl SaleDefinition {
    pub fn new(sku: &Sku, settings: &SaleSettings) -> Self {
        Self {
            sku: sku.clone(),
            stock: settings.stock,
            per_user_limit: settings.per_user_limit,
            price: settings.price,
            starts_at: settings.starts_at,
            ends_at: settings.ends_at,
            payment_timeout_secs: settings.payment_timeout_secs,
            ended_at: settings.ended_at,
            queue: settings.queue.clone(),
            archived: None,
            history_from: None,
            revision: 0,
        }
    }

    /// The view of an archived sale: its settings and its final figures; `None` while it is
    /// not archived.
    pub fn archived_view(&self) -> Option<Sale> {
        let record = self.archived.as_ref()?;
        let mut sale = Sale::new(
            &self.sku,
            &self.settings(),
            record.sold,
            record.archived_at_ms,
        );
        sale.state = SaleState::Archived;
        sale.archived_at = Some(format_time(record.archived_at_ms));
        sale.orders = Some(record.orders);
        // Nothing changes it any more, the clock included.
        sale.clock = SaleClock {
            read_at_ms: record.archived_at_ms,
            ..SaleClock::default()
        };
        Some(sale)
    }

    pub fn settings(&self) -> SaleSettings {
        SaleSettings {
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            price: self.price,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            payment_timeout_secs: self.payment_timeout_secs,
            ended_at: self.ended_at,
            queue: self.queue.clone(),
        }
    }
}

/// What the definition keeps of a sale that left Redis: its final figures, and the revision
/// Redis sealed it at (`lua/archive.lua`), so that only that copy is ever dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub archived_at_ms: i64,
    pub sold: u64,
    pub orders: OrderTally,
    pub sealed_revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_window_then_stock() {
        let sku = Sku::parse("s").expect("valid sku");
        let settings = SaleSettings {
            stock: 2,
            per_user_limit: None,
            price: 0,
            starts_at: Some(100),
            ends_at: Some(200),
            payment_timeout_secs: None,
            ended_at: None,
            queue: None,
        };
        assert_eq!(
            Sale::new(&sku, &settings, 0, 99).state,
            SaleState::Scheduled
        );
        assert_eq!(Sale::new(&sku, &settings, 1, 150).state, SaleState::Open);
        assert_eq!(Sale::new(&sku, &settings, 2, 150).state, SaleState::SoldOut);
        assert_eq!(Sale::new(&sku, &settings, 0, 200).state, SaleState::Closed);
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(format_time(1_764_083_092_123), "2025-11-25T15:04:52.123Z");
    }
}
