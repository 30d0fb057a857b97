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
    // Points of vigilance (44944-7 in an IPS-FR): their own section, here narrative only,
    // so "not recorded" with the text kept for the page's fallback.
    let vigilance = s.vigilance.as_ref().unwrap();
    assert_eq!(vigilance.status, SectionStatus::NotRecorded);
    assert_eq!(
        vigilance.narrative.as_deref(),
        Some("Patiente sous anticoagulant")
    );
    let pregnancy = &s.pregnancy.as_ref().unwrap().items[0];
    assert_eq!(
        (pregnancy.name.as_str(), pregnancy.value.as_deref()),
        ("Grossesse en cours", Some("Enceinte"))
    );
    assert_eq!(pregnancy.date.as_deref(), Some("20261120"));
    assert_eq!(s.other_sections.len(), 1);
    assert_eq!(
        s.other_sections[0].title.as_deref(),
        Some("Habitus, mode de vie")
    );
    assert_eq!(
        s.other_sections[0].narrative.as_deref(),
        Some("Tabac : non\nVit seule, aide à domicile le matin")
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

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().map(name).collect()
}

/// A VSM nests its sections and holds its treatments under "long-term treatment"
/// (18776-5) and its points of vigilance under the results code (30954-2).
#[test]
fn a_vsm_is_read_through_its_wrappers_with_its_long_term_treatment() {
    let s = summary::extract(&cda("vsm-nested-long-term-treatment.xml")).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("VSM"));
    assert_eq!(s.document.authors, ["Paul GENERALISTE"]);
    assert_eq!(
        s.document.type_code.as_ref().unwrap().code.as_deref(),
        Some("SYNTH")
    );
    // The allergy section holds only a nullFlavor: "not recorded", never "none known",
    // with its text for the page.
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(s.allergies.basis, "section nullFlavor NASK");
    assert_eq!(s.allergies.narrative.as_deref(), Some("Non recherché"));

    assert_eq!(s.medications.status, SectionStatus::Recorded);
    let drug = &s.medications.items[0];
    assert_eq!(
        drug.name,
        "KARDEGIC 75 mg, poudre pour solution buvable en sachet"
    );
    assert_eq!(drug.dosage, ["1 sachet"], "UCUM annotation unwrapped");
    assert_eq!(drug.codes[0].code.as_deref(), Some("60000001"));
    assert_eq!(
        drug.codes[1].system.as_deref(),
        Some("urn:oid:1.2.250.1.213.2.3.2"),
        "CIP13 translation kept"
    );
    assert_eq!(
        names(&s.problems.items, |p| &p.name),
        ["Diabète sucré de type 2"]
    );
    assert_eq!(s.problems.items[0].codes[0].code.as_deref(), Some("E11"));
    let past = &s.past_problems.items[0];
    assert_eq!(past.name, "Infarctus aigu du myocarde");
    assert_eq!(
        (past.onset.as_deref(), past.abatement.as_deref()),
        (Some("201903"), Some("201904"))
    );
    let act = &s.procedures.items[0];
    assert_eq!(act.codes[0].code.as_deref(), Some("DDAF008"));
    assert_eq!(
        act.codes[0].system.as_deref(),
        Some("urn:oid:1.2.250.1.213.2.5"),
        "CCAM"
    );
    assert_eq!(act.performed.as_deref(), Some("20190314"));
    assert_eq!(
        s.vigilance.as_ref().unwrap().narrative.as_deref(),
        Some("Porteur d'une endoprothèse coronaire : double antiagrégation.")
    );
    // The wrappers claim nothing; the lifestyle section is kept with its text.
    assert_eq!(
        names(&s.other_sections, |o| o.title.as_deref().unwrap()),
        ["Mode de vie"]
    );
    assert!(s.dispensations.is_none() && s.immunizations.is_none());
    assert!(!s.defects.any(), "{:?}", s.warnings);
}

/// A DLU: its long-term treatments are the treatment (planned, moodCode INT); the
/// care-plan code holds palliative care and the results code carriage of resistant
/// bacteria, neither of which is a treatment or a point of vigilance.
#[test]
fn a_dlu_gives_treatments_directives_and_keeps_palliative_care_as_text() {
    let s = summary::extract(&cda("dlu-ehpad.xml")).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("DLU"));
    assert_eq!(s.document.custodian.as_deref(), Some("EHPAD synthétique"));
    let allergy = &s.allergies.items[0];
    assert_eq!(allergy.substance, "Arachide");
    assert_eq!(
        allergy.codes[0].system.as_deref(),
        Some("urn:oid:2.16.840.1.113883.6.347"),
        "CIM-11 agent"
    );
    assert_eq!(allergy.reactions, ["Œdème de Quincke"]);
    assert_eq!(allergy.kind.as_deref(), Some("Allergie alimentaire"));
    assert_eq!(
        names(&s.medications.items, |m| &m.name),
        ["BISOPROLOL 2,5 mg, comprimé"]
    );
    assert_eq!(s.medications.items[0].dosage, ["1 comprimé"]);
    assert_eq!(s.problems.items[0].codes[0].code.as_deref(), Some("J41.0"));
    let directive = &s.advance_directives.as_ref().unwrap().items[0];
    assert_eq!(
        (directive.name.as_str(), directive.value.as_deref()),
        ("Directives anticipées", Some("oui"))
    );
    let vaccine = &s.immunizations.as_ref().unwrap().items[0];
    assert_eq!(vaccine.vaccine, "VACCIN GRIPPAL (synthétique)");
    assert_eq!(vaccine.date.as_deref(), Some("20261003"));
    assert!(s.vigilance.is_none());
    assert_eq!(
        names(&s.other_sections, |o| o.title.as_deref().unwrap()),
        [
            "Etablissement de santé de préférence",
            "Soins palliatifs",
            "Résultats d'examens"
        ]
    );
    assert_eq!(
        s.other_sections[1].narrative.as_deref(),
        Some("Pas de soins palliatifs en cours")
    );
    assert!(!s.defects.any(), "{:?}", s.warnings);
}

/// A discharge letter: the treatments at discharge are the treatment; those stopped
/// during the stay are not.
#[test]
fn a_discharge_letter_gives_the_discharge_treatment_never_the_stopped_one() {
    let s = summary::extract(&cda("ldl-ses-discharge.xml")).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("LDL-SES"));
    assert_eq!(
        names(&s.medications.items, |m| &m.name),
        [
            "APIXABAN 5 mg, comprimé pelliculé",
            "FUROSEMIDE 40 mg, comprimé"
        ]
    );
    assert_eq!(
        s.medications.title.as_deref(),
        Some("Traitements à la sortie")
    );
    let device = &s.devices.as_ref().unwrap().items[0];
    assert_eq!(
        device.name,
        "Stimulateur cardiaque implantable double chambre"
    );
    assert_eq!(device.codes.len(), 2, "EMDN with its LPP translation");
    // "No known allergy" said with the IPS absent-or-unknown code: none known, on the
    // statement, with its words.
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.allergies.statements, ["Aucune allergie connue"]);
    let others = names(&s.other_sections, |o| o.title.as_deref().unwrap());
    assert_eq!(
        others,
        [
            "Motif de l'hospitalisation",
            "Traitements arrêtés durant le séjour",
            "Suites à donner"
        ]
    );
    assert_eq!(s.other_sections[1].entries, 1);
    assert!(!s.defects.any(), "{:?}", s.warnings);
}

