//! Builds the whole service from [`Settings`], so `main` and the tests start the very same
//! thing (tests bind port 0 and read back [`Application::port`]).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::dev::Service;
use actix_web::{App, HttpServer, web};
use secrecy::ExposeSecret;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::confirm::Confirmation;
use crate::events::jetstream::OrderStream;
use crate::events::relay::{DrainSignal, Relay};
use crate::events::relay_status::RelayStatus;
use crate::events::sale_changes::SaleChanges;
use crate::expiry::Sweeper;
use crate::http::rate_limit::RateLimits;
use crate::http::tickets::Tickets;
use crate::http::{self, AppState};
use crate::live::Live;
use crate::operations::Operations;
use crate::recovery::Recovery;
use crate::recovery::archive::Archiver;
use crate::store::Inventory;
use crate::support::settings::Settings;

/// How long an idle client connection stays open (see where the server is built).
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(75);
/// HTTP worker threads: as asked, or one per core but one. The main thread runs the Redis
/// and NATS connections' I/O, which every request waits on; a worker per core as well left
/// three busy threads on two cores, and measured 25 % more CPU per purchase and 15–20 %
/// fewer purchases/s than one worker (BENCHMARKS.md).
fn http_workers(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get().saturating_sub(1))
        .max(1)
}

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
    /// Cancelled at the stop: the live streams and every background task but the relay end.
    shutdown: CancellationToken,
    /// Every background task, the relay included, joined before the service returns.
    background: JoinSet<()>,
    /// Tells the relay how long it may go on delivering once the server has stopped.
    drain: DrainSignal,
    drain_timeout: Duration,
}

/// How long after the relay's drain deadline the service waits for its tasks to end (each
/// ends at its next await once cancelled; this only bounds a task stuck in a call).
const JOIN_MARGIN: Duration = Duration::from_secs(5);

/// Spawns `task` into `tasks`, to end when `shutdown` is cancelled (it is dropped at its next
/// await: each background task's work is a script call or a read that is safe to cut short).
fn spawn_until(
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = task => {}
        }
    });
}

impl Application {
    /// Prepares clients and binds the listener. Redis and NATS may be down: the service then
    /// starts anyway, answers 503 / not ready, and connects when they come up.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Before anything registers a metric, so the handles record into it.
        let metrics = if settings.telemetry.metrics {
            crate::support::metrics::install()
        } else {
            None
        };
        let inventory = Arc::new(Inventory::new(&settings.redis)?);
        if let Err(e) = inventory.load_scripts().await {
            log::warn!("scripts not loaded at start ({e}); they load on first use");
        }
        // The relay hears of each (re)connection, so a backlog left by an outage starts going
        // out at once rather than after the relay's back-off (up to 5 s).
        let nats_connected = Arc::new(tokio::sync::Notify::new());
        let nats = async_nats::ConnectOptions::new()
            .name("flashsale")
            .retry_on_initial_connect()
            // async-nats waits up to 4 s between attempts; a server back from an outage is
            // found within NATS_RECONNECT_MAX instead (attempts cost the server little).
            .reconnect_delay_callback(|attempts| {
                let exponent = attempts.saturating_sub(1).min(16) as u32;
                Duration::from_millis(2u64.pow(exponent)).min(NATS_RECONNECT_MAX)
            })
            .event_callback({
                let nats_connected = nats_connected.clone();
                move |event| {
                    if matches!(event, async_nats::Event::Connected) {
                        nats_connected.notify_one();
                    }
                    std::future::ready(())
                }
            })
            .connect(settings.nats.urls.as_slice())
            .await?;

        let relay_status = Arc::new(RelayStatus::default());
        let recovery = Arc::new(Recovery::new(inventory.clone(), nats.clone(), &settings));
        let relay = Relay::new(
            &settings,
            inventory.clone(),
            nats.clone(),
            relay_status.clone(),
            recovery.clone(),
        )
        .woken_on_connect(nats_connected);
        let confirmation = Confirmation::new(
            settings.nats.confirm,
            nats.clone(),
            OrderStream::new(&settings.nats),
            settings.nats.confirm_timeout,
            inventory.clone(),
        );
        let shutdown = CancellationToken::new();
        let mut background = JoinSet::new();
        let (drain, drain_requested) = tokio::sync::watch::channel(None);
        // The relay ends by itself, at its drain deadline.
        background.spawn(relay.run(drain_requested));
        let sale_changes = SaleChanges::new(nats.clone(), &settings.nats.subject_prefix);
        spawn_until(
            &mut background,
            &shutdown,
            sale_changes.clone().listen(inventory.clone()),
        );
        spawn_until(
            &mut background,
            &shutdown,
            Sweeper::new(inventory.clone(), recovery.clone(), sale_changes.clone()).run(),
        );
        spawn_until(
            &mut background,
            &shutdown,
            Archiver::new(
                inventory.clone(),
                recovery.clone(),
                settings.recovery.archive_after,
                settings.recovery.default_sku.clone(),
            )
            .run(),
        );

