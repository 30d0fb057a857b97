//! The anomaly report: patterns in the trail a compliance officer should look at, each
//! flag with the records that support it. Computed from the records alone, so it runs on
//! a live gateway's trail or an old copy alike. Shifts are the exception that proves it:
//! the roster is replaced whole and keeps no history, so an access is judged against the
//! roster in force when it happened, by the real-time alert the trail holds
//! (`security_alert`, `outside_shift`), never against today's roster.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::event::{DataSource, EventKind, Outcome, Record};
use super::store::{self, ReadStore};

/// What counts as an anomaly (`[compliance]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// More distinct patients than this per professional within any hour (a sliding
    /// window, as the real-time alert counts) is flagged.
    pub max_patients_per_hour: usize,
    /// This many PIN failures on one desk within ten minutes is flagged.
    pub pin_failures: usize,
    /// Call ids of the regulation software match this regular expression (none: no check).
    pub call_id_pattern: Option<String>,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Flag {
    /// `outside_shift`, `many_patients`, `pin_failures`, `refused_by_patient`,
    /// `stale_cache_read`, `stale_crl_session`, `call_id_mismatch`, `unusual_volume`.
    pub kind: &'static str,
    /// What was seen, in English, naming the professional or desk (never a patient).
    pub description: String,
    /// Sequence numbers of the supporting records.
    pub records: Vec<u64>,
}

/// Who is on duty when (the roster), for the shift check.
pub trait Shifts {
    /// Whether `id_nat` was on duty at `at_ms`.
    fn on_duty(&self, id_nat: &str, at_ms: u64) -> bool;
}

const HOUR_MS: u64 = 3_600_000;

/// `24h` (hours back from now) or an RFC 3339 time, as Unix milliseconds.
pub fn parse_since(text: &str) -> Option<u64> {
    match text.strip_suffix('h').and_then(|h| h.parse::<u64>().ok()) {
        // More hours than milliseconds since the epoch can hold is no time at all.
        Some(hours) => Some(
            crate::clock::now()
                .1
                .saturating_sub(hours.checked_mul(HOUR_MS)?),
        ),
        None => crate::clock::parse_time(text),
    }
}
const PIN_WINDOW_MS: u64 = 600_000;
/// The trailing period the hourly volume is compared with.
const TRAILING_MS: u64 = 7 * 24 * HOUR_MS;

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `compliance.call_id_pattern` is not a regular expression.
    #[error("compliance.call_id_pattern: {0}")]
    CallIdPattern(regex::Error),
    /// The trail could not be read.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Flags for the records from `since_ms` on (the 7 days before feed the volume baseline).
pub fn report(
    store: &impl ReadStore,
    since_ms: u64,
    thresholds: &Thresholds,
) -> Result<Vec<Flag>, ReportError> {
    let pattern = thresholds
        .call_id_pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(ReportError::CallIdPattern)?;
    let txn = store.snapshot()?;
    let mut scan = Scan::default();
    // Only the window and the 7 days before it count: the time index names their records,
    // so a report on the last day reads eight days, not years of trail. In sequence order,
    // as the flags list their records.
    let mut seqs = store::time_range(&txn, since_ms.saturating_sub(TRAILING_MS), u64::MAX)?;
    seqs.sort_unstable();
    seqs.dedup();
    for seq in seqs {
        if let Some(bytes) = store::record(&txn, seq)? {
            let record = super::event::read_record(seq, &bytes)?;
            if let Some(at) = crate::clock::parse_time(&record.time) {
                scan.visit(&record, at, since_ms, pattern.as_ref());
            }
        }
    }
    Ok(scan.flags(thresholds))
}

#[derive(Default)]
struct Scan {
    flags: Vec<Flag>,
    /// professional → (time, patient, seq) of each break-glass start.
    patients: BTreeMap<String, Vec<(u64, String, u64)>>,
    /// desk → (time, seq) of PIN failures.
    pin_failures: BTreeMap<String, Vec<(u64, u64)>>,
    refused: Vec<u64>,
    stale_reads: Vec<u64>,
    stale_crl: Vec<u64>,
    /// hour → break-glass starts (window), and the baseline's count.
    window_hours: BTreeMap<u64, Vec<u64>>,
    baseline_starts: u64,
}

