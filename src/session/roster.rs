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

use crate::clock::parse_time;

/// One shift.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Shift {
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
pub(crate) struct RosterDocument {
    /// Every shift known (past ones may be left in; they are ignored).
    pub shifts: Vec<Shift>,
}

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RosterError {
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

/// A roster that parsed, ready to be recorded and put in force.
pub(crate) struct Checked {
    shifts: Vec<Parsed>,
    text: String,
}

impl Checked {
    /// How many shifts it holds.
    pub(crate) fn len(&self) -> usize {
        self.shifts.len()
    }

    /// SHA-256 of the roster as it is saved, hex: the trail names which roster took
    /// effect (the file keeps only the last).
    pub(crate) fn sha256(&self) -> String {
        crate::encoding::hex(&crate::encoding::sha256(self.text.as_bytes()))
    }
}

/// The roster in force.
pub(crate) struct Roster {
    path: PathBuf,
    grace_ms: u64,
    shifts: RwLock<Vec<Parsed>>,
    /// One replacement at a time, from its record to its file and its shifts in force:
    /// two at once shared one temporary file (one's rename put the other's half-written
    /// file in place) and could leave in force another roster than the trail's last.
    replacing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The turn to replace the roster ([`Roster::turn`]).
pub(crate) type Turn = tokio::sync::OwnedMutexGuard<()>;

impl Roster {
    /// Loads `path` if it exists (an empty roster otherwise: nobody is on duty). A file that
    /// cannot be read (torn, edited by hand) never stops the service: the previous roster
    /// (`roster.json.prev`, kept at each replacement) is used instead, and the log says so;
    /// without either, nobody is on duty until the regulation software sends one.
    pub(crate) fn load(path: &Path, grace_minutes: u64) -> Result<Self, RosterError> {
        let roster = Self {
            path: path.to_owned(),
            grace_ms: grace_minutes * 60_000,
            shifts: RwLock::new(Vec::new()),
            replacing: std::sync::Arc::default(),
        };
        let previous = roster.previous();
        let loaded = match roster.read(path) {
            // Left by a crash of an earlier build between its two renames.
            Ok(parsed) if parsed.is_empty() && !path.exists() && previous.exists() => {
                tracing::warn!("no roster file but a previous one: using it");
                roster.read(&previous).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "no usable previous roster: nobody is on duty until the regulation software sends one");
                    Vec::new()
                })
            }
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::error!(error = %e, "roster unreadable: falling back to the previous one");
                roster.read(&previous).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "no usable previous roster: nobody is on duty until the regulation software sends one");
                    Vec::new()
                })
            }
        };
        if let Ok(mut shifts) = roster.shifts.write() {
            *shifts = loaded;
        }
        Ok(roster)
    }

    /// The shifts in `path`; none when the file does not exist.
    fn read(&self, path: &Path) -> Result<Vec<Parsed>, RosterError> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(path).map_err(|e| self.file_error(e))?;
        let document: RosterDocument =
            serde_json::from_str(&text).map_err(|e| self.file_error(e))?;
        parse(&document)
    }

    fn previous(&self) -> PathBuf {
        self.path.with_extension("json.prev")
    }

    fn file_error(&self, e: impl std::fmt::Display) -> RosterError {
        RosterError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Checks a roster without changing anything: what [`Roster::replace`] takes.
    pub(crate) fn check(&self, document: &RosterDocument) -> Result<Checked, RosterError> {
        Ok(Checked {
            shifts: parse(document)?,
            text: serde_json::to_string_pretty(document).map_err(|e| self.file_error(e))?,
        })
    }

    /// The turn to replace the roster: held from the replacement's record to its end, so
    /// that replacements are recorded in the order they take effect.
    pub(crate) async fn turn(&self) -> Turn {
        self.replacing.clone().lock_owned().await
    }

    /// Saves a checked roster durably (temporary file, fsync, the current one kept as
    /// `roster.json.prev`, rename, fsync of the directory), then puts it in force; the
    /// caller holds [`Self::turn`] and records the replacement first.
    pub(crate) fn replace(&self, _turn: &Turn, checked: Checked) -> Result<usize, RosterError> {
        use std::io::Write as _;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(checked.text.as_bytes())?;
            file.sync_all()?;
            // The current one is kept as the previous by a second name, and the new one
            // renamed over it: at every instant `roster.json` is one whole roster (a
            // crash between two renames left none, and nobody on duty).
            if self.path.exists() {
                match std::fs::remove_file(self.previous()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                std::fs::hard_link(&self.path, self.previous())?;
            }
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.file_error(e))?;
        let count = checked.shifts.len();
        if let Ok(mut shifts) = self.shifts.write() {
            *shifts = checked.shifts;
        }
        Ok(count)
    }

    /// Whether `id_nat` is on duty at `now_ms` (Unix ms), grace included.
    pub(crate) fn on_duty(&self, id_nat: &str, now_ms: u64) -> bool {
        let Ok(shifts) = self.shifts.read() else {
            return false;
        };
        covers(&shifts, id_nat, now_ms, self.grace_ms)
    }

    /// Whether `id_nat` would be on duty at `now_ms` under `checked`, once in force.
    pub(crate) fn on_duty_under(&self, checked: &Checked, id_nat: &str, now_ms: u64) -> bool {
        covers(&checked.shifts, id_nat, now_ms, self.grace_ms)
    }
}

