//! Break-glass access: the gateway's reason to exist.
//!
//! Order for a new access ([`BreakGlass::start`]): validate → rate limits → record
//! "break-glass started" durably → cache or record service → record the read (with its
//! source) → release the summary with a time-boxed [`Grant`]. A grant allows re-reads
//! ([`BreakGlass::reread`]) without a new justification until it expires, its session ends,
//! or the physician closes it; each re-read is recorded, and so is the grant's end
//! ("break-glass stopped").
//!
//! Cache rule: a cached copy (fresh, or stale when the record service is unavailable) is
//! served only to a professional and access mode the record service already cleared for
//! that patient, because oppositions are per mode and blocks per professional; any
//! opposition, block or closure answer deletes the copy. Concurrent identical requests
//! (same patient, professional, mode) make a single upstream call.

mod grants;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

pub(crate) use grants::{Grant, GrantView};

use crate::audit::{
    Actor, AuditError, AuditLog, CallContext, DataSource, Event, EventKind, Outcome, PatientRef,
    Receipt,
};
use crate::cache::sealed::{CachedSummary, ComposedFor, Entry, Hit, SealedSummaries};
use crate::card::trust::Professional;
use crate::limit::{Limited, Limits};
use crate::patient::{Candidate, Ins, InsPolicy, PatientError, Traits};
use crate::session::DeskConfig;
use crate::summary::CriticalSummary;
use crate::upstream::{self, AccessMode, RecordService, UpstreamError};

/// `[break_glass]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// How long a grant lasts (it also ends with the session).
    #[serde(default = "defaults::grant_minutes")]
    pub grant_minutes: u64,
    /// How many grants one session holds open at most: one more ends the oldest
    /// (`ended: superseded`), so what a session keeps in memory is bounded.
    #[serde(default = "defaults::open_grants_per_session")]
    pub open_grants_per_session: usize,
    /// The reasons a physician picks from.
    #[serde(default = "defaults::reasons")]
    pub reasons: Vec<Reason>,
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        Self {
            grant_minutes: defaults::grant_minutes(),
            open_grants_per_session: defaults::open_grants_per_session(),
            reasons: defaults::reasons(),
        }
    }
}

/// One justification reason.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Stable code recorded in the audit trail.
    pub code: String,
    /// Label on the physician's screen (French).
    pub label: String,
    /// Whether free text must complete it.
    #[serde(default)]
    pub text_required: bool,
}

mod defaults {
    pub(super) fn grant_minutes() -> u64 {
        120
    }
    pub(super) fn open_grants_per_session() -> usize {
        10
    }
    pub(super) fn reasons() -> Vec<super::Reason> {
        let reason = |code: &str, label: &str, text_required| super::Reason {
            code: code.into(),
            label: label.into(),
            text_required,
        };
        vec![
            reason(
                "inconscient",
                "Patient inconscient ou hors d'état d'exprimer sa volonté",
                false,
            ),
            reason(
                "detresse_vitale",
                "Détresse vitale, risque immédiat pour la santé",
                false,
            ),
            reason("intoxication", "Intoxication ou surdosage suspecté", false),
            reason("autre", "Autre motif (à préciser)", true),
        ]
    }
}

/// What the physician submits.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakGlassRequest {
    /// The patient's INS (15 characters; spaces allowed).
    pub ins: String,
    /// Its OID (default: INS-NIR).
    #[serde(default)]
    pub ins_oid: Option<String>,
    /// The emergency call's id in the regulation software.
    pub call_id: String,
    /// A configured reason code.
    pub reason_code: String,
    /// Free text completing the reason.
    #[serde(default)]
    pub reason_text: Option<String>,
    /// `centre_15` or `bris_de_glace`.
    pub access_mode: AccessMode,
}

impl std::fmt::Debug for BreakGlassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BreakGlassRequest(****)")
    }
}

/// What a search submits: an INS, or identity traits.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatientSearchRequest {
    /// An INS.
    #[serde(default)]
    pub ins: Option<String>,
    /// Its OID (default: INS-NIR).
    #[serde(default)]
    pub ins_oid: Option<String>,
    /// Identity traits, when no INS is at hand.
    #[serde(default)]
    pub traits: Option<Traits>,
    /// Purpose of the search (default `centre_15`).
    #[serde(default)]
    pub access_mode: Option<AccessMode>,
    /// The emergency call the search serves: a search releases identities, so it is
    /// justified like an access, before the record service is asked.
    pub call_id: String,
    /// A configured reason code.
    pub reason_code: String,
    /// Free text completing the reason.
    #[serde(default)]
    pub reason_text: Option<String>,
}

/// Where released data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Fetched from the record service for this request.
    Upstream,
    /// The gateway's copy, still fresh.
    Cache,
    /// The gateway's copy, older than fresh: the record service is unavailable.
    StaleCache,
}

impl From<Source> for DataSource {
    fn from(source: Source) -> Self {
        match source {
            Source::Upstream => Self::Upstream,
            Source::Cache => Self::Cache,
            Source::StaleCache => Self::StaleCache,
        }
    }
}

/// Why a stale copy was served instead of the record service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StaleBecause {
    /// The record service could not be reached or answered an error.
    Unavailable,
    /// The record service did not answer in time.
    TimedOut,
    /// The record service answered, but its answer could not be read (a malformed or
    /// incomplete document): the copy is older than what the record now holds.
    Unreadable,
}

impl StaleBecause {
    /// The failures after which a stale copy may be served (the service could not give a
    /// usable answer), and how each is said; `None` for every other failure.
    fn of(e: &UpstreamError) -> Option<Self> {
        match e {
            UpstreamError::Unavailable(_) => Some(Self::Unavailable),
            UpstreamError::TimedOut(_) => Some(Self::TimedOut),
            UpstreamError::Malformed(_) => Some(Self::Unreadable),
            // An answer about someone else is an identity conflict, not an outage: no copy
            // stands in for it (it would read "unreadable", and the physician would never
            // be told to check the patient's identity); the access stops and says so.
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::TimedOut => "timed_out",
            Self::Unreadable => "unreadable",
        }
    }
}

/// A summary released to a desk.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Delivered {
    /// The grant allowing re-reads.
    pub grant: GrantView,
    /// Where the data came from.
    pub source: Source,
    /// True when served from a stale copy.
    pub stale: bool,
    /// Why the copy is stale (the record service's failure); null unless `stale`.
    pub stale_because: Option<StaleBecause>,
    /// Age of the data, seconds (0 when just fetched).
    pub age_seconds: u64,
    /// The critical summary (from a cache hit, the JSON sealed by this run, as it is).
    #[schema(value_type = CriticalSummary)]
    pub summary: CachedSummary,
}

impl Delivered {
    /// The answer's JSON, as `serde_json` writes this struct, with the summary appended as
    /// it is: a copy this run sealed is never read again (`CachedSummary::write_json`).
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        /// The fields before the summary, in the struct's order.
        #[derive(Serialize)]
        struct Fields<'a> {
            grant: &'a GrantView,
            source: &'a Source,
            stale: &'a bool,
            stale_because: &'a Option<StaleBecause>,
            age_seconds: &'a u64,
        }
        // Destructured whole, so that a field added to `Delivered` cannot be left out here.
        let Self {
            grant,
            source,
            stale,
            stale_because,
            age_seconds,
            summary,
        } = self;
        let mut out = serde_json::to_vec(&Fields {
            grant,
            source,
            stale,
            stale_because,
            age_seconds,
        })?;
        // A struct with fields writes as an object: reopen it for the summary.
        if out.pop() != Some(b'}') {
            return Err(serde::ser::Error::custom(
                "the answer's fields are not an object",
            ));
        }
        out.extend_from_slice(b",\"summary\":");
        summary.write_json(&mut out)?;
        out.push(b'}');
        Ok(out)
    }
}