/// A reimbursement history lists what was handed out, dated by the pharmacy: medicines,
/// a vaccine and a device become dispensations; nothing becomes the current treatment.
#[test]
fn a_reimbursement_history_gives_dated_dispensations_never_a_treatment() {
    let s = summary::extract(&cda("hr-reimbursement-history.xml")).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("HR"));
    assert_eq!(
        s.document.authors,
        ["Assurance Maladie (synthétique)"],
        "written by software"
    );
    assert_eq!(s.medications.status, SectionStatus::NotRecorded);
    assert!(s.medications.items.is_empty());
    assert!(s.immunizations.is_none() && s.devices.is_none());
    let dispensed = s.dispensations.as_ref().unwrap();
    assert_eq!(dispensed.status, SectionStatus::Recorded);
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = dispensed
        .items
        .iter()
        .map(|d| (d.name.as_str(), d.date.as_deref(), d.quantity.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "METFORMINE 1000 mg, comprimé pelliculé",
                Some("20261105"),
                Some("3")
            ),
            (
                "ATORVASTATINE 20 mg, comprimé pelliculé",
                Some("20261105"),
                Some("1")
            ),
            ("PARACÉTAMOL 1 g, comprimé", Some("20261012"), Some("2")),
            ("Vaccin grippal (synthétique)", Some("20261002"), None),
            (
                "Lecteur de glycémie (synthétique)",
                Some("20260920"),
                Some("1")
            ),
        ]
    );
    // Coded only in the insurance's translations: CIP13 and the ATC group kept.
    let codes: Vec<_> = dispensed.items[0]
        .codes
        .iter()
        .map(|c| c.code.as_deref().unwrap())
        .collect();
    assert_eq!(codes, ["3400930000011", "A10"]);
    // The narrative table, a row a line, cells apart.
    assert!(
        dispensed
            .narrative
            .as_deref()
            .unwrap()
            .contains("05/11/2026 | METFORMINE 1000 mg, comprimé pelliculé | 3\n"),
        "{:?}",
        dispensed.narrative
    );
    assert_eq!(
        names(&s.other_sections, |o| o.title.as_deref().unwrap()),
        [
            "Usage et responsabilités",
            "Hospitalisations",
            "Soins médicaux et dentaires"
        ]
    );
    assert!(!s.defects.any(), "{:?}", s.warnings);
}

/// The document's templateId decides its kind, before its type code: an IPS-FR written
/// for an EHPAD resident carries the DLU's code and is read as an IPS-FR; a VSM's
/// meaning of 18776-5 does not follow it into another kind.
#[test]
fn the_template_decides_the_kind_before_the_type_code() {
    let ips = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let dlu_coded = ips.replace(
        "<code code=\"60591-5\" codeSystem=\"2.16.840.1.113883.6.1\" displayName=\"Synthèse médicale\"/>",
        "<code code=\"74207-2\" codeSystem=\"2.16.840.1.113883.6.1\"/>",
    );
    assert_ne!(ips, dlu_coded);
    let s = summary::extract(dlu_coded.as_bytes()).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("IPS-FR"));
    assert_eq!(
        s.document.type_code.as_ref().unwrap().code.as_deref(),
        Some("74207-2")
    );
    // Without a known template, the type code decides.
    let untemplated = ips.replace("1.2.250.1.213.1.1.1.51", "1.2.250.1.999.0");
    let s = summary::extract(untemplated.as_bytes()).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("IPS-FR"));
    // The VSM's long-term treatment wrapper code, with entries, in an IPS-FR: a care plan
    // (other), never the treatment.
    let vsm = String::from_utf8(cda("vsm-nested-long-term-treatment.xml")).unwrap();
    let as_ips = vsm.replace(
        "<templateId root=\"1.2.250.1.213.1.1.1.13\" extension=\"2023.01\"/>",
        "<templateId root=\"1.2.250.1.213.1.1.1.51\"/>",
    );
    let s = summary::extract(as_ips.as_bytes()).unwrap();
    assert_eq!(s.document.template.as_deref(), Some("IPS-FR"));
    assert!(s.vigilance.is_none(), "30954-2 is results in an IPS-FR");
    assert!(
        s.other_sections
            .iter()
            .any(|o| o.title.as_deref() == Some("Points de vigilance"))
    );
}

/// A reimbursement history with nothing in the period says so with the IPS codes: "none
/// known" on that statement, not an item named "no known medications".
#[test]
fn an_empty_reimbursement_history_states_none_known_without_an_item() {
    let hr = String::from_utf8(cda("hr-reimbursement-history.xml")).unwrap();
    let start = hr.find("<entry>").unwrap();
    // The medicines' entries: from the first entry to the end of its section.
    let end = start + hr[start..].find("</section>").unwrap();
    let empty = format!(
        "{}<entry><substanceAdministration classCode=\"SBADM\" moodCode=\"EVN\"><code code=\"no-known-medications\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Aucun médicament délivré connu\"/><consumable><manufacturedProduct><manufacturedMaterial><code nullFlavor=\"NA\"/></manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>{}",
        &hr[..start],
        &hr[end..]
    );
    let s = summary::extract(empty.as_bytes()).unwrap();
    let dispensed = s.dispensations.as_ref().unwrap();
    // The vaccine and the device are still there: an absence next to items conflicts.
    assert_eq!(dispensed.status, SectionStatus::Conflicting);
    assert_eq!(dispensed.statements, ["Aucun médicament délivré connu"]);
    assert!(dispensed.items.iter().all(|d| !d.name.contains("Aucun")));
}

