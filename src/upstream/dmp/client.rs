//! [`RecordService`] over the DMP's own protocol (docs/dmp.md): each operation signs a
//! fresh VIHF for the access (who, why, about whom), sends SOAP 1.2 over mutual TLS, and
//! maps the answer, fault or registry error onto the gateway's outcomes. The summary is
//! composed from the record's documents: the newest structured synthesis (IPS-FR, else
//! VSM, else DLU, else a discharge letter) for the sections, the newest reimbursement
//! history for the recent dispensations, both retrieved in one request, every other
//! document listed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::card_tls::CardTransport;
use super::hl7v3::{self, Transmission};
use super::soap::{self, Addressing};
use super::vihf::{self, VihfSettings, VihfSubject};
use super::xds::{self, DocumentEntry, RegistryError};
use super::{DmpConfig, DmpError, SoftwareSigner, mtom};
use crate::card::trust::CardTrust;
use crate::card::worker::CardKey;
use crate::patient::{Candidate, CandidateIns, INS_OIDS, Ins, Traits};
use crate::problem::ConfigProblem;
use crate::summary::{CriticalSummary, ListedDocument, Notice};
use crate::upstream::{Access, AccessMode, BoxFuture, CardSession, RecordService, UpstreamError};

/// The parts of a MIME answer besides its envelope, by Content-ID.
type Attachments = std::collections::HashMap<String, Vec<u8>>;

/// Who signs an access's assertion: the professional's card (`DIRECTE`), or the
/// structure's key (the indirect modes).
pub trait VihfSigner: Send + Sync {
    /// The signing certificate (DER) for `access`, and what the signer's own data (a CPS
    /// card's) says of the professional at structure `structure_id`.
    fn identity<'a>(
        &'a self,
        access: &'a Access<'a>,
        structure_id: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<u8>, CardData), DmpError>>;
    /// RSA PKCS#1 v1.5 with SHA-256 over `message`, with that certificate's key.
    fn sign<'a>(
        &'a self,
        access: &'a Access<'a>,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, DmpError>>;
}

/// What a card says of its holder, for the VIHF (docs/dmp.md); nothing for a
/// structure's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardData {
    /// The activity sector of the holder's situation at the centre's structure.
    pub sector: Option<String>,
    /// The holder's specialty.
    pub specialty: Option<String>,
}

impl VihfSigner for SoftwareSigner {
    fn identity<'a>(
        &'a self,
        _: &'a Access<'a>,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<u8>, CardData), DmpError>> {
        Box::pin(async move {
            Ok((
                SoftwareSigner::certificate(self).to_vec(),
                CardData::default(),
            ))
        })
    }

    fn sign<'a>(
        &'a self,
        _: &'a Access<'a>,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, DmpError>> {
        Box::pin(async move { SoftwareSigner::sign(self, message) })
    }
}

/// The professional's own card signs (`DIRECTE`): the signature key of the card logged
/// in at the access's desk, through the card session held since the login.
pub struct CardVihfSigner {
    /// The card worker, and the trust the signature certificates are checked against.
    bound: std::sync::OnceLock<(crate::card::worker::CardWorker, Arc<CardTrust>)>,
}

impl CardVihfSigner {
    /// Signing through `worker`'s card sessions, their certificates checked by `trust`.
    pub fn new(worker: crate::card::worker::CardWorker, trust: Arc<CardTrust>) -> Self {
        let signer = Self::unbound();
        signer.bind(worker, trust);
        signer
    }

    /// A signer whose card worker starts later (with the service).
    pub fn unbound() -> Self {
        Self {
            bound: std::sync::OnceLock::new(),
        }
    }

    /// Gives the signer its card worker and the card trust (once).
    pub fn bind(&self, worker: crate::card::worker::CardWorker, trust: Arc<CardTrust>) {
        let _ = self.bound.set((worker, trust));
    }

    pub(super) fn worker(&self) -> Result<&crate::card::worker::CardWorker, DmpError> {
        self.bound
            .get()
            .map(|(worker, _)| worker)
            .ok_or_else(|| DmpError::Signer("card login is not running".into()))
    }

    fn trust(&self) -> Result<&CardTrust, DmpError> {
        self.bound
            .get()
            .map(|(_, trust)| trust.as_ref())
            .ok_or_else(|| DmpError::Signer("card login is not running".into()))
    }
}

fn card_failure(e: crate::card::CardError) -> DmpError {
    DmpError::Signer(format!("the card cannot sign: {e}"))
}

impl VihfSigner for CardVihfSigner {
    /// The session's signature certificate, the sector of its situation at
    /// `structure_id` and its specialty, from one look at the card session.
    fn identity<'a>(
        &'a self,
        access: &'a Access<'a>,
        structure_id: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<u8>, CardData), DmpError>> {
        Box::pin(async move {
            let card = card_session(access)?;
            let session = self
                .worker()?
                .session(card.reader)
                .await
                .map_err(card_failure)?;
            if session.id != card.held {
                return Err(ended_card_session());
            }
            // What the assertion is signed with must be the requester's own, issued under
            // the card anchors: the card's word for it is not enough.
            self.trust()?
                .verify_signature(
                    &session.signature_certificate,
                    &access.professional.id_nat,
                    std::time::SystemTime::now(),
                )
                .map_err(|e| {
                    DmpError::Signer(format!("the card's signature certificate is refused: {e}"))
                })?;
            let shown = CardData {
                sector: session
                    .activities
                    .iter()
                    .find(|a| a.structure_id.as_deref() == Some(structure_id))
                    .and_then(|a| a.sector.clone()),
                specialty: session.specialty,
            };
            Ok((session.signature_certificate, shown))
        })
    }

    fn sign<'a>(
        &'a self,
        access: &'a Access<'a>,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, DmpError>> {
        Box::pin(async move {
            let card = card_session(access)?;
            self.worker()?
                .sign(
                    card.reader,
                    CardKey::Signature,
                    Some(card.held),
                    message.to_vec(),
                )
                .await
                .map_err(|e| match e {
                    crate::card::CardError::NoSession => ended_card_session(),
                    other => card_failure(other),
                })
        })
    }
}

fn card_session<'a>(access: &Access<'a>) -> Result<CardSession<'a>, DmpError> {
    access
        .card
        .ok_or_else(|| DmpError::Signer("no card session for this access".into()))
}

/// The requester's card session is no longer the one at the reader: it ended, or another
/// login replaced it. Nothing is signed with the newer one.
pub(super) fn ended_card_session() -> DmpError {
    DmpError::Signer("the card session this access was made for has ended".into())
}

/// Document types the syntheses come from, in order of preference.
const SYNTHESES: [&str; 4] = ["60591-5", "SYNTH", "74207-2", "11490-0"];
/// The reimbursement history.
const REIMBURSEMENTS: &str = "REMB";
/// Answers' size bound when the configuration does not say.
const MAX_PARTS: usize = 8;

/// How the client reaches the DMP over TLS.
enum Transport {
    /// The structure's certificate: one pooled client for every access.
    Structure(reqwest::Client),
    /// `DIRECTE`: each card session's own client, its certificate and handshake signature
    /// the card's.
    Card(Arc<CardVihfSigner>, CardTransport),
}

/// The DMP client.
pub struct DmpClient {
    transport: Transport,
    base: String,
    settings: VihfSettings,
    signer: Arc<dyn VihfSigner>,
    structure_id: String,
    types: Vec<String>,
    total: Duration,
    max_body: usize,
}

impl DmpClient {
    /// The client of `cfg`, signing assertions with `signer`; every problem together. TLS
    /// presents the structure's certificate (`dmp.structure_cert`, `dmp.structure_key`):
    /// the indirect modes.
    pub fn new(
        cfg: &DmpConfig,
        structure_id: &str,
        signer: Arc<dyn VihfSigner>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let (Some(cert), Some(key)) = (&cfg.structure_cert, &cfg.structure_key) else {
            return Err(vec![ConfigProblem::new(
                "dmp.structure_cert",
                "TLS with the structure's certificate: set structure_cert and structure_key",
            )]);
        };
        let files = crate::tls::MutualClient {
            section: "dmp",
            ca: ("server_ca", &cfg.server_ca),
            crls: ("server_crls", &cfg.server_crls),
            cert: ("structure_cert", cert),
            key: ("structure_key", key),
        };
        let tls = crate::tls::mutual_client_config(&files, &mut problems);
        let (Some(tls), true) = (tls, problems.is_empty()) else {
            return Err(problems);
        };
        let http = crate::upstream::http_client(tls, cfg.connect_timeout_ms, "dmp")?;
        Ok(Self::with_transport(
            cfg,
            structure_id,
            signer,
            Transport::Structure(http),
        ))
    }

