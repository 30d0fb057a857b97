//! The gateway's DMP client against the stand-in (issue 18), over real mutual TLS: the
//! record service trait answered through TD0.2, TD0.5, TD3.1 and TD3.2; the summary
//! composed from the newest structured synthesis plus the reimbursement history's
//! dispensations, the record's other documents listed; oppositions, masked documents,
//! refused assertions, faults and the deadline mapped onto the gateway's outcomes.
//!
//! A software card stands in for the professional's card here (its signature key signs
//! the assertions, its authentication key the TLS connection, configured as the client's
//! certificate); the card itself does both over pcscd in `dmp_gateway` (docs/dmp.md, "Who
//! signs").

use std::path::Path;
use std::sync::Arc;

use samu_gateway::patient::{Ins, InsPolicy, Sex, Traits};
use samu_gateway::summary::SectionStatus;
use samu_gateway::upstream::dmp::client::DmpClient;
use samu_gateway::upstream::dmp::{DmpConfig, SoftwareSigner};
use samu_gateway::upstream::{Access, AccessMode, RecordService, UpstreamError};
use serde_json::json;

use crate::support::dmp::{DevDmp, INS, OTHER_INS, SoftCard, TEST_OID, patients};

fn ins(value: &str) -> Ins {
    Ins::parse(
        value,
        TEST_OID,
        InsPolicy {
            accept_test_oids: true,
        },
    )
    .unwrap()
}

/// A client whose assertions `signer` signs, over TLS authenticated by `card`.
fn client(
    dmp: &DevDmp,
    card: &SoftCard,
    signer: &Path,
    signer_cert: &Path,
    total_ms: u64,
) -> DmpClient {
    client_with(dmp, card, signer, signer_cert, total_ms, "")
}

