//! Real-time alerts: the first anomalies of the report, seen as they happen.
//!
//! A task follows the trail as records are committed and raises a `security_alert`
//! record when a break-glass access starts or a patient search releases identities outside
//! its professional's shift, when a professional opens more distinct patients within the
//! last hour than `compliance.max_patients_per_hour`, and when a desk reaches
//! `compliance.pin_failures` PIN failures within ten minutes. An alert is an ordinary audit record (chained, signed,
//! durable), so it cannot be lost either, and the shippers send it with syslog severity 1
//! (alert) so that the repository's side can page someone. It names the professional or
//! the desk and the records behind it, never a patient.
//!
//! The windows slide: each alert fires when its threshold is crossed, not again for every
//! record past it. At start the task replays the last hour of the trail so that windows
//! continue across a restart and an alert the previous run did not get to record (a crash
//! right after the records that cross a threshold) is raised then.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use super::event::{Actor, Alert, AlertKind, Event, EventKind, Outcome, Record};
use super::report::{Shifts, Thresholds};
use super::store::{self, AuditStore, ReadStore};
use super::{AuditError, AuditLog};

const HOUR_MS: u64 = 3_600_000;
const PIN_WINDOW_MS: u64 = 600_000;
/// How long the follower waits for a commit notice before looking anyway.
const IDLE: Duration = Duration::from_millis(500);

/// Who is on duty, shared with the roster the login checks (replaced at run time).
pub type SharedShifts = Arc<dyn Shifts + Send + Sync>;

/// One professional's break-glass starts within the last hour, and how many of them each
/// patient has: the distinct count is kept as records come and go, so that each record
/// costs the same however many the window holds (counting the window anew for every
/// record was quadratic under load).
#[derive(Default)]
struct PatientWindow {
    /// (time, INS, seq), oldest first.
    accesses: VecDeque<(u64, String, u64)>,
    /// INS → accesses in the window.
    per_patient: HashMap<String, usize>,
}

/// The sliding windows behind the alerts.
pub struct Watch {
    max_patients_per_hour: usize,
    pin_failures: usize,
    shifts: Option<SharedShifts>,
    /// idNat → break-glass starts within the last hour.
    patients: HashMap<String, PatientWindow>,
    /// desk → (time, seq) of PIN failures within ten minutes.
    pins: HashMap<String, VecDeque<(u64, u64)>>,
}

impl Watch {
    /// Windows for `thresholds`, with the roster when there is one.
    pub fn new(thresholds: &Thresholds, shifts: Option<SharedShifts>) -> Self {
        Self {
            max_patients_per_hour: thresholds.max_patients_per_hour,
            pin_failures: thresholds.pin_failures.max(1),
            shifts,
            patients: HashMap::new(),
            pins: HashMap::new(),
        }
    }

    /// The alerts `record` (at `at_ms`) raises.
    pub fn observe(&mut self, record: &Record, at_ms: u64) -> Vec<Event> {
        let event = &record.event;
        let success = event.outcome == Outcome::Success;
        let reason = event.outcome.reason().unwrap_or("");
        let mut alerts = Vec::new();
        match event.kind {
            EventKind::BreakGlassStarted if success => {
                alerts.extend(self.outside_shift(record, at_ms));
                alerts.extend(self.many_patients(record, at_ms));
            }
            // A search releases identities (names, birth dates, INS): off duty, it is as
            // much to explain as an access.
            EventKind::PatientSearch if success => {
                alerts.extend(self.outside_shift(record, at_ms));
            }
            EventKind::UserLogin if reason == "wrong_pin" || reason == "pin_blocked" => {
                alerts.extend(self.pin_failure(record, at_ms));
            }
            _ => {}
        }
        alerts
    }

    fn outside_shift(&self, record: &Record, at_ms: u64) -> Option<Event> {
        let who = record.event.actor.as_ref()?.id_nat.as_deref()?;
        let shifts = self.shifts.as_ref()?;
        (!shifts.on_duty(who, at_ms)).then(|| {
            alert(
                record,
                AlertKind::OutsideShift,
                vec![record.seq],
                format!("{} by {who} outside their shift", what(record)),
            )
        })
    }

