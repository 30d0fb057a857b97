//! The record service: the only code that talks to it.
//!
//! [`RecordService`] is what callers use: find a patient by INS, search by identity traits,
//! fetch the critical summary. [`client::FhirClient`] implements it over FHIR R4 with
//! mutual TLS and an access assertion ([`assertion`]) on every call; the production
//! SOAP/XDS.b + SAML VIHF transport would be another implementation of the same trait.
//! [`outcome`] fixes how HTTP statuses and OperationOutcomes map to typed outcomes, for
//! the client and for the development upstream alike.

pub mod assertion;
pub mod client;
pub mod dmp;
pub mod failures;
pub mod outcome;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::card::trust::Professional;
use crate::patient::{Candidate, Ins, Traits};
use crate::secret::SecretPath;
use crate::summary::CriticalSummary;

/// A boxed future, so that [`RecordService`] can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use crate::access_mode::AccessMode;

/// Who asks, why, about whom: what the access assertion carries.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    /// Purpose of use.
    pub mode: AccessMode,
    /// The logged-in professional (from their card certificate).
    pub professional: &'a Professional,
    /// The patient, when the call is about one identified by INS.
    pub patient: Option<&'a Ins>,
    /// The professional's card session, which signs for them (the DMP's VIHF and TLS in
    /// `DIRECTE` mode).
    pub card: Option<CardSession<'a>>,
}

/// The card session an access signs with: the one its requester logged in with, never a
/// later login's at the same reader (a card swapped at the desk mid-access must not sign
/// another professional's access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardSession<'a> {
    /// The reader holding the professional's card.
    pub reader: &'a str,
    /// The login's held card session (`card::worker::HeldSession::id`).
    pub held: u64,
}

/// What the record service answered, when it is not the data asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The patient opposed access in this mode.
    #[error("the patient opposed access in mode {}", .0.code())]
    PatientOpposed(AccessMode),
    /// The patient blocked this professional.
    #[error("the patient blocked this professional")]
    ProfessionalBlocked,
    /// No record (or no patient) for this identifier.
    #[error("no record for this patient")]
    NoRecord,
    /// The record is closed.
    #[error("the record is closed")]
    RecordClosed,
    /// The record holds no document a summary can come from.
    #[error("the record holds no summary document")]
    NoSummaryDocument,
    /// The document asked for is not (or no longer) listed in the patient's record for
    /// this access.
    #[error("the document asked for is not in the patient's record")]
    DocumentNotListed,
    /// Several patients carry this INS: the service is inconsistent, nothing is picked.
    #[error("the record service returned {0} patients for one INS")]
    Ambiguous(usize),
    /// The service refused the access assertion.
    #[error("the record service refused the access assertion ({0})")]
    AssertionRefused(String),
    /// Unreachable, or answered with a server error.
    #[error("record service unavailable: {0}")]
    Unavailable(String),
    /// No complete answer within the deadline.
    #[error("record service did not answer within {0} ms")]
    TimedOut(u64),
    /// An answer that is not what the protocol promises (wrong type, truncated, oversize,
    /// unreadable document).
    #[error("record service answer unusable: {0}")]
    Malformed(String),
    /// The gateway could not make its request: the card did not sign it (its session
    /// ended, it did not answer, its signature certificate is refused) or it could not be
    /// written. The record service was not asked, so this says nothing of the patient's
    /// record: no copy is withdrawn, and it is not the service's failure.
    #[error("the request was not sent: {0}")]
    NotSent(String),
    /// A search by identity traits answered with only part of its candidates (a first
    /// page, or more than the gateway reads): none is shown, since the one left out may be
    /// the patient; the physician is asked to narrow the search.
    #[error("the record service's search answer is partial: {0}")]
    TooManyCandidates(String),
    /// An answer about another patient than the one asked for, or about several: a
    /// document naming another INS or several patients, a test of existence about
    /// someone else. Nothing of it is shown.
    #[error("record service answered about another patient: {0}")]
    WrongPatient(String),
}