/// The same, `extra` added to its `[dmp]` section.
fn client_with(
    dmp: &DevDmp,
    card: &SoftCard,
    signer: &Path,
    signer_cert: &Path,
    total_ms: u64,
    extra: &str,
) -> DmpClient {
    let config: DmpConfig = toml::from_str(&format!(
        "base_url = \"{}\"\nserver_ca = \"{}\"\nstructure_cert = \"{}\"\nstructure_key = \"{}\"\nspecialty = \"SM26\"\nhomologation_number = \"TEST-1\"\ntotal_timeout_ms = {total_ms}\nconnect_timeout_ms = {}\n{extra}",
        dmp.url,
        dmp.ca.display(),
        card.auth_cert.display(),
        card.auth_key.display(),
        // A connection is never allowed longer than the whole exchange (configtest).
        total_ms.min(1_000),
    ))
    .unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let signer = Arc::new(SoftwareSigner::load(signer, signer_cert).unwrap());
    DmpClient::new(&config, "1750000000", signer).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dmp_client_composes_the_summary_and_maps_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let card = SoftCard::new(dir.path(), "card", "810002813839");
    let (key, cert) = (&card.sign_key, &card.sign_cert);
    let someone_else = SoftCard::new(dir.path(), "other", "810002813840");
    let dmp = DevDmp::start(
        patients(),
        dir.path(),
        &[card.ca.as_path(), someone_else.ca.as_path()],
    );
    let gateway = client(&dmp, &card, key, cert, 4_000);
    let professional = crate::support::physician();
    let patient = ins(INS);
    let access = |mode, patient| Access {
        mode,
        professional: &professional,
        patient,
        card: None,
    };

    // TD0.2 then TD3.1 + TD3.2.
    let regulation = access(AccessMode::Centre15, Some(&patient));
    let found = gateway.find_by_ins(&patient, &regulation).await.unwrap();
    assert_eq!(found.len(), 1);
    let summary = gateway.summary(&found[0].id, &regulation).await.unwrap();
    assert_eq!(summary.document.template.as_deref(), Some("IPS-FR"));
    assert_eq!(summary.allergies.status, SectionStatus::Recorded);
    assert_eq!(summary.allergies.items[0].substance, "Pénicilline");
    // The reimbursement history's dispensations, beside the synthesis.
    let dispensed = summary
        .dispensations
        .as_ref()
        .expect("dispensations from the history");
    assert!(!dispensed.items.is_empty());
    // The documents the record lists (the masked VSM is not, in regulation), and what
    // was taken from each.
    let listed: Vec<(&str, Vec<String>)> = summary
        .documents
        .iter()
        .map(|d| (d.unique_id.as_str(), d.used_for.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("1.2.250.1.999.1.1", vec!["summary".to_owned()]),
            ("1.2.250.1.999.1.3", vec!["dispensations".to_owned()]),
        ]
    );
    assert!(summary.documents.iter().all(|d| d.structured));
    // Break-glass sees the masked VSM too; the IPS-FR stays the synthesis (preferred
    // kind), the VSM is listed for the physician to know it exists.
    let glass = access(AccessMode::BrisDeGlace, Some(&patient));
    let summary = gateway.summary(&found[0].id, &glass).await.unwrap();
    assert_eq!(summary.documents.len(), 3);
    // The masked VSM says it is, for the page to say it is read with the patient's leave.
    let masked: Vec<(&str, bool)> = summary
        .documents
        .iter()
        .map(|d| (d.unique_id.as_str(), d.masked))
        .collect();
    assert!(masked.contains(&("1.2.250.1.999.1.2", true)), "{masked:?}");
    assert!(masked.contains(&("1.2.250.1.999.1.1", false)), "{masked:?}");
    assert_eq!(summary.document.template.as_deref(), Some("IPS-FR"));

    // A listed document opened on its own: TD3.1 again (still listed for this patient in
    // this mode?), then TD3.2 for it alone; read like a summary, its listing and the
    // exchanges with it.
    let vsm = gateway.document("1.2.250.1.999.1.2", &glass).await.unwrap();
    assert_eq!(vsm.document.template.as_deref(), Some("VSM"));
    assert_eq!(vsm.documents.len(), 1);
    assert_eq!(vsm.documents[0].unique_id, "1.2.250.1.999.1.2");
    assert!(
        vsm.provenance
            .iter()
            .any(|p| p.starts_with("dmp=registry:_"))
            && vsm
                .provenance
                .iter()
                .any(|p| p.starts_with("dmp=repository:_"))
            && vsm
                .provenance
                .contains(&"retrieved=1.2.250.1.999.1.2".to_owned()),
        "{:?}",
        vsm.provenance
    );
    // The same masked document in regulation, a document of no one, another patient's:
    // not listed for this access, nothing read.
    for unlisted in ["1.2.250.1.999.1.2", "1.2.250.1.999.9.9"] {
        assert_eq!(
            gateway.document(unlisted, &regulation).await.unwrap_err(),
            UpstreamError::DocumentNotListed
        );
    }

    // The other patient opposed regulation access: said by TD0.2, and by the registry
    // if asked anyway.
    let other = ins(OTHER_INS);
    let opposed = access(AccessMode::Centre15, Some(&other));
    assert_eq!(
        gateway.find_by_ins(&other, &opposed).await.unwrap_err(),
        UpstreamError::PatientOpposed(AccessMode::Centre15)
    );
    let id = format!("{TEST_OID}|{OTHER_INS}");
    assert_eq!(
        gateway.summary(&id, &opposed).await.unwrap_err(),
        UpstreamError::PatientOpposed(AccessMode::Centre15)
    );
    // No record: an INS the DMP does not know.
    let unknown = ins("280017500000280");
    let nobody = access(AccessMode::Centre15, Some(&unknown));
    assert!(
        gateway
            .find_by_ins(&unknown, &nobody)
            .await
            .unwrap()
            .is_empty()
    );

    // TD0.5: candidates with their INS and match.
    let traits = Traits {
        birth_name: "SYNTHETIQUE".into(),
        first_names: "Camille".into(),
        birth_date: "1980-01-17".into(),
        sex: Sex::F,
        birthplace: None,
    };
    let candidates = gateway
        .search(&traits, &access(AccessMode::Centre15, None))
        .await
        .unwrap();
    let seen: Vec<(String, Option<u8>)> = candidates
        .iter()
        .map(|c| (c.ins.as_ref().unwrap().value.clone(), c.match_percent))
        .collect();
    assert_eq!(
        seen,
        [
            (INS.to_owned(), Some(100)),
            (OTHER_INS.to_owned(), Some(80))
        ]
    );

    // An assertion signed with an authentication key: refused by the DMP, a refusal of
    // the gateway (not "no record").
    let wrong_key = client(&dmp, &card, &card.auth_key, &card.auth_cert, 4_000);
    assert_eq!(
        wrong_key
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::AssertionRefused("DMPInvalidCertificate".into())
    );

    // DIRECTE over a connection another professional's card authenticated: refused.
    let borrowed = client(&dmp, &someone_else, key, cert, 4_000);
    assert_eq!(
        borrowed
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::AssertionRefused("DMPInvalidAuthentication".into())
    );

    // Faults: a DMP fault code, an unavailable service, the deadline. An unknown code
    // the DMP puts on itself (Receiver) is an outage; on the request (Sender), a refusal
    // that no stale copy may stand in for.
    dmp.fault(json!({"kind": "soap_fault", "code": "DMPInternalError", "receiver": true}))
        .await;
    assert!(matches!(
        gateway.find_by_ins(&patient, &regulation).await.unwrap_err(),
        UpstreamError::Unavailable(why) if why.contains("DMPInternalError")
    ));
    dmp.fault(json!({"kind": "soap_fault", "code": "DMPAccesRestreint"}))
        .await;
    assert_eq!(
        gateway
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::AssertionRefused("DMPAccesRestreint".into())
    );
    dmp.fault(json!({"kind": "status", "status": 503})).await;
    assert!(matches!(
        gateway
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::Unavailable(_)
    ));
    // The DMP's front end refusing with its own page (no SOAP fault): a refusal, which no
    // stale copy may stand in for, not an outage.
    dmp.fault(json!({"kind": "status", "status": 403})).await;
    assert!(matches!(
        gateway
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::AssertionRefused(why) if why.contains("403")
    ));
    // A test of existence for the patient who opposed regulation access, answered about
    // another patient (whose record is open and not opposed), says nothing of this one's:
    // refused, never "record exists, not opposed".
    dmp.fault(json!({"kind": "existence_about", "ins": INS}))
        .await;
    let opposed = ins(OTHER_INS);
    assert!(matches!(
        gateway
            .find_by_ins(&opposed, &access(AccessMode::Centre15, Some(&opposed)))
            .await
            .unwrap_err(),
        UpstreamError::WrongPatient(why) if why.contains("another patient")
    ));
    // Another request's answer (a proxy that crossed two): nothing of it is read, even
    // a "no record" (which would delete the patient's copies), and the patient asked for
    // is not said to have none.
    dmp.fault(json!({"kind": "unrelated"})).await;
    for asked in [&patient, &unknown] {
        assert!(matches!(
            gateway
                .find_by_ins(asked, &access(AccessMode::Centre15, Some(asked)))
                .await
                .unwrap_err(),
            UpstreamError::Malformed(why) if why.contains("another request")
        ));
    }
    dmp.fault(json!({"kind": "garbage"})).await;
    assert!(matches!(
        gateway
            .find_by_ins(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::Malformed(_)
    ));
    // One deadline for the whole access, TD0.2 and TD3.1 at once: with every answer
    // 500 ms late, the patient and the summary (three round trips, two of them together)
    // come within 1.3 s; one after the other they would need 1.5 s.
    let patient_deadline = client(&dmp, &card, key, cert, 1_300);
    dmp.fault(json!({"kind": "latency", "ms": 500})).await;
    let (resolved, summary) = patient_deadline
        .patient_summary(&patient, &regulation)
        .await
        .unwrap();
    assert_eq!(resolved.ins.unwrap().value, INS);
    assert_eq!(summary.document.template.as_deref(), Some("IPS-FR"));
    let services: Vec<&str> = summary
        .provenance
        .iter()
        .filter_map(|p| p.strip_prefix("dmp="))
        .map(|p| p.split(':').next().unwrap())
        .collect();
    assert_eq!(services, ["patients", "registry", "repository"]);
    dmp.fault(json!({"kind": "latency", "ms": 900})).await;
    assert_eq!(
        patient_deadline
            .patient_summary(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::TimedOut(1_300)
    );
    dmp.fault(json!({"kind": "none"})).await;

    // The synthesis listed but not returned (the reimbursement history was): never
    // answered with the history standing in for the summary, which would say "allergies
    // not recorded" of a record that holds them. The repository's error says why (a
    // masked document may be answered as unknown): a refusal, no copy in its place.
    dmp.fault(json!({"kind": "withhold", "unique_id": "1.2.250.1.999.1.1"}))
        .await;
    assert_eq!(
        gateway
            .patient_summary(&patient, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::AssertionRefused("XDSDocumentUniqueIdError".into())
    );
    // The history listed but not returned: the summary comes, and says its dispensations
    // are left out (the page says the summary may be partial).
    dmp.fault(json!({"kind": "withhold", "unique_id": "1.2.250.1.999.1.3"}))
        .await;
    let (_, summary) = gateway
        .patient_summary(&patient, &regulation)
        .await
        .unwrap();
    assert!(summary.dispensations.is_none());
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("reimbursement history") && w.contains("not returned")),
        "{:?}",
        summary.warnings
    );
    // The repository returns the reimbursement history's bytes in the synthesis's place (a
    // valid CDA about the same patient): refused, never read as the summary.
    dmp.fault(
        json!({"kind": "substitute", "unique_id": "1.2.250.1.999.1.1",
                     "with": "1.2.250.1.999.1.3"}),
    )
    .await;
    assert!(matches!(
        gateway.patient_summary(&patient, &regulation).await.unwrap_err(),
        UpstreamError::Malformed(why) if why.contains("differs from its registry entry")
    ));
    dmp.fault(json!({"kind": "none"})).await;

    let hurried = client(&dmp, &card, key, cert, 600);
    dmp.fault(json!({"kind": "latency", "ms": 1_500})).await;
    let started = std::time::Instant::now();
    assert_eq!(
        hurried
            .summary(&found[0].id, &regulation)
            .await
            .unwrap_err(),
        UpstreamError::TimedOut(600)
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(1_400));
    dmp.fault(json!({"kind": "none"})).await;
}

/// A document the registry files under another patient identifier is read only if it names
/// the INS asked for itself (a patient's INS may change, and the record keeps the documents
/// filed under the earlier one): one naming no INS is refused, as a registry mixing records
/// up would show it. A document naming no INS, filed under the patient asked for, is read
/// and said to name none (the page asks for the traits to be checked with the caller).
#[tokio::test(flavor = "multi_thread")]
async fn a_document_filed_under_another_patient_is_refused_and_one_naming_no_ins_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let card = SoftCard::new(dir.path(), "card", "810002813839");
    let source = std::fs::read_to_string(crate::support::dmp::cda(
        "ips-fr-allergy-treatment-problem.xml",
    ))
    .unwrap();
    let ins_id = format!("<id root=\"{TEST_OID}\" extension=\"{INS}\"/>");
    assert!(source.contains(&ins_id), "the fixture names its INS");
    let no_ins = dir.path().join("ips-fr-without-ins.xml");
    std::fs::write(&no_ins, source.replace(&ins_id, "")).unwrap();
    let renamed = crate::support::upstream::nir(77);
    let named = dir.path().join("ips-fr-renamed.xml");
    std::fs::write(
        &named,
        source.replace(
            &ins_id,
            &format!("<id root=\"{TEST_OID}\" extension=\"{renamed}\"/>"),
        ),
    )
    .unwrap();
    let document_in = |file: &Path, unique_id: &str, filed_under: Option<String>| {
        json!({"file": file, "unique_id": unique_id, "type_code": "60591-5",
               "type_scheme": "2.16.840.1.113883.6.1", "format_code": "urn:ihe:pcc:ips:2020",
               "creation_time": "20261120090000", "title": "Synthèse médicale",
               "filed_under": filed_under})
    };
    let document = |unique_id: &str, filed_under| document_in(&no_ins, unique_id, filed_under);
    // A synthesis naming its INS beside a reimbursement history naming none.
    let history_source =
        std::fs::read_to_string(crate::support::dmp::cda("hr-reimbursement-history.xml")).unwrap();
    assert!(
        history_source.contains(&ins_id),
        "the history names its INS"
    );
    let history_no_ins = dir.path().join("history-without-ins.xml");
    std::fs::write(&history_no_ins, history_source.replace(&ins_id, "")).unwrap();
    let beside = crate::support::upstream::nir(79);
    let beside_synthesis = dir.path().join("ips-fr-beside.xml");
    std::fs::write(
        &beside_synthesis,
        source.replace(
            &ins_id,
            &format!("<id root=\"{TEST_OID}\" extension=\"{beside}\"/>"),
        ),
    )
    .unwrap();
    let patients = json!([
        {"ins": INS, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camille"],
         "birth_date": "1980-01-17", "gender": "F",
         "documents": [document("1.2.250.1.999.2.1", None)]},
        {"ins": OTHER_INS, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camilla"],
         "birth_date": "1980-01-17", "gender": "F",
         "documents": [document("1.2.250.1.999.2.2", Some(format!("{INS}^^^&{TEST_OID}&ISO^NH")))]},
        // Filed under the patient's earlier identifier (an NIA), naming the INS asked for.
        {"ins": renamed, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camille"],
         "birth_date": "1980-01-17", "gender": "F",
         "documents": [document_in(&named, "1.2.250.1.999.2.3",
             Some(format!("{}^^^&1.2.250.1.213.1.4.9&ISO^NH", crate::support::upstream::nir(78))))]},
        {"ins": beside, "ins_oid": TEST_OID, "family": "SYNTHETIQUE", "given": ["Camille"],
         "birth_date": "1980-01-17", "gender": "F",
         "documents": [document_in(&beside_synthesis, "1.2.250.1.999.2.4", None),
            {"file": history_no_ins, "unique_id": "1.2.250.1.999.2.5",
             "type_code": "REMB", "type_scheme": "1.2.250.1.213.1.1.4.12", "format_code": "urn:asip:ci-sis:hr:2019",
             "creation_time": "20261101000000", "title": "Historique des remboursements"}]}
    ]);
    let dmp = DevDmp::start(patients, dir.path(), &[card.ca.as_path()]);
    let gateway = client(&dmp, &card, &card.sign_key, &card.sign_cert, 4_000);
    let professional = crate::support::physician();
    let access = |patient| Access {
        mode: AccessMode::Centre15,
        professional: &professional,
        patient: Some(patient),
        card: None,
    };

    let patient = ins(INS);
    let (_, summary) = gateway
        .patient_summary(&patient, &access(&patient))
        .await
        .unwrap();
    assert_eq!(summary.allergies.items[0].substance, "Pénicilline");
    let named = summary
        .patient_in_document
        .expect("the document names its patient");
    assert!(named.no_ins, "a document without an INS is flagged");

    let other = ins(OTHER_INS);
    assert!(matches!(
        gateway.patient_summary(&other, &access(&other)).await.unwrap_err(),
        UpstreamError::WrongPatient(why) if why.contains("another patient")
    ));

    let renamed = ins(&renamed);
    let (_, summary) = gateway
        .patient_summary(&renamed, &access(&renamed))
        .await
        .unwrap();
    assert_eq!(summary.allergies.items[0].substance, "Pénicilline");
    assert!(!summary.patient_in_document.unwrap().no_ins);

    // The history's dispensations are shown beside a synthesis naming the INS, and the
    // summary says they rest on the record's filing alone (the synthesis's INS does not
    // vouch for them). Before, nothing said so.
    let beside = ins(&beside);
    let (_, summary) = gateway
        .patient_summary(&beside, &access(&beside))
        .await
        .unwrap();
    assert!(!summary.patient_in_document.as_ref().unwrap().no_ins);
    assert!(summary.dispensations.is_some());
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("reimbursement history names no INS")),
        "{:?}",
        summary.warnings
    );
    // And tells the physician, in so many words (the page says it in the block).
    assert_eq!(
        summary.notices,
        [samu_gateway::summary::Notice::DispensationsUnverifiedIdentity]
    );
}