/// `summary show` reads CDA like JSON, told apart by the content: the text names the
/// format and the kind, the JSON carries them as the API does, and a level-1 PDF's bytes
/// never appear in either.
#[test]
fn summary_show_names_the_format_and_kind_of_a_cda_document() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cda");
    let show = |name: &str, json: bool| {
        let mut command = std::process::Command::new(crate::support::BIN);
        command.args(["summary", "show"]).arg(fixtures.join(name));
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value =
        serde_json::from_str(&show("ips-fr-allergy-treatment-problem.xml", true)).unwrap();
    assert_eq!(json["document"]["format"], "cda");
    assert_eq!(json["document"]["template"], "IPS-FR");
    assert_eq!(json["document"]["type_code"]["code"], "60591-5");
    assert_eq!(json["allergies"]["items"][0]["substance"], "Pénicilline");

    // A section held only as text prints its text, as the page shows it.
    let text = show("ips-fr-allergy-treatment-problem.xml", false);
    assert!(
        text.contains(
            "POINTS OF VIGILANCE: NOT RECORDED (no entries)\n  | Patiente sous anticoagulant\n"
        ),
        "{text}"
    );

    let text = show("hr-reimbursement-history.xml", false);
    let first = text.lines().next().unwrap();
    assert!(first.contains("(cda HR)"), "{text}");
    assert!(
        text.contains("DISPENSED (reimbursement history, not the current treatment)"),
        "{text}"
    );

    let pdf = show("level-1-pdf.xml", true);
    let json: serde_json::Value = serde_json::from_str(&pdf).unwrap();
    assert_eq!(json["document"]["bundle_type"], "cda-unstructured");
    assert_eq!(json["unstructured"]["media_type"], "application/pdf");
    assert_eq!(json["unstructured"]["pdf"], true);
    assert!(
        json["unstructured"]
            .get("content")
            .is_none_or(|c| c.is_null()),
        "{pdf}"
    );
    // "%PDF-" in base64, wherever it would start.
    assert!(!pdf.contains("JVBERi0"), "{pdf}");
    let text = show("level-1-pdf.xml", false);
    assert!(text.contains("unstructured"), "{text}");
    assert!(!text.contains("JVBERi0"), "{text}");
}

/// A section's text too long to keep whole is cut and says so, to the API, the page's
/// data and `summary show`: the rest, left out, may be the allergy line. Before, the text
/// of a CDA section was kept whatever its size, and a cut FHIR one only ended with `…`.
#[test]
fn a_section_text_too_long_to_keep_is_cut_and_says_so() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let long = format!(
        "<text><paragraph>{}</paragraph><paragraph>Allergie au latex</paragraph></text>",
        "Antécédent ancien sans suite. ".repeat(1_000)
    );
    let document = fixture.replacen("<text>Patiente sous anticoagulant</text>", &long, 1);
    assert_ne!(document, fixture, "the fixture's vigilance text moved");
    let summary = summary::extract(document.as_bytes()).unwrap();
    let vigilance = summary.vigilance.as_ref().unwrap();
    assert!(vigilance.narrative_cut);
    let text = vigilance.narrative.as_deref().unwrap();
    assert!(text.ends_with('…') && !text.contains("latex"));
    assert_eq!(text.chars().count(), 20_001);
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["vigilance"]["narrative_cut"], true);
    assert_eq!(json["allergies"]["narrative_cut"], false);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.xml");
    std::fs::write(&file, &document).unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["summary", "show"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("…\n  ! text cut: too long to keep whole, the rest is not shown\n"),
        "{:?}",
        text.lines()
            .filter(|l| !l.starts_with("  |"))
            .collect::<Vec<_>>()
    );
}

/// What a CDA allergy section denies is read for what it is: one kind of allergy denied
/// is a statement, never "no known allergies"; a concern grouping several allergies (or
/// problems) gives each; an absence beside an entry that cannot be read is never settled.
#[test]
fn partial_denials_grouped_concerns_and_unreadable_entries_never_hide_an_allergy() {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    const DENIAL: &str = "<observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\">\n                  <code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/>\n                  <value xsi:type=\"CD\" code=\"419199007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie à une substance\"/>\n                </observation>";
    assert!(fixture.contains(DENIAL));
    let with = |replacement: &str| {
        summary::extract(fixture.replace(DENIAL, replacement).as_bytes()).unwrap()
    };
    let allergy = |code: &str, name: Option<&str>| {
        let name = name.map_or(String::new(), |n| format!(" displayName=\"{n}\""));
        format!(
            "<observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"{code}\" codeSystem=\"2.16.840.1.113883.6.96\"{name}/></playingEntity></participantRole></participant></observation>"
        )
    };

    // "No drug allergy": food and latex stay unknown.
    let s = with(
        "<observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\"><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"416098002\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie médicamenteuse\"/></observation>",
    );
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(
        s.allergies.statements,
        ["absence : Allergie médicamenteuse"]
    );
    // The IPS "no known food allergies": the same.
    let s = with(
        "<observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-known-food-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Pas d'allergie alimentaire connue\"/></observation>",
    );
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(
        s.allergies.statements,
        ["Pas d'allergie alimentaire connue"]
    );
    // "Not allergic to" a substance coded without a name: noted, never a general absence.
    let s = with(&allergy("764146007", None).replace(
        "moodCode=\"EVN\">",
        "moodCode=\"EVN\" negationInd=\"true\">",
    ));
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(
        s.allergies.statements,
        ["absence d'allergie à : code 764146007"]
    );

    // One concern, two allergies: both shown.
    let two = format!(
        "{}</entryRelationship><entryRelationship typeCode=\"SUBJ\">{}",
        allergy("764146007", Some("Pénicilline")),
        allergy("111088007", Some("Latex"))
    );
    let s = with(&two);
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Pénicilline", "Latex"]
    );

    // "No known allergies" beside an allergy entry that cannot be read (no agent, no
    // value): conflicting, never "none known".
    let unreadable = format!(
        "{DENIAL}</entryRelationship><entryRelationship typeCode=\"SUBJ\">{}",
        "<observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/></observation>"
    );
    let s = with(&unreadable);
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(s.allergies.unreadable_entries, 1);
    // An agent coded without a name is shown by its code, never left unread.
    let s = with(&allergy("J01CA04", None));
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["code J01CA04"]
    );

    // One concern grouping "no known allergies" (IPS code) and a penicillin allergy: the
    // allergy is shown and the section is conflicting (the code was once looked for in the
    // whole concern, and its statement replaced both observations).
    let grouped = format!(
        "<observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-known-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Pas d'allergie connue\"/></observation></entryRelationship><entryRelationship typeCode=\"SUBJ\">{}",
        allergy("764146007", Some("Pénicilline"))
    );
    let s = with(&grouped);
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(names(&s.allergies.items, |a| &a.substance), ["Pénicilline"]);
    // "No known food allergies" grouped with it: the allergy is shown, nothing settled.
    let s = with(&grouped.replace("no-known-allergies", "no-known-food-allergies"));
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(names(&s.allergies.items, |a| &a.substance), ["Pénicilline"]);
    // A negated "drug allergy" type with no value and no agent: food and latex stay
    // unknown, so a statement, never "no known allergies"; only the type "allergy" (ALG)
    // denies them all.
    let typed = |kind: &str| {
        format!(
            "<observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\"><code code=\"{kind}\" codeSystem=\"2.16.840.1.113883.5.4\" displayName=\"Type {kind}\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code nullFlavor=\"NA\"/></playingEntity></participantRole></participant></observation>"
        )
    };
    let s = with(&typed("DALG"));
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(s.allergies.statements, ["absence : Type DALG"]);
    for general in ["ALG", "419199007"] {
        let s = with(&typed(general));
        assert_eq!(s.allergies.status, SectionStatus::NoneKnown, "{general}");
    }
    // "No known problems" filed among the allergies denies no allergy.
    let s = with(
        "<observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-known-problems\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Pas de problème connu\"/></observation>",
    );
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(s.allergies.statements, ["Pas de problème connu"]);

    // A problem concern grouping two problems: both read.
    let problems = fixture.replace(
        "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"/></entry>",
        "<entry><act classCode=\"ACT\" moodCode=\"EVN\"><entryRelationship typeCode=\"SUBJ\"><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"55607006\" codeSystem=\"2.16.840.1.113883.6.96\"/><value xsi:type=\"CD\" code=\"38341003\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Hypertension\"/></observation></entryRelationship><entryRelationship typeCode=\"SUBJ\"><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"55607006\" codeSystem=\"2.16.840.1.113883.6.96\"/><value xsi:type=\"CD\" code=\"44054006\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Diabète de type 2\"/></observation></entryRelationship></act></entry>",
    );
    let s = summary::extract(problems.as_bytes()).unwrap();
    assert_eq!(
        names(&s.problems.items, |p| &p.name),
        ["Hypertension", "Diabète de type 2"]
    );
}

