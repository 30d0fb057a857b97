//! From a validated Bundle to the typed sections of the critical summary.

use serde_json::{Map, Value};

use super::bundle::{Index, MAX_ENTRIES};
use super::{
    Allergy, Code, CriticalSummary, Device, DocumentInfo, DocumentPatient, Immunization,
    Medication, Observation, OtherSection, Problem, Procedure, Section, SectionStatus,
    SummaryError, narrative, validate,
};

type Object = Map<String, Value>;

/// LOINC codes of the IPS sections the summary models.
const ALLERGIES: &str = "48765-2";
const MEDICATIONS: &str = "10160-0";
const PROBLEMS: &str = "11450-4";
const PAST_PROBLEMS: &str = "11348-0";
const PROCEDURES: &str = "47519-4";
const IMMUNIZATIONS: &str = "11369-6";
const DEVICES: &str = "46264-8";
const PREGNANCY: &str = "10162-6";

const IPS_ABSENT: &str = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips";
const SNOMED: &str = "http://snomed.info/sct";
/// Most warnings listed; the rest are counted.
const MAX_WARNINGS: usize = 50;

/// A section as the Composition lists it.
struct RawSection<'a> {
    title: Option<String>,
    code: Option<String>,
    references: Vec<&'a str>,
    /// Resources found directly (search sets without a Composition).
    resources: Vec<&'a Object>,
    empty_reason: Option<String>,
    narrative: Option<String>,
}

/// What one entry of a section says.
enum Read<T> {
    Item(T),
    /// "No known …": `general` for the whole section, else a partial statement.
    NoneKnown {
        general: bool,
        text: String,
        basis: String,
    },
    /// "No information about …".
    NoInformation(String),
    /// Deliberately left out (refuted, entered in error), with why.
    Skipped(String),
    /// Not readable as this section's item.
    Unreadable(String),
}

struct Context<'a> {
    index: &'a Index<'a>,
    warnings: Vec<String>,
}

impl Context<'_> {
    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

pub(super) fn from_bundle(root: &Object) -> Result<CriticalSummary, SummaryError> {
    let bundle_type = text(root, "type").unwrap_or_default();
    if bundle_type != "document" && bundle_type != "searchset" {
        return Err(SummaryError::NotABundle(format!(
            "Bundle.type is '{}', a summary is a 'document' (or a 'searchset')",
            bundle_type
                .chars()
                .take(32)
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        )));
    }
    let entries = root
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if entries.len() > MAX_ENTRIES {
        return Err(SummaryError::TooLarge(format!(
            "{} entries, the limit is {MAX_ENTRIES}",
            entries.len()
        )));
    }
    let index = Index::new(entries);
    let mut context = Context {
        index: &index,
        warnings: Vec::new(),
    };
    for (at, entry) in index.entries.iter().enumerate() {
        for finding in validate::resource(entry.resource) {
            context.warn(format!("entry {at}: {finding}"));
        }
    }
    let patient_in_document = patient(&index)?;
    let composition = index.of_type("Composition").next();
    let (document, raw) = match composition {
        Some(composition) => {
            let document = document_info(
                &mut context,
                composition.resource,
                composition.full_url,
                &bundle_type,
            );
            (document, composition_sections(composition.resource))
        }
        None => {
            if bundle_type == "document" {
                context.warn(
                    "document bundle without a Composition: sections rebuilt from resource types"
                        .into(),
                );
            }
            (
                DocumentInfo {
                    bundle_type: bundle_type.clone(),
                    title: None,
                    date: None,
                    timestamp: text(root, "timestamp"),
                    authors: Vec::new(),
                    custodian: None,
                },
                sections_by_type(&index),
            )
        }
    };
    let mut document = document;
    document.timestamp = text(root, "timestamp");
    let from = composition.and_then(|c| c.full_url);
    let contained = composition.map(|c| c.resource);
    let mut summary = assemble(
        &mut context,
        raw,
        from,
        contained,
        document,
        patient_in_document,
    );
    let total = context.warnings.len();
    if total > MAX_WARNINGS {
        context.warnings.truncate(MAX_WARNINGS);
        context
            .warnings
            .push(format!("… and {} more warnings", total - MAX_WARNINGS));
    }
    summary.warnings = context.warnings;
    Ok(summary)
}

