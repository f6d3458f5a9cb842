//! `flashsale` serves HTTP; `flashsale consume-orders` runs the order consumer; `flashsale
//! audit` compares Redis, JetStream and PostgreSQL; `flashsale openapi` prints the API's
//! OpenAPI document (as committed in `openapi.json`).

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use flashsale::events::consumer;
use flashsale::recovery::audit;
use flashsale::startup::Application;
use flashsale::support::settings::{Settings, table};
use flashsale::support::telemetry;

/// glibc's allocator took ~15 % of the service's CPU under load (malloc, free and their
/// consolidation; BENCHMARKS.md); mimalloc's thread-local free lists cost a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration (or arguments) the service refuses to start with.
const EXIT_CONFIG: u8 = 2;
/// Exit code of `audit` when a store could not be read.
const EXIT_UNAUDITED: u8 = 3;

/// A flash-sale inventory service: decides who wins the stock, atomically, and hands every
/// order to NATS JetStream. Every setting is an environment variable (or the flag named
/// after it); a bad value stops it with one line naming the variable, exit code 2.
#[derive(Parser)]
#[command(name = "flashsale", version, override_usage = USAGE)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
}

const USAGE: &str = "flashsale [SETTINGS] [consume-orders | audit | openapi]";

#[derive(Subcommand)]
enum Role {
    /// The order consumer: JetStream's order events into PostgreSQL.
    ConsumeOrders,
    /// Redis, JetStream and PostgreSQL compared sale by sale (exit 0 agree, 1 differ,
    /// 3 a store unreadable).
    Audit,
    /// The OpenAPI document of the HTTP API (as committed in openapi.json).
    Openapi,
}

/// The command line: the roles, and a flag for each setting (`--redis-url` for
/// `FLASHSALE_REDIS_URL`), listed by `--help` with its variable, meaning and default.
fn command_line() -> clap::Command {
    Cli::command()
        .next_help_heading("Settings")
        .args(table::SETTINGS.iter().map(|setting| {
            let help = match setting.default {
                Some(default) if !default.is_empty() => {
                    format!("{} [default: {default}]", setting.help)
                }
                _ => setting.help.to_owned(),
            };
            clap::Arg::new(setting.var)
                .long(table::flag_of(setting.var))
                .env(setting.var)
                // Tokens and keys are settings too: --help never shows a value.
                .hide_env_values(true)
                .value_name("VALUE")
                .help(help)
        }))
}

#[actix_web::main]
async fn main() -> ExitCode {
    // clap answers --help and --version itself, and refuses unknown arguments (exit 2).
    let matches = command_line().get_matches();
    let role = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli.role,
        Err(e) => e.exit(),
    };
    if let Some(Role::Openapi) = role {
        println!("{}", flashsale::http::openapi::document());
        return ExitCode::SUCCESS;
    }
    // A flag wins over its variable. The variables are read as ever (clap would take an
    // empty one for unset, where an empty token is refused).
    let from_flags = |name: &str| {
        (matches.value_source(name) == Some(ValueSource::CommandLine))
            .then(|| matches.get_one::<String>(name).cloned())
            .flatten()
            .or_else(|| std::env::var(name).ok())
    };
    let settings = match Settings::from_lookup(from_flags) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("flashsale: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The audit prints a table; logs would only interleave with it.
    let logs = !matches!(role, Some(Role::Audit));
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
        None => serve(settings).await,
        Some(Role::ConsumeOrders) => {
            consumer::run(settings, stop_signal()).await;
            ExitCode::SUCCESS
        }
        Some(Role::Audit) => match audit::run(&settings).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("flashsale audit: {e}");
                ExitCode::from(EXIT_UNAUDITED)
            }
        },
        Some(Role::Openapi) => ExitCode::SUCCESS,
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
