//! Logging with `tracing`: JSON lines or human-readable text on stderr (journald keeps it).
//!
//! When stderr is journald's stream (systemd says so in `JOURNAL_STREAM`), each line starts
//! with its syslog priority, `<N>`, which journald takes off and keeps as the entry's
//! priority: `journalctl -p warning` then shows warnings, errors and alerts. The line
//! itself is unchanged, so the JSON's structured fields stay parseable. Priorities: an
//! event with an `alert` field (a real-time security alert) is 1 (alert); error 3; warning
//! 4; info with a `notice` field (listening, shutdown requested, stopped) 5 (notice); info
//! 6; debug and trace 7.
//!
//! Invariant (ARCHITECTURE.md): nothing that identifies a patient is ever logged. Request
//! logs carry route templates, never raw paths or queries; later modules log opaque ids.

use std::io::Write;

use serde::{Deserialize, Serialize};
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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

/// The syslog priority of an event (RFC 5424 severities, as journald reads them).
pub(crate) fn priority(meta: &Metadata<'_>) -> u8 {
    let has = |name: &str| meta.fields().field(name).is_some();
    match *meta.level() {
        _ if has("alert") => 1,
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO if has("notice") => 5,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Writes each event to `inner`, preceded by `<N>` (its priority) when `prefix` is set.
#[derive(Clone, Copy)]
struct Prioritised<M> {
    inner: M,
    prefix: bool,
}

/// One event's writer: the prefix goes out with the event's first bytes, in one write, so
/// that lines from several threads never interleave with a prefix between them.
struct PrefixOnce<W> {
    inner: W,
    prefix: Option<u8>,
}

impl<W: Write> Write for PrefixOnce<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.prefix.take() {
            Some(n) => {
                let mut line = format!("<{n}>").into_bytes();
                line.extend_from_slice(buf);
                self.inner.write_all(&line)?;
                Ok(buf.len())
            }
            None => self.inner.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Prioritised<M> {
    type Writer = PrefixOnce<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        PrefixOnce {
            inner: self.inner.make_writer(),
            prefix: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        PrefixOnce {
            inner: self.inner.make_writer_for(meta),
            prefix: self.prefix.then(|| priority(meta)),
        }
    }
}

/// Whether stderr is journald's stream: `JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd)
/// names the very file stderr is. A child that inherited the variable but not the stream
/// (stderr redirected) does not match.
pub(crate) fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM").is_ok_and(|named| names_stderr(&named))
}

/// Whether `named` (`DEVICE:INODE`) is this process's stderr.
fn names_stderr(named: &str) -> bool {
    let Some((dev, ino)) = named.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Replaces the standard panic message, which quotes the panic's payload (a slicing
/// panic quotes the string it sliced, a failed `expect` its error, which may hold a
/// document's text or a name), with the thread and the source location only. The request
/// middleware still turns a handler's panic into a 500; this is what reaches the journal.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let at = info.location().map_or_else(
            || "an unknown location".to_owned(),
            |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
        );
        // Function names only, no data: shown when RUST_BACKTRACE asks, as usual.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        if tracing::dispatcher::has_been_set() {
            // In the log's own format (JSON by default), at error priority.
            tracing::error!(
                thread,
                location = at,
                backtrace,
                "panic (its message is not shown: it may quote patient data)"
            );
        } else {
            let prefix = if stderr_is_journal() { "<3>" } else { "" };
            eprintln!(
                "{prefix}panic in thread '{thread}' at {at} (its message is not shown: it may quote patient data){}",
                backtrace.map(|b| format!("\n{b}")).unwrap_or_default()
            );
        }
    }));
}

/// Installs the global subscriber.
pub(crate) fn init(log: &LogConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::builder()
        .parse(&log.level)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Prioritised {
            inner: std::io::stderr,
            prefix: stderr_is_journal(),
        });
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

/// How often a failure that repeats on every round of a periodic task is logged again:
/// the first failure at once, then at most once per `every` while it lasts, and its end
/// once. A task that runs every second against a store that has failed would otherwise
/// write a line per second until something restarts the service.
#[derive(Debug)]
pub(crate) struct Repeating {
    every: std::time::Duration,
    /// Since when the failure lasts, and when it was last logged.
    failing: Option<(std::time::Instant, std::time::Instant)>,
    /// Rounds that failed since the last line.
    unlogged: u64,
}

