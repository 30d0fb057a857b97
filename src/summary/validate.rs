//! Structural checks of FHIR R4 resources, the subset a critical summary depends on: legal
//! ids, date formats, top-level elements of the resource types the summary reads, the
//! `_element` companions of primitives, and the elements those types require.
//!
//! Deliberately not a full validator: nested datatypes and terminology are not checked,
//! and resource types the summary does not read are checked for id, dates and companions
//! only. Findings never quote values (they may be health data), only element paths.

use serde_json::{Map, Value};

/// One structural defect, at an element path such as `Patient.birthDate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `Type.element`.
    pub path: String,
    /// What is wrong, in English, without quoting the value.
    pub defect: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.defect)
    }
}

/// Elements every resource may carry.
const RESOURCE: &[&str] = &["resourceType", "id", "meta", "implicitRules", "language"];
/// Elements every domain resource (all but Bundle here) may carry.
const DOMAIN_RESOURCE: &[&str] = &["text", "contained", "extension", "modifierExtension"];

/// FHIR R4 top-level elements of the types the summary reads. A `[x]` suffix stands for
/// the choice types listed in [`CHOICES`].
#[rustfmt::skip]
fn elements(resource_type: &str) -> Option<&'static [&'static str]> {
    Some(match resource_type {
        "Bundle" => &[
            "identifier", "type", "timestamp", "total", "link", "entry", "signature",
        ],
        "Composition" => &[
            "identifier", "status", "type", "category", "subject", "encounter", "date",
            "author", "title", "confidentiality", "attester", "custodian", "relatesTo",
            "event", "section",
        ],
        "Patient" => &[
            "identifier", "active", "name", "telecom", "gender", "birthDate", "deceased[x]",
            "address", "maritalStatus", "multipleBirth[x]", "photo", "contact",
            "communication", "generalPractitioner", "managingOrganization", "link",
        ],
        "AllergyIntolerance" => &[
            "identifier", "clinicalStatus", "verificationStatus", "type", "category",
            "criticality", "code", "patient", "encounter", "onset[x]", "recordedDate",
            "recorder", "asserter", "lastOccurrence", "note", "reaction",
        ],
        "Condition" => &[
            "identifier", "clinicalStatus", "verificationStatus", "category", "severity",
            "code", "bodySite", "subject", "encounter", "onset[x]", "abatement[x]",
            "recordedDate", "recorder", "asserter", "stage", "evidence", "note",
        ],
        "MedicationStatement" => &[
            "identifier", "basedOn", "partOf", "status", "statusReason", "category",
            "medication[x]", "subject", "context", "effective[x]", "dateAsserted",
            "informationSource", "derivedFrom", "reasonCode", "reasonReference", "note",
            "dosage",
        ],
        "MedicationRequest" => &[
            "identifier", "status", "statusReason", "intent", "category", "priority",
            "doNotPerform", "reported[x]", "medication[x]", "subject", "encounter",
            "supportingInformation", "authoredOn", "requester", "performer",
            "performerType", "recorder", "reasonCode", "reasonReference",
            "instantiatesCanonical", "instantiatesUri", "basedOn", "groupIdentifier",
            "courseOfTherapyType", "insurance", "note", "dosageInstruction",
            "dispenseRequest", "substitution", "priorPrescription", "detectedIssue",
            "eventHistory",
        ],
        "Medication" => &[
            "identifier", "code", "status", "manufacturer", "form", "amount", "ingredient",
            "batch",
        ],
        "Procedure" => &[
            "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "partOf",
            "status", "statusReason", "category", "code", "subject", "encounter",
            "performed[x]", "recorder", "asserter", "performer", "location", "reasonCode",
            "reasonReference", "bodySite", "outcome", "report", "complication",
            "complicationDetail", "followUp", "note", "focalDevice", "usedReference",
            "usedCode",
        ],
        "Immunization" => &[
            "identifier", "status", "statusReason", "vaccineCode", "patient", "encounter",
            "occurrence[x]", "recorded", "primarySource", "reportOrigin", "location",
            "manufacturer", "lotNumber", "expirationDate", "site", "route", "doseQuantity",
            "performer", "note", "reasonCode", "reasonReference", "isSubpotent",
            "subpotentReason", "education", "programEligibility", "fundingSource",
            "reaction", "protocolApplied",
        ],
        "Observation" => &[
            "identifier", "basedOn", "partOf", "status", "category", "code", "subject",
            "focus", "encounter", "effective[x]", "issued", "performer", "value[x]",
            "dataAbsentReason", "interpretation", "note", "bodySite", "method", "specimen",
            "device", "referenceRange", "hasMember", "derivedFrom", "component",
        ],
        "Location" => &[
            "identifier", "status", "operationalStatus", "name", "alias", "description",
            "mode", "type", "telecom", "address", "physicalType", "position",
            "managingOrganization", "partOf", "hoursOfOperation", "availabilityExceptions",
            "endpoint",
        ],
        "Organization" => &[
            "identifier", "active", "type", "name", "alias", "telecom", "address", "partOf",
            "contact", "endpoint",
        ],
        "Practitioner" => &[
            "identifier", "active", "name", "telecom", "address", "gender", "birthDate",
            "photo", "qualification", "communication",
        ],
        "PractitionerRole" => &[
            "identifier", "active", "period", "practitioner", "organization", "code",
            "specialty", "location", "healthcareService", "telecom", "availableTime",
            "notAvailable", "availabilityExceptions", "endpoint",
        ],
        _ => return None,
    })
}

