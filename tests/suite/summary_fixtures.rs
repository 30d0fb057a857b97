//! The critical summary against real documents written by others: every IPS bundle in
//! `../shared/fixtures/ips` (expectations checked by hand against each file), every
//! malformed file in `../shared/fixtures/malformed` refused with its actual defect, and
//! `summary show` as centre IT runs it.
//!
//! These files are third-party and stay beside the repository, never in it: without
//! `../shared/fixtures`, every test here says so loudly and passes without checking
//! anything (the project's own cases are in `summary_cases.rs`).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use samu_gateway::summary::{self, CriticalSummary, SectionStatus, SummaryError};

use support::BIN;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(path)
}

/// False, after saying so on stderr, when the third-party corpus is not beside the
/// repository.
fn corpus_present(test: &str) -> bool {
    let present = fixture("ips").is_dir() && fixture("malformed").is_dir();
    if !present {
        support::skipped(&format!(
            "summary_fixtures::{test}: {} is absent (third-party bundles are never copied into the repository)",
            fixture("").display()
        ));
    }
    present
}

fn summary_of(name: &str) -> CriticalSummary {
    let bytes = std::fs::read(fixture(&format!("ips/{name}"))).unwrap();
    summary::extract(&bytes).unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

fn allergy_names(s: &CriticalSummary) -> Vec<&str> {
    s.allergies
        .items
        .iter()
        .map(|a| a.substance.as_str())
        .collect()
}

fn medication_names(s: &CriticalSummary) -> Vec<&str> {
    s.medications
        .items
        .iter()
        .map(|m| m.name.as_str())
        .collect()
}

#[test]
fn every_ips_fixture_has_a_test_below() {
    if !corpus_present("every_ips_fixture_has_a_test_below") {
        return;
    }
    let tested = [
        "AR_Repository_Example_02.json",
        "AT-elga2.json",
        "Bundle-NZPSNoClinicalInfoBundle.json",
        "Bundle-aups-noknownx.json",
        "CH_HL7CH_Examples_01.json",
        "DE_no_info_with_Advance_Directive.json",
        "EU_Giorgio_Cangioli_02.json",
        "EU_Giorgio_Cangioli_03.json",
        "IPS_IG-bundle-01.json",
        "NL_Curavista_01.json",
        "NZ_Peter_Jordan_AAA1234.json",
        "UK_NHSx_IPS_Example_01-modified.json",
        "US_Washington_May_2024.json",
        "US_ePatientDave_medStatements_original_noNarrative.json",
        "bundle-minimal.json",
        "bundle-no-info-required-sections.json",
    ];
    let mut present: Vec<String> = std::fs::read_dir(fixture("ips"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    assert_eq!(present, tested, "a fixture was added or removed: test it");
}

#[test]
fn hl7_ips_bundle_01_penicillin_with_a_partial_negation_and_restful_authors() {
    if !corpus_present("hl7_ips_bundle_01_penicillin_with_a_partial_negation_and_restful_authors") {
        return;
    }
    let s = summary_of("IPS_IG-bundle-01.json");
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    let allergy = &s.allergies.items[0];
    assert_eq!(s.allergies.items.len(), 1);
    assert!(allergy.substance.contains("penicillin"));
    assert_eq!(allergy.criticality.as_deref(), Some("high"));
    assert_eq!(allergy.verification_status.as_deref(), Some("confirmed"));
    // "No known food allergy" is a statement, not an allergy and not "none known".
    assert_eq!(
        s.allergies.statements,
        ["No known food allergy (situation)"]
    );
    // Medications through medicationReference → Medication (urn:uuid fullUrls).
    assert_eq!(
        medication_names(&s),
        [
            "Product containing anastrozole (medicinal product)",
            "Black Cohosh Extract herbal supplement"
        ]
    );
    assert_eq!(s.medications.items[0].period.as_deref(), Some("2015-03 –"));
    assert_eq!(s.problems.items.len(), 1);
    assert_eq!(s.problems.items[0].name, "Menopausal flushing (finding)");
    assert_eq!(s.past_problems.items[0].name, "Malignant tumor of breast");
    assert_eq!(
        s.past_problems.items[0].clinical_status.as_deref(),
        Some("remission")
    );
    assert_eq!(
        s.document.date.as_deref(),
        Some("2017-12-11T14:30:00+01:00")
    );
    assert_eq!(s.document.authors, ["Beetje van Hulp"]);
    assert_eq!(
        s.document.custodian.as_deref(),
        Some("Anorg Aniza Tion BV / The best custodian ever")
    );
    assert_eq!(s.procedures.status, SectionStatus::NotRecorded);
    assert_eq!(s.procedures.basis, "section absent");
    assert!(
        s.other_sections
            .iter()
            .any(|o| o.title.as_deref() == Some("Results") && o.entries == 3)
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn ar_repository_absolute_fullurls_and_an_ips_code_without_display() {
    if !corpus_present("ar_repository_absolute_fullurls_and_an_ips_code_without_display") {
        return;
    }
    let s = summary_of("AR_Repository_Example_02.json");
    assert_eq!(
        allergy_names(&s),
        ["Penicillin -class of antibiotic- (substance)"]
    );
    assert_eq!(s.allergies.statements, ["No known food allergies"]);
    assert_eq!(s.medications.items.len(), 2);
    assert_eq!(s.medications.items[0].name, "Anastrozole (product)");
    assert_eq!(s.medications.items[0].dosage, ["1 tablet"]);
    assert_eq!(s.problems.items.len(), 1);
    assert_eq!(s.past_problems.items.len(), 1);
    assert_eq!(s.document.authors, ["Beetje van Hulp"]);
}

#[test]
fn at_elga_many_problems_procedures_and_codeable_concept_medications() {
    if !corpus_present("at_elga_many_problems_procedures_and_codeable_concept_medications") {
        return;
    }
    let s = summary_of("AT-elga2.json");
    assert_eq!(allergy_names(&s), ["Penicillin"]);
    assert_eq!(s.medications.items.len(), 9);
    assert_eq!(s.medications.items[1].name, "ELIQUIS FTBL 2,5MG");
    assert_eq!(s.medications.items[1].dosage, ["S:1-0-0-1"]);
    assert_eq!(s.problems.items.len(), 16);
    assert!(
        s.problems
            .items
            .iter()
            .any(|p| p.name == "Permanent atrial fibrillation")
    );
    assert_eq!(s.past_problems.items.len(), 2);
    let procedures: Vec<_> = s
        .procedures
        .items
        .iter()
        .map(|p| (p.name.as_str(), p.performed.as_deref()))
        .collect();
    assert_eq!(
        procedures,
        [
            ("Total replacement of left hip joint", Some("2010")),
            ("Appendectomy", Some("1962"))
        ]
    );
    assert_eq!(s.document.authors, ["Hannes Hausarzt"]);
    assert_eq!(s.other_sections.len(), 2);
}

#[test]
fn nz_no_clinical_info_free_text_negations_and_type_id_references() {
    if !corpus_present("nz_no_clinical_info_free_text_negations_and_type_id_references") {
        return;
    }
    // Section entries are `Type/id` while fullUrls are urn:uuid; codes are text only.
    let s = summary_of("Bundle-NZPSNoClinicalInfoBundle.json");
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.allergies.basis, "free text");
    assert_eq!(s.allergies.statements, ["No known allergies"]);
    assert!(s.allergies.items.is_empty());
    assert_eq!(s.medications.status, SectionStatus::NoneKnown);
    assert_eq!(s.problems.status, SectionStatus::NoneKnown);
    assert_eq!(s.past_problems.status, SectionStatus::NoneKnown);
    assert_eq!(s.past_problems.basis, "emptyReason nilknown");
    let immunizations = s.immunizations.as_ref().unwrap();
    assert_eq!(immunizations.status, SectionStatus::NoneKnown);
    assert_eq!(s.other_sections.len(), 8);
    assert_eq!(s.document.authors, ["Hana Wilson"]);
    assert_eq!(
        s.document.custodian.as_deref(),
        Some("Lakes Community Health Centre")
    );
}

#[test]
fn au_no_known_everything_by_snomed_codes() {
    if !corpus_present("au_no_known_everything_by_snomed_codes") {
        return;
    }
    let s = summary_of("Bundle-aups-noknownx.json");
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.allergies.basis, "SNOMED CT 716186003");
    assert_eq!(s.medications.status, SectionStatus::NoneKnown);
    assert_eq!(s.medications.basis, "SNOMED CT 787481004");
    assert_eq!(s.problems.status, SectionStatus::NoneKnown);
    assert_eq!(s.problems.basis, "SNOMED CT 160245001");
    // PractitionerRole author resolved to its practitioner's name.
    assert_eq!(s.document.authors, ["Palmer BURDETT"]);
}

#[test]
fn ch_reactions_dosages_and_no_problem_information() {
    if !corpus_present("ch_reactions_dosages_and_no_problem_information") {
        return;
    }
    let s = summary_of("CH_HL7CH_Examples_01.json");
    let allergy = &s.allergies.items[0];
    assert_eq!(allergy.substance, "Penicillin (substance)");
    assert_eq!(allergy.criticality.as_deref(), Some("low"));
    assert_eq!(allergy.verification_status.as_deref(), Some("unconfirmed"));
    assert_eq!(
        allergy.reactions,
        ["Nausea, vomiting and diarrhea, Itching of skin (finding) (moderate)"]
    );
    assert_eq!(
        medication_names(&s),
        ["TRIATEC Tabl 2.5 mg", "BELOC ZOK Ret Tabl 50 mg"]
    );
    // "No information about problems" is not "no known problems".
    assert_eq!(s.problems.status, SectionStatus::NotRecorded);
    assert_eq!(s.problems.basis, "IPS no-problem-info");
    assert_eq!(s.past_problems.items[0].name, "Endokarditis 1999");
    let immunizations = s.immunizations.as_ref().unwrap();
    assert_eq!(immunizations.items[0].vaccine, "Boostrix");
    assert_eq!(
        immunizations.items[0].date.as_deref(),
        Some("2017-09-15T09:12:56+02:00")
    );
}

#[test]
fn de_no_information_is_not_no_known_allergies() {
    if !corpus_present("de_no_information_is_not_no_known_allergies") {
        return;
    }
    let s = summary_of("DE_no_info_with_Advance_Directive.json");
    for section in [
        &s.allergies.status,
        &s.medications.status,
        &s.problems.status,
    ] {
        assert_eq!(*section, SectionStatus::NotRecorded);
    }
    assert_eq!(s.allergies.basis, "emptyReason unavailable");
    assert_eq!(s.other_sections.len(), 1);
    assert_eq!(
        s.other_sections[0].title.as_deref(),
        Some("Advance Directives")
    );
    let patient = s.patient_in_document.as_ref().unwrap();
    assert_eq!(patient.birth_date.as_deref(), Some("1985-04-25"));
}

#[test]
fn eu_cangioli_02_no_known_allergies_by_ips_code_and_four_immunizations() {
    if !corpus_present("eu_cangioli_02_no_known_allergies_by_ips_code_and_four_immunizations") {
        return;
    }
    let s = summary_of("EU_Giorgio_Cangioli_02.json");
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.allergies.basis, "IPS no-known-allergies");
    assert_eq!(s.medications.items.len(), 2);
    assert_eq!(
        s.medications.items[0].name,
        "Methylphenidate 5mg chewable tablet"
    );
    assert_eq!(s.problems.items.len(), 4);
    assert_eq!(s.immunizations.as_ref().unwrap().items.len(), 4);
    assert_eq!(s.document.authors, ["Rita Meloni"]);
}

#[test]
fn eu_cangioli_03_atc_coded_allergy_and_twelve_referenced_medications() {
    if !corpus_present("eu_cangioli_03_atc_coded_allergy_and_twelve_referenced_medications") {
        return;
    }
    let s = summary_of("EU_Giorgio_Cangioli_03.json");
    assert_eq!(allergy_names(&s), ["Penicillins with extended spectrum"]);
    assert_eq!(
        s.allergies.items[0].codes[0].system.as_deref(),
        Some("http://www.whocc.no/atc")
    );
    assert_eq!(s.medications.items.len(), 12);
    assert_eq!(s.medications.items[0].name, "Gliclazide");
    assert_eq!(s.medications.items[0].dosage, ["80 mg/day"]);
    assert_eq!(s.medications.items[11].name, "levothyroxine sodium");
    assert_eq!(s.problems.items.len(), 7);
    assert_eq!(s.problems.items[0].name, "Mild cognitive impairment");
}

#[test]
fn nl_curavista_non_snomed_codes_and_medication_requests_via_urn_oid() {
    if !corpus_present("nl_curavista_non_snomed_codes_and_medication_requests_via_urn_oid") {
        return;
    }
    let s = summary_of("NL_Curavista_01.json");
    assert_eq!(allergy_names(&s), ["PARACETAMOL", "Barbituraten"]);
    assert_eq!(
        medication_names(&s),
        [
            "Influenzavaccin (niet gespecificeerd) wwsp 0,5ml",
            "METFORMINE 1000MG TABLET"
        ]
    );
    assert!(
        s.medications
            .items
            .iter()
            .all(|m| m.source == "MedicationRequest")
    );
    assert_eq!(s.medications.items[1].dosage, ["3 maal per dag 1 tablet."]);
    assert_eq!(s.problems.items.len(), 3);
    assert_eq!(s.document.authors, ["Sample Organization"]);
}

#[test]
fn nz_peter_jordan_no_known_allergy_medication_and_problem() {
    if !corpus_present("nz_peter_jordan_no_known_allergy_medication_and_problem") {
        return;
    }
    let s = summary_of("NZ_Peter_Jordan_AAA1234.json");
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.medications.status, SectionStatus::NoneKnown);
    assert_eq!(s.problems.status, SectionStatus::NoneKnown);
    assert_eq!(s.immunizations.as_ref().unwrap().items.len(), 2);
    assert!(
        s.other_sections
            .iter()
            .any(|o| o.title.as_deref() == Some("Alerts"))
    );
}

#[test]
fn uk_nhsx_relative_fullurls_statements_and_requests() {
    if !corpus_present("uk_nhsx_relative_fullurls_statements_and_requests") {
        return;
    }
    let s = summary_of("UK_NHSx_IPS_Example_01-modified.json");
    assert_eq!(allergy_names(&s), ["Sesame oil (substance)"]);
    assert_eq!(s.allergies.items[0].categories, ["environment"]);
    assert_eq!(
        s.allergies.items[0].reactions,
        ["Difficulty breathing (severe)"]
    );
    assert_eq!(
        medication_names(&s),
        [
            "Sertraline 100mg tablets",
            "Metformin 2G Modified-Release tablets"
        ]
    );
    assert_eq!(
        s.medications.items[0].period.as_deref(),
        Some("2017-11-10T00:00:00+00:00 – 2018-09-14T00:00:00+01:00")
    );
    let problems: Vec<_> = s.problems.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        problems,
        ["Anxiety with depression", "Swollen legs", "Postviral cough"]
    );
    assert_eq!(s.past_problems.items[0].name, "Upper respiratory infection");
    assert_eq!(s.document.authors, ["Nichole Gilbert"]);
    assert_eq!(s.document.custodian.as_deref(), Some("COXWOLD SURGERY"));
}

