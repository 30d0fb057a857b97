//! What the DMP tests share: signing keys like a structure's, and assertions signed by
//! `samu-gateway dmp vihf`.

use std::path::{Path, PathBuf};

use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::{Pki, write_config};

/// The `[dmp]` section of the test configurations.
pub(crate) const DMP_SECTION: &str = "\n[dmp]\nbase_url = \"https://dmp.example\"\nserver_ca = \"/dev/null\"\nspecialty = \"SM26\"\nhomologation_number = \"TEST-HOMOLOGATION-1\"\n";

/// An RSA key (mode 0600) and its self-signed certificate, as a structure's signing
/// certificate would be: (key, certificate).
pub(crate) fn rsa_signer(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    rsa_key_and_cert(dir, name, true)
}

/// The same; without non-repudiation when `signature` is false (an authentication
/// certificate, as a card's other key has).
pub(crate) fn rsa_key_and_cert(dir: &Path, name: &str, signature: bool) -> (PathBuf, PathBuf) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("SAMU de test {name}"));
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "samu-gateway test structure",
    );
    params.key_usages = if signature {
        vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::ContentCommitment,
        ]
    } else {
        vec![rcgen::KeyUsagePurpose::DigitalSignature]
    };
    let cert = params.self_signed(&pair).unwrap();
    let key_path = dir.join(format!("{name}.key"));
    let cert_path = dir.join(format!("{name}.pem"));
    std::fs::write(&key_path, pem.as_bytes()).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    (key_path, cert_path)
}

/// A professional's two keys as a CPS card holds them, in software: the same holder in
/// both certificates, RSA, issued by one CA; the authentication certificate for TLS
/// client authentication, the signature certificate with non-repudiation.
pub(crate) struct SoftCard {
    pub ca: PathBuf,
    pub sign_key: PathBuf,
    pub sign_cert: PathBuf,
    pub auth_key: PathBuf,
    pub auth_cert: PathBuf,
}

impl SoftCard {
    /// The card of `id_nat`, files in `dir` named after `name`.
    pub(crate) fn new(dir: &Path, name: &str, id_nat: &str) -> Self {
        use samu_gateway::dev_pki::{Authority, CardHolder, write_file};
        let ca = Authority::new(&format!("samu-gateway test card CA {name}")).unwrap();
        let holder = CardHolder::physician(id_nat, "Jeanne", "URGENTISTE");
        let mut issued = Vec::new();
        for signature in [true, false] {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
            let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                .unwrap();
            let cert = if signature {
                ca.issue_card_signature(&holder, &pair, (-1, 365))
            } else {
                ca.issue_card(&holder, &pair, (-1, 365))
            }
            .unwrap();
            let stem = format!("{name}-{}", if signature { "sign" } else { "auth" });
            let (key_path, cert_path) = (
                dir.join(format!("{stem}.key")),
                dir.join(format!("{stem}.pem")),
            );
            write_file(&key_path, &pem, 0o600).unwrap();
            write_file(&cert_path, &cert.cert_pem, 0o644).unwrap();
            issued.push((key_path, cert_path));
        }
        let ca_path = dir.join(format!("{name}-ca.pem"));
        write_file(&ca_path, ca.cert_pem(), 0o644).unwrap();
        let (auth_key, auth_cert) = issued.pop().unwrap();
        let (sign_key, sign_cert) = issued.pop().unwrap();
        Self {
            ca: ca_path,
            sign_key,
            sign_cert,
            auth_key,
            auth_cert,
        }
    }
}

