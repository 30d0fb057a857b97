//! The stand-in DMP (`samu-gateway dev-dmp`, issue 18): over real mutual TLS it answers
//! the four transactions for an assertion it accepts, and refuses like the DMP what the
//! issue names: a tampered assertion, an assertion signed with an authentication key, a
//! wrong patient, a document search in indirect mode; masked documents and oppositions
//! follow the patient's choices; every request is recorded.

use std::path::{Path, PathBuf};

use samu_gateway::patient::{Ins, InsPolicy};
use samu_gateway::upstream::AccessMode;
use samu_gateway::upstream::dmp::soap::{self, Addressing};
use samu_gateway::upstream::dmp::vihf::{VihfSettings, VihfSubject};
use samu_gateway::upstream::dmp::{AuthenticationMode, DmpError, SoftwareSigner, hl7v3, mtom, xds};

use crate::support::dmp::{
    DevDmp, INS, OTHER_INS, SoftCard, TEST_OID, cda, patients, rsa_key_and_cert,
};

struct Signer {
    signer: SoftwareSigner,
}

impl Signer {
    fn new(dir: &Path, name: &str, signature: bool) -> (Self, PathBuf) {
        let (key, cert) = rsa_key_and_cert(dir, name, signature);
        (Self::load(&key, &cert), cert)
    }

    fn load(key: &Path, cert: &Path) -> Self {
        Self {
            signer: SoftwareSigner::load(key, cert).unwrap(),
        }
    }

    fn vihf(
        &self,
        mode: AccessMode,
        authentication: AuthenticationMode,
        ins: Option<&str>,
    ) -> String {
        let professional = crate::support::physician();
        let ins = ins.map(|i| {
            Ins::parse(
                i,
                TEST_OID,
                InsPolicy {
                    accept_test_oids: true,
                },
            )
            .unwrap()
        });
        let settings = VihfSettings {
            structure_id: "1750000000".into(),
            activity_sector: "SA01".into(),
            specialty: Some("SM26".into()),
            software_name: "samu-gateway".into(),
            software_version: "test".into(),
            homologation_number: Some("TEST-1".into()),
            software_id: None,
            vihf_version: "3.0".into(),
            authentication_mode: authentication,
            lifetime_secs: 300,
        };
        self.signer
            .vihf(
                &settings,
                VihfSubject {
                    professional: &professional,
                    mode,
                    patient: ins.as_ref(),
                },
            )
            .unwrap()
    }
}

fn envelope(
    action: &str,
    assertion: &str,
    body: impl FnOnce(&mut quick_xml::Writer<Vec<u8>>) -> std::io::Result<()>,
) -> String {
    soap::envelope(
        Addressing {
            action,
            to: "https://dmp.example/",
            message_id: "urn:uuid:5b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
        },
        assertion,
        body,
    )
    .unwrap()
}

fn transmission() -> hl7v3::Transmission<'static> {
    hl7v3::Transmission {
        message_id: "5b4e28ba-2fa1-4d3b-a3f5-ef19b5a76330",
        query_id: "5b4e28ba-2fa1-4d3b-a3f5-ef19b5a76331",
        created: "20261204060000",
        structure_id: "1750000000",
    }
}

fn fault_code(status: u16, body: &[u8]) -> String {
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(body));
    let text = String::from_utf8(body.to_vec()).unwrap();
    let doc = soap::parse(&text).unwrap();
    match soap::body(&doc) {
        Err(DmpError::Fault(fault)) => fault.most_specific().to_owned(),
        other => panic!("not a fault: {other:?}"),
    }
}

fn find(assertion: &str, ins: &str) -> String {
    envelope(
        xds::FIND_ACTION,
        assertion,
        xds::find_documents_body(&format!("{ins}^^^&{TEST_OID}&ISO^NH"), &[]),
    )
}

