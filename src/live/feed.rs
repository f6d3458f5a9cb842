//! One watched sale on this replica: a task that reads the sale when it changes and hands
//! the one frame to every viewer.
//!
//! Reads are coalesced: at most one per [`READ_INTERVAL`], however fast the sale sells, but
//! a notice of a state change (sold out, ended, restocked) is read at once, and a read whose
//! state differs from the last one sent is always sent. The clock changes a sale's state too
//! (it opens, it closes): the task reads again at that instant without any notice. And it
//! reads every `refresh` (FLASHSALE_LIVE_REFRESH_MS, 5 s) regardless, since a notice can be
//! lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::frame::{HEARTBEAT, LiveSale};
use crate::domain::Sku;
use crate::events::sale_changes::Change;
use crate::operations::Operations;

/// The most reads (and so events) per sale and replica: ten a second.
pub const READ_INTERVAL: Duration = Duration::from_millis(100);
/// A comment on every stream this often, changes or not.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// After a failed read (Redis down), the next try.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Frames a viewer may fall behind before it is dropped (it reconnects to the current state).
pub const VIEWER_BACKLOG: usize = 64;

/// What a viewer joining now starts from.
#[derive(Debug, Clone)]
pub enum Latest {
    /// The first read has not answered yet.
    Reading,
    Frame(Bytes),
    /// No such sale.
    Missing,
    /// The first read failed (Redis unreachable).
    Unavailable,
}

pub struct Feed {
    pub sku: Sku,
    pub frames: broadcast::Sender<Bytes>,
    pub latest: watch::Sender<Latest>,
    /// Viewers of this feed; changed only under the hub's lock.
    pub viewers: std::sync::atomic::AtomicUsize,
    wake: Notify,
    /// Set with a wake that must skip the coalescing wait.
    urgent: AtomicBool,
    /// Cancelled when the last viewer leaves or the service stops.
    pub stop: CancellationToken,
    /// A read this often without any notice: notices travel over NATS core, at most once, so
    /// one lost (a reconnect, NATS down while the sale sells on) costs at most this staleness.
    refresh: Duration,
}

impl Feed {
    pub fn new(sku: Sku, stop: CancellationToken, refresh: Duration) -> Self {
        Self {
            sku,
            frames: broadcast::channel(VIEWER_BACKLOG).0,
            latest: watch::channel(Latest::Reading).0,
            viewers: Default::default(),
            wake: Notify::new(),
            urgent: AtomicBool::new(false),
            stop,
            refresh,
        }
    }

    /// The sale changed somewhere: read it again; at once unless units were only sold (a
    /// restock or a new state is news a viewer waits for, a sale is the throttled tick's).
    pub fn poke(&self, change: Change) {
        if change != Change::Sold {
            self.urgent.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Reads and fans out until stopped, or until the first read finds no sale to watch;
    /// `on_gone` then takes the feed out of the hub.
    pub async fn run(self: Arc<Self>, operations: Arc<Operations>, on_gone: impl FnOnce()) {
        let mut sent: Option<LiveSale> = None;
        let mut last_read = Instant::now() - READ_INTERVAL;
        // When the clock next changes the state, or the next try after a failed read.
        let mut read_at: Option<Instant> = None;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
        let mut refresh = tokio::time::interval_at(Instant::now() + self.refresh, self.refresh);
        for timer in [&mut heartbeat, &mut refresh] {
            // A feed busy past a tick does not make up for it with a burst.
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = sleep_until_some(read_at) => {}
                    _ = refresh.tick() => {}
                    _ = heartbeat.tick() => {
                        let _ = self.frames.send(HEARTBEAT);
                        continue;
                    }
                    _ = self.stop.cancelled() => return,
                }
                // Coalesce: changes arriving within the interval share the read at its end.
                while !self.urgent.swap(false, Ordering::AcqRel)
                    && last_read.elapsed() < READ_INTERVAL
                {
                    tokio::select! {
                        _ = sleep_until(last_read + READ_INTERVAL) => break,
                        _ = self.wake.notified() => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
            last_read = Instant::now();
            let read = operations.sale(&self.sku).await;
            read_at = None;
            let sale = match read {
                Ok(Some(sale)) => sale,
                other if first => {
                    self.latest.send_replace(match other {
                        Ok(_) => Latest::Missing,
                        Err(_) => Latest::Unavailable,
                    });
                    return on_gone();
                }
                Ok(None) => continue,
                Err(e) => {
                    log::debug!("live sale {}: read failed, retrying: {e}", self.sku);
                    read_at = Some(Instant::now() + RETRY_INTERVAL);
                    continue;
                }
            };
            first = false;
            if let Some(at) = sale.clock.next_change_ms() {
                // A few ms past the instant, so the read is on its far side.
                let wait = u64::try_from(at - sale.clock.read_at_ms + 5).unwrap_or(0);
                read_at = Some(Instant::now() + Duration::from_millis(wait));
            }
            let live = LiveSale::new(&sale);
            if sent.as_ref().is_none_or(|sent| live.differs_from(sent)) {
                let frame = live.frame();
                self.latest.send_replace(Latest::Frame(frame.clone()));
                // No receiver is no error: viewers come and go.
                let _ = self.frames.send(frame);
                sent = Some(live);
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
