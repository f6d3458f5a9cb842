//! Sales seen live: `GET /v1/sales/{sku}/live`, a Server-Sent Events stream of a sale's
//! state and stock.
//!
//! Each replica reads a watched sale once per change, never per viewer, and hands the one
//! frame to all its viewers in memory ([`feed`]). Changes reach every replica as NATS notices
//! (`events/sale_changes.rs`); a sale nobody watches here costs nothing but ignoring them.
//! Viewers are bounded per replica (FLASHSALE_LIVE_VIEWERS), and one that falls
//! [`feed::VIEWER_BACKLOG`] frames behind is dropped rather than buffered: its browser
//! reconnects to the current state.

pub mod feed;
pub mod frame;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::Sku;
use crate::events::sale_changes::SaleChanges;
use crate::operations::Operations;
use crate::support::metrics;
use crate::support::settings::HttpSettings;
use feed::{Feed, Latest};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("this replica serves its most live viewers ({0}); try another or later")]
    TooManyViewers(usize),
    #[error("no sale with this sku")]
    SaleNotFound,
    #[error("the sale cannot be read now")]
    Unavailable,
}

pub struct Live {
    operations: Arc<Operations>,
    feeds: Mutex<HashMap<Sku, Arc<Feed>>>,
    viewers: AtomicUsize,
    max_viewers: usize,
    /// How long a stream lasts (FLASHSALE_LIVE_MAX_SECS), less up to a tenth so a crowd that
    /// joined together does not reconnect together.
    max_stream: Duration,
    /// How often a feed reads its sale without a notice (`feed.rs`).
    refresh: Duration,
    /// Viewers ever joined: spreads the streams' ends.
    joined: AtomicUsize,
    /// The service's: cancelled when it stops, so every stream ends and shutdown never waits
    /// on them (browsers reconnect to another replica).
    shutdown: CancellationToken,
}