fn covers(shifts: &[Parsed], id_nat: &str, now_ms: u64, grace_ms: u64) -> bool {
    shifts.iter().any(|s| {
        s.id_nat == id_nat
            && s.start_ms.saturating_sub(grace_ms) <= now_ms
            && now_ms <= s.end_ms.saturating_add(grace_ms)
    })
}

fn parse(document: &RosterDocument) -> Result<Vec<Parsed>, RosterError> {
    document
        .shifts
        .iter()
        .enumerate()
        .map(|(index, shift)| {
            let invalid = |reason: String| RosterError::Invalid { index, reason };
            // The values are not echoed: a refusal never quotes what was sent.
            let start_ms = parse_time(&shift.start)
                .ok_or_else(|| invalid("start is not an RFC 3339 time".into()))?;
            let end_ms = parse_time(&shift.end)
                .ok_or_else(|| invalid("end is not an RFC 3339 time".into()))?;
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

/// The audit report's shift check reads the roster through this (the trail knows nothing of
/// sessions).
impl crate::audit::report::Shifts for Roster {
    fn on_duty(&self, id_nat: &str, at_ms: u64) -> bool {
        Roster::on_duty(self, id_nat, at_ms)
    }
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
        let turn = roster.replacing.clone().try_lock_owned().unwrap();
        assert_eq!(
            roster
                .replace(&turn, roster.check(&document).unwrap())
                .unwrap(),
            1
        );
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

    /// Replacements from many threads at once, each under its turn: every one saves, and
    /// the file on disk and the shifts in force are the same roster at the end. (Without
    /// the turn, two shared one temporary file: a rename failed, or put the other's
    /// half-written file in place.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_replacements_each_save_and_leave_one_roster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.json");
        let roster = std::sync::Arc::new(Roster::load(&path, 0).unwrap());
        let tasks: Vec<_> = (0..8u64)
            .map(|n| {
                let roster = roster.clone();
                tokio::spawn(async move {
                    for round in 0..10u64 {
                        let hour = (n * 10 + round) % 24;
                        let document = RosterDocument {
                            shifts: vec![shift(
                                &format!("2026-11-23T{hour:02}:00:00Z"),
                                &format!("2026-11-23T{hour:02}:30:00Z"),
                            )],
                        };
                        let checked = roster.check(&document).unwrap();
                        let turn = roster.turn().await;
                        let saving = roster.clone();
                        tokio::task::spawn_blocking(move || saving.replace(&turn, checked))
                            .await
                            .unwrap()
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let reloaded = Roster::load(&path, 0).unwrap();
        let in_force = |r: &Roster| {
            r.shifts
                .read()
                .unwrap()
                .iter()
                .map(|s| s.start_ms)
                .collect::<Vec<_>>()
        };
        assert_eq!(in_force(&reloaded), in_force(&roster));
        assert!(!dir.path().join("roster.json.tmp").exists());
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
        let err = roster.check(&bad).err().unwrap().to_string();
        assert_eq!(err, "shift 1: start is not an RFC 3339 time");
        assert!(!dir.path().join("roster.json").exists(), "nothing saved");
        let backwards = RosterDocument {
            shifts: vec![shift("2026-11-23T20:00:00Z", "2026-11-23T08:00:00Z")],
        };
        assert!(roster.check(&backwards).is_err());
    }

    #[test]
    fn a_torn_roster_file_falls_back_to_the_previous_one_and_never_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.json");
        let roster = Roster::load(&path, 0).unwrap();
        let first = RosterDocument {
            shifts: vec![shift("2026-11-23T08:00:00Z", "2026-11-23T20:00:00Z")],
        };
        let second = RosterDocument {
            shifts: vec![shift("2026-11-24T08:00:00Z", "2026-11-24T20:00:00Z")],
        };
        let turn = roster.replacing.clone().try_lock_owned().unwrap();
        roster
            .replace(&turn, roster.check(&first).unwrap())
            .unwrap();
        roster
            .replace(&turn, roster.check(&second).unwrap())
            .unwrap();
        assert!(!dir.path().join("roster.json.tmp").exists());
        let on = |r: &Roster, t: &str| r.on_duty("810002813839", parse_time(t).unwrap());
        // The current file torn: the previous roster is in force, not an error.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let reloaded = Roster::load(&path, 0).unwrap();
        assert!(on(&reloaded, "2026-11-23T12:00:00Z"));
        assert!(!on(&reloaded, "2026-11-24T12:00:00Z"));
        // Only the previous one (an earlier build crashed between its two renames): it
        // is in force.
        std::fs::remove_file(&path).unwrap();
        let previous_only = Roster::load(&path, 0).unwrap();
        assert!(on(&previous_only, "2026-11-23T12:00:00Z"));
        // A replacement keeps a whole roster.json at every step: after it, the new one is
        // in force and the one before is the previous.
        let turn = previous_only.replacing.clone().try_lock_owned().unwrap();
        previous_only
            .replace(&turn, previous_only.check(&second).unwrap())
            .unwrap();
        previous_only
            .replace(&turn, previous_only.check(&first).unwrap())
            .unwrap();
        let reloaded = Roster::load(&path, 0).unwrap();
        assert!(on(&reloaded, "2026-11-23T12:00:00Z"));
        std::fs::remove_file(&path).unwrap();
        let previous = Roster::load(&path, 0).unwrap();
        assert!(on(&previous, "2026-11-24T12:00:00Z"));
        // Both torn: nobody on duty, and still no error.
        std::fs::write(dir.path().join("roster.json.prev"), b"{").unwrap();
        let empty = Roster::load(&path, 0).unwrap();
        assert!(!on(&empty, "2026-11-23T12:00:00Z"));
    }
}
