//! The on-duty roster: which professional is on duty when. Only a professional on duty
//! (within a grace period either side of the shift) may open a session, and a session ends
//! when its shift (plus grace) does.
//!
//! The regulation software's integration certificate replaces the roster through
//! `PUT /api/v1/roster`; it is kept in the state directory (`roster.json`), so it survives
//! restarts (`/etc` is read-only for the service).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::audit::chain::parse_time;

/// One shift.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    /// The professional's idNat.
    pub id_nat: String,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
}

/// The whole roster, as `PUT /api/v1/roster` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RosterDocument {
    /// Every shift known (past ones may be left in; they are ignored).
    pub shifts: Vec<Shift>,
}

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// A shift is malformed.
    #[error("shift {index}: {reason}")]
    Invalid {
        /// Its position.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The roster file could not be read or written.
    #[error("roster file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

struct Parsed {
    id_nat: String,
    start_ms: u64,
    end_ms: u64,
}

/// The roster in force.
pub struct Roster {
    path: PathBuf,
    grace_ms: u64,
    shifts: RwLock<Vec<Parsed>>,
}

impl Roster {
    /// Loads `path` if it exists (an empty roster otherwise: nobody is on duty).
    pub fn load(path: &Path, grace_minutes: u64) -> Result<Self, RosterError> {
        let roster = Self {
            path: path.to_owned(),
            grace_ms: grace_minutes * 60_000,
            shifts: RwLock::new(Vec::new()),
        };
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| roster.file_error(e))?;
            let document: RosterDocument =
                serde_json::from_str(&text).map_err(|e| roster.file_error(e))?;
            let parsed = parse(&document)?;
            if let Ok(mut shifts) = roster.shifts.write() {
                *shifts = parsed;
            }
        }
        Ok(roster)
    }

    fn file_error(&self, e: impl std::fmt::Display) -> RosterError {
        RosterError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Replaces the roster and saves it (atomically) before it takes effect.
    pub fn replace(&self, document: &RosterDocument) -> Result<usize, RosterError> {
        let parsed = parse(document)?;
        let text = serde_json::to_string_pretty(document).map_err(|e| self.file_error(e))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| self.file_error(e))?;
        let count = parsed.len();
        if let Ok(mut shifts) = self.shifts.write() {
            *shifts = parsed;
        }
        Ok(count)
    }

    /// Whether `id_nat` is on duty at `now_ms` (Unix ms), grace included.
    pub fn on_duty(&self, id_nat: &str, now_ms: u64) -> bool {
        let Ok(shifts) = self.shifts.read() else {
            return false;
        };
        shifts.iter().any(|s| {
            s.id_nat == id_nat
                && s.start_ms.saturating_sub(self.grace_ms) <= now_ms
                && now_ms <= s.end_ms.saturating_add(self.grace_ms)
        })
    }
}

fn parse(document: &RosterDocument) -> Result<Vec<Parsed>, RosterError> {
    document
        .shifts
        .iter()
        .enumerate()
        .map(|(index, shift)| {
            let invalid = |reason: String| RosterError::Invalid { index, reason };
            let start_ms = parse_time(&shift.start).ok_or_else(|| {
                invalid(format!("start '{}' is not an RFC 3339 time", shift.start))
            })?;
            let end_ms = parse_time(&shift.end)
                .ok_or_else(|| invalid(format!("end '{}' is not an RFC 3339 time", shift.end)))?;
            if end_ms <= start_ms {
                return Err(invalid("ends before it starts".into()));
            }
            if shift.id_nat.is_empty() || !shift.id_nat.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("id_nat must be digits".into()));
            }
            Ok(Parsed {
                id_nat: shift.id_nat.clone(),
                start_ms,
                end_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(start: &str, end: &str) -> Shift {
        Shift {
            id_nat: "810002813839".into(),
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn on_duty_within_the_shift_and_its_grace_only() {
        let dir = tempfile::tempdir().unwrap();
        let roster = Roster::load(&dir.path().join("roster.json"), 15).unwrap();
        assert!(
            !roster.on_duty("810002813839", parse_time("2026-11-23T10:00:00Z").unwrap()),
            "empty roster"
        );
        let document = RosterDocument {
            shifts: vec![shift("2026-11-23T08:00:00Z", "2026-11-23T20:00:00Z")],
        };
        assert_eq!(roster.replace(&document).unwrap(), 1);
        let at = |t: &str| roster.on_duty("810002813839", parse_time(t).unwrap());
        assert!(
            at("2026-11-23T07:50:00Z") && at("2026-11-23T12:00:00Z") && at("2026-11-23T20:10:00Z")
        );
        assert!(!at("2026-11-23T07:40:00Z") && !at("2026-11-23T20:20:00Z"));
        assert!(!roster.on_duty("810000000000", parse_time("2026-11-23T12:00:00Z").unwrap()));
        // Saved: a restart finds it.
        let reloaded = Roster::load(&dir.path().join("roster.json"), 15).unwrap();
        assert!(reloaded.on_duty("810002813839", parse_time("2026-11-23T12:00:00Z").unwrap()));
    }

    #[test]
    fn malformed_shifts_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let roster = Roster::load(&dir.path().join("roster.json"), 15).unwrap();
        let bad = RosterDocument {
            shifts: vec![
                shift("2026-11-23T08:00:00Z", "2026-11-23T20:00:00Z"),
                shift("tomorrow", "later"),
            ],
        };
        let err = roster.replace(&bad).unwrap_err().to_string();
        assert!(err.starts_with("shift 1: start 'tomorrow'"), "{err}");
        assert!(!dir.path().join("roster.json").exists(), "nothing saved");
        let backwards = RosterDocument {
            shifts: vec![shift("2026-11-23T20:00:00Z", "2026-11-23T08:00:00Z")],
        };
        assert!(roster.replace(&backwards).is_err());
    }
}
