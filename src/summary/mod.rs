//! The critical summary: what a regulating physician reads mid-call, extracted from an HL7
//! International Patient Summary (FHIR R4 Bundle).
//!
//! [`extract`] turns bundle bytes into a [`CriticalSummary`] or a [`SummaryError`] naming the
//! defect. Order: JSON syntax ([`syntax`]) → structure of the root resource ([`validate`])
//! → "is it a bundle" → sections read through the Composition, references resolved the
//! ways real bundles write them ([`bundle`]) → typed sections (`sections`). Narratives are
//! reduced to plain text ([`narrative`]); nothing leaves as markup.
//!
//! Honesty rules (`docs/summary.md` has the whole reasoning): a section is `recorded` only
//! when it lists readable items; `none_known` only on an explicit statement (SNOMED / IPS
//! "no known" codes, `emptyReason` `nilknown`, or the exact phrase as free text);
//! `not_recorded` when the document says nothing or says the information is unavailable;
//! `unreadable` when it lists entries none of which could be read; `conflicting` when it
//! says two incompatible things (none known and no information, or either next to items).
//! Nothing recorded is dropped: entries claiming one identity are all considered, an
//! allergy the section forgot to list is still shown, entries about another person are
//! left out and counted. Defects inside entries do not hide the rest of the document: they
//! are counted (`defects`) and described (`warnings`), and the physician's screen shows them.

pub mod bundle;
mod cda;
pub mod narrative;
mod sections;
mod subject;
pub use subject::{human_names, ins_identifiers};
pub mod syntax;
pub mod validate;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest bundle accepted, in bytes (the national record's summaries are far smaller).
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// Why a document yields no summary. Messages name the defect and its place, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    /// Not valid JSON.
    #[error("JSON syntax error at line {line}, column {column}: {defect}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        defect: String,
    },
    /// Valid JSON, but the resource breaks FHIR structure rules.
    #[error("invalid FHIR resource: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// XML that cannot be read safely: a DTD, too deep, malformed, not UTF-8.
    #[error("XML document refused: {0}")]
    Xml(String),
    /// Well-formed XML, but not a CDA document.
    #[error("not a CDA document: {0}")]
    NotACda(String),
    /// Valid FHIR, but not a summary document.
    #[error("not an IPS bundle: {0}")]
    NotABundle(String),
    /// Larger than [`MAX_BUNDLE_BYTES`] or with too many entries.
    #[error("document too large: {0}")]
    TooLarge(String),
    /// The document's own subject cannot be determined: no Composition subject names one
    /// of its Patient resources, and those disagree on who the patient is.
    #[error(
        "the document's subject cannot be determined: it holds {0} Patient resources that disagree on who the patient is, and no Composition subject names one of them"
    )]
    ConflictingPatients(usize),
    /// A CDA document with several `recordTarget`s that are not one person (the same INS):
    /// which patient it is about cannot be determined.
    #[error(
        "the document's subject cannot be determined: it names {0} patients (recordTarget) that are not one person by their INS"
    )]
    SeveralRecordTargets(usize),
}

impl SummaryError {
    /// The message for the physician's screen, in French.
    pub fn message_fr(&self) -> &'static str {
        match self {
            Self::ConflictingPatients(_) | Self::SeveralRecordTargets(_) => {
                "Document refusé : il décrit plusieurs patients différents."
            }
            _ => "Le dossier a renvoyé un document illisible. Aucune donnée n'est affichée.",
        }
    }
}

