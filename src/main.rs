//! `flashsale` serves HTTP; `flashsale consume-orders` runs the order consumer; `flashsale
//! audit` compares Redis, JetStream and PostgreSQL; `flashsale openapi` prints the API's
//! OpenAPI document (as committed in `openapi.json`).

use std::process::ExitCode;

use flashsale::events::consumer;
use flashsale::recovery::audit;
use flashsale::startup::Application;
use flashsale::support::settings::Settings;
use flashsale::support::telemetry;

/// glibc's allocator took ~15 % of the service's CPU under load (malloc, free and their
/// consolidation; BENCHMARKS.md); mimalloc's thread-local free lists cost a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration (or arguments) the service refuses to start with.
const EXIT_CONFIG: u8 = 2;
/// Exit code of `audit` when a store could not be read.
const EXIT_UNAUDITED: u8 = 3;
const USAGE: &str = "usage: flashsale [consume-orders | audit | openapi]";

enum Role {
    Serve,
    ConsumeOrders,
    Audit,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Role::Serve,
        ["consume-orders"] => Role::ConsumeOrders,
        ["audit"] => Role::Audit,
        ["openapi"] => {
            println!("{}", flashsale::http::openapi::document());
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("flashsale: {USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("flashsale: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The audit prints a table; logs would only interleave with it.
    let logs = !matches!(role, Role::Audit);
    if logs
        && let Err(e) = telemetry::init(
            &settings.telemetry.log_config,
            settings.telemetry.log_config_explicit,
        )
    {
        eprintln!("flashsale: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match role {
        Role::Serve => serve(settings).await,
        Role::ConsumeOrders => {
            consumer::run(settings, stop_signal()).await;
            ExitCode::SUCCESS
        }
        Role::Audit => match audit::run(&settings).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("flashsale audit: {e}");
                ExitCode::from(EXIT_UNAUDITED)
            }
        },
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stopper = application.stopper();
    tokio::spawn(async move {
        stop_signal().await;
        log::info!("stop requested: finishing requests in flight");
        stopper.stop().await;
    });
    match application.run_until_stopped().await {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