    /// The `DIRECTE` client: the professional's card signs the assertions (signature key)
    /// and authenticates the TLS connection (authentication key), through the card
    /// session of the access's desk; a session's connections close when it ends.
    pub fn with_card(
        cfg: &DmpConfig,
        structure_id: &str,
        card: Arc<CardVihfSigner>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let cas = crate::tls::load_certs(&cfg.server_ca, "dmp.server_ca", &mut problems);
        let roots = crate::tls::root_store(cas, "dmp.server_ca", &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let trust = crate::tls::ServerTrust::new(roots, &cfg.server_crls, "dmp.server_crls")
            .map_err(|problem| vec![problem])?;
        let transport = Transport::Card(
            card.clone(),
            CardTransport::new(trust, cfg.connect_timeout_ms),
        );
        Ok(Self::with_transport(cfg, structure_id, card, transport))
    }

    fn with_transport(
        cfg: &DmpConfig,
        structure_id: &str,
        signer: Arc<dyn VihfSigner>,
        transport: Transport,
    ) -> Self {
        Self {
            transport,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            settings: cfg.vihf_settings(structure_id),
            signer,
            structure_id: structure_id.to_owned(),
            types: cfg.document_types.clone(),
            total: Duration::from_millis(cfg.total_timeout_ms),
            max_body: cfg.max_body_bytes,
        }
    }

    /// The HTTP client this access goes through.
    async fn http(&self, access: &Access<'_>) -> Result<reqwest::Client, DmpError> {
        match &self.transport {
            Transport::Structure(http) => Ok(http.clone()),
            Transport::Card(card, sessions) => {
                sessions
                    .client(card.worker()?, card.trust()?, card_session(access)?)
                    .await
            }
        }
    }

    /// A signed assertion for `access`, and its id.
    async fn assertion(&self, access: &Access<'_>) -> Result<(String, String), DmpError> {
        let (certificate, shown) = self.signer.identity(access, &self.structure_id).await?;
        // What the card shows of its holder (the sector of their situation at this
        // structure, their specialty) says it better than the configuration's defaults
        // (docs/dmp.md).
        let mut settings = self.settings.clone();
        if let Some(sector) = shown.sector {
            settings.activity_sector = sector;
        }
        if let Some(specialty) = shown.specialty {
            settings.specialty = Some(specialty);
        }
        let id = super::new_assertion_id()?;
        let unsigned = vihf::prepare(
            &settings,
            VihfSubject {
                professional: access.professional,
                mode: access.mode,
                patient: access.patient,
            },
            &certificate,
            &id,
            crate::clock::now().1,
        )?;
        let signature = self.signer.sign(access, unsigned.to_sign()).await?;
        let signed = unsigned
            .finish(&signature)
            .map_err(|e| DmpError::Vihf(e.to_string()))?;
        Ok((id, signed))
    }

    /// Sends one transaction and returns its answer: the SOAP envelope and, for MTOM,
    /// the other parts; `trail` gets the transaction and its assertion's id.
    async fn exchange<T: Send + 'static>(
        &self,
        access: &Access<'_>,
        service: &str,
        action: &str,
        body: impl FnOnce(&mut quick_xml::Writer<Vec<u8>>) -> std::io::Result<()>,
        trail: &mut Vec<String>,
        read: impl FnOnce(roxmltree::Node<'_, '_>, Attachments) -> Result<T, DmpError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        let (assertion_id, assertion) = self.assertion(access).await.map_err(internal)?;
        trail.push(format!("{service}:{assertion_id}"));
        let url = format!("{}/{service}", self.base);
        let message_id = format!("urn:uuid:{}", uuid_v4().map_err(internal)?);
        let envelope = soap::envelope(
            Addressing {
                action,
                to: &url,
                message_id: &message_id,
            },
            &assertion,
            body,
        )
        .map_err(internal)?;
        let http = self.http(access).await.map_err(internal)?;
        let response = http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("application/soap+xml; charset=UTF-8; action=\"{action}\""),
            )
            .body(envelope)
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(crate::upstream::send_failure(e)))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = crate::upstream::read_limited(response, self.max_body).await?;
        let is_xml = content_type.starts_with("application/soap+xml")
            || content_type.starts_with("text/xml")
            || content_type.starts_with("application/xml");
        let (xml, attachments) = if content_type.starts_with("multipart/related") {
            let (boundary, start) = mtom::boundary(&content_type).map_err(malformed)?;
            let parts = mtom::split(body, &boundary, start.as_deref(), MAX_PARTS)
                .await
                .map_err(malformed)?;
            (parts.envelope, parts.attachments)
        } else if is_xml {
            let text = String::from_utf8(body)
                .map_err(|_| UpstreamError::Malformed("the answer is not UTF-8".into()))?;
            (text, Default::default())
        } else {
            return Err(if status == 200 {
                UpstreamError::Malformed(format!(
                    "content type '{}' is not SOAP",
                    soap::token(&content_type)
                ))
            } else {
                without_fault(status)
            });
        };
        // Parsing and reading take CPU in proportion to the answer (up to max_body_bytes):
        // off the async workers, so that a large or hostile answer neither stalls the
        // other requests nor keeps the access's deadline from answering the physician.
        // Parsed once, for the fault and for `read`.
        crate::upstream::off_runtime("reading the answer stopped", move |abandoned| {
            // Held until the answer is read and its tree dropped.
            let _turn = crate::xml::turn(xml.len());
            // Waiting for the turn may outlast the access's deadline: then nobody would
            // read what a parse found.
            abandoned.check()?;
            read_answer(&xml, attachments, &message_id, status, read)
        })
        .await
    }

    fn transmission_ids() -> Result<(String, String, String), UpstreamError> {
        let created = crate::clock::now().0;
        let created: String = created
            .chars()
            .filter(char::is_ascii_digit)
            .take(14)
            .collect();
        Ok((
            uuid_v4().map_err(internal)?,
            uuid_v4().map_err(internal)?,
            created,
        ))
    }

    async fn within<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let deadline = Instant::now() + self.total;
        tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| UpstreamError::TimedOut(self.total.as_millis() as u64))?
    }

    async fn existence(
        &self,
        ins: &Ins,
        access: &Access<'_>,
    ) -> Result<Vec<Candidate>, UpstreamError> {
        let (message_id, query_id, created) = Self::transmission_ids()?;
        let body = hl7v3::existence_body(
            Transmission {
                message_id: &message_id,
                query_id: &query_id,
                created: &created,
                structure_id: &self.structure_id,
            },
            ins.oid(),
            ins.as_str(),
        );
        let mut trail = Vec::new();
        let existence = self
            .exchange(
                access,
                "patients",
                hl7v3::EXISTENCE_ACTION,
                body,
                &mut trail,
                |body, _| hl7v3::read_existence(body),
            )
            .await?;
        if !existence_outcome(&existence, ins, access.mode)? {
            return Ok(Vec::new());
        }
        Ok(vec![Candidate {
            id: format!("{}|{}", ins.oid(), ins.as_str()),
            names: Vec::new(),
            birth_date: None,
            gender: None,
            birthplace: None,
            has_ins: true,
            ins: Some(CandidateIns {
                value: ins.as_str().to_owned(),
                oid: ins.oid().to_owned(),
            }),
            match_percent: None,
            provenance: trail.into_iter().map(|t| format!("dmp={t}")).collect(),
        }])
    }

    async fn candidates(
        &self,
        traits: &Traits,
        access: &Access<'_>,
    ) -> Result<Vec<Candidate>, UpstreamError> {
        let (message_id, query_id, created) = Self::transmission_ids()?;
        let body = hl7v3::search_body(
            Transmission {
                message_id: &message_id,
                query_id: &query_id,
                created: &created,
                structure_id: &self.structure_id,
            },
            traits,
        );
        let found = self
            .exchange(
                access,
                "patientsPDQ",
                hl7v3::SEARCH_ACTION,
                body,
                &mut Vec::new(),
                |body, _| hl7v3::read_search(body, &INS_OIDS),
            )
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let (value, oid) = (c.ins.clone()?, c.oid.clone()?);
                Some(Candidate {
                    id: format!("{oid}|{value}"),
                    names: c.names.clone(),
                    birth_date: c.birth_date.clone(),
                    gender: c.gender.clone(),
                    birthplace: None,
                    has_ins: true,
                    ins: Some(CandidateIns { value, oid }),
                    match_percent: c.match_percent,
                    provenance: Vec::new(),
                })
            })
            .collect())
    }

    /// TD3.1: the patient's documents of the configured types; `trail` gets the
    /// transaction.
    async fn find(
        &self,
        ins: &Ins,
        access: &Access<'_>,
        trail: &mut Vec<String>,
    ) -> Result<xds::Found, UpstreamError> {
        let body = xds::find_documents_body(&ins.resource_id(), &self.types);
        let found = self
            .exchange(
                access,
                "registry",
                xds::FIND_ACTION,
                body,
                trail,
                |body, _| xds::read_found(body),
            )
            .await?;
        registry_outcome(found.status, &found.errors, found.documents.is_empty())?;
        Ok(found)
    }

    async fn compose(
        &self,
        ins: &Ins,
        access: &Access<'_>,
    ) -> Result<CriticalSummary, UpstreamError> {
        let mut trail = Vec::new();
        let found = self.find(ins, access, &mut trail).await?;
        self.compose_from(ins, access, found, trail).await
    }

    /// TD3.2 of `entries` in one request; `trail` gets the transaction.
    async fn retrieve(
        &self,
        access: &Access<'_>,
        entries: &[&DocumentEntry],
        trail: &mut Vec<String>,
    ) -> Result<xds::Retrieved, UpstreamError> {
        let requests: Vec<(String, String)> = entries
            .iter()
            .map(|d| (d.repository_unique_id.clone(), d.unique_id.clone()))
            .collect();
        // Checked where the answer is read (off the async workers: hashing takes time in
        // proportion to the documents).
        let listed: Vec<DocumentEntry> = entries.iter().map(|d| (*d).clone()).collect();
        let mut retrieved = self
            .exchange(
                access,
                "repository",
                xds::RETRIEVE_ACTION,
                xds::retrieve_body(&requests),
                trail,
                move |body, attachments| {
                    // Each part is taken, not copied: one part named by every document of
                    // the answer would otherwise be copied that many times. A second
                    // reference finds it gone.
                    let parts = std::cell::RefCell::new(attachments);
                    let retrieved = xds::read_retrieved(body, &|id| parts.borrow_mut().remove(id))?;
                    for document in &retrieved.documents {
                        if let Some(entry) = listed.iter().find(|e| {
                            e.unique_id == document.unique_id
                                && e.repository_unique_id == document.repository_unique_id
                        }) {
                            as_listed(document, entry)?;
                        }
                    }
                    Ok(retrieved)
                },
            )
            .await?;
        retrieval_outcome(
            retrieved.status,
            &retrieved.errors,
            retrieved.documents.is_empty(),
        )?;
        // Only what was asked for, from the repository it was asked of: anything else the
        // answer holds is not read, and not named in the access's record as retrieved.
        retrieved.documents.retain(|d| {
            requests
                .iter()
                .any(|(repository, id)| *repository == d.repository_unique_id && *id == d.unique_id)
        });
        Ok(retrieved)
    }

    /// TD0.2 and TD3.1 at once (neither needs the other's answer), then TD3.2: the
    /// patient and their summary in two round trips. Nothing is used before TD0.2 has
    /// said the record exists and is not opposed; its refusal comes first.
    async fn patient_and_summary(
        &self,
        ins: &Ins,
        access: &Access<'_>,
    ) -> Result<(Candidate, CriticalSummary), UpstreamError> {
        let mut trail = Vec::new();
        let (existence, found) = tokio::join!(
            self.existence(ins, access),
            self.find(ins, access, &mut trail)
        );
        let patient = super::super::only_one(existence?)?;
        let found = listing_after_existence(found)?;
        let mut summary = self.compose_from(ins, access, found, trail).await?;
        // The read's record names every exchange, the test of existence first.
        let mut provenance = patient.provenance.clone();
        provenance.append(&mut summary.provenance);
        summary.provenance = provenance;
        Ok((patient, summary))
    }

    /// TD3.2 of the documents the summary is made of, chosen among `found`; the summary.
    async fn compose_from(
        &self,
        ins: &Ins,
        access: &Access<'_>,
        found: xds::Found,
        mut trail: Vec<String>,
    ) -> Result<CriticalSummary, UpstreamError> {
        let synthesis = choose_synthesis(&found.documents);
        let history = newest(
            found
                .documents
                .iter()
                .filter(|d| type_of(d) == Some(REIMBURSEMENTS)),
        );
        let chosen: Vec<&DocumentEntry> = synthesis.into_iter().chain(history).collect();
        if chosen.is_empty() {
            // Part of the answer is missing, and it may be the synthesis: not a fact.
            if found.status == xds::Status::PartialSuccess {
                return Err(UpstreamError::Unavailable(
                    "the DMP answered PartialSuccess without a summary document".into(),
                ));
            }
            return Err(UpstreamError::NoSummaryDocument);
        }
        let mut retrieved = self.retrieve(access, &chosen, &mut trail).await?;
        // Moved to the reading (off the async workers), not copied.
        let mut take = |entry: Option<&DocumentEntry>| {
            let entry = entry?;
            // By id and repository: a hostile list giving two entries one id in two
            // repositories must not have one's bytes read as the other's.
            retrieved
                .documents
                .iter_mut()
                .find(|d| {
                    d.unique_id == entry.unique_id
                        && d.repository_unique_id == entry.repository_unique_id
                        && !d.bytes.is_empty()
                })
                .map(|d| std::mem::take(&mut d.bytes))
        };
        let (synthesis_bytes, history_bytes) = (take(synthesis), take(history));
        let read = |bytes: Vec<u8>, entry: Option<&DocumentEntry>| {
            let filed_elsewhere = entry.is_some_and(|e| filed_elsewhere(e, ins));
            async move {
                let summary = super::super::extract_off_runtime(bytes).await?;
                super::super::check_same_patient(&summary, Some(ins))?;
                tied_to_patient(summary.patient_in_document.as_ref(), filed_elsewhere)?;
                Ok::<_, UpstreamError>(summary)
            }
        };
        let mut used = Vec::new();
        let (mut summary, history_bytes) = match (synthesis_bytes, history_bytes) {
            (Some(bytes), history_bytes) => {
                used.push((synthesis.map(|d| d.unique_id.clone()), "summary"));
                (read(bytes, synthesis).await?, history_bytes)
            }
            // A synthesis the record lists but did not return is not replaced by the
            // reimbursement history: that would say "allergies not recorded" of a record
            // that holds them.
            (None, Some(_)) if synthesis.is_some() => {
                return Err(not_returned(
                    &retrieved.errors,
                    "the synthesis the record lists",
                ));
            }
            (None, Some(bytes)) => {
                used.push((history.map(|d| d.unique_id.clone()), "summary"));
                (read(bytes, history).await?, None)
            }
            (None, None) => {
                return Err(not_returned(
                    &retrieved.errors,
                    "none of the documents asked for",
                ));
            }
        };
        // A registry that answered in part may have left out a newer synthesis; a history
        // listed and not returned leaves the dispensations out: both said.
        if found.status == xds::Status::PartialSuccess {
            summary.warnings.push(
                "the DMP listed the record's documents in part (PartialSuccess): a newer document may be missing".into(),
            );
            summary.notices.push(Notice::ListingPartial);
        } else if found.errors.iter().any(|e| e.severity != "Warning") {
            // Success, with an error listed beside the documents: the answer contradicts
            // itself, and the list may be the incomplete one.
            summary.warnings.push(
                "the DMP listed the record's documents with an error: a newer document may be missing".into(),
            );
            summary.notices.push(Notice::ListingPartial);
        }
        if history.is_some() && history_bytes.is_none() && synthesis.is_some() {
            summary.warnings.push(
                "the reimbursement history the record lists was not returned: dispensations left out".into(),
            );
            summary.notices.push(Notice::DispensationsLeftOut);
        }
        if let Some(bytes) = history_bytes {
            let history_summary = read(bytes, history).await?;
            if summary.dispensations.is_none() {
                // The synthesis's INS does not vouch for another document: a history naming
                // none is the patient's by the record's filing alone, as a synthesis naming
                // none would be said to be.
                if history_summary
                    .patient_in_document
                    .as_ref()
                    .is_none_or(|p| p.ins.is_empty())
                {
                    summary.warnings.push(
                        "the reimbursement history names no INS: its dispensations are the patient's by the record's filing alone; check the patient's identity".into(),
                    );
                    summary
                        .notices
                        .push(Notice::DispensationsUnverifiedIdentity);
                }
                summary.dispensations = history_summary.dispensations;
                summary.warnings.extend(history_summary.warnings);
                used.push((history.map(|d| d.unique_id.clone()), "dispensations"));
            }
        }
        summary.documents = found
            .documents
            .iter()
            .map(|d| {
                let used_for = used
                    .iter()
                    .filter(|(id, _)| id.as_deref() == Some(d.unique_id.as_str()))
                    .map(|(_, what)| (*what).to_owned())
                    .collect();
                listed(d, used_for, filed_elsewhere(d, ins))
            })
            .collect();
        summary.provenance = provenance(trail, &retrieved.documents);
        Ok(summary)
    }

    /// One listed document of the access's patient: TD3.1 again (the document must still
    /// be listed for this patient in this mode, and its repository is read there), then
    /// TD3.2 for it alone.
    async fn one_document(
        &self,
        ins: &Ins,
        unique_id: &str,
        access: &Access<'_>,
    ) -> Result<CriticalSummary, UpstreamError> {
        let mut trail = Vec::new();
        let found = self.find(ins, access, &mut trail).await?;
        let entry = listed_entry(&found, unique_id)?;
        let mut retrieved = self.retrieve(access, &[entry], &mut trail).await?;
        // Moved to the reading (off the async workers), not copied.
        let bytes = retrieved
            .documents
            .iter_mut()
            .find(|d| {
                d.unique_id == unique_id && d.repository_unique_id == entry.repository_unique_id
            })
            .map(|d| std::mem::take(&mut d.bytes))
            .ok_or_else(|| not_returned(&retrieved.errors, "the document asked for"))?;
        let mut summary = super::super::extract_off_runtime(bytes).await?;
        super::super::check_same_patient(&summary, Some(ins))?;
        tied_to_patient(
            summary.patient_in_document.as_ref(),
            filed_elsewhere(entry, ins),
        )?;
        summary.documents = vec![listed(entry, Vec::new(), filed_elsewhere(entry, ins))];
        summary.provenance = provenance(trail, &retrieved.documents);
        Ok(summary)
    }
}

