//! The summary never hides a recorded allergy: one test per defective document shape, each
//! on a small synthetic bundle of the project's own (`tests/fixtures/summary/`, named after
//! what it exercises), and a property test feeding hostile Unicode into every string of
//! those bundles and of the real ones in `../shared/fixtures/ips` when present.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use samu_gateway::summary::{self, CriticalSummary, SectionStatus, SummaryError};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_samu-gateway");

fn case_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/summary")
        .join(name)
}

fn case(name: &str) -> Result<CriticalSummary, SummaryError> {
    summary::extract(&std::fs::read(case_path(name)).unwrap())
}

fn accepted(name: &str) -> CriticalSummary {
    case(name).unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

fn substances(items: &[summary::Allergy]) -> Vec<(&str, Option<&str>)> {
    items
        .iter()
        .map(|a| (a.substance.as_str(), a.criticality.as_deref()))
        .collect()
}

#[test]
fn every_case_fixture_has_a_test() {
    let mut present: Vec<String> = std::fs::read_dir(case_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    assert_eq!(
        present,
        [
            "duplicate-fullurl-none-known-then-penicillin.json",
            "duplicate-json-key-in-allergy.json",
            "duplicate-type-id-two-allergies.json",
            "entry-defects-attachment-name-declaration.json",
            "family-members-as-extra-patients.json",
            "malformed-multibyte-date-in-allergy.json",
            "none-known-and-no-information.json",
            "none-known-listed-allergy-unlisted.json",
            "subject-undeterminable.json",
            "utf8-byte-order-mark.json",
            "versioned-references.json",
        ]
    );
}

#[test]
fn a_shared_fullurl_never_lets_none_known_hide_the_penicillin_allergy() {
    let s = accepted("duplicate-fullurl-none-known-then-penicillin.json");
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        substances(&s.allergies.items),
        [("Penicillin allergy", Some("high"))]
    );
    assert_eq!(s.allergies.statements, ["No known allergy (situation)"]);
    assert_eq!(s.allergies.duplicate_entries, 1);
    assert_eq!(s.defects.duplicate_entries, 1);
    assert!(s.defects.any());
}

#[test]
fn two_allergies_under_one_type_and_id_are_both_shown() {
    let s = accepted("duplicate-type-id-two-allergies.json");
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(
        substances(&s.allergies.items),
        [
            ("Latex allergy", Some("high")),
            ("Allergy to peanut", Some("low"))
        ]
    );
    assert_eq!(s.allergies.duplicate_entries, 1);
    assert_eq!(s.defects.duplicate_entries, 1);
}

#[test]
fn a_versioned_reference_reads_that_version_and_a_missing_version_is_unreadable() {
    let s = accepted("versioned-references.json");
    // Version 2 (high), not whichever version comes first (version 1, low); version 1 is
    // the same allergy's history, not another allergy.
    assert_eq!(
        substances(&s.allergies.items),
        [("Allergy to aspirin", Some("high"))]
    );
    assert!(s.allergies.unlisted_items.is_empty());
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    // The problem list names version 9 of a condition the document holds only in version 1.
    assert_eq!(s.problems.status, SectionStatus::Unreadable);
    assert_eq!(s.problems.unreadable_entries, 1);
    assert!(s.problems.items.is_empty());
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("names a version the document does not hold")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn none_known_next_to_no_information_is_a_visible_contradiction() {
    let s = accepted("none-known-and-no-information.json");
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        s.allergies.statements,
        [
            "No known allergy (situation)",
            "No information about allergies"
        ]
    );
    assert_eq!(
        s.allergies.basis,
        "SNOMED CT 716186003 and IPS no-allergy-info"
    );
}

#[test]
fn an_allergy_the_section_does_not_list_beats_its_none_known_statement() {
    let s = accepted("none-known-listed-allergy-unlisted.json");
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert!(s.allergies.items.is_empty());
    assert_eq!(
        substances(&s.allergies.unlisted_items),
        [("Allergy to peanut", Some("high"))]
    );
    assert_eq!(s.allergies.statements, ["No known allergy (situation)"]);
}

/// The unlisted-allergy bundle, its two allergies changed by `change` (the listed "no
/// known allergy" first, the unlisted peanut allergy second) and its section's reference
/// set to `listed`.
fn unlisted_case(listed: &str, change: impl Fn(usize, &mut Value)) -> CriticalSummary {
    let mut bundle: Value = serde_json::from_slice(
        &std::fs::read(case_path("none-known-listed-allergy-unlisted.json")).unwrap(),
    )
    .unwrap();
    let entries = bundle["entry"].as_array_mut().unwrap();
    let mut n = 0;
    for entry in entries.iter_mut() {
        if entry["resource"]["resourceType"] == "AllergyIntolerance" {
            change(n, entry);
            n += 1;
        }
        if entry["resource"]["resourceType"] == "Composition" {
            entry["resource"]["section"][0]["entry"][0]["reference"] = listed.into();
        }
    }
    assert_eq!(n, 2);
    summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap()
}

/// Only a listed allergy's copies and earlier versions are its history. Two allergies
/// sharing a bare id under different fullUrls (legal under `urn:uuid:`) are two
/// allergies, and a later version than the one listed is shown. Before, any allergy with
/// a listed allergy's id was skipped: the peanut allergy vanished behind "no known
/// allergy".
#[test]
fn only_a_listed_allergys_copies_and_earlier_versions_are_its_history() {
    let s = unlisted_case("urn:uuid:nka", |_, entry| {
        entry["resource"]["id"] = "allergy".into();
    });
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        substances(&s.allergies.unlisted_items),
        [("Allergy to peanut", Some("high"))]
    );

    let versioned = |n: usize, entry: &mut Value| {
        let version = n + 1;
        entry["fullUrl"] =
            format!("http://srv/fhir/AllergyIntolerance/a/_history/{version}").into();
        entry["resource"]["id"] = "a".into();
        entry["resource"]["meta"] = serde_json::json!({ "versionId": version.to_string() });
    };
    // Version 1 listed: version 2, the peanut allergy, is later, not history.
    let s = unlisted_case("http://srv/fhir/AllergyIntolerance/a/_history/1", versioned);
    assert_eq!(s.allergies.status, SectionStatus::Conflicting);
    assert_eq!(
        substances(&s.allergies.unlisted_items),
        [("Allergy to peanut", Some("high"))]
    );
    // Version 2 listed: version 1 is its history.
    let s = unlisted_case("http://srv/fhir/AllergyIntolerance/a/_history/2", versioned);
    assert_eq!(s.allergies.status, SectionStatus::Recorded);
    assert_eq!(
        substances(&s.allergies.items),
        [("Allergy to peanut", Some("high"))]
    );
    assert!(s.allergies.unlisted_items.is_empty());
    // A copy of the listed allergy (a second entry under its fullUrl) is that allergy.
    let s = unlisted_case("urn:uuid:nka", |n, entry| {
        if n == 1 {
            entry["resource"] = serde_json::json!({"resourceType": "AllergyIntolerance", "id": "nka", "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}, "code": {"coding": [{"system": "http://snomed.info/sct", "code": "716186003", "display": "No known allergy (situation)"}]}, "patient": {"reference": "urn:uuid:patient-1"}});
            entry["fullUrl"] = "urn:uuid:nka".into();
        }
    });
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown);
    assert!(
        !s.warnings.iter().any(|w| w.contains("not listed")),
        "{:?}",
        s.warnings
    );
}

/// The unlisted-allergy bundle without its unlisted allergy, `change`d.
fn listed_only_case(change: impl FnOnce(&mut Value)) -> CriticalSummary {
    let mut bundle: Value = serde_json::from_slice(
        &std::fs::read(case_path("none-known-listed-allergy-unlisted.json")).unwrap(),
    )
    .unwrap();
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["fullUrl"] != "urn:uuid:peanut");
    change(&mut bundle);
    summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap()
}

