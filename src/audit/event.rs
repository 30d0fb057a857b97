//! The audit event model: what callers record, and the stored record around it.
//!
//! The stored form is versioned JSON (`v`). Field order is fixed by these structs, but the
//! chain never depends on re-serializing: a record's hash is the SHA-256 of the exact bytes
//! stored, so a record stays verifiable whatever later versions of this code do.

use serde::{Deserialize, Serialize};

/// Version of the stored record form.
pub const RECORD_VERSION: u32 = 1;

/// What happened. Each kind maps onto DICOM audit codes ([`EventKind::dicom`]) and a FHIR
/// AuditEvent (`audit::fhir`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum EventKind {
    /// The gateway started serving.
    ServiceStarted,
    /// The gateway stopped.
    ServiceStopped,
    /// A configuration was loaded (its digest in `detail`).
    ConfigurationLoaded,
    /// A card was inserted in a desk's reader (its holder, if the certificate was read).
    CardInserted,
    /// The card left the reader.
    CardRemoved,
    /// A professional authenticated with a card (or was refused: see the outcome).
    UserLogin,
    /// A professional's session ended.
    UserLogout,
    /// A patient search by INS or identity traits.
    PatientSearch,
    /// Emergency (break-glass or Centre 15) access to a patient's record began.
    BreakGlassStarted,
    /// That access ended (grant expired, session ended).
    BreakGlassStopped,
    /// Patient data was read and released to a desk.
    PatientRecordRead,
    /// A compliance officer recorded a decision on a break-glass access.
    AccessReviewed,
    /// A compliance officer read the trail over the API (search, export, an access's
    /// records, the pending list, the report).
    AuditLogUsed,
    /// Records were deleted by retention (`audit prune`): which, why, and up to where the
    /// repositories had confirmed them. The verifier requires one for any pruned prefix.
    TrailPruned,
    /// The store was restored from a backup (`audit backup`): the trail continues on a new
    /// epoch, so that no record identity (node, epoch, seq) is ever used twice. The first
    /// record of every epoch but the first; `detail` names the backup (docs/audit.md).
    TrailRestored,
    /// An anomaly seen as it happened (see [`AlertKind`]); shipped with a higher syslog
    /// severity so that the receiving side can page someone.
    SecurityAlert,
    /// The regulation software sent a case (SAMU Hub RS-EDA) to a desk (or it was refused:
    /// see the outcome). `detail` holds the Hub case id, the desk and the number of
    /// patients, never who they are.
    CaseReceived,
    /// A desk's case ended: closed by the regulation software, replaced by the next,
    /// lapsed, or the gateway stopped (`detail`).
    CaseClosed,
    /// A desk's case was shown to its logged-in professional (once per session and case),
    /// before the page received it: the traits the caller gave reached that person.
    /// `detail` holds the Hub case id, the desk and the number of patients.
    CaseShown,
}

/// A coded value as DICOM audit messages carry it (`csd-code`, `originalText`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DicomCode {
    /// The DCM code, e.g. `110113`.
    pub code: &'static str,
    /// Its display name.
    pub display: &'static str,
}

const fn dcm(code: &'static str, display: &'static str) -> DicomCode {
    DicomCode { code, display }
}

/// The DICOM identification of one event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DicomEvent {
    /// EventID.
    pub event_id: DicomCode,
    /// EventTypeCode, when the kind has one.
    pub event_type: Option<DicomCode>,
    /// EventActionCode: C create, R read, U update, D delete, E execute.
    pub action: char,
}

impl EventKind {
    /// Every kind, for documentation and exhaustive tests.
    pub const ALL: [EventKind; 19] = [
        Self::ServiceStarted,
        Self::ServiceStopped,
        Self::ConfigurationLoaded,
        Self::CardInserted,
        Self::CardRemoved,
        Self::UserLogin,
        Self::UserLogout,
        Self::PatientSearch,
        Self::BreakGlassStarted,
        Self::BreakGlassStopped,
        Self::PatientRecordRead,
        Self::AccessReviewed,
        Self::AuditLogUsed,
        Self::TrailPruned,
        Self::TrailRestored,
        Self::SecurityAlert,
        Self::CaseReceived,
        Self::CaseClosed,
        Self::CaseShown,
    ];

