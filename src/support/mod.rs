//! What every layer uses: the settings read at start, the metrics, the log set-up. Nothing
//! here imports a module above it.

pub mod backoff;
pub mod group_commit;
pub mod metrics;
pub mod settings;
pub mod telemetry;
pub mod throttle;