fn assemble(
    context: &mut Context,
    raw: Vec<RawSection>,
    from: Option<&str>,
    contained: Option<&Object>,
    document: DocumentInfo,
    patient_in_document: Option<DocumentPatient>,
) -> CriticalSummary {
    let by_code = |code: &str| raw.iter().find(|s| s.code.as_deref() == Some(code));
    let allergies = build(
        context,
        by_code(ALLERGIES),
        from,
        contained,
        "AllergyIntolerance",
        allergy,
    );
    let medications = build(
        context,
        by_code(MEDICATIONS),
        from,
        contained,
        "Medication",
        medication,
    );
    let problems = build(
        context,
        by_code(PROBLEMS),
        from,
        contained,
        "Condition",
        problem,
    );
    let past_problems = build(
        context,
        by_code(PAST_PROBLEMS),
        from,
        contained,
        "Condition",
        problem,
    );
    let procedures = build(
        context,
        by_code(PROCEDURES),
        from,
        contained,
        "Procedure",
        procedure,
    );
    let immunizations = by_code(IMMUNIZATIONS).map(|s| {
        build(
            context,
            Some(s),
            from,
            contained,
            "Immunization",
            immunization,
        )
    });
    let devices =
        by_code(DEVICES).map(|s| build(context, Some(s), from, contained, "Device", device));
    let pregnancy = by_code(PREGNANCY).map(|s| {
        build(
            context,
            Some(s),
            from,
            contained,
            "Observation",
            observation,
        )
    });
    let modelled = [
        ALLERGIES,
        MEDICATIONS,
        PROBLEMS,
        PAST_PROBLEMS,
        PROCEDURES,
        IMMUNIZATIONS,
        DEVICES,
        PREGNANCY,
    ];
    let other_sections = raw
        .iter()
        .filter(|s| !s.code.as_deref().is_some_and(|c| modelled.contains(&c)))
        .map(|s| OtherSection {
            title: s.title.clone(),
            code: s.code.clone(),
            entries: s.references.len() + s.resources.len(),
            narrative: s.narrative.clone(),
        })
        .collect();
    CriticalSummary {
        document,
        patient_in_document,
        allergies,
        medications,
        problems,
        past_problems,
        procedures,
        immunizations,
        devices,
        pregnancy,
        other_sections,
        warnings: Vec::new(),
    }
}

/// Reads a section's entries with `read`; the status follows the module's honesty rules.
fn build<T>(
    context: &mut Context,
    raw: Option<&RawSection>,
    from: Option<&str>,
    contained: Option<&Object>,
    what: &str,
    read: fn(&mut Context, &Object) -> Read<T>,
) -> Section<T> {
    let Some(raw) = raw else {
        return Section {
            status: SectionStatus::NotRecorded,
            basis: "section absent".into(),
            title: None,
            items: Vec::new(),
            statements: Vec::new(),
            unreadable_entries: 0,
            narrative: None,
        };
    };
    let mut resources: Vec<&Object> = raw.resources.clone();
    let mut seen = std::collections::HashSet::new();
    let mut unreadable = 0;
    for reference in &raw.references {
        if !seen.insert(*reference) {
            context.warn(format!("{what} section lists the same entry twice"));
            continue;
        }
        match context.index.resolve(reference, from, contained) {
            Some(resource) => resources.push(resource),
            None => {
                unreadable += 1;
                context.warn(format!(
                    "{what} section: an entry reference does not resolve"
                ));
            }
        }
    }
    let mut items = Vec::new();
    let mut statements = Vec::new();
    let mut none_known = None;
    let mut no_information = None;
    for resource in resources {
        match read(context, resource) {
            Read::Item(item) => items.push(item),
            Read::NoneKnown {
                general: true,
                text,
                basis,
            } => {
                statements.push(text);
                none_known.get_or_insert(basis);
            }
            Read::NoneKnown { text, .. } => statements.push(text),
            Read::NoInformation(basis) => {
                no_information.get_or_insert(basis);
            }
            Read::Skipped(why) => context.warn(format!("{what} entry left out: {why}")),
            Read::Unreadable(why) => {
                unreadable += 1;
                context.warn(format!("{what} entry unreadable: {why}"));
            }
        }
    }
    let (status, basis) = if !items.is_empty() {
        (SectionStatus::Recorded, "entries".to_owned())
    } else if unreadable > 0 {
        (
            SectionStatus::Unreadable,
            "entries that could not be read".to_owned(),
        )
    } else if let Some(basis) = none_known {
        (SectionStatus::NoneKnown, basis)
    } else if let Some(basis) = no_information {
        (SectionStatus::NotRecorded, basis)
    } else {
        match raw.empty_reason.as_deref() {
            Some("nilknown") => (SectionStatus::NoneKnown, "emptyReason nilknown".into()),
            Some(reason) => (SectionStatus::NotRecorded, format!("emptyReason {reason}")),
            None => (SectionStatus::NotRecorded, "no entries".into()),
        }
    };
    Section {
        status,
        basis,
        title: raw.title.clone(),
        items,
        statements,
        unreadable_entries: unreadable,
        narrative: raw.narrative.clone(),
    }
}