    /// The DICOM (PS3.15 A.5 / DCM) codes of this kind.
    pub fn dicom(self) -> DicomEvent {
        let application = dcm("110100", "Application Activity");
        let authentication = dcm("110114", "User Authentication");
        let alert = dcm("110113", "Security Alert");
        let (event_id, event_type, action) = match self {
            Self::ServiceStarted => (application, Some(dcm("110120", "Application Start")), 'E'),
            Self::ServiceStopped => (application, Some(dcm("110121", "Application Stop")), 'E'),
            Self::ConfigurationLoaded => (
                application,
                Some(dcm("110131", "Software Configuration")),
                'E',
            ),
            // DICOM has no card codes: insertion and removal are steps of user authentication;
            // the record's kind tells them apart.
            Self::CardInserted | Self::CardRemoved => (authentication, None, 'E'),
            Self::UserLogin => (authentication, Some(dcm("110122", "Login")), 'E'),
            Self::UserLogout => (authentication, Some(dcm("110123", "Logout")), 'E'),
            Self::PatientSearch => (dcm("110112", "Query"), None, 'E'),
            Self::BreakGlassStarted => (
                alert,
                Some(dcm("110127", "Emergency Override Started")),
                'E',
            ),
            Self::BreakGlassStopped => (
                alert,
                Some(dcm("110138", "Emergency Override Stopped")),
                'E',
            ),
            Self::PatientRecordRead => (dcm("110110", "Patient Record"), None, 'R'),
            // Reviewing the trail is a use of the audit log.
            Self::AccessReviewed => (dcm("110101", "Audit Log Used"), None, 'E'),
            Self::AuditLogUsed => (dcm("110101", "Audit Log Used"), None, 'R'),
            // Retention deletes from the audit log.
            Self::TrailPruned => (dcm("110101", "Audit Log Used"), None, 'D'),
            // Recording starts again from an older copy: records after the backup may exist
            // in the repositories and nowhere here, which a security officer must hear of.
            Self::TrailRestored => (alert, Some(dcm("110134", "Audit Recording Started")), 'E'),
            // The alert's kind and the records behind it ride in the record's details.
            Self::SecurityAlert => (alert, None, 'E'),
            // A case comes from another system into this one; closing it discards it.
            Self::CaseReceived => (dcm("110107", "Import"), None, 'C'),
            Self::CaseClosed => (dcm("110107", "Import"), None, 'D'),
            // Reading what was imported, at the desk.
            Self::CaseShown => (dcm("110107", "Import"), None, 'R'),
        };
        DicomEvent {
            event_id,
            event_type,
            action,
        }
    }

    /// The serialized name (`break_glass_started`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceStarted => "service_started",
            Self::ServiceStopped => "service_stopped",
            Self::ConfigurationLoaded => "configuration_loaded",
            Self::CardInserted => "card_inserted",
            Self::CardRemoved => "card_removed",
            Self::UserLogin => "user_login",
            Self::UserLogout => "user_logout",
            Self::PatientSearch => "patient_search",
            Self::BreakGlassStarted => "break_glass_started",
            Self::BreakGlassStopped => "break_glass_stopped",
            Self::PatientRecordRead => "patient_record_read",
            Self::AccessReviewed => "access_reviewed",
            Self::AuditLogUsed => "audit_log_used",
            Self::TrailPruned => "trail_pruned",
            Self::TrailRestored => "trail_restored",
            Self::SecurityAlert => "security_alert",
            Self::CaseReceived => "case_received",
            Self::CaseClosed => "case_closed",
            Self::CaseShown => "case_shown",
        }
    }
}

/// How it ended. Reasons are short codes (`rate_limited`, `patient_opposed`), never free
/// text from a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// The gateway or the record service refused it.
    Refused {
        /// Why, as a code.
        reason: String,
    },
    /// It was attempted and failed.
    Failed {
        /// Why, as a code.
        reason: String,
    },
}

impl Outcome {
    /// DICOM EventOutcomeIndicator / FHIR AuditEvent.outcome: 0 success, 4 minor failure
    /// (refused), 8 serious failure.
    pub fn indicator(&self) -> &'static str {
        match self {
            Self::Success => "0",
            Self::Refused { .. } => "4",
            Self::Failed { .. } => "8",
        }
    }

    /// `success`, `refused` or `failed`.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused { .. } => "refused",
            Self::Failed { .. } => "failed",
        }
    }

    /// The reason code, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Success => None,
            Self::Refused { reason } | Self::Failed { reason } => Some(reason),
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The professional's national identifier (idNat_PS, `8` + RPPS), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_nat: Option<String>,
    /// Name as on the card certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Profession code (`10` = médecin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profession: Option<String>,
    /// Specialty code (`SM59` = médecine d'urgence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialty: Option<String>,
    /// Desk id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desk: Option<String>,
    /// SHA-256 of the workstation certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workstation_sha256: Option<String>,
    /// The workstation's name on the network: the CN of the certificate it connected with
    /// (the desk's `workstation_cn`, or an officer's certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workstation: Option<String>,
}