    fn many_patients(&mut self, record: &Record, at_ms: u64) -> Option<Event> {
        let who = record.event.actor.as_ref()?.id_nat.clone()?;
        let ins = record.event.patient.as_ref()?.ins.clone();
        let window = self.patients.entry(who.clone()).or_default();
        while window
            .accesses
            .front()
            .is_some_and(|(t, _, _)| t.saturating_add(HOUR_MS) <= at_ms)
        {
            if let Some((_, gone, _)) = window.accesses.pop_front()
                && let Some(count) = window.per_patient.get_mut(&gone)
            {
                *count -= 1;
                if *count == 0 {
                    window.per_patient.remove(&gone);
                }
            }
        }
        let crossed = !window.per_patient.contains_key(&ins)
            && window.per_patient.len() == self.max_patients_per_hour;
        *window.per_patient.entry(ins.clone()).or_default() += 1;
        window.accesses.push_back((at_ms, ins, record.seq));
        crossed.then(|| {
            alert(
                record,
                AlertKind::ManyPatients,
                window.accesses.iter().map(|(_, _, seq)| *seq).collect(),
                format!(
                    "{who} opened more than {} patients within one hour",
                    self.max_patients_per_hour
                ),
            )
        })
    }

    fn pin_failure(&mut self, record: &Record, at_ms: u64) -> Option<Event> {
        let desk = record.event.actor.as_ref()?.desk.clone()?;
        let window = self.pins.entry(desk.clone()).or_default();
        while window
            .front()
            .is_some_and(|(t, _)| t.saturating_add(PIN_WINDOW_MS) <= at_ms)
        {
            window.pop_front();
        }
        window.push_back((at_ms, record.seq));
        (window.len() == self.pin_failures).then(|| {
            alert(
                record,
                AlertKind::PinFailures,
                window.iter().map(|(_, seq)| *seq).collect(),
                format!(
                    "{} PIN failures within ten minutes at desk {desk}",
                    window.len()
                ),
            )
        })
    }
}

/// What `record` did, in an alert's or a flag's words.
fn what(record: &Record) -> &'static str {
    match record.event.kind {
        EventKind::PatientSearch => "patient search",
        _ => "break-glass",
    }
}

/// A `security_alert` about `records`, acted by whoever `record` names (no patient).
fn alert(record: &Record, kind: AlertKind, records: Vec<u64>, description: String) -> Event {
    let actor = record.event.actor.as_ref().map(|a| Actor {
        id_nat: a.id_nat.clone(),
        name: a.name.clone(),
        desk: a.desk.clone(),
        ..Actor::default()
    });
    Event {
        actor,
        alert: Some(Alert { kind, records }),
        ..Event::new(EventKind::SecurityAlert, Outcome::Success).with_detail(description)
    }
}

/// What identifies an alert already on the trail: its kind and its last record.
fn key(alert: &Alert) -> Option<(AlertKind, u64)> {
    Some((alert.kind, *alert.records.last()?))
}

/// Follows the trail from now on (after replaying the last hour) until the process ends.
pub fn start(store: Arc<AuditStore>, log: Arc<AuditLog>, watch: Watch) {
    tokio::spawn(async move {
        if let Err(e) = follow(store, log, watch).await {
            tracing::error!(error = %e, "real-time audit alerts stopped");
        }
    });
}