/// A document retrieved is the one the registry lists: its size and its SHA-1 (which an
/// entry for a stable document must give: one without them proves nothing of the bytes),
/// and its media type when the entry gives it. A truncated, substituted or re-encoded
/// document is never read as the patient's summary.
fn as_listed(document: &xds::RetrievedDocument, entry: &DocumentEntry) -> Result<(), DmpError> {
    let differs = |what: &str| {
        Err(DmpError::Answer(format!(
            "a document returned differs from its registry entry ({what})"
        )))
    };
    let (Some(size), Some(hash)) = (entry.size, entry.hash.as_ref()) else {
        return Err(DmpError::Answer(
            "the registry entry gives no size or hash to check its document against".into(),
        ));
    };
    if size != document.bytes.len() as u64 {
        return differs("size");
    }
    if crate::encoding::sha1_hex(&document.bytes) != *hash {
        return differs("hash");
    }
    // The media type itself: parameters (a charset) may be written on one side only.
    let media = |m: &str| {
        m.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    if let Some(mime) = &entry.mime_type
        && media(mime) != media(&document.mime_type)
    {
        return differs("media type");
    }
    Ok(())
}

/// Whether the registry files `entry` under another patient identifier than the one asked
/// for (another identifier, or another or no assigning authority). An entry with no
/// patient id is the patient's, since the query named that patient.
fn filed_elsewhere(entry: &DocumentEntry, ins: &Ins) -> bool {
    entry
        .patient_id
        .as_ref()
        .is_some_and(|(id, oid)| id != ins.as_str() || oid != ins.oid())
}

/// A document the registry files under another identifier is not refused for that alone:
/// a patient's INS may change, and the record then lists documents filed under the earlier
/// one (docs/dmp.md, "Finding and retrieving documents"). It is read only if it names the
/// INS asked for itself (`check_same_patient` has refused one naming another): one naming
/// no INS cannot be tied to this patient, and a registry that mixes records up would
/// otherwise show another patient's document.
fn tied_to_patient(
    patient: Option<&crate::summary::DocumentPatient>,
    filed_elsewhere: bool,
) -> Result<(), UpstreamError> {
    let names_an_ins = patient.is_some_and(|p| !p.ins.is_empty());
    if filed_elsewhere && !names_an_ins {
        return Err(UpstreamError::WrongPatient(
            "a document the registry files under another patient identifier names no INS: it cannot be tied to the patient asked for".into(),
        ));
    }
    Ok(())
}

/// How a registry entry is listed on the page.
fn listed(d: &DocumentEntry, used_for: Vec<String>, filed_elsewhere: bool) -> ListedDocument {
    ListedDocument {
        replaced: !d.approved,
        filed_elsewhere,
        unique_id: d.unique_id.clone(),
        type_code: d.type_code.as_ref().map(|c| c.code.clone()),
        type_display: d.type_code.as_ref().and_then(|c| c.display.clone()),
        title: d.title.clone(),
        creation_time: d.creation_time.clone(),
        authors: d.authors.clone(),
        structured: is_structured(d),
        used_for,
        hidden_from_patient: has_code(d, "INVISIBLE_PATIENT"),
        masked: has_code(d, "MASQUE_PS"),
    }
}

/// Whether the entry carries confidentiality code `code` (docs/dmp.md, the entry's fields).
fn has_code(d: &DocumentEntry, code: &str) -> bool {
    d.confidentiality.iter().any(|c| c.code == code)
}

/// For the access's audit record: each transaction with its assertion id, then every
/// document retrieved.
fn provenance(trail: Vec<String>, retrieved: &[xds::RetrievedDocument]) -> Vec<String> {
    trail
        .into_iter()
        .map(|t| format!("dmp={t}"))
        .chain(
            retrieved
                .iter()
                .map(|d| format!("retrieved={}", d.unique_id)),
        )
        .collect()
}

fn type_of(d: &DocumentEntry) -> Option<&str> {
    d.type_code.as_ref().map(|c| c.code.as_str())
}

/// Structured means CDA level 3: a format code other than the unstructured ones
/// (`urn:ihe:iti:xds-sd:…`: a PDF or text wrapped in CDA).
fn is_structured(d: &DocumentEntry) -> bool {
    d.format_code
        .as_ref()
        .is_some_and(|f| !f.code.starts_with("urn:ihe:iti:xds-sd:"))
}

/// When a document was written, comparable across entries: `creationTime` is UTC digits
/// (`YYYY[MM[DD[hh[mm[ss]]]]]`), compared as text. A missing one, or one that is no
/// such time (an odd length, a 13th month, an offset the format does not allow) or lies
/// more than a day ahead, sorts oldest: a date of 9999 would otherwise always pass for
/// the newest synthesis and hide last week's.
fn written(d: &DocumentEntry) -> Option<&str> {
    let t = d.creation_time.as_deref()?;
    let field = |at: usize, range: std::ops::RangeInclusive<u32>| {
        t.get(at..at + 2)
            .is_none_or(|f| f.parse::<u32>().is_ok_and(|v| range.contains(&v)))
    };
    let shaped = matches!(t.len(), 4 | 6 | 8 | 10 | 12 | 14)
        && t.bytes().all(|b| b.is_ascii_digit())
        && field(4, 1..=12)
        && field(6, 1..=31)
        && field(8, 0..=23)
        && field(10, 0..=59)
        && field(12, 0..=60);
    let latest = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default();
    (shaped && latest.get(..t.len()).is_some_and(|bound| t <= bound)).then_some(t)
}

/// The most recent approved entry (a deprecated one was replaced).
fn newest<'a>(documents: impl Iterator<Item = &'a DocumentEntry>) -> Option<&'a DocumentEntry> {
    documents
        .filter(|d| d.approved)
        .max_by(|a, b| written(a).cmp(&written(b)))
}