/// The patient concerned, by INS.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRef {
    /// The INS (NIR or NIA).
    pub ins: String,
    /// Its OID (`1.2.250.1.213.1.4.8` for INS-NIR).
    pub oid: String,
}

/// The emergency call an access serves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// The regulation software's call id.
    pub call_id: String,
    /// Reason code from the configured list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The physician's justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

pub use crate::access_mode::AccessMode;

/// A compliance officer's decision on a break-glass access.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Sequence number of the `break_glass_started` record reviewed.
    pub of: u64,
    /// The decision.
    pub decision: Decision,
    /// The officer's comment.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// The access's latest decision this one replaces (its record's sequence number),
    /// when it had one: a decision is taken knowing the one before it, so a second
    /// officer's never overwrites a first's unseen. Absent on records written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
}

/// Review decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The access was justified.
    Justified,
    /// To be investigated (the access stays on the pending list).
    ToInvestigate,
    /// The access was not justified.
    Unjustified,
}

/// An anomaly raised as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What was seen.
    pub kind: AlertKind,
    /// The records that triggered it, oldest first.
    pub records: Vec<u64>,
}

/// Anomalies watched in real time (the anomaly report finds these and more afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A break-glass access by a professional outside their shift (roster).
    OutsideShift,
    /// A professional opened more distinct patients within an hour than
    /// `compliance.max_patients_per_hour`.
    ManyPatients,
    /// `compliance.pin_failures` PIN failures on one desk within ten minutes.
    PinFailures,
}

impl AlertKind {
    /// The serialized name (`pin_failures`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutsideShift => "outside_shift",
            Self::ManyPatients => "many_patients",
            Self::PinFailures => "pin_failures",
        }
    }
}

/// Where released data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// Fetched from the record service for this access.
    Upstream,
    /// From the local cache, within its freshness bound.
    Cache,
    /// From the local cache, past its freshness bound (upstream unavailable).
    StaleCache,
}

/// What a caller records. The writer adds sequence, time, node and chain fields.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Who acted (absent for the service's own events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The patient concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientRef>,
    /// The patients a search returned (each indexed like `patient`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<PatientRef>,
    /// The emergency call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallContext>,
    /// The access mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// The access's grant (its random id), on a break-glass start, each read under it and
    /// its stop: what ties them together on the record. Two accesses of one professional
    /// at one desk to one patient for one call are two grants (absent from records
    /// written before it was, which are tied by professional, desk, patient and call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Where released data came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataSource>,
    /// Non-identifying context (version, configuration digest, grant id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A compliance decision on an earlier access (for `access_reviewed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// The anomaly (for `security_alert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

impl Event {
    /// An event with only kind and outcome; fill the rest with struct update syntax.
    pub fn new(kind: EventKind, outcome: Outcome) -> Self {
        Self {
            kind,
            outcome,
            actor: None,
            patient: None,
            candidates: Vec::new(),
            call: None,
            access_mode: None,
            grant: None,
            source: None,
            detail: None,
            review: None,
            alert: None,
        }
    }

    /// Sets `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// The keys `event` is indexed under in [`Index::Subject`](super::store::Index::Subject):
/// the access a decision is on, the records an alert names, each once; an alert naming
/// more than [`SUBJECTS_MAX`](super::store::SUBJECTS_MAX) records is indexed under
/// [`MANY_SUBJECTS`](super::store::MANY_SUBJECTS) instead.
pub(crate) fn subject_keys(event: &Event) -> Vec<String> {
    let mut seqs: Vec<u64> = event.review.iter().map(|review| review.of).collect();
    if let Some(alert) = &event.alert {
        seqs.extend(&alert.records);
    }
    seqs.sort_unstable();
    seqs.dedup();
    if seqs.len() > super::store::SUBJECTS_MAX {
        return vec![super::store::MANY_SUBJECTS.to_owned()];
    }
    seqs.iter().map(u64::to_string).collect()
}

/// Whether stored `bytes` may be a record of one of `kinds`, told without parsing them
/// (most reads of the whole trail want a few kinds, and parsing a record scans all of
/// it): false only when they say plainly they are a record of another kind. The writer
/// stores compact JSON, where a record's kind reads `"kind":"<kind>"` (no string value can
/// hold that sequence: its quotes would be escaped). Bytes naming no kind a record has, or
/// not text at all, may be a damaged record of `kinds`: true, so that they are parsed and
/// fail as the damage they are.
pub(crate) fn may_be_of(bytes: &[u8], kinds: &[EventKind]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return true;
    };
    let mut another = false;
    for (at, needle) in text.match_indices("\"kind\":\"") {
        let name = text[at + needle.len()..]
            .split('"')
            .next()
            .unwrap_or_default();
        match EventKind::ALL.iter().find(|kind| kind.as_str() == name) {
            Some(kind) if kinds.contains(kind) => return true,
            Some(_) => another = true,
            // A nested object's own `kind` (an alert's), or damage.
            None => {}
        }
    }
    !another
}

