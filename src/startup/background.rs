//! The service's background tasks, started with it and joined before it returns: the relay,
//! which ends by itself at its drain deadline, and the others (the sweeper, the archiver, the
//! change listeners, the idle-buyer sweep), which end at the stop.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::relay::{DrainSignal, Relay, SaleRebuilder};

/// How long after the relay's drain deadline the service waits for its tasks to end (each
/// ends at its next await once cancelled; this only bounds a task stuck in a call).
const JOIN_MARGIN: Duration = Duration::from_secs(5);

pub struct Background {
    /// Cancelled at the stop: the live streams and every task but the relay end.
    pub shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Tells the relay how long it may go on delivering once the server has stopped.
    drain: Option<DrainSignal>,
}

impl Background {
    pub fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            drain: None,
        }
    }

    /// Starts the relay: it ends once told to drain, at the drain's deadline.
    pub fn start_relay<R: SaleRebuilder>(&mut self, relay: Relay<R>) {
        let (drain, drain_requested) = tokio::sync::watch::channel(None);
        self.tasks.spawn(relay.run(drain_requested));
        self.drain = Some(drain);
    }

    /// Starts `task`, to end at the stop (dropped at its next await: each background task's
    /// work is a script call or a read that is safe to cut short).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Ends every task: the relay delivers for up to `drain_timeout`, the others stop at once;
    /// returns once all have ended (or, past the drain and a margin, aborts the rest).
    pub async fn join(mut self, drain_timeout: Duration) {
        // The relay may already be gone (a panic); then there is nothing to wait for.
        if let Some(drain) = &self.drain {
            let _ = drain.send(Some(Instant::now() + drain_timeout));
        }
        // Also when the server ended without the stopper (it failed).
        self.shutdown.cancel();
        let tasks = &mut self.tasks;
        let joined = tokio::time::timeout(drain_timeout + JOIN_MARGIN, async {
            while let Some(ended) = tasks.join_next().await {
                if let Err(e) = ended {
                    log::error!("background task failed: {e}");
                }
            }
        })
        .await;
        if joined.is_err() {
            log::error!(
                "{} background tasks still running {JOIN_MARGIN:?} past the drain; aborted",
                self.tasks.len()
            );
            self.tasks.shutdown().await;
        }
    }
}