/// A document of thousands of unreadable entries names the first 50 and counts the rest
/// (each named by its section's path, they would fill memory), and the same allergy
/// written again and again outside the allergy section is shown once.
#[test]
fn unreadable_entries_are_named_up_to_a_point_and_repeated_allergies_shown_once() {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    const EMPTY: &str = "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"/></entry>";
    assert!(fixture.contains(EMPTY));
    let s = summary::extract(fixture.replace(EMPTY, &EMPTY.repeat(3000)).as_bytes()).unwrap();
    assert_eq!(s.defects.unreadable_entries, 3000);
    assert!(s.warnings.len() <= 55, "{} warnings", s.warnings.len());
    assert!(
        s.warnings
            .iter()
            .any(|w| w == "… and 2950 more unreadable entries"),
        "{:?}",
        s.warnings
    );
    // The problem list repeats one allergy concern 2,000 times.
    let allergy = "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"ALG\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"764146007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pénicilline\"/></playingEntity></participantRole></participant></observation></entry>";
    let s = summary::extract(fixture.replace(EMPTY, &allergy.repeat(2000)).as_bytes()).unwrap();
    assert_eq!(names(&s.allergies.items, |a| &a.substance), ["Pénicilline"]);
}

/// An allergy written in another section (a problem list's allergy concern, known by its
/// PCC template or by its intolerance type alone) joins the allergies: beside "no known
/// allergies" the section is conflicting, never « aucune allergie connue ».
#[test]
fn an_allergy_written_outside_the_allergy_section_is_never_hidden() {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    const PROBLEM: &str = "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"/></entry>";
    const DENIAL: &str = "<observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\">\n                  <code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/>\n                  <value xsi:type=\"CD\" code=\"419199007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie à une substance\"/>\n                </observation>";
    assert!(fixture.contains(PROBLEM) && fixture.contains(DENIAL));
    let concern = |template: &str| {
        format!(
            "<entry><act classCode=\"ACT\" moodCode=\"EVN\"><entryRelationship typeCode=\"SUBJ\"><observation classCode=\"OBS\" moodCode=\"EVN\">{template}<code code=\"DALG\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"764146007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pénicilline\"/></playingEntity></participantRole></participant></observation></entryRelationship></act></entry>"
        )
    };
    for template in ["<templateId root=\"1.3.6.1.4.1.19376.1.5.3.1.4.6\"/>", ""] {
        // Written twice (the problem list repeats itself): shown once.
        let document = fixture.replace(
            PROBLEM,
            &format!("{}{}", concern(template), concern(template)),
        );
        let s = summary::extract(document.as_bytes()).unwrap();
        assert_eq!(s.allergies.status, SectionStatus::Conflicting, "{template}");
        assert_eq!(names(&s.allergies.items, |a| &a.substance), ["Pénicilline"]);
        assert!(
            s.warnings
                .iter()
                .any(|w| w == "1 allergy entry found outside the allergy section"),
            "{:?}",
            s.warnings
        );
        // Without the denial: recorded, from the other section.
        let document = document.replace(
            DENIAL,
            "<observation classCode=\"OBS\" moodCode=\"EVN\" nullFlavor=\"NI\"/>",
        );
        let s = summary::extract(document.as_bytes()).unwrap();
        assert_eq!(s.allergies.status, SectionStatus::Recorded, "{template}");
        assert_eq!(names(&s.allergies.items, |a| &a.substance), ["Pénicilline"]);
    }
    // A problem that is not an allergy leaves the allergies as they were.
    let s = summary::extract(fixture.as_bytes()).unwrap();
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
}