/// Record `seq` read from `bytes`, or the `Damaged` error that names it.
pub(crate) fn read_record(seq: u64, bytes: &[u8]) -> Result<Record, super::AuditError> {
    serde_json::from_slice(bytes).map_err(|e| super::AuditError::Damaged {
        seq,
        why: unreadable_record(&e),
    })
}

/// Calls `visit` with every record from `from` on, read, with its stored bytes, until it
/// breaks; a record that does not read stops the walk with its `Damaged` error (a read of
/// the trail never leaves one out).
pub(crate) fn for_each_read_record(
    txn: &redb::ReadTransaction,
    from: u64,
    mut visit: impl FnMut(u64, &[u8], Record) -> std::ops::ControlFlow<()>,
) -> Result<(), super::AuditError> {
    let mut damaged = None;
    super::store::for_each_record(txn, from, |seq, bytes| match read_record(seq, bytes) {
        Ok(record) => visit(seq, bytes, record),
        Err(e) => {
            damaged = Some(e);
            std::ops::ControlFlow::Break(())
        }
    })?;
    damaged.map_or(Ok(()), Err)
}

/// Why stored bytes are not a record, by position only (a tampered record, or one of
/// another build, may hold an INS where serde's message would quote it).
pub(crate) fn unreadable_record(e: &serde_json::Error) -> String {
    format!(
        "does not parse as a record ({})",
        crate::encoding::json_error_position(e)
    )
}

/// A stored record: the event plus what the writer adds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record form version.
    pub v: u32,
    /// Gap-free sequence number on this node, from 1.
    pub seq: u64,
    /// The node (gateway) that wrote it.
    pub node: String,
    /// The store's epoch: the Unix milliseconds of the store's creation (0 for stores
    /// created before stores had their own), then of each restore from a backup (strictly
    /// increasing along the chain). A record is identified by (node, epoch, seq): after a
    /// restore, or in a store created again on the same node, sequence numbers already
    /// used are used again, on a new epoch. Absent from records of epoch 0, so those keep
    /// the form they always had.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// UTC wall-clock time, RFC 3339 with milliseconds.
    pub time: String,
    /// Id of the process run that wrote it (random per start).
    pub run: String,
    /// Nanoseconds since that run started, on a monotonic clock: orders records even when
    /// the wall clock steps.
    pub mono_ns: u64,
    /// SHA-256 (hex) of the previous record's stored bytes; all zeros for the first record.
    pub prev: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// The INS never prints.
impl std::fmt::Debug for PatientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientRef")
            .field("ins", &"<redacted>")
            .field("oid", &self.oid)
            .finish()
    }
}

/// The justification (free clinical text) never prints.
impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("call_id", &self.call_id)
            .field("reason_code", &self.reason_code)
            .field(
                "justification",
                &self.justification.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Neither the patient, nor the detail (a search's identity traits), nor a reviewer's
/// comment prints.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("outcome", &self.outcome)
            .field("actor", &self.actor)
            .field("patient", &self.patient)
            .field("candidates", &self.candidates.len())
            .field("call", &self.call)
            .field("access_mode", &self.access_mode)
            .field("source", &self.source)
            .field("detail", &self.detail.as_ref().map(|_| "<redacted>"))
            .field("review", &self.review)
            .field("alert", &self.alert)
            .finish()
    }
}

/// The chain fields, and the event as [`Event`]'s `Debug` shows it.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("node", &self.node)
            .field("epoch", &self.epoch)
            .field("time", &self.time)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// The officer's comment never prints.