/// The most recent structured synthesis, whatever its kind (the kind's preference only
/// breaks ties); without any, the most recent synthesis of any format (a PDF the
/// physician can open). Recency first: a synthesis of the preferred kind written years
/// ago says nothing of last week's treatment or allergy (docs/dmp.md, "The summary").
fn choose_synthesis(documents: &[DocumentEntry]) -> Option<&DocumentEntry> {
    let ranked = || {
        documents.iter().filter(|d| d.approved).filter_map(|d| {
            let rank = SYNTHESES.iter().position(|kind| type_of(d) == Some(kind))?;
            Some((d, rank))
        })
    };
    // The greater is the more recent, then the more preferred (the lower rank).
    let best = |structured_only: bool| {
        ranked()
            .filter(|(d, _)| !structured_only || is_structured(d))
            .max_by(|(a, rank_a), (b, rank_b)| {
                written(a).cmp(&written(b)).then_with(|| rank_b.cmp(rank_a))
            })
            .map(|(d, _)| d)
    };
    best(true).or_else(|| best(false))
}

/// What a test of existence says of the record of `ins` for an access in `mode`: found
/// (`true`), not found, or the refusal it states.
fn existence_outcome(
    existence: &hl7v3::Existence,
    ins: &Ins,
    mode: AccessMode,
) -> Result<bool, UpstreamError> {
    if !existence.found {
        return Ok(false);
    }
    // Several patients answering one INS: whose closure and oppositions hold is not for
    // the gateway to guess (the first one's were read, the others' ignored).
    if existence.patients > 1 {
        return Err(UpstreamError::Ambiguous(existence.patients));
    }
    // An answer about another patient (a mix-up on the way, a proxy answering the wrong
    // request) says nothing of this one's record, closure or oppositions.
    if !existence.about.include(ins.oid(), ins.as_str()) {
        return Err(UpstreamError::WrongPatient(
            "the test of existence answered about another patient".into(),
        ));
    }
    if existence.closed {
        return Err(UpstreamError::RecordClosed);
    }
    if existence
        .oppositions
        .iter()
        .any(|o| o == opposition_code(mode))
    {
        return Err(UpstreamError::PatientOpposed(mode));
    }
    Ok(true)
}

fn opposition_code(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::Centre15 => "OPPOSITION_ACCES_URGENCE",
        AccessMode::BrisDeGlace => "OPPOSITION_BRIS_DE_GLACE",
    }
}

