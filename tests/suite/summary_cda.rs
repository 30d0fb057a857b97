//! The critical summary read from CDA R2 documents (issue 17, first part): synthetic
//! documents of the record's shapes, written for the repository, with hand-checked
//! expectations; hostile XML refused with its defect.

use std::path::PathBuf;

use samu_gateway::summary::{self, SectionStatus, SummaryError};

fn cda(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cda")
            .join(name),
    )
    .unwrap()
}

#[test]
fn an_ips_fr_document_gives_its_allergy_treatment_problem_and_header() {
    let s = summary::extract(&cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    assert_eq!(s.document.bundle_type, "cda");
    assert_eq!(
        s.document.title.as_deref(),
        Some("Synthèse médicale (synthétique)")
    );
    assert_eq!(s.document.date.as_deref(), Some("20261120100000+0100"));
    assert_eq!(s.document.authors, ["Jeanne TRAITANTE"]);
    assert_eq!(
        s.document.custodian.as_deref(),
        Some("Centre hospitalier synthétique")
    );
    let patient = s.patient_in_document.as_ref().unwrap();
    assert_eq!(patient.ins, ["1.2.250.1.213.1.4.10|180017500000134"]);
    assert_eq!(patient.birth_date.as_deref(), Some("19800117"));

    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    let allergy = &s.allergies.items[0];
    assert_eq!(allergy.substance, "Pénicilline");
    assert_eq!(
        allergy.criticality.as_deref(),
        Some("high"),
        "CRITH, as FHIR says it"
    );
    assert_eq!(allergy.reactions, ["Urticaire"]);
    assert_eq!(allergy.codes[0].code.as_deref(), Some("764146007"));
    assert_eq!(allergy.onset.as_deref(), Some("2015"));
    assert!(
        s.allergies
            .narrative
            .as_deref()
            .unwrap()
            .contains("criticité haute")
    );

    assert_eq!(s.medications.status, SectionStatus::Recorded);
    let drug = &s.medications.items[0];
    assert_eq!(drug.name, "ELIQUIS 5 mg, comprimé pelliculé");
    let systems: Vec<_> = drug
        .codes
        .iter()
        .map(|c| c.system.clone().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "urn:oid:1.2.250.1.213.2.3.1",
            "urn:oid:2.16.840.1.113883.6.73"
        ],
        "CIS with its ATC translation"
    );
    assert_eq!(drug.period.as_deref(), Some("20240301"));
    assert_eq!(drug.dosage, ["1 comprimé"]);

    assert_eq!(
        s.problems.items[0].name,
        "Fibrillation et flutter auriculaires"
    );
    assert_eq!(s.problems.items[0].codes[0].code.as_deref(), Some("I48"));
    assert_eq!(s.past_problems.status, SectionStatus::NotRecorded);
    assert_eq!(
        s.other_sections[0].title.as_deref(),
        Some("Points de vigilance")
    );
    assert!(!s.defects.any(), "{:?}", s.warnings);
}

#[test]
fn an_explicit_absence_a_null_flavor_and_an_unreadable_entry_each_say_what_they_are() {
    let s = summary::extract(&cda("absence-stated-sections-not-asked.xml")).unwrap();
    // "Aucune allergie connue" only on the explicit, negated statement.
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert!(s.allergies.items.is_empty());
    assert_eq!(s.allergies.statements.len(), 1);
    // A section with only a nullFlavor is "not recorded", never "none".
    assert_eq!(s.medications.status, SectionStatus::NotRecorded);
    assert_eq!(s.medications.basis, "section nullFlavor NASK");
    assert_eq!(s.medications.narrative.as_deref(), Some("Non renseigné"));
    // An entry that is not a problem: unreadable, counted, named by path, never guessed.
    assert_eq!(s.problems.status, SectionStatus::Unreadable);
    assert_eq!(s.defects.unreadable_entries, 1);
    assert!(s.warnings[0].contains("/entry[0]"), "{:?}", s.warnings);
}

