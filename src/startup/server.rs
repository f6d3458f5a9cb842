//! The HTTP server: its workers, its connections' lifetime, and the request metrics around
//! every route.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};

use crate::http::{self, AppState};
use crate::support::settings::Settings;

/// How long an idle client connection stays open: longer than the idle timeout of the pools
/// and balancers in front (60 s is common), since a server that closes an idle connection
/// first races the client's next request on it, which then fails mid-send. actix-web's
/// default is 5 s.
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// How long a stop waits for the requests in flight.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

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

/// The server, listening where `settings` say, serving `state`, and the port it listens on.
/// Signals are the caller's: main stops it gracefully on SIGINT as on SIGTERM (actix-web
/// alone would drop in-flight requests on SIGINT).
pub fn listen(state: web::Data<AppState>, settings: &Settings) -> std::io::Result<(Server, u16)> {
    let listener = TcpListener::bind(settings.http.bind)?;
    let address = listener.local_addr()?;
    let cors_origins = settings.http.cors_origins.clone();
    let server = HttpServer::new(move || {
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
    .keep_alive(HTTP_KEEP_ALIVE)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .workers(http_workers(settings.http.workers));
    let server = server.listen(listener)?.run();
    let (namespace, default_sku) = (&settings.redis.namespace, &settings.recovery.default_sku);
    log::info!(
        "flashsale listening on http://{address} (namespace {namespace}, default sale {default_sku})"
    );
    Ok((server, address.port()))
}