impl Live {
    /// The viewers of this replica, as `settings` bound them; `shutdown` ends every stream.
    pub fn new(
        operations: Arc<Operations>,
        settings: &HttpSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            operations,
            feeds: Mutex::new(HashMap::new()),
            viewers: AtomicUsize::new(0),
            max_viewers: settings.live_viewers,
            max_stream: settings.live_max,
            refresh: settings.live_refresh,
            joined: AtomicUsize::new(0),
            shutdown,
        })
    }

    /// A new viewer of `sku`, starting from the sale as it stands.
    pub async fn watch(self: &Arc<Self>, sku: &Sku) -> Result<Viewer, WatchError> {
        if self.viewers.fetch_add(1, Ordering::AcqRel) >= self.max_viewers {
            self.viewers.fetch_sub(1, Ordering::AcqRel);
            metrics::record_live_dropped("refused");
            return Err(WatchError::TooManyViewers(self.max_viewers));
        }
        metrics::record_live_viewers(self.viewers.load(Ordering::Relaxed));
        let feed = self.join(sku);
        let slot = ViewerSlot {
            live: self.clone(),
            feed: feed.clone(),
        };
        // Subscribed before the latest frame is taken: a change in between arrives twice,
        // never not at all.
        let frames = feed.frames.subscribe();
        let mut latest = feed.latest.subscribe();
        let first = latest
            .wait_for(|latest| !matches!(latest, Latest::Reading))
            .await
            .map(|latest| latest.clone())
            .unwrap_or(Latest::Unavailable);
        let spread = self.joined.fetch_add(1, Ordering::Relaxed) % 101;
        let lasts = self.max_stream - self.max_stream * spread as u32 / 1010;
        match first {
            Latest::Frame(frame) => Ok(Viewer {
                ends_at: tokio::time::Instant::now() + lasts,
                first: Some(Bytes::from([&frame::RETRY[..], &frame[..]].concat())),
                sent_first: Some(frame),
                frames,
                stop: self.shutdown.clone(),
                _slot: Box::new(slot),
            }),
            Latest::Missing => Err(WatchError::SaleNotFound),
            Latest::Reading | Latest::Unavailable => Err(WatchError::Unavailable),
        }
    }

    /// Viewers on this replica now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Re-reads the watched sales as notices of their changes arrive, until the service
    /// stops. Subscribes again if NATS refuses at first.
    pub async fn listen(self: Arc<Self>, changes: SaleChanges) {
        loop {
            match changes.subscribe().await {
                Ok(notices) => {
                    let mut notices = std::pin::pin!(notices.take_until(self.shutdown.cancelled()));
                    while let Some((sku, change)) = notices.next().await {
                        if let Some(feed) = self.feeds.lock().get(&sku) {
                            feed.poke(change);
                        }
                    }
                    return;
                }
                Err(e) => {
                    log::warn!("live streams cannot hear of changes yet, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn join(self: &Arc<Self>, sku: &Sku) -> Arc<Feed> {
        let mut feeds = self.feeds.lock();
        if let Some(feed) = feeds.get(sku) {
            feed.viewers.fetch_add(1, Ordering::AcqRel);
            return feed.clone();
        }
        let feed = Arc::new(Feed::new(
            sku.clone(),
            self.shutdown.child_token(),
            self.refresh,
        ));
        feed.viewers.store(1, Ordering::Release);
        feeds.insert(sku.clone(), feed.clone());
        let live: Weak<Self> = Arc::downgrade(self);
        let gone = feed.clone();
        tokio::spawn(feed.clone().run(self.operations.clone(), move || {
            if let Some(live) = live.upgrade() {
                live.remove(&gone);
            }
        }));
        feed
    }

    fn leave(&self, feed: &Arc<Feed>) {
        let left = self.viewers.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::record_live_viewers(left);
        let mut feeds = self.feeds.lock();
        if feed.viewers.fetch_sub(1, Ordering::AcqRel) == 1 {
            remove_from(&mut feeds, feed);
            feed.stop.cancel();
        }
    }

    fn remove(&self, feed: &Arc<Feed>) {
        remove_from(&mut self.feeds.lock(), feed);
    }
}

/// Takes `feed` out of the map if it is still the one there.
fn remove_from(feeds: &mut HashMap<Sku, Arc<Feed>>, feed: &Arc<Feed>) {
    if feeds.get(&feed.sku).is_some_and(|f| Arc::ptr_eq(f, feed)) {
        feeds.remove(&feed.sku);
    }
}

/// A viewer's place: given back when its stream ends, however it ends.
struct ViewerSlot {
    live: Arc<Live>,
    feed: Arc<Feed>,
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.live.leave(&self.feed);
    }
}

/// One viewer's stream: the current state first, then every change, with heartbeats.
pub struct Viewer {
    first: Option<Bytes>,
    /// The frame `first` carries, until the channel has passed it (or a later one): the
    /// channel may deliver it again.
    sent_first: Option<Bytes>,
    frames: broadcast::Receiver<Bytes>,
    stop: CancellationToken,
    /// When the stream ends and the browser reconnects (FLASHSALE_LIVE_MAX_SECS).
    ends_at: tokio::time::Instant,
    /// Its place among the replica's viewers (a [`ViewerSlot`]), given back on drop.
    _slot: Box<dyn Send + Sync>,
}

impl Viewer {
    /// The body of the event stream. It ends when the service stops, when it has lasted its
    /// time, or when the viewer falls too far behind (a slow reader is dropped, not
    /// buffered); the browser reconnects in each case.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::unfold(self, |mut viewer| async move {
            if let Some(first) = viewer.first.take() {
                return Some((Ok(first), viewer));
            }
            let next = loop {
                let next = tokio::select! {
                    biased;
                    _ = viewer.stop.cancelled() => return None,
                    _ = tokio::time::sleep_until(viewer.ends_at) => return None,
                    next = viewer.frames.recv() => next,
                };
                match (&next, viewer.sent_first.take()) {
                    (Ok(frame), Some(first)) if *frame == first => continue,
                    _ => break next,
                }
            };
            match next {
                Ok(frame) => Some((Ok(frame), viewer)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    log::debug!("live viewer dropped: {missed} frames behind");
                    metrics::record_live_dropped("slow");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn viewer(frames: broadcast::Receiver<Bytes>, stop: CancellationToken) -> Viewer {
        Viewer {
            first: Some(Bytes::from_static(b"first")),
            sent_first: Some(Bytes::from_static(b"current")),
            frames,
            stop,
            ends_at: tokio::time::Instant::now() + Duration::from_secs(60),
            _slot: Box::new(()),
        }
    }

    #[tokio::test]
    async fn a_viewer_too_far_behind_is_dropped_not_buffered() {
        let (sender, receiver) = broadcast::channel(feed::VIEWER_BACKLOG);
        let mut stream = std::pin::pin!(viewer(receiver, CancellationToken::new()).into_stream());
        assert_eq!(
            stream.next().await.map(Result::ok),
            Some(Some(Bytes::from_static(b"first")))
        );
        // The viewer reads nothing while the sale changes past what the channel holds.
        for i in 0..=feed::VIEWER_BACKLOG {
            sender.send(Bytes::from(i.to_string())).expect("a receiver");
        }
        assert!(
            stream.next().await.is_none(),
            "dropped: its browser reconnects"
        );
    }

    #[tokio::test]
    async fn a_viewer_keeping_up_gets_every_frame_once_and_ends_on_shutdown() {
        let (sender, receiver) = broadcast::channel(feed::VIEWER_BACKLOG);
        let stop = CancellationToken::new();
        let mut stream = std::pin::pin!(viewer(receiver, stop.clone()).into_stream());
        // The frame it started from comes again through the channel: not sent twice.
        for frame in ["current", "a", "b"] {
            sender.send(Bytes::from(frame)).expect("a receiver");
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(stream.next().await.and_then(Result::ok).expect("a frame"));
        }
        assert_eq!(got, ["first", "a", "b"].map(Bytes::from));
        stop.cancel();
        assert!(stream.next().await.is_none());
    }
}