/// Allergy information the reader once lost or let a "none known" stand over (found by a
/// review of the reader): each of these fails with the earlier reader.
#[test]
fn no_known_allergies_never_stands_over_what_else_the_document_says() {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    let with = |from: &str, to: &str| {
        assert!(fixture.contains(from), "{from}");
        summary::extract(fixture.replace(from, to).as_bytes()).unwrap()
    };
    const ALLERGY_SECTION_END: &str = "</entry>\n        </section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">";
    const PROBLEM_ENTRY: &str =
        "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"/></entry>";
    const DENIED: &str = "code=\"419199007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie à une substance\"/>";
    let penicillin = |nested: &str| {
        format!(
            "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"2.16.840.1.113883.10.20.1.18\"/><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"91936005\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie à la pénicilline\"/>{nested}</observation></entry>"
        )
    };

    // Filed among the problems, named by its value only (no agent), next to "no known
    // allergies": shown, and the allergies conflicting.
    let s = with(PROBLEM_ENTRY, &penicillin(""));
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Allergie à la pénicilline"]
    );
    // One that names nothing at all: counted, and "none known" does not stand.
    let nameless = "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"2.16.840.1.113883.10.20.1.18\"/><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/></observation></entry>";
    let s = with(PROBLEM_ENTRY, nameless);
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(s.allergies.unreadable_entries, 1);

    // A penicillin allergy carrying a nested "no known food allergy": an allergy, not a
    // statement.
    let nested = "<entryRelationship typeCode=\"SUBJ\"><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-known-food-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Pas d'allergie alimentaire connue\"/></observation></entryRelationship>";
    let s = with(
        ALLERGY_SECTION_END,
        &format!(
            "</entry>{}\n        </section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">",
            penicillin(nested)
        ),
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Allergie à la pénicilline"]
    );

    // "No known allergies" next to "nothing known of allergies": conflicting, as the FHIR
    // reader says.
    let no_info = "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-allergy-info\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Pas d'information sur les allergies\"/></observation></entry>";
    let s = with(
        ALLERGY_SECTION_END,
        &format!(
            "</entry>{no_info}\n        </section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">"
        ),
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);

    // A second allergy section of text only: its text is kept after the first's, and the
    // section is conflicting (the page shows the text of a conflicting section).
    let text_only = "</section></component><component><section><code code=\"44939-7\" codeSystem=\"2.16.840.1.113883.6.1\"/><text>Anaphylaxie à l'amoxicilline en 2019</text></section></component><component><section nullFlavor=\"NASK\">";
    let s = with(
        "</section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">",
        text_only,
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        s.allergies.narrative.as_deref(),
        Some("Absence d'allergie connue\nAnaphylaxie à l'amoxicilline en 2019")
    );
    // The fixture as written still says "none known".
    let s = with(DENIED, DENIED);
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    // An IPS "no known allergies" (or "no information") filed among the problems is a
    // statement, never an allergy named by its value.
    for (code, name) in [
        ("no-known-allergies", "Pas d'allergie connue"),
        ("no-allergy-info", "Pas d'information"),
    ] {
        let stray = format!(
            "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"2.16.840.1.113883.10.22.4.1\"/><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"{code}\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"{name}\"/></observation></entry>"
        );
        let s = with(PROBLEM_ENTRY, &stray);
        assert!(s.allergies.items.is_empty(), "{code}");
        assert_eq!(s.allergies.status, SectionStatus::NoneKnown, "{code}");
    }
    // A negated observation whose code (no value) is "no known allergy": never "none known".
    let s = with(
        ALLERGY_SECTION_END,
        "</entry><entry><observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\"><code code=\"716186003\" codeSystem=\"2.16.840.1.113883.6.96\"/></observation></entry>\n        </section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">",
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    // Its negation denying "no known allergy" says there is one: never "none known".
    let s = with(
        DENIED,
        "code=\"716186003\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pas d'allergie connue\"/>",
    );
    assert_eq!(s.allergies.status, SectionStatus::Unreadable);
    assert_eq!(s.allergies.unreadable_entries, 1);

    // A family member's allergy, in a family history (an organizer whose subject is a
    // relatedSubject): not the patient's, "none known" stands.
    let mother = |inner: &str| {
        format!(
            "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"><subject><relatedSubject classCode=\"PRS\"><code code=\"MTH\" codeSystem=\"2.16.840.1.113883.5.111\"/></relatedSubject></subject><component>{inner}</component></organizer></entry>"
        )
    };
    let observation = penicillin("")
        .trim_start_matches("<entry>")
        .trim_end_matches("</entry>")
        .to_owned();
    let s = with(PROBLEM_ENTRY, &mother(&observation));
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert!(s.allergies.items.is_empty());
    // One in the allergy section whose own subject is the mother: left out, counted, and
    // "none known" does not stand (if that judgement were wrong, it would hide the
    // patient's allergy).
    let hers = penicillin("").replacen(
        "moodCode=\"EVN\">",
        "moodCode=\"EVN\"><subject><relatedSubject classCode=\"PRS\"><code code=\"MTH\" codeSystem=\"2.16.840.1.113883.5.111\"/></relatedSubject></subject>",
        1,
    );
    let s = with(
        ALLERGY_SECTION_END,
        &format!(
            "</entry>{hers}\n        </section>\n      </component>\n      <component>\n        <section nullFlavor=\"NASK\">"
        ),
    );
    assert_eq!(s.allergies.other_person_entries, 1);
    assert!(s.allergies.items.is_empty());
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);

    // A birth time with an hour and an offset is read as its date.
    let s = with(
        "</patientRole>",
        "<patient><birthTime value=\"195003120030+0400\"/></patient></patientRole>",
    );
    assert_eq!(
        s.patient_in_document.unwrap().birth_date.as_deref(),
        Some("19500312")
    );
}

/// A document naming several patients (`recordTarget`) is about one of them only if they
/// are one person by their INS; otherwise which one is unknown, and it is refused (before,
/// the first was taken, and the document's INS check passed on it alone).
#[test]
fn several_record_targets_are_one_person_or_the_document_is_refused() {
    let source = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let start = source.find("<recordTarget>").unwrap();
    let end = source.find("</recordTarget>").unwrap() + "</recordTarget>".len();
    let target = &source[start..end];
    let with = |second: &str| {
        summary::extract(
            source
                .replacen(target, &format!("{target}{second}"), 1)
                .as_bytes(),
        )
    };
    // The same person twice: read.
    let twice = with(target).unwrap();
    assert_eq!(
        twice.patient_in_document.unwrap().ins,
        ["1.2.250.1.213.1.4.10|180017500000134"]
    );
    let someone_else = target
        .replace("180017500000134", "280017500000181")
        .replace("Camille", "Dominique");
    let unnamed = target.replace(
        "<id root=\"1.2.250.1.213.1.4.10\" extension=\"180017500000134\"/>",
        "",
    );
    for second in [someone_else.as_str(), unnamed.as_str()] {
        let refused = with(second).unwrap_err();
        assert!(
            matches!(refused, SummaryError::SeveralRecordTargets(2)),
            "{refused}"
        );
        assert!(!refused.to_string().contains("Dominique"));
        assert_eq!(
            refused.message_fr(),
            "Document refusé : il décrit plusieurs patients différents."
        );
    }
}

/// The allergy section of the fixture that states "no known allergy", its entry replaced
/// by `entry` (whole: `<entry>…</entry>`).
fn allergy_entry(entry: &str) -> summary::CriticalSummary {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    let start = fixture.find("<entry>").unwrap();
    let end = fixture.find("</entry>").unwrap() + "</entry>".len();
    let document = format!("{}{entry}{}", &fixture[..start], &fixture[end..]);
    summary::extract(document.as_bytes()).unwrap()
}

/// "Not allergic to latex" written as CI-SIS writes a free-text substance (a code with a
/// nullFlavor and its words, or the entity's name) is a noted absence, never « aucune
/// allergie connue »; a substance written so, not denied, is an allergy named by its
/// words. Before, the denial fell through to its value ("allergy to a substance") and
/// read as no known allergies, and the allergy was unreadable.
#[test]
fn a_substance_in_free_text_is_named_denied_or_not() {
    let observation = |negated: bool, agent: &str| {
        format!(
            "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"{}><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"419199007\" codeSystem=\"2.16.840.1.113883.6.96\"/><participant typeCode=\"CSM\"><participantRole><playingEntity>{agent}</playingEntity></participantRole></participant></observation></entry>",
            if negated { " negationInd=\"true\"" } else { "" }
        )
    };
    for agent in [
        "<code nullFlavor=\"OTH\"><originalText>Latex</originalText></code>",
        "<code nullFlavor=\"OTH\"/><name>Latex</name>",
    ] {
        let s = allergy_entry(&observation(true, agent));
        assert_eq!(s.allergies.status, SectionStatus::NotRecorded, "{agent}");
        assert_eq!(s.allergies.statements, ["absence d'allergie à : Latex"]);
        let s = allergy_entry(&observation(false, agent));
        assert_eq!(s.allergies.status, SectionStatus::Recorded, "{agent}");
        assert_eq!(s.allergies.items[0].substance, "Latex");
    }
}