/// How one outcome of the record service is answered (see [`UpstreamError::answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status of the desk API's refusal.
    pub status: u16,
    /// The desk API's error code.
    pub code: &'static str,
    /// The reason the audit record carries.
    pub reason: String,
    /// The physician's message, in French.
    pub message_fr: &'static str,
}

impl UpstreamError {
    /// How this outcome is answered, everywhere: one row per outcome (the desk API's code
    /// and HTTP status, the audit record's reason, the physician's message).
    pub fn answer(&self) -> Answer {
        let row = |status, code, reason: String, message_fr| Answer {
            status,
            code,
            reason,
            message_fr,
        };
        match self {
            Self::PatientOpposed(AccessMode::Centre15) => row(
                403,
                "patient_opposed_centre_15",
                "patient_opposed:centre_15".into(),
                "Le patient s'est opposé à l'accès du centre 15 à son dossier.",
            ),
            Self::PatientOpposed(AccessMode::BrisDeGlace) => row(
                403,
                "patient_opposed_bris_de_glace",
                "patient_opposed:bris_de_glace".into(),
                "Le patient s'est opposé à l'accès en bris de glace à son dossier.",
            ),
            Self::ProfessionalBlocked => row(
                403,
                "professional_blocked",
                "professional_blocked".into(),
                "Le patient vous a bloqué l'accès à son dossier.",
            ),
            Self::NoRecord => row(
                404,
                "no_record",
                "no_record".into(),
                "Aucun dossier médical partagé pour ce patient.",
            ),
            Self::RecordClosed => row(
                410,
                "record_closed",
                "record_closed".into(),
                "Le dossier médical partagé de ce patient est fermé.",
            ),
            Self::NoSummaryDocument => row(
                404,
                "no_summary_document",
                "no_summary_document".into(),
                "Le dossier médical partagé ne contient aucune synthèse ni historique de remboursements.",
            ),
            Self::DocumentNotListed => row(
                404,
                "document_not_listed",
                "document_not_listed".into(),
                "Ce document n'est pas (ou plus) accessible dans le dossier du patient.",
            ),
            Self::Ambiguous(n) => row(
                409,
                "ambiguous_ins",
                format!("ambiguous_ins:{n}"),
                "Identification ambiguë : plusieurs patients portent cet INS. Aucun dossier n'est affiché.",
            ),
            Self::AssertionRefused(_) => row(
                502,
                "upstream_refused_gateway",
                "assertion_refused".into(),
                "Le service du dossier a refusé l'accès de la passerelle. Contactez l'informatique du centre.",
            ),
            Self::NotSent(_) => row(
                503,
                "request_not_sent",
                "request_not_sent".into(),
                "La demande n'a pas pu être signée par la carte (carte retirée, muette ou refusée) : rien n'a été demandé au service du dossier. Vérifiez la carte et réessayez ; si cela se répète, prévenez l'informatique du centre.",
            ),
            Self::Unavailable(_) => row(
                503,
                "upstream_unavailable",
                "upstream_unavailable".into(),
                "Service du dossier médical indisponible. Réessayez dans un instant.",
            ),
            Self::TimedOut(_) => row(
                504,
                "upstream_timeout",
                "upstream_timeout".into(),
                "Service du dossier médical indisponible. Réessayez dans un instant.",
            ),
            Self::Malformed(_) => row(
                502,
                "upstream_malformed",
                "upstream_malformed".into(),
                "Le service du dossier a renvoyé une réponse illisible. Aucune donnée n'est affichée.",
            ),
            Self::TooManyCandidates(_) => row(
                422,
                "too_many_candidates",
                "too_many_candidates".into(),
                "Trop de patients correspondent à cette recherche pour les afficher tous : précisez-la (date et lieu de naissance, sexe, prénoms) ou recherchez par INS.",
            ),
            Self::WrongPatient(_) => row(
                502,
                "upstream_wrong_patient",
                "upstream_wrong_patient".into(),
                "Le service du dossier a renvoyé les données d'un autre patient, ou de plusieurs : rien n'en est affiché. Vérifiez l'identité du patient ; si cela se répète, prévenez l'informatique du centre.",
            ),
        }
    }

