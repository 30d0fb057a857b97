//! Logging with `tracing`: JSON lines or human-readable text on stderr (journald keeps it).
//!
//! Invariant (ARCHITECTURE.md): nothing that identifies a patient is ever logged. Request
//! logs carry route templates, never raw paths or queries; later modules log opaque ids.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for journald / log shippers).
    #[default]
    Json,
    /// Human-readable lines (for a terminal).
    Human,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `human`.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `info,samu_gateway::http=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TelemetryError {
    /// `log.level` is not a filter directive (configtest catches this first).
    #[error("log.level: {0}")]
    Filter(String),
    /// A subscriber was already installed in this process.
    #[error("logging already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Installs the global subscriber.
pub(crate) fn init(log: &LogConfig) -> Result<(), TelemetryError> {
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