/// An organizer grouping "no known allergies" with a penicillin allergy shows the
/// penicillin (the two conflict); an observation naming amoxicillin as its agent beside a
/// "no known allergies" value is an amoxicillin allergy. Before, the first absence code
/// found in the entry hid both.
#[test]
fn a_no_known_allergy_code_never_hides_an_allergy_in_the_same_entry() {
    let s = allergy_entry(
        "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"><statusCode code=\"completed\"/>\
         <component><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"no-known-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"Aucune allergie connue\"/></observation></component>\
         <component><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"DALG\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"764146007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pénicilline\"/></playingEntity></participantRole></participant></observation></component>\
         </organizer></entry>",
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(s.allergies.items[0].substance, "Pénicilline");
    let s = allergy_entry(
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"no-known-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"372687004\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Amoxicilline\"/></playingEntity></participantRole></participant></observation></entry>",
    );
    assert_ne!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Amoxicilline"]
    );
}

/// A treatment entry's `statusCode` is fixed to `completed` by the CI-SIS and IHE PCC
/// profiles: it never says the treatment stopped. A period ended before today does; an
/// order not to give it says so. Before, every treatment written to the profile read
/// « statut : terminé », and an ended one with no status read as current.
#[test]
fn a_treatment_is_stopped_by_its_period_not_by_its_statement_status() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let active = "<statusCode code=\"active\"/>\n              <effectiveTime xsi:type=\"IVL_TS\"><low value=\"20240301\"/></effectiveTime>";
    assert!(fixture.contains(active), "the fixture's treatment");
    let status = |replacement: &str| {
        let s = summary::extract(fixture.replace(active, replacement).as_bytes()).unwrap();
        assert_eq!(
            s.medications.items[0].name,
            "ELIQUIS 5 mg, comprimé pelliculé"
        );
        s.medications.items[0].status.clone()
    };
    assert_eq!(
        status(
            "<statusCode code=\"completed\"/><effectiveTime xsi:type=\"IVL_TS\"><low value=\"20240301\"/></effectiveTime>"
        ),
        None
    );
    assert_eq!(
        status("<statusCode code=\"completed\"/><effectiveTime xsi:type=\"IVL_TS\"><low value=\"20240301\"/><high value=\"20240615\"/></effectiveTime>").as_deref(),
        Some("completed")
    );
    assert_eq!(
        status("<statusCode code=\"active\"/><effectiveTime xsi:type=\"IVL_TS\"><low value=\"20240301\"/><high value=\"20990101\"/></effectiveTime>").as_deref(),
        Some("active")
    );
    let negated = fixture.replace(
        "<substanceAdministration classCode=\"SBADM\" moodCode=\"EVN\">",
        "<substanceAdministration classCode=\"SBADM\" moodCode=\"INT\" negationInd=\"true\">",
    );
    let s = summary::extract(negated.as_bytes()).unwrap();
    assert_eq!(
        s.medications.items[0].status.as_deref(),
        Some("do-not-perform")
    );
}

/// "No diabetes" is said as an absence, never listed as diabetes; an older document's
/// INS-C (an OID of the INS arc that is no INS) is no INS: the document names none, and is
/// not refused as another patient's.
#[test]
fn a_denied_problem_and_an_ins_c_are_not_read_as_what_they_deny() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let s = summary::extract(fixture.as_bytes()).unwrap();
    let problem = s.problems.items[0].name.clone();
    let denied = fixture.replacen(
        "<observation classCode=\"OBS\" moodCode=\"EVN\">",
        "<observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\">",
        usize::MAX,
    );
    let s = summary::extract(denied.as_bytes()).unwrap();
    assert_eq!(s.problems.items[0].name, format!("absence : {problem}"));

    let ins_c = fixture.replace(
        "<id root=\"1.2.250.1.213.1.4.10\" extension=\"180017500000134\"/>",
        "<id root=\"1.2.250.1.213.1.4.2\" extension=\"0123456789012345678901\"/>",
    );
    assert_ne!(ins_c, fixture);
    let s = summary::extract(ins_c.as_bytes()).unwrap();
    let patient = s.patient_in_document.unwrap();
    assert!(
        patient.ins.is_empty() && patient.no_ins,
        "{:?}",
        patient.ins
    );
}

/// Allergy observations nested in one another, the innermost stating "no known food
/// allergies" in a long label, many times over in a problem section: each observation is
/// read for itself (an absence code inside a nested one is that one's), so the statement
/// is read once per chain and kept once. Before, each ancestor took the inner label again
/// (about 120 copies of 64 KiB per chain), growing the summary past a gigabyte for a
/// 16 MiB document.
#[test]
fn nested_allergy_observations_are_each_read_once() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let label = "x".repeat(60_000);
    let open = "<observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"1.3.6.1.4.1.19376.1.5.3.1.4.6\"/>";
    let chain = format!(
        "<entry>{}<observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"1.3.6.1.4.1.19376.1.5.3.1.4.6\"/><code code=\"no-known-food-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\" displayName=\"{label}\"/></observation>{}</entry>",
        open.repeat(100),
        "</observation>".repeat(100)
    );
    let problems = "<title>Problèmes actifs</title>";
    let document = fixture.replace(problems, &format!("{problems}{}", chain.repeat(20)));
    let s = summary::extract(document.as_bytes()).unwrap();
    assert!(
        s.allergies.statements.len() <= 2,
        "{} statements",
        s.allergies.statements.len()
    );
    assert_eq!(s.allergies.items[0].substance, "Pénicilline");
}

/// Where allergies are written is read as they are: an allergy section holding only text
/// and a sub-section is an allergy section, not a wrapper (its text weighs against "none
/// known"); a section coded locally with its LOINC as a translation is the section its
/// LOINC names; an observation typed "drug allergy" in SNOMED CT among the problems is an
/// allergy. Before, each left « aucune allergie connue » standing.
#[test]
fn allergies_are_found_by_their_section_and_type_however_written() {
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    assert_eq!(
        summary::extract(fixture.as_bytes())
            .unwrap()
            .allergies
            .status,
        SectionStatus::NoneKnown
    );
    let with = |old: &str, new: &str| {
        assert!(fixture.contains(old), "{old}");
        summary::extract(fixture.replacen(old, new, 1).as_bytes()).unwrap()
    };
    let problems = "<entry><organizer classCode=\"CLUSTER\" moodCode=\"EVN\"/></entry>";
    let s = with(
        problems,
        "<component><section><code code=\"44939-7\" codeSystem=\"2.16.840.1.113883.6.1\"/><title>Effets indésirables</title><text>Choc anaphylactique à la pénicilline</text><component><section><code code=\"X-LOCAL\" codeSystem=\"1.2.250.1.999\"/><title>Local</title><text>x</text></section></component></section></component>",
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);

    let s = with(
        "<code code=\"48765-2\" codeSystem=\"2.16.840.1.113883.6.1\"/>",
        "<code code=\"ALLERG\" codeSystem=\"1.2.250.1.999\"><translation code=\"48765-2\" codeSystem=\"2.16.840.1.113883.6.1\"/></code>",
    );
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);

    let s = with(
        problems,
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"416098002\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Allergie médicamenteuse\"/><value xsi:type=\"CD\" code=\"372687004\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Amoxicilline\"/></observation></entry>",
    );
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Amoxicilline"]
    );
}

