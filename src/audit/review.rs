//! Compliance review: every successful break-glass start is "to review" until a compliance
//! officer records a decision (itself an audit record, `access_reviewed`). "To investigate"
//! keeps an access on the list; "justified" and "unjustified" close it. Only audit metadata
//! is shown: who, which patient (INS), when, for which call, why; never clinical content.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::Serialize;

use super::AuditError;
use super::event::{AccessMode, Decision, EventKind, Outcome, Record};
use super::store::{self, ReadStore};

/// A break-glass access as a reviewer sees it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct BreakGlassAccess {
    /// Sequence number of its `break_glass_started` record (what a decision names).
    pub seq: u64,
    /// When it started (UTC).
    pub time: String,
    /// The professional's idNat.
    pub professional: Option<String>,
    /// The professional's name.
    pub name: Option<String>,
    /// The desk.
    pub desk: Option<String>,
    /// The patient's INS.
    pub ins: Option<String>,
    /// The emergency call.
    pub call_id: Option<String>,
    /// The reason code.
    pub reason_code: Option<String>,
    /// The free-text justification.
    pub justification: Option<String>,
    /// The access mode.
    pub access_mode: Option<AccessMode>,
    /// The latest decision, if any (`to_investigate` keeps it pending).
    pub last_decision: Option<Decision>,
    /// The sequence number of the latest decision's record: what a next decision names
    /// as the one it replaces (`replaces`).
    pub last_decision_seq: Option<u64>,
    /// Who took the latest decision (the officer's certificate name).
    pub last_decided_by: Option<String>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(BreakGlassAccess);

impl BreakGlassAccess {
    /// The access `record` (a `break_glass_started`) opened, without its decision.
    fn of(record: &Record) -> Self {
        let event = &record.event;
        let actor = event.actor.as_ref();
        let call = event.call.as_ref();
        Self {
            seq: record.seq,
            time: record.time.clone(),
            professional: actor.and_then(|a| a.id_nat.clone()),
            name: actor.and_then(|a| a.name.clone()),
            desk: actor.and_then(|a| a.desk.clone()),
            ins: event.patient.as_ref().map(|p| p.ins.clone()),
            call_id: call.map(|c| c.call_id.clone()),
            reason_code: call.and_then(|c| c.reason_code.clone()),
            justification: call.and_then(|c| c.justification.clone()),
            access_mode: event.access_mode,
            last_decision: None,
            last_decision_seq: None,
            last_decided_by: None,
        }
    }

    /// Takes `record`, a successful decision on this access, as its latest.
    fn decided(&mut self, record: &Record) {
        if let Some(review) = &record.event.review {
            self.last_decision = Some(review.decision);
            self.last_decision_seq = Some(record.seq);
            self.last_decided_by = record.event.actor.as_ref().and_then(|a| a.name.clone());
        }
    }
}

/// Every access still to review, oldest first.
pub fn pending(store: &impl ReadStore) -> Result<Vec<BreakGlassAccess>, AuditError> {
    ReviewQueue::default().refresh(store)
}

/// The accesses still to review, kept up to date by reading only the records appended
/// since the last look: the compliance page asks for it often, and reading the whole trail
/// each time cost years of records per look. Holds the open accesses only (what a look
/// answers anyway); a closed one a later "to investigate" opens again is read back.
#[derive(Default)]
pub struct ReviewQueue {
    /// The first record not read yet.
    next: u64,
    /// Open accesses by their start's sequence number (so, oldest first).
    open: BTreeMap<u64, BreakGlassAccess>,
}

