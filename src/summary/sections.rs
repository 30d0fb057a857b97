//! From a validated Bundle to the typed sections of the critical summary.
//!
//! Each section is gathered (its entry references resolved, every claimant of a shared
//! identity kept, entries about another person left out), then judged (each entry read,
//! the status following the honesty rules of `docs/summary.md`).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::bundle::{Index, MAX_ENTRIES, Target};
use super::subject::{self, Subject, Whose};
use super::{
    Allergy, Code, CriticalSummary, Device, DocumentDefects, DocumentInfo, DocumentPatient,
    Immunization, Medication, Observation, OtherSection, Problem, Procedure, Section,
    SectionStatus, SummaryError, narrative, validate,
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
const MODELLED: [&str; 8] = [
    ALLERGIES,
    MEDICATIONS,
    PROBLEMS,
    PAST_PROBLEMS,
    PROCEDURES,
    IMMUNIZATIONS,
    DEVICES,
    PREGNANCY,
];

const LOINC: &str = "http://loinc.org";
/// The status of a medication order not to give its product (`doNotPerform`).
const DO_NOT_PERFORM: &str = "do-not-perform";
const IPS_ABSENT: &str = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips";
const SNOMED: &str = "http://snomed.info/sct";
/// Most resources one reference may name in an item (several claiming one identity): a
/// hostile bundle where thousands claim the product of thousands of statements would
/// otherwise have each statement copy every claimant's names and codes. Past it the entry
/// is unreadable (a product or device) or its names are cut (an author).
const MAX_CLAIMANTS: usize = 16;
/// Most warnings listed; the rest are counted.
const MAX_WARNINGS: usize = 50;

/// A section as the Composition lists it.
struct RawSection<'a> {
    title: Option<String>,
    code: Option<String>,
    references: Vec<&'a str>,
    /// Entries the section lists without a reference the document can resolve (an
    /// identifier or a display only, a reference that is not text, an `entry` that is not
    /// a list): unreadable, never passed over.
    unusable: usize,
    /// Resources found directly (search sets without a Composition).
    resources: Vec<&'a Object>,
    /// Why the section (or each of the same-coded sections read with it) is empty: every
    /// distinct reason, so that "none known" in one and "unavailable" in another both
    /// count (`judge`); a few at most.
    empty_reasons: Vec<String>,
    narrative: Option<String>,
    /// The narrative was cut at the bound.
    narrative_cut: bool,
    /// The narrative held a declaration (DOCTYPE, ENTITY).
    declaration: bool,
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
    NoInformation {
        text: String,
        basis: String,
    },
    /// Deliberately left out (refuted, entered in error), with why.
    Skipped(String),
    /// Not readable as this section's item.
    Unreadable(String),
}

struct Context<'a> {
    index: &'a Index<'a>,
    subject: Subject<'a>,
    /// The first [`MAX_WARNINGS`] warnings; the others are only counted (`unlisted`), so a
    /// hostile document's millions of defects never sit in memory as text.
    warnings: Vec<String>,
    unlisted_warnings: usize,
    defects: DocumentDefects,
    /// References inside entries (a statement's medication, a device) that several
    /// different resources claim; the section being read adds them to its own count.
    ambiguous: usize,
}

impl Context<'_> {
    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.unlisted_warnings = self.unlisted_warnings.saturating_add(1);
        }
    }
}