/// The summary shows as counts only (its own `Debug`).
impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivered")
            .field("grant", &self.grant)
            .field("source", &self.source)
            .field("stale", &self.stale)
            .field("stale_because", &self.stale_because)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// Why an access is refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    /// A field of the request is unusable.
    #[error("invalid request: {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why (English, no value quoted).
        reason: String,
        /// For the screen.
        message_fr: String,
    },
    /// The INS is unusable.
    #[error(transparent)]
    Patient(#[from] PatientError),
    /// A rate limit.
    #[error(transparent)]
    Limited(#[from] Limited),
    /// The record service's answer (refusal, unavailability, …).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The system random generator failed: no grant can be made.
    #[error(transparent)]
    Unavailable(#[from] crate::random::RandomUnavailable),
    /// The access could not be recorded: nothing is released.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// No such grant for this desk and session (or it ended).
    #[error("no such grant for this session")]
    NoGrant,
    /// The session ended (the card was pulled) while the record service answered:
    /// nothing was released, and the record says so.
    #[error("the session ended before the summary could be released")]
    SessionEnded,
    /// The grant's document has no PDF to open (it is structured, or its content is not
    /// a readable PDF).
    #[error("the document of this grant has no PDF to open")]
    NoDocument,
}

/// A fetched summary and where it came from.
#[derive(Clone)]
struct Fetched {
    entry: Entry,
    source: Source,
    age: Duration,
    /// Set when `source` is the stale cache.
    stale_because: Option<StaleBecause>,
}

type Inflight = Arc<OnceCell<Result<Entry, UpstreamError>>>;

/// Break-glass access for the whole gateway.
pub(crate) struct BreakGlass {
    audit: Arc<AuditLog>,
    upstream: Arc<dyn RecordService>,
    cache: Option<Arc<SealedSummaries>>,
    limits: Arc<Limits>,
    config: BreakGlassConfig,
    policy: InsPolicy,
    grants: Mutex<HashMap<String, Grant>>,
    /// Fetches in flight, by patient, professional, mode and card session: a request
    /// joins only one that its own card session signs.
    inflight: Mutex<HashMap<(Ins, String, AccessMode, u64), Inflight>>,
    /// Serialises the cache's writes (a fetch's read-merge-write, a refusal's removal)
    /// and counts the refusals that removed a copy: a fetch caches its answer only if no
    /// refusal was heard since it asked.
    cache_writes: Mutex<u64>,
    /// Set by `end_all` at stop, under the grants' lock: an access completing after it
    /// keeps no grant and records its end at once (else it would stay open in the trail
    /// until the next start).
    closing: std::sync::atomic::AtomicBool,
}

/// What the physician's form offers: reasons, grant length, identifier kinds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct AccessForm {
    /// The configured reasons, in order.
    pub reasons: Vec<Reason>,
    /// How long a grant lasts, minutes.
    pub grant_minutes: u64,
    /// The identifier kinds accepted, the usual one first.
    pub ins_oids: Vec<OidChoice>,
}

/// One accepted identifier kind.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct OidChoice {
    /// The OID sent as `ins_oid`.
    pub oid: &'static str,
    /// Its French label.
    pub label: &'static str,
}

/// Who acts, from where: the session's professional at a desk.
pub(crate) struct Actorship<'a> {
    /// The desk.
    pub desk: &'a DeskConfig,
    /// The logged-in professional.
    pub professional: &'a Professional,
    /// SHA-256 of the session token: grants are bound to the session.
    pub session: String,
    /// The card session the login opened: the only one that signs for this session's
    /// accesses.
    pub card_session: u64,
}

impl Actorship<'_> {
    fn actor(&self) -> Actor {
        crate::session::actor(self.professional, self.desk)
    }

    fn card(&self) -> upstream::CardSession<'_> {
        upstream::CardSession {
            reader: &self.desk.reader,
            held: self.card_session,
        }
    }
}

