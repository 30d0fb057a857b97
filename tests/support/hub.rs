//! The regulation software's side of case intake, for the tests and benches that play it:
//! a one-patient RS-EDA message.

use serde_json::{Value, json};

/// Whether the Hub's published `RS-EDA.schema.json` sits beside the repository (where
/// `tests/validators/rs_eda.py` reads it); when it does not, says so in the CI summary,
/// naming what `check` (e.g. "cases: the project's RS-EDA message") did not get.
pub(crate) fn schema_present(check: &str) -> bool {
    let schema = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/hub/json-schema/RS-EDA.schema.json");
    if !schema.is_file() {
        super::skipped(&format!(
            "{check} was not checked against the Hub's schema: {} is absent",
            schema.display()
        ));
    }
    schema.is_file()
}

/// A bare `createCaseHealth` for case `case_id` (a `fr.health.samu690.…` id): one patient,
/// `birth_name` Camille, born 1980-01-17, female (the dev upstream's sample patients).
pub(crate) fn one_patient_case(case_id: &str, birth_name: &str) -> Value {
    let sender_case = case_id.rsplit('.').next().unwrap_or(case_id);
    json!({"createCaseHealth": {
        "caseId": case_id,
        "creation": "2026-12-04T09:12:30+01:00",
        "qualification": {
            "healthMotive": {"code": "M04.01", "label": "Malaise avec perte de connaissance"},
            "details": {"priority": "P0"}
        },
        "location": {},
        "owner": "fr.health.samu690",
        "patient": [{
            "patientId": format!("fr.health.samu690.patient.{sender_case}.1"),
            "identity": {
                "strictFeatures": {"birthName": birth_name, "birthDate": "1980-01-17", "sex": "F"},
                "nonStrictFeatures": {"complete": "Camille", "firstName": "Camille"}
            },
            "detail": {"treatment": "Traitement inconnu de l'appelant"}
        }]
    }})
}

/// Corrects `case` as case.mjs's RESEND expects: its first patient's birth name becomes
/// CORRIGE and birth date `1958-00-00` (day and month unknown), and a second patient,
/// INVALIDE, comes with a birth date the Hub's pattern allows but that names no day
/// (`1958-02-30`).
pub(crate) fn resent_with_unusable_birth_dates(case: &mut Value) {
    let patients = case["createCaseHealth"]["patient"]
        .as_array_mut()
        .expect("a case with patients");
    let first = &mut patients[0];
    let strict = &mut first["identity"]["strictFeatures"];
    strict["birthName"] = json!("CORRIGE");
    strict["birthDate"] = json!("1958-00-00");
    let mut second = first.clone();
    let id = format!("{}9", second["patientId"].as_str().unwrap_or_default());
    second["patientId"] = json!(id);
    second["identity"]["strictFeatures"]["birthName"] = json!("INVALIDE");
    second["identity"]["strictFeatures"]["birthDate"] = json!("1958-02-30");
    patients.push(second);
}

/// `case` sent again revised as case.mjs's REVISE expects: the same patients, its first
/// one's treatment as said now "Traitement révisé".
pub(crate) fn revised(case: &Value) -> Value {
    let mut revised = case.clone();
    revised["createCaseHealth"]["patient"][0]["detail"] = json!({"treatment": "Traitement révisé"});
    revised
}