    /// The message for the physician's screen, in French.
    pub fn message_fr(&self) -> &'static str {
        self.answer().message_fr
    }

    /// Whether the answer says something about the patient's will or record (never served
    /// from a cache afterwards), as opposed to a failure to get an answer.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::PatientOpposed(_)
                | Self::ProfessionalBlocked
                | Self::NoRecord
                | Self::RecordClosed
        )
    }

    /// Whether the answer withdraws what a cached copy of the patient's summary shows: a
    /// refusal, named or not, or the record service saying it holds no summary document
    /// now (one filed in the wrong record, withdrawn) or that the INS no longer names one
    /// patient. Served
    /// later as "stale", the copy would show what the service no longer stands by.
    pub fn withdraws_copy(&self) -> bool {
        self.is_refusal()
            // A refusal of this access the gateway cannot name (`DMPAccessDenied`, a code
            // it does not know, a front end's 403): it may be a restriction on the
            // patient's record, so the copy is not served afterwards either.
            || matches!(
                self,
                Self::NoSummaryDocument | Self::Ambiguous(_) | Self::AssertionRefused(_)
            )
    }
}

/// The record service as callers see it.
pub trait RecordService: Send + Sync {
    /// Patients carrying `ins` (normally one).
    fn find_by_ins<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>>;

    /// Patients matching identity traits, for the physician to choose from.
    fn search<'a>(
        &'a self,
        traits: &'a Traits,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>>;

    /// The critical summary of patient `id` (the service's id).
    fn summary<'a>(
        &'a self,
        id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>>;

    /// The one patient carrying `ins` and their critical summary: the patient resolved
    /// first, then the summary, unless the service knows better (the DMP asks both at
    /// once, under one deadline). The summary's provenance starts with the resolution's.
    fn patient_summary<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<(Candidate, CriticalSummary), UpstreamError>> {
        Box::pin(resolve_then_summary(self, ins, access))
    }

    /// One document of the access's patient's record, by the unique id the summary
    /// listed it under, read the way a summary is (its sections, or its PDF or text);
    /// `documents` holds its listing. A service that lists no documents has none.
    fn document<'a>(
        &'a self,
        unique_id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        let _ = (unique_id, access);
        Box::pin(async { Err(UpstreamError::DocumentNotListed) })
    }
}

/// `summary::extract` off the async workers: its CPU grows with the document (up to the
/// answer's size bound), and on a worker it would stall every other request there and
/// keep the access's deadline from answering the physician.
pub(crate) async fn extract_off_runtime(
    bytes: Vec<u8>,
) -> Result<crate::summary::CriticalSummary, UpstreamError> {
    off_runtime("reading the document stopped", move |_| {
        crate::summary::extract(&bytes).map_err(|e| match e {
            crate::summary::SummaryError::ConflictingPatients(_)
            | crate::summary::SummaryError::SeveralRecordTargets(_) => {
                UpstreamError::WrongPatient(e.to_string())
            }
            other => UpstreamError::Malformed(other.to_string()),
        })
    })
    .await
}