/// "No known medications" beside "no information on medications" in one section says two
/// things: conflicting, never « aucun traitement connu » (before, the absence stood).
#[test]
fn none_known_beside_no_information_is_conflicting() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let section = fixture.find("code=\"10160-0\"").unwrap();
    let start = section + fixture[section..].find("<entry>").unwrap();
    let end = start + fixture[start..].find("</entry>").unwrap() + "</entry>".len();
    let stated = |code: &str| {
        format!(
            "<entry><substanceAdministration classCode=\"SBADM\" moodCode=\"EVN\"><consumable><manufacturedProduct><manufacturedMaterial><code code=\"{code}\" codeSystem=\"2.16.840.1.113883.5.1150.1\"/></manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>"
        )
    };
    let only_none = format!(
        "{}{}{}",
        &fixture[..start],
        stated("no-known-medications"),
        &fixture[end..]
    );
    let s = summary::extract(only_none.as_bytes()).unwrap();
    assert_eq!(s.medications.status, SectionStatus::NoneKnown);
    let both = format!(
        "{}{}{}{}",
        &fixture[..start],
        stated("no-known-medications"),
        stated("no-medication-info"),
        &fixture[end..]
    );
    let s = summary::extract(both.as_bytes()).unwrap();
    assert_eq!(s.medications.status, SectionStatus::Conflicting);
}

/// An allergy's or a problem's clinical status (33999-4, CI-SIS in FHIR's codes, IHE PCC
/// in SNOMED CT's) and certainty (66455-7) are read: a resolved allergy says so, an
/// unconfirmed one too, and a refuted one (or one entered in error) is a note, never an
/// allergy nor a contradiction of « aucune allergie connue ». Before, each read as a
/// current, confirmed allergy.
#[test]
fn an_allergy_or_a_problem_says_its_status_and_a_refuted_allergy_is_none() {
    let qualified = |related: &str| {
        format!(
            "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"DALG\" codeSystem=\"2.16.840.1.113883.5.4\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"764146007\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Pénicilline\"/></playingEntity></participantRole></participant>{related}</observation></entry>"
        )
    };
    let status = |code: &str, system: &str| {
        format!(
            "<entryRelationship typeCode=\"REFR\"><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"33999-4\" codeSystem=\"2.16.840.1.113883.6.1\"/><statusCode code=\"completed\"/><value xsi:type=\"CE\" code=\"{code}\" codeSystem=\"{system}\"/></observation></entryRelationship>"
        )
    };
    let certainty = |code: &str| {
        format!(
            "<entryRelationship typeCode=\"SUBJ\"><observation classCode=\"OBS\" moodCode=\"EVN\"><code code=\"66455-7\" codeSystem=\"2.16.840.1.113883.6.1\"/><statusCode code=\"completed\"/><value xsi:type=\"CD\" code=\"{code}\" codeSystem=\"2.16.840.1.113883.4.642.4.1075\"/></observation></entryRelationship>"
        )
    };
    let fhir = "2.16.840.1.113883.4.642.4.1373";
    let snomed = "2.16.840.1.113883.6.96";
    for (related, clinical) in [
        (status("resolved", fhir), "resolved"),
        (status("413322009", snomed), "resolved"),
        (status("73425007", snomed), "inactive"),
        (status("active", fhir), "active"),
    ] {
        let s = allergy_entry(&qualified(&related));
        assert_eq!(s.allergies.status, SectionStatus::Recorded);
        let allergy = &s.allergies.items[0];
        assert_eq!(allergy.clinical_status.as_deref(), Some(clinical));
    }
    let s = allergy_entry(&qualified(&certainty("unconfirmed")));
    assert_eq!(
        s.allergies.items[0].verification_status.as_deref(),
        Some("unconfirmed")
    );
    for (code, said) in [
        ("refuted", "allergie réfutée : Pénicilline"),
        (
            "entered-in-error",
            "allergie annulée (saisie par erreur) : Pénicilline",
        ),
    ] {
        let s = allergy_entry(&qualified(&certainty(code)));
        assert!(s.allergies.items.is_empty(), "{code}");
        assert_eq!(s.allergies.statements, [said]);
        assert_ne!(s.allergies.status, SectionStatus::Recorded);
    }
    // Beside a "no known allergies", a refuted allergy does not contradict it.
    let fixture = String::from_utf8(cda("absence-stated-sections-not-asked.xml")).unwrap();
    let start = fixture.find("<entry>").unwrap();
    let document = format!(
        "{}{}{}",
        &fixture[..start],
        qualified(&certainty("refuted")),
        &fixture[start..]
    );
    let s = summary::extract(document.as_bytes()).unwrap();
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);

    // A problem's status and certainty, read the same way.
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let open = "<observation classCode=\"OBS\" moodCode=\"EVN\">";
    let problem_at = fixture[..fixture.find("code=\"I48\"").unwrap()]
        .rfind(open)
        .unwrap();
    let close = problem_at + fixture[problem_at..].find("</observation>").unwrap();
    let document = format!(
        "{}{}{}{}",
        &fixture[..close],
        status("413322009", snomed),
        certainty("provisional"),
        &fixture[close..]
    );
    let s = summary::extract(document.as_bytes()).unwrap();
    let problem = &s.problems.items[0];
    assert_eq!(problem.clinical_status.as_deref(), Some("resolved"));
    assert_eq!(problem.verification_status.as_deref(), Some("provisional"));
}

/// An observation naming amoxicillin as its agent beside SNOMED CT's "no known allergy"
/// (716186003) as its value is an amoxicillin allergy, in the allergy section as in any
/// other. Before, the SNOMED code was read before the agent: « aucune allergie connue » in
/// the allergy section, and nothing at all from another section.
#[test]
fn a_named_agent_beside_the_snomed_no_known_allergy_code_is_an_allergy() {
    let entry = "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><templateId root=\"1.3.6.1.4.1.19376.1.5.3.1.4.6\"/><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"716186003\" codeSystem=\"2.16.840.1.113883.6.96\"/><participant typeCode=\"CSM\"><participantRole><playingEntity><code code=\"372687004\" codeSystem=\"2.16.840.1.113883.6.96\" displayName=\"Amoxicilline\"/></playingEntity></participantRole></participant></observation></entry>";
    let s = allergy_entry(entry);
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(
        names(&s.allergies.items, |a| &a.substance),
        ["Amoxicilline"]
    );
    // The same observation filed among the problems joins the allergies.
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let section = fixture.find("code=\"11450-4\"").unwrap();
    let start = section + fixture[section..].find("<entry>").unwrap();
    let end = start + fixture[start..].find("</entry>").unwrap() + "</entry>".len();
    let moved = format!("{}{entry}{}", &fixture[..start], &fixture[end..]);
    let s = summary::extract(moved.as_bytes()).unwrap();
    assert!(
        names(&s.allergies.items, |a| &a.substance).contains(&"Amoxicilline"),
        "{:?}",
        names(&s.allergies.items, |a| &a.substance)
    );
    assert_ne!(s.allergies.status, SectionStatus::NoneKnown);
}

