//! `samu-gateway dev-upstream`: a stand-in for the national record service, for the demo,
//! the tests and centre IT. Real HTTPS with mutual TLS (client certificates required, from
//! a configured CA), the access assertion verified on every FHIR call (signature by a
//! trusted key, validity, required attributes, patient named by the assertion), patients
//! and IPS bundles served from a data file, per-patient flags (oppositions, blocked
//! professionals, closed record), and fault injection through `PUT /_dev/fault`.
//!
//! It speaks the conventions of `upstream::outcome`, and nothing here is used by `serve`.

mod faults;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub(crate) use faults::Fault;

use crate::upstream::AccessMode;
use crate::upstream::assertion::{self, Claims};
use crate::upstream::outcome::{code, operation_outcome};

/// What can go wrong starting the dev upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DevUpstreamError {
    /// The data file or a bundle it names.
    #[error("data: {0}")]
    Data(String),
    /// Certificates, keys or trusted assertion keys.
    #[error("TLS or keys: {0}")]
    Keys(String),
    /// Binding or serving.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One patient the dev upstream knows.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevPatient {
    /// FHIR id.
    pub id: String,
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
    /// FHIR gender.
    pub gender: String,
    /// The IPS bundle file (relative to the data file's directory).
    pub bundle: PathBuf,
    /// Access modes the patient opposed (`centre_15`, `bris_de_glace`).
    #[serde(default)]
    pub opposed: Vec<AccessMode>,
    /// idNat of professionals the patient blocked.
    #[serde(default)]
    pub blocked_professionals: Vec<String>,
    /// The record is closed.
    #[serde(default)]
    pub record_closed: bool,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(DevPatient);

/// The data file: `{"patients": [...]}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevData {
    /// The patients.
    pub patients: Vec<DevPatient>,
}

/// How to run the dev upstream (also its command line).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DevUpstreamOptions {
    /// Address to listen on (port 0: any free port; the first stdout line tells).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Patients data file (JSON: {"patients": [...]}, bundles relative to it).
    #[arg(long)]
    pub data: PathBuf,
    /// Server certificate chain (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA the clients' (structure) certificates must chain to (PEM).
    #[arg(long)]
    pub client_ca: PathBuf,
    /// Trusted assertion public key file (hex, e.g. the .pub of `audit keygen`); repeatable.
    #[arg(long = "assertion-key", required = true)]
    pub assertion_keys: Vec<PathBuf>,
}

#[derive(Clone)]
struct Loaded {
    patient: DevPatient,
    bundle: Arc<Vec<u8>>,
}

/// The per-patient flags, replaceable at run time (`PUT /_dev/patients/{id}/flags`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Flags {
    /// Access modes opposed.
    #[serde(default)]
    pub opposed: Vec<AccessMode>,
    /// Blocked professionals (idNat).
    #[serde(default)]
    pub blocked_professionals: Vec<String>,
    /// Record closed.
    #[serde(default)]
    pub record_closed: bool,
}

/// Shared state of the handlers.
/// Assertion ids seen, and the same in the order seen with their expiry.
type SeenAssertions = (
    std::collections::HashSet<String>,
    std::collections::VecDeque<(u64, String)>,
);

struct DevState {
    patients: std::sync::RwLock<Vec<Loaded>>,
    trusted: Vec<Vec<u8>>,
    fault: Mutex<Fault>,
    summaries: AtomicU64,
    searches: AtomicU64,
    refused_assertions: AtomicU64,
    /// Assertion ids seen, and in the order seen with when each expires (assertions live
    /// one minute: the oldest go first): a replayed assertion is refused, as a record
    /// service does.
    seen: Mutex<SeenAssertions>,
}

/// A running dev upstream.
pub(crate) struct DevUpstream {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DevUpstream {
    /// Loads everything, binds, and serves in the background.
    pub(crate) async fn start(options: DevUpstreamOptions) -> Result<Self, DevUpstreamError> {
        let listener = std::net::TcpListener::bind(options.listen)?;
        Self::start_on(listener, options).await
    }

