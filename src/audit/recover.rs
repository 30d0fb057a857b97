//! What a crash left open. Grants and desk sessions live in memory: a clean stop records
//! the end of each (`ended: gateway_stopped`, a logout `gateway_stopped`), a crash records
//! nothing. At the next start, before the listener opens, the accesses the trail shows
//! started and never stopped get their end record (`ended: gateway_restarted`), and the
//! logins never followed by a logout at their desk get their logout (`gateway_restarted`),
//! so every access and every session on the record has an end.
//!
//! Only the trail's tail is read: a grant lasts `break_glass.grant_minutes` at most, so
//! accesses started more than twice that (plus a margin) before the trail's last record
//! were over before the crash (and a grant the reaper had not yet ended is within the
//! window anyway); a session lasts `cards.session_max_hours` at most.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use super::export::{self, Filter};
use super::store::ReadStore;
use super::{AuditError, Event, EventKind, Outcome};

/// Margin beyond twice the longest grant.
const MARGIN: Duration = Duration::from_secs(5 * 60);

/// The end records owed to accesses started within the window before the trail's last
/// record and never stopped, in the order they started.
pub fn unended_accesses(
    store: &impl ReadStore,
    longest_grant: Duration,
) -> Result<Vec<Event>, AuditError> {
    // Started accesses by what identifies them on the record; a stop ends the oldest.
    let mut open: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    visit_tail(
        store,
        longest_grant * 2 + MARGIN,
        "an access",
        |seq, event| match (event.kind, &event.outcome) {
            (EventKind::BreakGlassStarted, Outcome::Success) => {
                open.entry(key(&event)).or_default().push((seq, event));
            }
            (EventKind::BreakGlassStopped, _) => {
                if let Some(started) = open.get_mut(&key(&event))
                    && !started.is_empty()
                {
                    started.remove(0);
                }
            }
            _ => {}
        },
    )?;
    let mut owed: Vec<(u64, Event)> = open.into_values().flatten().collect();
    owed.sort_by_key(|(seq, _)| *seq);
    Ok(owed
        .into_iter()
        .map(|(_, started)| Event {
            actor: started.actor,
            patient: started.patient,
            call: started.call,
            access_mode: started.access_mode,
            grant: started.grant,
            detail: Some("ended: gateway_restarted".into()),
            ..Event::new(EventKind::BreakGlassStopped, Outcome::Success)
        })
        .collect())
}

/// The logouts owed to desk sessions opened within `longest_session` (plus a margin)
/// before the trail's last record and never ended: per desk, a login not followed by a
/// logout there (a desk holds one session at a time), in the order they opened.
pub fn unended_sessions(
    store: &impl ReadStore,
    longest_session: Duration,
) -> Result<Vec<Event>, AuditError> {
    let mut open: HashMap<String, (u64, Event)> = HashMap::new();
    visit_tail(
        store,
        longest_session + MARGIN,
        "a session",
        |seq, event| {
            let desk = event
                .actor
                .as_ref()
                .and_then(|a| a.desk.clone())
                .unwrap_or_default();
            match (event.kind, &event.outcome) {
                (EventKind::UserLogin, Outcome::Success) => {
                    open.insert(desk, (seq, event));
                }
                (EventKind::UserLogout, _) => {
                    open.remove(&desk);
                }
                _ => {}
            }
        },
    )?;
    let mut owed: Vec<(u64, Event)> = open.into_values().collect();
    owed.sort_by_key(|(seq, _)| *seq);
    Ok(owed
        .into_iter()
        .map(|(_, login)| Event {
            actor: login.actor,
            ..Event::new(EventKind::UserLogout, Outcome::Success).with_detail("gateway_restarted")
        })
        .collect())
}

/// Visits (seq, event) of every record within `span` before the trail's last one, in
/// order. A damaged record must not keep the gateway from starting: it is passed over and
/// named (`what` it may have opened or ended is said), and `audit verify` says the rest.
fn visit_tail(
    store: &impl ReadStore,
    span: Duration,
    what: &str,
    mut visit: impl FnMut(u64, Event),
) -> Result<(), AuditError> {
    let txn = store.snapshot()?;
    let Some(filter) = tail(&txn, span)? else {
        return Ok(());
    };
    let mut damaged = Vec::new();
    export::visit_past_damage(&txn, &filter, &mut damaged, |selected| {
        visit(selected.record.seq, selected.record.event);
        ControlFlow::Continue(())
    })?;
    if !damaged.is_empty() {
        tracing::error!(
            records = ?damaged,
            "audit records do not read: {what} they opened or ended may be closed wrongly at start; run samu-gateway audit verify"
        );
    }
    Ok(())
}