/// The critical summary of one document.
#[derive(Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CriticalSummary {
    /// Where the data comes from and how old it is.
    pub document: DocumentInfo,
    /// The patient as the document describes them: not the identity of reference.
    pub patient_in_document: Option<DocumentPatient>,
    /// Allergies and intolerances (always present: shown first).
    pub allergies: Section<Allergy>,
    /// Current medications.
    pub medications: Section<Medication>,
    /// Active problems.
    pub problems: Section<Problem>,
    /// Past illnesses (resolved problems).
    pub past_problems: Section<Problem>,
    /// Procedures.
    pub procedures: Section<Procedure>,
    /// Immunizations, when the document has the section.
    pub immunizations: Option<Section<Immunization>>,
    /// Medical devices, when the document has the section.
    pub devices: Option<Section<Device>>,
    /// Pregnancy status, when the document has the section.
    pub pregnancy: Option<Section<Observation>>,
    /// Advance directives (limits of care, designated person), when the document has the
    /// section.
    #[serde(default)]
    pub advance_directives: Option<Section<Observation>>,
    /// Points of vigilance the author wants any physician to see (CDA documents: an
    /// IPS-FR's 44944-7, a VSM's 30954-2), when the document has the section.
    #[serde(default)]
    pub vigilance: Option<Section<Observation>>,
    /// Medicines dispensed by pharmacies, from a reimbursement history: what was handed
    /// out and when, never to be read as the current treatment.
    #[serde(default)]
    pub dispensations: Option<Section<Dispensation>>,
    /// The content of an unstructured document (a PDF or text wrapped in CDA, level 1).
    #[serde(default)]
    pub unstructured: Option<Unstructured>,
    /// Every other section, by title with its narrative as text.
    pub other_sections: Vec<OtherSection>,
    /// The record's other documents, when the summary was composed from a record that
    /// holds several (the DMP): what each is, and what the summary took from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<ListedDocument>,
    /// How this copy was obtained from the record service (transactions, assertion ids,
    /// documents retrieved), for the access's audit record; never cached, never sent.
    #[serde(skip)]
    #[schema(ignore)]
    pub provenance: Vec<String>,
    /// Defects of the document, counted (the physician's screen says the summary may be
    /// partial when any is non-zero).
    #[serde(default)]
    pub defects: DocumentDefects,
    /// What could not be read or looked wrong, described for centre IT (English, never a
    /// value from the document); shown with the summary.
    pub warnings: Vec<String>,
    /// What the physician must be told in so many words, beside the count of `warnings`:
    /// the page says each in French, by the block it concerns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<Notice>,
}

/// A finding about the summary's sources that changes how it is read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The record's documents were listed in part: a newer synthesis may be missing.
    ListingPartial,
    /// The reimbursement history the record lists was not returned: no dispensations.
    DispensationsLeftOut,
    /// The reimbursement history names no INS: its dispensations are the patient's by the
    /// record's filing alone.
    DispensationsUnverifiedIdentity,
}

/// Defects of one document, counted. Each is also described in `warnings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct DocumentDefects {
    /// Entries claiming the identity (fullUrl, or type and id) of another entry in the
    /// same version: every claimant is considered, none picked.
    pub duplicate_entries: usize,
    /// Entries about a person other than the document's subject, left out.
    pub other_person_entries: usize,
    /// Section entries that could not be read, all sections together.
    pub unreadable_entries: usize,
    /// Entries breaking FHIR structure rules (unknown element, invalid date, bad id…).
    pub invalid_entries: usize,
    /// Attachments whose data is not valid base64.
    pub bad_attachments: usize,
    /// Human names holding markup (shown as text, markup removed).
    pub names_with_markup: usize,
    /// Narratives holding a DOCTYPE or an entity declaration (ignored).
    pub narrative_declarations: usize,
    /// Pages of a search set the answer says exist (a `next` link) and that were not
    /// read: 1 when there are any (their number is not known).
    pub unread_pages: usize,
}

impl DocumentDefects {
    /// Whether the document had any defect at all.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Provenance of the document.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DocumentInfo {
    /// `document` or `searchset` (some servers answer `$summary` with a search set);
    /// `cda`, or `cda-unstructured` for a level-1 CDA document.
    pub bundle_type: String,
    /// `fhir` for a bundle, `cda` for a CDA R2 document.
    #[serde(default = "fhir_format")]
    pub format: String,
    /// The shape recognised from the document's templates and type: `IPS-FR`, `VSM`,
    /// `DLU`, `LDL-SES`, `HR` (reimbursement history), `CDA` when none is; `IPS` for a
    /// bundle.
    #[serde(default)]
    pub template: Option<String>,
    /// The document's type as written (LOINC `60591-5`, `SYNTH`, `REMB`…).
    #[serde(default)]
    pub type_code: Option<Code>,
    /// Composition title.
    pub title: Option<String>,
    /// Composition date (when the summary was written), only when it is a FHIR dateTime
    /// (a malformed one is left out, with a warning); a CDA document's `effectiveTime`.
    pub date: Option<String>,
    /// Bundle timestamp (when the bundle was assembled, which a `$summary` made on
    /// request says is now): never the document's date.
    pub timestamp: Option<String>,
    /// Authors, by name.
    pub authors: Vec<String>,
    /// The organisation keeping the document.
    pub custodian: Option<String>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(DocumentInfo);

fn fhir_format() -> String {
    "fhir".into()
}

/// Identity traits as written in the document (of its subject, not of other persons).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DocumentPatient {
    /// Names as written (family in capitals is the source's choice, not ours).
    pub names: Vec<String>,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Administrative gender.
    pub gender: Option<String>,
    /// INS identifiers (`OID|value`), to check the document is about the patient asked
    /// for; never sent to the screen.
    #[serde(skip)]
    pub ins: Vec<String>,
    /// The document names no INS of its patient: that it is this patient's rests on the
    /// record service's filing alone, so the page asks the physician to check the traits
    /// with the caller. Absent in copies cached before it was read: taken as true there
    /// (the check is asked for rather than silently dropped).
    #[serde(default = "unknown_is_unchecked")]
    pub no_ins: bool,
}