/// The outcome a registry's (or repository's) answer says: an error code the gateway
/// knows, wherever it is listed; a `Failure`, whatever it lists (an empty list from a
/// failed query is not "no summary document"); an error (not a warning) when nothing
/// came back, or a `PartialSuccess` with nothing (part of the answer is missing: what is
/// missing may be the summary). A `PartialSuccess` with documents is used, and said
/// (`compose_from`).
fn registry_outcome(
    status: xds::Status,
    errors: &[RegistryError],
    nothing: bool,
) -> Result<(), UpstreamError> {
    for e in errors {
        match e.code.as_str() {
            "OPPOSITION_ACCES_URGENCE" => {
                return Err(UpstreamError::PatientOpposed(AccessMode::Centre15));
            }
            "OPPOSITION_BRIS_DE_GLACE" => {
                return Err(UpstreamError::PatientOpposed(AccessMode::BrisDeGlace));
            }
            "DMPClosed" => return Err(UpstreamError::RecordClosed),
            // The one code that deletes cached copies: only as an error that left nothing
            // (a warning beside the patient's documents is no such fact).
            "XDSUnknownPatientId" if e.severity != "Warning" => {
                return Err(if nothing {
                    UpstreamError::NoRecord
                } else {
                    UpstreamError::Malformed(
                        "the DMP listed documents and said the patient is unknown".into(),
                    )
                });
            }
            _ => {}
        }
    }
    let error = errors.iter().find(|e| e.severity != "Warning");
    match (status, error) {
        (xds::Status::Failure, None) => Err(UpstreamError::Unavailable(
            "the DMP answered Failure (no error listed)".into(),
        )),
        (xds::Status::Failure, Some(e)) => Err(unserved(&e.code)),
        (_, Some(e)) if nothing => Err(unserved(&e.code)),
        (xds::Status::PartialSuccess, None) if nothing => Err(UpstreamError::Unavailable(
            "the DMP answered PartialSuccess with nothing".into(),
        )),
        _ => Ok(()),
    }
}

/// The outcome of a repository's answer: as a registry's, except "unknown patient". The
/// registry has just listed this patient's documents: a repository saying otherwise
/// contradicts it, which is no fact that the record does not exist (that would withdraw
/// the patient's cached copies and tell the physician there is no record).
fn retrieval_outcome(
    status: xds::Status,
    errors: &[RegistryError],
    nothing: bool,
) -> Result<(), UpstreamError> {
    match registry_outcome(status, errors, nothing) {
        Err(UpstreamError::NoRecord) => Err(UpstreamError::Malformed(
            "the repository said the patient is unknown after the registry listed their documents"
                .into(),
        )),
        other => other,
    }
}

/// The registry's listing once the test of existence has found the patient's record, open
/// and not opposed: "unknown patient" then contradicts it, which is no fact that the
/// record does not exist (that would withdraw the patient's cached copies and tell the
/// physician there is no record).
fn listing_after_existence(
    found: Result<xds::Found, UpstreamError>,
) -> Result<xds::Found, UpstreamError> {
    found.map_err(|e| match e {
        UpstreamError::NoRecord => UpstreamError::Malformed(
            "the registry said the patient is unknown after the test of existence found their record"
                .into(),
        ),
        other => other,
    })
}

/// The entry of document `unique_id` in the listing `found`. Absent from a complete list,
/// it is not (or no longer) accessible to this access; absent from a `PartialSuccess`,
/// nothing is known of it: part of the list is missing, and it may be that part.
fn listed_entry<'a>(
    found: &'a xds::Found,
    unique_id: &str,
) -> Result<&'a DocumentEntry, UpstreamError> {
    match found.documents.iter().find(|d| d.unique_id == unique_id) {
        Some(entry) => Ok(entry),
        None if found.status == xds::Status::PartialSuccess => Err(UpstreamError::Unavailable(
            "the DMP answered PartialSuccess without the document asked for".into(),
        )),
        None => Err(UpstreamError::DocumentNotListed),
    }
}

/// Why `what` was not returned: the repository's error, when it listed one (a code that
/// is not an outage refuses the request and no copy stands in: a repository may answer
/// a document masked from this access as unknown), else an answer that lacks what it
/// should hold.
fn not_returned(errors: &[RegistryError], what: &str) -> UpstreamError {
    match errors.iter().find(|e| e.severity != "Warning") {
        Some(e) => unserved(&e.code),
        None => UpstreamError::Malformed(format!("{what} was not returned")),
    }
}

/// A status other than 200 that came without a SOAP fault (a front end's or proxy's own
/// page), read as the FHIR client reads one without its outcome (`outcome::classify`): an
/// outage only for 408, 429 and 5xx; any other 4xx (401, 403: the DMP's front end refusing
/// this professional or this access) refuses the request, and no cached copy is served in
/// its place.
fn without_fault(status: u16) -> UpstreamError {
    match status {
        408 | 429 | 500..=599 => UpstreamError::Unavailable(format!("HTTP {status}")),
        400..=499 => UpstreamError::AssertionRefused(format!("HTTP {status} without a SOAP fault")),
        other => UpstreamError::Malformed(format!("unexpected HTTP status {other}")),
    }
}

/// The XDS codes that say the registry or repository could not serve now (busy, out of
/// resources, not available, an internal error): an outage, where a recent copy may serve.
const OUTAGE_CODES: [&str; 8] = [
    "XDSRegistryBusy",
    "XDSRegistryError",
    "XDSRegistryNotAvailable",
    "XDSRegistryOutOfResources",
    "XDSRepositoryBusy",
    "XDSRepositoryError",
    "XDSRepositoryNotAvailable",
    "XDSRepositoryOutOfResources",
];

/// A registry or repository error that left nothing to use. An outage code is
/// unavailability; any other (an access refused, `DMPAccessDenied`, a code not known here:
/// the DMP's catalogue is not public) refuses this request, and no cached copy may be
/// served in its place: it may be a restriction on this access (docs/dmp.md, "Faults").
fn unserved(code: &str) -> UpstreamError {
    if OUTAGE_CODES.contains(&code) {
        UpstreamError::Unavailable(format!("the DMP answered {code}"))
    } else {
        UpstreamError::AssertionRefused(code.to_owned())
    }
}

/// Reads the answer `xml` (its other MIME parts in `attachments`), which came with HTTP
/// `status`, to the request `message_id`: the fault it holds, or what `read` makes of its
/// body.
fn read_answer<T>(
    xml: &str,
    attachments: Attachments,
    message_id: &str,
    status: u16,
    read: impl FnOnce(roxmltree::Node<'_, '_>, Attachments) -> Result<T, DmpError>,
) -> Result<T, UpstreamError> {
    let doc = soap::parse(xml).map_err(malformed)?;
    // Another request's answer (a proxy or a pool that crossed two) says nothing of this
    // patient: its "not found" would tell the physician there is no record and delete the
    // patient's copies.
    let addressed = soap::check_relates_to(&doc, message_id).map_err(malformed)?;
    // A fault comes with 500 (or 400): read it before judging the status.
    let body = soap::body(&doc).map_err(|e| match addressed {
        soap::Addressed::ToThisRequest => outcome(e),
        soap::Addressed::ToNoRequest => unaddressed_outcome(e),
    })?;
    if status != 200 {
        return Err(without_fault(status));
    }
    read(body, attachments).map_err(outcome)
}

/// Fault codes that state a fact about a patient: their oppositions, their record closed.
const PATIENT_FACTS: [&str; 3] = [
    "OPPOSITION_ACCES_URGENCE",
    "OPPOSITION_BRIS_DE_GLACE",
    "DMPClosed",
];

/// The outcome of a fault that names no request (no `wsa:RelatesTo`). It may be another
/// request's answer, crossed by a proxy or a pool: its opposition or closed record would
/// tell the physician this patient opposed, or their record is closed. Such a code refuses
/// this request instead (no cached copy is served in its place: the opposition may be
/// real, and unavailability would let a stale copy stand in for it). Any other code says
/// nothing of a patient and keeps its meaning.
fn unaddressed_outcome(e: DmpError) -> UpstreamError {
    if let DmpError::Fault(fault) = &e {
        let code = fault.most_specific();
        if PATIENT_FACTS.contains(&code) {
            return UpstreamError::AssertionRefused(format!(
                "{code} in a fault that names no request"
            ));
        }
    }
    outcome(e)
}

/// The gateway's outcome for a DMP error.
fn outcome(e: DmpError) -> UpstreamError {
    match e {
        DmpError::Fault(fault) => match fault.most_specific() {
            "OPPOSITION_ACCES_URGENCE" => UpstreamError::PatientOpposed(AccessMode::Centre15),
            "OPPOSITION_BRIS_DE_GLACE" => UpstreamError::PatientOpposed(AccessMode::BrisDeGlace),
            "DMPClosed" => UpstreamError::RecordClosed,
            code if code.starts_with("DMPInvalid")
                || code.starts_with("DMPVIHF")
                || code == "DMPAccessDenied"
                || code == "DMPPatientMismatch" =>
            {
                UpstreamError::AssertionRefused(code.to_owned())
            }
            // A code this gateway does not know. A fault the DMP puts on the request
            // (`Sender`) is a refusal of it: it may be a restriction on this access (an
            // opposition under a new code), so no copy is served in its place. One it puts
            // on itself (`Receiver`) is an outage, where a copy may serve
            // (docs/dmp.md, "Faults").
            code if fault.code == "Sender" => UpstreamError::AssertionRefused(code.to_owned()),
            code => UpstreamError::Unavailable(format!("DMP fault {code}")),
        },
        DmpError::Refused { code } => UpstreamError::AssertionRefused(code),
        DmpError::Answer(why) => UpstreamError::Malformed(why),
        DmpError::Partial(why) => UpstreamError::TooManyCandidates(why),
        other => UpstreamError::Unavailable(other.to_string()),
    }
}