async fn follow(
    store: Arc<AuditStore>,
    log: Arc<AuditLog>,
    mut watch: Watch,
) -> Result<(), AuditError> {
    let committed = log.commits();
    let (mut cursor, missed) = loop {
        match replay(&store, &mut watch) {
            Ok(replayed) => break replayed,
            // As below: the store's failure shows in readiness; alerts wait for it.
            Err(e) => {
                tracing::error!(error = %e, "cannot replay the trail for alerts; retrying");
                watch = Watch {
                    patients: HashMap::new(),
                    pins: HashMap::new(),
                    ..watch
                };
                tokio::time::sleep(IDLE).await;
            }
        }
    };
    let raised = missed.len();
    if !missed.is_empty() {
        tracing::warn!(
            alerts = raised,
            "raising alerts the previous run did not record"
        );
        log_alerts(&missed);
        let _receipts = log.append_all(missed).await?;
    }
    // Says alerts are live (centre IT's check after a start), and what the replay raised.
    tracing::info!(
        raised,
        "real-time alerts follow the trail (the last hour replayed)"
    );
    loop {
        let notified = committed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (alerts, last) = match read_after(&store, cursor, &mut watch) {
            Ok(read) => read,
            // A failing store also fails readiness; the follower retries, it does not stop.
            Err(e) => {
                tracing::error!(error = %e, "cannot follow the trail for alerts; retrying");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        cursor = last;
        if !alerts.is_empty() {
            log_alerts(&alerts);
            let _receipts = log.append_all(alerts).await?;
            continue;
        }
        let _ = tokio::time::timeout(IDLE, notified).await;
    }
}

/// Logs each alert with its `alert` field: journald gets it at priority 1 (telemetry).
fn log_alerts(alerts: &[Event]) {
    for event in alerts {
        tracing::warn!(
            alert = event.alert.as_ref().map_or("", |a| a.kind.as_str()),
            detail = event.detail.as_deref().unwrap_or(""),
            "security alert"
        );
    }
}

/// Feeds the last hour into `watch`; returns the head and the alerts it raises that are
/// not on the trail yet.
///
/// Whether a record crossed a threshold depends on the hour before it, so the hour before
/// the last one is fed first, raising nothing: each record of the last hour then meets the
/// window it met when it was written, and an alert raised then (on the trail) is known by
/// the same record, not raised again one record later.
fn replay(store: &AuditStore, watch: &mut Watch) -> Result<(u64, Vec<Event>), AuditError> {
    let txn = store.snapshot()?;
    let head = store::meta(&txn, store::Meta::HeadSeq)?.unwrap_or(0);
    let now = crate::clock::now().1;
    let since = now.saturating_sub(HOUR_MS);
    let recent = store::time_range(&txn, since.saturating_sub(HOUR_MS), u64::MAX)?;
    let mut raised: Vec<Event> = Vec::new();
    let mut recorded: HashSet<(AlertKind, u64)> = HashSet::new();
    for seq in recent.into_iter().filter(|s| *s <= head) {
        let Some(record) = store::record(&txn, seq)?
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        else {
            continue;
        };
        if let Some(alert) = &record.event.alert {
            recorded.extend(key(alert));
        }
        if let Some(at) = crate::clock::parse_time(&record.time) {
            let alerts = watch.observe(&record, at);
            if at >= since {
                raised.extend(alerts);
            }
        }
    }
    raised.retain(|e| {
        e.alert
            .as_ref()
            .and_then(key)
            .is_none_or(|k| !recorded.contains(&k))
    });
    Ok((head, raised))
}

/// The kinds [`Watch::observe`] acts on.
const WATCHED: [EventKind; 3] = [
    EventKind::BreakGlassStarted,
    EventKind::PatientSearch,
    EventKind::UserLogin,
];

/// Whether `bytes` may be a watched record; false only when they say they are not. Their
/// kind is read from their bytes ([`super::event::may_be_of`]): parsing even one field of
/// a record scans all of it, and most records are not watched.
fn may_be_watched(bytes: &[u8]) -> bool {
    super::event::may_be_of(bytes, &WATCHED)
}

/// The record in `bytes`, if it is one the windows watch. A nested object's `kind` could
/// name a watched one, so a candidate is parsed whole and its kind checked again. A record
/// that does not parse is passed over: the follower must go on (verification reports the
/// damage).
fn watched_record(bytes: &[u8]) -> Option<Record> {
    if !may_be_watched(bytes) {
        return None;
    }
    serde_json::from_slice::<Record>(bytes)
        .ok()
        .filter(|record| WATCHED.contains(&record.event.kind))
}

/// Feeds the records after `cursor` into `watch`: the alerts, and the new cursor.
fn read_after(
    store: &AuditStore,
    cursor: u64,
    watch: &mut Watch,
) -> Result<(Vec<Event>, u64), AuditError> {
    let txn = store.snapshot()?;
    let (mut alerts, mut last) = (Vec::new(), cursor);
    store::for_each_record(&txn, cursor + 1, |seq, bytes| {
        last = seq;
        if let Some(record) = watched_record(bytes)
            && let Some(at) = crate::clock::parse_time(&record.time)
        {
            alerts.extend(watch.observe(&record, at));
        }
        ControlFlow::Continue(())
    })?;
    Ok((alerts, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{AccessMode, PatientRef};

    const T0: u64 = 1_800_000_000_000;

    fn record(seq: u64, event: Event) -> Record {
        Record::for_tests(seq, event)
    }

    fn actor(id_nat: &str, desk: &str) -> Option<Actor> {
        Some(Actor {
            id_nat: Some(id_nat.into()),
            desk: Some(desk.into()),
            ..Actor::default()
        })
    }

    fn start(seq: u64, who: &str, patient: u64) -> Record {
        record(
            seq,
            Event {
                actor: actor(who, "desk-a"),
                patient: Some(PatientRef {
                    ins: format!("2690549588157{patient:02}"),
                    oid: "1.2.250.1.213.1.4.8".into(),
                }),
                ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
            },
        )
    }

    fn wrong_pin(seq: u64, desk: &str) -> Record {
        record(
            seq,
            Event {
                actor: actor("810002813839", desk),
                ..Event::new(
                    EventKind::UserLogin,
                    Outcome::Refused {
                        reason: "wrong_pin".into(),
                    },
                )
            },
        )
    }

    #[test]
    fn only_watched_kinds_are_parsed_and_text_that_mimics_one_is_not_taken_for_it() {
        let bytes = |record: &Record| serde_json::to_vec(record).unwrap();
        // As the writer stores them: compact JSON.
        let start = start(1, "810001", 1);
        assert!(watched_record(&bytes(&start)).is_some());
        assert!(watched_record(&bytes(&wrong_pin(2, "desk-a"))).is_some());
        let search = record(2, Event::new(EventKind::PatientSearch, Outcome::Success));
        assert!(watched_record(&bytes(&search)).is_some());
        for kind in [
            EventKind::BreakGlassStopped,
            EventKind::SecurityAlert,
            EventKind::UserLogout,
        ] {
            let other = record(3, Event::new(kind, Outcome::Success));
            assert!(!may_be_watched(&bytes(&other)), "{kind:?}");
        }
        // The text inside a string value: escaped, so not even a candidate.
        let mimic = record(
            4,
            Event::new(EventKind::PatientRecordRead, Outcome::Success)
                .with_detail(r#"x","kind":"break_glass_started"#),
        );
        assert!(!may_be_watched(&bytes(&mimic)));
        // In a nested object: a candidate, parsed whole, and not taken for one.
        let mut nested = serde_json::to_value(&mimic).unwrap();
        nested["extra"] = serde_json::json!({"kind": "break_glass_started"});
        let nested = serde_json::to_vec(&nested).unwrap();
        assert!(may_be_watched(&nested));
        assert!(watched_record(&nested).is_none());
        assert!(watched_record(b"\xff\xfe not a record").is_none());
    }

    fn thresholds(patients: usize, pins: usize) -> Thresholds {
        Thresholds {
            max_patients_per_hour: patients,
            pin_failures: pins,
            call_id_pattern: None,
        }
    }

    fn kinds(alerts: &[Event]) -> Vec<(AlertKind, Vec<u64>)> {
        alerts
            .iter()
            .map(|e| {
                let a = e.alert.clone().unwrap();
                (a.kind, a.records)
            })
            .collect()
    }

    /// A restart within the hour of an alert: the replay meets the crossing at the record
    /// it was raised on (on the trail), not one record later as a new alert. Before, the
    /// replay began an hour back, lost the first patient, and paged again.
    #[test]
    fn a_restart_raises_no_alert_the_trail_already_has() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let minute = 60_000;
        let t0 = crate::clock::now().1 - 64 * minute;
        let at = |ms: u64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
        };
        let mut live = Watch::new(&thresholds(2, 3), None);
        let mut records = Vec::new();
        for (seq, patient, offset) in [(1, 1, 0), (2, 2, 5), (3, 3, 10)] {
            let mut r = start(seq, "A", patient);
            r.time = crate::clock::format_time(at(t0 + offset * minute)).0;
            records.push((r, t0 + offset * minute));
        }
        let alerts: Vec<Event> = records
            .iter()
            .flat_map(|(r, ms)| live.observe(r, *ms))
            .collect();
        assert_eq!(kinds(&alerts), [(AlertKind::ManyPatients, vec![1, 2, 3])]);
        let mut alert = record(4, alerts[0].clone());
        alert.time = crate::clock::format_time(at(t0 + 10 * minute)).0;
        records.push((alert, t0 + 10 * minute));
        let mut fourth = start(5, "A", 4);
        fourth.time = crate::clock::format_time(at(t0 + 20 * minute)).0;
        records.push((fourth, t0 + 20 * minute));
        let stored: Vec<store::NewRecord> = records
            .iter()
            .map(|(r, ms)| store::NewRecord {
                seq: r.seq,
                bytes: serde_json::to_vec(r).unwrap(),
                time_ms: *ms,
                keys: Vec::new(),
            })
            .collect();
        store.commit(&stored, &[]).unwrap();
        let mut restarted = Watch::new(&thresholds(2, 3), None);
        let (head, raised) = replay(&store, &mut restarted).unwrap();
        assert_eq!(head, 5);
        assert!(raised.is_empty(), "raised again: {:?}", kinds(&raised));
    }

    #[test]
    fn many_patients_fires_once_when_the_hour_window_crosses_the_threshold() {
        let mut watch = Watch::new(&thresholds(2, 3), None);
        let minute = 60_000;
        assert!(watch.observe(&start(1, "A", 1), T0).is_empty());
        // The same patient again does not count twice.
        assert!(watch.observe(&start(2, "A", 1), T0 + minute).is_empty());
        assert!(watch.observe(&start(3, "A", 2), T0 + 2 * minute).is_empty());
        // Another professional has their own window.
        assert!(watch.observe(&start(4, "B", 3), T0 + 3 * minute).is_empty());
        let alerts = watch.observe(&start(5, "A", 3), T0 + 4 * minute);
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::ManyPatients, vec![1, 2, 3, 5])]
        );
        let alert = &alerts[0];
        assert_eq!(alert.kind, EventKind::SecurityAlert);
        assert_eq!(alert.patient, None, "an alert never names a patient");
        assert!(!alert.detail.as_deref().unwrap().contains("2690549588157"));
        // Past the threshold: no alert for every further patient.
        assert!(watch.observe(&start(6, "A", 4), T0 + 5 * minute).is_empty());
        // An hour later the window has emptied: it can cross again.
        let later = T0 + 2 * HOUR_MS;
        assert!(watch.observe(&start(7, "A", 5), later).is_empty());
        assert!(watch.observe(&start(8, "A", 6), later).is_empty());
        assert_eq!(
            kinds(&watch.observe(&start(9, "A", 7), later)),
            [(AlertKind::ManyPatients, vec![7, 8, 9])]
        );
    }

    /// A patient opened twice stays in the window until its last opening leaves it.
    #[test]
    fn a_patient_leaves_the_window_with_its_last_access() {
        let mut watch = Watch::new(&thresholds(2, 3), None);
        let minute = 60_000;
        assert!(watch.observe(&start(1, "A", 1), T0).is_empty());
        assert!(
            watch
                .observe(&start(2, "A", 1), T0 + 50 * minute)
                .is_empty()
        );
        assert!(
            watch
                .observe(&start(3, "A", 2), T0 + 55 * minute)
                .is_empty()
        );
        // Record 1 has left the window; record 2 keeps patient 1 in it.
        assert_eq!(
            kinds(&watch.observe(&start(4, "A", 3), T0 + 70 * minute)),
            [(AlertKind::ManyPatients, vec![2, 3, 4])]
        );
        // Once record 2 has left too, patient 1 no longer counts.
        let mut watch = Watch::new(&thresholds(2, 3), None);
        assert!(watch.observe(&start(1, "A", 1), T0).is_empty());
        assert!(
            watch
                .observe(&start(2, "A", 1), T0 + 10 * minute)
                .is_empty()
        );
        assert!(
            watch
                .observe(&start(3, "A", 2), T0 + 65 * minute)
                .is_empty()
        );
        assert!(
            watch
                .observe(&start(4, "A", 3), T0 + 71 * minute)
                .is_empty()
        );
    }

    #[test]
    fn pin_failures_fire_at_the_threshold_within_ten_minutes_per_desk() {
        let mut watch = Watch::new(&thresholds(10, 3), None);
        assert!(watch.observe(&wrong_pin(1, "desk-a"), T0).is_empty());
        assert!(watch.observe(&wrong_pin(2, "desk-b"), T0).is_empty());
        assert!(watch.observe(&wrong_pin(3, "desk-a"), T0 + 1000).is_empty());
        let alerts = watch.observe(&wrong_pin(4, "desk-a"), T0 + 2000);
        assert_eq!(kinds(&alerts), [(AlertKind::PinFailures, vec![1, 3, 4])]);
        assert_eq!(
            alerts[0].actor.as_ref().unwrap().desk.as_deref(),
            Some("desk-a")
        );
        // Spread over more than ten minutes: never three in a window.
        let mut slow = Watch::new(&thresholds(10, 3), None);
        for (i, seq) in (1..=5).enumerate() {
            let at = T0 + i as u64 * (PIN_WINDOW_MS / 2 + 1);
            assert!(slow.observe(&wrong_pin(seq, "desk-a"), at).is_empty());
        }
    }

    struct DayShift;
    impl Shifts for DayShift {
        fn on_duty(&self, id_nat: &str, _at_ms: u64) -> bool {
            id_nat == "on-duty"
        }
    }

    #[test]
    fn break_glass_outside_a_shift_fires_each_time() {
        let mut watch = Watch::new(&thresholds(10, 3), Some(Arc::new(DayShift)));
        assert!(watch.observe(&start(1, "on-duty", 1), T0).is_empty());
        for seq in [2, 3] {
            assert_eq!(
                kinds(&watch.observe(&start(seq, "off-duty", 1), T0)),
                [(AlertKind::OutsideShift, vec![seq])]
            );
        }
        // Without a roster nobody is outside a shift.
        let mut open = Watch::new(&thresholds(10, 3), None);
        assert!(open.observe(&start(1, "off-duty", 1), T0).is_empty());
    }

    /// A patient search off duty is raised as a break-glass start is; a refused one (it
    /// released nothing) is not.
    #[test]
    fn a_patient_search_outside_a_shift_fires() {
        let mut watch = Watch::new(&thresholds(10, 3), Some(Arc::new(DayShift)));
        let search = |seq, who: &str, outcome| {
            record(
                seq,
                Event {
                    actor: actor(who, "desk-a"),
                    access_mode: Some(AccessMode::BrisDeGlace),
                    ..Event::new(EventKind::PatientSearch, outcome)
                },
            )
        };
        assert!(
            watch
                .observe(&search(1, "on-duty", Outcome::Success), T0)
                .is_empty()
        );
        let alerts = watch.observe(&search(2, "off-duty", Outcome::Success), T0);
        assert_eq!(kinds(&alerts), [(AlertKind::OutsideShift, vec![2])]);
        assert_eq!(
            alerts[0].detail.as_deref(),
            Some("patient search by off-duty outside their shift")
        );
        let refused = Outcome::Refused {
            reason: "rate_limited:search".into(),
        };
        assert!(
            watch
                .observe(&search(3, "off-duty", refused), T0)
                .is_empty()
        );
        // Searches open no patient: they do not count towards many_patients.
        let mut strict = Watch::new(&thresholds(0, 3), None);
        assert!(
            strict
                .observe(&search(4, "A", Outcome::Success), T0)
                .is_empty()
        );
    }

    #[test]
    fn refusals_and_other_kinds_raise_nothing() {
        let mut watch = Watch::new(&thresholds(0, 1), Some(Arc::new(DayShift)));
        let refused = record(
            1,
            Event {
                actor: actor("off-duty", "desk-a"),
                ..Event::new(
                    EventKind::BreakGlassStarted,
                    Outcome::Refused {
                        reason: "rate_limited:professional".into(),
                    },
                )
            },
        );
        assert!(watch.observe(&refused, T0).is_empty());
        let login = record(
            2,
            Event {
                actor: actor("off-duty", "desk-a"),
                ..Event::new(EventKind::UserLogin, Outcome::Success)
            },
        );
        assert!(watch.observe(&login, T0).is_empty());
    }
}