/// Set once nobody waits for a piece of blocking work any more (its future was dropped:
/// the access's deadline passed, the request ended).
#[derive(Clone, Default)]
pub(crate) struct Abandoned(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Abandoned {
    /// An error once nobody waits: work not begun yet is skipped, so that an answer
    /// nobody will read is not parsed (on two cores, physicians retrying against slow or
    /// large answers would otherwise pile up parses of answers already given up on).
    pub(crate) fn check(&self) -> Result<(), UpstreamError> {
        if self.0.load(std::sync::atomic::Ordering::Acquire) {
            return Err(UpstreamError::Unavailable(
                "nobody waits for this answer any more".into(),
            ));
        }
        Ok(())
    }
}

/// Runs `work` on tokio's blocking threads, giving it what says whether anyone still
/// waits (checked before it starts, and by `work` after any wait of its own); `stopped`
/// is the error when the work panicked.
pub(crate) async fn off_runtime<T: Send + 'static>(
    stopped: &str,
    work: impl FnOnce(&Abandoned) -> Result<T, UpstreamError> + Send + 'static,
) -> Result<T, UpstreamError> {
    struct SetOnDrop(Abandoned);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            (self.0).0.store(true, std::sync::atomic::Ordering::Release);
        }
    }
    let abandoned = Abandoned::default();
    let _waiting = SetOnDrop(abandoned.clone());
    tokio::task::spawn_blocking(move || {
        abandoned.check()?;
        work(&abandoned)
    })
    .await
    .map_err(|_| UpstreamError::Unavailable(stopped.into()))?
}

/// A document whose Patient carries INS identifiers, none of them the one asked for, is
/// about someone else: refused rather than shown.
pub(crate) fn check_same_patient(
    found: &CriticalSummary,
    ins: Option<&Ins>,
) -> Result<(), UpstreamError> {
    let (Some(ins), Some(patient)) = (ins, &found.patient_in_document) else {
        return Ok(());
    };
    let wanted = format!("{}|{}", ins.oid(), ins.as_str());
    if patient.ins.is_empty() || patient.ins.contains(&wanted) {
        Ok(())
    } else {
        Err(UpstreamError::WrongPatient(
            "the document is about another patient (INS differs)".into(),
        ))
    }
}

/// What went wrong sending a request, with its causes (a TLS alert, a refused
/// connection): the URL left out.
pub(crate) fn send_failure(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The body, at most `limit` bytes; a longer or broken body is an error.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::Malformed(format!(
            "answer larger than {limit} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        UpstreamError::Malformed(format!("answer truncated or broken: {}", e.without_url()))
    })? {
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::Malformed(format!(
                "answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The HTTPS client both record-service clients use: `tls` (mutual), HTTPS only, no
/// redirect, no proxy, pooled; a problem is reported under `section`.
pub(crate) fn http_client(
    tls: rustls::ClientConfig,
    connect_timeout_ms: u64,
    section: &str,
) -> Result<reqwest::Client, Vec<crate::problem::ConfigProblem>> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .connect_timeout(std::time::Duration::from_millis(connect_timeout_ms))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(16)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("samu-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            vec![crate::problem::ConfigProblem::new(
                section,
                format!("cannot build the client: {e}"),
            )]
        })
}

/// The patient carrying `ins`, then their summary, one after the other
/// ([`RecordService::patient_summary`]'s way unless a service knows better).
pub async fn resolve_then_summary<S: RecordService + ?Sized>(
    service: &S,
    ins: &Ins,
    access: &Access<'_>,
) -> Result<(Candidate, CriticalSummary), UpstreamError> {
    let patient = only_one(service.find_by_ins(ins, access).await?)?;
    let mut summary = service.summary(&patient.id, access).await?;
    let mut provenance = patient.provenance.clone();
    provenance.append(&mut summary.provenance);
    summary.provenance = provenance;
    Ok((patient, summary))
}

/// The one patient carrying `ins`: never a pick among several.
pub async fn resolve(
    service: &dyn RecordService,
    ins: &Ins,
    access: &Access<'_>,
) -> Result<Candidate, UpstreamError> {
    only_one(service.find_by_ins(ins, access).await?)
}