#[tokio::test]
async fn dev_dmp_answers_an_accepted_assertion_and_refuses_like_the_dmp() {
    let dir = tempfile::tempdir().unwrap();
    // A software card: its signature key signs, its authentication key the connection.
    let card = SoftCard::new(dir.path(), "card", "810002813839");
    let signer = Signer::load(&card.sign_key, &card.sign_cert);
    let auth_only = Signer::load(&card.auth_key, &card.auth_cert);
    let dmp = DevDmp::start(patients(), dir.path(), &[card.ca.as_path()]);
    let by_card = dmp.card_client(&card);

    // TD0.2: the record exists, the regulation opposition of the other patient is said.
    let assertion = signer.vihf(AccessMode::Centre15, AuthenticationMode::Directe, Some(INS));
    let (status, _, body) = dmp
        .post_with(
            &by_card,
            "patients",
            envelope(
                hl7v3::EXISTENCE_ACTION,
                &assertion,
                hl7v3::existence_body(transmission(), TEST_OID, INS),
            ),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).unwrap();
    let doc = soap::parse(&text).unwrap();
    let existence = hl7v3::read_existence(soap::body(&doc).unwrap()).unwrap();
    assert!(existence.found && !existence.closed);
    assert!(existence.oppositions.is_empty());
    // Who it is about is read (and never printed).
    assert!(existence.about.include(TEST_OID, INS));
    assert!(!existence.about.include(TEST_OID, OTHER_INS));
    assert!(!format!("{existence:?}").contains(INS));
    let other = signer.vihf(
        AccessMode::Centre15,
        AuthenticationMode::Directe,
        Some(OTHER_INS),
    );
    let (_, _, body) = dmp
        .post_with(
            &by_card,
            "patients",
            envelope(
                hl7v3::EXISTENCE_ACTION,
                &other,
                hl7v3::existence_body(transmission(), TEST_OID, OTHER_INS),
            ),
        )
        .await;
    let text = String::from_utf8(body).unwrap();
    let doc = soap::parse(&text).unwrap();
    assert_eq!(
        hl7v3::read_existence(soap::body(&doc).unwrap())
            .unwrap()
            .oppositions,
        ["OPPOSITION_ACCES_URGENCE"]
    );

    // TD3.1 in regulation: the IPS-FR and the reimbursement history; the masked VSM is not
    // listed (the patient allows it in break-glass only).
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&assertion, INS))
        .await;
    assert_eq!(status, 200);
    let found = xds::found_from_envelope(&String::from_utf8(body).unwrap()).unwrap();
    let listed: Vec<&str> = found
        .documents
        .iter()
        .map(|d| d.unique_id.as_str())
        .collect();
    assert_eq!(listed, ["1.2.250.1.999.1.1", "1.2.250.1.999.1.3"]);
    let glass = signer.vihf(
        AccessMode::BrisDeGlace,
        AuthenticationMode::Directe,
        Some(INS),
    );
    let (_, _, body) = dmp.post_with(&by_card, "registry", find(&glass, INS)).await;
    let found = xds::found_from_envelope(&String::from_utf8(body).unwrap()).unwrap();
    assert_eq!(found.documents.len(), 3, "break-glass sees the masked VSM");
    assert_eq!(found.documents[1].confidentiality[1].code, "MASQUE_PS");
    // The opposed patient: a registry failure naming the opposition.
    let (_, _, body) = dmp
        .post_with(&by_card, "registry", find(&other, OTHER_INS))
        .await;
    let found = xds::found_from_envelope(&String::from_utf8(body).unwrap()).unwrap();
    assert_eq!(found.status, xds::Status::Failure);
    assert_eq!(found.errors[0].code, "OPPOSITION_ACCES_URGENCE");

    // TD3.2: two documents in one request, as MTOM; the masked one is refused in
    // regulation, byte for byte the files otherwise.
    let retrieve = envelope(
        xds::RETRIEVE_ACTION,
        &assertion,
        xds::retrieve_body(&[
            ("1.2.250.1.213.4.1.1.1.2".into(), "1.2.250.1.999.1.1".into()),
            ("1.2.250.1.213.4.1.1.1.2".into(), "1.2.250.1.999.1.2".into()),
        ]),
    );
    let (status, content_type, body) = dmp.post_with(&by_card, "repository", retrieve).await;
    assert_eq!(status, 200);
    let (boundary, start) = mtom::boundary(&content_type).unwrap();
    let parts = mtom::split(body, &boundary, start.as_deref(), 8)
        .await
        .unwrap();
    let doc = soap::parse(&parts.envelope).unwrap();
    let retrieved = xds::read_retrieved(soap::body(&doc).unwrap(), &|id| {
        parts.attachments.get(id).cloned()
    })
    .unwrap();
    assert_eq!(retrieved.status, xds::Status::PartialSuccess);
    assert_eq!(retrieved.documents.len(), 1);
    assert_eq!(
        retrieved.documents[0].bytes,
        std::fs::read(cda("ips-fr-allergy-treatment-problem.xml")).unwrap()
    );
    assert_eq!(retrieved.errors[0].code, "XDSDocumentUniqueIdError");

    // Refusals, each with its code.
    let tampered = assertion.replacen("code=\"centre_15\"", "code=\"bris_de_glace\"", 1);
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&tampered, INS))
        .await;
    assert_eq!(fault_code(status, &body), "DMPInvalidSignature");
    let with_auth_key =
        auth_only.vihf(AccessMode::Centre15, AuthenticationMode::Directe, Some(INS));
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&with_auth_key, INS))
        .await;
    assert_eq!(fault_code(status, &body), "DMPInvalidCertificate");
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&assertion, OTHER_INS))
        .await;
    assert_eq!(fault_code(status, &body), "DMPPatientMismatch");
    let indirect = signer.vihf(
        AccessMode::Centre15,
        AuthenticationMode::Indirecte,
        Some(INS),
    );
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&indirect, INS))
        .await;
    assert_eq!(fault_code(status, &body), "DMPAccessDenied");
    let (unknown_signer, _) = Signer::new(dir.path(), "unknown", true);
    let unknown = unknown_signer.vihf(AccessMode::Centre15, AuthenticationMode::Directe, Some(INS));
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", find(&unknown, INS))
        .await;
    assert_eq!(fault_code(status, &body), "DMPInvalidCertificate");
    let (status, _, body) = dmp
        .post_with(&by_card, "registry", "<not-soap/>".into())
        .await;
    assert_eq!(fault_code(status, &body), "DMPMalformedRequest");
    // DIRECTE over a connection the card did not authenticate (the structure's).
    let (status, _, body) = dmp.post("registry", find(&assertion, INS)).await;
    assert_eq!(fault_code(status, &body), "DMPInvalidAuthentication");

    // TD0.5: candidates by traits, with their match.
    let search = signer.vihf(AccessMode::Centre15, AuthenticationMode::Directe, None);
    let traits = samu_gateway::patient::Traits {
        birth_name: "Synthetique".into(),
        first_names: "Camille".into(),
        birth_date: "1980-01-17".into(),
        sex: samu_gateway::patient::Sex::F,
        birthplace: None,
    };
    let (status, _, body) = dmp
        .post_with(
            &by_card,
            "patientsPDQ",
            envelope(
                hl7v3::SEARCH_ACTION,
                &search,
                hl7v3::search_body(transmission(), &traits),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let doc = soap::parse(&text).unwrap();
    let candidates =
        hl7v3::read_search(soap::body(&doc).unwrap(), &samu_gateway::patient::INS_OIDS).unwrap();
    let matched: Vec<(Option<&str>, Option<u8>)> = candidates
        .iter()
        .map(|c| (c.ins.as_deref(), c.match_percent))
        .collect();
    assert_eq!(
        matched,
        [(Some(INS), Some(100)), (Some(OTHER_INS), Some(80))]
    );

    // Every request is on record.
    let recorded = std::fs::read_dir(dmp.dir.join("requests")).unwrap().count();
    assert_eq!(recorded, 14);
}
