//! The SAMU Hub's "create case" message for health (RS-EDA, `createCaseHealth`), as the
//! regulation software sends it: bare, or inside its EDXL-DE distribution envelope.
//!
//! Only what the gateway uses is modelled (docs/case.md). Objects the Hub adds fields to as
//! its model evolves are read tolerantly (unknown fields ignored); what the published
//! schema requires of the parts we read is required here too, and every value we keep is
//! checked against the schema's pattern or list. Error texts name the field, never its
//! value: a message carries patient identities.

use serde::Deserialize;

use super::CaseError;

/// Largest message accepted (the Hub's examples are 3-6 KB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most patients in one case (a multi-victim case still fits).
const MAX_PATIENTS: usize = 50;
/// Longest free text kept (history, treatments, a note).
const MAX_TEXT: usize = 4000;
/// Longest short value kept (ids, names, labels).
const MAX_SHORT: usize = 200;

/// The envelope, as far as the gateway reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(rename = "distributionID")]
    distribution_id: String,
    #[serde(rename = "senderID")]
    sender_id: String,
    distribution_status: String,
    distribution_kind: String,
    /// When the envelope was sent; the message's own `sentAt` comes first.
    date_time_sent: Option<String>,
    /// Past it, the sender itself says the message is out of date.
    date_time_expires: Option<String>,
    content: Vec<Content>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    json_content: JsonContent,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonContent {
    embedded_json_content: Embedded,
}

#[derive(Deserialize)]
struct Embedded {
    message: Bare,
}

/// A message without its envelope (also the envelope's `message`). Of its RC-DE header,
/// `kind` and `status` are read when present: they take the envelope's values, and a
/// message sent bare says with them whether it is a drill.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bare {
    kind: Option<String>,
    status: Option<String>,
    /// When the regulation software sent it: orders two sendings of one case.
    sent_at: Option<String>,
    create_case_health: Option<WireCase>,
}

