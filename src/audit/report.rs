//! The anomaly report: patterns in the trail a compliance officer should look at, each
//! flag with the records that support it. Computed from the records alone (and the roster
//! for shifts), so it runs on a live gateway's trail or an old copy alike.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::event::{DataSource, EventKind, Outcome, Record};
use super::store::{self, ReadStore};

/// What counts as an anomaly (`[compliance]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// More distinct patients than this per professional in one clock hour is flagged.
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
    shifts: Option<&dyn Shifts>,
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
                scan.visit(&record, at, since_ms, pattern.as_ref(), shifts);
            }
        }
    }
    Ok(scan.flags(thresholds))
}

#[derive(Default)]
struct Scan {
    flags: Vec<Flag>,
    /// (professional, hour) → patients and records.
    patients: BTreeMap<(String, u64), (BTreeSet<String>, Vec<u64>)>,
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
    fn visit(
        &mut self,
        record: &Record,
        at: u64,
        since: u64,
        pattern: Option<&regex::Regex>,
        shifts: Option<&dyn Shifts>,
    ) {
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
                    let slot = self
                        .patients
                        .entry((who.clone(), at / HOUR_MS))
                        .or_default();
                    slot.0.insert(patient.ins.clone());
                    slot.1.push(record.seq);
                    if shifts.is_some_and(|s| !s.on_duty(who, at)) {
                        self.flags.push(Flag {
                            kind: "outside_shift",
                            description: format!("break-glass by {who} outside their shift"),
                            records: vec![record.seq],
                        });
                    }
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
            EventKind::PatientSearch if success => {
                if let Some(who) = &who
                    && shifts.is_some_and(|s| !s.on_duty(who, at))
                {
                    self.flags.push(Flag {
                        kind: "outside_shift",
                        description: format!("patient search by {who} outside their shift"),
                        records: vec![record.seq],
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
        for ((who, _), (patients, records)) in &self.patients {
            if patients.len() > thresholds.max_patients_per_hour {
                self.flags.push(Flag {
                    kind: "many_patients",
                    description: format!(
                        "{who} opened {} patients within one hour (threshold {})",
                        patients.len(),
                        thresholds.max_patients_per_hour
                    ),
                    records: records.clone(),
                });
            }
        }
        for (desk, failures) in &self.pin_failures {
            let worst = failures
                .iter()
                .map(|(at, _)| {
                    failures
                        .iter()
                        .filter(|(t, _)| *t >= *at && *t < at + PIN_WINDOW_MS)
                        .count()
                })
                .max()
                .unwrap_or(0);
            if worst >= thresholds.pin_failures.max(1) {
                self.flags.push(Flag {
                    kind: "pin_failures",
                    description: format!("{worst} PIN failures within ten minutes at desk {desk}"),
                    records: failures.iter().map(|(_, seq)| *seq).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Actor, Event};

    struct NobodyOnDuty;
    impl Shifts for NobodyOnDuty {
        fn on_duty(&self, _: &str, _: u64) -> bool {
            false
        }
    }

    /// A patient search off duty is flagged as a break-glass start is; a refused one
    /// released nothing and is not.
    #[test]
    fn a_patient_search_outside_a_shift_is_flagged() {
        let search = |seq, outcome| {
            Record::for_tests(
                seq,
                Event {
                    actor: Some(Actor {
                        id_nat: Some("810002813839".into()),
                        ..Actor::default()
                    }),
                    ..Event::new(EventKind::PatientSearch, outcome)
                },
            )
        };
        let mut scan = Scan::default();
        let at = 1_000 * HOUR_MS;
        scan.visit(
            &search(1, Outcome::Success),
            at,
            0,
            None,
            Some(&NobodyOnDuty),
        );
        let refused = Outcome::Refused {
            reason: "rate_limited:search".into(),
        };
        scan.visit(&search(2, refused), at, 0, None, Some(&NobodyOnDuty));
        let flags = scan.flags(&Thresholds {
            max_patients_per_hour: 0,
            pin_failures: 3,
            call_id_pattern: None,
        });
        let found: Vec<(&str, &str, Vec<u64>)> = flags
            .iter()
            .map(|f| (f.kind, f.description.as_str(), f.records.clone()))
            .collect();
        assert_eq!(
            found,
            [(
                "outside_shift",
                "patient search by 810002813839 outside their shift",
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
