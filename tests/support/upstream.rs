//! A real `samu-gateway dev-upstream` process: its own PKI (record-service CA and server
//! certificate, structure CA and the gateway's client certificate), an assertion key, a
//! data file of patients, on 127.0.0.1 port 0; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use samu_gateway::dev_pki::Authority;
use samu_gateway::upstream::UpstreamConfig;
use serde_json::{Value, json};

/// The test INS OID (accepted by gateways configured for tests only).
pub(crate) const TEST_OID: &str = "1.2.250.1.213.1.4.10";

/// A valid NIR for `serial` (13 digits, key computed).
pub(crate) fn nir(serial: u32) -> String {
    let body = format!("1800175{serial:06}");
    let n: u64 = body.parse().unwrap();
    format!("{body}{:02}", 97 - n % 97)
}

/// The birth name of test patient `serial` (letters only, as identity traits require).
pub(crate) fn family(serial: u32) -> String {
    let letter = |n: u32| char::from(b'A' + (n % 26) as u8);
    format!("FAMILLE{}{}", letter(serial / 26), letter(serial))
}

/// A patient of the dev upstream, serving `bundle` (a path).
pub(crate) fn patient(id: &str, serial: u32, bundle: &Path) -> Value {
    json!({
        "id": id,
        "ins": nir(serial),
        "ins_oid": TEST_OID,
        "family": family(serial),
        "given": ["Camille"],
        "birth_date": "1980-01-17",
        "gender": "female",
        "bundle": bundle,
    })
}

/// The project's synthetic bundle `name` (`tests/fixtures/summary`), its subject given the
/// INS of `serial` (the gateway checks the document is about the patient asked for),
/// written into `dir`; `edit` may alter it further.
pub(crate) fn own_bundle(
    dir: &Path,
    name: &str,
    serial: u32,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/summary")
        .join(name);
    let bytes = std::fs::read(source).unwrap();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut bundle: Value = serde_json::from_slice(bytes).unwrap();
    for entry in bundle["entry"].as_array_mut().unwrap() {
        if entry["fullUrl"] == "urn:uuid:patient-1" {
            entry["resource"]["identifier"][0]["value"] = nir(serial).into();
        }
    }
    edit(&mut bundle);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    path
}

/// The project's synthetic CDA document `name` (`tests/fixtures/cda`), about the patient
/// of `serial` (the fixtures name the INS of serial 1), written into `dir`.
pub(crate) fn own_cda(dir: &Path, name: &str, serial: u32) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cda")
        .join(name);
    let text = std::fs::read_to_string(source).unwrap();
    assert!(text.contains(&nir(1)), "{name} names the INS of serial 1");
    let path = dir.join(name);
    std::fs::write(&path, text.replace(&nir(1), &nir(serial))).unwrap();
    path
}

/// A running dev upstream and what a client needs to reach it.
pub(crate) struct DevUpstream {
    child: Child,
    pub dir: PathBuf,
    pub url: String,
    /// `[upstream]` settings for a client of this upstream (gateway side).
    pub config: UpstreamConfig,
    pub record_ca_der: CertificateDer<'static>,
    /// The gateway's structure certificate (for raw requests).
    pub structure: (CertificateDer<'static>, PrivateKeyDer<'static>),
    /// A structure-CA-issued certificate for another client.
    pub other_ca: Authority,
    _temp: tempfile::TempDir,
}

impl DevUpstream {
    /// Starts a dev upstream serving `patients` (their `bundle` paths absolute).
    pub(crate) fn start(patients: Vec<Value>) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let pki = super::stand_in_pki(&dir, "record");
        let (record_ca_path, cert, key, structure_ca) = (
            pki.ca.clone(),
            pki.cert.clone(),
            pki.key.clone(),
            pki.structure_ca.clone(),
        );
        let (client_cert, client_key, issued) = (
            pki.structure_cert.clone(),
            pki.structure_key.clone(),
            pki.structure,
        );
        let assertion_key = dir.join("assertion.key");
        let signer = samu_gateway::audit::Signer::generate(&assertion_key).unwrap();
        let public = dir.join("assertion.key.pub");
        std::fs::write(&public, signer.public_key_hex()).unwrap();
        let data = dir.join("patients.json");
        std::fs::write(&data, json!({ "patients": patients }).to_string()).unwrap();
        let mut command = Command::new(super::BIN);
        command
            .args(["dev-upstream", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--client-ca")
            .arg(&structure_ca)
            .arg("--assertion-key")
            .arg(&public);
        let (child, url) = super::spawn_stand_in(command, "dev-upstream");
        let config: UpstreamConfig = toml::from_str(&format!(
            "base_url = \"{url}\"\nserver_ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nassertion_key = \"{}\"\n",
            record_ca_path.display(),
            client_cert.display(),
            client_key.display(),
            assertion_key.display()
        ))
        .unwrap();
        let record_ca_der = CertificateDer::from_pem_file(&record_ca_path).unwrap();
        let structure = (
            issued.der.clone(),
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
        );
        Self {
            child,
            dir,
            url,
            config,
            record_ca_der,
            structure,
            other_ca: Authority::new("not the structure CA").unwrap(),
            _temp: temp,
        }
    }

    /// A raw HTTPS client presenting the gateway's structure certificate.
    pub(crate) fn raw_client(&self) -> reqwest::Client {
        super::tls_client(
            self.record_ca_der.clone(),
            Some((self.structure.0.clone(), self.structure.1.clone_key())),
        )
    }

    /// Replaces the fault applied to FHIR answers.
    pub(crate) async fn fault(&self, fault: Value) {
        let status = self
            .raw_client()
            .put(format!("{}/_dev/fault", self.url))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }

    /// Replaces patient `id`'s flags (oppositions, blocks, closure).
    pub(crate) async fn flags(&self, id: &str, flags: Value) {
        let status = self
            .raw_client()
            .put(format!("{}/_dev/patients/{id}/flags", self.url))
            .json(&flags)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }

    /// Request counters.
    pub(crate) async fn stats(&self) -> Value {
        super::get_json(&self.raw_client(), &format!("{}/_dev/stats", self.url))
            .await
            .1
    }

    /// The `[upstream]` section of a gateway configuration for this upstream.
    pub(crate) fn toml_section(&self) -> String {
        format!(
            "\n[upstream]\nbase_url = \"{}\"\nserver_ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nassertion_key = \"{}\"\naccept_test_ins = true\n",
            self.url,
            self.dir.join("record-ca.pem").display(),
            self.dir.join("structure.pem").display(),
            self.dir.join("structure.key").display(),
            self.dir.join("assertion.key").display(),
        )
    }
}

impl Drop for DevUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a test waits at most for anything the upstream does.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
