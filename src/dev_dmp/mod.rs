//! `samu-gateway dev-dmp`: a stand-in for the national record (DMP) as professionals'
//! software reaches it, for the demo, the tests and centre IT's install checks. SOAP 1.2
//! over mutual TLS on four services (`patients`, `patientsPDQ`, `registry`,
//! `repository`); every request's VIHF is verified the way docs/dmp.md describes the DMP's
//! checks (signature, signing certificate trusted and a signature certificate, required
//! attributes, validity, mode against rights, patient named = patient asked for) and
//! refused with a SOAP fault carrying a code; per-patient document sets from a data
//! directory (CDA files and their metadata), oppositions, masked documents, closed records,
//! TD0.5 candidates, MTOM retrieval, injected faults and latency, and with `--record DIR`
//! every request written to a file. The fault codes are the stand-in's own where the DMP's
//! are not public (docs/dmp.md says which).
//!
//! Nothing here is used by `serve`.

mod answers;
mod checks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dev_upstream::ClientCertificate;

use crate::upstream::AccessMode;

/// What can go wrong starting the stand-in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DevDmpError {
    /// The data file or a document it names.
    #[error("data: {0}")]
    Data(String),
    /// Certificates and keys.
    #[error("TLS or keys: {0}")]
    Keys(String),
    /// Binding or serving.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One document of a patient's record.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DmpDocument {
    /// The CDA file, relative to the data file's directory.
    pub file: PathBuf,
    /// Its unique id (default: derived from its position).
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Type code (`60591-5`, `SYNTH`, `REMB`…).
    pub type_code: String,
    /// Its coding scheme.
    pub type_scheme: String,
    /// Format code (structured or `urn:ihe:iti:xds-sd:pdf:2008`…).
    pub format_code: String,
    /// `YYYYMMDDhhmmss`, UTC.
    pub creation_time: String,
    /// Title.
    pub title: String,
    /// Author, `Given FAMILY`.
    #[serde(default)]
    pub author: Option<String>,
    /// Masked from professionals (`MASQUE_PS`).
    #[serde(default)]
    pub masked: bool,
    /// The patient id the registry lists it under (`XDSDocumentEntry.patientId`, a CX);
    /// default: its patient's. Another patient's stands in for a registry that mixes
    /// records up.
    #[serde(default)]
    pub filed_under: Option<String>,
}

/// One patient of the stand-in.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DmpPatient {
    /// INS (15 characters).
    pub ins: String,
    /// Its OID.
    pub ins_oid: String,
    /// Birth name.
    pub family: String,
    /// First names.
    pub given: Vec<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `F`, `M`.
    pub gender: String,
    /// The record is closed.
    #[serde(default)]
    pub closed: bool,
    /// Access modes the patient opposed.
    #[serde(default)]
    pub opposed: Vec<AccessMode>,
    /// Modes in which the patient lets professionals read masked documents.
    #[serde(default)]
    pub masked_readable_in: Vec<AccessMode>,
    /// The documents.
    #[serde(default)]
    pub documents: Vec<DmpDocument>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(DmpPatient);

/// The data file: `{"patients": [...]}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevDmpData {
    /// The patients.
    pub patients: Vec<DmpPatient>,
}

/// How to run the stand-in (also its command line).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DevDmpOptions {
    /// Address to listen on (port 0: any free port; the first stdout line tells).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Patients data file (JSON: {"patients": [...]}, documents relative to it).
    #[arg(long)]
    pub data: PathBuf,
    /// Server certificate chain (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA the clients' TLS certificates must chain to (PEM): the structures' and, for
    /// `DIRECTE`, the cards'; repeatable.
    #[arg(long = "client-ca", required = true)]
    pub client_cas: Vec<PathBuf>,
    /// CA (or self-signed certificate) a VIHF signing certificate must be issued by
    /// (PEM); repeatable.
    #[arg(long = "signer-ca", required = true)]
    pub signer_cas: Vec<PathBuf>,
    /// Write every request received to a file in this directory.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