impl Scan {
    fn visit(&mut self, record: &Record, at: u64, since: u64, pattern: Option<&regex::Regex>) {
        let event = &record.event;
        let success = event.outcome == Outcome::Success;
        let started = event.kind == EventKind::BreakGlassStarted && success;
        if started && at < since && at >= since.saturating_sub(TRAILING_MS) {
            self.baseline_starts += 1;
        }
        if at < since {
            return;
        }
        let who = event.actor.as_ref().and_then(|a| a.id_nat.clone());
        let reason = event.outcome.reason().unwrap_or("");
        match event.kind {
            EventKind::BreakGlassStarted if success => {
                self.window_hours
                    .entry(at / HOUR_MS)
                    .or_default()
                    .push(record.seq);
                if let (Some(who), Some(patient)) = (&who, &event.patient) {
                    self.patients.entry(who.clone()).or_default().push((
                        at,
                        patient.ins.clone(),
                        record.seq,
                    ));
                }
                if let (Some(pattern), Some(call)) = (pattern, &event.call)
                    && !pattern.is_match(&call.call_id)
                {
                    self.flags.push(Flag {
                        kind: "call_id_mismatch",
                        description:
                            "break-glass with a call id the regulation software does not issue"
                                .into(),
                        records: vec![record.seq],
                    });
                }
            }
            EventKind::UserLogin if reason == "wrong_pin" || reason == "pin_blocked" => {
                let desk = event
                    .actor
                    .as_ref()
                    .and_then(|a| a.desk.clone())
                    .unwrap_or_default();
                self.pin_failures
                    .entry(desk)
                    .or_default()
                    .push((at, record.seq));
            }
            // Judged when it happened, against the roster then in force.
            EventKind::SecurityAlert => {
                if let Some(alert) = event
                    .alert
                    .as_ref()
                    .filter(|a| a.kind == super::event::AlertKind::OutsideShift)
                {
                    self.flags.push(Flag {
                        kind: "outside_shift",
                        description: event.detail.clone().unwrap_or_else(|| {
                            format!(
                                "access by {} outside their shift",
                                who.as_deref().unwrap_or("?")
                            )
                        }),
                        records: alert.records.clone(),
                    });
                }
            }
            EventKind::UserLogin if success && event.detail.as_deref() == Some("crl_stale") => {
                self.stale_crl.push(record.seq);
            }
            EventKind::PatientRecordRead
                if reason.starts_with("patient_opposed") || reason == "professional_blocked" =>
            {
                self.refused.push(record.seq);
            }
            EventKind::PatientRecordRead
                if success && event.source == Some(DataSource::StaleCache) =>
            {
                self.stale_reads.push(record.seq);
            }
            _ => {}
        }
    }