/// An assertion signed by `dmp vihf` for the test INS in `mode`, with a fresh key:
/// (assertion, the signer's certificate).
pub(crate) fn signed_vihf(dir: &Path, mode: &str) -> (String, PathBuf) {
    let pki = Pki::new(dir);
    let config = write_config(dir, &pki, "", DMP_SECTION);
    let (key, cert) = rsa_signer(dir, "signature");
    let (code, assertion, err) = super::run(
        &config,
        &[
            "dmp",
            "vihf",
            "--ins",
            "180017500000134",
            "--ins-oid",
            "1.2.250.1.213.1.4.10",
            "--mode",
            mode,
            "--professional",
            "810002813839",
            "--name",
            "Jeanne URGENTISTE",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    (assertion, cert)
}

/// `xmlsec1 --verify` of the SAML assertion in `file` with `cert` as the only trusted
/// key: (success, what it said).
pub(crate) fn xmlsec1_verifies(file: &Path, cert: &Path) -> (bool, String) {
    let out = std::process::Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg(cert)
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ])
        .arg(file)
        .output()
        .expect("xmlsec1 runs (Debian package xmlsec1, installed by .ci/deps)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `xmlsec1 --verify` of the VIHF in a request dev-dmp recorded (written beside it),
/// with `certificate`: (success, what it said).
pub(crate) fn xmlsec1_verifies_recorded(request: &Path, certificate: &Path) -> (bool, String) {
    let text = std::fs::read_to_string(request).unwrap();
    let start = text.find("<Assertion").unwrap();
    let end = text.find("</Assertion>").unwrap() + "</Assertion>".len();
    let assertion = request.with_extension("assertion.xml");
    std::fs::write(&assertion, &text[start..end]).unwrap();
    xmlsec1_verifies(&assertion, certificate)
}

/// A running `samu-gateway dev-dmp` and what a client needs to reach it.
pub(crate) struct DevDmp {
    child: std::process::Child,
    pub url: String,
    pub dir: PathBuf,
    /// The CA of the stand-in's TLS certificate (PEM).
    pub ca: PathBuf,
    /// The structure's TLS client certificate and key (PEM, key mode 0600).
    pub structure_cert: PathBuf,
    pub structure_key: PathBuf,
    record_ca: rustls::pki_types::CertificateDer<'static>,
    structure: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    _temp: tempfile::TempDir,
}

impl Drop for DevDmp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevDmp {
    /// Starts dev-dmp serving `patients` (documents relative to `documents`), trusting
    /// the VIHF signers `signers` (PEM files: CAs or certificates, trusted for the cards'
    /// TLS connections too) and the structure's CA, recording requests.
    pub(crate) fn start(patients: serde_json::Value, documents: &Path, signers: &[&Path]) -> Self {
        Self::start_trusting(patients, documents, signers, signers)
    }

    /// The same, the cards' TLS connections trusted through `client_cas` alone and the
    /// VIHF signers through `signers` alone.
    pub(crate) fn start_trusting(
        patients: serde_json::Value,
        documents: &Path,
        client_cas: &[&Path],
        signers: &[&Path],
    ) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let pki = super::stand_in_pki(&dir, "dmp");
        let (record_ca_path, cert, key, structure_ca) = (
            pki.ca.clone(),
            pki.cert.clone(),
            pki.key.clone(),
            pki.structure_ca.clone(),
        );
        let (structure_cert, structure_key, issued) = (
            pki.structure_cert.clone(),
            pki.structure_key.clone(),
            pki.structure,
        );
        let data = documents.join("dmp-patients.json");
        std::fs::write(
            &data,
            serde_json::json!({ "patients": patients }).to_string(),
        )
        .unwrap();
        let mut command = std::process::Command::new(super::BIN);
        command
            .args(["dev-dmp", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--client-ca")
            .arg(&structure_ca)
            .arg("--record")
            .arg(dir.join("requests"));
        for signer in signers {
            command.arg("--signer-ca").arg(signer);
        }
        for ca in client_cas {
            command.arg("--client-ca").arg(ca);
        }
        let (child, url) = super::spawn_stand_in(command, "dev-dmp");
        Self {
            child,
            url,
            dir,
            ca: record_ca_path.clone(),
            structure_cert,
            structure_key,
            record_ca: rustls::pki_types::CertificateDer::from_pem_file(&record_ca_path).unwrap(),
            structure: (
                issued.der.clone(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                    .unwrap(),
            ),
            _temp: temp,
        }
    }

    /// An HTTPS client presenting the structure's TLS certificate.
    pub(crate) fn client(&self) -> reqwest::Client {
        super::tls_client(
            self.record_ca.clone(),
            Some((self.structure.0.clone(), self.structure.1.clone_key())),
        )
    }

    /// An HTTPS client presenting `card`'s authentication certificate.
    pub(crate) fn card_client(&self, card: &SoftCard) -> reqwest::Client {
        use rustls::pki_types::pem::PemObject as _;
        super::tls_client(
            self.record_ca.clone(),
            Some((
                rustls::pki_types::CertificateDer::from_pem_file(&card.auth_cert).unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(&card.auth_key).unwrap(),
            )),
        )
    }

    /// POSTs `envelope` to `service` over the structure's connection: (status, content
    /// type, body).
    pub(crate) async fn post(&self, service: &str, envelope: String) -> (u16, String, Vec<u8>) {
        self.post_with(&self.client(), service, envelope).await
    }

    /// The same through `client`.
    pub(crate) async fn post_with(
        &self,
        client: &reqwest::Client,
        service: &str,
        envelope: String,
    ) -> (u16, String, Vec<u8>) {
        let response = client
            .post(format!("{}/{service}", self.url))
            .header("content-type", "application/soap+xml; charset=UTF-8")
            .body(envelope)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            status,
            content_type,
            response.bytes().await.unwrap().to_vec(),
        )
    }

    /// The stand-in's counters: requests, refusals, open connections by the common name
    /// of their client certificate.
    pub(crate) async fn stats(&self) -> serde_json::Value {
        self.client()
            .get(format!("{}/_dev/stats", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Open connections whose client certificate's common name is `cn`.
    pub(crate) async fn connections_of(&self, cn: &str) -> u64 {
        self.stats().await["connections"][cn].as_u64().unwrap_or(0)
    }

    /// Replaces the fault injected into every answer.
    pub(crate) async fn fault(&self, fault: serde_json::Value) {
        let status = self
            .client()
            .put(format!("{}/_dev/fault", self.url))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
}

/// The test patients' INS, OID.
pub(crate) const INS: &str = "180017500000134";
/// A second patient, opposed to regulation access.
pub(crate) const OTHER_INS: &str = "280017500000181";
/// The test INS OID.
pub(crate) const TEST_OID: &str = "1.2.250.1.213.1.4.10";

pub(crate) fn cda(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cda")
        .join(name)
}

/// Two patients: the first with an IPS-FR, a masked VSM and a reimbursement history, the
/// masked document readable in break-glass only; the second opposed to regulation access.
pub(crate) fn patients() -> serde_json::Value {
    serde_json::json!([
        {"ins": INS, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camille"],
         "birth_date": "1980-01-17", "gender": "F", "masked_readable_in": ["bris_de_glace"],
         "documents": [
            {"file": cda("ips-fr-allergy-treatment-problem.xml"), "unique_id": "1.2.250.1.999.1.1",
             "type_code": "60591-5", "type_scheme": "2.16.840.1.113883.6.1", "format_code": "urn:ihe:pcc:ips:2020",
             "creation_time": "20261120090000", "title": "Synthèse médicale", "author": "Jeanne TRAITANTE"},
            {"file": cda("vsm-nested-long-term-treatment.xml"), "unique_id": "1.2.250.1.999.1.2",
             "type_code": "SYNTH", "type_scheme": "1.2.250.1.213.1.1.4.12", "format_code": "urn:asip:ci-sis:vsm:2012",
             "creation_time": "20250101090000", "title": "VSM", "masked": true},
            {"file": cda("hr-reimbursement-history.xml"), "unique_id": "1.2.250.1.999.1.3",
             "type_code": "REMB", "type_scheme": "1.2.250.1.213.1.1.4.12", "format_code": "urn:asip:ci-sis:hr:2019",
             "creation_time": "20261101000000", "title": "Historique des remboursements"}
         ]},
        {"ins": OTHER_INS, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camilla"],
         "birth_date": "1980-01-17", "gender": "F", "opposed": ["centre_15"], "documents": []}
    ])
}

/// A gateway on the DMP path (`DIRECTE`, the card in `pcscd`'s first reader signing) to
/// `dmp`, with the test INS accepted.
pub(crate) fn dmp_gateway(
    pcscd: &super::pcsc::Pcscd,
    card: &super::pcsc::VirtualCard,
    dmp: &DevDmp,
) -> super::Gateway {
    dmp_gateway_with(pcscd, card, dmp, "", &[])
}

/// The same, `extra` appended to its configuration, `env` added to its environment.
pub(crate) fn dmp_gateway_with(
    pcscd: &super::pcsc::Pcscd,
    card: &super::pcsc::VirtualCard,
    dmp: &DevDmp,
    extra: &str,
    env: &[(&str, &str)],
) -> super::Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // A card issued by an intermediate (`card emulate --intermediate`) logs in with it
    // configured, and the intermediate's own list.
    let (intermediate, intermediate_crl) = (
        card.dir.join("card-intermediate.pem"),
        card.dir.join("card-intermediate.crl"),
    );
    let trust = if intermediate.exists() {
        format!(
            "intermediates = [\"{}\"]\ncrls = [\"{}\", \"{}\"]",
            intermediate.display(),
            card.dir.join("card-ca.crl").display(),
            intermediate_crl.display(),
        )
    } else {
        format!("crls = [\"{}\"]", card.dir.join("card-ca.crl").display())
    };
    let extra = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\n{trust}\n\n[upstream]\nprotocol = \"dmp\"\naccept_test_ins = true\n\n[dmp]\nbase_url = \"{}\"\nserver_ca = \"{}\"\nspecialty = \"SM26\"\nhomologation_number = \"TEST-HOMOLOGATION-1\"\n",
        card.dir.join("card-ca.pem").display(),
        dmp.url,
        dmp.ca.display(),
    ) + extra;
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let mut all = vec![(key, value.as_str())];
    all.extend_from_slice(env);
    super::Gateway::launch(dir, pki, config, &all)
}