fn unknown_is_unchecked() -> bool {
    true
}

/// What a section establishes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SectionStatus {
    /// At least one readable item.
    Recorded,
    /// The document states there are none ("aucune allergie connue").
    NoneKnown,
    /// The document says nothing, or that the information is unavailable
    /// ("allergies non renseignées").
    NotRecorded,
    /// The document lists entries, none of which could be read.
    Unreadable,
    /// The document says incompatible things: "none known" next to "no information", or
    /// either next to items (which are listed all the same). Never to be read as absence.
    Conflicting,
}

/// One section of the summary.
#[derive(Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Section<T> {
    /// What the section establishes.
    pub status: SectionStatus,
    /// What established it, e.g. `SNOMED CT 716186003`, `emptyReason unavailable`,
    /// `section absent`.
    pub basis: String,
    /// The section title in the document.
    pub title: Option<String>,
    /// Readable items the section lists, in document order.
    pub items: Vec<T>,
    /// Readable items of the section's kind that the document holds without listing them
    /// in the section (allergies only): shown, with a note.
    #[serde(default = "Vec::new")]
    pub unlisted_items: Vec<T>,
    /// Statements of absence ("No known allergies", "No known food allergy") and of
    /// missing information ("No information about allergies"), as written.
    pub statements: Vec<String>,
    /// Entries that could not be read (unresolvable references, versions the document
    /// does not hold, unexpected types).
    pub unreadable_entries: usize,
    /// Entry references that several different resources claim: all of them are listed.
    #[serde(default)]
    pub duplicate_entries: usize,
    /// Entries about a person other than the document's subject, left out.
    #[serde(default)]
    pub other_person_entries: usize,
    /// The section's narrative as plain text.
    pub narrative: Option<String>,
    /// The narrative was longer than the gateway keeps: the cut text (or, in sections
    /// merged, one of the texts) ends with `…`, and the rest is not shown
    /// (`docs/summary.md`, §5).
    #[serde(default)]
    pub narrative_cut: bool,
}

/// A code as the source wrote it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
pub struct Code {
    /// Code system URI (or OID URN).
    pub system: Option<String>,
    /// The code.
    pub code: Option<String>,
    /// Its display text.
    pub display: Option<String>,
}

/// An allergy or intolerance.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
pub struct Allergy {
    /// The substance, in the source's words.
    pub substance: String,
    /// Its codes.
    pub codes: Vec<Code>,
    /// `low`, `high`, `unable-to-assess`.
    pub criticality: Option<String>,
    /// `allergy` or `intolerance`.
    pub kind: Option<String>,
    /// `food`, `medication`, `environment`, `biologic`.
    pub categories: Vec<String>,
    /// Clinical status (`active`, `inactive`, `resolved`).
    pub clinical_status: Option<String>,
    /// Verification status (`confirmed`, `unconfirmed`, …; refuted ones are left out).
    pub verification_status: Option<String>,
    /// Reactions: manifestations, with severity when given.
    pub reactions: Vec<String>,
    /// Onset as written.
    pub onset: Option<String>,
}

/// A medication.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Medication {
    /// The product, in the source's words.
    pub name: String,
    /// Its codes.
    pub codes: Vec<Code>,
    /// Dosage as text.
    pub dosage: Vec<String>,
    /// Status (`active`, `completed`, …); `do-not-perform` for an order not to give the
    /// product (`doNotPerform`), whatever the order's own status.
    pub status: Option<String>,
    /// `MedicationStatement` or `MedicationRequest`.
    pub source: String,
    /// Period or date it applies to, as written.
    pub period: Option<String>,
}