/// A section's narrative too long to keep whole is cut and says so through the whole
/// FHIR read: alone, and read together with a second section of the same code whose text
/// is short (the flag is the merged section's). Before, a cut FHIR text only ended with `…`.
#[test]
fn a_fhir_section_text_too_long_to_keep_is_cut_and_says_so() {
    let long = format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{}</p><p>Allergie au latex</p></div>",
        "Antécédent ancien sans suite. ".repeat(1_000)
    );
    for second in [false, true] {
        let s = listed_only_case(|bundle| {
            for entry in bundle["entry"].as_array_mut().unwrap() {
                if entry["resource"]["resourceType"] != "Composition" {
                    continue;
                }
                let sections = entry["resource"]["section"].as_array_mut().unwrap();
                sections[0]["text"] = serde_json::json!({"status": "generated", "div": long});
                if second {
                    let mut short = sections[0].clone();
                    short["text"]["div"] =
                        "<div xmlns=\"http://www.w3.org/1999/xhtml\">Court</div>".into();
                    short["entry"] = serde_json::json!([]);
                    sections.push(short);
                }
            }
        });
        assert!(s.allergies.narrative_cut, "second section: {second}");
        let text = s.allergies.narrative.as_deref().unwrap();
        assert!(
            text.contains('…') && !text.contains("latex"),
            "second section: {second}"
        );
        assert_eq!(text.ends_with("Court"), second);
    }
    // The fixture's own short text is whole.
    assert!(!listed_only_case(|_| {}).allergies.narrative_cut);
}

