//! Builds the whole service from [`Settings`], so `main` and the tests start the very same
//! thing (tests bind port 0 and read back [`Application::port`]): the wiring list below, the
//! HTTP server (`server.rs`) and the background tasks (`background.rs`).

mod background;
mod server;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::confirm::Confirmation;
use crate::events::relay::Relay;
use crate::events::relay_status::RelayStatus;
use crate::events::sale_changes::SaleChanges;
use crate::expiry::Sweeper;
use crate::http::AppState;
use crate::http::auth::Access;
use crate::http::rate_limit::RateLimits;
use crate::live::Live;
use crate::operations::Operations;
use crate::recovery::Recovery;
use crate::recovery::archive::Archiver;
use crate::store::Store;
use crate::support::backoff;
use crate::support::metrics::install as install_metrics;
use crate::support::settings::Settings;
use background::Background;

/// The longest wait between attempts to reach NATS again.
const NATS_RECONNECT_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("redis client: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("nats client: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    background: Background,
    drain_timeout: Duration,
}

impl Application {
    /// Prepares clients and binds the listener. Redis and NATS may be down: the service then
    /// starts anyway, answers 503 / not ready, and connects when they come up.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Before anything registers a metric, so the handles record into it.
        let metrics = settings.telemetry.metrics.then(install_metrics).flatten();
        let store = Store::new(&settings.redis)?;
        if let Err(e) = store.load_scripts().await {
            log::warn!("scripts not loaded at start ({e}); they load on first use");
        }
        // The relay hears of each (re)connection, so a backlog left by an outage starts going
        // out at once rather than after the relay's back-off (up to 5 s).
        let nats_connected = Arc::new(Notify::new());
        let nats = connect_nats(&settings, nats_connected.clone()).await?;
        let recovery = Arc::new(Recovery::new(store.rebuild(), nats.clone(), &settings));
        let relay_status = Arc::new(RelayStatus::default());
        let changes = SaleChanges::new(nats.clone(), &settings.nats.subject_prefix);
        let rate_limits = Arc::new(RateLimits::new(&settings.http));
        let mut background = Background::new();
        let relay = Relay::new(
            &settings,
            store.outbox(),
            nats.clone(),
            relay_status.clone(),
            recovery.clone(),
        );
        background.start_relay(relay.woken_on_connect(nats_connected));
        background.spawn(changes.clone().listen(store.sold_out()));
        background.spawn(Sweeper::new(store.expiry(), recovery.clone(), changes.clone()).run());
        background
            .spawn(Archiver::new(store.archive(), recovery.clone(), &settings.recovery).run());
        background.spawn(forget_idle_buyers(rate_limits.clone()));
        let confirmation = Confirmation::new(&settings.nats, nats.clone(), store.outbox());
        let operations = Operations::new(store.sales(), recovery, confirmation, changes.clone());
        let operations = Arc::new(operations);
        let shutdown = background.shutdown.clone();
        let live = Live::new(operations.clone(), &settings.http, shutdown);
        background.spawn(live.clone().listen(changes));
        let state = AppState {
            operations,
            live,
            relay_status,
            metrics,
            nats,
            default_sku: settings.recovery.default_sku.clone(),
            rate_limits,
            access: Access::new(&settings.http),
        };
        let (server, port) = server::listen(web::Data::new(state), &settings)?;
        let drain_timeout = settings.relay.drain_timeout;
        Ok(Self {
            port,
            server,
            background,
            drain_timeout,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What stops the service (see [`Stopper::stop`]).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            shutdown: self.background.shutdown.clone(),
        }
    }

    /// Serves until stopped through [`Application::stopper`]: actix-web then stops
    /// accepting and finishes the requests in flight; after that the relay delivers what it
    /// can within the drain timeout, and every background task has ended when this returns.
    /// What the relay could not deliver stays in the outbox for the next process.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        log::info!(
            "http server stopped; draining the outbox for up to {:?}",
            self.drain_timeout
        );
        self.background.join(self.drain_timeout).await;
        served
    }
}

/// The NATS client: it connects in the background (the service starts without NATS), finds a
/// server back from an outage within [`NATS_RECONNECT_MAX`], and tells `connected` each time.
async fn connect_nats(
    settings: &Settings,
    connected: Arc<Notify>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name("flashsale")
        .retry_on_initial_connect()
        // async-nats waits up to 4 s between attempts; attempts cost the server little.
        .reconnect_delay_callback(|attempts| {
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            backoff::doubling(Duration::from_millis(1), attempts, NATS_RECONNECT_MAX)
        })
        .event_callback(move |event| {
            if matches!(event, async_nats::Event::Connected) {
                connected.notify_one();
            }
            std::future::ready(())
        })
        .connect(settings.nats.urls.as_slice())
        .await
}

/// Stops a running [`Application`].
pub struct Stopper {
    server: actix_web::dev::ServerHandle,
    shutdown: CancellationToken,
}

impl Stopper {
    /// Ends the live streams (they would hold the shutdown for its whole timeout; browsers
    /// reconnect to another replica) and the background tasks but the relay, stops
    /// accepting, and lets requests in flight finish.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.server.stop(true).await;
    }
}

/// Drops rate-limit state of buyers and clients idle long enough to have a whole allowance.
async fn forget_idle_buyers(limits: Arc<RateLimits>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        every.tick().await;
        limits.forget_idle();
    }
}