impl std::fmt::Debug for Review {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Review")
            .field("of", &self.of)
            .field("decision", &self.decision)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// The unique ids of the documents a read's detail says the record service returned
/// (`retrieved=<id>` tokens, as the DMP client writes them), for the audit messages'
/// participant objects.
pub(crate) fn retrieved_documents(detail: Option<&str>) -> impl Iterator<Item = &str> {
    detail
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|token| token.strip_prefix("retrieved="))
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
impl Record {
    /// Record `seq` of `event`, with made-up chain fields, for other modules' tests.
    pub(crate) fn for_tests(seq: u64, event: Event) -> Self {
        Self {
            v: 1,
            seq,
            node: "gw".into(),
            epoch: 0,
            time: String::new(),
            run: "r".into(),
            mono_ns: seq,
            prev: String::new(),
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_that_say_they_are_of_another_kind_are_told_apart_unparsed() {
        const SUBJECTS: [EventKind; 2] = [EventKind::AccessReviewed, EventKind::SecurityAlert];
        let of = |bytes: &[u8]| may_be_of(bytes, &SUBJECTS);
        let kind = |k: &str| format!(r#"{{"seq":1,"event":{{"kind":"{k}","outcome":"success"}}}}"#);
        assert!(of(kind("access_reviewed").as_bytes()));
        assert!(of(kind("security_alert").as_bytes()));
        assert!(!of(kind("patient_record_read").as_bytes()));
        // An alert's own kind comes after the record's.
        assert!(of(
            br#"{"event":{"kind":"security_alert","alert":{"kind":"many_patients"}}}"#
        ));
        // Damage where the kind was, or no kind at all: it may have been one of them.
        assert!(of(kind("access_reviewee").as_bytes()));
        assert!(of(b"{}"));
        assert!(of(&[0xff, 0xfe]));
        // A kind's name inside a string value is not a kind.
        assert!(!of(
            br#"{"event":{"kind":"user_login","detail":"\"kind\":\"access_reviewed\""}}"#
        ));
        // Every kind a record is written with is told by its bytes.
        for kind in EventKind::ALL {
            let bytes =
                serde_json::to_vec(&Record::for_tests(1, Event::new(kind, Outcome::Success)))
                    .unwrap();
            assert!(may_be_of(&bytes, &[kind]), "{kind:?}");
            let others: Vec<EventKind> =
                EventKind::ALL.into_iter().filter(|k| *k != kind).collect();
            assert!(!may_be_of(&bytes, &others), "{kind:?}");
        }
    }

    /// A stored record that does not parse is named by position: serde's own message
    /// would quote the value (here an INS where a number belongs).
    #[test]
    fn an_unreadable_record_is_described_without_its_values() {
        let record = Record {
            v: 1,
            seq: 3,
            node: "gw".into(),
            epoch: 0,
            time: "2026-12-06T08:00:00.000Z".into(),
            run: "r".into(),
            mono_ns: 1,
            prev: "00".repeat(32),
            event: Event::new(EventKind::UserLogin, Outcome::Success),
        };
        let mut value = serde_json::to_value(&record).unwrap();
        value["seq"] = serde_json::json!("269054958815780");
        let bytes = serde_json::to_vec(&value).unwrap();
        let e = serde_json::from_slice::<Record>(&bytes).unwrap_err();
        assert!(
            e.to_string().contains("269054958815780"),
            "serde quotes it: {e}"
        );
        let said = unreadable_record(&e);
        assert!(!said.contains("2690549"), "{said}");
        assert!(said.contains("Data error at line 1, column"), "{said}");
    }

    #[test]
    fn every_kind_has_a_dicom_identification_and_a_stable_name() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventKind::ALL {
            let d = kind.dicom();
            assert!(d.event_id.code.starts_with("1101"), "{kind:?}");
            // Card insertion and removal share 110114 on purpose (DICOM has no card codes);
            // every other kind has its own identification.
            let shared = matches!(kind, EventKind::CardInserted | EventKind::CardRemoved);
            assert!(
                seen.insert((d.event_id.code, d.event_type.map(|t| t.code), d.action)) || shared,
                "{kind:?} duplicates another kind"
            );
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let bg = EventKind::BreakGlassStarted.dicom();
        assert_eq!(
            (bg.event_id.code, bg.event_type.unwrap().code),
            ("110113", "110127")
        );
        assert_eq!(
            EventKind::BreakGlassStopped
                .dicom()
                .event_type
                .unwrap()
                .code,
            "110138"
        );
        assert_eq!(EventKind::PatientRecordRead.dicom().action, 'R');
    }
}