/// A fault injected into every answer until replaced (`PUT /_dev/fault`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum DmpFault {
    /// Answer normally.
    #[default]
    None,
    /// Wait, then answer normally.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// A SOAP fault with this DMP code.
    SoapFault {
        /// The subcode.
        code: String,
        /// The fault is the service's own (`env:Receiver`), not the request's
        /// (`env:Sender`, the default).
        #[serde(default)]
        receiver: bool,
    },
    /// This HTTP status with an HTML body.
    Status {
        /// e.g. 502, 503.
        status: u16,
    },
    /// Never answer (until the fault is lifted).
    Timeout,
    /// A 200 whose body is not XML.
    Garbage,
    /// Retrievals answer without this document (a partial success naming it an error),
    /// the others as usual.
    Withhold {
        /// Its unique id.
        unique_id: String,
    },
    /// Tests of existence answer about this patient, whoever was asked for (a mix-up on
    /// the way).
    ExistenceAbout {
        /// The INS of the patient the answers are about.
        ins: String,
    },
    /// Answers name another request in `wsa:RelatesTo` (a proxy that crossed two
    /// requests' answers).
    Unrelated,
    /// Retrievals answer this document with another one's bytes (a repository that mixes
    /// documents up), the others as usual.
    Substitute {
        /// The document asked for.
        unique_id: String,
        /// The document whose bytes are returned in its place.
        with: String,
    },
}

#[derive(Clone)]
struct LoadedDocument {
    meta: DmpDocument,
    unique_id: String,
    bytes: Arc<Vec<u8>>,
}

#[derive(Clone)]
struct LoadedPatient {
    patient: DmpPatient,
    documents: Vec<LoadedDocument>,
}

/// The repository every document is in.
const REPOSITORY: &str = "1.2.250.1.213.4.1.1.1.2";

struct DevState {
    patients: RwLock<Vec<LoadedPatient>>,
    signer_cas: Vec<Vec<u8>>,
    fault: Mutex<DmpFault>,
    record: Option<PathBuf>,
    requests: AtomicU64,
    refused: AtomicU64,
    connections: crate::dev_upstream::OpenConnections,
}

/// A running stand-in.
pub(crate) struct DevDmp {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DevDmp {
    /// Loads everything, binds, and serves in the background.
    pub(crate) async fn start(options: DevDmpOptions) -> Result<Self, DevDmpError> {
        let listener = std::net::TcpListener::bind(options.listen)?;
        Self::start_on(listener, options).await
    }

    /// The same on a listener bound beforehand.
    pub(crate) async fn start_on(
        listener: std::net::TcpListener,
        options: DevDmpOptions,
    ) -> Result<Self, DevDmpError> {
        let state = Arc::new(load_state(&options)?);
        let open = state.connections.clone();
        let client_cas: Vec<&Path> = options.client_cas.iter().map(PathBuf::as_path).collect();
        let tls = crate::dev_upstream::server_tls(&options.cert, &options.key, &client_cas)
            .map_err(|e| DevDmpError::Keys(e.to_string()))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/{service}", post(soap))
            .route("/_dev/fault", put(set_fault))
            .route("/_dev/stats", get(stats))
            .with_state(state);
        let task = tokio::spawn(crate::dev_upstream::accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            app,
            open,
        ));
        Ok(Self { addr, task })
    }

    /// Serves until the task ends.
    pub(crate) async fn wait(self) {
        let _ = self.task.await;
    }
}