/// The type suffixes a choice element `name[x]` may take in the types above.
#[rustfmt::skip]
const CHOICES: &[(&str, &[&str])] = &[
    ("deceased", &["Boolean", "DateTime"]),
    ("multipleBirth", &["Boolean", "Integer"]),
    ("onset", &["DateTime", "Age", "Period", "Range", "String"]),
    (
        "abatement",
        &["DateTime", "Age", "Period", "Range", "String"],
    ),
    ("medication", &["CodeableConcept", "Reference"]),
    ("effective", &["DateTime", "Period", "Timing", "Instant"]),
    ("reported", &["Boolean", "Reference"]),
    (
        "performed",
        &["DateTime", "Period", "String", "Age", "Range"],
    ),
    ("occurrence", &["DateTime", "String"]),
    (
        "value",
        &[
            "Quantity", "CodeableConcept", "String", "Boolean", "Integer", "Range", "Ratio",
            "SampledData", "Time", "DateTime", "Period",
        ],
    ),
];

/// Elements a type requires (R4 cardinality 1..), with `[x]` for any choice.
fn required(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Bundle" => &["type"],
        "Composition" => &["status", "type", "date", "author", "title"],
        "AllergyIntolerance" => &["patient"],
        "Condition" => &["subject"],
        "MedicationStatement" => &["status", "medication[x]", "subject"],
        "MedicationRequest" => &["status", "intent", "medication[x]", "subject"],
        "Procedure" => &["status", "subject"],
        "Immunization" => &["status", "vaccineCode", "patient", "occurrence[x]"],
        "Observation" => &["status", "code"],
        _ => &[],
    }
}