/// Denying a statement of absence ("not: no known allergies", "not: no known
/// medications", in the IPS codes) says there is one, unnamed: the entry is unreadable,
/// never « aucune allergie connue » nor « aucun traitement connu ». Before, the code was
/// read and the negation ignored.
#[test]
fn a_denied_statement_of_absence_is_unreadable_not_an_absence() {
    let s = allergy_entry(
        "<entry><observation classCode=\"OBS\" moodCode=\"EVN\" negationInd=\"true\"><code code=\"ASSERTION\" codeSystem=\"2.16.840.1.113883.5.4\"/><value xsi:type=\"CD\" code=\"no-known-allergies\" codeSystem=\"2.16.840.1.113883.5.1150.1\"/></observation></entry>",
    );
    assert_eq!(s.allergies.status, SectionStatus::Unreadable);
    assert!(s.allergies.items.is_empty());

    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let section = fixture.find("code=\"10160-0\"").unwrap();
    let start = section + fixture[section..].find("<entry>").unwrap();
    let end = start + fixture[start..].find("</entry>").unwrap() + "</entry>".len();
    let denied = format!(
        "{}<entry><substanceAdministration classCode=\"SBADM\" moodCode=\"EVN\" negationInd=\"true\"><consumable><manufacturedProduct><manufacturedMaterial><code code=\"no-known-medications\" codeSystem=\"2.16.840.1.113883.5.1150.1\"/></manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>{}",
        &fixture[..start],
        &fixture[end..]
    );
    let s = summary::extract(denied.as_bytes()).unwrap();
    assert_eq!(s.medications.status, SectionStatus::Unreadable);
}

/// Where the `<section>` coded `code` of `fixture` starts and ends.
fn section_bounds(fixture: &str, code: &str) -> (usize, usize) {
    let at = fixture.find(&format!("code=\"{code}\"")).unwrap();
    let start = fixture[..at].rfind("<section>").unwrap();
    let end = at + fixture[at..].find("</section>").unwrap() + "</section>".len();
    (start, end)
}

/// `section` with its first entry replaced by a treatment entry stating IPS `code`.
fn stating(section: &str, code: &str) -> String {
    let start = section.find("<entry>").unwrap();
    let end = section.find("</entry>").unwrap() + "</entry>".len();
    format!(
        "{}<entry><substanceAdministration classCode=\"SBADM\" moodCode=\"EVN\"><consumable><manufacturedProduct><manufacturedMaterial><code code=\"{code}\" codeSystem=\"2.16.840.1.113883.5.1150.1\"/></manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>{}",
        &section[..start],
        &section[end..]
    )
}

/// "No known medications" in one section and "no information on medications" in another
/// of the same kind say two things, as they would in one section. Before, the merge of
/// the two sections kept « aucun connu ».
#[test]
fn none_known_in_one_section_and_no_information_in_another_is_conflicting() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let (start, end) = section_bounds(&fixture, "10160-0");
    let section = &fixture[start..end];
    let document = |first: &str, second: &str| {
        format!(
            "{}{}</component><component>{}{}",
            &fixture[..start],
            stating(section, first),
            stating(section, second),
            &fixture[end..]
        )
    };
    for (first, second) in [
        ("no-known-medications", "no-medication-info"),
        ("no-medication-info", "no-known-medications"),
    ] {
        let s = summary::extract(document(first, second).as_bytes()).unwrap();
        assert_eq!(
            s.medications.status,
            SectionStatus::Conflicting,
            "{first} then {second}"
        );
    }
    let s = summary::extract(document("no-known-medications", "no-known-medications").as_bytes())
        .unwrap();
    assert_eq!(s.medications.status, SectionStatus::NoneKnown);
}

/// A problem recorded about a family member (its `subject` names a `relatedSubject`) is
/// theirs: left out of the patient's problems and counted, as a family member's allergy
/// is. Before, the mother's atrial fibrillation was listed as the patient's.
#[test]
fn a_family_members_problem_is_never_the_patients() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let s = summary::extract(fixture.as_bytes()).unwrap();
    assert_eq!(s.problems.items.len(), 1);
    let problem = "displayName=\"Fibrillation et flutter auriculaires\"/>";
    assert_eq!(fixture.matches(problem).count(), 1);
    let mothers = fixture.replacen(
        problem,
        &format!("{problem}<subject><relatedSubject classCode=\"PRS\"><code code=\"MTH\" codeSystem=\"2.16.840.1.113883.5.111\"/></relatedSubject></subject>"),
        1,
    );
    let s = summary::extract(mothers.as_bytes()).unwrap();
    assert!(s.problems.items.is_empty());
    assert_eq!(s.problems.other_person_entries, 1);
}

/// "No known medications" in one section and, in another of the kind, only a family
/// member's treatment: the treatment is left out and counted, and "none known" beside it
/// is conflicting, as within one section. Before, the merge dropped the count and kept
/// « aucun connu ».
#[test]
fn none_known_beside_another_persons_entry_in_a_second_section_is_conflicting() {
    let fixture = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let (start, end) = section_bounds(&fixture, "10160-0");
    let section = &fixture[start..end];
    let none = stating(section, "no-known-medications");
    let theirs = section.replacen(
        "</consumable>",
        "</consumable><subject><relatedSubject classCode=\"PRS\"><code code=\"MTH\" codeSystem=\"2.16.840.1.113883.5.111\"/></relatedSubject></subject>",
        1,
    );
    assert_ne!(theirs, section);
    let document = format!(
        "{}{none}</component><component>{theirs}{}",
        &fixture[..start],
        &fixture[end..]
    );
    let s = summary::extract(document.as_bytes()).unwrap();
    assert_eq!(s.medications.status, SectionStatus::Conflicting);
    assert!(s.medications.items.is_empty());
    assert_eq!(s.medications.other_person_entries, 1);
}

/// A document naming the same patient in a hundred `recordTarget`s and another patient in
/// the hundred and first is about two people: refused. Before, only the first hundred
/// were compared.
#[test]
fn every_record_target_is_compared() {
    let source = String::from_utf8(cda("ips-fr-allergy-treatment-problem.xml")).unwrap();
    let start = source.find("<recordTarget>").unwrap();
    let end = source.find("</recordTarget>").unwrap() + "</recordTarget>".len();
    let target = &source[start..end];
    let someone_else = target.replace("180017500000134", "280017500000181");
    let targets = format!("{}{someone_else}", target.repeat(100));
    let refused = summary::extract(source.replacen(target, &targets, 1).as_bytes()).unwrap_err();
    assert!(
        matches!(refused, SummaryError::SeveralRecordTargets(101)),
        "{refused}"
    );
}
