//! How the record service says "no": HTTP status + FHIR OperationOutcome conventions, one
//! table for the client and the development upstream.
//!
//! | outcome | HTTP | `issue.code` | `issue.details.coding` (system [`SYSTEM`]) |
//! |---|---|---|---|
//! | patient opposed this access mode | 403 | `forbidden` | `patient-opposed` |
//! | professional blocked by the patient | 403 | `forbidden` | `professional-blocked` |
//! | no record / no such patient | 404 | `not-found` | `no-record` |
//! | record closed | 410 | `deleted` | `record-closed` |
//! | assertion missing, forged, expired or incomplete | 401 | `security` | `assertion-invalid` |
//! | assertion names another patient | 403 | `forbidden` | `assertion-patient-mismatch` |
//! | service unavailable | 502, 503, 504 (also 408, 429) | `transient` | — |
//!
//! A 403 without a known code is read as a refusal of the assertion, never as an
//! opposition (an opposition must be stated). Likewise a 404 or a 410 without its code is
//! not "no record" or "record closed", which tell the physician there is nothing to see
//! and delete the patient's cached copy: a wrong base path or a proxy's page says 404 too.
//! It is read as the service not answering. Successful answers are `200` with
//! `Content-Type: application/fhir+json` (`application/json` tolerated).

use serde_json::{Value, json};

use super::{AccessMode, UpstreamError};

/// Code system of the `details` codes above (this project's convention until the national
/// service's own codes are known).
pub const SYSTEM: &str = "urn:samu-gateway:access-outcome";

/// `details` codes.
pub mod code {
    /// The patient opposed this access mode.
    pub const PATIENT_OPPOSED: &str = "patient-opposed";
    /// The patient blocked this professional.
    pub const PROFESSIONAL_BLOCKED: &str = "professional-blocked";
    /// No record.
    pub const NO_RECORD: &str = "no-record";
    /// Record closed.
    pub const RECORD_CLOSED: &str = "record-closed";
    /// The access assertion is refused.
    pub const ASSERTION_INVALID: &str = "assertion-invalid";
    /// The assertion's `resource_id` is not this patient.
    pub const ASSERTION_PATIENT_MISMATCH: &str = "assertion-patient-mismatch";
}

/// An OperationOutcome with one error issue.
pub fn operation_outcome(issue_code: &str, detail: Option<&str>, diagnostics: &str) -> Value {
    let mut issue = json!({
        "severity": "error",
        "code": issue_code,
        "diagnostics": diagnostics,
    });
    if let Some(detail) = detail {
        issue["details"] = json!({"coding": [{"system": SYSTEM, "code": detail}]});
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

/// The detail code of an OperationOutcome body, if it has one of ours.
fn detail(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("issue")?
        .as_array()?
        .iter()
        .filter_map(|i| i.get("details")?.get("coding")?.as_array())
        .flatten()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(SYSTEM))
        .and_then(|c| c.get("code")?.as_str())
        .map(str::to_owned)
}

/// The typed outcome of a non-200 answer to a call made for `mode`.
pub fn classify(status: u16, body: &[u8], mode: AccessMode) -> UpstreamError {
    let detail = detail(body);
    match (status, detail.as_deref()) {
        (403, Some(code::PATIENT_OPPOSED)) => UpstreamError::PatientOpposed(mode),
        (403, Some(code::PROFESSIONAL_BLOCKED)) => UpstreamError::ProfessionalBlocked,
        (404, Some(code::NO_RECORD)) => UpstreamError::NoRecord,
        (410, Some(code::RECORD_CLOSED)) => UpstreamError::RecordClosed,
        // Neither the fact "no record" (it deletes the copy) nor an outage (a copy would
        // stand in for what may be a refusal): the request refused, for centre IT.
        (404 | 410, _) => UpstreamError::AssertionRefused(format!(
            "HTTP {status} without its outcome code (a wrong address, or a proxy's page?)"
        )),
        (401 | 403, Some(other)) => UpstreamError::AssertionRefused(safe(other)),
        (401 | 403, None) => UpstreamError::AssertionRefused(format!("HTTP {status}")),
        (408 | 429 | 500..=599, _) => UpstreamError::Unavailable(format!("HTTP {status}")),
        // Any other 4xx (400, 409, 422, 451…) refuses this request: no copy in its place.
        (400..=499, _) => {
            UpstreamError::AssertionRefused(format!("unexpected HTTP status {status}"))
        }
        (other, _) => UpstreamError::Malformed(format!("unexpected HTTP status {other}")),
    }
}

/// A code fit for logs: short, token characters only.
fn safe(code: &str) -> String {
    crate::encoding::peer_token(code, 48, "-", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(detail: &str) -> Vec<u8> {
        serde_json::to_vec(&operation_outcome("forbidden", Some(detail), "x")).unwrap()
    }

    #[test]
    fn each_convention_maps_to_its_outcome() {
        let mode = AccessMode::BrisDeGlace;
        assert_eq!(
            classify(403, &body(code::PATIENT_OPPOSED), mode),
            UpstreamError::PatientOpposed(mode)
        );
        assert_eq!(
            classify(403, &body(code::PROFESSIONAL_BLOCKED), mode),
            UpstreamError::ProfessionalBlocked
        );
        assert_eq!(
            classify(404, &body(code::NO_RECORD), mode),
            UpstreamError::NoRecord
        );
        // A bare 404 or 410 (a wrong path, a proxy, an unknown operation) says nothing of
        // the record; nor is it an outage a cached copy could stand in for. Nor any other
        // 4xx (a 451 may well be a refusal of this access).
        for status in [404, 410, 400, 409, 422, 451] {
            assert!(matches!(
                classify(status, b"<html>Not Found</html>", mode),
                UpstreamError::AssertionRefused(why) if why.contains(&status.to_string())
            ));
            assert!(matches!(
                classify(status, &body("unknown-operation"), mode),
                UpstreamError::AssertionRefused(_)
            ));
        }
        for status in [408, 429] {
            assert!(matches!(
                classify(status, b"", mode),
                UpstreamError::Unavailable(_)
            ));
        }
        assert_eq!(
            classify(410, &body(code::RECORD_CLOSED), mode),
            UpstreamError::RecordClosed
        );
        assert_eq!(
            classify(401, &body(code::ASSERTION_INVALID), mode),
            UpstreamError::AssertionRefused("assertion-invalid".into())
        );
        // A bare 403 is never taken for an opposition.
        assert!(matches!(
            classify(403, b"<html>", mode),
            UpstreamError::AssertionRefused(_)
        ));
        assert!(matches!(
            classify(503, b"", mode),
            UpstreamError::Unavailable(_)
        ));
        assert!(matches!(
            classify(302, b"", mode),
            UpstreamError::Malformed(_)
        ));
    }
}
