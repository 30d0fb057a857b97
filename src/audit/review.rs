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
    /// answers every access still to review, oldest first. A damaged record stops the
    /// reading there, as every read of the trail does (one left out could be an access
    /// never reviewed); the records before it are not read again.
    pub fn refresh(&mut self, store: &impl ReadStore) -> Result<Vec<BreakGlassAccess>, AuditError> {
        let txn = store.snapshot()?;
        let mut next = self.next;
        let mut failed = None;
        let read = super::event::for_each_read_record(&txn, next, |seq, _, record| {
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
    let mut access = BreakGlassAccess::of(&start);
    let mut records: Vec<TrailRecord> = session_login(&txn, &start)?.into_iter().collect();
    records.push(TrailRecord::new(seq, &bytes, start.clone()));
    let mut open = true;
    super::event::for_each_read_record(&txn, seq + 1, |at, bytes, record| {
        let event = &record.event;
        let belongs = match event.kind {
            // Tied by grant, a read recorded after its access's stop (the gap between a
            // read's last check and its record) is still the access's; by the older tuple,
            // the stop closes the access to what follows.
            EventKind::PatientRecordRead | EventKind::BreakGlassStopped => {
                let by_grant = start.event.grant.is_some() && event.grant.is_some();
                (open || by_grant) && same_access(&start, &record)
            }
            EventKind::AccessReviewed => event.review.as_ref().is_some_and(|r| r.of == seq),
            EventKind::SecurityAlert => event
                .alert
                .as_ref()
                .is_some_and(|a| a.records.contains(&seq)),
            _ => false,
        };
        if belongs {
            if event.kind == EventKind::BreakGlassStopped {
                open = false;
            }
            if event.review.is_some() && event.outcome == Outcome::Success {
                access.decided(&record);
            }
            records.push(TrailRecord::new(at, bytes, record));
        }
        ControlFlow::Continue(())
    })?;
    Ok(Some(AccessTrail { access, records }))
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
    let seqs = store::index_lookup(txn, store::Index::Desk, desk)?;
    for at in seqs.into_iter().rev().filter(|s| *s < start.seq) {
        let Some(bytes) = store::record(txn, at)? else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            continue;
        };
        let event = &record.event;
        if event.kind == EventKind::UserLogin
            && event.outcome == Outcome::Success
            && event.actor.as_ref().and_then(|a| a.id_nat.as_deref()) == Some(who)
        {
            return Ok(Some(TrailRecord::new(at, &bytes, record)));
        }
    }
    Ok(None)
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