#[test]
fn us_washington_no_known_allergies_and_an_unmodelled_section() {
    if !corpus_present("us_washington_no_known_allergies_and_an_unmodelled_section") {
        return;
    }
    let s = summary_of("US_Washington_May_2024.json");
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(s.medications.items.len(), 2);
    assert_eq!(s.problems.items.len(), 4);
    assert_eq!(s.immunizations.as_ref().unwrap().items.len(), 2);
    assert_eq!(
        s.other_sections[0].title.as_deref(),
        Some("History of Occupation")
    );
    assert_eq!(s.other_sections[0].entries, 4);
}

#[test]
fn us_epatientdave_no_allergy_information_duplicates_and_no_narrative() {
    if !corpus_present("us_epatientdave_no_allergy_information_duplicates_and_no_narrative") {
        return;
    }
    let s = summary_of("US_ePatientDave_medStatements_original_noNarrative.json");
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(s.allergies.basis, "IPS no-allergy-info");
    assert_eq!(s.medications.items.len(), 35);
    assert_eq!(s.medications.items[0].name, "Amlodipine");
    // 38 references, one listed twice.
    assert_eq!(s.problems.items.len(), 37);
    assert!(
        s.warnings.iter().any(|w| w.contains("same entry twice")),
        "{:?}",
        s.warnings
    );
    // "noNarrative" is about the entries: the sections keep a short one.
    assert_eq!(
        s.allergies.narrative.as_deref(),
        Some("There is no information available regarding the subject's allergy conditions.")
    );
    assert_eq!(s.document.authors, ["Neighborhood Physicians Practice"]);
}