fn composition_sections(composition: &Object) -> Vec<RawSection<'_>> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = composition
        .get("section")
        .and_then(Value::as_array)
        .map(|s| s.iter().rev().collect())
        .unwrap_or_default();
    while let Some(section) = stack.pop() {
        let Some(section) = section.as_object() else {
            continue;
        };
        if let Some(children) = section.get("section").and_then(Value::as_array) {
            stack.extend(children.iter().rev());
        }
        out.push(RawSection {
            title: text(section, "title"),
            code: section
                .get("code")
                .and_then(|c| codings(c).into_iter().find_map(|c| c.code)),
            references: section
                .get("entry")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(|r| r.get("reference")?.as_str())
                        .collect()
                })
                .unwrap_or_default(),
            resources: Vec::new(),
            empty_reason: section
                .get("emptyReason")
                .and_then(|c| codings(c).into_iter().find_map(|c| c.code)),
            narrative: section
                .get("text")
                .and_then(|t| t.get("div"))
                .and_then(Value::as_str)
                .map(narrative::to_text)
                .filter(|t| !t.is_empty()),
        });
    }
    out
}

/// Sections of a bundle without a Composition, from the types of its resources.
fn sections_by_type<'a>(index: &'a Index<'a>) -> Vec<RawSection<'a>> {
    let section = |code: &str, title: &str, resources: Vec<&'a Object>| RawSection {
        title: Some(title.into()),
        code: Some(code.into()),
        references: Vec::new(),
        resources,
        empty_reason: None,
        narrative: None,
    };
    let of = |kinds: &[&str]| -> Vec<&'a Object> {
        index
            .entries
            .iter()
            .filter(|e| {
                e.resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .is_some_and(|k| kinds.contains(&k))
            })
            .map(|e| e.resource)
            .collect()
    };
    let conditions = of(&["Condition"]);
    let (past, current): (Vec<_>, Vec<_>) = conditions.into_iter().partition(|c| {
        matches!(
            status_code(c, "clinicalStatus").as_deref(),
            Some("resolved" | "inactive" | "remission")
        )
    });
    vec![
        section(ALLERGIES, "AllergyIntolerance", of(&["AllergyIntolerance"])),
        section(
            MEDICATIONS,
            "Medication",
            of(&["MedicationStatement", "MedicationRequest"]),
        ),
        section(PROBLEMS, "Condition", current),
        section(PAST_PROBLEMS, "Condition (resolved)", past),
        section(PROCEDURES, "Procedure", of(&["Procedure"])),
        section(IMMUNIZATIONS, "Immunization", of(&["Immunization"])),
    ]
}