/// Top-level elements holding a date, dateTime or instant, whatever the type.
const DATE_ELEMENTS: &[(&str, DateKind)] = &[
    ("birthDate", DateKind::Date),
    ("date", DateKind::DateTime),
    ("timestamp", DateKind::Instant),
    ("issued", DateKind::Instant),
    ("recordedDate", DateKind::DateTime),
    ("lastOccurrence", DateKind::DateTime),
    ("authoredOn", DateKind::DateTime),
    ("dateAsserted", DateKind::DateTime),
    ("recorded", DateKind::DateTime),
    ("expirationDate", DateKind::Date),
    ("onsetDateTime", DateKind::DateTime),
    ("abatementDateTime", DateKind::DateTime),
    ("effectiveDateTime", DateKind::DateTime),
    ("effectiveInstant", DateKind::Instant),
    ("performedDateTime", DateKind::DateTime),
    ("occurrenceDateTime", DateKind::DateTime),
    ("deceasedDateTime", DateKind::DateTime),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateKind {
    Date,
    DateTime,
    Instant,
}

/// Checks one resource; an empty list means no structural defect was found.
pub fn resource(value: &Map<String, Value>) -> Vec<Finding> {
    let Some(resource_type) = value.get("resourceType").and_then(Value::as_str) else {
        return vec![Finding {
            path: "(root)".into(),
            defect: "not a FHIR resource: no resourceType".into(),
        }];
    };
    let name = safe_name(resource_type);
    let at = |element: &str| format!("{name}.{}", safe_name(element));
    let mut findings = Vec::new();
    if let Some(id) = value.get("id")
        && !id.as_str().is_some_and(legal_id)
    {
        findings.push(Finding {
            path: at("id"),
            defect: "not a legal FHIR id (1 to 64 of A-Z a-z 0-9 - .)".into(),
        });
    }
    for (key, kind) in DATE_ELEMENTS {
        if let Some(date) = value.get(*key)
            && !date.as_str().is_some_and(|d| valid_date(d, *kind))
        {
            let what = match kind {
                DateKind::Date => "date (YYYY, YYYY-MM or YYYY-MM-DD)",
                DateKind::DateTime => "dateTime",
                DateKind::Instant => "instant",
            };
            findings.push(Finding {
                path: at(key),
                defect: format!("not a valid FHIR {what}"),
            });
        }
    }
    findings.extend(companions(value, &at));
    if let Some(allowed) = elements(resource_type) {
        findings.extend(unknown_elements(value, resource_type, allowed));
        for element in required(resource_type) {
            if !present(value, element) {
                findings.push(Finding {
                    path: at(element),
                    defect: "required (minimum 1) but missing".into(),
                });
            }
        }
    }
    findings
}

/// Elements holding an Attachment (or a list of them), at any depth, in the types a
/// summary bundle carries.
const ATTACHMENT_ELEMENTS: &[&str] = &[
    "attachment",
    "photo",
    "presentedForm",
    "valueAttachment",
    "contentAttachment",
    "sourceAttachment",
];

/// Attachments (and Binary resources) whose `data` is not base64: one finding each. The
/// content itself is never read further.
pub fn attachments(value: &Map<String, Value>) -> Vec<Finding> {
    let name = value
        .get("resourceType")
        .and_then(Value::as_str)
        .map_or_else(|| "?".to_owned(), safe_name);
    let mut findings = Vec::new();
    let mut bad = |path: String| {
        findings.push(Finding {
            path,
            defect: "attachment data is not valid base64".into(),
        });
    };
    if name == "Binary" && value.get("data").is_some_and(|d| !is_base64(d)) {
        bad(format!("{name}.data"));
    }
    // Walk without recursion (nesting is bounded by the parser, but a stack is cheaper).
    let mut stack: Vec<(&str, &Value)> = value.iter().map(|(k, v)| (k.as_str(), v)).collect();
    while let Some((key, node)) = stack.pop() {
        match node {
            Value::Array(items) => stack.extend(items.iter().map(|item| (key, item))),
            Value::Object(object) => {
                if ATTACHMENT_ELEMENTS.contains(&key)
                    && object.get("data").is_some_and(|d| !is_base64(d))
                {
                    bad(format!("{name}.{}", safe_name(key)));
                }
                stack.extend(object.iter().map(|(k, v)| (k.as_str(), v)));
            }
            _ => {}
        }
    }
    findings
}

/// FHIR base64Binary: base64 with padding, white space allowed between groups.
fn is_base64(value: &Value) -> bool {
    use base64::Engine as _;
    let Some(text) = value.as_str() else {
        return false;
    };
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .is_ok()
}

fn unknown_elements(
    value: &Map<String, Value>,
    resource_type: &str,
    allowed: &[&str],
) -> Vec<Finding> {
    let common: &[&str] = if resource_type == "Bundle" {
        &[]
    } else {
        DOMAIN_RESOURCE
    };
    value
        .keys()
        .filter(|key| {
            let base = key.strip_prefix('_').unwrap_or(key);
            !(RESOURCE.contains(&base)
                || common.contains(&base)
                || allowed.contains(&base)
                || is_choice(base, allowed))
        })
        .map(|key| Finding {
            path: safe_name(resource_type),
            defect: format!("unknown element '{}'", safe_name(key)),
        })
        .collect()
}

/// `valueQuantity` against an allowed `value[x]`.
fn is_choice(key: &str, allowed: &[&str]) -> bool {
    CHOICES.iter().any(|(stem, types)| {
        key.strip_prefix(stem)
            .is_some_and(|suffix| types.contains(&suffix))
            && allowed.contains(&format!("{stem}[x]").as_str())
    })
}

fn present(value: &Map<String, Value>, element: &str) -> bool {
    match element.strip_suffix("[x]") {
        Some(stem) => value.keys().any(|k| {
            k.strip_prefix(stem)
                .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
        }),
        None => value.get(element).is_some_and(|v| !v.is_null()),
    }
}

/// `_element` companions of primitives hold only `id` and `extension`.
fn companions(value: &Map<String, Value>, at: &dyn Fn(&str) -> String) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, companion) in value {
        let Some(element) = key.strip_prefix('_') else {
            continue;
        };
        let objects: Vec<&Value> = match companion {
            Value::Array(items) => items.iter().filter(|v| !v.is_null()).collect(),
            other => vec![other],
        };
        for object in objects {
            let extra = match object.as_object() {
                Some(map) => map
                    .keys()
                    .find(|k| *k != "id" && *k != "extension")
                    .map(|k| format!("'{}'", safe_name(k))),
                None => Some("a value that is not an object".to_owned()),
            };
            if let Some(extra) = extra {
                findings.push(Finding {
                    path: at(element),
                    defect: format!(
                        "the property '{}' is invalid: the '_' companion of a primitive holds only id and extension, found {extra}",
                        safe_name(key)
                    ),
                });
            }
        }
    }
    findings
}