/// A problem (condition).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// The problem, in the source's words.
    pub name: String,
    /// Its codes.
    pub codes: Vec<Code>,
    /// Clinical status.
    pub clinical_status: Option<String>,
    /// Verification status.
    pub verification_status: Option<String>,
    /// Onset as written.
    pub onset: Option<String>,
    /// Abatement as written.
    pub abatement: Option<String>,
}

/// A procedure.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Procedure {
    /// The procedure, in the source's words.
    pub name: String,
    /// Its codes.
    pub codes: Vec<Code>,
    /// Status.
    pub status: Option<String>,
    /// When, as written.
    pub performed: Option<String>,
}

/// An immunization.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Immunization {
    /// The vaccine, in the source's words.
    pub vaccine: String,
    /// Its codes.
    pub codes: Vec<Code>,
    /// Status.
    pub status: Option<String>,
    /// When, as written.
    pub date: Option<String>,
}

/// A medical device.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Device {
    /// The device, in the source's words.
    pub name: String,
    /// Its codes.
    pub codes: Vec<Code>,
}

/// An observation (pregnancy status and the like).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Observation {
    /// What was observed.
    pub name: String,
    /// The value as text.
    pub value: Option<String>,
    /// When, as written.
    pub date: Option<String>,
}

/// One document of the patient's record, as listed by the record service.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ListedDocument {
    /// Its unique id in the record.
    pub unique_id: String,
    /// Its type code (`60591-5`, `SYNTH`, `REMB`…).
    pub type_code: Option<String>,
    /// The type's display name, when the record gives one.
    pub type_display: Option<String>,
    /// Its title.
    pub title: Option<String>,
    /// When it was written (`YYYYMMDDhhmmss`, UTC).
    pub creation_time: Option<String>,
    /// Its authors, by name.
    pub authors: Vec<String>,
    /// Whether its content can be read into sections (CDA level 3) or only shown (PDF,
    /// text).
    pub structured: bool,
    /// What the summary took from it: `summary` (allergies, treatments, problems and
    /// the other sections), `dispensations`; empty when nothing.
    pub used_for: Vec<String>,
    /// Hidden from the patient (`INVISIBLE_PATIENT`: not yet told, as after a diagnosis
    /// announced in consultation): what it says is not for the caller or the patient.
    #[serde(default)]
    pub hidden_from_patient: bool,
    /// Masked from professionals (`MASQUE_PS`), readable in this access's mode because the
    /// patient allowed it.
    #[serde(default)]
    pub masked: bool,
    /// Deprecated in the registry (replaced by a newer version): the registry was asked
    /// for current documents only, and listed it all the same.
    #[serde(default)]
    pub replaced: bool,
    /// Filed under a patient identifier other than the INS asked for (an earlier one, or
    /// a filing error): its title and authors may be another patient's.
    #[serde(default)]
    pub filed_elsewhere: bool,
}

redacted_debug!(ListedDocument);

/// A medicine handed out by a pharmacy (reimbursement history).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Dispensation {
    /// The product, in the source's words.
    pub name: String,
    /// Its codes (CIP13, CIS, ATC).
    pub codes: Vec<Code>,
    /// When it was dispensed, as written.
    pub date: Option<String>,
    /// How much, as written (boxes, units).
    pub quantity: Option<String>,
}

/// The content of an unstructured document. A PDF is kept for the grant's document route
/// and never travels inside the summary's JSON ([`CriticalSummary::without_content`]).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Unstructured {
    /// The declared media type (`application/pdf`, `text/plain`…).
    pub media_type: String,
    /// Size of the content in bytes (0 when only referenced).
    pub size: usize,
    /// The text of a `text/plain` document, shown inline.
    pub text: Option<String>,
    /// Whether a PDF is available from the grant's document route.
    pub pdf: bool,
    /// The document only points to its content elsewhere (`reference`): nothing to show.
    pub by_reference: bool,
    /// The PDF's bytes (base64), kept with the sealed copy; removed before the summary
    /// leaves the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub content: Option<String>,
}

/// A section the summary does not model: title and narrative.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OtherSection {
    /// Title in the document.
    pub title: Option<String>,
    /// LOINC (or other) code of the section.
    pub code: Option<String>,
    /// Number of entries.
    pub entries: usize,
    /// Narrative as plain text.
    pub narrative: Option<String>,
    /// The narrative was longer than the gateway keeps: it ends with `…` and the rest is
    /// not shown (`docs/summary.md`, §5).
    #[serde(default)]
    pub narrative_cut: bool,
}

