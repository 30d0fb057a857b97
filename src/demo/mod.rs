//! `samu-gateway demo`: the whole gateway on embedded defaults, with a throwaway PKI, so a
//! newcomer (or a script) can see it work without writing any configuration.
//!
//! The demo writes into its directory: `pki/` (certificates and keys), `gateway.toml` (the
//! effective configuration, state directory inside the demo directory) and, once the
//! listener is bound, `demo.json` (URL, CA, each desk's client certificate, the card's PIN
//! and the sample patients). It also runs, in-process, a virtual CPS card in the first
//! desk's reader and the development record service with bundled sample patients
//! (`upstream/`), so the whole flow works: login, break-glass, summary.

pub(crate) mod samples;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::Signer;
use crate::card::profile::CardProfile;
use crate::card::trust::TrustConfig;
use crate::config::{AuditConfig, Config, IntegrationConfig, StorageConfig};
use crate::dev_card::emulator::{CardIdentity, EmulatedCard};
use crate::dev_pki::{Authority, CardHolder, PkiError, write_file, write_pair};
use crate::http::{CentreConfig, ServerConfig, TlsConfig};
use crate::session::{CardsConfig, DeskConfig};
use crate::telemetry::{LogConfig, LogFormat};

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The demo directory could not be created or written.
    #[error("demo directory {path}: {source}")]
    Directory {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The virtual card could not be created.
    #[error(transparent)]
    Card(#[from] crate::card::CardError),
    /// The audit signing key could not be created.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Certificate generation or writing failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The configuration could not be written.
    #[error("cannot serialize the demo configuration: {0}")]
    Config(String),
    /// The sample case could not be sent.
    #[error("cannot send the sample case: {0}")]
    Case(String),
}

/// A demo desk's files, as written into `demo.json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemoDesk {
    /// Desk id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Client certificate (PEM) of the workstation mapped to the desk.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// The demo's virtual card.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemoCard {
    /// The desk whose reader holds it.
    pub desk: String,
    /// Its PIN.
    pub pin: String,
    /// Its holder's idNat.
    pub id_nat: String,
}

/// The demo's regulation software: its integration certificate and the case it sends.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemoIntegration {
    /// Its client certificate (PEM), CN `logiciel-regulation`.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The sample RS-EDA case it sends (`case.json`).
    pub case: PathBuf,
    /// That case's Hub id.
    pub case_id: String,
    /// The desk it is sent to: the card's.
    pub desk: String,
}

/// The demo card's PIN (a demo value, printed on purpose).
pub(crate) const DEMO_PIN: &str = "1234";

/// A sample patient of the demo's record service.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemoPatient {
    /// INS (demo OID).
    pub ins: String,
    /// Its OID.
    pub ins_oid: String,
    /// Name as the record service holds it.
    pub name: String,
    /// What the patient demonstrates (French).
    pub demonstrates: String,
}

/// The parts the service runs in-process for the demo.
pub(crate) struct DemoRuntime {
    /// The virtual card for the first desk.
    pub card: EmulatedCard,
    /// The development record service's bound listener and files.
    pub upstream: (std::net::TcpListener, samples::StandIn),
}

/// What the demo set up.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemoSetup {
    /// The demo directory.
    pub dir: PathBuf,
    /// The effective configuration file.
    pub config: PathBuf,
    /// The CA that signed the server certificate (give it to curl as `--cacert`).
    pub ca_cert: PathBuf,
    /// The server certificate (the demo's own client pins it).
    #[serde(skip)]
    pub server_cert: PathBuf,
    /// The desks.
    pub desks: Vec<DemoDesk>,
    /// The virtual card inserted at the first desk.
    pub card: DemoCard,
    /// The regulation software's certificate and sample case.
    pub integration: DemoIntegration,
    /// The sample patients of the demo record service.
    pub patients: Vec<DemoPatient>,
    /// Which record service the demo runs: `dmp` (the national record's protocol, the
    /// virtual card signing) or `fhir`.
    pub upstream: samples::DemoUpstream,
}

/// The desk whose reader holds the virtual card: the first one, where the service puts it.
const CARD_DESK: &str = "regul-1";

const DESKS: &[(&str, &str, &str)] = &[
    (CARD_DESK, "Régulation 1", "Desk0 00 00"),
    ("regul-2", "Régulation 2", "Desk1 00 00"),
];