/// The one patient found for an INS: none is "no record", several are never picked from.
pub(crate) fn only_one(mut found: Vec<Candidate>) -> Result<Candidate, UpstreamError> {
    match found.len() {
        0 => Err(UpstreamError::NoRecord),
        1 => Ok(found.remove(0)),
        n => Err(UpstreamError::Ambiguous(n)),
    }
}

/// `[upstream]`: the record service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `fhir` (this section's keys) or `dmp` (the `[dmp]` section's: the national
    /// record's SOAP/XDS.b; the FHIR keys below are then unused).
    #[serde(default)]
    pub protocol: Protocol,
    /// FHIR base URL, `https://…` (no trailing `/` needed). Required with `fhir`.
    #[serde(default)]
    pub base_url: String,
    /// PEM CA certificate(s) the record service's certificate must chain to.
    #[serde(default)]
    pub server_ca: PathBuf,
    /// CRLs (PEM or DER) the record service's certificate is checked against; they must include
    /// its issuer's. Reread when they change (looked at every five minutes at most).
    #[serde(default)]
    pub server_crls: Vec<PathBuf>,
    /// PEM certificate chain of the centre's structure certificate (client auth).
    #[serde(default)]
    pub client_cert: PathBuf,
    /// Its private key (file or `credential:NAME`).
    #[serde(default)]
    pub client_key: SecretPath,
    /// Ed25519 key signing the access assertions (file or `credential:NAME`).
    #[serde(default)]
    pub assertion_key: SecretPath,
    /// Connection deadline, milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for a whole operation, retries included, milliseconds.
    #[serde(default = "defaults::total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Retries of an idempotent read after a connection failure or a 502/503/504.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Largest answer accepted, bytes.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// `Secteur_Activite` of the centre (TRE_R02; `SA01`: public health establishment).
    #[serde(default = "defaults::activity_sector")]
    pub activity_sector: String,
    /// Accept the INS test and demo OIDs (development and demo only).
    #[serde(default)]
    pub accept_test_ins: bool,
}

/// How the gateway speaks to the record service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// FHIR R4 with a JWS access assertion (the dev upstream; an ANS FHIR mapping is in
    /// draft).
    #[default]
    Fhir,
    /// The DMP's SOAP/XDS.b with a signed VIHF (docs/dmp.md).
    Dmp,
}