/// A section entry the document cannot resolve to a resource (an identifier and a
/// display only, or an `entry` that is not a list) is unreadable: "no known allergy"
/// beside it is not the section's word. Before, such entries were passed over and the
/// section read "aucune allergie connue".
#[test]
fn a_section_entry_without_a_reference_is_unreadable_not_passed_over() {
    let s = listed_only_case(|_| {});
    assert_eq!(s.allergies.status, SectionStatus::NoneKnown, "the control");
    let s = listed_only_case(|bundle| {
        bundle["entry"][0]["resource"]["section"][0]["entry"] = serde_json::json!([
            {"reference": "urn:uuid:nka"},
            {"identifier": {"system": "urn:oid:1.2.250.1.999", "value": "A1"}, "display": "Allergie"}
        ]);
    });
    assert_eq!(s.allergies.status, SectionStatus::Unreadable);
    assert_eq!(s.allergies.unreadable_entries, 1);
    assert!(
        s.warnings.iter().any(|w| w.contains("without a reference")),
        "{:?}",
        s.warnings
    );
    let s = listed_only_case(|bundle| {
        bundle["entry"][0]["resource"]["section"][0]["entry"] =
            serde_json::json!({"reference": "urn:uuid:nka"});
    });
    assert_eq!(s.allergies.status, SectionStatus::Unreadable);
}