/// Creates the PKI and the configuration in `dir` (a fresh kept temp dir if `None`).
/// Returns what it wrote and the virtual card, which the caller hands to the service.
pub(crate) fn setup(
    dir: Option<&Path>,
    port: u16,
    upstream: samples::DemoUpstream,
) -> Result<(DemoSetup, DemoRuntime), DemoError> {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => tempfile::Builder::new()
            .prefix("samu-gateway-demo-")
            .tempdir()
            .map_err(|source| DemoError::Directory {
                path: std::env::temp_dir(),
                source,
            })?
            .keep(),
    };
    let dir = std::path::absolute(&dir).map_err(|source| DemoError::Directory {
        path: dir.clone(),
        source,
    })?;
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).map_err(|source| DemoError::Directory {
        path: pki_dir.clone(),
        source,
    })?;

    let server_ca = Authority::new("samu-gateway demo server CA")?;
    let ca_cert = pki_dir.join("server-ca.pem");
    write_file(&ca_cert, server_ca.cert_pem(), 0o644)?;
    let (server_cert, server_key) = write_pair(
        &pki_dir,
        "server",
        &server_ca.issue_server(&["localhost", "127.0.0.1"])?,
    )?;
    let workstation_ca = Authority::new("samu-gateway demo workstation CA")?;
    let workstation_ca_path = pki_dir.join("workstation-ca.pem");
    write_file(&workstation_ca_path, workstation_ca.cert_pem(), 0o644)?;

    let mut desks = Vec::new();
    let mut desk_configs = Vec::new();
    for (id, name, reader) in DESKS {
        let cn = format!("poste-{id}");
        let (cert, key) = write_pair(
            &pki_dir,
            &format!("desk-{id}"),
            &workstation_ca.issue_client(&cn)?,
        )?;
        desks.push(DemoDesk {
            id: (*id).into(),
            name: (*name).into(),
            cert,
            key,
        });
        desk_configs.push(DeskConfig {
            id: (*id).into(),
            name: (*name).into(),
            reader: (*reader).into(),
            workstation_cn: cn,
            workstation_sha256: None,
            pin_entry: Default::default(),
            pkcs11_token: None,
        });
    }
    let integration = integration(&dir, &pki_dir, &workstation_ca)?;
    let (card_ca, card_crl, card) = virtual_card(&pki_dir)?;
    let signing_key = pki_dir.join("audit-signing.key");
    let _ = std::fs::remove_file(&signing_key);
    Signer::generate(&signing_key)?;
    let record = samples::record_service(&dir, &pki_dir, upstream, &card_ca)?;
    let cache_key = pki_dir.join("cache.key");
    let _ = std::fs::remove_file(&cache_key);
    crate::cache::sealed::MasterKey::generate(&cache_key)
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let config = Config {
        centre: CentreConfig {
            structure_id: "10000000000".into(),
            name: "SAMU de démonstration".into(),
        },
        server: ServerConfig {
            listen: format!("127.0.0.1:{port}"),
            // Any free port: two demos (or a demo and a gateway) may share a machine.
            management_listen: "127.0.0.1:0".into(),
            ..ServerConfig::default()
        },
        tls: TlsConfig {
            server_cert,
            server_key: server_key.into(),
            workstation_ca: workstation_ca_path,
            workstation_crls: Vec::new(),
            workstation_stale_crl: crate::card::trust::StaleCrlPolicy::Refuse,
            workstation_crl_refresh_secs: 3600,
        },
        storage: StorageConfig {
            state_dir: dir.join("state"),
        },
        audit: AuditConfig::with_key(signing_key.into()),
        upstream: Some(record.config),
        dmp: record.dmp,
        compliance: Default::default(),
        break_glass: Default::default(),
        cases: Default::default(),
        limits: Default::default(),
        cache: crate::cache::CacheConfig {
            master_key: Some(cache_key.into()),
            ..Default::default()
        },
        cards: Some(CardsConfig::new(TrustConfig::new(
            vec![card_ca],
            vec![card_crl],
        ))),
        // The regulation software may send cases; no roster, so anyone with the card logs in.
        integration: Some(IntegrationConfig {
            cn: INTEGRATION_CN.into(),
            sha256: None,
        }),
        roster: None,
        log: LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        },
        desks: desk_configs,
    };
    let config_path = dir.join("gateway.toml");
    let text = config
        .to_toml()
        .map_err(|e| DemoError::Config(e.to_string()))?;
    write_file(
        &config_path,
        &format!("# Written by `samu-gateway demo`.\n{text}"),
        0o644,
    )?;
    let card_at = DemoCard {
        desk: CARD_DESK.into(),
        pin: DEMO_PIN.into(),
        id_nat: DEMO_ID_NAT.into(),
    };
    let setup = DemoSetup {
        dir,
        config: config_path,
        ca_cert,
        server_cert: config.tls.server_cert.clone(),
        desks,
        card: card_at,
        integration,
        patients: record.patients,
        upstream,
    };
    let runtime = DemoRuntime {
        card,
        upstream: (record.listener, record.options),
    };
    Ok((setup, runtime))
}