#[test]
fn a_level_1_document_is_unstructured_and_claims_no_section() {
    let s = summary::extract(&cda("level-1-text.xml")).unwrap();
    assert_eq!(s.document.bundle_type, "cda-unstructured");
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert!(s.allergies.items.is_empty());
    assert!(s.warnings[0].contains("unstructured"), "{:?}", s.warnings);
}

#[test]
fn hostile_or_malformed_xml_is_refused_with_its_defect_and_no_value() {
    let doc = |body: &str| {
        format!(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component><structuredBody>{body}</structuredBody></component></ClinicalDocument>"
        )
    };
    let deep = format!(
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">{}{}</ClinicalDocument>",
        "<x>".repeat(500),
        "</x>".repeat(500)
    );
    let cases: Vec<(String, &str)> = vec![
        (
            "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY a \"SECRETVALUE\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&a;</ClinicalDocument>".into(),
            "XML document refused",
        ),
        (
            "<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&x;</ClinicalDocument>".into(),
            "XML document refused",
        ),
        (
            format!("<!DOCTYPE d [<!ENTITY a \"{}\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&b;</ClinicalDocument>", "SECRETVALUE".repeat(10)),
            "XML document refused",
        ),
        (
            "<ClinicalDocument xmlns=\"urn:other\"><component/></ClinicalDocument>".into(),
            "not a CDA document: the root element is ClinicalDocument in namespace urn:other",
        ),
        (
            "<ClinicalDocument><component/></ClinicalDocument>".into(),
            "without a namespace",
        ),
        (doc("<component><section>")[..60].to_owned(), "XML document refused"),
        (deep, "nested deeper than"),
        (
            format!("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title a=\"{}\"/></ClinicalDocument>", "SECRETVALUE".repeat(100_000)),
            "attribute a of element title is longer than 65536 bytes",
        ),
    ];
    for (input, expected) in &cases {
        let err = summary::extract(input.as_bytes()).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(expected), "{shown} (wanted {expected})");
        assert!(
            !shown.contains("SECRETVALUE") && !shown.contains("passwd"),
            "{shown}"
        );
        assert!(
            matches!(err, SummaryError::Xml(_) | SummaryError::NotACda(_)),
            "{err:?}"
        );
    }
    // JSON still goes to the bundle reader, with its own errors.
    assert!(matches!(
        summary::extract(b"  {\"resourceType\": \"Patient\"}"),
        Err(SummaryError::NotABundle(_))
    ));
}

/// The CDA examples beside the repository (third-party, never copied in), when present:
/// read without a refusal, with what a reader checked by hand in the VSM example.
#[test]
fn the_published_cda_examples_are_summarised_when_present() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/fr");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        crate::support::skipped(&format!(
            "summary_cda: {} is absent; only the project's CDA documents were read",
            dir.display()
        ));
        return;
    };
    let mut read = 0;
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let s = summary::extract(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        read += 1;
        if path.file_name().is_some_and(|n| n == "VSM_1.4_2022.01.xml") {
            assert_eq!(s.allergies.status, SectionStatus::Recorded);
            assert_eq!(s.allergies.items[0].substance, "PARACETAMOL");
            assert_eq!(s.medications.items.len(), 2);
            assert_eq!(s.problems.items.len(), 2);
            assert_eq!(s.past_problems.items.len(), 2);
            assert_eq!(s.procedures.items.len(), 1);
        }
    }
    assert!(read > 0, "no CDA example in {}", dir.display());
}

/// "Not allergic to penicillin" is not "no known allergies": the section stays unknown.
#[test]
fn a_negated_specific_allergen_is_noted_never_read_as_no_known_allergies() {
    let bytes = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cda/absence-stated-sections-not-asked.xml"),
    )
    .unwrap()
    .replace(
        "<code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/>",
        "<code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"764146007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pénicilline\"/></playingEntity></participantRole></participant>",
    );
    let s = summary::extract(bytes.as_bytes()).unwrap();
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(
        s.allergies.statements,
        ["absence d'allergie à : Pénicilline"]
    );
}