/// An element or type name fit to print: short, and only name characters.
fn safe_name(name: &str) -> String {
    let cleaned = crate::encoding::peer_token(name, 64, "_[]", Some('?'));
    if cleaned.is_empty() {
        "?".into()
    } else {
        cleaned
    }
}

/// FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn legal_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `text` is a FHIR dateTime (or date, or instant: both are dateTimes too).
pub fn is_date_time(text: &str) -> bool {
    valid_date(text, DateKind::DateTime)
}

/// FHIR date / dateTime / instant formats (the R4 regular expressions, spelled out).
fn valid_date(text: &str, kind: DateKind) -> bool {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let in_range =
        |s: &str, lo: u32, hi: u32| s.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v));
    let date_ok = match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && in_range(m, 1, 12),
        [y, m, d] => {
            digits(y, 4) && digits(m, 2) && digits(d, 2) && in_range(m, 1, 12) && in_range(d, 1, 31)
        }
        _ => false,
    };
    match (kind, time) {
        (DateKind::Date, None) => date_ok,
        (DateKind::Date, Some(_)) => false,
        (DateKind::DateTime, None) => date_ok,
        (DateKind::Instant, None) => false,
        (_, Some(time)) => date_ok && parts.len() == 3 && valid_time_with_zone(time),
    }
}