const DEMO_ID_NAT: &str = "810002813839";

/// The CN of the demo regulation software's integration certificate.
const INTEGRATION_CN: &str = "logiciel-regulation";

/// The regulation software's certificate (from the workstation CA, mapped to no desk) and
/// its sample case, written as `case.json` for curl.
fn integration(
    dir: &Path,
    pki_dir: &Path,
    workstation_ca: &Authority,
) -> Result<DemoIntegration, DemoError> {
    let (cert, key) = write_pair(
        pki_dir,
        "integration",
        &workstation_ca.issue_client(INTEGRATION_CN)?,
    )?;
    let case = dir.join("case.json");
    let text = serde_json::to_string_pretty(&samples::sample_case(time::OffsetDateTime::now_utc()))
        .map_err(|e| DemoError::Config(e.to_string()))?;
    write_file(&case, &text, 0o644)?;
    Ok(DemoIntegration {
        cert,
        key,
        case,
        case_id: samples::CASE_ID.into(),
        desk: CARD_DESK.into(),
    })
}

/// A card CA, its (empty) CRL, and a virtual CPS card it issued, for the first desk.
fn virtual_card(pki_dir: &Path) -> Result<(PathBuf, PathBuf, EmulatedCard), DemoError> {
    let ca = Authority::new("samu-gateway demo CPS CA")?;
    let (ca_path, crl_path) = (pki_dir.join("card-ca.pem"), pki_dir.join("card-ca.crl"));
    write_file(&ca_path, ca.cert_pem(), 0o644)?;
    write_file(&crl_path, &ca.crl(&[], 0, 7)?, 0o644)?;
    let identity = CardIdentity::generate(
        &ca,
        &CardHolder::physician(DEMO_ID_NAT, "Jeanne", "URGENTISTE"),
        (-1, 365),
    )?;
    Ok((
        ca_path,
        crl_path,
        EmulatedCard::new(CardProfile::default(), identity, DEMO_PIN)?,
    ))
}

#[derive(Serialize)]
struct Manifest<'a> {
    url: String,
    #[serde(flatten)]
    setup: &'a DemoSetup,
}

impl DemoSetup {
    /// The base URL once bound.
    pub(crate) fn url(addr: SocketAddr) -> String {
        format!("https://{addr}")
    }