mod defaults {
    pub(super) fn connect_timeout_ms() -> u64 {
        500
    }
    pub(super) fn total_timeout_ms() -> u64 {
        2000
    }
    pub(super) fn max_retries() -> u32 {
        2
    }
    pub(super) fn max_body_bytes() -> usize {
        crate::summary::MAX_BUNDLE_BYTES
    }
    pub(super) fn activity_sector() -> String {
        "SA01".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer about another patient (or several) is its own outcome: a 502 with its
    /// own code and French message, not "unreadable"; it withdraws no copy (the record
    /// service answered wrongly, not about this patient's record).
    #[test]
    fn an_answer_about_another_patient_says_so() {
        let e = UpstreamError::WrongPatient("the document is about another patient".into());
        let answer = e.answer();
        assert_eq!(
            (answer.status, answer.code),
            (502, "upstream_wrong_patient")
        );
        assert!(
            answer.message_fr.contains("autre patient"),
            "{}",
            answer.message_fr
        );
        assert!(!e.is_refusal() && !e.withdraws_copy());
    }

    /// A CDA's `recordTarget` ids are compared in the form an INS asked for takes: a root
    /// with a space or a `urn:oid:` prefix still names an INS (another patient's document
    /// is refused, not shown as "names no INS"), and the patient's own NIR written in
    /// groups or with a lowercase Corsican department is theirs.
    #[test]
    fn a_documents_ins_is_compared_as_the_ins_asked_for() {
        let cda = |root: &str, extension: &str| {
            let xml = format!(
                "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><code code=\"60591-5\"/>\
                 <recordTarget><patientRole><id root=\"{root}\" extension=\"{extension}\"/>\
                 <patient><name><family>X</family></name></patient></patientRole></recordTarget>\
                 <component><structuredBody/></component></ClinicalDocument>"
            );
            crate::summary::extract(xml.as_bytes()).unwrap()
        };
        let policy = crate::patient::InsPolicy::default();
        let asked = Ins::parse("269054958815780", crate::patient::OID_NIR, policy).unwrap();
        let other = "285057800600028";
        for root in [
            " 1.2.250.1.213.1.4.8",
            "urn:oid:1.2.250.1.213.1.4.8",
            "1.2.250.1.213.1.4.8\u{200B}",
        ] {
            let found = cda(root, other);
            assert!(
                matches!(
                    check_same_patient(&found, Some(&asked)),
                    Err(UpstreamError::WrongPatient(_))
                ),
                "another patient's document under root {root:?} passed"
            );
        }
        for own in ["2 69 05 49 588 157 80", " 269054958815780 "] {
            assert!(check_same_patient(&cda("1.2.250.1.213.1.4.8", own), Some(&asked)).is_ok());
        }
        let corsican = Ins::parse("1 80 01 2A 123 456 20", crate::patient::OID_NIR, policy);
        let found = cda("1.2.250.1.213.1.4.8", "180012a12345620");
        assert!(check_same_patient(&found, Some(&corsican.unwrap())).is_ok());
        // Another OID of the arc (an INS-C) is no INS: the document names none.
        let found = cda("1.2.250.1.213.1.4.2", other);
        assert!(found.patient_in_document.as_ref().unwrap().ins.is_empty());
    }

    /// Work whose waiter was dropped (the deadline passed) is told so when it looks;
    /// work that was waited for to the end never is.
    #[tokio::test(flavor = "multi_thread")]
    async fn blocking_work_nobody_waits_for_is_told_so() {
        for given_up in [true, false] {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let (seen, told) = std::sync::mpsc::channel();
            let work = off_runtime("stopped", move |abandoned| {
                wait.recv().ok();
                seen.send(abandoned.check().is_err()).ok();
                Ok(())
            });
            if given_up {
                let waited = tokio::time::timeout(std::time::Duration::from_millis(50), work);
                assert!(waited.await.is_err());
                go.send(()).unwrap();
            } else {
                go.send(()).unwrap();
                work.await.unwrap();
            }
            let abandoned = told
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            assert_eq!(abandoned, given_up);
        }
    }

    /// One row per outcome: the API code, the audit reason and the message come from the
    /// same place, so the desk's answer and the trail cannot drift apart.
    #[test]
    fn every_outcome_has_one_answer_row() {
        let all = [
            UpstreamError::PatientOpposed(AccessMode::Centre15),
            UpstreamError::PatientOpposed(AccessMode::BrisDeGlace),
            UpstreamError::ProfessionalBlocked,
            UpstreamError::NoRecord,
            UpstreamError::RecordClosed,
            UpstreamError::Ambiguous(2),
            UpstreamError::AssertionRefused("x".into()),
            UpstreamError::NotSent("x".into()),
            UpstreamError::Unavailable("x".into()),
            UpstreamError::TimedOut(1),
            UpstreamError::Malformed("x".into()),
        ];
        let mut codes = std::collections::HashSet::new();
        for e in &all {
            let answer = e.answer();
            assert!((400..600).contains(&answer.status), "{e}");
            assert!(codes.insert(answer.code), "{} twice", answer.code);
            assert_eq!(e.message_fr(), answer.message_fr);
            // Refusals by the patient are 403 and say which opposition.
            if let UpstreamError::PatientOpposed(mode) = e {
                assert_eq!(answer.status, 403);
                assert!(answer.reason.ends_with(mode.code()));
            }
        }
        assert_eq!(
            UpstreamError::Ambiguous(3).answer().reason,
            "ambiguous_ins:3"
        );
    }
}
