use std::process::ExitCode;

use flashsale::config::Settings;
use flashsale::startup::Application;
use flashsale::telemetry;

/// Exit code for configuration the service refuses to start with.
const EXIT_CONFIG: u8 = 2;

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("flashsale: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = telemetry::init(&settings.log_config, settings.log_config_explicit) {
        eprintln!("flashsale: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
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