/// Entries that are no fact or no treatment never read as one: an order not to give a
/// product is shown as such, not as a current treatment; a withdrawn or cancelled
/// observation and a device entered in error are left out; a date written another way
/// than FHIR's is not shown as a date. Before, "do not give amoxicillin" was listed among
/// the current treatments and a withdrawn "pregnant" was shown.
#[test]
fn orders_not_to_give_and_withdrawn_entries_never_read_as_current() {
    let s = listed_only_case(|bundle| {
        let entries = bundle["entry"].as_array_mut().unwrap();
        let subject = serde_json::json!({"reference": "urn:uuid:patient-1"});
        entries.push(serde_json::json!({"fullUrl": "urn:uuid:mr", "resource": {
            "resourceType": "MedicationRequest", "id": "mr", "status": "active",
            "intent": "order", "doNotPerform": true, "subject": subject,
            "medicationCodeableConcept": {"text": "Amoxicilline"},
            "authoredOn": "05/12/2024"}}));
        entries.push(serde_json::json!({"fullUrl": "urn:uuid:obs", "resource": {
            "resourceType": "Observation", "id": "obs", "status": "entered-in-error",
            "code": {"text": "Grossesse"}, "subject": subject,
            "valueCodeableConcept": {"text": "Enceinte"}}}));
        entries.push(serde_json::json!({"fullUrl": "urn:uuid:dev", "resource": {
            "resourceType": "DeviceUseStatement", "id": "dev", "status": "entered-in-error",
            "subject": subject, "device": {"reference": "urn:uuid:pacemaker"}}}));
        entries.push(
            serde_json::json!({"fullUrl": "urn:uuid:pacemaker", "resource": {
            "resourceType": "Device", "id": "pacemaker", "type": {"text": "Stimulateur"}}}),
        );
        let sections = entries[0]["resource"]["section"].as_array_mut().unwrap();
        let medications = sections[1].as_object_mut().unwrap();
        medications.remove("emptyReason");
        medications.insert(
            "entry".into(),
            serde_json::json!([{"reference": "urn:uuid:mr"}]),
        );
        let loinc = |code: &str, reference: &str| {
            serde_json::json!({
            "title": code, "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "entry": [{"reference": reference}]})
        };
        sections.push(loinc("10162-6", "urn:uuid:obs"));
        sections.push(loinc("46264-8", "urn:uuid:dev"));
    });
    let amoxicillin = &s.medications.items[0];
    assert_eq!(amoxicillin.name, "Amoxicilline");
    assert_eq!(amoxicillin.status.as_deref(), Some("do-not-perform"));
    assert_eq!(amoxicillin.period, None, "a malformed date");
    let pregnancy = s.pregnancy.as_ref().unwrap();
    assert!(pregnancy.items.is_empty());
    assert!(s.devices.as_ref().unwrap().items.is_empty());
}

/// A product claimed by more resources than an item may name is unreadable, not named
/// after each of them in every statement (a hostile bundle's thousands of claimants,
/// copied into thousands of statements, would fill memory); a few claimants are all
/// named, none picked.
#[test]
fn a_product_claimed_by_too_many_resources_is_unreadable_not_copied_into_each_statement() {
    let with_claimants = |claimants: usize| {
        listed_only_case(|bundle| {
            let entries = bundle["entry"].as_array_mut().unwrap();
            for n in 0..claimants {
                entries.push(
                    serde_json::json!({"fullUrl": "urn:uuid:product", "resource": {
                    "resourceType": "Medication", "id": format!("m{n}"),
                    "code": {"text": format!("Produit {n}")}}}),
                );
            }
            entries.push(serde_json::json!({"fullUrl": "urn:uuid:ms", "resource": {
                "resourceType": "MedicationStatement", "id": "ms", "status": "active",
                "subject": {"reference": "urn:uuid:patient-1"},
                "medicationReference": {"reference": "urn:uuid:product"}}}));
            let medications = entries[0]["resource"]["section"][1]
                .as_object_mut()
                .unwrap();
            medications.remove("emptyReason");
            medications.insert(
                "entry".into(),
                serde_json::json!([{"reference": "urn:uuid:ms"}]),
            );
        })
    };
    let few = with_claimants(3);
    assert_eq!(
        few.medications.items[0].name,
        "Produit 0 / Produit 1 / Produit 2"
    );
    let many = with_claimants(40);
    assert!(many.medications.items.is_empty());
    assert_eq!(many.medications.status, SectionStatus::Unreadable);
    assert_eq!(many.medications.unreadable_entries, 1);
}

/// Warnings past the first 50 are counted, not kept: a document with thousands of
/// defects says how many more there are without holding each one's text.
#[test]
fn warnings_past_the_first_fifty_are_counted() {
    let s = listed_only_case(|bundle| {
        let entries = bundle["entry"].as_array_mut().unwrap();
        for n in 0..200 {
            entries.push(serde_json::json!({"fullUrl": format!("urn:uuid:bad-{n}"),
                "resource": {"resourceType": "Basic", "id": "not a legal id!"}}));
        }
    });
    assert_eq!(s.warnings.len(), 51, "{:?}", s.warnings.last());
    let last = s.warnings.last().unwrap();
    assert!(
        last.starts_with("… and ") && last.ends_with(" more warnings"),
        "{last}"
    );
    assert!(s.defects.invalid_entries >= 200);
}

/// A section is named by its LOINC coding wherever it stands among its codings: a local
/// coding listed first does not make the medication section an unmodelled one.
#[test]
fn a_section_is_named_by_its_loinc_coding_wherever_it_stands() {
    let s = listed_only_case(|bundle| {
        bundle["entry"][0]["resource"]["section"][1]["code"]["coding"] = serde_json::json!([
            {"system": "urn:oid:1.2.250.1.999.1", "code": "TRT"},
            {"system": "http://loinc.org", "code": "10160-0"}
        ]);
    });
    assert_eq!(s.medications.basis, "emptyReason unavailable");
    assert!(
        s.other_sections
            .iter()
            .all(|o| o.code.as_deref() != Some("TRT")),
        "read as an unmodelled section"
    );
}

#[test]
fn family_members_entries_are_left_out_and_counted_not_merged_nor_refused() {
    let s = accepted("family-members-as-extra-patients.json");
    // The subject is the Patient the Composition names, though listed second.
    let patient = s.patient_in_document.as_ref().unwrap();
    assert_eq!(patient.names, ["Camille SYNTHESE"]);
    assert_eq!(patient.birth_date.as_deref(), Some("1970-05-14"));
    assert_eq!(
        substances(&s.allergies.items),
        [
            ("Penicillin allergy", Some("high")),
            ("Latex allergy", None)
        ]
    );
    assert!(s.allergies.unlisted_items.is_empty());
    // The mother's listed shellfish allergy and the child's unlisted egg allergy.
    assert_eq!(s.allergies.other_person_entries, 2);
    let problems: Vec<&str> = s.problems.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(problems, ["Hypertension artérielle"]);
    assert_eq!(s.problems.other_person_entries, 1);
    assert_eq!(s.defects.other_person_entries, 3);
    let shown = serde_json::to_string(&s).unwrap();
    assert!(!shown.contains("shellfish") && !shown.contains("Mireille") && !shown.contains("Léo"));
}

#[test]
fn a_document_whose_subject_cannot_be_determined_is_refused() {
    let refused = case("subject-undeterminable.json").unwrap_err();
    assert_eq!(refused, SummaryError::ConflictingPatients(2));
    assert!(refused.to_string().contains("subject cannot be determined"));
    assert!(!refused.to_string().contains("SYNTHESE"));
}

#[test]
fn a_malformed_multibyte_date_is_an_entry_defect_not_a_panic() {
    let s = accepted("malformed-multibyte-date-in-allergy.json");
    assert_eq!(
        substances(&s.allergies.items),
        [("Penicillin allergy", Some("high"))]
    );
    // Never shown as if it were a date.
    assert_eq!(s.allergies.items[0].onset, None);
    assert_eq!(s.defects.invalid_entries, 1);
    let warnings = s.warnings.join("\n");
    assert!(warnings.contains("AllergyIntolerance.onsetDateTime: not a valid FHIR dateTime"));
    assert!(warnings.contains("AllergyIntolerance.recordedDate: not a valid FHIR dateTime"));
    assert!(!warnings.contains("TAé") && !warnings.contains('\u{301}'));
}

#[test]
fn entry_level_defects_are_counted_and_described() {
    let s = accepted("entry-defects-attachment-name-declaration.json");
    let d = &s.defects;
    // The Patient's photo and one of the DocumentReference's two attachments.
    assert_eq!(d.bad_attachments, 2);
    assert_eq!(d.names_with_markup, 1);
    // The Patient's narrative and the allergy section's.
    assert_eq!(d.narrative_declarations, 2);
    assert_eq!(
        s.patient_in_document.as_ref().unwrap().names,
        ["Camille SYNTHESE"]
    );
    assert_eq!(s.allergies.narrative.as_deref(), Some("Pénicilline"));
    assert_eq!(s.allergies.items.len(), 1);
    let warnings = s.warnings.join("\n");
    assert!(warnings.contains("Patient.photo: attachment data is not valid base64"));
    assert!(warnings.contains("Patient.name holds markup"));
    assert!(!warnings.contains("not base64 at all"));
}

#[test]
fn a_property_named_twice_refuses_the_document() {
    let refused = case("duplicate-json-key-in-allergy.json").unwrap_err();
    let SummaryError::Syntax { line, defect, .. } = &refused else {
        panic!("{refused:?}")
    };
    assert!(defect.contains("a property name appears twice"), "{defect}");
    assert!(*line > 1);
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    let bytes = std::fs::read(case_path("utf8-byte-order-mark.json")).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
    let s = accepted("utf8-byte-order-mark.json");
    assert_eq!(s.allergies.items.len(), 1);
    assert!(!s.defects.any(), "{:?}", s.defects);
    // The same bytes as UTF-16 are named as such.
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let refused = summary::extract(&utf16).unwrap_err();
    assert!(refused.to_string().contains("UTF-16"), "{refused}");
}

#[test]
fn summary_show_json_exposes_statuses_and_counts() {
    let out = Command::new(BIN)
        .args(["summary", "show", "--json"])
        .arg(case_path(
            "duplicate-fullurl-none-known-then-penicillin.json",
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["allergies"]["status"], "conflicting");
    assert_eq!(json["allergies"]["duplicate_entries"], 1);
    assert_eq!(json["defects"]["duplicate_entries"], 1);
    let out = Command::new(BIN)
        .args(["summary", "show"])
        .arg(case_path("family-members-as-extra-patients.json"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("! 2 entries about another person, left out"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["summary", "show"])
        .arg(case_path("none-known-listed-allergy-unlisted.json"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let allergies = text.lines().nth(1).unwrap();
    assert!(allergies.starts_with("ALLERGIES: CONFLICTING"), "{text}");
    assert!(
        text.contains(
            "Allergy to peanut [criticality high] [not listed in the document's section]"
        )
    );
}

// ----- hostile content -----

/// The synthetic cases (always) and the real bundles (when `../shared` is there).
fn corpus() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(case_path(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/ips");
    match std::fs::read_dir(&shared) {
        Ok(dir) => files.extend(dir.map(|e| e.unwrap().path())),
        Err(_) => support::skipped(&format!(
            "summary_cases: {} is absent; the hostile-content property test ran on the project's own bundles only",
            shared.display()
        )),
    }
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            serde_json::from_slice(bytes).ok()
        })
        .collect()
}

/// Pointers to every string value, and to every object key, of `value`.
fn strings(value: &Value, at: String, values: &mut Vec<String>, keys: &mut Vec<(String, String)>) {
    match value {
        Value::String(_) => values.push(at),
        Value::Object(map) => {
            for (k, v) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                keys.push((at.clone(), k.clone()));
                strings(v, format!("{at}/{escaped}"), values, keys);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(v, format!("{at}/{i}"), values, keys);
            }
        }
        _ => {}
    }
}

/// Text no reader expects: multi-byte, combining, control, bidi and date-like pieces.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "é",
        "中",
        "😀",
        "\u{0301}",
        "\u{0301}\u{0301}",
        "\u{0000}",
        "\u{0007}",
        "\u{001B}[31m",
        "\u{007F}",
        "\u{0085}",
        "\u{200B}",
        "\u{202E}",
        "\u{FEFF}",
        "\u{FFFD}",
        "\u{10FFFF}",
        "2026-11-02T",
        "TA",
        "12345",
        ":",
        "+01:00",
        "Z",
        "-",
        ".",
        "<script>",
        "&amp;",
        "&#x0;",
        "/_history/",
        "urn:uuid:",
        "#",
        " ",
        "\n",
        "\"",
        "\\",
    ]);
    let date_like = prop::sample::select(vec!["", "2026-11-02T", "2026-11-02T10:00:00", "1970-05"]);
    (date_like, prop::collection::vec(piece, 1..8))
        .prop_map(|(start, p)| format!("{start}{}", p.concat()))
}

/// Elements the validator checks as dates (at any depth: periods too).
const DATED: &[&str] = &[
    "birthDate",
    "date",
    "timestamp",
    "issued",
    "recordedDate",
    "lastOccurrence",
    "authoredOn",
    "dateAsserted",
    "recorded",
    "expirationDate",
    "onsetDateTime",
    "abatementDateTime",
    "effectiveDateTime",
    "effectiveInstant",
    "performedDateTime",
    "occurrenceDateTime",
    "deceasedDateTime",
    "start",
    "end",
];

/// Only ASCII (and the ellipsis that closes a long warning list): no document content,
/// which carries every non-ASCII character injected, can be echoed.
fn echoes_nothing(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii() || c == '…')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Hostile strings in place of any string value or object key of real and synthetic
    /// bundles (and, sometimes, a lone surrogate escaped in the JSON text): never a panic,
    /// never a value echoed in the refusal or the warnings.
    #[test]
    fn hostile_unicode_in_any_field_never_panics_nor_is_echoed(
        file in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), hostile(), 0u8..4), 1..6),
        surrogate in prop::option::of(prop::sample::select(vec!["\\ud800", "\\udfff", "\\ud83d\\u0041"])),
    ) {
        let corpus = corpus();
        let mut value = corpus[file.index(corpus.len())].clone();
        let mut injected = Vec::new();
        // Strings put in place of a key: refusals may name an element (below), so the same
        // string put in as a value is not looked for.
        let mut renamed = Vec::new();
        for (at, text, target) in &edits {
            let (mut values, mut keys) = (Vec::new(), Vec::new());
            strings(&value, String::new(), &mut values, &mut keys);
            // Half the edits go to dates, which the validator parses most closely.
            let dated: Vec<String> = values
                .iter()
                .filter(|p| p.rsplit('/').next().is_some_and(|last| DATED.contains(&last)))
                .cloned()
                .collect();
            if *target >= 2 && !dated.is_empty() {
                values = dated;
            }
            if *target == 0 && !keys.is_empty() {
                let (parent, old) = &keys[at.index(keys.len())];
                if let Some(Value::Object(map)) = value.pointer_mut(parent)
                    && let Some(v) = map.remove(old)
                {
                    map.insert(text.clone(), v);
                    renamed.push(text.clone());
                }
            } else if !values.is_empty() {
                let pointer = &values[at.index(values.len())];
                if let Some(slot) = value.pointer_mut(pointer) {
                    *slot = Value::String(text.clone());
                    injected.push((text.clone(), pointer.clone()));
                }
            }
        }
        let mut json = serde_json::to_string(&value).unwrap();
        if let Some(escape) = surrogate {
            json = json.replacen("\"resourceType\":\"", &format!("\"resourceType\":\"{escape}"), 1);
        }
        match summary::extract(json.as_bytes()) {
            Ok(found) => {
                for warning in &found.warnings {
                    prop_assert!(echoes_nothing(warning), "warning echoes content: {warning:?}");
                }
            }
            Err(refused) => {
                let text = refused.to_string();
                prop_assert!(echoes_nothing(&text), "refusal echoes content: {text:?}");
                // Nor an ASCII value. Element names (keys) and type names are the schema's
                // words: refusals name them, reduced to ASCII letters and digits.
                let typed = |p: &str| p.ends_with("/resourceType") || p == "/type";
                for (injected, pointer) in &injected {
                    let words = injected.chars().filter(|c| c.is_alphanumeric()).count();
                    prop_assert!(
                        words < 3
                            || typed(pointer)
                            || renamed.iter().any(|key| key.contains(injected.as_str()))
                            || !text.contains(injected.as_str()),
                        "refusal echoes {injected:?}: {text:?}"
                    );
                }
            }
        }
    }
}