    /// Writes `demo.json` atomically (scripts poll for it).
    pub(crate) fn write_manifest(&self, addr: SocketAddr) -> Result<PathBuf, DemoError> {
        let manifest = Manifest {
            url: Self::url(addr),
            setup: self,
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| DemoError::Config(e.to_string()))?;
        let path = self.dir.join("demo.json");
        let tmp = self.dir.join(".demo.json.tmp");
        write_file(&tmp, &text, 0o644)?;
        std::fs::rename(&tmp, &path).map_err(|source| DemoError::Directory {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Sends the sample case to the card's desk as the regulation software would: over
    /// HTTPS with the integration certificate, through the API, recorded like any case.
    pub(crate) async fn send_case(&self, addr: SocketAddr) -> Result<(), DemoError> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let files = |e: &dyn std::fmt::Display| DemoError::Case(e.to_string());
        let mut problems = Vec::new();
        let leaf = crate::tls::load_certs(&self.server_cert, "server_cert", &mut problems);
        let chain = crate::tls::load_certs(&self.integration.cert, "integration", &mut problems);
        let (Some(leaf), false) = (leaf.into_iter().next(), chain.is_empty()) else {
            let said: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(DemoError::Case(said.join("; ")));
        };
        let key = PrivateKeyDer::from_pem_file(&self.integration.key).map_err(|e| files(&e))?;
        let body = std::fs::read(&self.integration.case).map_err(|e| files(&e))?;
        let client = crate::http::probe::Probe::presenting(
            addr,
            leaf,
            Some((chain, key)),
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| files(&e))?;
        let path = format!("/api/v1/desks/{}/case", self.integration.desk);
        match client.post_json(&path, body).await.map_err(|e| files(&e))? {
            (201, _) => Ok(()),
            (status, answer) => Err(DemoError::Case(format!("{status}: {answer}"))),
        }
    }

    /// What the demo prints for a newcomer.
    /// `case_sent`: the sample case was sent at start (`demo --case`).
    pub(crate) fn banner(&self, addr: SocketAddr, case_sent: bool) -> String {
        let url = Self::url(addr);
        let Some(desk) = self.desks.first() else {
            return format!("samu-gateway demo is running at {url} (no desk configured)\n");
        };
        let curl = format!(
            "curl --cacert {} --cert {} --key {}",
            self.ca_cert.display(),
            desk.cert.display(),
            desk.key.display()
        );
        let integration = format!(
            "curl --cacert {} --cert {} --key {}",
            self.ca_cert.display(),
            self.integration.cert.display(),
            self.integration.key.display()
        );
        let case_url = format!("{url}/api/v1/desks/{}/case", self.integration.desk);
        let sent = if case_sent {
            " It was sent once at start\n   (--case); send it again with"
        } else {
            "\n   Send it with"
        };
        let cookies = self.dir.join("cookies.txt");
        let json = "-H 'content-type: application/json'";
        let first = self.patients.first();
        let patients: String = self
            .patients
            .iter()
            .map(|p| format!("  {}  {:<16} {}\n", p.ins, p.name, p.demonstrates))
            .collect();
        format!(
            "samu-gateway demo is running at {url}\n\
             \n\
             In a browser on this machine, open {url}/ (accept the demo's self-signed\n\
             certificate once). Demo only: connections from this machine without a client\n\
             certificate act for desk '{card_desk}', where the virtual card is (PIN {pin}).\n\
             \n\
             With curl and a workstation certificate, as on a real installation:\n\
             \n\
             1. See the desk state as workstation '{id}' would:\n\
             \n  {curl} {url}/api/v1/desk\n\
             \n\
             2. A virtual CPS card (PIN {pin}) is in that desk's reader; log in with it\n   \
             (the session cookie is kept in {cookies}):\n\
             \n  {curl} -c {cookies} {json} -d '{{\"pin\":\"{pin}\"}}' {url}/api/v1/session\n\
             \n\
             3. Break-glass access to a patient's critical summary:\n\
             \n  {curl} -b {cookies} {json} -d '{{\"ins\":\"{ins}\",\"ins_oid\":\"{oid}\",\"call_id\":\"DEMO-0001\",\"reason_code\":\"inconscient\",\"access_mode\":\"bris_de_glace\"}}' {url}/api/v1/break-glass\n\
             \n\
             Sample patients (INS, demo OID {oid}; try \"access_mode\":\"centre_15\" too):\n\
             {patients}\
             \n\
             4. The regulation software sends a case (RS-EDA, {case}) to desk '{case_desk}'\n   \
             with its integration certificate: the page shows it at once; choose the\n   \
             reason, then the patient it finds, Enter.{sent}:\n\
             \n  {integration} {json} --data-binary @{case} {case_url}\n\
             \n   \
             and close it (naming it: a close retried later must not close the next case)\n   \
             with:\n\
             \n  {integration} -X DELETE '{case_url}?case_id={case_id}'\n\
             \n\
             Liveness answers anyone: curl --cacert {ca} {url}/healthz\n\
             \n\
             Files: {dir} (demo.json, gateway.toml, case.json, pki/, upstream/). Stop with Ctrl-C; then e.g.\n  \
             samu-gateway --config {config} audit list\n",
            id = desk.id,
            card_desk = self.card.desk,
            ca = self.ca_cert.display(),
            cookies = cookies.display(),
            dir = self.dir.display(),
            config = self.config.display(),
            pin = self.card.pin,
            ins = first.map_or("", |p| p.ins.as_str()),
            oid = first.map_or("", |p| p.ins_oid.as_str()),
            case = self.integration.case.display(),
            case_desk = self.integration.desk,
            case_id = self.integration.case_id,
        )
    }
}
