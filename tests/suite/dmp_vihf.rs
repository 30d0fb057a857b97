//! The VIHF assertion (issue 18, first part): `samu-gateway dmp vihf` signs it, the
//! reference implementation of XML signatures (`xmlsec1`, Debian package `xmlsec1`)
//! verifies it and refuses it once altered, the gateway's own verifier agrees both ways
//! (on its signatures and on signatures xmlsec1 made), and the assertion validates
//! against the SAML 2.0 schema when `../shared/fixtures` is there.

use std::path::{Path, PathBuf};
use std::process::Command;

use samu_gateway::xmldsig::{self, XmlDsigError};

use crate::support::dmp::{rsa_signer, signed_vihf};
use crate::support::{self, Pki, write_config};

const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";

/// `xmllint` checking `file` against `schema`, the fixtures' catalog resolving its imports.
fn schema_check(schema: &Path, file: &Path) -> std::process::Output {
    Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema)
        .arg(file)
        .env(
            "XML_CATALOG_FILES",
            schema.with_file_name("ws").join("catalog.xml"),
        )
        .output()
        .expect("xmllint runs (Debian package libxml2-utils)")
}

fn xmlsec1() -> Command {
    Command::new("xmlsec1")
}

use crate::support::dmp::xmlsec1_verifies;

#[test]
fn the_signed_assertion_verifies_with_xmlsec1_and_not_once_altered() {
    let dir = tempfile::tempdir().unwrap();
    let (assertion, cert) = signed_vihf(dir.path(), "centre_15");
    let signed = dir.path().join("vihf.xml");
    std::fs::write(&signed, &assertion).unwrap();
    let (ok, said) = xmlsec1_verifies(&signed, &cert);
    assert!(
        ok,
        "xmlsec1 refused the gateway's signature: {said}\n{assertion}"
    );

    // The gateway's verifier agrees, and names the signer's certificate.
    let doc = xmldsig::parse_signed(assertion.trim()).unwrap();
    let verified = xmldsig::verify_root(&doc).unwrap();
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.contains(&base64_lines(&verified.certificate)[..40]));

    // What the DMP reads, in the signed assertion.
    for expected in [
        "<NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified\">810002813839</NameID>",
        "180017500000134^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH",
        "code=\"centre_15\" codeSystem=\"1.2.250.1.213.1.1.4.248\"",
        "<AttributeValue>TEST-HOMOLOGATION-1</AttributeValue>",
        "<AttributeValue>1750000000</AttributeValue>",
        "CN=SAMU de test signature",
    ] {
        assert!(
            assertion.contains(expected),
            "{expected} missing:\n{assertion}"
        );
    }

    // Altered after signing: the purpose of use, a character of the patient's INS, the
    // signed element's ID. The reference implementation and the gateway both refuse.
    for (from, to) in [
        ("code=\"centre_15\"", "code=\"bris_de_glace\""),
        ("180017500000134^", "180017500000135^"),
        ("<AttributeValue>1750000000<", "<AttributeValue>1750000001<"),
    ] {
        let altered = assertion.replacen(from, to, 1);
        assert_ne!(altered, assertion);
        std::fs::write(&signed, &altered).unwrap();
        let (ok, _) = xmlsec1_verifies(&signed, &cert);
        assert!(!ok, "xmlsec1 accepted an assertion with {to}");
        let doc = xmldsig::parse_signed(altered.trim()).unwrap();
        assert_eq!(
            xmldsig::verify_root(&doc),
            Err(XmlDsigError::DigestMismatch),
            "{to}"
        );
    }
    // Another key's certificate in KeyInfo: the signature no longer verifies.
    let (_, other_cert) = rsa_signer(dir.path(), "other");
    let other = pem_body(&std::fs::read_to_string(&other_cert).unwrap());
    let mine = pem_body(&pem);
    let swapped = assertion.replacen(&mine, &other, 1);
    assert_ne!(swapped, assertion);
    let doc = xmldsig::parse_signed(swapped.trim()).unwrap();
    assert_eq!(xmldsig::verify_root(&doc), Err(XmlDsigError::BadSignature));
    // A second element claiming the signed ID (the start of a wrapping attack).
    let wrapped = assertion.replacen(
        "<Subject>",
        &format!("<Subject><Advice ID=\"{}\"/>", id_of(&assertion)),
        1,
    );
    let doc = xmldsig::parse_signed(wrapped.trim()).unwrap();
    assert!(matches!(
        xmldsig::verify_root(&doc),
        Err(XmlDsigError::Reference(_))
    ));

    // The SAML 2.0 assertion schema, when the shared fixtures are there; roles and the
    // purpose of use are HL7 v3 `CE` values, checked against the HL7 data types (the
    // fixtures' dmp-all.xsd imports both).
    let wrapper =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dmp/dmp-all.xsd");
    if !wrapper.exists() {
        support::skipped(&format!(
            "dmp_vihf: {} is absent; the assertion was not checked against the SAML schema",
            wrapper.display()
        ));
        return;
    }
    std::fs::write(&signed, &assertion).unwrap();
    let out = schema_check(&wrapper, &signed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the check can fail: the assertion without its required Version.
    std::fs::write(&signed, assertion.replacen(" Version=\"2.0\"", "", 1)).unwrap();
    let out = schema_check(&wrapper, &signed);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Version"));
}