fn load_state(options: &DevDmpOptions) -> Result<DevState, DevDmpError> {
    let data_error = |path: &Path, e: &dyn std::fmt::Display| {
        DevDmpError::Data(format!("{}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(&options.data).map_err(|e| data_error(&options.data, &e))?;
    let data: DevDmpData =
        serde_json::from_str(&text).map_err(|e| data_error(&options.data, &e))?;
    let base = options.data.parent().unwrap_or(Path::new("."));
    let mut patients = Vec::new();
    for (p, patient) in data.patients.into_iter().enumerate() {
        let mut documents = Vec::new();
        for (d, meta) in patient.documents.iter().enumerate() {
            let path = base.join(&meta.file);
            let bytes = std::fs::read(&path).map_err(|e| data_error(&path, &e))?;
            documents.push(LoadedDocument {
                unique_id: meta
                    .unique_id
                    .clone()
                    .unwrap_or_else(|| format!("1.2.250.1.999.42.{}.{}", p + 1, d + 1)),
                meta: meta.clone(),
                bytes: Arc::new(bytes),
            });
        }
        patients.push(LoadedPatient { patient, documents });
    }
    let mut signer_cas = Vec::new();
    for path in &options.signer_cas {
        let mut problems = Vec::new();
        let certs = crate::tls::load_certs(path, "signer-ca", &mut problems);
        if let Some(problem) = problems.first() {
            return Err(DevDmpError::Keys(problem.reason.clone()));
        }
        signer_cas.extend(certs.into_iter().map(|c| c.to_vec()));
    }
    if let Some(dir) = &options.record {
        std::fs::create_dir_all(dir).map_err(|e| data_error(dir, &e))?;
    }
    Ok(DevState {
        patients: RwLock::new(patients),
        signer_cas,
        fault: Mutex::new(DmpFault::None),
        record: options.record.clone(),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        connections: Arc::default(),
    })
}

fn soap_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// A SOAP fault on `side` (`Sender`: the request's; `Receiver`: the service's own).
fn fault(state: &DevState, side: &str, code: &str, reason: &str) -> Response {
    state.refused.fetch_add(1, Ordering::Relaxed);
    soap_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        answers::fault(side, code, reason),
    )
}

/// Requests larger than this are refused: a DMP request is a few kilobytes.
const MAX_REQUEST: usize = 1024 * 1024;

async fn soap(
    State(state): State<Arc<DevState>>,
    UrlPath(service): UrlPath<String>,
    client: Option<Extension<ClientCertificate>>,
    body: Bytes,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(dir) = &state.record {
        let name = service
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect::<String>();
        let _ = std::fs::write(dir.join(format!("{n:05}-{name}.xml")), &body);
    }
    let injected = state.fault.lock().map(|f| f.clone()).unwrap_or_default();
    match injected {
        DmpFault::None
        | DmpFault::Withhold { .. }
        | DmpFault::Substitute { .. }
        | DmpFault::ExistenceAbout { .. }
        | DmpFault::Unrelated => {}
        DmpFault::Latency { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
        DmpFault::SoapFault { code, receiver } => {
            let side = if receiver { "Receiver" } else { "Sender" };
            // Addressed as the DMP addresses its faults: the gateway reads an opposition or
            // a closure only from a fault that names its request.
            let relates_to = std::str::from_utf8(&body).ok().and_then(checks::message_id);
            return answers::answering(relates_to, || {
                fault(&state, side, &code, "Erreur injectée")
            });
        }
        DmpFault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return (
                status,
                [(header::CONTENT_TYPE, "text/html")],
                "<html>down</html>",
            )
                .into_response();
        }
        DmpFault::Timeout => {
            // Silent until the fault is lifted, then answered as usual: the connections a
            // test left hanging end with the fault.
            while matches!(state.fault.lock().map(|f| f.clone()), Ok(DmpFault::Timeout)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        DmpFault::Garbage => {
            return soap_response(StatusCode::OK, "\u{1}not xml at all".into());
        }
    }
    if body.len() > MAX_REQUEST {
        return fault(
            &state,
            "Sender",
            "DMPRequestTooLarge",
            "Requête trop volumineuse",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return fault(&state, "Sender", "DMPMalformedRequest", "Requête illisible");
    };
    let client = client.as_ref().map(|Extension(c)| c.0.as_slice());
    let relates_to = if matches!(injected, DmpFault::Unrelated) {
        Some("urn:uuid:00000000-0000-4000-8000-000000000000".to_owned())
    } else {
        checks::message_id(text)
    };
    answers::answering(relates_to, || {
        match checks::handle(&state, &service, text, client) {
            Ok(answer) => answer,
            Err(refusal) => fault(&state, "Sender", refusal.code, refusal.reason),
        }
    })
}

async fn set_fault(State(state): State<Arc<DevState>>, Json(new): Json<DmpFault>) -> StatusCode {
    if let Ok(mut current) = state.fault.lock() {
        *current = new;
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<DevState>>) -> Json<serde_json::Value> {
    Json(json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "refused": state.refused.load(Ordering::Relaxed),
        "connections": state.connections.lock().map(|c| json!(*c)).unwrap_or_default(),
    }))
}