#[test]
fn hl7_bundle_minimal_one_of_each() {
    if !corpus_present("hl7_bundle_minimal_one_of_each") {
        return;
    }
    let s = summary_of("bundle-minimal.json");
    assert_eq!(s.allergies.items.len(), 1);
    assert!(s.allergies.items[0].substance.contains("penicillin"));
    assert_eq!(s.medications.items.len(), 1);
    assert_eq!(s.problems.items.len(), 1);
    assert!(s.allergies.narrative.is_some());
}

#[test]
fn hl7_bundle_no_info_required_sections_are_not_recorded() {
    if !corpus_present("hl7_bundle_no_info_required_sections_are_not_recorded") {
        return;
    }
    let s = summary_of("bundle-no-info-required-sections.json");
    assert_eq!(s.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(s.medications.status, SectionStatus::NotRecorded);
    assert_eq!(s.problems.status, SectionStatus::NotRecorded);
    assert_eq!(s.immunizations.as_ref().unwrap().items.len(), 2);
}

fn show(path: &PathBuf, json: bool) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(["summary", "show"]).arg(path);
    if json {
        command.arg("--json");
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_malformed_fixture_is_refused_naming_its_actual_defect() {
    if !corpus_present("every_malformed_fixture_is_refused_naming_its_actual_defect") {
        return;
    }
    let expected = [
        ("Observation-ex-pain.json", "'_valueInteger' is invalid"),
        ("Observation-ex-pain.json", "Observation.code: required"),
        (
            "ai1.json",
            "not an IPS bundle: the file is a Patient resource",
        ),
        ("ai3.json", "unknown element 'unknownElement'"),
        ("ai4.json", "Patient.birthDate: not a valid FHIR date"),
        (
            "bad-json-close-1.json",
            "line 15, column 11: unexpected close marker ']' where '}' closes the object",
        ),
        (
            "bad-json-close-2.json",
            "line 15, column 11: unexpected '#'",
        ),
        (
            "bad-json-close-3.json",
            "line 16, column 9: unexpected close marker '}' where ']' closes the array",
        ),
        (
            "json-comma-bad-1.json",
            "line 7, column 7: a comma is missing",
        ),
        ("json-comma-bad-2.json", "line 9, column 7: an extra comma"),
        ("json-comments-1.json", "comments are not allowed in JSON"),
        (
            "json-comments-2.json",
            "line 3, column 3: comments are not allowed in JSON",
        ),
        (
            "json-good.json",
            "not an IPS bundle: the file is a Patient resource",
        ),
        ("json-no-quotes-1.json", "a property name without quotes"),
        (
            "json-no-quotes-2.json",
            "line 8, column 9: a value without quotes",
        ),
        (
            "resource-invalid-id-1.json",
            "Location.id: not a legal FHIR id",
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(fixture("malformed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    let mut covered: Vec<String> = expected.iter().map(|(f, _)| f.to_string()).collect();
    covered.dedup();
    assert_eq!(
        files, covered,
        "a malformed fixture was added or removed: test it"
    );
    for (file, defect) in expected {
        let path = fixture(&format!("malformed/{file}"));
        let (code, stdout, stderr) = show(&path, false);
        assert_eq!(code, 1, "{file}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{file}: {stdout}");
        assert!(
            stderr.contains(defect),
            "{file}: expected '{defect}' in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
    // The reference validator's verdicts agree on which files are defective at all.
    for file in ["json-good", "ai1"] {
        let outcome =
            std::fs::read_to_string(fixture(&format!("malformed/expected/{file}.outcome.json")))
                .unwrap();
        assert!(
            !outcome.contains("\"error\"") && !outcome.contains("\"fatal\""),
            "{outcome}"
        );
    }
}

#[test]
fn refusals_never_quote_the_offending_values() {
    if !corpus_present("refusals_never_quote_the_offending_values") {
        return;
    }
    let (_, _, stderr) = show(&fixture("malformed/ai4.json"), false);
    assert!(!stderr.contains("not a date"), "{stderr}");
    let (_, _, stderr) = show(&fixture("malformed/resource-invalid-id-1.json"), false);
    assert!(!stderr.contains("foobar"), "{stderr}");
}

#[test]
fn summary_show_prints_allergies_first_and_json_as_the_api_builds_it() {
    if !corpus_present("summary_show_prints_allergies_first_and_json_as_the_api_builds_it") {
        return;
    }
    let path = fixture("ips/IPS_IG-bundle-01.json");
    let (code, text, _) = show(&path, false);
    assert_eq!(code, 0);
    let first_section = text.lines().nth(1).unwrap();
    assert!(first_section.starts_with("ALLERGIES: recorded"), "{text}");
    let (code, json, _) = show(&path, true);
    assert_eq!(code, 0);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let direct = serde_json::to_value(summary_of("IPS_IG-bundle-01.json")).unwrap();
    assert_eq!(parsed, direct);
    assert_eq!(parsed["allergies"]["status"], "recorded");
}

#[test]
fn defects_real_bundles_have_are_coped_with_or_refused_precisely() {
    if !corpus_present("defects_real_bundles_have_are_coped_with_or_refused_precisely") {
        return;
    }
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("ips/bundle-minimal.json")).unwrap())
            .unwrap();
    // A searchset (some servers answer $summary so) without a Composition.
    let mut searchset = base.clone();
    searchset["type"] = "searchset".into();
    let entries = searchset["entry"].as_array_mut().unwrap();
    entries.retain(|e| e["resource"]["resourceType"] != "Composition");
    let s = summary::extract(&serde_json::to_vec(&searchset).unwrap()).unwrap();
    assert_eq!(s.allergies.items.len(), 1);
    assert_eq!(s.medications.items.len(), 1);
    // Two Patient resources describing different people: refused.
    let mut two = base.clone();
    let mut other = two["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap()
        .clone();
    other["fullUrl"] = "urn:uuid:other".into();
    other["resource"]["birthDate"] = "1901-01-01".into();
    other["resource"]["id"] = "other".into();
    two["entry"].as_array_mut().unwrap().push(other.clone());
    // The Composition names its subject: the other Patient is another person, not a reason
    // to refuse the document.
    let s = summary::extract(&serde_json::to_vec(&two).unwrap()).unwrap();
    assert_eq!(s.allergies.items.len(), 1);
    assert_ne!(
        s.patient_in_document
            .as_ref()
            .unwrap()
            .birth_date
            .as_deref(),
        Some("1901-01-01")
    );
    // Without a Composition to name the subject, two different people: refused.
    let mut two_searchset = two.clone();
    two_searchset["type"] = "searchset".into();
    two_searchset["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["resourceType"] != "Composition");
    assert!(matches!(
        summary::extract(&serde_json::to_vec(&two_searchset).unwrap()),
        Err(SummaryError::ConflictingPatients(2))
    ));
    // The same person twice is fine.
    let mut same = base.clone();
    let mut copy = other;
    copy["resource"]["birthDate"] = base["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap()["resource"]["birthDate"]
        .clone();
    same["entry"].as_array_mut().unwrap().push(copy);
    assert!(summary::extract(&serde_json::to_vec(&same).unwrap()).is_ok());
    // An allergy reference that resolves nowhere: "unreadable", never "none known".
    let mut dangling = base.clone();
    let composition = dangling["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["resource"]["resourceType"] == "Composition")
        .unwrap();
    for section in composition["resource"]["section"].as_array_mut().unwrap() {
        if section["code"]["coding"][0]["code"] == "48765-2" {
            section["entry"] = serde_json::json!([{"reference": "AllergyIntolerance/missing"}]);
            section["text"]["div"] =
                "<div><script>alert(1)</script>Allergy: <b>latex</b> &amp; more</div>".into();
        }
    }
    // The document still holds its allergy, which the section no longer lists: shown
    // apart, never hidden behind the dangling reference.
    let s = summary::extract(&serde_json::to_vec(&dangling).unwrap()).unwrap();
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(s.allergies.basis, "entries not listed in the section");
    assert_eq!(s.allergies.unlisted_items.len(), 1);
    assert_eq!(s.allergies.unreadable_entries, 1);
    assert_eq!(
        s.allergies.narrative.as_deref(),
        Some("Allergy: latex & more")
    );
    // Without it, nothing readable is left: unreadable.
    dangling["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["resourceType"] != "AllergyIntolerance");
    let s = summary::extract(&serde_json::to_vec(&dangling).unwrap()).unwrap();
    assert_eq!(s.allergies.status, SectionStatus::Unreadable);
    assert_eq!(s.allergies.unreadable_entries, 1);
    // A transaction is not a summary.
    let mut transaction = base;
    transaction["type"] = "transaction".into();
    assert!(matches!(
        summary::extract(&serde_json::to_vec(&transaction).unwrap()),
        Err(SummaryError::NotABundle(_))
    ));
}

#[test]
fn oversize_documents_are_refused_before_parsing() {
    if !corpus_present("oversize_documents_are_refused_before_parsing") {
        return;
    }
    let huge = vec![b' '; summary::MAX_BUNDLE_BYTES + 1];
    assert!(matches!(
        summary::extract(&huge),
        Err(SummaryError::TooLarge(_))
    ));
}

/// Every JSON pointer in `value`.
fn pointers(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                pointers(v, path.clone(), out);
                out.push(path);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let path = format!("{at}/{i}");
                pointers(v, path.clone(), out);
                out.push(path);
            }
        }
        _ => {}
    }
}

/// The fuzz corpus: the project's own bundles always, the third-party ones when present.
fn fixtures() -> Vec<Vec<u8>> {
    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = [own.join("ips"), own.join("summary"), fixture("ips")]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(600))]

    /// The bundle parser's fuzz target, bounded for CI: real bundles with bytes flipped,
    /// cut or inserted never panic the extractor.
    #[test]
    fn real_bundles_with_bytes_mutated_never_panic(
        file in proptest::prelude::any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>(), 0u8..3), 1..6),
    ) {
        let corpus = fixtures();
        let mut bytes = corpus[file.index(corpus.len())].clone();
        crate::support::mutate(&mut bytes, edits);
        let _ = summary::extract(&bytes);
    }

    /// Structure-aware: any element of a real bundle replaced by a value of another shape.
    #[test]
    fn real_bundles_with_elements_replaced_never_panic(
        file in proptest::prelude::any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u8..7), 1..4),
    ) {
        let corpus = fixtures();
        let bytes = corpus[file.index(corpus.len())].clone();
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            // A fixture that is not JSON at all (a byte order mark) is the other test's.
            return Ok(());
        };
        for (at, kind) in edits {
            let mut all = Vec::new();
            pointers(&value, String::new(), &mut all);
            if all.is_empty() { break; }
            let pointer = &all[at.index(all.len())];
            let replacement = match kind {
                0 => serde_json::Value::Null,
                1 => serde_json::json!(-1.5e300),
                2 => serde_json::json!(""),
                3 => serde_json::json!([]),
                4 => serde_json::json!({}),
                5 => serde_json::json!("Patient/x/_history/../#"),
                _ => serde_json::json!([{"reference": "#"}, null, 7]),
            };
            if let Some(slot) = value.pointer_mut(pointer) { *slot = replacement; }
        }
        let _ = summary::extract(&serde_json::to_vec(&value).unwrap());
    }
}