fn malformed(e: DmpError) -> UpstreamError {
    UpstreamError::Malformed(e.to_string())
}

/// A failure before anything was sent: the service refused nothing (a refusal would
/// withdraw the patient's cached copies and blame the service).
fn internal(e: DmpError) -> UpstreamError {
    UpstreamError::NotSent(format!("cannot sign or write the request: {e}"))
}

/// A random UUID (version 4), for message and query ids.
fn uuid_v4() -> Result<String, DmpError> {
    let mut b = [0u8; 16];
    crate::random::fill(&mut b).map_err(|e| DmpError::Request(e.to_string()))?;
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h = crate::encoding::hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

impl RecordService for DmpClient {
    fn find_by_ins<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(self.within(self.existence(ins, access)))
    }

    fn search<'a>(
        &'a self,
        traits: &'a Traits,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(self.within(self.candidates(traits, access)))
    }

    fn summary<'a>(
        &'a self,
        id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(async move {
            // The record is the access's patient: the id only confirms it.
            let Some(ins) = access.patient else {
                return Err(UpstreamError::NoRecord);
            };
            if id != format!("{}|{}", ins.oid(), ins.as_str()) {
                return Err(UpstreamError::NoRecord);
            }
            self.within(self.compose(ins, access)).await
        })
    }

    fn patient_summary<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<(Candidate, CriticalSummary), UpstreamError>> {
        Box::pin(self.within(self.patient_and_summary(ins, access)))
    }

    fn document<'a>(
        &'a self,
        unique_id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(async move {
            let Some(ins) = access.patient else {
                return Err(UpstreamError::NoRecord);
            };
            self.within(self.one_document(ins, unique_id, access)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::xds::Coded;
    use super::*;
    use crate::card::profile::{CardProfile, Pin};
    use crate::card::trust::Professional;
    use crate::card::worker::{CardWorker, PinSource};

    fn entry(id: &str, kind: &str, format: &str, written: Option<&str>) -> DocumentEntry {
        let coded = |code: &str| Coded {
            code: code.to_owned(),
            scheme: None,
            display: None,
        };
        DocumentEntry {
            unique_id: id.to_owned(),
            repository_unique_id: "1.2.250.1.999".to_owned(),
            type_code: Some(coded(kind)),
            class_code: None,
            format_code: Some(coded(format)),
            confidentiality: Vec::new(),
            creation_time: written.map(str::to_owned),
            service_start_time: None,
            title: None,
            authors: Vec::new(),
            mime_type: None,
            hash: None,
            size: None,
            approved: true,
            patient_id: None,
        }
    }

    /// An entry filed under another identifier or another OID is filed elsewhere (one
    /// naming no patient is the patient's); a document filed elsewhere is read only if
    /// it names an INS (`check_same_patient` has made sure it is the one asked for).
    #[test]
    fn a_document_filed_elsewhere_must_name_the_patient_itself() {
        let ins = Ins::parse(
            "180017500000134",
            crate::patient::OID_NIR,
            crate::patient::InsPolicy::default(),
        )
        .unwrap();
        let filed = |patient: Option<(&str, &str)>| DocumentEntry {
            patient_id: patient.map(|(id, oid)| (id.to_owned(), oid.to_owned())),
            ..entry("1.2.250.1.999.1.1", "60591-5", "urn:ihe:pcc:ips:2020", None)
        };
        assert!(!filed_elsewhere(
            &filed(Some(("180017500000134", crate::patient::OID_NIR))),
            &ins
        ));
        assert!(!filed_elsewhere(&filed(None), &ins));
        for foreign in [
            ("280017500000181", crate::patient::OID_NIR),
            ("180017500000134", crate::patient::OID_NIA),
            ("180017500000134", ""),
        ] {
            assert!(filed_elsewhere(&filed(Some(foreign)), &ins), "{foreign:?}");
        }
        let patient = |ins: Vec<String>| crate::summary::DocumentPatient {
            names: vec!["SYNTHETIQUE Camille".into()],
            birth_date: None,
            gender: None,
            no_ins: ins.is_empty(),
            ins,
        };
        let named = patient(vec![format!("{}|{}", ins.oid(), ins.as_str())]);
        assert!(tied_to_patient(Some(&named), true).is_ok());
        let unnamed = patient(Vec::new());
        for untied in [Some(&unnamed), None] {
            assert!(tied_to_patient(untied, false).is_ok());
            assert!(matches!(
                tied_to_patient(untied, true),
                Err(UpstreamError::WrongPatient(m)) if m.contains("another patient")
            ));
        }
    }

    /// A creation time that is no UTC `YYYY[MM[DD[hh[mm[ss]]]]]`, or lies more than a day
    /// ahead, sorts oldest: a synthesis dated 9999 never hides last week's (it did).
    #[test]
    fn an_impossible_or_future_creation_time_sorts_oldest() {
        const IPS: &str = "urn:ihe:pcc:ips:2020";
        let recent = entry("recent", "60591-5", IPS, Some("20261128"));
        for bad in [
            "99991231",
            "20241",
            "20261301",
            "20261100",
            "20261128250000",
            "20261128100000+0100",
        ] {
            let other = entry("bad", "60591-5", IPS, Some(bad));
            assert_eq!(written(&other), None, "{bad}");
            assert_eq!(
                choose_synthesis(&[other, recent.clone()]).map(|d| d.unique_id.as_str()),
                Some("recent"),
                "{bad}"
            );
        }
        for good in [
            "2024",
            "202406",
            "20240612",
            "2024061210",
            "202406121030",
            "20240612103059",
        ] {
            assert_eq!(written(&entry("x", "60591-5", IPS, Some(good))), Some(good));
        }
    }

    /// Recency before kind: last week's DLU beats a 2019 IPS-FR; the kind only breaks a
    /// tie; structured beats a newer PDF; a garbled date sorts oldest; the history is
    /// never the synthesis.
    #[test]
    fn the_synthesis_is_the_most_recent_structured_one() {
        const IPS: &str = "urn:ihe:pcc:ips:2020";
        const PDF: &str = "urn:ihe:iti:xds-sd:pdf:2008";
        let chosen =
            |documents: &[DocumentEntry]| choose_synthesis(documents).map(|d| d.unique_id.clone());
        let old_ips = entry("ips", "60591-5", IPS, Some("20190312090000"));
        let dlu = entry(
            "dlu",
            "74207-2",
            "urn:asip:ci-sis:dlu:2015",
            Some("20261128"),
        );
        assert_eq!(
            chosen(&[old_ips.clone(), dlu.clone()]).as_deref(),
            Some("dlu")
        );
        let same_day_ips = entry("ips2", "60591-5", IPS, Some("20261128"));
        assert_eq!(
            chosen(&[dlu.clone(), same_day_ips, old_ips.clone()]).as_deref(),
            Some("ips2")
        );
        let new_pdf = entry("pdf", "SYNTH", PDF, Some("20261201"));
        assert_eq!(
            chosen(&[new_pdf.clone(), old_ips.clone()]).as_deref(),
            Some("ips")
        );
        assert_eq!(
            chosen(std::slice::from_ref(&new_pdf)).as_deref(),
            Some("pdf")
        );
        let garbled = entry("garbled", "11490-0", IPS, Some("2026-12-01T00:00"));
        assert_eq!(
            chosen(&[old_ips.clone(), garbled.clone()]).as_deref(),
            Some("ips")
        );
        let undated = entry("undated", "SYNTH", "urn:asip:ci-sis:vsm:2012", None);
        assert_eq!(chosen(&[undated, old_ips.clone()]).as_deref(), Some("ips"));
        let history = entry("remb", "REMB", "urn:asip:ci-sis:hr:2019", Some("20261202"));
        assert_eq!(chosen(&[history.clone(), old_ips]).as_deref(), Some("ips"));
        assert_eq!(chosen(&[history]), None);
    }

    /// A failed query is never "no summary document", whatever it lists first; a known
    /// code wins wherever it is; warnings alone beside documents change nothing.
    #[test]
    fn a_registry_failure_is_a_failure() {
        use xds::Status::{Failure, PartialSuccess, Success};
        let error = |code: &str, severity: &str| RegistryError {
            code: code.into(),
            severity: severity.into(),
        };
        assert!(matches!(
            registry_outcome(Failure, &[], true),
            Err(UpstreamError::Unavailable(_))
        ));
        assert!(matches!(
            registry_outcome(
                Failure,
                &[error("W1", "Warning"), error("XDSRegistryError", "Error")],
                true
            ),
            Err(UpstreamError::Unavailable(why)) if why.contains("XDSRegistryError")
        ));
        assert!(matches!(
            registry_outcome(
                Success,
                &[error("W1", "Warning"), error("XDSRegistryError", "Error")],
                true
            ),
            Err(UpstreamError::Unavailable(why)) if why.contains("XDSRegistryError")
        ));
        assert_eq!(
            registry_outcome(
                Failure,
                &[error("W1", "Warning"), error("DMPClosed", "Error")],
                true
            ),
            Err(UpstreamError::RecordClosed)
        );
        // A refusal, or a code not known here, in the list: refused, no copy served in its
        // place (it was unavailability, and a stale copy stood in for the refusal).
        for (status, code) in [
            (Failure, "DMPAccessDenied"),
            (Failure, "DMPAccesRestreint"),
            (PartialSuccess, "XDSDocumentUniqueIdError"),
        ] {
            assert_eq!(
                registry_outcome(status, &[error(code, "Error")], true),
                Err(UpstreamError::AssertionRefused(code.into()))
            );
        }
        assert!(matches!(
            registry_outcome(Failure, &[error("XDSRepositoryBusy", "Error")], true),
            Err(UpstreamError::Unavailable(why)) if why.contains("XDSRepositoryBusy")
        ));
        assert_eq!(registry_outcome(Success, &[], true), Ok(()));
        assert_eq!(
            registry_outcome(PartialSuccess, &[error("E", "Error")], false),
            Ok(())
        );
        // "Unknown patient" deletes cached copies: only as an error that left nothing. As
        // a warning beside documents it changes nothing; as an error beside them, the
        // answer contradicts itself.
        let unknown = |severity| [error("XDSUnknownPatientId", severity)];
        assert_eq!(
            registry_outcome(Failure, &unknown("Error"), true),
            Err(UpstreamError::NoRecord)
        );
        assert_eq!(
            registry_outcome(PartialSuccess, &unknown("Warning"), false),
            Ok(())
        );
        assert!(matches!(
            registry_outcome(PartialSuccess, &unknown("Error"), false),
            Err(UpstreamError::Malformed(why)) if why.contains("unknown")
        ));
        // From the repository, once the registry listed the patient's documents: the
        // answer contradicts the listing, and withdraws nothing.
        assert!(matches!(
            retrieval_outcome(Failure, &unknown("Error"), true),
            Err(UpstreamError::Malformed(why)) if why.contains("repository")
        ));
        assert_eq!(retrieval_outcome(Success, &[], false), Ok(()));
        // Part of an answer that holds nothing: not "no summary document".
        for warnings in [&[][..], &[error("W1", "Warning")][..]] {
            assert!(matches!(
                registry_outcome(PartialSuccess, warnings, true),
                Err(UpstreamError::Unavailable(_))
            ));
        }
    }

    /// What is retrieved must be what the registry lists: its size, its SHA-1, its media
    /// type (parameters aside); an entry without size or hash proves nothing of the
    /// bytes, and its document is not read (it was, unchecked).
    #[test]
    fn a_document_retrieved_must_be_the_one_listed() {
        let bytes = b"<ClinicalDocument/>".to_vec();
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes);
        let listed = DocumentEntry {
            size: Some(bytes.len() as u64),
            hash: Some(crate::encoding::hex(sha1.as_ref())),
            mime_type: Some("text/xml".into()),
            ..entry("1.2.250.1.999.1.1", "60591-5", "urn:ihe:pcc:ips:2020", None)
        };
        let returned = |bytes: &[u8], mime: &str| xds::RetrievedDocument {
            unique_id: "1.2.250.1.999.1.1".into(),
            repository_unique_id: "1.2.250.1.999".into(),
            mime_type: mime.into(),
            bytes: bytes.to_vec(),
        };
        assert!(as_listed(&returned(&bytes, "text/xml"), &listed).is_ok());
        assert!(as_listed(&returned(&bytes, "TEXT/XML; charset=UTF-8"), &listed).is_ok());
        let differs = |document: xds::RetrievedDocument, entry: &DocumentEntry| {
            as_listed(&document, entry).unwrap_err().to_string()
        };
        assert!(differs(returned(b"<ClinicalDocument/", "text/xml"), &listed).contains("size"));
        assert!(differs(returned(b"<ClinicalDocumenT/>", "text/xml"), &listed).contains("hash"));
        assert!(differs(returned(&bytes, "application/pdf"), &listed).contains("media type"));
        let bare = entry("1.2.250.1.999.1.1", "60591-5", "urn:ihe:pcc:ips:2020", None);
        assert!(
            differs(returned(b"anything", "application/pdf"), &bare).contains("no size or hash")
        );
        let no_type = DocumentEntry {
            mime_type: None,
            ..listed.clone()
        };
        assert!(as_listed(&returned(&bytes, "application/pdf"), &no_type).is_ok());
    }

    /// A request the card could not sign (its session ended, it did not answer, its
    /// certificate refused) was never sent: not a refusal by the service, so the patient's
    /// cached copies stay and the physician is told it is the card. Before, it read as the
    /// DMP refusing the gateway, and every copy of the patient was deleted.
    #[test]
    fn a_request_the_card_could_not_sign_is_not_a_refusal() {
        let e = internal(ended_card_session());
        assert!(matches!(e, UpstreamError::NotSent(_)), "{e:?}");
        assert!(!e.is_refusal() && !e.withdraws_copy());
        let answer = e.answer();
        assert_eq!((answer.status, answer.code), (503, "request_not_sent"));
        assert!(answer.message_fr.contains("carte"), "{}", answer.message_fr);
    }

    /// Documents asked for and not returned take the repository's own error: a refusal
    /// (no copy in its place) or an outage; with none listed, the answer lacks them.
    #[test]
    fn what_was_not_returned_takes_the_repositorys_error() {
        let error = |code: &str, severity: &str| RegistryError {
            code: code.into(),
            severity: severity.into(),
        };
        assert_eq!(
            not_returned(&[error("DMPAccessDenied", "Error")], "the synthesis"),
            UpstreamError::AssertionRefused("DMPAccessDenied".into())
        );
        assert!(matches!(
            not_returned(&[error("XDSRepositoryBusy", "Error")], "the synthesis"),
            UpstreamError::Unavailable(_)
        ));
        assert!(matches!(
            not_returned(&[error("W1", "Warning")], "the synthesis"),
            UpstreamError::Malformed(why) if why == "the synthesis was not returned"
        ));
    }

    /// A fault that names no request may be another request's, crossed by a proxy or a
    /// pool: its opposition or closed record refuses this request (no copy in its place),
    /// never tells the physician this patient opposed or their record is closed (it did).
    /// Addressed to this request, it says so as before; other codes keep their meaning.
    #[test]
    fn a_fault_naming_no_request_states_nothing_of_the_patient() {
        let fault = |relates_to: &str, side: &str, code: &str| {
            format!(
                "<env:Envelope xmlns:env=\"{}\" xmlns:wsa=\"{}\"><env:Header>{relates_to}</env:Header><env:Body><env:Fault>\
                 <env:Code><env:Value>env:{side}</env:Value><env:Subcode><env:Value>{code}</env:Value></env:Subcode></env:Code>\
                 <env:Reason><env:Text xml:lang=\"fr\">Refus</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>",
                soap::SOAP,
                soap::WSA
            )
        };
        let ours = "<wsa:RelatesTo>urn:uuid:1</wsa:RelatesTo>";
        let read = |xml: String| {
            read_answer(&xml, Attachments::default(), "urn:uuid:1", 500, |_, _| {
                Ok(())
            })
        };
        assert_eq!(
            read(fault(ours, "Sender", "DMPClosed")),
            Err(UpstreamError::RecordClosed)
        );
        assert_eq!(
            read(fault(ours, "Sender", "OPPOSITION_BRIS_DE_GLACE")),
            Err(UpstreamError::PatientOpposed(AccessMode::BrisDeGlace))
        );
        for code in [
            "DMPClosed",
            "OPPOSITION_ACCES_URGENCE",
            "OPPOSITION_BRIS_DE_GLACE",
        ] {
            assert_eq!(
                read(fault("", "Sender", code)),
                Err(UpstreamError::AssertionRefused(format!(
                    "{code} in a fault that names no request"
                )))
            );
        }
        assert_eq!(
            read(fault("", "Sender", "DMPInvalidSignature")),
            Err(UpstreamError::AssertionRefused(
                "DMPInvalidSignature".into()
            ))
        );
        assert!(matches!(
            read(fault("", "Receiver", "DMPInternalError")),
            Err(UpstreamError::Unavailable(why)) if why.contains("DMPInternalError")
        ));
        // Naming another request: unreadable, whatever it says.
        assert!(matches!(
            read(fault(
                "<wsa:RelatesTo>urn:uuid:2</wsa:RelatesTo>",
                "Sender",
                "DMPClosed"
            )),
            Err(UpstreamError::Malformed(_))
        ));
    }

    /// Several patients answering one INS in a test of existence: ambiguous, whatever the
    /// first one's closure or oppositions (only the first's were read).
    #[test]
    fn several_patients_answering_a_test_of_existence_are_ambiguous() {
        let ins = Ins::parse(
            "180017500000134",
            crate::patient::OID_NIR,
            crate::patient::InsPolicy::default(),
        )
        .unwrap();
        let existence = |patients: usize, closed: bool| hl7v3::Existence {
            found: true,
            closed,
            authorisation: None,
            treating_physician: None,
            oppositions: Vec::new(),
            about: hl7v3::PatientIds(vec![(ins.oid().to_owned(), ins.as_str().to_owned())]),
            patients,
        };
        let mode = AccessMode::Centre15;
        assert_eq!(
            existence_outcome(&existence(1, false), &ins, mode),
            Ok(true)
        );
        assert_eq!(
            existence_outcome(&existence(1, true), &ins, mode),
            Err(UpstreamError::RecordClosed)
        );
        for closed in [false, true] {
            assert_eq!(
                existence_outcome(&existence(2, closed), &ins, mode),
                Err(UpstreamError::Ambiguous(2))
            );
        }
        let not_found = hl7v3::Existence {
            found: false,
            about: hl7v3::PatientIds::default(),
            ..existence(0, false)
        };
        assert_eq!(existence_outcome(&not_found, &ins, mode), Ok(false));
    }

    /// Break-glass: once the test of existence found the record open and not opposed, the
    /// registry's "unknown patient" contradicts it: malformed, not "no record" (which
    /// withdrew the patient's copies). Any other outcome is the registry's own.
    #[test]
    fn unknown_to_the_registry_after_the_record_was_found_is_no_fact() {
        use xds::Status::{Failure, Success};
        let unknown = [RegistryError {
            code: "XDSUnknownPatientId".into(),
            severity: "Error".into(),
        }];
        let listing = || {
            registry_outcome(Failure, &unknown, true).map(|()| xds::Found {
                status: Failure,
                documents: Vec::new(),
                errors: unknown.to_vec(),
            })
        };
        assert_eq!(listing(), Err(UpstreamError::NoRecord));
        assert!(matches!(
            listing_after_existence(listing()),
            Err(UpstreamError::Malformed(why)) if why.contains("test of existence found their record")
        ));
        let opposed: Result<xds::Found, UpstreamError> =
            Err(UpstreamError::PatientOpposed(AccessMode::BrisDeGlace));
        assert_eq!(listing_after_existence(opposed.clone()), opposed);
        let found = xds::Found {
            status: Success,
            documents: vec![entry("1", "60591-5", "urn:ihe:pcc:ips:2020", None)],
            errors: Vec::new(),
        };
        assert_eq!(listing_after_existence(Ok(found.clone())), Ok(found));
    }

    /// A document absent from a `PartialSuccess` list is not known to be unlisted (part of
    /// the list is missing): unavailable, not "not or no longer accessible" (it was). From
    /// a complete list, it is unlisted.
    #[test]
    fn a_document_missing_from_a_partial_list_is_not_said_unlisted() {
        use xds::Status::{PartialSuccess, Success};
        let listed = entry("1.2.250.1.999.1.1", "60591-5", "urn:ihe:pcc:ips:2020", None);
        let found = |status| xds::Found {
            status,
            documents: vec![listed.clone()],
            errors: Vec::new(),
        };
        for status in [Success, PartialSuccess] {
            assert_eq!(
                listed_entry(&found(status), "1.2.250.1.999.1.1"),
                Ok(&listed)
            );
        }
        assert_eq!(
            listed_entry(&found(Success), "1.2.250.1.999.1.9"),
            Err(UpstreamError::DocumentNotListed)
        );
        assert!(matches!(
            listed_entry(&found(PartialSuccess), "1.2.250.1.999.1.9"),
            Err(UpstreamError::Unavailable(why)) if why.contains("PartialSuccess")
        ));
    }

    /// A status without a SOAP fault: an outage only for 408, 429 and 5xx; a front end's
    /// 401 or 403 refuses the request (no copy stands in for it).
    #[test]
    fn a_status_without_a_fault_is_an_outage_only_when_it_says_so() {
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(without_fault(status), UpstreamError::Unavailable(_)),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 451] {
            assert!(
                matches!(without_fault(status), UpstreamError::AssertionRefused(_)),
                "{status}"
            );
        }
        assert!(matches!(without_fault(302), UpstreamError::Malformed(_)));
    }

    async fn login(worker: &CardWorker, auth: &[u8]) -> u64 {
        worker
            .login(
                "R0".into(),
                PinSource::Typed(Pin::new("1234").unwrap()),
                auth.to_vec(),
                false,
            )
            .await
            .unwrap()
    }

    /// `DIRECTE`: an access signs (VIHF and TLS) with the card session its requester
    /// logged in with, never with a later login's at the same reader: a card swapped at
    /// the desk while an access is under way must not sign for its requester.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_access_signs_only_with_its_own_card_session() {
        let profile = CardProfile::default();
        let (card, auth) = crate::dev_card::emulator::test_card(profile.clone());
        let (events, _inbox) = tokio::sync::mpsc::unbounded_channel();
        let worker =
            CardWorker::start_virtual("R0".into(), Box::new(card), profile, events).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cards = Arc::new(crate::dev_card::emulator::test_trust(dir.path()));
        let signer = CardVihfSigner::new(worker.clone(), cards.clone());
        // Never used to connect here: any anchor will do.
        let mut roots = rustls::RootCertStore::empty();
        let anchor = crate::dev_pki::Authority::new("unused DMP CA").unwrap();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ::pem::parse(anchor.cert_pem()).unwrap().into_contents(),
            ))
            .unwrap();
        let trust = crate::tls::ServerTrust::new(roots, &[], "dmp.server_crls").unwrap();
        let transport = CardTransport::new(trust, 1000);
        let professional = Professional::for_tests();
        let access = |held| Access {
            mode: AccessMode::Centre15,
            professional: &professional,
            patient: None,
            card: Some(CardSession { reader: "R0", held }),
        };

        let first = login(&worker, &auth).await;
        let (certificate, _) = signer.identity(&access(first), "S1").await.unwrap();
        assert!(!certificate.is_empty());
        assert!(
            !signer
                .sign(&access(first), b"vihf")
                .await
                .unwrap()
                .is_empty()
        );
        transport
            .client(&worker, &cards, access(first).card.unwrap())
            .await
            .unwrap();

        // Another login at the reader (the card pulled and put back, or another card):
        // the first session's accesses can no longer sign or connect.
        worker.end("R0");
        let second = login(&worker, &auth).await;
        assert_ne!(first, second);
        let ended = ended_card_session();
        assert_eq!(
            signer.identity(&access(first), "S1").await.unwrap_err(),
            ended
        );
        assert_eq!(
            signer.sign(&access(first), b"vihf").await.unwrap_err(),
            ended
        );
        assert_eq!(
            transport
                .client(&worker, &cards, access(first).card.unwrap())
                .await
                .unwrap_err(),
            ended
        );
        // The new session's own accesses sign.
        assert!(
            !signer
                .sign(&access(second), b"vihf")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(signer.identity(&access(second), "S1").await.is_ok());
        // The card's signature certificate names its holder: an access recorded for
        // another professional is not signed with it.
        let someone_else = Professional {
            id_nat: "810001234567".into(),
            ..Professional::for_tests()
        };
        let theirs = Access {
            professional: &someone_else,
            ..access(second)
        };
        assert!(matches!(
            signer.identity(&theirs, "S1").await,
            Err(DmpError::Signer(why)) if why.contains("signature certificate is refused")
        ));
        // Nor by a signer whose trust does not know the card's authority.
        let elsewhere = tempfile::tempdir().unwrap();
        let other_root = crate::dev_pki::Authority::new("another root").unwrap();
        let (anchor, crl) = (
            elsewhere.path().join("ca.pem"),
            elsewhere.path().join("ca.crl"),
        );
        crate::dev_pki::write_file(&anchor, other_root.cert_pem(), 0o644).unwrap();
        crate::dev_pki::write_file(&crl, &other_root.crl(&[], 0, 7).unwrap(), 0o644).unwrap();
        let strangers = CardVihfSigner::new(
            worker.clone(),
            Arc::new(
                CardTrust::load(crate::card::trust::TrustConfig::new(
                    vec![anchor],
                    vec![crl],
                ))
                .unwrap(),
            ),
        );
        assert!(matches!(
            strangers.identity(&access(second), "S1").await,
            Err(DmpError::Signer(why)) if why.contains("signature certificate is refused")
        ));
        // An access without a card session is refused, never signed by whoever is there.
        let unbound = Access {
            card: None,
            ..access(second)
        };
        assert!(matches!(
            signer.sign(&unbound, b"vihf").await,
            Err(DmpError::Signer(_))
        ));
    }
}