/// "No known allergies" beside allergies left out as another person's is never settled:
/// if that judgement was wrong, "none known" would hide them.
#[test]
fn none_known_beside_another_persons_allergy_is_conflicting() {
    let mut bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(case_path("family-members-as-extra-patients.json")).unwrap(),
    )
    .unwrap();
    // The patient's own allergies go; only the "no known allergy" statement stays.
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["id"] != "own-2");
    for entry in bundle["entry"].as_array_mut().unwrap() {
        let resource = &mut entry["resource"];
        if resource["id"] == "own-1" {
            resource["code"] = serde_json::json!({"coding": [{"system": "http://snomed.info/sct", "code": "716186003", "display": "No known allergy"}]});
        }
        if resource["resourceType"] == "Composition" {
            for section in resource["section"].as_array_mut().unwrap() {
                if section["code"]["coding"][0]["code"] == "48765-2" {
                    section["entry"] = serde_json::json!([{"reference": "urn:uuid:own-1"}, {"reference": "urn:uuid:mother-1"}]);
                }
            }
        }
    }
    let s = summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert!(s.allergies.items.is_empty() && s.allergies.unlisted_items.is_empty());
    // The mother's listed allergy and the child's unlisted one.
    assert_eq!(s.allergies.other_person_entries, 2);
    assert_eq!(
        s.allergies.status,
        SectionStatus::Conflicting,
        "{}",
        s.allergies.basis
    );
}