fn document_info(
    context: &mut Context,
    composition: &Object,
    from: Option<&str>,
    bundle_type: &str,
) -> DocumentInfo {
    let mut party = |field: &Value| -> Option<String> {
        let reference = field.get("reference").and_then(Value::as_str);
        let resolved = reference.and_then(|r| context.index.resolve(r, from, Some(composition)));
        let name = resolved.and_then(|r| party_name(context.index, r, from));
        name.or_else(|| {
            field
                .get("display")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    };
    let authors: Vec<String> = composition
        .get("author")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(&mut party).collect())
        .unwrap_or_default();
    let custodian = composition.get("custodian").and_then(&mut party);
    if authors.is_empty() {
        context.warn("the document names no readable author".into());
    }
    let date = text(composition, "date");
    if date.is_none() {
        context.warn("the document has no date".into());
    }
    DocumentInfo {
        bundle_type: bundle_type.into(),
        title: text(composition, "title"),
        date,
        timestamp: None,
        authors,
        custodian,
    }
}

/// The name of a Practitioner, Organization, PractitionerRole (its practitioner, else its
/// organisation), Patient or Device.
fn party_name(index: &Index, resource: &Object, from: Option<&str>) -> Option<String> {
    match text(resource, "resourceType")?.as_str() {
        "Organization" => text(resource, "name"),
        "Practitioner" | "Patient" | "RelatedPerson" => human_names(resource).into_iter().next(),
        "PractitionerRole" => ["practitioner", "organization"].iter().find_map(|field| {
            let field = resource.get(*field)?;
            let named = field
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|r| index.resolve(r, from, Some(resource)))
                .filter(|r| text(*r, "resourceType").as_deref() != Some("PractitionerRole"))
                .and_then(|r| party_name(index, r, from));
            named.or_else(|| text(field, "display"))
        }),
        "Device" => resource
            .get("deviceName")
            .and_then(Value::as_array)
            .and_then(|n| n.first())
            .and_then(|n| text(n, "name")),
        _ => None,
    }
}

/// The patient the document describes; several Patient resources must agree.
fn patient(index: &Index) -> Result<Option<DocumentPatient>, SummaryError> {
    let patients: Vec<DocumentPatient> = index
        .of_type("Patient")
        .map(|e| DocumentPatient {
            names: human_names(e.resource),
            birth_date: text(e.resource, "birthDate"),
            gender: text(e.resource, "gender"),
            ins: ins_identifiers(e.resource),
        })
        .collect();
    let Some(first) = patients.first() else {
        return Ok(None);
    };
    let differ =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
    let family =
        |p: &DocumentPatient| -> Vec<String> { p.names.iter().map(|n| n.to_lowercase()).collect() };
    let conflict = patients.iter().skip(1).any(|other| {
        differ(&first.birth_date, &other.birth_date)
            || differ(&first.gender, &other.gender)
            || (!first.ins.is_empty()
                && !other.ins.is_empty()
                && !first.ins.iter().any(|i| other.ins.contains(i)))
            || (!first.names.is_empty()
                && !other.names.is_empty()
                && !family(first).iter().any(|n| family(other).contains(n)))
    });
    if conflict {
        return Err(SummaryError::ConflictingPatients(patients.len()));
    }
    Ok(Some(first.clone()))
}

