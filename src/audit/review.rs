//! Compliance review: every successful break-glass start is "to review" until a compliance
//! officer records a decision (itself an audit record, `access_reviewed`). "To investigate"
//! keeps an access on the list; "justified" and "unjustified" close it. Only audit metadata
//! is shown: who, which patient (INS), when, for which call, why; never clinical content.

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde::Serialize;

use super::AuditError;
use super::event::{AccessMode, Decision, EventKind, Outcome, Record};
use super::store::{self, ReadStore};

/// A break-glass access awaiting (or under) review.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingAccess {
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
}

/// Every access still to review, oldest first.
pub fn pending(store: &impl ReadStore) -> Result<Vec<PendingAccess>, AuditError> {
    let txn = store.snapshot()?;
    let mut started: Vec<PendingAccess> = Vec::new();
    let mut decisions: HashMap<u64, Decision> = HashMap::new();
    store::for_each_record(&txn, 0, |_, bytes| {
        let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
            return ControlFlow::Continue(());
        };
        let event = &record.event;
        match (event.kind, &event.outcome) {
            (EventKind::BreakGlassStarted, Outcome::Success) => started.push(PendingAccess {
                seq: record.seq,
                time: record.time.clone(),
                professional: event.actor.as_ref().and_then(|a| a.id_nat.clone()),
                name: event.actor.as_ref().and_then(|a| a.name.clone()),
                desk: event.actor.as_ref().and_then(|a| a.desk.clone()),
                ins: event.patient.as_ref().map(|p| p.ins.clone()),
                call_id: event.call.as_ref().map(|c| c.call_id.clone()),
                reason_code: event.call.as_ref().and_then(|c| c.reason_code.clone()),
                justification: event.call.as_ref().and_then(|c| c.justification.clone()),
                access_mode: event.access_mode,
                last_decision: None,
            }),
            (EventKind::AccessReviewed, Outcome::Success) => {
                if let Some(review) = &event.review {
                    decisions.insert(review.of, review.decision);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    Ok(started
        .into_iter()
        .map(|mut access| {
            access.last_decision = decisions.get(&access.seq).copied();
            access
        })
        .filter(|a| a.last_decision.is_none_or(|d| d == Decision::ToInvestigate))
        .collect())
}

/// Whether `seq` is a successful break-glass start (what a decision may name).
pub fn is_reviewable(store: &impl ReadStore, seq: u64) -> Result<bool, AuditError> {
    let txn = store.snapshot()?;
    Ok(store::record(&txn, seq)?
        .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        .is_some_and(|r| {
            r.event.kind == EventKind::BreakGlassStarted && r.event.outcome == Outcome::Success
        }))
}
