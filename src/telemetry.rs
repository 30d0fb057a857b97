//! Logging with `tracing`: JSON lines or human-readable text on stderr (journald keeps it).
//!
//! Invariant (ARCHITECTURE.md): nothing that identifies a patient is ever logged. Request
//! logs carry route templates, never raw paths or queries; later modules log opaque ids.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` is not a filter directive (configtest catches this first).
    #[error("log.level: {0}")]
    Filter(String),
    /// A subscriber was already installed in this process.
    #[error("logging already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Installs the global subscriber.
pub fn init(log: &LogConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::builder()
        .parse(&log.level)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
    };
    installed.map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))
}