    fn flags(mut self, thresholds: &Thresholds) -> Vec<Flag> {
        for (who, opened) in &mut self.patients {
            let most = thresholds.max_patients_per_hour;
            for (patients, records) in bursts(opened, HOUR_MS, |n| n > most) {
                self.flags.push(Flag {
                    kind: "many_patients",
                    description: format!(
                        "{who} opened {patients} patients within one hour (threshold {most})"
                    ),
                    records,
                });
            }
        }
        for (desk, failures) in &self.pin_failures {
            // Each failure is its own key: the window counts them all.
            let mut keyed: Vec<(u64, u64, u64)> =
                failures.iter().map(|&(at, seq)| (at, seq, seq)).collect();
            let least = thresholds.pin_failures.max(1);
            for (worst, records) in bursts(&mut keyed, PIN_WINDOW_MS, |n| n >= least) {
                self.flags.push(Flag {
                    kind: "pin_failures",
                    description: format!("{worst} PIN failures within ten minutes at desk {desk}"),
                    records,
                });
            }
        }
        let grouped: [(&'static str, &str, Vec<u64>); 3] = [
            (
                "refused_by_patient",
                "accesses refused by a patient's opposition or block",
                self.refused,
            ),
            (
                "stale_cache_read",
                "summaries served from a stale copy",
                self.stale_reads,
            ),
            (
                "stale_crl_session",
                "sessions opened while the CRL was stale",
                self.stale_crl,
            ),
        ];
        for (kind, what, records) in grouped {
            if !records.is_empty() {
                self.flags.push(Flag {
                    kind,
                    description: format!("{} {what}", records.len()),
                    records,
                });
            }
        }
        let baseline_hours = (TRAILING_MS / HOUR_MS) as f64;
        let average = self.baseline_starts as f64 / baseline_hours;
        // Every hour in the window held at least one start; the quiet ones are not listed.
        for records in self.window_hours.values() {
            let count = records.len() as f64;
            if count >= 5.0 && count > 3.0 * average {
                self.flags.push(Flag {
                    kind: "unusual_volume",
                    description: format!(
                        "{} break-glass accesses in one hour against {:.2} per hour over the previous 7 days",
                        records.len(),
                        average
                    ),
                    records: records.clone(),
                });
            }
        }
        self.flags
    }
}

/// The bursts in `events` (time, key, seq): the runs of windows of `window` ms (sliding,
/// each ending at an event) whose distinct keys `exceed` the threshold, each with the most
/// distinct keys one of its windows held and the records of its windows, in order. A
/// burst across a clock hour's edge is one burst; linear in the events (two pointers).
fn bursts<K: Eq + std::hash::Hash + Clone>(
    events: &mut [(u64, K, u64)],
    window: u64,
    exceed: impl Fn(usize) -> bool,
) -> Vec<(usize, Vec<u64>)> {
    events.sort_by_key(|&(at, _, seq)| (at, seq));
    let mut found = Vec::new();
    let mut counts: HashMap<K, usize> = HashMap::new();
    let mut left = 0;
    // The burst under way: its most keys, its records, and the next event not yet in it.
    let mut current: Option<(usize, Vec<u64>, usize)> = None;
    for right in 0..events.len() {
        *counts.entry(events[right].1.clone()).or_default() += 1;
        while events[left].0.saturating_add(window) <= events[right].0 {
            if let Some(n) = counts.get_mut(&events[left].1) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&events[left].1);
                }
            }
            left += 1;
        }
        if exceed(counts.len()) {
            let (most, records, next) = current.get_or_insert((0, Vec::new(), left));
            *most = (*most).max(counts.len());
            let from = (*next).max(left);
            records.extend(events[from..=right].iter().map(|&(_, _, seq)| seq));
            *next = right + 1;
        } else if let Some((most, records, _)) = current.take() {
            found.push((most, records));
        }
    }
    if let Some((most, records, _)) = current.take() {
        found.push((most, records));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Actor, Event};

    /// A burst across a clock hour's edge is found, as the real-time alert finds it:
    /// ten patients from 10:50 to 10:59 and ten more to 11:10 are twenty within an hour.
    /// Before, each clock hour held ten and nothing was flagged.
    #[test]
    fn patients_are_counted_in_a_sliding_hour_across_the_clock_hour() {
        let minute = 60_000;
        let base = 1_000 * HOUR_MS;
        let mut opened: Vec<(u64, String, u64)> = (0..20u64)
            .map(|i| (base - 10 * minute + i * minute, format!("ins-{i}"), i + 1))
            .collect();
        let found = bursts(&mut opened, HOUR_MS, |n| n > 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 20);
        assert_eq!(found[0].1, (1..=20).collect::<Vec<u64>>());
        // The same patient again and again is one patient.
        let mut again: Vec<(u64, String, u64)> =
            (0..20u64).map(|i| (base + i, "ins".into(), i)).collect();
        assert!(bursts(&mut again, HOUR_MS, |n| n > 10).is_empty());
        // Two bursts hours apart are two flags, each with its own records only.
        let mut apart: Vec<(u64, u64, u64)> = (0..3u64)
            .map(|i| (base + i, i, i))
            .chain((0..3u64).map(|i| (base + 5 * HOUR_MS + i, 10 + i, 10 + i)))
            .chain(std::iter::once((base + 9 * HOUR_MS, 99, 99)))
            .collect();
        let found = bursts(&mut apart, PIN_WINDOW_MS, |n| n >= 3);
        assert_eq!(found, [(3, vec![0, 1, 2]), (3, vec![10, 11, 12])]);
    }

    /// Off-duty accesses are the ones the trail's real-time alerts judged so, against the
    /// roster in force then: the report does not judge them again against today's roster
    /// (replaced whole since, it would flag every earlier shift's accesses, or hide one).
    #[test]
    fn outside_shift_is_what_the_alerts_judged_when_it_happened() {
        let who = || {
            Some(Actor {
                id_nat: Some("810002813839".into()),
                ..Actor::default()
            })
        };
        let search = Record::for_tests(
            1,
            Event {
                actor: who(),
                ..Event::new(EventKind::PatientSearch, Outcome::Success)
            },
        );
        let alert = Record::for_tests(
            2,
            Event {
                actor: who(),
                alert: Some(crate::audit::event::Alert {
                    kind: crate::audit::event::AlertKind::OutsideShift,
                    records: vec![1],
                }),
                ..Event::new(EventKind::SecurityAlert, Outcome::Success)
                    .with_detail("patient search by 810002813839 outside their shift")
            },
        );
        let thresholds = Thresholds {
            max_patients_per_hour: 10,
            pin_failures: 3,
            call_id_pattern: None,
        };
        let at = 1_000 * HOUR_MS;
        let mut scan = Scan::default();
        scan.visit(&search, at, 0, None);
        assert!(
            scan.flags(&thresholds).is_empty(),
            "no alert: not judged off duty"
        );
        let mut scan = Scan::default();
        scan.visit(&search, at, 0, None);
        scan.visit(&alert, at, 0, None);
        let found: Vec<(&str, String, Vec<u64>)> = scan
            .flags(&thresholds)
            .into_iter()
            .map(|f| (f.kind, f.description, f.records))
            .collect();
        assert_eq!(
            found,
            [(
                "outside_shift",
                "patient search by 810002813839 outside their shift".to_owned(),
                vec![1]
            )]
        );
    }

    #[test]
    fn since_takes_hours_or_a_time_and_refuses_what_overflows() {
        let day = parse_since("24h").unwrap();
        let now = crate::clock::now().1;
        assert!(now - day >= 24 * HOUR_MS && now - day < 25 * HOUR_MS);
        assert_eq!(parse_since("1970-01-01T00:00:01Z"), Some(1000));
        // Past u64 once in milliseconds: refused, not a panic (release builds check
        // overflow).
        assert_eq!(parse_since("9999999999999h"), None);
        assert_eq!(parse_since("h"), None);
    }
}