/// Whether a message of this kind and status is a drill; refused unless it is a report
/// of a new case, real or exercise (`enveloped`: the values are the envelope's, whose
/// field names the refusal uses).
fn exercise_of(kind: &str, status: &str, enveloped: bool) -> Result<bool, CaseError> {
    if kind != "Report" {
        return Err(CaseError::Envelope(if enveloped {
            "distributionKind must be Report for a new case"
        } else {
            "kind must be Report for a new case"
        }));
    }
    match status {
        "Actual" => Ok(false),
        "Exercise" => Ok(true),
        _ => Err(CaseError::Envelope(if enveloped {
            "distributionStatus must be Actual or Exercise"
        } else {
            "status must be Actual or Exercise"
        })),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCase {
    case_id: String,
    creation: String,
    qualification: Qualification,
    // Required by the schema; its content is not used here.
    #[allow(dead_code)]
    location: serde::de::IgnoredAny,
    owner: String,
    #[serde(default)]
    patient: Vec<WirePatient>,
    #[serde(default)]
    medical_note: Vec<WireNote>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Qualification {
    health_motive: Option<Coded>,
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Coded {
    code: String,
    label: String,
}

#[derive(Deserialize)]
struct Details {
    priority: Option<String>,
    status: Option<String>,
}

/// The Hub's case statuses (`qualification.details.status`), and those that say the case
/// is over in the regulation software: such a case is not put at a desk as a live one.
const CASE_STATUSES: [&str; 7] = [
    "PROGRAM", "ACTIF", "ACHEVE", "VALIDE", "CLOTURE", "CLASSE", "ARCHIVE",
];
const CLOSED_STATUSES: [&str; 3] = ["CLOTURE", "CLASSE", "ARCHIVE"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePatient {
    patient_id: String,
    identity: Option<Identity>,
    administrative_file: Option<AdministrativeFile>,
    detail: Option<PatientDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    strict_features: Option<StrictFeatures>,
    non_strict_features: Option<NonStrictFeatures>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StrictFeatures {
    birth_name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NonStrictFeatures {
    // Required by the schema (the name as said), not used: the strict traits identify.
    #[allow(dead_code)]
    complete: String,
    last_name: Option<String>,
    first_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdministrativeFile {
    #[serde(default)]
    external_id: Vec<ExternalId>,
}

#[derive(Deserialize)]
struct ExternalId {
    source: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatientDetail {
    medical_history: Option<String>,
    treatment: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNote {
    patient_id: Option<String>,
    // Required by the schema; who wrote it is not shown.
    #[allow(dead_code)]
    operator: serde::de::IgnoredAny,
    #[allow(dead_code)]
    medical_note_id: String,
    freetext: String,
}

/// Sex as the Hub codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) enum Sex {
    /// `M`.
    #[serde(rename = "M")]
    Male,
    /// `F`.
    #[serde(rename = "F")]
    Female,
    /// `O`: other.
    #[serde(rename = "O")]
    Other,
    /// `UN`: unknown.
    #[serde(rename = "UN")]
    Unknown,
}

/// A case as received: what the physician's page shows and the traits search uses.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HubCase {
    /// `{country}.{domain}.{organisation}.{senderCaseId}`.
    pub case_id: String,
    /// The SAMU that owns it (`fr.health.samuXXX`).
    pub owner: String,
    /// When the regulation software created it (as sent, RFC 3339 with offset).
    pub created: String,
    /// A drill (`Exercise`), not a real call: the page says so.
    pub exercise: bool,
    /// The envelope's sender, when it came in one.
    pub sender: Option<String>,
    /// When the regulation software sent this sending of the case (the message's
    /// `sentAt`, else its envelope's `dateTimeSent`), when it says: the board refuses a
    /// sending older than the one it holds (docs/case.md).
    pub sent_at: Option<time::OffsetDateTime>,
    /// The health motive (`M01.02`, label).
    pub motive: Option<(String, String)>,
    /// `P0` to `P3`, or `NR`.
    pub priority: Option<String>,
    /// The patients, in the message's order.
    pub patients: Vec<HubPatient>,
}

/// Only the case id and the count print: the rest identifies patients.
impl std::fmt::Debug for HubCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCase")
            .field("case_id", &self.case_id)
            .field("patients", &self.patients.len())
            .finish_non_exhaustive()
    }
}

/// One patient of a case.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HubPatient {
    /// The Hub's patient id (`fr.health.samu800.patient.…`).
    pub patient_id: String,
    /// Birth name (strict trait).
    pub birth_name: Option<String>,
    /// Birth date, `YYYY-MM-DD` (strict trait).
    pub birth_date: Option<String>,
    /// Sex (strict trait).
    pub sex: Option<Sex>,
    /// Name as said, when given (not a strict trait).
    pub last_name: Option<String>,
    /// First name as said, when given.
    pub first_name: Option<String>,
    /// A NIR the regulation software passed on: unqualified, a hint to check, never an INS.
    pub nir: Option<String>,
    /// Free-text history.
    pub history: Option<String>,
    /// Free-text treatments.
    pub treatment: Option<String>,
    /// The case's medical notes about this patient.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for HubPatient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPatient").finish_non_exhaustive()
    }
}

/// Reads a create-case message, bare or in its envelope.
pub(crate) fn parse(body: &[u8]) -> Result<HubCase, CaseError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(CaseError::TooLarge {
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| CaseError::NotJson)?;
    if !value.is_object() {
        return Err(CaseError::Envelope("the message is not a JSON object"));
    }
    let is_envelope = value.get("distributionID").is_some() || value.get("content").is_some();
    let (wire, sender, exercise, sent_at) = if is_envelope {
        let envelope: Envelope = typed(value, "envelope")?;
        let exercise = exercise_of(
            &envelope.distribution_kind,
            &envelope.distribution_status,
            true,
        )?;
        if envelope.distribution_id.is_empty() {
            return Err(CaseError::Envelope("distributionID is empty"));
        }
        let sender = short(&envelope.sender_id, "senderID")?;
        if let Some(expires) = &envelope.date_time_expires {
            let expires = instant(expires, "dateTimeExpires")?;
            if expires <= time::OffsetDateTime::now_utc() {
                return Err(CaseError::Envelope(
                    "the envelope expired (dateTimeExpires has passed)",
                ));
            }
        }
        let envelope_sent = envelope
            .date_time_sent
            .as_deref()
            .map(|t| instant(t, "dateTimeSent"))
            .transpose()?;
        let mut cases = envelope.content.into_iter().filter_map(|c| {
            let Bare {
                kind,
                status,
                sent_at,
                create_case_health,
            } = c.json_content.embedded_json_content.message;
            create_case_health.map(|wire| (kind, status, sent_at, wire))
        });
        let (kind, status, sent_at, wire) = cases.next().ok_or(CaseError::Envelope(
            "no createCaseHealth message in content",
        ))?;
        if cases.next().is_some() {
            return Err(CaseError::Envelope(
                "more than one createCaseHealth message in content",
            ));
        }
        // The message's own header takes the envelope's values: a message whose header
        // says otherwise (a drill in a real envelope) is not guessed at.
        if kind.is_some_and(|k| k != envelope.distribution_kind)
            || status.is_some_and(|s| s != envelope.distribution_status)
        {
            return Err(CaseError::Envelope(
                "the message's kind or status is not the envelope's",
            ));
        }
        let sent_at = match sent_at {
            Some(sent) => Some(header_sent_at(&sent)?),
            None => envelope_sent,
        };
        (wire, Some(sender), exercise, sent_at)
    } else {
        let bare: Bare = typed(value, "message")?;
        // A bare message with its RC-DE header: its kind and status decide as an
        // envelope's would. Without them, a report of a real case (the regulation
        // software's own message).
        let exercise = match (&bare.kind, &bare.status) {
            (None, None) => false,
            (kind, status) => exercise_of(
                kind.as_deref().unwrap_or("Report"),
                status.as_deref().unwrap_or(""),
                false,
            )?,
        };
        let sent_at = bare.sent_at.as_deref().map(header_sent_at).transpose()?;
        let wire = bare.create_case_health.ok_or(CaseError::Envelope(
            "neither an EDXL-DE envelope nor a createCaseHealth message",
        ))?;
        (wire, None, exercise, sent_at)
    };
    let mut case = check(wire, sender, exercise)?;
    case.sent_at = sent_at;
    Ok(case)
}

/// The message header's `sentAt`: the Hub's date and time with its offset.
fn header_sent_at(value: &str) -> Result<time::OffsetDateTime, CaseError> {
    if !hub_datetime(value) {
        return Err(field(
            "sentAt",
            "is not a date and time with its offset (YYYY-MM-DDThh:mm:ss+hh:mm)",
        ));
    }
    instant(value, "sentAt")
}

/// An envelope's date-time (RFC 3339).
fn instant(value: &str, name: &str) -> Result<time::OffsetDateTime, CaseError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| field(name, "is not a date and time (RFC 3339)"))
}

/// Deserialises `value`, naming the failing field without its value.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &'static str,
) -> Result<T, CaseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's own wording for a missing field names the field only; other messages
        // may quote the value, which stays out.
        let problem = match inner.strip_prefix("missing field ") {
            Some(field) => format!("missing field {field}"),
            None => "not of the expected type".to_owned(),
        };
        CaseError::Field {
            field: if path == "." { what.to_owned() } else { path },
            problem,
        }
    })
}