/// A "no known …" statement denies its own section only: "no current problems" or "no
/// known medications" filed among the allergies is a statement there, never « aucune
/// allergie connue ».
#[test]
fn a_no_known_statement_about_another_section_never_settles_the_allergies() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ips/no-known-allergies.json");
    let original: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let with = |coding: Value| {
        let mut bundle = original.clone();
        let mut changed = 0;
        for entry in bundle["entry"].as_array_mut().unwrap() {
            if entry["resource"]["resourceType"] == "AllergyIntolerance" {
                entry["resource"]["code"] = serde_json::json!({"coding": [coding.clone()]});
                changed += 1;
            }
        }
        assert_eq!(changed, 1);
        summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap()
    };
    let own = with(
        serde_json::json!({"system": "http://snomed.info/sct", "code": "716186003", "display": "No known allergy"}),
    );
    assert_eq!(own.allergies.status, SectionStatus::NoneKnown);
    for other in [
        serde_json::json!({"system": "http://snomed.info/sct", "code": "160245001", "display": "No current problems or disability"}),
        serde_json::json!({"system": "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips", "code": "no-known-medications", "display": "No known medications"}),
    ] {
        let s = with(other.clone());
        assert_eq!(s.allergies.status, SectionStatus::NotRecorded, "{other}");
        assert_eq!(s.allergies.statements.len(), 1, "{other}");
    }
}

