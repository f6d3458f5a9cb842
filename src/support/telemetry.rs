//! Logging through log4rs, configured from a YAML file in the repository (`log4rs.yaml`).

use std::path::Path;

use log::LevelFilter;
use log4rs::append::console::ConsoleAppender;
use log4rs::config::{Appender, Config, Root};

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
        let config = Config::builder()
            .appender(Appender::builder().build("console", Box::new(console)))
            .build(Root::builder().appender("console").build(LevelFilter::Info))
            .map_err(|e| error(e.to_string()))?;
        log4rs::init_config(config).map_err(|e| error(e.to_string()))?;
        log::warn!("{} not found; logging to the console only", path.display());
        return Ok(());
    }
    log4rs::init_file(path, Default::default()).map_err(|e| error(format!("{e:#}")))
}