fn field(field: &str, problem: &str) -> CaseError {
    CaseError::Field {
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
}

fn short(value: &str, name: &str) -> Result<String, CaseError> {
    bounded(value, name, MAX_SHORT)
}

fn bounded(value: &str, name: &str, limit: usize) -> Result<String, CaseError> {
    if value.chars().count() > limit {
        return Err(field(name, &format!("longer than {limit} characters")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(field(name, "holds control characters"));
    }
    // A direction override turns the rest of the line around on the page (a birth date
    // read backwards); a zero-width character makes a name that looks right miss in a
    // search.
    if value.chars().any(crate::encoding::invisible) {
        return Err(field(name, "holds invisible formatting characters"));
    }
    Ok(value.trim().to_owned())
}

fn optional(value: Option<String>, name: &str, limit: usize) -> Result<Option<String>, CaseError> {
    match value {
        Some(v) => Ok(Some(bounded(&v, name, limit)?).filter(|v| !v.is_empty())),
        None => Ok(None),
    }
}

/// Dot-separated words of `[a-zA-Z0-9_-]`, between `min` and `max` of them. The schema's
/// pattern, `^([a-zA-Z0-9_-]+\.?){4,10}$`, makes the dot optional, so it counts runs of
/// characters, not words; the Hub's ids are dotted (`fr.health.samu770`, a case id
/// `{country}.{domain}.{organisation}.{senderCaseId}`), and the gateway counts words.
fn hub_id(value: &str, min: usize, max: usize) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    (min..=max).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// `^([a-zA-Z0-9_-]+\.){3,8}patient(\.[a-zA-Z0-9_-]+){1,2}$`.
fn patient_id(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    let word = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let Some(at) = parts.iter().rposition(|p| *p == "patient") else {
        return false;
    };
    let (before, after) = (&parts[..at], &parts[at + 1..]);
    (3..=8).contains(&before.len())
        && (1..=2).contains(&after.len())
        && before.iter().all(word)
        && after.iter().all(word)
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[\-+]\d{2}:\d{2}$`, and a real instant.
fn hub_datetime(value: &str) -> bool {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 25
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b[19] == b'+' || b[19] == b'-')
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .is_ok()
}

/// `^\d{4}-\d{2}-\d{2}$`, the Hub's pattern, and no more: a date whose day, or month and
/// day, are `00` (unknown, as the registers write them), and even one that names no day
/// (`1958-13-00`, `1958-02-30`, `0000-00-00`), passes it. Such a date is passed on as
/// sent and judged where it is shown (docs/case.md, "Birth dates"): refusing it here
/// refused the whole case, every other patient of the call with it.
fn birth_date(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `^M\d{2}\.\d{2}(\.\d{2})?$`.
fn motive_code(value: &str) -> bool {
    let Some(rest) = value.strip_prefix('M') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check(wire: WireCase, sender: Option<String>, exercise: bool) -> Result<HubCase, CaseError> {
    if !hub_id(&wire.case_id, 4, 10) || wire.case_id.len() > MAX_SHORT {
        return Err(field(
            "createCaseHealth.caseId",
            "is not a Hub case id ({country}.{domain}.{organisation}.{senderCaseId})",
        ));
    }
    if !hub_id(&wire.owner, 3, 9) || wire.owner.len() > MAX_SHORT {
        return Err(field(
            "createCaseHealth.owner",
            "is not a Hub organisation id",
        ));
    }
    if !hub_datetime(&wire.creation) {
        return Err(field(
            "createCaseHealth.creation",
            "is not a date and time with its offset (YYYY-MM-DDThh:mm:ss+hh:mm)",
        ));
    }
    let motive = match wire.qualification.health_motive {
        Some(Coded { code, label }) => {
            if !motive_code(&code) {
                return Err(field(
                    "createCaseHealth.qualification.healthMotive.code",
                    "is not a health motive code (Mnn.nn or Mnn.nn.nn)",
                ));
            }
            let label = short(&label, "createCaseHealth.qualification.healthMotive.label")?;
            Some((code, label))
        }
        None => None,
    };
    let (priority, status) = match wire.qualification.details {
        Some(d) => (d.priority, d.status),
        None => (None, None),
    };
    if let Some(status) = status {
        if !CASE_STATUSES.contains(&status.as_str()) {
            return Err(field(
                "createCaseHealth.qualification.details.status",
                "is not one of the Hub's case statuses",
            ));
        }
        if CLOSED_STATUSES.contains(&status.as_str()) {
            return Err(field(
                "createCaseHealth.qualification.details.status",
                "says the case is over (CLOTURE, CLASSE or ARCHIVE): close it at the desk instead",
            ));
        }
    }
    let priority = match priority {
        Some(p) if ["P0", "P1", "P2", "P3", "NR"].contains(&p.as_str()) => Some(p),
        Some(_) => {
            return Err(field(
                "createCaseHealth.qualification.details.priority",
                "is not one of P0, P1, P2, P3, NR",
            ));
        }
        None => None,
    };
    if wire.patient.len() > MAX_PATIENTS {
        return Err(field(
            "createCaseHealth.patient",
            &format!("more than {MAX_PATIENTS} patients"),
        ));
    }
    let mut patients = Vec::with_capacity(wire.patient.len());
    for (i, p) in wire.patient.into_iter().enumerate() {
        let at = |name: &str| format!("createCaseHealth.patient[{i}].{name}");
        if !patient_id(&p.patient_id) || p.patient_id.len() > MAX_SHORT {
            return Err(field(&at("patientId"), "is not a Hub patient id"));
        }
        if patients
            .iter()
            .any(|q: &HubPatient| q.patient_id == p.patient_id)
        {
            return Err(field(&at("patientId"), "appears twice"));
        }
        let identity = p.identity;
        let (strict, loose) = match identity {
            Some(Identity {
                strict_features,
                non_strict_features,
            }) => (strict_features, non_strict_features),
            None => (None, None),
        };
        let (birth_name, birth, sex) = match strict {
            Some(s) => (s.birth_name, s.birth_date, s.sex),
            None => (None, None, None),
        };
        if let Some(date) = &birth
            && !birth_date(date)
        {
            return Err(field(
                &at("identity.strictFeatures.birthDate"),
                "is not a date (YYYY-MM-DD)",
            ));
        }
        let sex = match sex.as_deref() {
            None => None,
            Some("M") => Some(Sex::Male),
            Some("F") => Some(Sex::Female),
            Some("O") => Some(Sex::Other),
            Some("UN") => Some(Sex::Unknown),
            Some(_) => {
                return Err(field(
                    &at("identity.strictFeatures.sex"),
                    "is not one of M, F, O, UN",
                ));
            }
        };
        let (last_name, first_name) = match loose {
            Some(n) => (n.last_name, n.first_name),
            None => (None, None),
        };
        let mut nir = None;
        for (j, id) in p
            .administrative_file
            .map(|a| a.external_id)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let name = at(&format!("administrativeFile.externalId[{j}]"));
            if !["NIR", "SINUS", "DOSSARD", "PLACE", "AUTRE"].contains(&id.source.as_str()) {
                return Err(field(&name, "has an unknown source"));
            }
            if id.source == "NIR" && nir.is_none() {
                nir = Some(short(&id.value, &name)?);
            }
        }
        let (history, treatment) = match p.detail {
            Some(d) => (d.medical_history, d.treatment),
            None => (None, None),
        };
        patients.push(HubPatient {
            birth_name: optional(
                birth_name,
                &at("identity.strictFeatures.birthName"),
                MAX_SHORT,
            )?,
            birth_date: birth,
            sex,
            last_name: optional(
                last_name,
                &at("identity.nonStrictFeatures.lastName"),
                MAX_SHORT,
            )?,
            first_name: optional(
                first_name,
                &at("identity.nonStrictFeatures.firstName"),
                MAX_SHORT,
            )?,
            nir: nir.filter(|n| !n.is_empty()),
            history: optional(history, &at("detail.medicalHistory"), MAX_TEXT)?,
            treatment: optional(treatment, &at("detail.treatment"), MAX_TEXT)?,
            notes: Vec::new(),
            patient_id: p.patient_id,
        });
    }
    for (i, note) in wire.medical_note.into_iter().enumerate() {
        let name = format!("createCaseHealth.medicalNote[{i}].freetext");
        let text = bounded(&note.freetext, &name, MAX_TEXT)?;
        // A note about no patient, or one the case does not list, concerns the case: the
        // page does not show it against anyone.
        if let Some(target) = note.patient_id
            && let Some(patient) = patients.iter_mut().find(|p| p.patient_id == target)
            && !text.is_empty()
        {
            patient.notes.push(text);
        }
    }
    Ok(HubCase {
        case_id: wire.case_id,
        owner: wire.owner,
        created: wire.creation,
        exercise,
        sender,
        sent_at: None,
        motive,
        priority,
        patients,
    })
}

#[cfg(test)]
mod tests;