    /// The same on a listener bound beforehand (the demo binds it before writing the
    /// gateway's configuration, which names the port).
    pub(crate) async fn start_on(
        listener: std::net::TcpListener,
        options: DevUpstreamOptions,
    ) -> Result<Self, DevUpstreamError> {
        let state = Arc::new(load_state(&options)?);
        let tls = server_tls(&options.cert, &options.key, &[&options.client_ca])?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let app = router(state);
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls),
            app,
            Arc::default(),
        ));
        Ok(Self { addr, task })
    }

    /// Serves until the task ends (it does not, short of a panic).
    pub(crate) async fn wait(self) {
        let _ = self.task.await;
    }
}

fn load_state(options: &DevUpstreamOptions) -> Result<DevState, DevUpstreamError> {
    let text = std::fs::read_to_string(&options.data)
        .map_err(|e| DevUpstreamError::Data(format!("{}: {e}", options.data.display())))?;
    let data: DevData = serde_json::from_str(&text)
        .map_err(|e| DevUpstreamError::Data(format!("{}: {e}", options.data.display())))?;
    let base = options.data.parent().unwrap_or(Path::new("."));
    let mut patients = Vec::new();
    for patient in data.patients {
        let path = base.join(&patient.bundle);
        let bundle = std::fs::read(&path)
            .map_err(|e| DevUpstreamError::Data(format!("{}: {e}", path.display())))?;
        patients.push(Loaded {
            patient,
            bundle: Arc::new(bundle),
        });
    }
    let mut trusted = Vec::new();
    for path in &options.assertion_keys {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DevUpstreamError::Keys(format!("{}: {e}", path.display())))?;
        let key = crate::encoding::decode_hex(text.trim())
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                DevUpstreamError::Keys(format!("{}: not a hex Ed25519 public key", path.display()))
            })?;
        trusted.push(key);
    }
    if trusted.is_empty() {
        return Err(DevUpstreamError::Keys(
            "at least one trusted assertion key is needed".into(),
        ));
    }
    Ok(DevState {
        patients: std::sync::RwLock::new(patients),
        trusted,
        fault: Mutex::new(Fault::None),
        summaries: AtomicU64::new(0),
        searches: AtomicU64::new(0),
        refused_assertions: AtomicU64::new(0),
        seen: Mutex::default(),
    })
}

/// A server configuration presenting `cert`/`key` and requiring client certificates
/// issued by `client_ca` (the stand-in DMP uses it too).
pub(crate) fn server_tls(
    cert: &Path,
    key: &Path,
    client_cas: &[&Path],
) -> Result<Arc<rustls::ServerConfig>, DevUpstreamError> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let keys = |e: &dyn std::fmt::Display| DevUpstreamError::Keys(e.to_string());
    let mut problems = Vec::new();
    let chain = crate::tls::load_certs(cert, "cert", &mut problems);
    let cas: Vec<_> = client_cas
        .iter()
        .flat_map(|ca| crate::tls::load_certs(ca, "client-ca", &mut problems))
        .collect();
    if let Some(problem) = problems.first() {
        return Err(keys(&format!("{}: {}", problem.key, problem.reason)));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| keys(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| keys(&e))?;
    }
    let provider = crate::tls::provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| keys(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| keys(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| keys(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's TLS certificate (DER), in each request's extensions.
#[derive(Clone)]
pub(crate) struct ClientCertificate(pub Vec<u8>);

/// Open connections by the common name of their client certificate: what a test reads
/// to see a connection close.
pub(crate) type OpenConnections = Arc<Mutex<HashMap<String, u64>>>;

/// Counts one connection of `name` while alive.
struct Counted(OpenConnections, String);

impl Counted {
    fn new(open: OpenConnections, name: String) -> Self {
        if let Ok(mut all) = open.lock() {
            *all.entry(name.clone()).or_default() += 1;
        }
        Self(open, name)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Ok(mut all) = self.0.lock()
            && let Some(n) = all.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                all.remove(&self.1);
            }
        }
    }
}

/// The common name of a certificate, or "?".
pub(crate) fn common_name(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// Accepts TLS connections and serves `app` on each (the stand-in DMP uses it too), the
/// client's certificate in each request; `open` counts the connections alive.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    open: OpenConnections,
) {
    let http = Arc::new(Builder::new(TokioExecutor::new()));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, app, http, open) =
            (acceptor.clone(), app.clone(), http.clone(), open.clone());
        tokio::spawn(async move {
            // A client without a certificate from the CA fails here: mutual TLS.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| ClientCertificate(c.to_vec()));
            let _counted = Counted::new(
                open,
                peer.as_ref()
                    .map_or_else(|| "?".into(), |p| common_name(&p.0)),
            );
            let service = tower::service_fn(move |mut request: axum::extract::Request<_>| {
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                app.clone().oneshot(request)
            });
            let _ = http
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
        });
    }
}