pub(super) fn from_bundle(root: &Object) -> Result<CriticalSummary, SummaryError> {
    let bundle_type = text(root, "type").unwrap_or_default();
    if bundle_type != "document" && bundle_type != "searchset" {
        return Err(SummaryError::NotABundle(format!(
            "Bundle.type is '{}', a summary is a 'document' (or a 'searchset')",
            crate::encoding::peer_token(&bundle_type, 32, "", None)
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
    let mut compositions = index.of_type("Composition");
    let composition = compositions.next();
    let extra_compositions = compositions.count();
    let found = subject::find(&index, composition)?;
    let mut context = Context {
        index: &index,
        subject: found.subject,
        warnings: Vec::new(),
        unlisted_warnings: 0,
        defects: DocumentDefects::default(),
        ambiguous: 0,
    };
    if let Some(remark) = found.remark {
        context.warn(remark.into());
    }
    if extra_compositions > 0 {
        context.warn(format!(
            "the bundle holds {} Compositions: sections are read from the first; allergies listed only in the others are shown as not listed in their section",
            extra_compositions + 1
        ));
    }
    check_entries(&mut context);
    let (document, raw) = match composition {
        Some(composition) => {
            let document = document_info(
                &mut context,
                composition.resource,
                composition.full_url,
                &bundle_type,
            );
            check_section_lists(&mut context, composition.resource);
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
                    format: "fhir".into(),
                    template: Some("IPS".into()),
                    type_code: None,
                    title: None,
                    date: None,
                    timestamp: None,
                    authors: Vec::new(),
                    custodian: None,
                },
                sections_by_type(&index),
            )
        }
    };
    let mut document = document;
    document.timestamp = text(root, "timestamp");
    let declarations = raw.iter().filter(|s| s.declaration).count();
    if declarations > 0 {
        context.defects.narrative_declarations += declarations;
        context.warn(format!(
            "{declarations} section narratives hold a DOCTYPE or entity declaration (ignored)"
        ));
    }
    let from = composition.and_then(|c| c.full_url);
    let contained = composition.map(|c| c.resource);
    let mut summary = assemble(&mut context, raw, from, contained, document, found.patient);
    if bundle_type == "searchset" && has_next_page(root) {
        distrust_absences(&mut summary);
        context.defects.unread_pages = 1;
        context.warn(
            "the search set has further pages, which were not read: the summary may be partial, and no section says there is none"
                .into(),
        );
    }
    if context.unlisted_warnings > 0 {
        let more = context.unlisted_warnings;
        context.warnings.push(format!("… and {more} more warnings"));
    }
    summary.warnings = context.warnings;
    summary.defects = context.defects;
    Ok(summary)
}

/// Whether a search set says it continues (`link` with relation `next`).
fn has_next_page(root: &Object) -> bool {
    root.get("link")
        .and_then(Value::as_array)
        .is_some_and(|links| {
            links
                .iter()
                .any(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        })
}

/// A statement that there is none, read from one page of several, may be contradicted by
/// an entry on a page not read: no section is left saying "none known" (its statements
/// are still shown).
fn distrust_absences(summary: &mut CriticalSummary) {
    fn distrust<T>(section: &mut Section<T>) {
        if section.status == SectionStatus::NoneKnown {
            section.status = SectionStatus::NotRecorded;
            section.basis = "a statement of absence on one page of a search set".into();
        }
    }
    distrust(&mut summary.allergies);
    distrust(&mut summary.medications);
    distrust(&mut summary.problems);
    distrust(&mut summary.past_problems);
    distrust(&mut summary.procedures);
    for section in [
        summary.pregnancy.as_mut(),
        summary.advance_directives.as_mut(),
        summary.vigilance.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        distrust(section);
    }
    if let Some(section) = summary.immunizations.as_mut() {
        distrust(section);
    }
    if let Some(section) = summary.devices.as_mut() {
        distrust(section);
    }
    if let Some(section) = summary.dispensations.as_mut() {
        distrust(section);
    }
}

/// Entry-level defects, counted and described: structure, attachments, names holding
/// markup, narratives holding declarations, entries claiming another's identity.
fn check_entries(context: &mut Context) {
    let index = context.index;
    if index.duplicates > 0 {
        context.defects.duplicate_entries = index.duplicates;
        context.warn(format!(
            "{} entries claim the identity (fullUrl, or type and id) of another entry: every claimant is considered",
            index.duplicates
        ));
    }
    for (at, entry) in index.entries.iter().enumerate() {
        let findings = validate::resource(entry.resource);
        if !findings.is_empty() {
            context.defects.invalid_entries += 1;
        }
        for finding in findings {
            context.warn(format!("entry {at}: {finding}"));
        }
        for finding in validate::attachments(entry.resource) {
            context.defects.bad_attachments += 1;
            context.warn(format!("entry {at}: {finding}"));
        }
        // The type as the document wrote it may be anything: only its ASCII letters and
        // digits reach a warning.
        let kind = super::validate_name(&text(entry.resource, "resourceType").unwrap_or_default());
        if matches!(kind.as_str(), "Patient" | "Practitioner" | "RelatedPerson") {
            let marked = subject::names_with_markup(entry.resource);
            if marked > 0 {
                context.defects.names_with_markup += marked;
                context.warn(format!(
                    "entry {at}: {kind}.name holds markup (shown as text)"
                ));
            }
        }
        let declares = entry
            .resource
            .get("text")
            .and_then(|t| t.get("div"))
            .and_then(Value::as_str)
            .is_some_and(narrative::has_declaration);
        if declares {
            context.defects.narrative_declarations += 1;
            context.warn(format!(
                "entry {at}: {kind}.text holds a DOCTYPE or entity declaration (ignored)"
            ));
        }
    }
}

/// Sections the Composition holds in a form that cannot be read: a `section` that is not
/// a list (some serialisers write a lone section as an object), the Composition's or a
/// section's own, and a section that is not an object. What they hold is not read, and
/// without a word the medications would show as "not recorded" with no defect
/// signalled. Never read as a one-element list either: the document is malformed, and a
/// guess at what its author meant is no reading of it. Counted with the unreadable
/// entries (as an `entry` that is not a list is) and described, so that the page shows
/// the summary as partial.
fn check_section_lists(context: &mut Context, composition: &Object) {
    let mut unreadable = 0usize;
    let mut holders = vec![composition];
    while let Some(holder) = holders.pop() {
        match holder.get("section") {
            None => {}
            Some(Value::Array(sections)) => {
                for section in sections {
                    match section.as_object() {
                        Some(section) => holders.push(section),
                        None => unreadable += 1,
                    }
                }
            }
            Some(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        context.defects.unreadable_entries += unreadable;
        context.warn(format!(
            "{unreadable} Composition sections cannot be read ('section' not a list, or a section not an object): what they hold is not shown"
        ));
    }
}

fn assemble<'a>(
    context: &mut Context<'a>,
    raw: Vec<RawSection<'a>>,
    from: Option<&'a str>,
    contained: Option<&'a Object>,
    document: DocumentInfo,
    patient_in_document: Option<DocumentPatient>,
) -> CriticalSummary {
    let [
        allergy_raw,
        medication_raw,
        problem_raw,
        past_raw,
        procedure_raw,
        immunization_raw,
        device_raw,
        pregnancy_raw,
    ] = MODELLED.map(|code| merge(context, &raw, code));
    let allergies = allergy_section(context, allergy_raw.as_ref(), from, contained);
    let medications = section(
        context,
        medication_raw.as_ref(),
        from,
        contained,
        "Medication",
        medication,
    );
    let problems = section(
        context,
        problem_raw.as_ref(),
        from,
        contained,
        "Condition",
        problem,
    );
    let past_problems = section(
        context,
        past_raw.as_ref(),
        from,
        contained,
        "Condition",
        problem,
    );
    let procedures = section(
        context,
        procedure_raw.as_ref(),
        from,
        contained,
        "Procedure",
        procedure,
    );
    let immunizations = immunization_raw.as_ref().map(|s| {
        section(
            context,
            Some(s),
            from,
            contained,
            "Immunization",
            immunization,
        )
    });
    let devices = device_raw
        .as_ref()
        .map(|s| section(context, Some(s), from, contained, "Device", device));
    let pregnancy = pregnancy_raw.as_ref().map(|s| {
        section(
            context,
            Some(s),
            from,
            contained,
            "Observation",
            observation,
        )
    });
    let other_sections = raw
        .iter()
        .filter(|s| !s.code.as_deref().is_some_and(|c| MODELLED.contains(&c)))
        .map(|s| OtherSection {
            title: s.title.clone(),
            code: s.code.clone(),
            entries: s.references.len() + s.resources.len() + s.unusable,
            narrative: s.narrative.clone(),
            narrative_cut: s.narrative_cut,
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
        advance_directives: None,
        vigilance: None,
        dispensations: None,
        unstructured: None,
        other_sections,
        documents: Vec::new(),
        provenance: Vec::new(),
        defects: DocumentDefects::default(),
        warnings: Vec::new(),
        notices: Vec::new(),
    }
}

/// The distinct empty reasons kept for the sections of one code: "nilknown" and any
/// other are all `judge` tells apart; a hostile document's thousands are not kept.
const MAX_EMPTY_REASONS: usize = 4;

/// The sections coded `code`, read together: a document listing allergies in two
/// sections of the same code has them all shown.
fn merge<'a>(context: &mut Context, raw: &[RawSection<'a>], code: &str) -> Option<RawSection<'a>> {
    let mut same = raw.iter().filter(|s| s.code.as_deref() == Some(code));
    let first = same.next()?;
    let mut merged = RawSection {
        title: first.title.clone(),
        code: first.code.clone(),
        references: first.references.clone(),
        unusable: first.unusable,
        resources: first.resources.clone(),
        empty_reasons: first.empty_reasons.clone(),
        narrative: first.narrative.clone(),
        narrative_cut: first.narrative_cut,
        declaration: first.declaration,
    };
    let mut count = 1;
    for more in same {
        count += 1;
        merged.references.extend(&more.references);
        merged.unusable += more.unusable;
        merged.resources.extend(&more.resources);
        for reason in &more.empty_reasons {
            // "nilknown" always: it is the one that must meet the others.
            let room = merged.empty_reasons.len() < MAX_EMPTY_REASONS || reason == "nilknown";
            if room && !merged.empty_reasons.contains(reason) {
                merged.empty_reasons.push(reason.clone());
            }
        }
        merged.narrative_cut |= more.narrative_cut;
        // Appended in place: copying what is held for each section would be quadratic.
        match (&mut merged.narrative, &more.narrative) {
            (Some(held), Some(text)) => {
                held.push('\n');
                held.push_str(text);
            }
            (held @ None, text) => held.clone_from(text),
            (Some(_), None) => {}
        }
    }
    if count > 1 {
        context.warn(format!(
            "the document holds {count} sections coded {code}: read together"
        ));
    }
    Some(merged)
}

/// What a section's entries resolve to, before reading.
#[derive(Default)]
struct Gathered<'a> {
    /// Resources to read, in document order, each once.
    resources: Vec<&'a Object>,
    /// Every resource the section reaches, the other person's included.
    reached: HashSet<*const Object>,
    unreadable: usize,
    duplicates: usize,
    other_person: usize,
}

impl<'a> Gathered<'a> {
    /// Adds `resource` unless already there or about someone else.
    fn consider(&mut self, context: &mut Context, resource: &'a Object, what: &str) {
        if !self.reached.insert(std::ptr::from_ref(resource)) {
            return;
        }
        match context.subject.whose(context.index, resource) {
            Whose::Other => {
                self.other_person += 1;
                context.warn(format!(
                    "{what} entry about another person than the document's subject: left out"
                ));
            }
            Whose::Unknown => {
                context.warn(format!(
                    "{what} entry whose subject reference resolves to nothing: taken as the patient's"
                ));
                self.resources.push(resource);
            }
            Whose::Subject => self.resources.push(resource),
        }
    }
}

/// Resolves a section's entries; never picks among claimants of one identity.
fn gather<'a>(
    context: &mut Context<'a>,
    raw: &RawSection<'a>,
    from: Option<&'a str>,
    contained: Option<&'a Object>,
    what: &str,
) -> Gathered<'a> {
    let mut gathered = Gathered::default();
    for resource in &raw.resources {
        gathered.consider(context, resource, what);
    }
    if raw.unusable > 0 {
        gathered.unreadable += raw.unusable;
        context.warn(format!(
            "{what} section: {} entries without a reference to a resource of the document (an identifier or a display only, or not a reference)",
            raw.unusable
        ));
    }
    let mut seen = HashSet::new();
    // Claimant lists already read, by address (the index hands out one shared list per
    // identity): references written differently (`1/AllergyIntolerance/x`,
    // `2/AllergyIntolerance/x`…) may mean the same claimants, and reading them again for
    // each would be claimants times references. References are not bounded by the entry
    // limit. A later one is the same entry listed again (warnings past the first
    // `MAX_WARNINGS` are only counted).
    let mut read_lists: HashSet<*const ()> = HashSet::new();
    for reference in &raw.references {
        if !seen.insert(*reference) {
            context.warn(format!("{what} section lists the same entry twice"));
            continue;
        }
        match context.index.resolve(reference, from, contained) {
            Target::Found(resource) => gathered.consider(context, resource, what),
            Target::Ambiguous(all) => {
                if !read_lists.insert(all.as_ptr().cast::<()>()) {
                    context.warn(format!("{what} section lists the same entry twice"));
                    continue;
                }
                gathered.duplicates += 1;
                context.warn(format!(
                    "{what} section: {} different resources claim one entry reference: all are shown",
                    all.len()
                ));
                for &resource in all.iter() {
                    gathered.consider(context, resource, what);
                }
            }
            Target::VersionMissing => {
                gathered.unreadable += 1;
                context.warn(format!(
                    "{what} section: an entry reference names a version the document does not hold"
                ));
            }
            Target::Missing => {
                gathered.unreadable += 1;
                context.warn(format!(
                    "{what} section: an entry reference does not resolve"
                ));
            }
        }
    }
    gathered
}