impl ReviewQueue {
    /// Reads the records appended since the last call (all of them the first time) and
    /// answers every access still to review, oldest first. Only starts and decisions are
    /// parsed: a record whose bytes say it is of another kind is passed over (see
    /// [`super::event::may_be_of`]), which makes the first look, over years of records,
    /// several times faster. A damaged record that may be a start or a decision stops the
    /// reading there, as every read of the trail does (one left out could be an access
    /// never reviewed); the records before it are not read again.
    pub fn refresh(&mut self, store: &impl ReadStore) -> Result<Vec<BreakGlassAccess>, AuditError> {
        let txn = store.snapshot()?;
        let mut next = self.next;
        let mut failed = None;
        /// What the queue is made of; the rest is passed over unparsed.
        const READ: [EventKind; 2] = [EventKind::BreakGlassStarted, EventKind::AccessReviewed];
        let read = store::for_each_record(&txn, next, |seq, bytes| {
            if !super::event::may_be_of(bytes, &READ) {
                next = seq + 1;
                return ControlFlow::Continue(());
            }
            let record = match super::event::read_record(seq, bytes) {
                Ok(record) => record,
                Err(e) => {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            };
            let event = &record.event;
            match (event.kind, &event.outcome, &event.review) {
                (EventKind::BreakGlassStarted, Outcome::Success, _) => {
                    self.open.insert(seq, BreakGlassAccess::of(&record));
                }
                (EventKind::AccessReviewed, Outcome::Success, Some(review)) => {
                    if review.decision != Decision::ToInvestigate {
                        self.open.remove(&review.of);
                    } else if let Some(access) = self.open.get_mut(&review.of) {
                        access.decided(&record);
                    } else {
                        // Closed earlier, open again: its start is read back.
                        match reviewable_start(&txn, review.of) {
                            Ok(Some(mut access)) => {
                                access.decided(&record);
                                self.open.insert(review.of, access);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                failed = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                _ => {}
            }
            // Only once the record is taken in: a read stopped here starts again with it.
            next = seq + 1;
            ControlFlow::Continue(())
        });
        self.next = next;
        read?;
        failed.map_or(Ok(()), Err)?;
        Ok(self.open.values().cloned().collect())
    }
}

/// The access record `seq` started, when it is a successful break-glass start.
fn reviewable_start(
    txn: &redb::ReadTransaction,
    seq: u64,
) -> Result<Option<BreakGlassAccess>, AuditError> {
    let Some(bytes) = store::record(txn, seq)? else {
        return Ok(None);
    };
    let start = super::event::read_record(seq, &bytes)?;
    Ok((start.event.kind == EventKind::BreakGlassStarted
        && start.event.outcome == Outcome::Success)
        .then(|| BreakGlassAccess::of(&start)))
}

/// A restore of the trail from a backup, as the trail records it: the records written
/// after the backup was taken and before the restore are not in this trail (they stay in
/// the store the restore set aside, on the appliance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Restore {
    /// Sequence number of its `trail_restored` record.
    pub seq: u64,
    /// When the backup was put back (UTC).
    pub time: String,
    /// The last record the backup held.
    pub backup_head: Option<u64>,
    /// When the backup was taken (UTC).
    pub backup_taken: Option<String>,
}

/// Every restore the trail records, latest first. Each starts an epoch (docs/audit.md),
/// and epochs only move forward with the sequence number, so each epoch's first record is
/// found by bisection: a few reads per restore, however long the trail.
pub fn restores(store: &impl ReadStore) -> Result<Vec<Restore>, AuditError> {
    /// Far more than any appliance's life holds: a bound on the walk, not a limit met.
    const MOST: usize = 10_000;
    let txn = store.snapshot()?;
    let Some((last, _)) = store::last_record(&txn)? else {
        return Ok(Vec::new());
    };
    // Older records may have been pruned: the trail starts at its first one kept.
    let mut first = last;
    store::for_each_record(&txn, 0, |seq, _| {
        first = seq;
        ControlFlow::Break(())
    })?;
    let read = |seq: u64| -> Result<Record, AuditError> {
        let bytes = store::record(&txn, seq)?.ok_or_else(|| AuditError::Damaged {
            seq,
            why: "a record missing inside the trail".into(),
        })?;
        super::event::read_record(seq, &bytes)
    };
    let mut found = Vec::new();
    let mut top = last;
    while found.len() < MOST {
        let epoch = read(top)?.epoch;
        // The first record of `epoch` in [first, top].
        let (mut low, mut high) = (first, top);
        while low < high {
            let middle = low + (high - low) / 2;
            if read(middle)?.epoch >= epoch {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        let start = read(low)?;
        if start.event.kind != EventKind::TrailRestored {
            break;
        }
        let field = |name: &str| {
            start.event.detail.as_deref().and_then(|detail| {
                detail
                    .split_whitespace()
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            })
        };
        found.push(Restore {
            seq: low,
            time: start.time.clone(),
            backup_head: field("backup_head").and_then(|h| h.parse().ok()),
            backup_taken: field("backup_taken"),
        });
        // The trail kept starts with this restore: what came before it was pruned.
        if low <= first {
            break;
        }
        top = low - 1;
    }
    Ok(found)
}

/// One stored record with its hash, as compliance reads it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TrailRecord {
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 (hex) of the stored bytes: match it against a verified export.
    pub hash: String,
    /// The stored record (audit metadata only).
    #[schema(value_type = Object)]
    pub record: Record,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(TrailRecord);

impl From<super::export::Selected> for TrailRecord {
    fn from(selected: super::export::Selected) -> Self {
        Self {
            seq: selected.record.seq,
            hash: selected.hash,
            record: selected.record,
        }
    }
}

impl TrailRecord {
    fn new(seq: u64, bytes: &[u8], record: Record) -> Self {
        Self {
            seq,
            hash: crate::encoding::hex(&super::chain::hash(bytes)),
            record,
        }
    }
}

/// One break-glass access and every record about it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct AccessTrail {
    /// The access, with its latest decision.
    pub access: BreakGlassAccess,
    /// In sequence order: the login that opened the professional's session at that desk,
    /// the start, the reads, the stop, the real-time alerts naming it, the decisions.
    pub records: Vec<TrailRecord>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(AccessTrail);

/// The trail of the access started by record `seq`, or `None` when `seq` is not a
/// successful break-glass start.
pub fn trail(store: &impl ReadStore, seq: u64) -> Result<Option<AccessTrail>, AuditError> {
    let txn = store.snapshot()?;
    let Some(bytes) = store::record(&txn, seq)? else {
        return Ok(None);
    };
    let start = super::event::read_record(seq, &bytes)?;
    if start.event.kind != EventKind::BreakGlassStarted || start.event.outcome != Outcome::Success {
        return Ok(None);
    }
    let mut found = TrailBuilder {
        access: BreakGlassAccess::of(&start),
        records: session_login(&txn, &start)?.into_iter().collect(),
        open: true,
        start,
    };
    found
        .records
        .push(TrailRecord::new(seq, &bytes, found.start.clone()));
    match candidates(&txn, &found.start)? {
        Some(seqs) => {
            for at in seqs {
                let bytes = store::record(&txn, at)?.ok_or_else(|| AuditError::Damaged {
                    seq: at,
                    why: "indexed, but missing from the trail".into(),
                })?;
                let record = super::event::read_record(at, &bytes)?;
                found.take(at, &bytes, record);
            }
        }
        None => super::event::for_each_read_record(&txn, seq + 1, |at, bytes, record| {
            found.take(at, bytes, record);
            ControlFlow::Continue(())
        })?,
    }
    Ok(Some(AccessTrail {
        access: found.access,
        records: found.records,
    }))
}

/// The records after `start` that may belong to its access, ascending, through the
/// indexes: the patient's (its reads and its stop name the patient: every writer of an
/// access's records names it), and the subject's (decisions and alerts name the access;
/// alerts about many records are under one key, and so are the records the upgrade could
/// not read, any of which may be a decision). `None` when the store cannot answer so (not
/// upgraded yet, or a start without a patient): the caller then reads every record after.
/// Either way [`TrailBuilder::take`] decides, so both readings give one trail.
fn candidates(txn: &redb::ReadTransaction, start: &Record) -> Result<Option<Vec<u64>>, AuditError> {
    let Some(patient) = &start.event.patient else {
        return Ok(None);
    };
    if !store::subjects_indexed(txn)? {
        return Ok(None);
    }
    let mut seqs = Vec::new();
    let mut keep = |at: u64| {
        seqs.push(at);
        Ok(ControlFlow::Continue(()))
    };
    let after = start.seq + 1;
    store::index_walk(txn, store::Index::Patient, &patient.ins, after, &mut keep)?;
    store::index_walk(
        txn,
        store::Index::Subject,
        &start.seq.to_string(),
        after,
        &mut keep,
    )?;
    // Alerts about many records, and the records the upgrade to version 3 could not read.
    for key in [store::MANY_SUBJECTS, store::UNREADABLE_SUBJECTS] {
        store::index_walk(txn, store::Index::Subject, key, after, &mut keep)?;
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(Some(seqs))
}

/// An access's trail as its records are read, in sequence order.
struct TrailBuilder {
    start: Record,
    access: BreakGlassAccess,
    records: Vec<TrailRecord>,
    /// No stop read yet.
    open: bool,
}

impl TrailBuilder {
    /// Takes `record` (at `at`) into the trail when it is about the access.
    fn take(&mut self, at: u64, bytes: &[u8], record: Record) {
        let (start, event) = (&self.start, &record.event);
        let belongs = match event.kind {
            // Tied by grant, a read recorded after its access's stop (the gap between a
            // read's last check and its record) is still the access's; by the older tuple,
            // the stop closes the access to what follows.
            EventKind::PatientRecordRead | EventKind::BreakGlassStopped => {
                let by_grant = start.event.grant.is_some() && event.grant.is_some();
                (self.open || by_grant) && same_access(start, &record)
            }
            EventKind::AccessReviewed => event.review.as_ref().is_some_and(|r| r.of == start.seq),
            EventKind::SecurityAlert => event
                .alert
                .as_ref()
                .is_some_and(|a| a.records.contains(&start.seq)),
            _ => false,
        };
        if belongs {
            if event.kind == EventKind::BreakGlassStopped {
                self.open = false;
            }
            if event.review.is_some() && event.outcome == Outcome::Success {
                self.access.decided(&record);
            }
            self.records.push(TrailRecord::new(at, bytes, record));
        }
    }
}

impl AccessTrail {
    /// Whether the access has its stop on the record: until then, reads may still
    /// follow, and a closing decision would leave them unreviewed.
    pub fn has_ended(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.record.event.kind == EventKind::BreakGlassStopped)
    }
}

/// Whether `record` is about the same access as `start`: the same grant when both name
/// theirs; for records written before grants were named, the same professional, desk,
/// patient and call.
fn same_access(start: &Record, record: &Record) -> bool {
    if let (Some(a), Some(b)) = (&start.event.grant, &record.event.grant) {
        return a == b;
    }
    let key = |r: &Record| {
        let e = &r.event;
        (
            e.actor.as_ref().map(|a| (a.id_nat.clone(), a.desk.clone())),
            e.patient.as_ref().map(|p| p.ins.clone()),
            e.call.as_ref().map(|c| c.call_id.clone()),
        )
    };
    key(start) == key(record)
}

/// The latest successful login of `start`'s professional at its desk before it.
fn session_login(
    txn: &redb::ReadTransaction,
    start: &Record,
) -> Result<Option<TrailRecord>, AuditError> {
    let actor = start.event.actor.as_ref();
    let (Some(desk), Some(who)) = (
        actor.and_then(|a| a.desk.as_deref()),
        actor.and_then(|a| a.id_nat.as_deref()),
    ) else {
        return Ok(None);
    };
    let mut login = None;
    store::index_walk_back(txn, store::Index::Desk, desk, start.seq, |at| {
        let Some(bytes) = store::record(txn, at)? else {
            return Ok(ControlFlow::Continue(()));
        };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            return Ok(ControlFlow::Continue(()));
        };
        let event = &record.event;
        if event.kind == EventKind::UserLogin
            && event.outcome == Outcome::Success
            && event.actor.as_ref().and_then(|a| a.id_nat.as_deref()) == Some(who)
        {
            login = Some(TrailRecord::new(at, &bytes, record));
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(login)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;
    use crate::audit::store::{AuditStore, NewRecord};

    /// 2026-12-07T10:00:00Z, then a second per record.
    const T0: u64 = 1_796_637_600_000;

    fn record(seq: u64, epoch: u64, event: Event) -> NewRecord {
        store::test_record(seq, epoch, T0 + seq * 1000, event)
    }

    /// An event of Dr A at desk d1 on patient `ins`, for call c1, under `grant`.
    fn about(kind: EventKind, ins: &str, grant: Option<&str>) -> Event {
        use crate::audit::event::{Actor, CallContext, PatientRef};
        Event {
            actor: Some(Actor {
                id_nat: Some("810000000001".into()),
                name: Some("Dr A".into()),
                desk: Some("d1".into()),
                ..Actor::default()
            }),
            patient: Some(PatientRef {
                ins: ins.into(),
                oid: "1.2.250.1.213.1.4.8".into(),
            }),
            call: Some(CallContext {
                call_id: "c1".into(),
                reason_code: None,
                justification: None,
            }),
            grant: grant.map(str::to_owned),
            ..Event::new(kind, Outcome::Success)
        }
    }

    fn decision(of: u64, decision: Decision) -> Event {
        Event {
            review: Some(crate::audit::event::Review {
                of,
                decision,
                comment: String::new(),
                replaces: None,
            }),
            ..Event::new(EventKind::AccessReviewed, Outcome::Success)
        }
    }

    /// Two accesses to one patient (the first with a read after its stop, by grant), a
    /// login, another patient, an alert and decisions between them.
    fn two_accesses() -> Vec<NewRecord> {
        use crate::audit::event::{Alert, AlertKind};
        const P: &str = "185057800000042";
        const Q: &str = "285057800000043";
        let login = || Event {
            patient: None,
            call: None,
            ..about(EventKind::UserLogin, P, None)
        };
        let alert = Event {
            alert: Some(Alert {
                kind: AlertKind::OutsideShift,
                records: vec![3],
            }),
            ..Event::new(EventKind::SecurityAlert, Outcome::Success)
        };
        [
            login(),
            about(EventKind::PatientSearch, P, None),
            about(EventKind::BreakGlassStarted, P, Some("g1")),
            about(EventKind::PatientRecordRead, P, Some("g1")),
            alert,
            about(EventKind::BreakGlassStarted, Q, Some("g2")),
            about(EventKind::BreakGlassStopped, P, Some("g1")),
            about(EventKind::PatientRecordRead, P, Some("g1")),
            decision(3, Decision::ToInvestigate),
            login(),
            about(EventKind::BreakGlassStarted, P, Some("g3")),
            about(EventKind::PatientRecordRead, P, Some("g3")),
            decision(11, Decision::Justified),
            decision(3, Decision::Unjustified),
        ]
        .into_iter()
        .zip(1..)
        .map(|(event, seq)| record(seq, 10, event))
        .collect()
    }

    fn seqs(trail: &AccessTrail) -> Vec<u64> {
        trail.records.iter().map(|r| r.seq).collect()
    }

    /// Read through the indexes or record by record (a store not upgraded yet), an
    /// access's trail is the same: its login, start, reads (the one after its stop too),
    /// stop, alert and decisions, and nothing of the patient's next access.
    #[test]
    fn an_access_trail_is_the_same_through_the_indexes_and_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        store.commit(&two_accesses(), &[]).unwrap();
        assert!(store::subjects_indexed(&store.snapshot().unwrap()).unwrap());
        let indexed = trail(&store, 3).unwrap().unwrap();
        assert_eq!(seqs(&indexed), [1, 3, 4, 5, 7, 8, 9, 14]);
        assert_eq!(indexed.access.last_decision, Some(Decision::Unjustified));
        assert_eq!(indexed.access.last_decision_seq, Some(14));
        assert!(indexed.has_ended());
        let later = trail(&store, 11).unwrap().unwrap();
        assert_eq!(seqs(&later), [10, 11, 12, 13]);
        assert!(!later.has_ended());

        store.set_meta(store::Meta::FormatVersion, 2).unwrap();
        assert!(!store::subjects_indexed(&store.snapshot().unwrap()).unwrap());
        let scanned = trail(&store, 3).unwrap().unwrap();
        assert_eq!(seqs(&scanned), seqs(&indexed));
        assert_eq!(scanned.access.last_decision_seq, Some(14));
        assert_eq!(seqs(&trail(&store, 11).unwrap().unwrap()), seqs(&later));
    }

    /// The trail of an old access reads what its indexes name, not the trail after it:
    /// records after it that do not even parse (none of them its own) are never read.
    #[test]
    fn an_old_access_trail_reads_only_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let mut records = two_accesses();
        records.extend((15..=1000).map(|seq| NewRecord {
            seq,
            bytes: b"not a record".to_vec(),
            time_ms: T0 + seq * 1000,
            keys: Vec::new(),
        }));
        records.push(record(1001, 10, decision(3, Decision::Justified)));
        store.commit(&records, &[]).unwrap();
        let found = trail(&store, 3).unwrap().unwrap();
        assert_eq!(seqs(&found), [1, 3, 4, 5, 7, 8, 9, 14, 1001]);
        assert_eq!(found.access.last_decision, Some(Decision::Justified));

        // Read record by record, the first of them stops the reading, as it must there.
        store.set_meta(store::Meta::FormatVersion, 2).unwrap();
        assert!(matches!(
            trail(&store, 3),
            Err(AuditError::Damaged { seq: 15, .. })
        ));
    }

    /// A record the upgrade from version 2 could not read may have been a decision on any
    /// access before it: their trails stop there, as the reading of the whole trail did.
    #[test]
    fn a_record_the_upgrade_could_not_read_stops_the_trails_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        let store = AuditStore::open(&path).unwrap();
        let mut records = two_accesses();
        records.push(NewRecord {
            seq: 15,
            bytes: br#"{"event":{"kind":"access_reviewe"#.to_vec(),
            time_ms: T0 + 15_000,
            keys: Vec::new(),
        });
        for record in &mut records {
            record
                .keys
                .retain(|(index, _)| *index != store::Index::Subject);
        }
        store.commit(&records, &[]).unwrap();
        store.set_meta(store::Meta::FormatVersion, 2).unwrap();
        drop(store);
        let store = AuditStore::open(&path).unwrap();
        assert!(store::subjects_indexed(&store.snapshot().unwrap()).unwrap());
        for access in [3, 11] {
            assert!(
                matches!(
                    trail(&store, access),
                    Err(AuditError::Damaged { seq: 15, .. })
                ),
                "access {access}"
            );
        }
    }

    /// The queue parses only what may be a start or a decision: a record that says plainly
    /// it is of another kind is passed over, damaged or not; one that may be a start and
    /// does not read stops the reading there, and the next look starts again with it.
    #[test]
    fn the_review_queue_parses_only_what_may_be_a_start_or_a_decision() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let garbage = |seq: u64, bytes: &[u8]| NewRecord {
            seq,
            bytes: bytes.to_vec(),
            time_ms: T0 + seq * 1000,
            keys: Vec::new(),
        };
        let mut records = two_accesses();
        records.push(garbage(
            15,
            br#"{"event":{"kind":"patient_record_read","outcome":"#,
        ));
        records.push(record(
            16,
            10,
            about(EventKind::BreakGlassStarted, "1", Some("g4")),
        ));
        store.commit(&records, &[]).unwrap();
        let mut queue = ReviewQueue::default();
        let open: Vec<u64> = queue
            .refresh(&store)
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        assert_eq!(open, [6, 16], "past the damaged read");
        store
            .commit(
                &[
                    garbage(17, br#"{"event":{"kind":"break_glass_sta"#),
                    record(18, 10, about(EventKind::BreakGlassStarted, "2", Some("g5"))),
                ],
                &[],
            )
            .unwrap();
        assert!(matches!(
            queue.refresh(&store),
            Err(AuditError::Damaged { seq: 17, .. })
        ));
        assert!(
            matches!(
                queue.refresh(&store),
                Err(AuditError::Damaged { seq: 17, .. })
            ),
            "the next look stops there again"
        );
    }

    fn restored(head: u64) -> Event {
        Event::new(EventKind::TrailRestored, Outcome::Success).with_detail(format!(
            "previous_epoch=1 backup_head={head} backup_taken=2026-12-06T08:00:00.000Z"
        ))
    }

    /// Two restores in a long trail, each found by its epoch; none in a trail that never
    /// had one; one whose records before were pruned is still said.
    #[test]
    fn every_restore_is_found_latest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let login = || Event::new(EventKind::UserLogin, Outcome::Success);
        let mut records: Vec<NewRecord> = (1..=500).map(|s| record(s, 10, login())).collect();
        assert!(restores(&store).unwrap().is_empty(), "an empty trail");
        store.commit(&records, &[]).unwrap();
        assert!(restores(&store).unwrap().is_empty(), "never restored");
        records = vec![record(501, 20, restored(420))];
        records.extend((502..=900).map(|s| record(s, 20, login())));
        records.push(record(901, 30, restored(777)));
        records.extend((902..=903).map(|s| record(s, 30, login())));
        store.commit(&records, &[]).unwrap();
        let found = restores(&store).unwrap();
        assert_eq!(
            found
                .iter()
                .map(|r| (r.seq, r.backup_head))
                .collect::<Vec<_>>(),
            [(901, Some(777)), (501, Some(420))]
        );
        assert_eq!(
            found[0].backup_taken.as_deref(),
            Some("2026-12-06T08:00:00.000Z")
        );
        assert_eq!(found[0].time, "2026-12-07T10:15:01.000Z");
    }

    #[test]
    fn a_restore_whose_earlier_records_were_pruned_is_still_said() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let login = Event::new(EventKind::UserLogin, Outcome::Success);
        store
            .commit(&[record(40, 20, restored(39)), record(41, 20, login)], &[])
            .unwrap();
        let found = restores(&store).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 40);
    }
}
