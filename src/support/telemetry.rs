//! Logging through log4rs, configured from a YAML file in the repository (`log4rs.yaml`).

use std::path::Path;

use log::LevelFilter;
use log4rs::append::console::ConsoleAppender;
use log4rs::config::{Appender, Config, Logger, Root};

/// The libraries' log levels, also set in `log4rs.yaml`: their connection churn (a warning
/// per reconnection attempt) is not a decision of ours; the service logs each loss and
/// return of Redis and NATS once, with its duration.
pub const LIBRARY_LEVELS: [(&str, LevelFilter); 3] = [
    ("async_nats", LevelFilter::Warn),
    ("actix_server", LevelFilter::Warn),
    ("redis", LevelFilter::Error),
];

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: FLASHSALE_LOG_CONFIG={path:?}: {reason}")]
pub struct LoggingError {
    path: String,
    reason: String,
}

/// Starts logging from `path`. A missing file is an error only when it was asked for
/// explicitly; otherwise (the default name, run from another directory) logging falls back to
/// the console at `info`, and says so.
pub fn init(path: &Path, explicit: bool) -> Result<(), LoggingError> {
    let error = |reason: String| LoggingError {
        path: path.display().to_string(),
        reason,
    };
    if !explicit && !path.exists() {
        let console = ConsoleAppender::builder().build();
        let config = LIBRARY_LEVELS
            .iter()
            .fold(
                Config::builder().appender(Appender::builder().build("console", Box::new(console))),
                |config, &(library, level)| config.logger(Logger::builder().build(library, level)),
            )
            .build(Root::builder().appender("console").build(LevelFilter::Info))
            .map_err(|e| error(e.to_string()))?;
        log4rs::init_config(config).map_err(|e| error(e.to_string()))?;
        log::warn!("{} not found; logging to the console only", path.display());
        return Ok(());
    }
    log4rs::init_file(path, Default::default()).map_err(|e| error(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_quiets_the_same_libraries() {
        let shipped = include_str!("../../log4rs.yaml");
        for (library, level) in LIBRARY_LEVELS {
            let entry = format!("  {library}:\n    level: {}", level.as_str().to_lowercase());
            assert!(
                shipped.contains(&entry),
                "log4rs.yaml sets {library} to {level}"
            );
        }
    }
}