/// The allergy section, with every allergy of the subject the document holds: those the
/// section does not list are shown apart, never dropped.
fn allergy_section<'a>(
    context: &mut Context<'a>,
    raw: Option<&RawSection<'a>>,
    from: Option<&'a str>,
    contained: Option<&'a Object>,
) -> Section<Allergy> {
    let what = "AllergyIntolerance";
    let mut gathered = raw
        .map(|r| gather(context, r, from, contained, what))
        .unwrap_or_default();
    // An allergy the section lists stands for its copies and its earlier versions (its
    // history), and for nothing else: an allergy of another identity, or a later version
    // than the one listed, is shown apart. Copies are told by their serialisation.
    let mut listed: HashMap<_, (HashSet<String>, Option<u64>)> = HashMap::new();
    for entry in context.index.of_type(what) {
        if let (true, Some(identity)) = (
            gathered
                .reached
                .contains(&std::ptr::from_ref(entry.resource)),
            entry.identity(),
        ) {
            let (copies, latest) = listed.entry(identity).or_default();
            copies.insert(serde_json::to_string(entry.resource).unwrap_or_default());
            *latest = (*latest).max(entry.version_number());
        }
    }
    let mut unlisted = Vec::new();
    for entry in context.index.of_type(what) {
        if gathered
            .reached
            .contains(&std::ptr::from_ref(entry.resource))
        {
            continue;
        }
        let history = entry
            .identity()
            .and_then(|identity| listed.get(&identity))
            .is_some_and(|(copies, latest)| {
                let earlier = entry
                    .version_number()
                    .zip(*latest)
                    .is_some_and(|(version, latest)| version < latest);
                earlier
                    || copies.contains(&serde_json::to_string(entry.resource).unwrap_or_default())
            });
        if history {
            continue;
        }
        match context.subject.whose(context.index, entry.resource) {
            Whose::Other => {
                gathered.other_person += 1;
                context.warn(format!(
                    "{what} entry about another person than the document's subject, not listed in the section: left out"
                ));
            }
            _ => unlisted.push(entry.resource),
        }
    }
    if !unlisted.is_empty() {
        context.warn(format!(
            "{} AllergyIntolerance entries are not listed in the allergy section: shown apart",
            unlisted.len()
        ));
    }
    judge(context, raw, gathered, &unlisted, what, allergy)
}