/// With CRLs configured, a DMP whose certificate they revoke is not talked to (no
/// assertion, no INS sent); the same DMP under CRLs that do not revoke it answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_dmp_whose_certificate_is_revoked_is_not_talked_to() {
    let dir = tempfile::tempdir().unwrap();
    let card = SoftCard::new(dir.path(), "card", "810002813839");
    let dmp = DevDmp::start(patients(), dir.path(), &[card.ca.as_path()]);
    let professional = crate::support::physician();
    let patient = ins(INS);
    let access = Access {
        mode: AccessMode::Centre15,
        professional: &professional,
        patient: Some(&patient),
        card: None,
    };
    let with_crl = |file: &str| {
        let crl = dmp.dir.join(file);
        assert!(crl.exists(), "{}", crl.display());
        client_with(
            &dmp,
            &card,
            &card.sign_key,
            &card.sign_cert,
            4_000,
            &format!("server_crls = [\"{}\"]\n", crl.display()),
        )
    };
    let found = with_crl("dmp-ca.crl")
        .find_by_ins(&patient, &access)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let before = dmp.stats().await["requests"].clone();
    let refused = with_crl("dmp-ca-revoking.crl")
        .find_by_ins(&patient, &access)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, UpstreamError::Unavailable(why) if why.contains("Revoked")),
        "{refused:?}"
    );
    assert_eq!(
        dmp.stats().await["requests"],
        before,
        "nothing reached the DMP"
    );
}