/// The critical summary of the bundle in `bytes`, or why there is none.
pub fn extract(bytes: &[u8]) -> Result<CriticalSummary, SummaryError> {
    let mut summary = read(bytes)?;
    if let Some(patient) = &mut summary.patient_in_document {
        patient.no_ins = patient.ins.is_empty();
    }
    Ok(summary)
}

/// The summary of a CDA document or a FHIR bundle.
fn read(bytes: &[u8]) -> Result<CriticalSummary, SummaryError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(SummaryError::TooLarge(format!(
            "{} bytes, the limit is {MAX_BUNDLE_BYTES}",
            bytes.len()
        )));
    }
    // The national record keeps its summaries as CDA (XML); bundles are JSON.
    if cda::looks_like_xml(bytes) {
        return cda::extract(bytes);
    }
    let value = syntax::parse(bytes)?;
    let Some(root) = value.as_object() else {
        return Err(SummaryError::NotABundle(
            "the JSON document is not an object".into(),
        ));
    };
    let findings = validate::resource(root);
    if !findings.is_empty() {
        return Err(SummaryError::Invalid(
            findings.iter().map(ToString::to_string).collect(),
        ));
    }
    let kind = root
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("?");
    if kind != "Bundle" {
        return Err(SummaryError::NotABundle(format!(
            "the file is a {} resource, a summary is a Bundle",
            validate_name(kind)
        )));
    }
    sections::from_bundle(root)
}

impl CriticalSummary {
    /// The summary as it leaves the gateway: an unstructured document's PDF is served
    /// by its own route, not inside the summary.
    pub fn without_content(mut self) -> Self {
        if let Some(body) = &mut self.unstructured {
            body.content = None;
        }
        self
    }

    /// The PDF of an unstructured document, decoded.
    pub fn pdf(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let content = self.unstructured.as_ref()?.content.as_ref()?;
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .ok()
    }
}

fn validate_name(kind: &str) -> String {
    crate::encoding::peer_token(kind, 64, "", None)
}

// Clinical content and the document's identity never print through `Debug`.
redacted_debug!(
    DocumentPatient,
    Allergy,
    Medication,
    Problem,
    Procedure,
    Immunization,
    Device,
    Observation,
    OtherSection,
    Dispensation,
    Unstructured,
    Code
);

/// Status and counts only.
impl<T> std::fmt::Debug for Section<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section")
            .field("status", &self.status)
            .field("items", &self.items.len())
            .field("unlisted_items", &self.unlisted_items.len())
            .field("unreadable_entries", &self.unreadable_entries)
            .finish_non_exhaustive()
    }
}

/// Each section's status and counts; no content, no patient.
impl std::fmt::Debug for CriticalSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriticalSummary")
            .field("allergies", &self.allergies)
            .field("medications", &self.medications)
            .field("problems", &self.problems)
            .field("past_problems", &self.past_problems)
            .field("procedures", &self.procedures)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document naming no INS of its patient is said to (the page asks for the traits
    /// to be checked); one naming an INS is not, whichever INS it is (the record service's
    /// client refuses another patient's).
    #[test]
    fn a_document_naming_no_ins_is_flagged() {
        let cda = |ids: &str| {
            format!(
                "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><code code=\"11488-4\"/>\
                 <recordTarget><patientRole>{ids}<patient><name>Camille SYNTHETIQUE</name></patient></patientRole></recordTarget>\
                 <component><nonXMLBody><text mediaType=\"text/plain\">Rien.</text></nonXMLBody></component></ClinicalDocument>"
            )
        };
        let no_ins = |xml: String| {
            extract(xml.as_bytes())
                .unwrap()
                .patient_in_document
                .map(|p| p.no_ins)
        };
        let ins = "<id root=\"1.2.250.1.213.1.4.8\" extension=\"180017500000134\"/>";
        let local = "<id root=\"1.2.250.1.999.7\" extension=\"IPP-42\"/>";
        assert_eq!(no_ins(cda(ins)), Some(false));
        assert_eq!(no_ins(cda(&format!("{local}{ins}"))), Some(false));
        // A local id is not an INS.
        assert_eq!(no_ins(cda(local)), Some(true));
        assert_eq!(no_ins(cda("")), Some(true));
    }
}