/// The records within `span` before the trail's last one; `None` for an empty trail. The
/// records the trail's maintenance writes while the service is stopped are passed over: a
/// restore's `trail_restored` (the writer that opened the restored copy wrote it just now)
/// and a prune's `trail_pruned`. The window runs back from the previous run's last record,
/// where the accesses it left open are (before, it ran back from the restore or the
/// prune, and an access open hours earlier never got its end: no closing decision was
/// ever possible on it, and retention stopped at it for good).
fn tail(txn: &redb::ReadTransaction, span: Duration) -> Result<Option<Filter>, AuditError> {
    let Some((mut seq, mut bytes)) = super::store::last_record(txn)? else {
        return Ok(None);
    };
    let last = loop {
        let record: super::Record = serde_json::from_slice(&bytes).map_err(|e| {
            AuditError::Storage(format!(
                "the last record {}",
                super::event::unreadable_record(&e)
            ))
        })?;
        let maintenance = matches!(
            record.event.kind,
            EventKind::TrailRestored | EventKind::TrailPruned
        );
        if !maintenance || seq <= 1 {
            break record;
        }
        match super::store::record(txn, seq - 1)? {
            Some(earlier) => {
                seq -= 1;
                bytes = earlier;
            }
            None => break record,
        }
    };
    let last_ms = crate::clock::parse_time(&last.time).unwrap_or(0);
    let window = span.as_millis();
    Ok(Some(Filter {
        since_ms: Some(last_ms.saturating_sub(u64::try_from(window).unwrap_or(u64::MAX))),
        ..Filter::default()
    }))
}

/// What pairs an access's start and stop: its grant; for records written before grants
/// were named, professional, desk, patient, call and mode.
fn key(event: &Event) -> String {
    if let Some(grant) = &event.grant {
        return format!("grant\u{0}{grant}");
    }
    let actor = event.actor.clone().unwrap_or_default();
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{:?}",
        actor.id_nat.unwrap_or_default(),
        actor.desk.unwrap_or_default(),
        event.patient.as_ref().map_or("", |p| p.ins.as_str()),
        event.call.as_ref().map_or("", |c| c.call_id.as_str()),
        event.access_mode
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::store::{AuditStore, NewRecord};

    fn record(seq: u64, ms: u64, event: Event) -> NewRecord {
        super::super::store::test_record(seq, 0, ms, event)
    }

    /// An access open when a backup was taken, restored three hours later: it gets its
    /// end at the start, as after a crash. Before, the window ran back from the restore's
    /// own record, and the access stayed open for ever.
    #[test]
    fn an_access_open_in_a_restored_backup_gets_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let t0 = crate::clock::now().1 - 4 * 3_600_000;
        let started = Event {
            grant: Some("g1".into()),
            ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
        };
        let restored = Event::new(EventKind::TrailRestored, Outcome::Success);
        store
            .commit(
                &[
                    record(1, t0, started),
                    record(2, t0 + 3 * 3_600_000, restored),
                ],
                &[],
            )
            .unwrap();
        let owed = unended_accesses(&store, Duration::from_secs(15 * 60)).unwrap();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].grant.as_deref(), Some("g1"));
        assert_eq!(owed[0].detail.as_deref(), Some("ended: gateway_restarted"));
    }

    /// `audit prune` run while the service is stopped, hours after a crash left an access
    /// and a session open: their ends are still recorded at the next start. Before, the
    /// window ran back from the prune's record, and both stayed open for good.
    #[test]
    fn an_access_open_before_a_prune_gets_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let t0 = crate::clock::now().1 - 20 * 3_600_000;
        let login = Event {
            actor: Some(super::super::event::Actor {
                desk: Some("desk-1".into()),
                ..Default::default()
            }),
            ..Event::new(EventKind::UserLogin, Outcome::Success)
        };
        let started = Event {
            grant: Some("g1".into()),
            ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
        };
        let pruned = Event::new(EventKind::TrailPruned, Outcome::Success).with_detail("through=0");
        store
            .commit(
                &[
                    record(1, t0, login),
                    record(2, t0 + 60_000, started),
                    record(3, t0 + 13 * 3_600_000, pruned),
                ],
                &[],
            )
            .unwrap();
        let owed = unended_accesses(&store, Duration::from_secs(15 * 60)).unwrap();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].grant.as_deref(), Some("g1"));
        let sessions = unended_sessions(&store, Duration::from_secs(12 * 3600)).unwrap();
        assert_eq!(sessions.len(), 1);
    }
}