fn valid_time_with_zone(text: &str) -> bool {
    let (time, zone_ok) = if let Some(t) = text.strip_suffix('Z') {
        (t, true)
    } else {
        // Split on bytes: the text may hold anything, and a split inside a multi-byte
        // character would panic. A zone that checks out is ASCII, so the split is then
        // on a character boundary.
        let Some(at) = text.len().checked_sub(6).filter(|at| *at > 0) else {
            return false;
        };
        let z = &text.as_bytes()[at..];
        let ok = (z[0] == b'+' || z[0] == b'-')
            && z[1..3].iter().all(u8::is_ascii_digit)
            && z[3] == b':'
            && z[4..6].iter().all(u8::is_ascii_digit);
        match text.get(..at) {
            Some(t) if ok => (t, true),
            _ => return false,
        }
    };
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    let two = |s: &str, hi: u32| s.len() == 2 && s.parse::<u32>().is_ok_and(|v| v <= hi);
    zone_ok
        && matches!(fields.as_slice(), [h, m, s] if two(h, 23) && two(m, 59) && two(s, 60))
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value) -> Vec<String> {
        resource(value.as_object().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn dates_follow_the_fhir_formats() {
        for ok in [
            "2015",
            "2015-03",
            "2015-03-01",
            "2017-12-11T14:30:00+01:00",
            "2022-01-08T20:42:11.0607701+00:00",
            "2024-02-08T10:31:58Z",
        ] {
            assert!(valid_date(ok, DateKind::DateTime), "{ok}");
        }
        for bad in [
            "not a date",
            "2015-13",
            "2015-03-01T14:30",
            "15-03-01",
            "2015-03-01T25:00:00Z",
            "",
        ] {
            assert!(!valid_date(bad, DateKind::DateTime), "{bad}");
        }
        assert!(!valid_date("2015-03-01T10:00:00Z", DateKind::Date));
        assert!(!valid_date("2015-03-01", DateKind::Instant));
    }

    #[test]
    fn dates_with_multibyte_characters_are_invalid_not_a_panic() {
        for bad in [
            "2026-11-02TAé12345",
            "2026-11-02Té",
            "2026-11-02T10:00:00+0é:00",
            "2026-11-02T\u{0301}\u{0301}\u{0301}",
            "2026-11-02T10:00:00€",
        ] {
            assert!(!valid_date(bad, DateKind::DateTime), "{bad}");
        }
        let findings = check(json!({"resourceType": "AllergyIntolerance", "patient": {},
            "recordedDate": "2026-11-02TAé12345"}));
        assert_eq!(
            findings,
            ["AllergyIntolerance.recordedDate: not a valid FHIR dateTime"]
        );
    }

    #[test]
    fn attachment_data_must_be_base64() {
        let good = json!({"resourceType": "DocumentReference", "content": [
            {"attachment": {"contentType": "text/plain", "data": "SGVs bG8="}}]});
        assert!(attachments(good.as_object().unwrap()).is_empty());
        let bad = json!({"resourceType": "DocumentReference", "content": [
            {"attachment": {"data": "not base64!"}}, {"attachment": {"data": 7}}],
            "photo": {"data": "QQ"}});
        let found: Vec<String> = attachments(bad.as_object().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .all(|f| f.ends_with("attachment data is not valid base64"))
        );
        assert!(!found.iter().any(|f| f.contains("not base64!")));
        let binary = json!({"resourceType": "Binary", "contentType": "x", "data": "%%"});
        assert_eq!(
            attachments(binary.as_object().unwrap())[0].to_string(),
            "Binary.data: attachment data is not valid base64"
        );
        // SampledData.data is not base64 and is not checked as such.
        let sampled = json!({"resourceType": "Observation", "valueSampledData": {"data": "1 2 E"}});
        assert!(attachments(sampled.as_object().unwrap()).is_empty());
    }

    #[test]
    fn defects_are_named_without_quoting_values() {
        let findings = check(json!({
            "resourceType": "Patient", "id": "/foobar==", "birthDate": "31/12/1980",
            "unknownElement": "secret", "_gender": {"value": 1}
        }));
        assert!(
            findings.contains(
                &"Patient.id: not a legal FHIR id (1 to 64 of A-Z a-z 0-9 - .)".to_owned()
            ),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with("Patient.birthDate: not a valid FHIR date"))
        );
        assert!(
            findings.contains(&"Patient: unknown element 'unknownElement'".to_owned()),
            "{findings:?}"
        );
        assert!(findings.iter().any(|f| f.contains("'_gender' is invalid")));
        assert!(
            !findings
                .iter()
                .any(|f| f.contains("foobar") || f.contains("1980") || f.contains("secret"))
        );
    }

    #[test]
    fn choices_and_required_elements() {
        assert!(check(json!({"resourceType": "Observation", "status": "final", "code": {}, "valueQuantity": {}})).is_empty());
        let findings =
            check(json!({"resourceType": "Observation", "status": "final", "valueFoo": 1}));
        assert!(
            findings.contains(&"Observation.code: required (minimum 1) but missing".to_owned()),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("unknown element 'valueFoo'"))
        );
        assert!(check(json!({"resourceType": "Consent", "anything": 1})).is_empty());
    }
}
