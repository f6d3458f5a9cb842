//! What a live stream sends: the sale as a Server-Sent Event, framed once per change and
//! shared by every viewer of the sale.

use bytes::Bytes;
use serde::Serialize;

use crate::domain::sale::{Sale, SaleState, format_time};

/// One `sale` event of `GET /v1/sales/{sku}/live`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveSale {
    pub sku: String,
    pub state: SaleState,
    pub stock: u64,
    pub sold: u64,
    pub remaining: u64,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    /// Redis's clock when the sale was read (RFC 3339, ms): a page's countdown runs on it,
    /// not on the buyer's own clock.
    pub server_time: String,
    /// When the sale was ended early (see `POST /v1/sales/{sku}/end`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Its waiting room, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<LiveQueue>,
    /// The read's time in ms: the event's `id:`.
    #[serde(skip)]
    read_at_ms: i64,
}

impl LiveSale {
    pub fn new(sale: &Sale) -> Self {
        Self {
            sku: sale.sku.clone(),
            state: sale.state,
            stock: sale.stock,
            sold: sale.sold,
            remaining: sale.remaining,
            starts_at: sale.starts_at.clone(),
            ends_at: sale.ends_at.clone(),
            server_time: format_time(sale.clock.read_at_ms),
            ended_at: sale.ended_at.clone(),
            queue: sale.queue.as_ref().map(|view| LiveQueue {
                admitted: view.admitted,
                admit_per_sec: view.queue.schedule.rate(),
                admission_secs: view.settings.admission_secs,
                opens_at: view.opens_at.clone(),
                draw_at: format_time(view.queue.schedule.starts()),
            }),
            read_at_ms: sale.clock.read_at_ms,
        }
    }

    /// Whether a viewer holding `earlier` has anything to learn from this: all but the
    /// read's time, and what the clock alone moves (the places admitted at the rate, which a
    /// page counts on from `server_time`).
    pub fn differs_from(&self, earlier: &LiveSale) -> bool {
        let schedule = |live: &LiveSale| {
            live.queue.as_ref().map(|q| {
                (
                    q.admit_per_sec,
                    q.admission_secs,
                    q.opens_at.clone(),
                    q.draw_at.clone(),
                )
            })
        };
        (
            self.state,
            self.stock,
            self.sold,
            &self.starts_at,
            &self.ends_at,
            &self.ended_at,
            schedule(self),
        ) != (
            earlier.state,
            earlier.stock,
            earlier.sold,
            &earlier.starts_at,
            &earlier.ends_at,
            &earlier.ended_at,
            schedule(earlier),
        )
    }

    /// `id: <read ms>`, `event: sale`, `data: <json>`. The id lets a browser's `EventSource`
    /// send `Last-Event-ID` when it reconnects; every stream starts with the current state
    /// anyway, so what it missed is never needed.
    pub fn frame(&self) -> Bytes {
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        Bytes::from(format!(
            "id: {}\nevent: sale\ndata: {json}\n\n",
            self.read_at_ms
        ))
    }
}

/// A sale's waiting room as the stream shows it: places admitted at `server_time`, and the
/// rate they go on at until the next event (0: paused). The place admitted at a later time
/// `t` is `admitted + admit_per_sec × (t − server_time)` (rounded down) until the next event
/// says otherwise: a pause, a resume or a new rate is sent at once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveQueue {
    pub admitted: u64,
    pub admit_per_sec: u64,
    /// How long an admission lasts.
    pub admission_secs: u64,
    /// When buyers may start to join.
    pub opens_at: String,
    /// When the places of early joiners are drawn: the start of admission.
    pub draw_at: String,
}

/// One event of the stream as Server-Sent Events carry it (the shape OpenAPI 3.2 gives
/// `text/event-stream`): the wire format of every `sale` event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LiveEvent {
    /// The read's time in ms on Redis's clock; a reconnecting browser sends it back as
    /// `Last-Event-ID`.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// Always `sale`.
    #[schema(pattern = "^sale$")]
    event: String,
    /// A `LiveSale`, as JSON.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// Sent first on every stream: how long a browser waits before reconnecting (ms).
pub const RETRY: Bytes = Bytes::from_static(b"retry: 2000\n\n");

/// A comment line: keeps proxies from closing an idle stream and tells a dead peer apart.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sku;
    use crate::domain::sale::SaleSettings;

    #[test]
    fn a_frame_is_one_sse_event_and_only_a_change_differs() {
        let sku = Sku::parse("s").expect("valid sku");
        let sale = Sale::new(&sku, &SaleSettings::plain(5, 100), 2, 1_764_083_092_123);
        let live = LiveSale::new(&sale);
        let frame = String::from_utf8(live.frame().to_vec()).expect("utf-8");
        assert!(frame.starts_with("id: 1764083092123\nevent: sale\ndata: {"));
        assert!(frame.ends_with("}\n\n"));
        assert_eq!(frame.matches('\n').count(), 4, "one data line: {frame}");
        assert!(frame.contains(r#""remaining":3"#) && frame.contains(r#""state":"open""#));
        assert!(frame.contains(r#""server_time":"2025-11-25T15:04:52.123Z""#));

        let later = LiveSale::new(&Sale::new(
            &sku,
            &SaleSettings::plain(5, 100),
            2,
            1_764_083_099_000,
        ));
        assert!(!later.differs_from(&live), "only the clock moved");
        let sold = LiveSale::new(&Sale::new(
            &sku,
            &SaleSettings::plain(5, 100),
            3,
            1_764_083_099_000,
        ));
        assert!(sold.differs_from(&live));
    }
}