/// A search set that says it continues (a `next` link) was read one page only: an entry on
/// a page not read may contradict a statement of absence, so no section says "none
/// known", and the summary says it may be partial.
#[test]
fn a_search_set_with_unread_pages_never_says_none_known() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ips/no-known-allergies.json");
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    bundle["type"] = "searchset".into();
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["resourceType"] != "Composition");
    let whole = summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert_eq!(whole.allergies.status, SectionStatus::NoneKnown);
    assert_eq!(whole.defects.unread_pages, 0);

    bundle["link"] = serde_json::json!([
        {"relation": "self", "url": "https://record.example/Patient/p1/$summary"},
        {"relation": "next", "url": "https://record.example/Patient/p1/$summary?page=2"}
    ]);
    let page = summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert_eq!(page.allergies.status, SectionStatus::NotRecorded);
    assert_eq!(page.allergies.statements, whole.allergies.statements);
    assert_eq!(page.defects.unread_pages, 1);
    assert!(page.defects.any());
    assert!(
        page.warnings.iter().any(|w| w.contains("further pages")),
        "{:?}",
        page.warnings
    );
}

/// The no-known-allergies bundle with its AllergyIntolerance's `code` set to `code`.
fn allergy_code(code: Value) -> CriticalSummary {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ips/no-known-allergies.json");
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for entry in bundle["entry"].as_array_mut().unwrap() {
        if entry["resource"]["resourceType"] == "AllergyIntolerance" {
            entry["resource"]["code"] = code.clone();
        }
    }
    summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap()
}

/// "No known allergy" coded beside a code that names a substance says two things: never
/// « aucune allergie connue ». The same statement coded twice (SNOMED CT and the IPS code,
/// or its value repeated without a system) still stands. Before, the first "no known" code
/// decided, and the amoxicillin code beside it was never read.
#[test]
fn a_no_known_allergy_code_beside_a_named_substance_never_reads_none_known() {
    let nka = serde_json::json!({"system": "http://snomed.info/sct", "code": "716186003", "display": "No known allergy"});
    let amoxicillin = serde_json::json!({"system": "http://www.whocc.no/atc", "code": "J01CA04", "display": "amoxicillin"});
    for coding in [
        vec![nka.clone(), amoxicillin.clone()],
        vec![amoxicillin.clone(), nka.clone()],
    ] {
        let s = allergy_code(serde_json::json!({ "coding": coding }));
        assert_ne!(s.allergies.status, SectionStatus::NoneKnown, "{coding:?}");
        assert_eq!(s.allergies.status, SectionStatus::Unreadable, "{coding:?}");
        assert_eq!(s.allergies.unreadable_entries, 1);
    }
    for coding in [
        vec![
            nka.clone(),
            serde_json::json!({"system": "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips", "code": "no-known-allergies"}),
        ],
        vec![nka.clone(), serde_json::json!({"code": "716186003"})],
        // A hospital's own code for the same statement names nothing.
        vec![
            nka.clone(),
            serde_json::json!({"system": "https://hopital.example/codes", "code": "NKA", "display": "Pas d'allergie connue"}),
        ],
    ] {
        let s = allergy_code(serde_json::json!({ "coding": coding }));
        assert_eq!(s.allergies.status, SectionStatus::NoneKnown, "{coding:?}");
    }
}