        let rate_limits = Arc::new(RateLimits::new(&settings.http));
        spawn_until(
            &mut background,
            &shutdown,
            forget_idle_buyers(rate_limits.clone()),
        );

        let listener = TcpListener::bind(settings.http.bind)?;
        let address = listener.local_addr()?;
        let operations = Arc::new(Operations::new(
            inventory.clone(),
            recovery,
            confirmation,
            sale_changes.clone(),
        ));
        let live = Live::new(
            operations.clone(),
            settings.http.live_viewers,
            settings.http.live_max,
            settings.http.live_refresh,
            shutdown.clone(),
        );
        spawn_until(
            &mut background,
            &shutdown,
            live.clone().listen(sale_changes),
        );
        let state = web::Data::new(AppState {
            operations,
            live: live.clone(),
            inventory,
            relay_status,
            metrics,
            nats,
            admin_token: settings.http.admin_token.clone(),
            default_sku: settings.recovery.default_sku.clone(),
            rate_limits,
            api_tokens: settings.http.api_tokens.clone(),
            tickets: Tickets::new(
                settings
                    .http
                    .ticket_key
                    .as_ref()
                    .map(ExposeSecret::expose_secret),
                settings.http.require_ticket,
            ),
        });
        // Signals are the caller's: main stops the server gracefully on SIGINT as on SIGTERM
        // (actix-web alone would drop in-flight requests on SIGINT).
        let cors_origins = settings.http.cors_origins.clone();
        let mut server = HttpServer::new(move || {
            let request_seconds = crate::support::metrics::request_histogram();
            let responses = crate::support::metrics::ResponseCounters::register();
            App::new()
                .app_data(state.clone())
                .wrap_fn(move |request, service| {
                    let started = Instant::now();
                    let response = service.call(request);
                    let (request_seconds, responses) = (request_seconds.clone(), responses.clone());
                    async move {
                        let response = response.await;
                        request_seconds.record(started.elapsed());
                        let status = match &response {
                            Ok(response) => response.status(),
                            Err(e) => e.as_response_error().status_code(),
                        };
                        responses.record(status.as_u16());
                        response
                    }
                })
                .configure(|cfg| http::configure(cfg, &cors_origins))
        })
        .disable_signals()
        // Longer than the idle timeout of the pools and balancers in front (60 s is common):
        // a server that closes an idle connection first races the client's next request on
        // it, which then fails mid-send. actix-web's default is 5 s.
        .keep_alive(HTTP_KEEP_ALIVE)
        .shutdown_timeout(30);
        server = server.workers(http_workers(settings.http.workers));
        let server = server.listen(listener)?.run();
        log::info!(
            "flashsale listening on http://{address} (namespace {}, default sale {})",
            settings.redis.namespace,
            settings.recovery.default_sku
        );
        Ok(Self {
            port: address.port(),
            server,
            shutdown,
            background,
            drain,
            drain_timeout: settings.relay.drain_timeout,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What stops the service (see [`Stopper::stop`]).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Serves until stopped through [`Application::stopper`]: actix-web then stops
    /// accepting and finishes the requests in flight; after that the relay delivers what it
    /// can within the drain timeout. What it could not stays in the outbox for the next
    /// process.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        log::info!(
            "http server stopped; draining the outbox for up to {:?}",
            self.drain_timeout
        );
        // The relay may already be gone (a panic); then there is nothing to wait for.
        let _ = self.drain.send(Some(Instant::now() + self.drain_timeout));
        // Also when the server ended without the stopper (it failed).
        self.shutdown.cancel();
        let mut background = self.background;
        let joined = tokio::time::timeout(self.drain_timeout + JOIN_MARGIN, async {
            while let Some(ended) = background.join_next().await {
                if let Err(e) = ended {
                    log::error!("background task failed: {e}");
                }
            }
        })
        .await;
        if joined.is_err() {
            log::error!(
                "{} background tasks still running {JOIN_MARGIN:?} past the drain; aborted",
                background.len()
            );
            background.shutdown().await;
        }
        served
    }
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