/// The other way round: an assertion signed by xmlsec1 from a template written the way
/// other software writes them (prefixes, indentation, a comment, namespaces declared
/// where they are not used) is accepted by the gateway's verifier, and refused once
/// altered.
#[test]
fn the_gateway_verifies_what_xmlsec1_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = rsa_signer(dir.path(), "signature");
    let template = r##"<?xml version="1.0" encoding="UTF-8"?>
<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:unused="urn:example:unused" Version="2.0" IssueInstant="2026-12-04T06:00:00Z" ID="_tmpl1">
  <saml2:Issuer Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName">CN=SAMU de test signature</saml2:Issuer>
  <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
      <ds:Reference URI="#_tmpl1">
        <ds:Transforms>
          <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
          <ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        </ds:Transforms>
        <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <ds:DigestValue/>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue/>
    <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
  </ds:Signature>
  <!-- comments are not signed -->
  <saml2:Subject><saml2:NameID>810002813839</saml2:NameID></saml2:Subject>
  <saml2:AttributeStatement>
    <saml2:Attribute Name="urn:oasis:names:tc:xspa:1.0:subject:purposeofuse">
      <saml2:AttributeValue><PurposeOfUse xmlns="urn:hl7-org:v3" xsi:type="CE" code="centre_15" codeSystem="1.2.250.1.213.1.1.4.248"/></saml2:AttributeValue>
    </saml2:Attribute>
    <saml2:Attribute Name="urn:oasis:names:tc:xacml:2.0:resource:resource-id">
      <saml2:AttributeValue>180017500000134^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH</saml2:AttributeValue>
    </saml2:Attribute>
  </saml2:AttributeStatement>
</saml2:Assertion>
"##;
    let template_path = dir.path().join("template.xml");
    std::fs::write(&template_path, template).unwrap();
    let out = xmlsec1()
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!("{},{}", key.display(), cert.display()))
        .args(["--id-attr:ID", ASSERTION])
        .arg(&template_path)
        .output()
        .expect("xmlsec1 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = String::from_utf8(out.stdout).unwrap();
    let doc = xmldsig::parse_signed(&signed).unwrap();
    let verified = xmldsig::verify_root(&doc).unwrap_or_else(|e| panic!("{e}\n{signed}"));
    assert!(!verified.certificate.is_empty());
    // Comments are outside the signature; the attribute value is not.
    let commented = signed.replacen("comments are not signed", "a comment changed", 1);
    assert!(xmldsig::verify_root(&xmldsig::parse_signed(&commented).unwrap()).is_ok());
    let altered = signed.replacen("code=\"centre_15\"", "code=\"normal\"", 1);
    assert_eq!(
        xmldsig::verify_root(&xmldsig::parse_signed(&altered).unwrap()),
        Err(XmlDsigError::DigestMismatch)
    );
}

/// Signatures outside the one profile are refused by name, never half-checked.
#[test]
fn other_signature_profiles_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (assertion, _) = signed_vihf(dir.path(), "bris_de_glace");
    assert!(assertion.contains("code=\"bris_de_glace\""));
    for (from, to, named) in [
        (
            "xmldsig-more#rsa-sha256",
            "xmldsig#rsa-sha1",
            "SignatureMethod",
        ),
        ("xmlenc#sha256", "xmldsig#sha1", "DigestMethod"),
        (
            "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
            "",
            "transforms",
        ),
        ("URI=\"#", "URI=\"#x", "reference"),
    ] {
        let changed = assertion.replacen(from, to, 1);
        let refused =
            xmldsig::verify_root(&xmldsig::parse_signed(changed.trim()).unwrap()).unwrap_err();
        assert!(
            refused.to_string().contains(named),
            "{refused} (wanted {named})"
        );
    }
    // Hostile XML is refused before anything is canonicalised.
    let dtd = format!("<!DOCTYPE a [<!ENTITY x \"y\">]>{}", assertion.trim());
    assert!(matches!(
        xmldsig::parse_signed(&dtd),
        Err(XmlDsigError::Xml(_))
    ));
    // Configuration: the command names what is missing.
    let elsewhere = tempfile::tempdir().unwrap();
    let pki = Pki::new(elsewhere.path());
    let bare = write_config(elsewhere.path(), &pki, "", "");
    let (code, _, err) = support::run(
        &bare,
        &[
            "dmp",
            "vihf",
            "--ins",
            "180017500000134",
            "--mode",
            "centre_15",
            "--professional",
            "8",
            "--key",
            "k",
            "--cert",
            "c",
        ],
        &[],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no [dmp] section"), "{err}");
}

fn id_of(assertion: &str) -> String {
    let start = assertion.find(" ID=\"").unwrap() + 5;
    assertion[start..start + assertion[start..].find('"').unwrap()].to_owned()
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)
}
