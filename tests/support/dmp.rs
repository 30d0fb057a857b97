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
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::ContentCommitment,
    ];
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