impl BreakGlass {
    /// Break-glass over `upstream`, with an optional cache.
    pub(crate) fn new(
        audit: Arc<AuditLog>,
        upstream: Arc<dyn RecordService>,
        cache: Option<Arc<SealedSummaries>>,
        limits: Arc<Limits>,
        config: BreakGlassConfig,
        policy: InsPolicy,
    ) -> Self {
        Self {
            audit,
            upstream,
            cache,
            limits,
            config,
            policy,
            grants: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            cache_writes: Mutex::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What the physician's form offers.
    pub(crate) fn form(&self) -> AccessForm {
        use crate::patient::{OID_NIA, OID_NIR, OID_NIR_DEMO, OID_NIR_TEST};
        let mut ins_oids = vec![
            OidChoice {
                oid: OID_NIR,
                label: "INS (NIR)",
            },
            OidChoice {
                oid: OID_NIA,
                label: "INS (NIA, numéro provisoire)",
            },
        ];
        if self.policy.accept_test_oids {
            // Test and demo identities come first where they are accepted: such a gateway
            // serves test data only.
            ins_oids.splice(
                0..0,
                [
                    OidChoice {
                        oid: OID_NIR_DEMO,
                        label: "INS de démonstration",
                    },
                    OidChoice {
                        oid: OID_NIR_TEST,
                        label: "INS de test",
                    },
                ],
            );
        }
        AccessForm {
            reasons: self.config.reasons.clone(),
            grant_minutes: self.config.grant_minutes,
            ins_oids,
        }
    }

    /// Starts an access: see the module documentation for the order of steps.
    ///
    /// `still_open` says whether the session is still open just before the release is
    /// recorded: if the card was pulled meanwhile, the read is recorded as failed
    /// (`session_ended_before_release`) with the access's end, and nothing leaves; the
    /// trail never says a summary was read that no one saw.
    pub(crate) async fn start(
        &self,
        who: &Actorship<'_>,
        request: BreakGlassRequest,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Delivered, AccessError> {
        let (ins, call) = self.validate(&request)?;
        let mode = request.access_mode;
        let event = |kind, outcome| Event {
            actor: Some(who.actor()),
            patient: Some(patient_ref(&ins)),
            call: Some(call.clone()),
            access_mode: Some(mode),
            ..Event::new(kind, outcome)
        };
        self.within_limits(who, |outcome| event(EventKind::BreakGlassStarted, outcome))
            .await?;
        // Drawn before anything is recorded: a grant that cannot exist is refused up front.
        let grant_id = crate::random::hex_id::<16>().map_err(AccessError::Unavailable)?;
        // Every record of this access from here on names its grant.
        let event = |kind, outcome| Event {
            grant: Some(grant_id.clone()),
            ..event(kind, outcome)
        };
        let started = event(EventKind::BreakGlassStarted, Outcome::Success);
        let read = event(EventKind::PatientRecordRead, Outcome::Success);
        // A fresh copy this professional may see: nothing is asked of anyone else, so the
        // access and its read are recorded together (one fsync) before release.
        let unreleased = |read: Event| {
            let outcome = Outcome::Failed {
                reason: "session_ended_before_release".into(),
            };
            vec![
                Event { outcome, ..read },
                Event {
                    detail: Some("ended: session_ended_before_release".into()),
                    ..event(EventKind::BreakGlassStopped, Outcome::Success)
                },
            ]
        };
        if let Some(fetched) = self.fresh_hit(&ins, who.professional, mode) {
            if !still_open() {
                let mut events = vec![started];
                events.extend(unreleased(read_event(read, &fetched)));
                self.audit.append_all(events).await?;
                return Err(AccessError::SessionEnded);
            }
            let receipt = self
                .record_release(who, vec![started, read_event(read, &fetched)])
                .await?;
            let grant = self.open_grant(grant_id, who, ins, call, mode).await?;
            return Ok(deliver(grant, fetched, receipt));
        }
        self.record(started).await?;
        let fetched = match self.fetch(&ins, who.professional, who.card(), mode).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let outcome = failure_outcome(&e);
                self.record(event(EventKind::PatientRecordRead, outcome.clone()))
                    .await?;
                let stopped = Event {
                    detail: Some(format!("ended: {}", outcome.reason().unwrap_or("failed"))),
                    ..event(EventKind::BreakGlassStopped, Outcome::Success)
                };
                self.record(stopped).await?;
                return Err(e.into());
            }
        };
        // The card was pulled while the record service answered.
        if !still_open() {
            self.audit
                .append_all(unreleased(read_event(read, &fetched)))
                .await?;
            return Err(AccessError::SessionEnded);
        }
        let receipt = self
            .record_release(who, vec![read_event(read, &fetched)])
            .await?;
        let grant = self.open_grant(grant_id, who, ins, call, mode).await?;
        Ok(deliver(grant, fetched, receipt))
    }

    /// Records `events` (the last is the read that releases the data) together with the
    /// end of the session's oldest grant when a new one would exceed
    /// `open_grants_per_session`: one fsync for all, and the read's receipt.
    async fn record_release(
        &self,
        who: &Actorship<'_>,
        events: Vec<Event>,
    ) -> Result<Receipt, AuditError> {
        let limit = self.config.open_grants_per_session.max(1);
        let superseded = match self.grants.lock() {
            Ok(mut grants) => take_oldest(&mut grants, who, limit - 1, None),
            Err(_) => Vec::new(),
        };
        let batch = superseded
            .iter()
            .map(|grant| stop_event(grant, "superseded"))
            .chain(events)
            .collect();
        match self.audit.append_all(batch).await {
            // The read's receipt (the last) releases the data.
            Ok(mut receipts) => receipts.pop().ok_or(AuditError::Closed),
            Err(e) => {
                // Nothing was recorded: the oldest grants stay open.
                if let Ok(mut grants) = self.grants.lock() {
                    for grant in superseded {
                        grants.insert(grant.id.clone(), grant);
                    }
                }
                Err(e)
            }
        }
    }

    /// Keeps the grant of an access whose read was recorded; once the gateway is stopping
    /// (`end_all` ran), records its end instead.
    async fn open_grant(
        &self,
        id: String,
        who: &Actorship<'_>,
        ins: Ins,
        call: CallContext,
        mode: AccessMode,
    ) -> Result<GrantView, AuditError> {
        let grant = Grant::new(
            id,
            who,
            ins,
            mode,
            call,
            Duration::from_secs(self.config.grant_minutes.max(1) * 60),
        );
        let view = grant.view();
        let limit = self.config.open_grants_per_session.max(1);
        let (unkept, superseded) = match self.grants.lock() {
            Ok(mut grants) if !self.closing.load(std::sync::atomic::Ordering::Acquire) => {
                let id = grant.id.clone();
                grants.insert(id.clone(), grant);
                // Concurrent starts in one session each made room for one grant before
                // their reads were recorded: together they may have filled it past the
                // limit, so the oldest others go now.
                (None, take_oldest(&mut grants, who, limit, Some(&id)))
            }
            _ => (Some(grant), Vec::new()),
        };
        if let Some(grant) = unkept {
            self.record(stop_event(&grant, "gateway_stopped")).await?;
        }
        if !superseded.is_empty() {
            let ends = superseded
                .iter()
                .map(|grant| stop_event(grant, "superseded"))
                .collect();
            // Together, or none: unrecorded, the grants stay open (as `record_release`
            // leaves them), rather than gone from memory and open on the trail.
            if let Err(e) = self.audit.append_all(ends).await {
                if let Ok(mut grants) = self.grants.lock() {
                    for grant in superseded {
                        grants.insert(grant.id.clone(), grant);
                    }
                }
                return Err(e);
            }
        }
        Ok(view)
    }

    /// Re-reads the summary of grant `id` for the same desk and session. `still_open`
    /// is asked once the record service answered, as for [`Self::start`].
    pub(crate) async fn reread(
        &self,
        who: &Actorship<'_>,
        id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Delivered, AccessError> {
        let (grant, fetched, read) = self.read_under(who, id, still_open).await?;
        let receipt = self.audit.append(read).await?;
        Ok(deliver(grant.view(), fetched, receipt))
    }

    /// The PDF of grant `id`'s document, when the record holds the summary only as an
    /// unstructured document: recorded as a read of the record, like the summary.
    pub(crate) async fn document(
        &self,
        who: &Actorship<'_>,
        id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<u8>, AccessError> {
        let (_grant, fetched, read) = self.read_under(who, id, still_open).await?;
        let pdf = match fetched.entry.summary.parsed() {
            Ok(summary) => summary.pdf(),
            Err(e) => {
                tracing::error!(error = %e, "cached summary unreadable; no PDF served");
                None
            }
        };
        self.release_pdf(read, pdf).await
    }

    /// `pdf`, released once `read` is recorded as the release of a PDF. Without a PDF the
    /// read (made of the record service when the copy was not fresh) released nothing,
    /// and is on record all the same, as failed (`no_pdf`).
    async fn release_pdf(&self, read: Event, pdf: Option<Vec<u8>>) -> Result<Vec<u8>, AccessError> {
        let Some(pdf) = pdf else {
            self.record(Event {
                outcome: Outcome::Failed {
                    reason: "no_pdf".into(),
                },
                ..read
            })
            .await?;
            return Err(AccessError::NoDocument);
        };
        let detail = ["document=application/pdf".to_owned()]
            .into_iter()
            .chain(read.detail.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let receipt = self
            .audit
            .append(Event {
                detail: Some(detail),
                ..read
            })
            .await?;
        Ok(released(pdf, receipt))
    }

    /// A document the summary of grant `id` listed (`unique_id`), read from the record
    /// service now, under the grant: recorded as a read naming the document before it
    /// leaves. Its content's PDF, if any, is left out (its own route).
    pub(crate) async fn listed_document(
        &self,
        who: &Actorship<'_>,
        id: &str,
        unique_id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Delivered, AccessError> {
        let (grant, summary, read) = self.read_listed(who, id, unique_id, still_open).await?;
        let receipt = self.audit.append(read).await?;
        Ok(released(
            Delivered {
                grant: grant.view(),
                source: Source::Upstream,
                stale: false,
                stale_because: None,
                age_seconds: 0,
                summary: summary.without_content().into(),
            },
            receipt,
        ))
    }

    /// The PDF of a listed document (see [`Self::listed_document`]), recorded the same
    /// way.
    pub(crate) async fn listed_document_pdf(
        &self,
        who: &Actorship<'_>,
        id: &str,
        unique_id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<u8>, AccessError> {
        let (_grant, summary, read) = self.read_listed(who, id, unique_id, still_open).await?;
        self.release_pdf(read, summary.pdf()).await
    }

    /// A listed document under grant `id` (within the limits, failures recorded), with
    /// the read event that must be recorded before anything of it is released. Never
    /// from the cache: only summaries are kept there.
    async fn read_listed(
        &self,
        who: &Actorship<'_>,
        id: &str,
        unique_id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<(Grant, CriticalSummary, Event), AccessError> {
        // An XDS unique id is an OID, optionally with an extension after `^`.
        if unique_id.is_empty()
            || unique_id.len() > 128
            || !unique_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-^".contains(&b))
        {
            return Err(AccessError::Invalid {
                field: "unique_id",
                reason: "not a document unique id".into(),
                message_fr: "Identifiant de document invalide.".into(),
            });
        }
        let grant = self.grant_for(who, id).ok_or(AccessError::NoGrant)?;
        let event = |outcome| Event {
            actor: Some(who.actor()),
            patient: Some(patient_ref(&grant.ins)),
            call: Some(grant.call.clone()),
            access_mode: Some(grant.mode),
            grant: Some(grant.id.clone()),
            ..Event::new(EventKind::PatientRecordRead, outcome)
        };
        self.within_limits(who, event).await?;
        let access = upstream::Access {
            mode: grant.mode,
            professional: who.professional,
            patient: Some(&grant.ins),
            card: Some(who.card()),
        };
        let summary = match self.upstream.document(unique_id, &access).await {
            Ok(summary) => summary,
            Err(e) => {
                if !e.is_refusal() {
                    tracing::warn!(error = %e, "record service failed on a listed document");
                }
                self.forget_on_refusal(&grant.ins, &e, grant.mode);
                self.record(Event {
                    detail: Some(format!("opened={unique_id}")),
                    ..event(failure_outcome(&e))
                })
                .await?;
                if e.is_refusal() {
                    self.end(id, "refused").await?;
                }
                return Err(e.into());
            }
        };
        // As for a re-read: a grant that ended meanwhile releases nothing.
        if self.grant_for(who, id).is_none() {
            self.record(Event {
                detail: Some(format!("opened={unique_id}")),
                ..event(Outcome::Failed {
                    reason: "grant_ended".into(),
                })
            })
            .await?;
            return Err(AccessError::NoGrant);
        }
        let detail = std::iter::once(format!("opened={unique_id}"))
            .chain(summary.provenance.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let read = Event {
            source: Some(Source::Upstream.into()),
            detail: Some(detail),
            ..event(Outcome::Success)
        };
        if !still_open() {
            return Err(self.ended_unreleased(id, read).await?);
        }
        Ok((grant, summary, read))
    }

    /// The summary of grant `id` fetched again (within the limits, failures recorded),
    /// with the read event that must be recorded before anything of it is released.
    async fn read_under(
        &self,
        who: &Actorship<'_>,
        id: &str,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<(Grant, Fetched, Event), AccessError> {
        let grant = self.grant_for(who, id).ok_or(AccessError::NoGrant)?;
        let event = |kind, outcome| Event {
            actor: Some(who.actor()),
            patient: Some(patient_ref(&grant.ins)),
            call: Some(grant.call.clone()),
            access_mode: Some(grant.mode),
            grant: Some(grant.id.clone()),
            ..Event::new(kind, outcome)
        };
        self.within_limits(who, |outcome| event(EventKind::PatientRecordRead, outcome))
            .await?;
        let fetched = match self
            .fetch(&grant.ins, who.professional, who.card(), grant.mode)
            .await
        {
            Ok(fetched) => fetched,
            Err(e) => {
                self.record(event(EventKind::PatientRecordRead, failure_outcome(&e)))
                    .await?;
                if e.is_refusal() {
                    self.end(id, "refused").await?;
                }
                return Err(e.into());
            }
        };
        // The grant may have ended while the record service answered (closed from another
        // tab or by the regulation software, or expired): then nothing is released, and
        // the read asked for is on record as failed.
        if self.grant_for(who, id).is_none() {
            self.record(event(
                EventKind::PatientRecordRead,
                Outcome::Failed {
                    reason: "grant_ended".into(),
                },
            ))
            .await?;
            return Err(AccessError::NoGrant);
        }
        let read = read_event(
            event(EventKind::PatientRecordRead, Outcome::Success),
            &fetched,
        );
        if !still_open() {
            return Err(self.ended_unreleased(id, read).await?);
        }
        Ok((grant, fetched, read))
    }

    /// The card left while the record service answered a read under grant `id`: `read`
    /// goes on record as failed (`session_ended_before_release`) together with the
    /// grant's end, and nothing is released. The trail never says a document was read
    /// that no one saw.
    async fn ended_unreleased(&self, id: &str, read: Event) -> Result<AccessError, AuditError> {
        let grant = self.grants.lock().ok().and_then(|mut g| g.remove(id));
        let failed = Event {
            outcome: Outcome::Failed {
                reason: "session_ended_before_release".into(),
            },
            ..read
        };
        let events = std::iter::once(failed)
            .chain(
                grant
                    .iter()
                    .map(|grant| stop_event(grant, "session_ended_before_release")),
            )
            .collect();
        if let Err(e) = self.audit.append_all(events).await {
            // Nothing was recorded: the grant stays for the reaper to end on record.
            if let (Some(grant), Ok(mut grants)) = (grant, self.grants.lock()) {
                grants.insert(grant.id.clone(), grant);
            }
            return Err(e);
        }
        Ok(AccessError::SessionEnded)
    }

    /// Checks the access limits; a refusal is recorded as `refused(outcome)`.
    async fn within_limits(
        &self,
        who: &Actorship<'_>,
        refused: impl FnOnce(Outcome) -> Event,
    ) -> Result<(), AccessError> {
        let Err(limited) = self.limits.access(&who.professional.id_nat, &who.desk.id) else {
            return Ok(());
        };
        let reason = format!("rate_limited:{}", limited.scope.as_str());
        self.record(refused(Outcome::Refused { reason })).await?;
        Err(limited.into())
    }

    /// Records an event whose receipt releases nothing.
    async fn record(&self, event: Event) -> Result<(), AuditError> {
        self.audit.append(event).await.map(drop)
    }

    /// Searches the record service; recorded (what was searched, not what came back) and
    /// rate-limited. `still_open` says whether the session the search is for is still
    /// open once the answer came: if not, the candidates are not released (`None`), and
    /// the record says so instead of saying they reached the physician.
    pub(crate) async fn search(
        &self,
        who: &Actorship<'_>,
        request: PatientSearchRequest,
        still_open: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<Vec<Candidate>>, AccessError> {
        let mode = request.access_mode.unwrap_or(AccessMode::Centre15);
        let (ins, searched) = match (&request.ins, &request.traits) {
            (Some(ins), None) => (Some(self.ins(ins, request.ins_oid.as_deref())?), None),
            (None, Some(traits)) => {
                let traits = traits.clone().composed();
                traits.validate(time::OffsetDateTime::now_utc().date())?;
                (None, Some(traits))
            }
            _ => {
                return Err(AccessError::Invalid {
                    field: "ins",
                    reason: "send either an INS or identity traits".into(),
                    message_fr: "Saisissez un INS ou des traits d'identité.".into(),
                });
            }
        };
        let call = self.call_context(
            &request.call_id,
            &request.reason_code,
            request.reason_text.as_deref(),
        )?;
        let mut event = Event {
            actor: Some(who.actor()),
            patient: ins.as_ref().map(patient_ref),
            call: Some(call),
            access_mode: Some(mode),
            detail: searched.as_ref().map(traits_detail),
            ..Event::new(EventKind::PatientSearch, Outcome::Success)
        };
        if let Err(limited) = self.limits.search(&who.professional.id_nat) {
            event.outcome = Outcome::Refused {
                reason: format!("rate_limited:{}", limited.scope.as_str()),
            };
            self.record(event).await?;
            return Err(limited.into());
        }
        let access = upstream::Access {
            mode,
            professional: who.professional,
            patient: ins.as_ref(),
            card: Some(who.card()),
        };
        let found = match (&ins, &searched) {
            (Some(ins), _) => self.upstream.find_by_ins(ins, &access).await,
            (None, Some(traits)) => self.upstream.search(traits, &access).await,
            (None, None) => Ok(Vec::new()),
        };
        match &found {
            // Every identity released is named, so `audit list --patient` finds the search.
            Ok(candidates) => {
                let (named, without_ins) = released_identities(candidates);
                event.candidates = named;
                if let Some(ids) = without_ins {
                    event.detail = Some(match event.detail.take() {
                        Some(traits) => format!("{traits} {ids}"),
                        None => ids,
                    });
                }
                // How the record service answered (its transaction and assertion id), as
                // a read records it: what lets this search be matched to the service's
                // own log. The candidates of one answer share it: named once.
                let mut provenance: Vec<&str> = Vec::new();
                for step in candidates.iter().flat_map(|c| &c.provenance) {
                    if !provenance.contains(&step.as_str()) {
                        provenance.push(step);
                    }
                }
                if !provenance.is_empty() {
                    let joined = provenance.join(" ");
                    event.detail = Some(match event.detail.take() {
                        Some(traits) => format!("{traits} {joined}"),
                        None => joined,
                    });
                }
                // The card was pulled while the record service answered: the service
                // released these identities to the gateway, which keeps them.
                if !still_open() {
                    event.outcome = Outcome::Failed {
                        reason: "session_ended_before_release".into(),
                    };
                }
            }
            Err(e) => {
                if let Some(ins) = &ins {
                    self.forget_on_refusal(ins, e, mode);
                }
                event.outcome = failure_outcome(e);
            }
        }
        let released = event.outcome == Outcome::Success;
        self.record(event).await?;
        let found = found?;
        Ok(released.then_some(found))
    }

    /// Ends grant `id` at the physician's request (same desk and session).
    pub(crate) async fn close(&self, who: &Actorship<'_>, id: &str) -> Result<(), AccessError> {
        self.end_for(who, id, "closed").await
    }

    /// Ends grant `id` of `who` now, recording `reason`.
    pub(crate) async fn end_for(
        &self,
        who: &Actorship<'_>,
        id: &str,
        reason: &str,
    ) -> Result<(), AccessError> {
        self.grant_for(who, id).ok_or(AccessError::NoGrant)?;
        self.end(id, reason).await?;
        Ok(())
    }

    fn grant_for(&self, who: &Actorship<'_>, id: &str) -> Option<Grant> {
        let grants = self.grants.lock().ok()?;
        let grant = grants.get(id)?;
        (grant.desk == who.desk.id && grant.session == who.session && !grant.expired())
            .then(|| grant.clone())
    }

    /// Ends a grant and records it; false if it was already gone.
    async fn end(&self, id: &str, reason: &str) -> Result<bool, AuditError> {
        let grant = self.grants.lock().ok().and_then(|mut g| g.remove(id));
        let Some(grant) = grant else {
            return Ok(false);
        };
        self.record(stop_event(&grant, reason)).await?;
        Ok(true)
    }

    /// Ends grants that expired or whose session is no longer the desk's; `session_of`
    /// gives the current session hash of a desk.
    pub(crate) async fn reap(&self, session_of: impl Fn(&str) -> Option<String>) {
        // One session lookup per desk, however many grants it holds.
        let mut sessions: HashMap<String, Option<String>> = HashMap::new();
        let ending: Vec<(String, &'static str)> = match self.grants.lock() {
            Ok(grants) => grants
                .values()
                .filter_map(|g| {
                    let current = sessions
                        .entry(g.desk.clone())
                        .or_insert_with(|| session_of(&g.desk));
                    if g.expired() {
                        Some((g.id.clone(), "expired"))
                    } else if current.as_deref() != Some(g.session.as_str()) {
                        Some((g.id.clone(), "session_ended"))
                    } else {
                        None
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for (id, reason) in ending {
            if let Err(e) = self.end(&id, reason).await {
                tracing::error!(error = %e, "cannot record the end of a grant");
            }
        }
    }

    /// Ends every open grant (the gateway is stopping), recording each end.
    pub(crate) async fn end_all(&self, reason: &str) {
        let ids: Vec<String> = self
            .grants
            .lock()
            .map(|g| {
                // Under the lock: a grant is either in the list taken here or never kept.
                self.closing
                    .store(true, std::sync::atomic::Ordering::Release);
                g.keys().cloned().collect()
            })
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self.end(&id, reason).await {
                tracing::error!(error = %e, "cannot record the end of a grant");
            }
        }
    }

    /// An INS under `oid` (default: INS-NIR) and this gateway's OID policy.
    fn ins(&self, value: &str, oid: Option<&str>) -> Result<Ins, PatientError> {
        Ins::parse(value, oid.unwrap_or(crate::patient::OID_NIR), self.policy)
    }

    fn validate(&self, request: &BreakGlassRequest) -> Result<(Ins, CallContext), AccessError> {
        let ins = self.ins(&request.ins, request.ins_oid.as_deref())?;
        let call = self.call_context(
            &request.call_id,
            &request.reason_code,
            request.reason_text.as_deref(),
        )?;
        Ok((ins, call))
    }

    /// The call and reason an access or a search serves, checked: a call id of the
    /// regulation software, a configured reason, its text when the reason needs one.
    fn call_context(
        &self,
        call_id: &str,
        reason_code: &str,
        reason_text: Option<&str>,
    ) -> Result<CallContext, AccessError> {
        let call_id = call_id.trim();
        if call_id.is_empty()
            || call_id.len() > 64
            || !call_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
        {
            return Err(AccessError::Invalid {
                field: "call_id",
                reason: "1 to 64 characters among A-Z a-z 0-9 - _ . / :".into(),
                message_fr: "Numéro d'appel invalide : reprenez-le du logiciel de régulation."
                    .into(),
            });
        }
        let Some(reason) = self.config.reasons.iter().find(|r| r.code == reason_code) else {
            return Err(AccessError::Invalid {
                field: "reason_code",
                reason: "not a configured reason".into(),
                message_fr: "Choisissez un motif dans la liste.".into(),
            });
        };
        let text = reason_text.map(str::trim).filter(|t| !t.is_empty());
        if text.is_some_and(|t| t.chars().count() > 500) {
            return Err(AccessError::Invalid {
                field: "reason_text",
                reason: "at most 500 characters".into(),
                message_fr: "Précision trop longue (500 caractères au plus).".into(),
            });
        }
        if reason.text_required && text.is_none() {
            return Err(AccessError::Invalid {
                field: "reason_text",
                reason: "this reason needs a text".into(),
                message_fr: "Précisez le motif.".into(),
            });
        }
        Ok(CallContext {
            call_id: call_id.to_owned(),
            reason_code: Some(reason.code.clone()),
            justification: text.map(str::to_owned),
        })
    }

    /// The cached copy `professional` may see in `mode`: the record service cleared them in
    /// that mode within the copy's maximum age, and the copy counts as fresh for them only
    /// while that clearance is itself fresh (a block or an opposition since then must be
    /// asked about, whoever refreshed the copy meanwhile).
    fn cached(&self, ins: &Ins, professional: &Professional, mode: AccessMode) -> Option<Hit> {
        let cache = self.cache.as_ref()?;
        let hit = match cache.get(ins) {
            Ok(hit) => hit?,
            Err(e) => {
                tracing::warn!(error = %e, "summary cache read failed; asking the record service");
                return None;
            }
        };
        // Composed for another mode (or profession), it may hold a document the patient
        // masked from this one, or lack one this mode shows: asked again.
        if hit.entry.composed_for != Some(composed_for(professional, mode)) {
            return None;
        }
        let lifetimes = cache.lifetimes();
        let cleared = hit
            .entry
            .clearance_age(&professional.id_nat, mode, cache.now_ms())
            .filter(|age| *age <= lifetimes.max_stale)?;
        Some(Hit {
            fresh: hit.fresh && cleared <= lifetimes.fresh,
            ..hit
        })
    }

    /// A fresh copy `professional` may see in `mode`.
    fn fresh_hit(
        &self,
        ins: &Ins,
        professional: &Professional,
        mode: AccessMode,
    ) -> Option<Fetched> {
        let hit = self.cached(ins, professional, mode).filter(|h| h.fresh)?;
        Some(Fetched {
            entry: hit.entry,
            source: Source::Cache,
            age: hit.age,
            stale_because: None,
        })
    }

    /// Removes the patient's cached copy when the record service refused (opposition,
    /// block, closure, no record): whichever call heard it, the copy is never served again.
    /// How many refusals have removed a cached copy so far (`cache_writes`).
    fn cache_generation(&self) -> u64 {
        *self
            .cache_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the patient's cached copies after an answer in `mode` that withdraws them (a
    /// refusal, no summary document any more, an INS naming several patients).
    fn forget_on_refusal(&self, ins: &Ins, e: &UpstreamError, mode: AccessMode) {
        let Some(cache) = self.cache.as_ref().filter(|_| e.withdraws_copy()) else {
            return;
        };
        // Under the write lock, with the generation moved on: a fetch that asked before
        // this answer was heard cannot put its copy back afterwards (`fetch_once`), not
        // even when a copy composed for another mode stands (below): it would replace
        // that copy with one of this mode, which the answer withdraws.
        let mut generation = self
            .cache_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *generation += 1;
        // "No summary document" answers for one mode (a document the patient masked from
        // it is not listed): a copy composed for another mode stands.
        if matches!(e, UpstreamError::NoSummaryDocument)
            && let Ok(Some(hit)) = cache.get(ins)
            && hit
                .entry
                .composed_for
                .as_ref()
                .is_some_and(|c| c.mode != mode)
        {
            return;
        }
        match cache.remove_patient(ins) {
            Ok(0) => {}
            Ok(others) => {
                tracing::info!(
                    others,
                    "a refused patient's copies under other identifiers dropped"
                );
            }
            // The cache serves nothing more in this run (`SealedSummaries::remove`).
            Err(err) => {
                tracing::warn!(error = %err, "cannot drop a refused patient's cached summary: cache disabled");
            }
        }
    }

    /// Cache (for a cleared professional and mode) or record service, single-flight.
    async fn fetch(
        &self,
        ins: &Ins,
        professional: &Professional,
        card: upstream::CardSession<'_>,
        mode: AccessMode,
    ) -> Result<Fetched, UpstreamError> {
        let hit = self.cached(ins, professional, mode);
        if let Some(hit) = hit.as_ref().filter(|h| h.fresh) {
            return Ok(Fetched {
                entry: hit.entry.clone(),
                source: Source::Cache,
                age: hit.age,
                stale_because: None,
            });
        }
        match self.fetch_upstream(ins, professional, card, mode).await {
            Ok(entry) => Ok(Fetched {
                entry,
                source: Source::Upstream,
                age: Duration::ZERO,
                stale_because: None,
            }),
            Err(e) if e.withdraws_copy() => {
                self.forget_on_refusal(ins, &e, mode);
                Err(e)
            }
            Err(e) if StaleBecause::of(&e).is_some() => {
                // Looked up again, not the copy seen before asking: a refusal answered to
                // another request meanwhile (an opposition, a closure) removed it, and
                // it must not be served.
                let hit = self.cached(ins, professional, mode);
                // For centre IT: these texts carry no health data (UpstreamError's rule).
                tracing::warn!(error = %e, stale_copy = hit.is_some(), "record service failed");
                match hit {
                    Some(stale) => Ok(Fetched {
                        entry: stale.entry,
                        source: Source::StaleCache,
                        age: stale.age,
                        stale_because: StaleBecause::of(&e),
                    }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_upstream(
        &self,
        ins: &Ins,
        professional: &Professional,
        card: upstream::CardSession<'_>,
        mode: AccessMode,
    ) -> Result<Entry, UpstreamError> {
        let key = (ins.clone(), professional.id_nat.clone(), mode, card.held);
        let cell = match self.inflight.lock() {
            Ok(mut inflight) => inflight.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::new(OnceCell::new()),
        };
        let result = cell
            .get_or_init(|| self.fetch_once(ins, professional, card, mode))
            .await
            .clone();
        if let Ok(mut inflight) = self.inflight.lock()
            && inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            inflight.remove(&key);
        }
        result
    }

    async fn fetch_once(
        &self,
        ins: &Ins,
        professional: &Professional,
        card: upstream::CardSession<'_>,
        mode: AccessMode,
    ) -> Result<Entry, UpstreamError> {
        let access = upstream::Access {
            mode,
            professional,
            patient: Some(ins),
            card: Some(card),
        };
        let asked_at = self.cache_generation();
        // The read's record names every exchange, the patient's resolution first.
        let (patient, summary) = self.upstream.patient_summary(ins, &access).await?;
        let mut entry = Entry::new(patient.id, summary, composed_for(professional, mode));
        if let Some(cache) = &self.cache {
            // Read, merged and written under the lock a refusal takes to remove a copy:
            // a refusal heard while this answer was on its way (an opposition, a closure)
            // may postdate it, so the answer is served to its requester but not kept.
            // Refusals are rare; one for another patient costs only a later cache miss.
            let generation = self
                .cache_writes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *generation != asked_at {
                tracing::info!("a refusal was heard during the fetch: its answer is not cached");
                return Ok(entry);
            }
            // Others' clearances keep their own time: refreshing the copy is not
            // re-clearing them.
            if let Ok(Some(previous)) = cache.get(ins)
                && previous.entry.patient_id == entry.patient_id
            {
                entry.cleared = previous.entry.cleared;
            }
            entry.clear(&professional.id_nat, mode, cache.now_ms());
            if let Err(e) = cache.put(ins, &entry) {
                tracing::warn!(error = %e, "cannot cache a summary");
            }
        }
        Ok(entry)
    }
}

/// Whom the record service composes a summary for when `professional` asks in `mode`.
fn composed_for(professional: &Professional, mode: AccessMode) -> ComposedFor {
    ComposedFor {
        mode,
        profession: professional.title.clone(),
    }
}

/// The read of `fetched`: `read` completed with its source (and age, for copies).
fn read_event(read: Event, fetched: &Fetched) -> Event {
    // From the record service: how it was obtained (the DMP's transactions, assertion
    // ids and documents); from a copy: its age, and how the fetch it keeps was obtained
    // (`copy_of=`, comma-separated: the ids hold no comma or space), which matches the
    // copy to the fetch's own record.
    let provenance = &fetched.entry.provenance;
    let detail = if fetched.source == Source::Upstream {
        (!provenance.is_empty()).then(|| provenance.join(" "))
    } else {
        let mut detail = format!("age_seconds={}", fetched.age.as_secs());
        if let Some(why) = fetched.stale_because {
            detail.push_str(&format!(" stale_because={}", why.as_str()));
        }
        if !provenance.is_empty() {
            detail.push_str(&format!(" copy_of={}", provenance.join(",")));
        }
        Some(detail)
    };
    Event {
        source: Some(fetched.source.into()),
        detail,
        ..read
    }
}

fn failure_outcome(e: &UpstreamError) -> Outcome {
    let reason = e.answer().reason;
    if e.is_refusal() {
        Outcome::Refused { reason }
    } else {
        Outcome::Failed { reason }
    }
}

/// `value`, released only against the receipt of its durable record.
fn released<T>(value: T, _proof: Receipt) -> T {
    value
}

fn deliver(grant: GrantView, fetched: Fetched, _proof: Receipt) -> Delivered {
    Delivered {
        grant,
        stale: fetched.source == Source::StaleCache,
        stale_because: fetched.stale_because,
        source: fetched.source,
        age_seconds: fetched.age.as_secs(),
        // An unstructured document's PDF has its own route.
        summary: fetched.entry.summary.without_content(),
    }
}

/// Takes out the oldest grants of `who`'s session (never `keep_id`) until it holds `keep`
/// at most.
fn take_oldest(
    grants: &mut HashMap<String, Grant>,
    who: &Actorship<'_>,
    keep: usize,
    keep_id: Option<&str>,
) -> Vec<Grant> {
    let mut held: Vec<&Grant> = grants
        .values()
        .filter(|g| g.desk == who.desk.id && g.session == who.session)
        .collect();
    let Some(excess) = held.len().checked_sub(keep).filter(|n| *n > 0) else {
        return Vec::new();
    };
    held.retain(|g| Some(g.id.as_str()) != keep_id);
    held.sort_by_key(|g| g.ends());
    let ids: Vec<String> = held.iter().take(excess).map(|g| g.id.clone()).collect();
    ids.iter().filter_map(|id| grants.remove(id)).collect()
}

/// The record of a grant's end.
fn stop_event(grant: &Grant, reason: &str) -> Event {
    Event {
        actor: Some(grant.actor.clone()),
        patient: Some(patient_ref(&grant.ins)),
        call: Some(grant.call.clone()),
        access_mode: Some(grant.mode),
        grant: Some(grant.id.clone()),
        detail: Some(format!("ended: {reason}")),
        ..Event::new(EventKind::BreakGlassStopped, Outcome::Success)
    }
}

fn patient_ref(ins: &Ins) -> PatientRef {
    PatientRef {
        ins: ins.as_str().to_owned(),
        oid: ins.oid().to_owned(),
    }
}

/// Who a search's answer names, for its audit record: the candidates' INS, and for those
/// the record service holds without one, their ids there (`without_ins=a,b`), so that
/// every identity released is named somewhere a compliance officer can follow (the ids
/// are the service's, bounded and reduced to the characters a FHIR id may hold).
fn released_identities(candidates: &[Candidate]) -> (Vec<PatientRef>, Option<String>) {
    /// Ids named, at most (a search answers a handful).
    const NAMED: usize = 20;
    let named = candidates
        .iter()
        .filter_map(|c| c.ins.as_ref())
        .map(|ins| PatientRef {
            ins: ins.value.clone(),
            oid: ins.oid.clone(),
        })
        .collect();
    let without: Vec<&Candidate> = candidates.iter().filter(|c| c.ins.is_none()).collect();
    if without.is_empty() {
        return (named, None);
    }
    let mut ids: Vec<String> = without
        .iter()
        .take(NAMED)
        .map(|c| {
            // FHIR ids are [A-Za-z0-9.-]{1,64}; anything else from a peer is replaced, so
            // the detail keeps its shape (digits are kept: the record names patients).
            c.id.chars()
                .take(64)
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' {
                        ch
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .collect();
    if without.len() > NAMED {
        ids.push(format!("+{}", without.len() - NAMED));
    }
    (named, Some(format!("without_ins={}", ids.join(","))))
}

/// What a traits search looked for, for the audit record.
/// The `traits:` prefix is what the CSV export knows such a detail by, to leave it out
/// (`audit::export`).
fn traits_detail(traits: &Traits) -> String {
    format!(
        "traits: birth_name={} first_names={} birth_date={} sex={:?}{}",
        traits.birth_name.trim(),
        traits.first_names.trim(),
        traits.birth_date,
        traits.sex,
        traits
            .birthplace
            .as_deref()
            .map(|b| format!(" birthplace={b}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer about another patient is an identity conflict, never an outage a copy
    /// may stand in for: the physician is told to check the identity (before, a copy was
    /// served as "unreadable", and the warning never shown). A request never sent is no
    /// outage either.
    #[test]
    fn an_answer_about_another_patient_is_never_covered_by_a_copy() {
        assert_eq!(
            StaleBecause::of(&UpstreamError::WrongPatient("x".into())),
            None
        );
        assert_eq!(StaleBecause::of(&UpstreamError::NotSent("x".into())), None);
        assert_eq!(
            StaleBecause::of(&UpstreamError::Malformed("x".into())),
            Some(StaleBecause::Unreadable)
        );
    }

    /// A record service whose summary answers only once released: the answer of a fetch
    /// still on its way while the test does something else.
    struct Held {
        asked: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl RecordService for Held {
        fn find_by_ins<'a>(
            &'a self,
            _: &'a Ins,
            _: &'a upstream::Access<'a>,
        ) -> upstream::BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
            Box::pin(async { Err(UpstreamError::NoRecord) })
        }

        fn search<'a>(
            &'a self,
            _: &'a crate::patient::Traits,
            _: &'a upstream::Access<'a>,
        ) -> upstream::BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
            Box::pin(async { Err(UpstreamError::NoRecord) })
        }

        fn summary<'a>(
            &'a self,
            _: &'a str,
            _: &'a upstream::Access<'a>,
        ) -> upstream::BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
            Box::pin(async { Err(UpstreamError::NoRecord) })
        }

        fn patient_summary<'a>(
            &'a self,
            _: &'a Ins,
            _: &'a upstream::Access<'a>,
        ) -> upstream::BoxFuture<'a, Result<(Candidate, CriticalSummary), UpstreamError>> {
            Box::pin(async {
                self.asked.notify_one();
                self.release.notified().await;
                let patient = Candidate {
                    id: "p-1".into(),
                    names: Vec::new(),
                    birth_date: None,
                    gender: None,
                    birthplace: None,
                    has_ins: true,
                    ins: None,
                    match_percent: None,
                    provenance: Vec::new(),
                };
                Ok((patient, penicillin()))
            })
        }
    }

    fn held() -> Arc<Held> {
        Arc::new(Held {
            asked: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        })
    }

    /// Access over `upstream` with no cache and default limits.
    fn access_over(
        audit: Arc<AuditLog>,
        upstream: Arc<Held>,
        config: BreakGlassConfig,
    ) -> BreakGlass {
        BreakGlass::new(
            audit,
            upstream,
            None,
            Arc::new(Limits::new(&Default::default())),
            config,
            InsPolicy::default(),
        )
    }

    fn desk() -> DeskConfig {
        DeskConfig {
            id: "desk-a".into(),
            name: "Régulation 1".into(),
            reader: "R0".into(),
            workstation_cn: "poste-1".into(),
            workstation_sha256: None,
            pin_entry: Default::default(),
            pkcs11_token: None,
        }
    }

    /// `professional` at `desk`, in session `s`.
    fn actorship<'a>(desk: &'a DeskConfig, professional: &'a Professional) -> Actorship<'a> {
        Actorship {
            desk,
            professional,
            session: "s".into(),
            card_session: 1,
        }
    }

    fn ins() -> Ins {
        Ins::parse(
            "269054958815780",
            crate::patient::OID_NIR,
            InsPolicy::default(),
        )
        .unwrap()
    }

    fn call() -> CallContext {
        CallContext {
            call_id: "CRRA-1".into(),
            reason_code: Some("inconscient".into()),
            justification: None,
        }
    }

    /// The texts of the trail's records.
    fn trail(store: &crate::audit::store::AuditStore) -> Vec<String> {
        use crate::audit::store::ReadStore as _;
        let txn = store.snapshot().unwrap();
        let mut records = Vec::new();
        crate::audit::store::for_each_record(&txn, 1, |_, bytes| {
            records.push(String::from_utf8_lossy(bytes).into_owned());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        records
    }

    /// Two starts in one full session, each making room for its grant before either is
    /// kept (their reads recorded concurrently): the session still ends with no more than
    /// `open_grants_per_session`, the oldest ending as superseded.
    #[tokio::test]
    async fn concurrent_starts_keep_the_session_within_its_grants() {
        let dir = tempfile::tempdir().unwrap();
        let (store, audit) = AuditLog::for_tests(dir.path());
        let access = access_over(
            audit.clone(),
            held(),
            BreakGlassConfig {
                open_grants_per_session: 2,
                ..BreakGlassConfig::default()
            },
        );
        let desk = desk();
        let professional = Professional::for_tests();
        let who = actorship(&desk, &professional);
        let open = |id: &'static str| {
            access.open_grant(id.into(), &who, ins(), call(), AccessMode::BrisDeGlace)
        };
        open("g1").await.unwrap();
        open("g2").await.unwrap();
        let read = || Event::new(EventKind::PatientRecordRead, Outcome::Success);
        // Both make room before either grant is kept: only g1 goes here.
        let _first = access.record_release(&who, vec![read()]).await.unwrap();
        let _second = access.record_release(&who, vec![read()]).await.unwrap();
        open("g3").await.unwrap();
        open("g4").await.unwrap();
        let mut held: Vec<String> = access.grants.lock().unwrap().keys().cloned().collect();
        held.sort();
        assert_eq!(held, ["g3", "g4"]);
        audit.close().unwrap();
        let superseded = trail(&store)
            .iter()
            .filter(|r| r.contains("break_glass_stopped") && r.contains("ended: superseded"))
            .count();
        assert_eq!(superseded, 2, "g1 and g2 end on the trail");
    }

    /// An access that completes after `end_all` (the gateway stopping) keeps no grant and
    /// records its end at once; before, it stayed open on the trail until the next start.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_access_completing_after_the_stop_began_records_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (store, audit) = AuditLog::for_tests(dir.path());
        let access = access_over(audit.clone(), held(), BreakGlassConfig::default());
        let desk = desk();
        let professional = Professional::for_tests();
        let who = actorship(&desk, &professional);
        access
            .open_grant("g1".into(), &who, ins(), call(), AccessMode::BrisDeGlace)
            .await
            .unwrap();
        access.end_all("gateway_stopped").await;
        access
            .open_grant("g2".into(), &who, ins(), call(), AccessMode::BrisDeGlace)
            .await
            .unwrap();
        assert!(access.grants.lock().unwrap().is_empty());
        audit.close().unwrap();
        let ends = trail(&store)
            .iter()
            .filter(|r| r.contains("break_glass_stopped") && r.contains("ended: gateway_stopped"))
            .count();
        assert_eq!(ends, 2, "g1 ended by end_all, g2 at once");
    }

    /// A card pulled while the record service answered a re-read, a PDF or a listed
    /// document: the read is on record as failed with the grant's end, and nothing is
    /// released (before, the read was recorded as a success and the route refused after).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_under_a_grant_the_card_left_meanwhile_is_recorded_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, audit) = AuditLog::for_tests(dir.path());
        let upstream = held();
        let access = access_over(audit.clone(), upstream.clone(), BreakGlassConfig::default());
        let desk = desk();
        let professional = Professional::for_tests();
        let who = actorship(&desk, &professional);
        let open = |id: &'static str| {
            access.open_grant(id.into(), &who, ins(), call(), AccessMode::BrisDeGlace)
        };
        open("g1").await.unwrap();
        open("g2").await.unwrap();
        let (gone, here) = (|| false, || true);
        upstream.release.notify_one();
        assert!(matches!(
            access.reread(&who, "g1", &gone).await,
            Err(AccessError::SessionEnded)
        ));
        upstream.release.notify_one();
        assert!(matches!(
            access.document(&who, "g2", &gone).await,
            Err(AccessError::SessionEnded)
        ));
        assert!(access.grants.lock().unwrap().is_empty());
        // With the session open, a re-read releases as before.
        open("g3").await.unwrap();
        upstream.release.notify_one();
        assert!(access.reread(&who, "g3", &here).await.is_ok());
        audit.close().unwrap();
        let trail = trail(&store);
        let unreleased = trail
            .iter()
            .filter(|r| {
                r.contains("patient_record_read")
                    && r.contains("\"failed\"")
                    && r.contains("session_ended_before_release")
            })
            .count();
        assert_eq!(unreleased, 2, "{trail:#?}");
        let ended = trail
            .iter()
            .filter(|r| r.contains("ended: session_ended_before_release"))
            .count();
        assert_eq!(ended, 2, "{trail:#?}");
        let released = trail
            .iter()
            .filter(|r| r.contains("patient_record_read") && r.contains("\"success\""))
            .count();
        assert_eq!(released, 1, "{trail:#?}");
    }

    /// A search's answer names every identity it releases: by INS, or by the record
    /// service's id for a patient it holds without one (before, such a candidate's names
    /// and birth date went to the desk with nothing on the record saying who it was).
    #[test]
    fn every_identity_a_search_releases_is_named() {
        let candidate = |id: &str, ins: Option<&str>| Candidate {
            id: id.into(),
            names: vec!["X".into()],
            birth_date: None,
            gender: None,
            birthplace: None,
            has_ins: ins.is_some(),
            ins: ins.map(|value| crate::patient::CandidateIns {
                value: value.into(),
                oid: crate::patient::OID_NIR.into(),
            }),
            match_percent: None,
            provenance: Vec::new(),
        };
        let (named, without) = released_identities(&[
            candidate("p1", Some("269054958815780")),
            candidate("p2", None),
            candidate("p 3\n", None),
        ]);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].ins, "269054958815780");
        assert_eq!(without.as_deref(), Some("without_ins=p2,p-3-"));
        let many: Vec<Candidate> = (0..25).map(|i| candidate(&format!("q{i}"), None)).collect();
        let (_, without) = released_identities(&many);
        let without = without.unwrap();
        assert!(without.ends_with(",q19,+5"), "{without}");
        assert_eq!(released_identities(&[candidate("p1", Some("1"))]).1, None);
    }

    fn penicillin() -> CriticalSummary {
        let bundle = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/ips/penicillin-allergy-high-criticality.json"),
        )
        .unwrap();
        crate::summary::extract(&bundle).unwrap()
    }

    /// A refusal (an opposition, a closure) heard while another request's fetch of the
    /// same patient is on its way: that fetch's answer, which may predate the refusal,
    /// is served to its requester but never put back in the cache the refusal emptied.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_refusal_heard_during_a_fetch_keeps_its_answer_out_of_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (_, audit) = AuditLog::for_tests(dir.path());
        let key = dir.path().join("cache.key");
        crate::cache::sealed::MasterKey::generate(&key).unwrap();
        let master = crate::cache::sealed::MasterKey::load(&key).unwrap();
        let db = crate::cache::SummaryCache::open(&dir.path().join("cache")).unwrap();
        let cache = Arc::new(
            db.sealed(&master, crate::cache::CacheConfig::default().lifetimes())
                .unwrap(),
        );
        let upstream = held();
        let access = Arc::new(BreakGlass::new(
            audit,
            upstream.clone(),
            Some(cache.clone()),
            Arc::new(Limits::new(&Default::default())),
            BreakGlassConfig::default(),
            InsPolicy::default(),
        ));
        let ins = Ins::parse(
            "269054958815780",
            crate::patient::OID_NIR,
            InsPolicy::default(),
        )
        .unwrap();
        let professional = Professional::for_tests();
        let card = |held| upstream::CardSession { reader: "R0", held };

        // Unhindered, a fetch's answer is cached.
        let fetch = |mode| {
            let (access, ins, professional) = (access.clone(), ins.clone(), professional.clone());
            tokio::spawn(async move {
                access
                    .fetch_once(&ins, &professional, card(1), mode)
                    .await
                    .map(|entry| entry.patient_id)
            })
        };
        let first = fetch(AccessMode::Centre15);
        upstream.asked.notified().await;
        upstream.release.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), "p-1");
        assert!(cache.get(&ins).unwrap().is_some());

        // A refusal lands while a second fetch waits for its answer.
        let second = fetch(AccessMode::BrisDeGlace);
        upstream.asked.notified().await;
        access.forget_on_refusal(
            &ins,
            &UpstreamError::PatientOpposed(AccessMode::Centre15),
            AccessMode::Centre15,
        );
        assert!(cache.get(&ins).unwrap().is_none());
        upstream.release.notify_one();
        assert_eq!(
            second.await.unwrap().unwrap(),
            "p-1",
            "served to its requester"
        );
        assert!(
            cache.get(&ins).unwrap().is_none(),
            "the copy the refusal removed came back"
        );

        // Later fetches cache again.
        let third = fetch(AccessMode::BrisDeGlace);
        upstream.asked.notified().await;
        upstream.release.notify_one();
        assert_eq!(third.await.unwrap().unwrap(), "p-1");
        assert!(cache.get(&ins).unwrap().is_some());

        // An outage keeps the copy (it is what a stale copy is for); the record service
        // saying it holds no summary now (a document withdrawn), or that the INS names
        // several patients, withdraws it as a refusal does.
        let (centre_15, bris_de_glace) = (AccessMode::Centre15, AccessMode::BrisDeGlace);
        access.forget_on_refusal(
            &ins,
            &UpstreamError::Unavailable("down".into()),
            bris_de_glace,
        );
        assert!(cache.get(&ins).unwrap().is_some());
        // "No summary document" is one mode's answer (a document masked from regulation is
        // not listed there): it leaves the break-glass copy alone.
        access.forget_on_refusal(&ins, &UpstreamError::NoSummaryDocument, centre_15);
        assert!(cache.get(&ins).unwrap().is_some());
        access.forget_on_refusal(&ins, &UpstreamError::NoSummaryDocument, bris_de_glace);
        assert!(cache.get(&ins).unwrap().is_none());
        assert!(UpstreamError::Ambiguous(2).withdraws_copy());
        // A refusal the gateway cannot name (DMPAccessDenied) withdraws it too.
        assert!(UpstreamError::AssertionRefused("DMPAccessDenied".into()).withdraws_copy());

        // "No summary document" for regulation heard while a regulation fetch waits: the
        // break-glass copy stands, and the fetch does not replace it with a regulation
        // copy the answer withdraws (before, the generation moved only when a copy went).
        let break_glass = fetch(AccessMode::BrisDeGlace);
        upstream.asked.notified().await;
        upstream.release.notify_one();
        break_glass.await.unwrap().unwrap();
        let regulation = fetch(AccessMode::Centre15);
        upstream.asked.notified().await;
        access.forget_on_refusal(&ins, &UpstreamError::NoSummaryDocument, centre_15);
        upstream.release.notify_one();
        regulation.await.unwrap().unwrap();
        let kept = cache
            .get(&ins)
            .unwrap()
            .expect("the break-glass copy stands");
        assert_eq!(
            kept.entry.composed_for.as_ref().map(|c| c.mode),
            Some(AccessMode::BrisDeGlace)
        );
    }

    #[test]
    fn the_answer_splices_a_sealed_summary_in_and_reads_as_serde_writes_it() {
        let bundle = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/ips/penicillin-allergy-high-criticality.json"),
        )
        .unwrap();
        let parsed = crate::summary::extract(&bundle).unwrap();
        let sealed_json = serde_json::to_string(&parsed).unwrap();
        for summary in [
            CachedSummary::Parsed(Box::new(parsed.clone())),
            CachedSummary::Sealed {
                json: sealed_json.clone().into(),
                has_content: false,
            },
        ] {
            let delivered = Delivered {
                grant: GrantView {
                    id: "g-1".into(),
                    expires_at: "2026-12-05T18:00:00Z".into(),
                    seconds_left: 1800,
                    access_mode: AccessMode::BrisDeGlace,
                    call_id: "C-1".into(),
                },
                source: Source::Cache,
                stale: true,
                stale_because: Some(StaleBecause::Unreadable),
                age_seconds: 12,
                summary,
            };
            let answer = delivered.to_json().unwrap();
            // Byte for byte what serde writes for the struct (a sealed summary through
            // `RawValue`, checked): the splice changes nothing a client sees.
            assert_eq!(answer, serde_json::to_vec(&delivered).unwrap());
            let value: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(value["summary"], serde_json::to_value(&parsed).unwrap());
            assert_eq!(value["grant"]["call_id"], "C-1");
            assert_eq!(value["stale"], true);
            assert_eq!(value["stale_because"], "unreadable");
            assert_eq!(value["age_seconds"], 12);
        }
    }
}