/// `OID|value` of every INS identifier (NIR, NIA, test, demo OIDs) of a Patient.
pub fn ins_identifiers(resource: &Object) -> Vec<String> {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| {
                    let system = id.get("system")?.as_str()?.trim_start_matches("urn:oid:");
                    let value = id.get("value")?.as_str()?;
                    system
                        .starts_with("1.2.250.1.213.1.4.")
                        .then(|| format!("{system}|{value}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names of a Patient or Practitioner, as written (text, else given names and family).
pub fn human_names(resource: &Object) -> Vec<String> {
    resource
        .get("name")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    text(n, "text").or_else(|| {
                        let given: Vec<&str> = n
                            .get("given")
                            .and_then(Value::as_array)
                            .map(|g| g.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        let family = n.get("family").and_then(Value::as_str);
                        let parts: Vec<&str> = given.into_iter().chain(family).collect();
                        (!parts.is_empty()).then(|| parts.join(" "))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

// ----- entries -----

/// The concept in `field` named, or why the entry yields no item: a negation, or no name.
fn named<T>(r: &Object, field: &str, missing: &str) -> Result<(String, Vec<Code>), Read<T>> {
    let concept = r.get(field);
    if let Some(negation) = concept.and_then(negation) {
        return Err(negation);
    }
    let name = concept
        .and_then(concept_name)
        .ok_or_else(|| Read::Unreadable(missing.to_owned()))?;
    Ok((name, concept.map(codings).unwrap_or_default()))
}

/// Entries that record something that did not happen, or by mistake.
fn not_done<T>(r: &Object) -> Option<Read<T>> {
    matches!(
        text(r, "status").as_deref(),
        Some("entered-in-error" | "not-done")
    )
    .then(|| Read::Skipped("not done or entered in error".into()))
}

fn allergy(_context: &mut Context, r: &Object) -> Read<Allergy> {
    if let Some(read) = expect_type(r, &["AllergyIntolerance"]).or_else(|| skipped_verification(r))
    {
        return read;
    }
    let (substance, codes) = match named(r, "code", "an allergy without a substance") {
        Ok(named) => named,
        Err(read) => return read,
    };
    Read::Item(Allergy {
        substance,
        codes,
        criticality: text(r, "criticality"),
        kind: text(r, "type"),
        categories: strings(r, "category"),
        clinical_status: status_code(r, "clinicalStatus"),
        verification_status: status_code(r, "verificationStatus"),
        reactions: r
            .get("reaction")
            .and_then(Value::as_array)
            .map(|reactions| reactions.iter().filter_map(reaction).collect())
            .unwrap_or_default(),
        onset: when(r, "onset"),
    })
}

fn reaction(reaction: &Value) -> Option<String> {
    let manifestations: Vec<String> = reaction
        .get("manifestation")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(concept_name)
        .collect();
    if manifestations.is_empty() {
        return None;
    }
    let mut text = manifestations.join(", ");
    if let Some(severity) = reaction.get("severity").and_then(Value::as_str) {
        text.push_str(&format!(" ({severity})"));
    }
    Some(text)
}

fn medication(context: &mut Context, r: &Object) -> Read<Medication> {
    if let Some(read) = expect_type(r, &["MedicationStatement", "MedicationRequest"]) {
        return read;
    }
    if matches!(text(r, "status").as_deref(), Some("entered-in-error")) {
        return Read::Skipped("entered in error".into());
    }
    let concept = match (
        r.get("medicationCodeableConcept"),
        r.get("medicationReference"),
    ) {
        (Some(concept), _) => Some(concept),
        (None, Some(reference)) => {
            let target = reference
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|at| {
                    let from = context.index.full_url_of(r);
                    context.index.resolve(at, from, Some(r))
                });
            match target.and_then(|m| m.get("code")) {
                Some(code) => Some(code),
                None => {
                    return match reference.get("display").and_then(Value::as_str) {
                        Some(display) => Read::Item(medication_item(r, display.into(), Vec::new())),
                        None => {
                            Read::Unreadable("a medication reference that does not resolve".into())
                        }
                    };
                }
            }
        }
        (None, None) => None,
    };
    if let Some(negation) = concept.and_then(negation) {
        return negation;
    }
    let Some(name) = concept.and_then(concept_name) else {
        return Read::Unreadable("a medication without a product".into());
    };
    Read::Item(medication_item(
        r,
        name,
        concept.map(codings).unwrap_or_default(),
    ))
}

fn medication_item(r: &Object, name: String, codes: Vec<Code>) -> Medication {
    let dosages = r
        .get("dosage")
        .or_else(|| r.get("dosageInstruction"))
        .and_then(Value::as_array);
    Medication {
        name,
        codes,
        dosage: dosages
            .map(|d| d.iter().filter_map(dosage).collect())
            .unwrap_or_default(),
        status: text(r, "status"),
        source: text(r, "resourceType").unwrap_or_default(),
        period: when(r, "effective").or_else(|| text(r, "authoredOn")),
    }
}

fn dosage(dosage: &Value) -> Option<String> {
    if let Some(text) = dosage.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let dose = dosage
        .get("doseAndRate")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|d| d.get("doseQuantity"))
        .and_then(quantity);
    let repeat = dosage.get("timing").and_then(|t| t.get("repeat"));
    let frequency = repeat.and_then(|r| {
        let count = r.get("frequency").and_then(Value::as_u64).unwrap_or(1);
        let period = r.get("period").and_then(Value::as_f64)?;
        let unit = r.get("periodUnit").and_then(Value::as_str)?;
        Some(format!("{count} per {period} {unit}"))
    });
    let parts: Vec<String> = dose.into_iter().chain(frequency).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn problem(_context: &mut Context, r: &Object) -> Read<Problem> {
    if let Some(read) = expect_type(r, &["Condition"]).or_else(|| skipped_verification(r)) {
        return read;
    }
    let (name, codes) = match named(r, "code", "a problem without a description") {
        Ok(named) => named,
        Err(read) => return read,
    };
    Read::Item(Problem {
        name,
        codes,
        clinical_status: status_code(r, "clinicalStatus"),
        verification_status: status_code(r, "verificationStatus"),
        onset: when(r, "onset"),
        abatement: when(r, "abatement"),
    })
}

fn procedure(_context: &mut Context, r: &Object) -> Read<Procedure> {
    if let Some(read) = expect_type(r, &["Procedure"]).or_else(|| not_done(r)) {
        return read;
    }
    let (name, codes) = match named(r, "code", "a procedure without a description") {
        Ok(named) => named,
        Err(read) => return read,
    };
    Read::Item(Procedure {
        name,
        codes,
        status: text(r, "status"),
        performed: when(r, "performed"),
    })
}

fn immunization(_context: &mut Context, r: &Object) -> Read<Immunization> {
    if let Some(read) = expect_type(r, &["Immunization"]).or_else(|| not_done(r)) {
        return read;
    }
    let (vaccine, codes) = match named(r, "vaccineCode", "an immunization without a vaccine") {
        Ok(named) => named,
        Err(read) => return read,
    };
    Read::Item(Immunization {
        vaccine,
        codes,
        status: text(r, "status"),
        date: when(r, "occurrence"),
    })
}

fn device(context: &mut Context, r: &Object) -> Read<Device> {
    if let Some(read) = expect_type(r, &["DeviceUseStatement", "Device"]) {
        return read;
    }
    let device = if text(r, "resourceType").as_deref() == Some("Device") {
        Some(r)
    } else {
        r.get("device")
            .and_then(|d| d.get("reference"))
            .and_then(Value::as_str)
            .and_then(|at| {
                context
                    .index
                    .resolve(at, context.index.full_url_of(r), Some(r))
            })
    };
    let Some(device) = device else {
        return Read::Unreadable("a device reference that does not resolve".into());
    };
    let concept = device.get("type");
    if let Some(negation) = concept.and_then(negation) {
        return negation;
    }
    let name = party_name(context.index, device, None).or_else(|| concept.and_then(concept_name));
    match name {
        Some(name) => Read::Item(Device {
            name,
            codes: concept.map(codings).unwrap_or_default(),
        }),
        None => Read::Unreadable("a device without a name or type".into()),
    }
}

fn observation(_context: &mut Context, r: &Object) -> Read<Observation> {
    if let Some(read) = expect_type(r, &["Observation"]) {
        return read;
    }
    let Some(name) = r.get("code").and_then(concept_name) else {
        return Read::Unreadable("an observation without a code".into());
    };
    let value = r
        .get("valueCodeableConcept")
        .and_then(concept_name)
        .or_else(|| r.get("valueQuantity").and_then(quantity))
        .or_else(|| text(r, "valueString"))
        .or_else(|| {
            r.get("valueBoolean")
                .and_then(Value::as_bool)
                .map(|b| b.to_string())
        })
        .or_else(|| text(r, "valueDateTime"));
    Read::Item(Observation {
        name,
        value,
        date: when(r, "effective"),
    })
}

// ----- helpers -----

fn expect_type<T>(r: &Object, kinds: &[&str]) -> Option<Read<T>> {
    let kind = text(r, "resourceType").unwrap_or_default();
    (!kinds.contains(&kind.as_str())).then(|| {
        Read::Unreadable(format!(
            "a {} where {} was expected",
            kind.chars()
                .take(40)
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>(),
            kinds.join(" or ")
        ))
    })
}

/// Refuted and entered-in-error entries are not facts about the patient.
fn skipped_verification<T>(r: &Object) -> Option<Read<T>> {
    match status_code(r, "verificationStatus").as_deref() {
        Some(status @ ("refuted" | "entered-in-error")) => {
            Some(Read::Skipped(format!("verification status {status}")))
        }
        _ => None,
    }
}

/// "No known …" and "no information about …" codes and phrases.
fn negation<T>(concept: &Value) -> Option<Read<T>> {
    let codes = codings(concept);
    for coding in &codes {
        let (Some(system), Some(code)) = (coding.system.as_deref(), coding.code.as_deref()) else {
            continue;
        };
        let label = || {
            coding
                .display
                .clone()
                .unwrap_or_else(|| code.replace('-', " ").replacen("no", "No", 1))
        };
        if system == IPS_ABSENT {
            if code.starts_with("no-") && code.ends_with("-info") {
                return Some(Read::NoInformation(format!("IPS {code}")));
            }
            if let Some(what) = code.strip_prefix("no-known-") {
                let general = matches!(
                    what,
                    "allergies"
                        | "medications"
                        | "problems"
                        | "procedures"
                        | "immunizations"
                        | "devices"
                );
                return Some(Read::NoneKnown {
                    general,
                    text: label(),
                    basis: format!("IPS {code}"),
                });
            }
        }
        if system == SNOMED {
            let general = match code {
                "716186003" | "160245001" | "787481004" => true,
                "409137002" | "429625007" | "428607008" | "1003774007" | "1003776009" => false,
                _ => continue,
            };
            return Some(Read::NoneKnown {
                general,
                text: label(),
                basis: format!("SNOMED CT {code}"),
            });
        }
    }
    if !codes.iter().any(|c| c.code.is_some()) {
        let phrase = concept
            .get("text")
            .and_then(Value::as_str)?
            .trim()
            .to_lowercase();
        let general = match phrase.as_str() {
            "no known allergies"
            | "no known allergy"
            | "aucune allergie connue"
            | "no known current medications"
            | "no known medications"
            | "aucun traitement en cours"
            | "no known current problems or disability"
            | "no known problems"
            | "aucun antécédent connu" => true,
            "no known drug allergies" | "nkda" | "no known food allergies" => false,
            _ => return None,
        };
        return Some(Read::NoneKnown {
            general,
            text: concept.get("text")?.as_str()?.trim().to_owned(),
            basis: "free text".into(),
        });
    }
    None
}

fn codings(concept: &Value) -> Vec<Code> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .map(|codings| {
            codings
                .iter()
                .map(|c| Code {
                    system: text(c, "system"),
                    code: text(c, "code"),
                    display: text(c, "display"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The words for a concept: its text, else a coding's display, else a system and code.
fn concept_name(concept: &Value) -> Option<String> {
    if let Some(text) = text(concept, "text").filter(|t| !t.trim().is_empty()) {
        return Some(text);
    }
    let codes = codings(concept);
    codes
        .iter()
        .find_map(|c| c.display.clone().filter(|d| !d.trim().is_empty()))
        .or_else(|| {
            codes.iter().find_map(|c| {
                let code = c.code.as_ref()?;
                Some(match &c.system {
                    Some(system) => format!("{system} {code}"),
                    None => code.clone(),
                })
            })
        })
}

/// `clinicalStatus` / `verificationStatus` code.
fn status_code(r: &Object, field: &str) -> Option<String> {
    r.get(field)
        .and_then(|c| codings(c).into_iter().find_map(|c| c.code))
}

/// A choice element `stem[x]` of time as text: dateTime, string, period, age, range.
fn when(r: &Object, stem: &str) -> Option<String> {
    let at = |suffix: &str| r.get(&format!("{stem}{suffix}"));
    if let Some(text) = at("DateTime")
        .or_else(|| at("String"))
        .or_else(|| at("Instant"))
        .and_then(Value::as_str)
    {
        return Some(text.to_owned());
    }
    if let Some(period) = at("Period") {
        let start = text(period, "start");
        let end = text(period, "end");
        return match (start, end) {
            (Some(s), Some(e)) => Some(format!("{s} – {e}")),
            (Some(s), None) => Some(format!("{s} –")),
            (None, Some(e)) => Some(format!("– {e}")),
            (None, None) => None,
        };
    }
    if let Some(age) = at("Age") {
        return quantity(age).map(|a| format!("age {a}"));
    }
    at("Range").map(|range| {
        let low = range.get("low").and_then(quantity);
        let high = range.get("high").and_then(quantity);
        format!("{} – {}", low.unwrap_or_default(), high.unwrap_or_default())
    })
}

fn quantity(q: &Value) -> Option<String> {
    let value = q.get("value")?;
    let unit = text(q, "unit").or_else(|| text(q, "code"));
    Some(match unit {
        Some(unit) => format!("{value} {unit}"),
        None => value.to_string(),
    })
}

fn text(value: &impl Get, field: &str) -> Option<String> {
    value
        .field(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn strings(r: &Object, field: &str) -> Vec<String> {
    r.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Field access on both JSON objects and values.
trait Get {
    fn field(&self, name: &str) -> Option<&Value>;
}

impl Get for Object {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

impl Get for Value {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}