/// What to log of a round's failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Log it: the first failure, or the first since `every`; the rounds that failed
    /// since the last line without one.
    Log { unlogged: u64 },
    /// Already said recently.
    Quiet,
}

impl Repeating {
    pub(crate) fn every(every: std::time::Duration) -> Self {
        Self {
            every,
            failing: None,
            unlogged: 0,
        }
    }

    /// A round failed at `now`.
    pub(crate) fn failed(&mut self, now: std::time::Instant) -> Repeat {
        match &mut self.failing {
            Some((_, logged)) if now.saturating_duration_since(*logged) < self.every => {
                self.unlogged = self.unlogged.saturating_add(1);
                Repeat::Quiet
            }
            Some((_, logged)) => {
                *logged = now;
                Repeat::Log {
                    unlogged: std::mem::take(&mut self.unlogged),
                }
            }
            None => {
                self.failing = Some((now, now));
                Repeat::Log { unlogged: 0 }
            }
        }
    }

    /// A round succeeded at `now`: how long the failure lasted, if one did.
    pub(crate) fn succeeded(&mut self, now: std::time::Instant) -> Option<std::time::Duration> {
        self.unlogged = 0;
        self.failing
            .take()
            .map(|(since, _)| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_failure_is_logged_once_per_period_and_its_end_once() {
        let start = std::time::Instant::now();
        let at = |s: u64| start + std::time::Duration::from_secs(s);
        let mut repeating = Repeating::every(std::time::Duration::from_secs(60));
        assert_eq!(repeating.succeeded(at(0)), None, "nothing failed");
        assert_eq!(repeating.failed(at(1)), Repeat::Log { unlogged: 0 });
        for s in 2..61 {
            assert_eq!(repeating.failed(at(s)), Repeat::Quiet, "second {s}");
        }
        assert_eq!(repeating.failed(at(61)), Repeat::Log { unlogged: 59 });
        assert_eq!(repeating.failed(at(62)), Repeat::Quiet);
        assert_eq!(
            repeating.succeeded(at(70)),
            Some(std::time::Duration::from_secs(69))
        );
        assert_eq!(repeating.succeeded(at(71)), None, "its end is said once");
        assert_eq!(
            repeating.failed(at(72)),
            Repeat::Log { unlogged: 0 },
            "a new failure is said at once"
        );
    }
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(prefix: bool) -> Vec<String> {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(Prioritised {
                inner: move || sink.clone(),
                prefix,
            })
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(alert = "pin_failures", "security alert");
            tracing::error!("error");
            tracing::warn!("warning");
            tracing::info!(notice = true, "notice");
            tracing::info!("info");
            tracing::debug!("debug");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn each_event_carries_its_syslog_priority_and_stays_json() {
        let lines = lines(true);
        let expected = [
            (1, "security alert"),
            (3, "error"),
            (4, "warning"),
            (5, "notice"),
            (6, "info"),
            (7, "debug"),
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:?}");
        for (line, (n, message)) in lines.iter().zip(expected) {
            let json = line
                .strip_prefix(&format!("<{n}>"))
                .unwrap_or_else(|| panic!("<{n}> expected: {line}"));
            let event: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(event["message"], message, "{line}");
        }
    }

    #[test]
    fn outside_journald_lines_are_left_alone() {
        for line in lines(false) {
            assert!(line.starts_with('{'), "{line}");
        }
    }

    #[test]
    fn only_a_journal_stream_naming_stderr_itself_is_believed() {
        let st = rustix::fs::fstat(std::io::stderr()).unwrap();
        assert!(names_stderr(&format!("{}:{}", st.st_dev, st.st_ino)));
        let other = format!("{}:{}", st.st_dev, st.st_ino.wrapping_add(1));
        for named in [other.as_str(), "garbage", "1:", ":2", ""] {
            assert!(!names_stderr(named), "{named}");
        }
    }
}