fn router(state: Arc<DevState>) -> Router {
    Router::new()
        .route("/Patient/_search", post(search))
        .route("/Patient/{id}/$summary", get(summary))
        .route("/_dev/fault", put(set_fault))
        .route("/_dev/patients/{id}/flags", put(set_flags))
        .route("/_dev/stats", get(stats))
        .with_state(state)
}

fn fhir(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

fn refusal(status: StatusCode, issue: &str, detail: &str, diagnostics: &str) -> Response {
    fhir(status, &operation_outcome(issue, Some(detail), diagnostics))
}

/// The verified claims of the request's assertion, or the 401 answer.
fn authorize(
    state: &DevState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Claims, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = crate::clock::now().1 / 1000;
    let verdict = match token {
        // The stand-in answers as the authority it was reached by (HTTP/2 names it in the
        // request's URI, HTTP/1.1 in `Host`).
        Some(token) => {
            let authority = uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
                .unwrap_or_default();
            assertion::verify(token, &state.trusted, authority, now).map_err(|e| e.to_string())
        }
        None => Err("no access assertion".to_owned()),
    };
    let verdict = verdict.and_then(|claims| {
        let mut seen = state
            .seen
            .lock()
            .map_err(|_| "replay list poisoned".to_owned())?;
        let (ids, order) = &mut *seen;
        while order
            .front()
            .is_some_and(|(expires, _)| expires + assertion::CLOCK_SKEW_SECS < now)
        {
            if let Some((_, id)) = order.pop_front() {
                ids.remove(&id);
            }
        }
        if !ids.insert(claims.jti.clone()) {
            return Err("assertion replayed (its jti was seen)".to_owned());
        }
        order.push_back((claims.exp, claims.jti.clone()));
        Ok(claims)
    });
    verdict.map_err(|why| {
        state.refused_assertions.fetch_add(1, Ordering::Relaxed);
        Box::new(refusal(
            StatusCode::UNAUTHORIZED,
            "security",
            code::ASSERTION_INVALID,
            &why,
        ))
    })
}

async fn search(
    State(state): State<Arc<DevState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let claims = match authorize(&state, &headers, &uri) {
        Ok(claims) => claims,
        Err(refused) => return *refused,
    };
    state.searches.fetch_add(1, Ordering::Relaxed);
    // An INS look-up's assertion names that patient, as a summary's does.
    if let Some((_, identifier)) = form.iter().find(|(k, _)| k == "identifier") {
        let named = identifier
            .strip_prefix("urn:oid:")
            .and_then(|token| token.split_once('|'))
            .map(|(oid, ins)| format!("{ins}^^^&{oid}&ISO^NH"));
        if named.is_none() || claims.resource_id != named {
            return refusal(
                StatusCode::FORBIDDEN,
                "forbidden",
                code::ASSERTION_PATIENT_MISMATCH,
                "the assertion does not name the patient looked up",
            );
        }
    }
    if let Some(faulted) = faults::apply(&state.fault).await {
        return faulted;
    }
    let params: HashMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let matches: Vec<DevPatient> = state
        .patients
        .read()
        .map(|all| {
            all.iter()
                .map(|l| &l.patient)
                .filter(|p| matches_search(p, &params))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let entries: Vec<Value> = matches
        .iter()
        .map(|p| json!({"fullUrl": format!("urn:uuid:dev-{}", p.id), "resource": patient_resource(p), "search": {"mode": "match"}}))
        .collect();
    fhir(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries}),
    )
}

fn matches_search(patient: &DevPatient, params: &HashMap<&str, &str>) -> bool {
    if let Some(identifier) = params.get("identifier") {
        let (system, value) = identifier.split_once('|').unwrap_or(("", identifier));
        return value == patient.ins
            && (system.is_empty() || system.trim_start_matches("urn:oid:") == patient.ins_oid);
    }
    let same = |a: &str, b: &str| a.trim().to_lowercase() == b.trim().to_lowercase();
    let family_ok = params
        .get("family")
        .is_some_and(|f| same(f, &patient.family));
    let given_ok = params.get("given").is_some_and(|g| {
        let wanted = g.to_lowercase();
        patient
            .given
            .iter()
            .any(|n| wanted.split_whitespace().any(|w| w == n.to_lowercase()))
    });
    let birth_ok = params
        .get("birthdate")
        .is_some_and(|d| *d == patient.birth_date);
    let gender_ok = params.get("gender").is_none_or(|g| *g == patient.gender);
    family_ok && given_ok && birth_ok && gender_ok
}

fn patient_resource(p: &DevPatient) -> Value {
    json!({
        "resourceType": "Patient",
        "id": p.id,
        "identifier": [{"system": format!("urn:oid:{}", p.ins_oid), "value": p.ins}],
        "name": [{"use": "official", "family": p.family, "given": p.given}],
        "gender": p.gender,
        "birthDate": p.birth_date,
    })
}

async fn summary(
    State(state): State<Arc<DevState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let claims = match authorize(&state, &headers, &uri) {
        Ok(claims) => claims,
        Err(refused) => return *refused,
    };
    state.summaries.fetch_add(1, Ordering::Relaxed);
    if let Some(faulted) = faults::apply(&state.fault).await {
        return faulted;
    }
    let found = state
        .patients
        .read()
        .ok()
        .and_then(|all| all.iter().find(|l| l.patient.id == id).cloned());
    let Some(loaded) = found else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not-found",
            code::NO_RECORD,
            "no such patient",
        );
    };
    let patient = &loaded.patient;
    let resource_id = format!("{}^^^&{}&ISO^NH", patient.ins, patient.ins_oid);
    if claims.resource_id.as_deref() != Some(resource_id.as_str()) {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            code::ASSERTION_PATIENT_MISMATCH,
            "the assertion names another patient",
        );
    }
    if patient.record_closed {
        return refusal(
            StatusCode::GONE,
            "deleted",
            code::RECORD_CLOSED,
            "record closed",
        );
    }
    if patient
        .blocked_professionals
        .contains(&claims.subject_nameid)
    {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            code::PROFESSIONAL_BLOCKED,
            "professional blocked by the patient",
        );
    }
    if patient.opposed.contains(&claims.purpose_of_use) {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            code::PATIENT_OPPOSED,
            "the patient opposed this access mode",
        );
    }
    // The record's CDA documents are XML; bundles are FHIR JSON.
    let xml = loaded
        .bundle
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<');
    let content_type = if xml {
        "application/xml"
    } else {
        "application/fhir+json"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        loaded.bundle.as_ref().clone(),
    )
        .into_response()
}

async fn set_fault(State(state): State<Arc<DevState>>, Json(fault): Json<Fault>) -> StatusCode {
    if let Ok(mut current) = state.fault.lock() {
        *current = fault;
    }
    StatusCode::NO_CONTENT
}

async fn set_flags(
    State(state): State<Arc<DevState>>,
    UrlPath(id): UrlPath<String>,
    Json(flags): Json<Flags>,
) -> StatusCode {
    let Ok(mut all) = state.patients.write() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match all.iter_mut().find(|l| l.patient.id == id) {
        Some(loaded) => {
            loaded.patient.opposed = flags.opposed;
            loaded.patient.blocked_professionals = flags.blocked_professionals;
            loaded.patient.record_closed = flags.record_closed;
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn stats(State(state): State<Arc<DevState>>) -> Json<Value> {
    Json(json!({
        "summaries": state.summaries.load(Ordering::Relaxed),
        "searches": state.searches.load(Ordering::Relaxed),
        "refused_assertions": state.refused_assertions.load(Ordering::Relaxed),
    }))
}