/// Two allergy sections, one empty because none is known (`nilknown`), the other because
/// the information is unavailable: the two say two things. Before, the first section's
/// reason was kept and the second's dropped: « aucune allergie connue ».
#[test]
fn none_known_in_one_section_and_unavailable_in_another_is_conflicting() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ips/no-known-allergies.json");
    let original: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let with = |reasons: [&str; 2]| {
        let mut bundle = original.clone();
        for entry in bundle["entry"].as_array_mut().unwrap() {
            if entry["resource"]["resourceType"] == "Composition" {
                let sections = entry["resource"]["section"].as_array_mut().unwrap();
                let allergies = sections
                    .iter()
                    .position(|s| s["code"]["coding"][0]["code"] == "48765-2")
                    .unwrap();
                let mut first = sections[allergies].clone();
                first.as_object_mut().unwrap().remove("entry");
                let mut second = first.clone();
                first["emptyReason"] = serde_json::json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": reasons[0]}]});
                second["emptyReason"] = serde_json::json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": reasons[1]}]});
                sections[allergies] = first;
                sections.insert(allergies + 1, second);
            }
        }
        summary::extract(&serde_json::to_vec(&bundle).unwrap()).unwrap()
    };
    for reasons in [["nilknown", "unavailable"], ["unavailable", "nilknown"]] {
        let s = with(reasons);
        assert_eq!(
            s.allergies.status,
            SectionStatus::Conflicting,
            "{reasons:?}"
        );
    }
    assert_eq!(
        with(["nilknown", "nilknown"]).allergies.status,
        SectionStatus::NoneKnown
    );
}

/// A bare Patient named by the Composition, and two Patients that each agree with it but
/// not with each other (two INS, two birth dates): the subject cannot be determined, and
/// the document is refused. Before, both joined the subject: the document passed the
/// patient check for either INS, and the second person's allergy was shown as the
/// patient's.
#[test]
fn two_people_never_join_a_bare_subject_as_one() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ips/no-known-allergies.json");
    let original: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let with = |second_ins: &str, second_birth: &str| {
        let mut bundle = original.clone();
        let entries = bundle["entry"].as_array_mut().unwrap();
        for entry in entries.iter_mut() {
            if entry["resource"]["resourceType"] == "Patient" {
                entry["resource"] = serde_json::json!({"resourceType": "Patient", "id": "patient"});
            }
        }
        let person = |id: &str, ins: &str, birth: &str| {
            serde_json::json!({"fullUrl": format!("urn:uuid:{id}"), "resource": {
                "resourceType": "Patient", "id": id,
                "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": ins}],
                "birthDate": birth
            }})
        };
        entries.push(person("pa", "180017500000134", "1950-01-01"));
        entries.push(person("pb", second_ins, second_birth));
        summary::extract(&serde_json::to_vec(&bundle).unwrap())
    };
    let refused = with("280017500000181", "1990-01-01").unwrap_err();
    assert!(
        matches!(refused, SummaryError::ConflictingPatients(_)),
        "{refused}"
    );
    // The same person written twice joins as before.
    let s = with("180017500000134", "1950").unwrap();
    assert_eq!(
        s.patient_in_document.unwrap().ins,
        ["1.2.250.1.213.1.4.10|180017500000134"]
    );
    // Only INS that share nothing refuse it: the same INS with another birth date (a
    // typo), or a Patient without an INS, is judged against the subject alone, in either
    // order, as before.
    assert!(with("180017500000134", "1960-01-01").is_ok());
    let mut bundle = original.clone();
    let entries = bundle["entry"].as_array_mut().unwrap();
    for entry in entries.iter_mut() {
        if entry["resource"]["resourceType"] == "Patient" {
            entry["resource"] = serde_json::json!({"resourceType": "Patient", "id": "patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "180017500000134"}]});
        }
    }
    entries.push(serde_json::json!({"fullUrl": "urn:uuid:p2", "resource": {"resourceType": "Patient", "id": "p2", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "180017500000134"}], "birthDate": "1960-01-01"}}));
    entries.push(serde_json::json!({"fullUrl": "urn:uuid:p3", "resource": {"resourceType": "Patient", "id": "p3", "birthDate": "1950-03-12"}}));
    assert!(summary::extract(&serde_json::to_vec(&bundle).unwrap()).is_ok());
    entries_reversed(&mut bundle);
    assert!(summary::extract(&serde_json::to_vec(&bundle).unwrap()).is_ok());
}

/// The bundle's entries in the reverse order.
fn entries_reversed(bundle: &mut Value) {
    bundle["entry"].as_array_mut().unwrap().reverse();
}