/// Gathers and judges a section that shows only what it lists.
fn section<'a, T>(
    context: &mut Context<'a>,
    raw: Option<&RawSection<'a>>,
    from: Option<&'a str>,
    contained: Option<&'a Object>,
    what: &str,
    read: fn(&mut Context, &Object) -> Read<T>,
) -> Section<T> {
    let gathered = raw
        .map(|r| gather(context, r, from, contained, what))
        .unwrap_or_default();
    judge(context, raw, gathered, &[], what, read)
}

/// Reads gathered entries with `read`; the status follows the module's honesty rules.
fn judge<T>(
    context: &mut Context,
    raw: Option<&RawSection>,
    gathered: Gathered,
    unlisted: &[&Object],
    what: &str,
    read: fn(&mut Context, &Object) -> Read<T>,
) -> Section<T> {
    let ambiguous_before = context.ambiguous;
    let mut items = Vec::new();
    let mut unlisted_items = Vec::new();
    let mut statements = Vec::new();
    let mut none_known = None;
    let mut no_information = None;
    let mut unreadable = gathered.unreadable;
    for resource in gathered.resources {
        match read(context, resource) {
            Read::Item(item) => items.push(item),
            Read::NoneKnown {
                general,
                text,
                basis,
            } => {
                statements.push(text);
                if general {
                    none_known.get_or_insert(basis);
                }
            }
            Read::NoInformation { text, basis } => {
                statements.push(text);
                no_information.get_or_insert(basis);
            }
            Read::Skipped(why) => context.warn(format!("{what} entry left out: {why}")),
            Read::Unreadable(why) => {
                unreadable += 1;
                context.warn(format!("{what} entry unreadable: {why}"));
            }
        }
    }
    for resource in unlisted {
        match read(context, resource) {
            Read::Item(item) => unlisted_items.push(item),
            Read::Unreadable(why) => {
                unreadable += 1;
                context.warn(format!(
                    "{what} entry not listed in the section, unreadable: {why}"
                ));
            }
            Read::Skipped(why) => context.warn(format!("{what} entry left out: {why}")),
            Read::NoneKnown { .. } | Read::NoInformation { .. } => context.warn(format!(
                "{what} statement not listed in the section: not taken into account"
            )),
        }
    }
    for reason in raw.map_or(&[][..], |r| r.empty_reasons.as_slice()) {
        if reason == "nilknown" {
            none_known.get_or_insert_with(|| "emptyReason nilknown".to_owned());
        } else {
            no_information.get_or_insert_with(|| format!("emptyReason {reason}"));
        }
    }
    let listed_items = !items.is_empty();
    let any_items = listed_items || !unlisted_items.is_empty();
    let statuses: Vec<String> = none_known.iter().chain(&no_information).cloned().collect();
    let (status, basis) = if any_items && !statuses.is_empty() || statuses.len() == 2 {
        let mut said = statuses;
        if any_items {
            said.insert(0, "entries".into());
        }
        (SectionStatus::Conflicting, said.join(" and "))
    } else if any_items {
        let basis = if listed_items {
            "entries"
        } else {
            "entries not listed in the section"
        };
        (SectionStatus::Recorded, basis.to_owned())
    } else if unreadable > 0 {
        (
            SectionStatus::Unreadable,
            "entries that could not be read".to_owned(),
        )
    } else if let Some(basis) = none_known.as_ref().filter(|_| gathered.other_person > 0) {
        // Entries were left out as another person's: if that judgement was wrong, they
        // are this patient's, and "none known" would hide them.
        (
            SectionStatus::Conflicting,
            format!("{basis} and entries left out as another person's"),
        )
    } else if let Some(basis) = none_known {
        (SectionStatus::NoneKnown, basis)
    } else if let Some(basis) = no_information {
        (SectionStatus::NotRecorded, basis)
    } else if raw.is_some() {
        (SectionStatus::NotRecorded, "no entries".to_owned())
    } else {
        (SectionStatus::NotRecorded, "section absent".to_owned())
    };
    if status == SectionStatus::Conflicting {
        context.warn(format!("{what} section contradicts itself: {basis}"));
    }
    let duplicates = gathered.duplicates + (context.ambiguous - ambiguous_before);
    context.defects.unreadable_entries += unreadable;
    context.defects.other_person_entries += gathered.other_person;
    Section {
        status,
        basis,
        title: raw.and_then(|r| r.title.clone()),
        items,
        unlisted_items,
        statements,
        unreadable_entries: unreadable,
        duplicate_entries: duplicates,
        other_person_entries: gathered.other_person,
        narrative: raw.and_then(|r| r.narrative.clone()),
        narrative_cut: raw.is_some_and(|r| r.narrative_cut),
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
        let narrative = section
            .get("text")
            .and_then(|t| t.get("div"))
            .and_then(Value::as_str)
            .map(narrative::read);
        let (references, unusable) = match section.get("entry") {
            None => (Vec::new(), 0),
            Some(Value::Array(entries)) => {
                let references: Vec<&str> = entries
                    .iter()
                    .filter_map(|r| r.get("reference")?.as_str())
                    .collect();
                let unusable = entries.len() - references.len();
                (references, unusable)
            }
            Some(_) => (Vec::new(), 1),
        };
        out.push(RawSection {
            title: text(section, "title"),
            code: section.get("code").and_then(section_code),
            references,
            unusable,
            resources: Vec::new(),
            empty_reasons: section
                .get("emptyReason")
                .and_then(|c| codings(c).into_iter().find_map(|c| c.code))
                .into_iter()
                .collect(),
            narrative: narrative
                .as_ref()
                .map(|n| n.text.clone())
                .filter(|t| !t.is_empty()),
            narrative_cut: narrative.as_ref().is_some_and(|n| n.cut),
            declaration: narrative.is_some_and(|n| n.declaration),
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
        unusable: 0,
        resources,
        empty_reasons: Vec::new(),
        narrative: None,
        narrative_cut: false,
        declaration: false,
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
    let index = context.index;
    let party = |field: &Value| -> Option<String> {
        let reference = field.get("reference").and_then(Value::as_str);
        let named = reference
            .and_then(|r| names_of(index, &index.resolve(r, from, Some(composition)), from));
        named.or_else(|| text(field, "display"))
    };
    let authors: Vec<String> = composition
        .get("author")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(party).collect())
        .unwrap_or_default();
    let custodian = composition.get("custodian").and_then(party);
    if authors.is_empty() {
        context.warn("the document names no readable author".into());
    }
    // A date that is not a FHIR dateTime is never passed on as one: the page would read
    // "01/02/2024" as 2 January. The document is then undated (its defect is counted with
    // the entry's, by `check_entries`); the bundle's timestamp, when it was assembled, is
    // no stand-in.
    let written = composition.get("date");
    let date = written
        .and_then(Value::as_str)
        .filter(|d| validate::is_date_time(d))
        .map(str::to_owned);
    if written.is_none() {
        context.warn("the document has no date".into());
    } else if date.is_none() {
        context.warn(
            "the document's date (Composition.date) is not a FHIR dateTime: not shown".into(),
        );
    }
    DocumentInfo {
        bundle_type: bundle_type.into(),
        format: "fhir".into(),
        template: Some("IPS".into()),
        type_code: composition
            .get("type")
            .map(codings)
            .and_then(|c| c.into_iter().next()),
        title: text(composition, "title"),
        date,
        timestamp: None,
        authors,
        custodian,
    }
}

/// The names of every resource a reference may mean (several, " / "-joined, when the
/// document is defective: none is picked).
fn names_of(index: &Index, target: &Target, from: Option<&str>) -> Option<String> {
    joined_names(
        target.candidates().len(),
        target
            .candidates()
            .iter()
            .filter_map(|r| party_name(index, r, from)),
    )
}

/// The first [`MAX_CLAIMANTS`] of `names` (of `claimants` resources), joined; "…" says
/// some were left out.
fn joined_names(claimants: usize, names: impl Iterator<Item = String>) -> Option<String> {
    let mut names: Vec<String> = names.take(MAX_CLAIMANTS).collect();
    if names.is_empty() {
        return None;
    }
    if claimants > MAX_CLAIMANTS {
        names.push("…".to_owned());
    }
    Some(names.join(" / "))
}

/// The name of a Practitioner, Organization, PractitionerRole (its practitioner, else its
/// organisation), Patient or Device.
fn party_name(index: &Index, resource: &Object, from: Option<&str>) -> Option<String> {
    match text(resource, "resourceType")?.as_str() {
        "Organization" => text(resource, "name"),
        "Practitioner" | "Patient" | "RelatedPerson" => {
            subject::human_names(resource).into_iter().next()
        }
        "PractitionerRole" => ["practitioner", "organization"].iter().find_map(|field| {
            let field = resource.get(*field)?;
            let named = field
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|r| {
                    let target = index.resolve(r, from, Some(resource));
                    joined_names(
                        target.candidates().len(),
                        target
                            .candidates()
                            .iter()
                            .filter(|r| {
                                text(**r, "resourceType").as_deref() != Some("PractitionerRole")
                            })
                            .filter_map(|r| party_name(index, r, from)),
                    )
                });
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

// ----- entries -----

/// The concept in `field` named, or why the entry yields no item: a negation, or no name.
fn named<T>(
    r: &Object,
    field: &str,
    missing: &str,
    topic: Topic,
) -> Result<(String, Vec<Code>), Read<T>> {
    let concept = r.get(field);
    if let Some(negation) = concept.and_then(|c| negation(c, topic)) {
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
    let (substance, codes) = match named(
        r,
        "code",
        "an allergy without a substance",
        Topic::Allergies,
    ) {
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
                .map(|at| {
                    let from = context.index.full_url_of(r);
                    context.index.resolve(at, from, Some(r))
                });
            match target {
                Some(Target::Found(product)) if product.get("code").is_some() => {
                    product.get("code")
                }
                Some(Target::Ambiguous(all)) if all.len() > MAX_CLAIMANTS => {
                    context.ambiguous += 1;
                    return Read::Unreadable(format!(
                        "a medication reference claimed by {} different products",
                        all.len()
                    ));
                }
                Some(Target::Ambiguous(all)) => {
                    // Several products claim the reference: all are named, none picked.
                    context.ambiguous += 1;
                    let concepts: Vec<&Value> = all.iter().filter_map(|m| m.get("code")).collect();
                    let names: Vec<String> =
                        concepts.iter().filter_map(|c| concept_name(c)).collect();
                    if names.is_empty() {
                        return Read::Unreadable(
                            "a medication reference claimed by several unnamed products".into(),
                        );
                    }
                    let codes = concepts.into_iter().flat_map(codings).collect();
                    return Read::Item(medication_item(r, names.join(" / "), codes));
                }
                Some(Target::VersionMissing) => {
                    return Read::Unreadable(
                        "a medication reference names a version the document does not hold".into(),
                    );
                }
                _ => {
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
    if let Some(negation) = concept.and_then(|c| negation(c, Topic::Medications)) {
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
        // An order not to give the product is no treatment: its status says so, whatever
        // the order's own status (an active "do not give" order).
        status: if r.get("doNotPerform").and_then(Value::as_bool) == Some(true) {
            Some(DO_NOT_PERFORM.to_owned())
        } else {
            text(r, "status")
        },
        source: text(r, "resourceType").unwrap_or_default(),
        period: when(r, "effective")
            .or_else(|| text(r, "authoredOn").filter(|d| validate::is_date_time(d))),
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
    let (name, codes) = match named(
        r,
        "code",
        "a problem without a description",
        Topic::Problems,
    ) {
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
    let (name, codes) = match named(
        r,
        "code",
        "a procedure without a description",
        Topic::Procedures,
    ) {
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
    let (vaccine, codes) = match named(
        r,
        "vaccineCode",
        "an immunization without a vaccine",
        Topic::Immunizations,
    ) {
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
    if matches!(text(r, "status").as_deref(), Some("entered-in-error")) {
        return Read::Skipped("entered in error".into());
    }
    let devices: Vec<&Object> = if text(r, "resourceType").as_deref() == Some("Device") {
        vec![r]
    } else {
        let target = r
            .get("device")
            .and_then(|d| d.get("reference"))
            .and_then(Value::as_str)
            .map(|at| {
                context
                    .index
                    .resolve(at, context.index.full_url_of(r), Some(r))
            });
        match target {
            Some(Target::VersionMissing) => {
                return Read::Unreadable(
                    "a device reference names a version the document does not hold".into(),
                );
            }
            Some(target) => target.candidates().to_vec(),
            None => Vec::new(),
        }
    };
    if devices.is_empty() {
        return Read::Unreadable("a device reference that does not resolve".into());
    }
    if devices.len() > 1 {
        context.ambiguous += 1;
    }
    if devices.len() > MAX_CLAIMANTS {
        return Read::Unreadable(format!(
            "a device reference claimed by {} different devices",
            devices.len()
        ));
    }
    let mut names = Vec::new();
    let mut codes = Vec::new();
    for device in devices {
        let concept = device.get("type");
        if let Some(negation) = concept.and_then(|c| negation(c, Topic::Devices)) {
            return negation;
        }
        if let Some(name) =
            party_name(context.index, device, None).or_else(|| concept.and_then(concept_name))
        {
            names.push(name);
        }
        codes.extend(concept.map(codings).unwrap_or_default());
    }
    if names.is_empty() {
        return Read::Unreadable("a device without a name or type".into());
    }
    Read::Item(Device {
        name: names.join(" / "),
        codes,
    })
}

fn observation(_context: &mut Context, r: &Object) -> Read<Observation> {
    if let Some(read) = expect_type(r, &["Observation"]) {
        return read;
    }
    // Not a finding about the patient: withdrawn, or never made.
    if let Some(status @ ("entered-in-error" | "cancelled")) = text(r, "status").as_deref() {
        return Read::Skipped(format!("observation {status}"));
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
        .or_else(|| text(r, "valueDateTime").filter(|d| validate::is_date_time(d)));
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
            crate::encoding::peer_token(&kind, 40, "", None),
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

/// What a section is about, for its "no known …" statements: each denies its own topic
/// only ("no current problems" filed among the allergies says nothing of allergies).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topic {
    Allergies,
    Medications,
    Problems,
    Procedures,
    Immunizations,
    Devices,
}

impl Topic {
    /// The topic an IPS `no-known-…` code's suffix denies as a whole.
    fn of_ips(what: &str) -> Option<Self> {
        Some(match what {
            "allergies" => Self::Allergies,
            "medications" => Self::Medications,
            "problems" => Self::Problems,
            "procedures" => Self::Procedures,
            "immunizations" => Self::Immunizations,
            "devices" => Self::Devices,
            _ => return None,
        })
    }
}

/// SNOMED CT's system written as its OID.
const SNOMED_OID: &str = "urn:oid:2.16.840.1.113883.6.96";

/// Code systems that name substances or drugs: beside a "no known" code, one of theirs
/// names what the statement would hide (ATC, UNII, RxNorm, the French CIS; SNOMED CT's
/// own codes apart from the statements count too, in [`negation`]).
const NAMING_SYSTEMS: [&str; 6] = [
    "http://www.whocc.no/atc",
    "urn:oid:2.16.840.1.113883.6.73",
    "http://fdasis.nlm.nih.gov",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.88",
    "urn:oid:1.2.250.1.213.2.3.1",
];

/// The SNOMED CT codes [`negation`] reads as statements that there is none, with the
/// topic each denies as a whole (`None`: one kind only, such as "no known drug allergy").
const SNOMED_NEGATIONS: [(&str, Option<Topic>); 11] = [
    ("716186003", Some(Topic::Allergies)),
    ("787481004", Some(Topic::Medications)),
    ("160245001", Some(Topic::Problems)),
    ("787480003", Some(Topic::Procedures)),
    ("787482006", Some(Topic::Immunizations)),
    ("787483001", Some(Topic::Devices)),
    ("409137002", None),
    ("429625007", None),
    ("428607008", None),
    ("1003774007", None),
    ("1003776009", None),
];

/// What SNOMED CT `code` denies, if it is one of [`SNOMED_NEGATIONS`].
fn snomed_negation(code: &str) -> Option<Option<Topic>> {
    SNOMED_NEGATIONS
        .iter()
        .find(|(negating, _)| *negating == code)
        .map(|(_, topic)| *topic)
}

/// "No known …" and "no information about …" codes and phrases, in an entry of a
/// section about `topic`: a "no known" denies the section only when it is about that
/// section's topic; about another one, or one kind only, it is a statement.
fn negation<T>(concept: &Value, topic: Topic) -> Option<Read<T>> {
    let codes = codings(concept);
    // A concept's codings are one meaning in several systems: "no known allergy" coded
    // beside a code that names something (a substance, a drug) says two things. Neither
    // may stand: read as "none known", the named allergy would be hidden.
    let negating = |c: &Code| match (c.system.as_deref(), c.code.as_deref()) {
        (Some(IPS_ABSENT), Some(code)) => code.starts_with("no-"),
        (Some(SNOMED | SNOMED_OID), Some(code)) => snomed_negation(code).is_some(),
        _ => false,
    };
    // Only a system that names substances, drugs or findings says which: a local code
    // ("NKA" under a hospital's own system) may be the same statement written its way.
    let naming = |c: &Code| match (c.system.as_deref(), c.code.as_deref()) {
        (Some(SNOMED | SNOMED_OID), Some(code)) => snomed_negation(code).is_none(),
        (Some(system), Some(_)) => NAMING_SYSTEMS.contains(&system),
        _ => false,
    };
    if codes.iter().any(negating) && codes.iter().any(naming) {
        return Some(Read::Unreadable(
            "a 'no known' code beside a code naming something".into(),
        ));
    }
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
                return Some(Read::NoInformation {
                    text: label(),
                    basis: format!("IPS {code}"),
                });
            }
            if let Some(what) = code.strip_prefix("no-known-") {
                let general = Topic::of_ips(what) == Some(topic);
                return Some(Read::NoneKnown {
                    general,
                    text: label(),
                    basis: format!("IPS {code}"),
                });
            }
        }
        if system == SNOMED {
            let Some(denied) = snomed_negation(code) else {
                continue;
            };
            let general = denied == Some(topic);
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
        let denied = match phrase.as_str() {
            "no known allergies" | "no known allergy" | "aucune allergie connue" => {
                Some(Topic::Allergies)
            }
            "no known current medications"
            | "no known medications"
            | "aucun traitement en cours" => Some(Topic::Medications),
            "no known current problems or disability"
            | "no known problems"
            | "aucun antécédent connu" => Some(Topic::Problems),
            "no known drug allergies" | "nkda" | "no known food allergies" => None,
            _ => return None,
        };
        let general = denied == Some(topic);
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

/// A section's code: its LOINC coding's, else a coding naming a modelled section, else
/// its first coding's. The LOINC code is what names the section (the IPS codes its
/// sections in LOINC); a local coding listed before it must not turn the medication
/// section into an unmodelled one.
fn section_code(concept: &Value) -> Option<String> {
    let codes = codings(concept);
    let loinc = codes
        .iter()
        .filter(|c| c.system.as_deref() == Some(LOINC))
        .find_map(|c| c.code.clone());
    loinc
        .or_else(|| {
            codes
                .iter()
                .filter_map(|c| c.code.as_deref())
                .find(|code| MODELLED.contains(code))
                .map(str::to_owned)
        })
        .or_else(|| codes.into_iter().find_map(|c| c.code))
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
    // A malformed date is never shown as if it were one (the entry's defect is counted).
    let date = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|d| validate::is_date_time(d))
            .map(str::to_owned)
    };
    if let Some(text) = date(at("DateTime"))
        .or_else(|| date(at("Instant")))
        .or_else(|| text(r, &format!("{stem}String")))
    {
        return Some(text);
    }
    if let Some(period) = at("Period") {
        let start = date(period.get("start"));
        let end = date(period.get("end"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The summary of a document bundle (with a timestamp): a Composition about
    /// `urn:uuid:p`, dated, authored and titled, with `changes` written over it (a null
    /// removes the element), that Patient, and `entries`.
    fn summary_of(changes: Value, entries: Vec<Value>) -> CriticalSummary {
        let mut composition = json!({"resourceType": "Composition", "status": "final",
            "type": {"text": "summary"}, "date": "2026-11-20", "author": [{"display": "x"}],
            "title": "t", "subject": {"reference": "urn:uuid:p"}});
        if let (Some(held), Value::Object(changes)) = (composition.as_object_mut(), changes) {
            for (key, value) in changes {
                if value.is_null() {
                    held.remove(&key);
                } else {
                    held.insert(key, value);
                }
            }
        }
        let mut all = vec![
            json!({"fullUrl": "urn:uuid:c", "resource": composition}),
            json!({"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}}),
        ];
        all.extend(entries);
        let bundle = json!({"resourceType": "Bundle", "type": "document",
            "timestamp": "2026-11-21T10:00:00+01:00", "entry": all});
        from_bundle(bundle.as_object().unwrap()).unwrap()
    }

    fn coded(code: &str) -> Value {
        json!({"coding": [{"system": LOINC, "code": code}]})
    }

    /// References written differently (`0/AllergyIntolerance/x`, `1/…`) to one identity
    /// that thousands of different entries claim: the claimants are read once, the
    /// reference is counted once as claimed by several, and the others as the same entry
    /// listed again. Reading the claimants again for each reference (as each was counted
    /// again) cost claimants times references: ~2×10⁹ steps for 10,000 claimants and
    /// 190,000 references, which no entry limit bounds.
    #[test]
    fn references_to_one_claimed_identity_read_its_claimants_once() {
        let (claimants, references) = (2_000, 20_000);
        let allergies = (0..claimants)
            .map(|i| {
                json!({"resource": {"resourceType": "AllergyIntolerance", "id": "x",
                    "code": {"text": format!("substance {i}")}, "patient": {"reference": "urn:uuid:p"}}})
            })
            .collect();
        let listed: Vec<Value> = (0..references)
            .map(|i| json!({"reference": format!("{i}/AllergyIntolerance/x")}))
            .collect();
        let s = summary_of(
            json!({"section": [{"code": coded(ALLERGIES), "entry": listed}]}),
            allergies,
        );
        assert_eq!(s.allergies.status, SectionStatus::Recorded);
        assert_eq!(s.allergies.items.len(), claimants);
        assert!(s.allergies.unlisted_items.is_empty());
        assert_eq!(s.allergies.unreadable_entries, 0);
        // One reference claimed by several resources, not 20,000.
        assert_eq!(s.allergies.duplicate_entries, 1);
        assert_eq!(s.defects.duplicate_entries, claimants - 1);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("lists the same entry twice")),
            "{:?}",
            s.warnings
        );
    }

    /// A `section` written as one object (as some single-element serialisers do) is no
    /// list: what it holds is not read, and the summary says it is partial (a defect and
    /// a warning) instead of showing the medications as "not recorded" without a word.
    #[test]
    fn a_section_that_is_not_a_list_is_a_defect_not_silence() {
        let medication = json!({"fullUrl": "urn:uuid:m", "resource": {"resourceType": "MedicationStatement",
            "status": "active", "medicationCodeableConcept": {"text": "warfarine"},
            "subject": {"reference": "urn:uuid:p"}}});
        let section = json!({"code": coded(MEDICATIONS), "entry": [{"reference": "urn:uuid:m"}]});
        let said = |s: &CriticalSummary| s.warnings.iter().any(|w| w.contains("not a list"));
        let s = summary_of(
            json!({"section": section.clone()}),
            vec![medication.clone()],
        );
        // Never read as a one-element list…
        assert!(s.medications.items.is_empty());
        // …but counted and said.
        assert_eq!(s.defects.unreadable_entries, 1);
        assert!(said(&s), "{:?}", s.warnings);
        // The same one level down, and for a section that is not an object.
        let wrapped = json!({"section": [{"title": "w", "section": section.clone()}, "a section"]});
        let s = summary_of(wrapped, vec![medication.clone()]);
        assert!(s.medications.items.is_empty());
        assert_eq!(s.defects.unreadable_entries, 2);
        assert!(said(&s), "{:?}", s.warnings);
        // A list is read as ever.
        let s = summary_of(json!({"section": [section]}), vec![medication]);
        assert_eq!(s.medications.items.len(), 1);
        assert_eq!(s.defects.unreadable_entries, 0);
        assert!(!said(&s), "{:?}", s.warnings);
    }

    /// The document's date is passed on only when it is a FHIR dateTime ("01/02/2024"
    /// would read as 2 January on the page), and the bundle's timestamp (when it was
    /// assembled) never stands in for it.
    #[test]
    fn the_document_date_is_a_fhir_date_or_none() {
        let malformed = [
            json!("01/02/2024"),
            json!("2024-1-2"),
            json!("20240102"),
            json!(""),
            json!(20240102),
        ];
        for written in malformed {
            let s = summary_of(json!({"date": written.clone()}), Vec::new());
            assert_eq!(s.document.date, None, "{written}");
            assert!(s.document.timestamp.is_some());
            assert!(
                s.warnings
                    .iter()
                    .any(|w| w.contains("Composition.date") && w.contains("not shown")),
                "{written}: {:?}",
                s.warnings
            );
        }
        for written in ["2024", "2024-02", "2024-02-01", "2024-02-01T10:00:00+01:00"] {
            let s = summary_of(json!({"date": written}), Vec::new());
            assert_eq!(s.document.date.as_deref(), Some(written));
            assert!(!s.warnings.iter().any(|w| w.contains("Composition.date")));
        }
        let s = summary_of(json!({"date": null}), Vec::new());
        assert_eq!(s.document.date, None);
        assert!(s.warnings.iter().any(|w| w == "the document has no date"));
    }
}
