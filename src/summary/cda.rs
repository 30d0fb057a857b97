//! CDA R2 documents, the form the national record keeps its summaries in, read into the
//! same [`CriticalSummary`] as IPS bundles (docs/summary.md, "CDA documents").
//!
//! Parsing is `roxmltree`'s, which refuses a DTD (so no entity can be declared, expanded or
//! fetched) and bounds the node count; the depth is bounded here. Elements are matched by
//! namespace (`urn:hl7-org:v3`), never by prefix. Sections are recognised by their LOINC
//! code (adverse drug effects join the allergies); entries are read from the IHE PCC structures (a concern act wrapping an
//! observation, a substance administration), and the section's narrative is always kept
//! as text, the fallback when entries are missing or unreadable. A level-1 document (a
//! PDF or text in `nonXMLBody`) has no sections: every section is "not recorded" and the
//! summary says the document is unstructured. Errors and warnings name elements, never
//! values.

use roxmltree::Node;

use super::{
    Allergy, Code, CriticalSummary, Device, Dispensation, DocumentDefects, DocumentInfo,
    DocumentPatient, Immunization, Medication, Observation, OtherSection, Problem, Procedure,
    Section, SectionStatus, SummaryError, Unstructured,
    narrative::{self, Narrative},
};

const HL7: &str = "urn:hl7-org:v3";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Real documents nest sections and entries a few dozen levels deep at most.
const MAX_DEPTH: usize = 128;
/// Codes, dates and names: no attribute of a real document comes near (content, a PDF
/// included, is element text).
const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// Far above the largest real summary (a few thousand entries, tens of thousands of
/// nodes), and low enough that a hostile document's tree stays under ~80 MB (a node or an
/// attribute costs roxmltree 70 to 80 bytes): a few desks at once must not exhaust the
/// service's memory.
const MAX_NODES: u32 = 500_000;
/// Unreadable entries named in the warnings; the rest are counted.
const MAX_NAMED_UNREADABLE: usize = 50;
/// LOINC, which names sections.
const LOINC: &str = "2.16.840.1.113883.6.1";
/// SNOMED CT.
const SNOMED: &str = "2.16.840.1.113883.6.96";
/// SNOMED CT "no known allergy", as IPS-FR states an explicit absence.
const NO_KNOWN_ALLERGY: &str = "716186003";

/// Whether `bytes` is XML rather than JSON: its first significant byte is `<`.
pub(super) fn looks_like_xml(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// The critical summary of the CDA document in `bytes`.
pub(super) fn extract(bytes: &[u8]) -> Result<CriticalSummary, SummaryError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| SummaryError::Xml(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    // Held until the summary is read and the tree dropped.
    let _turn = crate::xml::turn(text.len());
    let document =
        crate::xml::parse(text, MAX_NODES).map_err(|e| SummaryError::Xml(e.to_string()))?;
    check_depth(document.root())?;
    let root = document.root_element();
    if root.tag_name().name() != "ClinicalDocument" || root.tag_name().namespace() != Some(HL7) {
        return Err(SummaryError::NotACda(format!(
            "the root element is {}{}",
            printable_name(root.tag_name().name()),
            root.tag_name()
                .namespace()
                .map_or(" without a namespace".to_owned(), |ns| format!(
                    " in namespace {}",
                    crate::encoding::peer_token(ns, 96, ":/.-_#", Some('?'))
                ))
        )));
    }
    let shape = Shape::of(root);
    let mut reader = Reader {
        shape,
        ..Reader::default()
    };
    let body = child(root, "component");
    let structured = body.and_then(|c| child(c, "structuredBody"));
    let unstructured = body.and_then(|c| child(c, "nonXMLBody"));
    let mut content = None;
    if let Some(body) = structured {
        for (i, component) in children(body, "component").enumerate() {
            if let Some(section) = child(component, "section") {
                reader.section(
                    section,
                    &format!("component/structuredBody/component[{i}]/section"),
                );
            }
        }
    } else if let Some(body) = unstructured {
        content = Some(reader.unstructured(body));
    } else {
        return Err(SummaryError::NotACda(
            "the document has neither a structuredBody nor a nonXMLBody".into(),
        ));
    }
    let kind = if unstructured.is_some() {
        "cda-unstructured"
    } else {
        "cda"
    };
    let mut summary = reader.finish(header(root, kind, shape), patient(root)?);
    if content.is_some() {
        for basis in [
            &mut summary.allergies.basis,
            &mut summary.medications.basis,
            &mut summary.problems.basis,
            &mut summary.past_problems.basis,
            &mut summary.procedures.basis,
        ] {
            "unstructured document (nonXMLBody): no section to read".clone_into(basis);
        }
    }
    summary.unstructured = content;
    Ok(summary)
}

/// The kinds of document the national record holds summaries in (docs/summary.md, "CDA
/// documents"): the same section code means different things in different kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Shape {
    /// IPS-FR "synthèse médicale".
    IpsFr,
    /// The older VSM "volet de synthèse médicale".
    Vsm,
    /// DLU, the EHPAD's emergency liaison file.
    Dlu,
    /// Liaison letter at discharge from a hospital.
    LdlSes,
    /// Liaison letter at admission to a hospital.
    LdlEes,
    /// The health insurance's reimbursement history.
    Hr,
    /// A CDA document of another kind: sections read by their codes alone.
    #[default]
    Other,
}

impl Shape {
    /// Recognised from the document's templateIds first, then from its type code.
    fn of(root: Node<'_, '_>) -> Self {
        let templates: Vec<&str> = children(root, "templateId")
            .filter_map(|t| t.attribute("root"))
            .collect();
        let by_template = DOCUMENT_TEMPLATES
            .iter()
            .find(|(root, _)| templates.contains(root))
            .map(|(_, shape)| *shape);
        let code = child(root, "code").and_then(|c| c.attribute("code"));
        by_template.unwrap_or(match code {
            Some("60591-5") => Self::IpsFr,
            Some("SYNTH") => Self::Vsm,
            Some("74207-2") => Self::Dlu,
            Some("11490-0") => Self::LdlSes,
            Some("REMB") => Self::Hr,
            _ => Self::Other,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::IpsFr => "IPS-FR",
            Self::Vsm => "VSM",
            Self::Dlu => "DLU",
            Self::LdlSes => "LDL-SES",
            Self::LdlEes => "LDL-EES",
            Self::Hr => "HR",
            Self::Other => "CDA",
        }
    }

    /// What a section coded `code` holds in a document of this kind.
    fn meaning(self, code: &str) -> Meaning {
        match code {
            // A reimbursement history lists what pharmacies handed out: never the
            // treatment the patient is on.
            "10160-0" if self == Self::Hr => Meaning::Dispensations,
            "10160-0" => Meaning::Medications,
            // "Traitement au long cours" in a VSM; a care plan in an IPS-FR, palliative
            // care in a DLU.
            "18776-5" if self == Self::Vsm => Meaning::Medications,
            // Medicines at discharge: what the patient is on when the letter is written.
            "10183-2" => Meaning::Medications,
            // A reimbursement history's vaccines and devices were handed out, not
            // administered or implanted: dispensations too.
            "11369-6" | "46264-8" if self == Self::Hr => Meaning::Dispensations,
            // "Points de vigilance": its own code in an IPS-FR, the results code in a VSM
            // (where other kinds hold results or pending ones under it).
            "44944-7" => Meaning::Vigilance,
            "30954-2" if self == Self::Vsm => Meaning::Vigilance,
            "11450-4" => Meaning::Problems,
            "11348-0" => Meaning::PastProblems,
            "47519-4" => Meaning::Procedures,
            "11369-6" => Meaning::Immunizations,
            "46264-8" => Meaning::Devices,
            "10162-6" => Meaning::Pregnancy,
            "42348-3" => Meaning::AdvanceDirectives,
            _ => Meaning::Other,
        }
    }
}

/// Where a section's content goes in the summary (allergies are decided before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    Medications,
    Dispensations,
    Problems,
    PastProblems,
    Procedures,
    Immunizations,
    Devices,
    Pregnancy,
    AdvanceDirectives,
    Vigilance,
    Other,
}

/// Document templateIds of the French content profiles (docs/summary.md lists them).
/// An IPS-FR may carry the DLU's type code (an EHPAD resident's summary): the template
/// decides.
const DOCUMENT_TEMPLATES: &[(&str, Shape)] = &[
    ("1.2.250.1.213.1.1.1.51", Shape::IpsFr),
    ("1.2.250.1.213.1.1.1.13", Shape::Vsm),
    ("1.2.250.1.213.1.1.1.22", Shape::Dlu),
    ("1.2.250.1.213.1.1.1.29", Shape::LdlSes),
    ("1.2.250.1.213.1.1.1.21", Shape::LdlEes),
    ("1.2.250.1.213.1.1.1.36", Shape::Hr),
];

/// The code system of IPS "absent or unknown" codes: `no-known-allergies` states an
/// absence, `no-allergy-info` that nothing is known (docs/summary.md).
const ABSENT_OR_UNKNOWN: &str = "2.16.840.1.113883.5.1150.1";

/// What an entry (or one observation of it) coded in [`ABSENT_OR_UNKNOWN`] says: an
/// absence (`true`) or that nothing is known (`false`), in its words. Asked of each
/// observation of a concern act, not of the act: "no known food allergy" next to a
/// penicillin allergy in one concern must not take the penicillin with it.
///
/// An absence counts only for the section's own `topic` (the suffix of its IPS code:
/// `allergies`, `medications`…): "no known problems" filed among the medications, or "no
/// known food allergies" (one kind), is a statement, never "none known".
///
/// Only the statement's own codes count, not those of statements nested in it
/// (`entryRelationship`): a penicillin allergy carrying a nested "no known food allergy"
/// is a penicillin allergy.
fn absent_or_unknown(entry: Node<'_, '_>, topic: &str) -> Option<Stated> {
    stated_code(entry).map(|(value, said)| Stated {
        absence: value.strip_prefix("no-known-") == Some(topic),
        no_information: value.starts_with("no-") && value.ends_with("-info"),
        said,
    })
}

/// Whether the statement `node` is (or, for an `entry`, the statement it holds) is
/// negated (`negationInd="true"`).
fn negated(node: Node<'_, '_>) -> bool {
    statement_of(node).is_some_and(|s| s.attribute("negationInd") == Some("true"))
}

/// The statement `node` is, or, for an `entry`, the one it holds (none if it is empty).
fn statement_of<'a, 'i>(node: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    if is(&node, "entry") {
        node.children().find(Node::is_element)
    } else {
        Some(node)
    }
}

/// What an absent-or-unknown code states: an absence of the section's topic, that
/// nothing is known (`no-…-info`), and its words.
struct Stated {
    absence: bool,
    no_information: bool,
    said: String,
}

/// Clinical statements: one nested in another is a statement of its own.
const STATEMENTS: [&str; 9] = [
    "observation",
    "act",
    "organizer",
    "substanceAdministration",
    "supply",
    "procedure",
    "encounter",
    "observationMedia",
    "regionOfInterest",
];

/// The absent-or-unknown code `node` states itself (outside the statements nested in
/// it: `entryRelationship`, an organizer's `component`, any statement inside), and its
/// words; an entry stands for the statement it holds. Walking only the statement's own
/// elements keeps each look linear: a chain of nested observations is not walked again
/// from each of them.
fn stated_code(node: Node<'_, '_>) -> Option<(String, String)> {
    let start = statement_of(node)?;
    let mut pending = vec![start];
    while let Some(at) = pending.pop() {
        if at.is_element() && at.attribute("codeSystem") == Some(ABSENT_OR_UNKNOWN) {
            let value = at.attribute("code")?;
            return Some((
                value.to_owned(),
                words(at).unwrap_or_else(|| value.to_owned()),
            ));
        }
        // Reversed so that the first child is looked at first (document order).
        let nested = |n: &Node<'_, '_>| {
            n.is_element()
                && (is(n, "entryRelationship")
                    || is(n, "component")
                    || STATEMENTS.contains(&n.tag_name().name()))
        };
        pending.extend(
            at.children()
                .filter(|n| !nested(n))
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        );
    }
    None
}

/// SNOMED CT findings whose denial, in a negated allergy observation without an agent,
/// denies allergy as such ("allergy to substance", "propensity to adverse reactions");
/// denying a narrower one ("drug allergy") leaves the others unknown.
const GENERAL_ALLERGY: [&str; 2] = ["419199007", "420134006"];

/// An element or attribute name from the document, fit for an error text (a hostile
/// document's names are its own choice).
fn printable_name(name: &str) -> String {
    crate::encoding::peer_token(name, 64, "_-.", Some('?'))
}

/// Refuses nesting deeper than [`MAX_DEPTH`] and attributes longer than
/// [`MAX_ATTRIBUTE_BYTES`], walking each node once.
fn check_depth(root: Node<'_, '_>) -> Result<(), SummaryError> {
    let mut stack = vec![(root, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(SummaryError::Xml(format!(
                "elements nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if let Some(long) = node
            .attributes()
            .find(|a| a.value().len() > MAX_ATTRIBUTE_BYTES)
        {
            return Err(SummaryError::Xml(format!(
                "attribute {} of element {} is longer than {MAX_ATTRIBUTE_BYTES} bytes",
                printable_name(long.name()),
                printable_name(node.tag_name().name())
            )));
        }
        stack.extend(
            node.children()
                .filter(Node::is_element)
                .map(|c| (c, depth + 1)),
        );
    }
    Ok(())
}

fn is(node: &Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(HL7)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(c, name))
}

fn children<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(c, name))
}

/// Most bytes kept of one element's words (a name, a title, an original text), then `…`.
/// Statements nested inside another's original text would otherwise each copy the whole
/// text below them: memory in depth × size for a hostile document.
const MAX_WORDS_BYTES: usize = 4096;

/// Text content of an element and its descendants, whitespace collapsed, at most
/// [`MAX_WORDS_BYTES`].
fn text_of(node: Node<'_, '_>) -> String {
    let mut out = String::new();
    for piece in node.descendants().filter(Node::is_text) {
        for word in piece.text().unwrap_or("").split_whitespace() {
            let room = MAX_WORDS_BYTES.saturating_sub(out.len() + usize::from(!out.is_empty()));
            if word.len() > room {
                if !out.is_empty() {
                    out.push(' ');
                }
                let mut end = room.min(word.len());
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&word[..end]);
                out.push('…');
                return out;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// A section's narrative block as text: paragraphs, list items and table rows on lines of
/// their own, cells separated by " | ", every other element (`content`, `linkHtml`…) as
/// its words. One pass over the block. Bounded as a FHIR narrative is, and marked when cut.
fn narrative(text: Node<'_, '_>) -> Option<Narrative> {
    enum Edge<'a, 'i> {
        Open(Node<'a, 'i>),
        Close(Node<'a, 'i>),
    }
    fn ends_line(name: &str) -> bool {
        matches!(
            name,
            "paragraph" | "item" | "tr" | "br" | "caption" | "list" | "table" | "footnote"
        )
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut gap = false;
    let mut stack = vec![Edge::Open(text)];
    while let Some(edge) = stack.pop() {
        if let Edge::Open(n) = edge
            && n.is_element()
        {
            stack.push(Edge::Close(n));
            stack.extend(n.children().rev().map(Edge::Open));
        }
        match edge {
            Edge::Open(n) if n.is_text() => {
                // Inline markup (`content`) splits text without a space: words are
                // joined only where the text itself has whitespace.
                let text = n.text().unwrap_or("");
                gap |= text.starts_with(char::is_whitespace);
                for (k, word) in text.split_whitespace().enumerate() {
                    if !line.is_empty() && (gap || k > 0) && !line.ends_with(' ') {
                        line.push(' ');
                    }
                    line.push_str(word);
                    gap = false;
                }
                gap |= text.ends_with(char::is_whitespace);
            }
            Edge::Open(n) if is(&n, "td") || is(&n, "th") => {
                // An empty cell keeps its column.
                if line.ends_with("| ") {
                    line.push_str("| ");
                } else if !line.is_empty() {
                    line.push_str(" | ");
                }
            }
            Edge::Close(n) if n.is_element() && ends_line(n.tag_name().name()) => {
                gap = false;
                let done = std::mem::take(&mut line);
                let done = done.trim_end_matches([' ', '|']).trim_end();
                if !done.is_empty() {
                    lines.push(done.to_owned());
                }
            }
            _ => {}
        }
    }
    let rest = line.trim_end_matches([' ', '|']).trim_end();
    if !rest.is_empty() {
        lines.push(rest.to_owned());
    }
    let (text, cut) = narrative::bound(non_empty(lines.join("\n"))?);
    Some(Narrative {
        text,
        declaration: false,
        cut,
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A coded value (`code`, `value xsi:type="CD"`, `playingEntity/code`) as [`Code`]s: the
/// code itself and its translations.
fn codes(node: Node<'_, '_>) -> Vec<Code> {
    let one = |n: Node<'_, '_>| {
        let code = n.attribute("code").map(str::to_owned);
        let display = n.attribute("displayName").map(str::to_owned);
        (code.is_some() || display.is_some()).then(|| Code {
            system: n.attribute("codeSystem").map(|s| format!("urn:oid:{s}")),
            code,
            display,
        })
    };
    one(node)
        .into_iter()
        .chain(children(node, "translation").filter_map(one))
        .collect()
}

/// The words for a coded value: its display name, else its original text, else a
/// translation's display name.
fn words(node: Node<'_, '_>) -> Option<String> {
    node.attribute("displayName")
        .map(str::to_owned)
        .or_else(|| child(node, "originalText").map(text_of).and_then(non_empty))
        .or_else(|| {
            children(node, "translation")
                .find_map(|t| t.attribute("displayName").map(str::to_owned))
        })
}

fn header(root: Node<'_, '_>, kind: &str, shape: Shape) -> DocumentInfo {
    let person = |n: Node<'_, '_>| {
        let name = child(n, "name")?;
        let given: Vec<String> = children(name, "given").map(text_of).collect();
        let family = child(name, "family").map(text_of).unwrap_or_default();
        non_empty(
            given
                .into_iter()
                .chain(std::iter::once(family))
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .or_else(|| non_empty(text_of(name)))
    };
    let authors = children(root, "author")
        .filter_map(|a| child(a, "assignedAuthor"))
        .filter_map(|a| {
            child(a, "assignedPerson")
                .and_then(person)
                .or_else(|| {
                    child(a, "representedOrganization")
                        .and_then(|o| child(o, "name"))
                        .map(text_of)
                        .and_then(non_empty)
                })
                .or_else(|| {
                    // A document written by software (the health insurance's
                    // reimbursement history) names the software.
                    let device = child(a, "assignedAuthoringDevice")?;
                    child(device, "softwareName")
                        .or_else(|| child(device, "manufacturerModelName"))
                        .map(text_of)
                        .and_then(non_empty)
                })
        })
        .collect();
    let custodian = child(root, "custodian")
        .and_then(|c| child(c, "assignedCustodian"))
        .and_then(|c| child(c, "representedCustodianOrganization"))
        .and_then(|o| child(o, "name"))
        .map(text_of)
        .and_then(non_empty);
    let title = child(root, "title")
        .map(text_of)
        .and_then(non_empty)
        .or_else(|| {
            child(root, "code").and_then(|c| c.attribute("displayName").map(str::to_owned))
        });
    DocumentInfo {
        bundle_type: kind.to_owned(),
        format: "cda".into(),
        template: Some(shape.name().into()),
        type_code: child(root, "code").and_then(|c| codes(c).into_iter().next()),
        title,
        date: child(root, "effectiveTime").and_then(|t| t.attribute("value").map(str::to_owned)),
        timestamp: None,
        authors,
        custodian,
    }
}

/// The document's patient: its `recordTarget`. Several are accepted only when they are one
/// person, each naming the same INS (the first is read); otherwise the summary could be
/// any of theirs, and the document is refused. Only ids under an INS OID (docs/domain.md
/// §4) are INS: others of their arc (the INS-C, `…4.2`, of older documents) are not, and
/// a document naming only one is read as naming none.
fn patient(root: Node<'_, '_>) -> Result<Option<DocumentPatient>, SummaryError> {
    // Every one is compared (in time linear in the document, which the parser bounds):
    // a cap would let the one naming another patient hide past it.
    let roles: Vec<Node<'_, '_>> = children(root, "recordTarget")
        .filter_map(|r| child(r, "patientRole"))
        .collect();
    let ins_of = |role: Node<'_, '_>| -> Vec<String> {
        let mut ins: Vec<String> = children(role, "id")
            .filter_map(|id| {
                super::subject::ins_identifier(id.attribute("root")?, id.attribute("extension")?)
            })
            .collect();
        ins.sort();
        ins.dedup();
        ins
    };
    let Some(&role) = roles.first() else {
        return Ok(None);
    };
    let ins = ins_of(role);
    if roles.len() > 1 && (ins.is_empty() || roles[1..].iter().any(|r| ins_of(*r) != ins)) {
        return Err(SummaryError::SeveralRecordTargets(roles.len()));
    }
    let person = child(role, "patient");
    let names = person
        .into_iter()
        .flat_map(|p| children(p, "name"))
        .filter_map(|n| non_empty(text_of(n)))
        .collect();
    Ok(Some(DocumentPatient {
        names,
        // The date only: a time and offset on a birth date would move it to another day
        // once shown in the workstation's time zone.
        birth_date: person
            .and_then(|p| child(p, "birthTime"))
            .and_then(|b| b.attribute("value"))
            .map(|v| v.trim().chars().take(8).collect()),
        gender: person
            .and_then(|p| child(p, "administrativeGenderCode"))
            .and_then(|g| g.attribute("code").map(str::to_owned)),
        ins,
        // Set once the summary is read (`extract`).
        no_ins: false,
    }))
}

/// What the sections of one document yield.
#[derive(Default)]
struct Reader {
    shape: Shape,
    allergies: Option<Section<Allergy>>,
    /// Entries and statements of absence over every allergy-like section read so far.
    allergy_entries: usize,
    allergies_absent: bool,
    /// An allergy section said nothing is known (`no-allergy-info`, a `nullFlavor`).
    allergies_no_information: bool,
    /// An allergy section holds text and no entry: what it says cannot be read.
    allergy_text_only: bool,
    /// Allergy observations outside the allergy section that could not be read.
    stray_unreadable: usize,
    /// Allergies written in other sections (a problem list's allergy concern): they join
    /// the allergies when the document is finished, wherever its allergy section is.
    stray_allergies: Vec<Allergy>,
    stray_statements: Vec<String>,
    medications: Option<Section<Medication>>,
    problems: Option<Section<Problem>>,
    past_problems: Option<Section<Problem>>,
    procedures: Option<Section<Procedure>>,
    immunizations: Option<Section<Immunization>>,
    devices: Option<Section<Device>>,
    pregnancy: Option<Section<Observation>>,
    advance_directives: Option<Section<Observation>>,
    vigilance: Option<Section<Observation>>,
    dispensations: Option<Section<Dispensation>>,
    other_sections: Vec<OtherSection>,
    unreadable: usize,
    bad_attachments: usize,
    warnings: Vec<String>,
}

fn section_shell<T>(node: Node<'_, '_>) -> Section<T> {
    let text = child(node, "text").and_then(narrative);
    Section {
        basis: "no entries".into(),
        title: child(node, "title").map(text_of).and_then(non_empty),
        narrative_cut: text.as_ref().is_some_and(|t| t.cut),
        narrative: text.map(|t| t.text),
        ..absent("")
    }
}

/// The status of a section from what was read: items make it recorded; an explicit
/// statement of absence, "none known"; both together, conflicting; entries none of which
/// could be read, unreadable.
fn judge<T>(section: &mut Section<T>, entries: usize, absent: bool, null_flavor: Option<&str>) {
    section.status = match (section.items.is_empty(), absent) {
        (false, true) => SectionStatus::Conflicting,
        (false, false) => SectionStatus::Recorded,
        // An entry that could not be read may be exactly what the absence denies: the
        // section says two things, and neither may look settled.
        (true, true) if section.unreadable_entries > 0 => SectionStatus::Conflicting,
        (true, true) => SectionStatus::NoneKnown,
        (true, false) if entries > 0 && section.unreadable_entries == entries => {
            SectionStatus::Unreadable
        }
        (true, false) => SectionStatus::NotRecorded,
    };
    section.basis = match (section.status, null_flavor) {
        (SectionStatus::NotRecorded, Some(flavor)) => format!("section nullFlavor {flavor}"),
        (SectionStatus::NoneKnown, _) => "negated or 'no known' entry".into(),
        (SectionStatus::Unreadable, _) => "entries unreadable".into(),
        (SectionStatus::Conflicting, _) => "items next to a statement of absence".into(),
        (SectionStatus::Recorded, _) => "entries".into(),
        (SectionStatus::NotRecorded, None) if entries == 0 => "no entries".into(),
        (SectionStatus::NotRecorded, None) => "no item and no statement of absence".into(),
    };
}

impl Reader {
    fn section(&mut self, node: Node<'_, '_>, path: &str) {
        let code = section_code(node);
        // Sections that only wrap others (as a VSM does) are read through.
        let mut nested = 0;
        for (i, inner) in children(node, "component")
            .filter_map(|c| child(c, "section"))
            .enumerate()
        {
            self.section(inner, &format!("{path}/component[{i}]/section"));
            nested += 1;
        }
        let entries: Vec<Node<'_, '_>> = children(node, "entry").collect();
        let null_flavor = node.attribute("nullFlavor");
        let own_text = child(node, "text").and_then(narrative);
        // An allergy section is never only a wrapper: its own text is about allergies, and
        // must weigh against a "none known" elsewhere.
        let allergy_section = matches!(code, Some("48765-2" | "44939-7"));
        if nested > 0 && entries.is_empty() && null_flavor.is_none() && !allergy_section {
            // A wrapper: its own text, if any, is kept; it claims nothing of its own.
            if own_text.is_some() {
                self.other(node, code, 0);
            }
            return;
        }
        if !matches!(code, Some("48765-2" | "44939-7")) {
            self.stray(&entries);
        }
        match code {
            // Adverse drug effects are what a physician about to prescribe must see with the
            // allergies: one section, in document order.
            Some("48765-2" | "44939-7") => {
                let shell = section_shell::<Allergy>(node);
                if entries.is_empty() && shell.narrative.is_some() {
                    self.allergy_text_only = true;
                }
                // Every allergy section's text, in document order: the second's may be the
                // only word of an allergy.
                let mut section = match self.allergies.take() {
                    Some(mut held) => {
                        append_narrative(&mut held.narrative, shell.narrative);
                        held.narrative_cut |= shell.narrative_cut;
                        held
                    }
                    None => shell,
                };
                // A section marked as without information (`nullFlavor`) says nothing is
                // known, like a `no-allergy-info` entry.
                self.allergies_no_information |= null_flavor.is_some();
                let mut absent = false;
                for (i, entry) in entries.iter().enumerate() {
                    for read in allergies(*entry) {
                        self.allergy_entries += 1;
                        match read {
                            Some(Read::Item(item)) => section.items.push(item),
                            Some(Read::Absent(statement)) => {
                                absent = true;
                                section.statements.push(statement);
                            }
                            Some(Read::Noted(statement)) => section.statements.push(statement),
                            Some(Read::NoInformation(statement)) => {
                                self.allergies_no_information = true;
                                section.statements.push(statement);
                            }
                            Some(Read::OtherPerson) => section.other_person_entries += 1,
                            None => self.unreadable_entry(&mut section, path, i),
                        }
                    }
                }
                absent |= self.allergies_absent;
                judge(&mut section, self.allergy_entries, absent, null_flavor);
                self.allergies_absent = absent;
                self.allergies = Some(section);
            }
            Some(code) => match self.shape.meaning(code) {
                Meaning::Medications => {
                    let read = self.plain((node, path, "medications"), &entries, medication);
                    merge(&mut self.medications, read);
                }
                Meaning::Dispensations => {
                    let read = self.plain((node, path, "medications"), &entries, dispensation);
                    merge(&mut self.dispensations, read);
                }
                Meaning::Problems => {
                    let read = self.each_observation((node, path, "problems"), &entries, problem);
                    merge(&mut self.problems, read);
                }
                Meaning::PastProblems => {
                    let read = self.each_observation((node, path, "problems"), &entries, problem);
                    merge(&mut self.past_problems, read);
                }
                Meaning::Procedures => {
                    let read = self.plain((node, path, "procedures"), &entries, procedure);
                    merge(&mut self.procedures, read);
                }
                Meaning::Immunizations => {
                    let read = self.plain((node, path, "immunizations"), &entries, immunization);
                    merge(&mut self.immunizations, read);
                }
                Meaning::Devices => {
                    let read = self.plain((node, path, "devices"), &entries, device);
                    merge(&mut self.devices, read);
                }
                Meaning::Pregnancy => {
                    let read = self.plain((node, path, ""), &entries, observed);
                    merge(&mut self.pregnancy, read);
                }
                Meaning::AdvanceDirectives => {
                    let read = self.plain((node, path, ""), &entries, observed);
                    merge(&mut self.advance_directives, read);
                }
                Meaning::Vigilance => {
                    let read = self.plain((node, path, ""), &entries, observed);
                    merge(&mut self.vigilance, read);
                }
                Meaning::Other => self.other(node, Some(code), entries.len()),
            },
            None => self.other(node, None, entries.len()),
        }
    }

    /// Collects the allergy observations among `entries` of a section that is not an
    /// allergy section (their templates or their intolerance type say what they are): an
    /// allergy written under the problems must not leave the allergies saying « aucune
    /// allergie connue ». The section is still read as its code says.
    fn stray(&mut self, entries: &[Node<'_, '_>]) {
        for entry in entries {
            for observation in entry.descendants().filter(is_allergy_observation) {
                // A family member's allergy (a family history) is theirs: its own section
                // reads it.
                if about_someone_else(observation, *entry) {
                    continue;
                }
                match read_allergy(observation) {
                    Some(Read::Item(item)) => self.stray_allergies.push(item),
                    Some(Read::Noted(said) | Read::NoInformation(said)) => {
                        if self.stray_statements.len() < MAX_NAMED_UNREADABLE
                            && !self.stray_statements.contains(&said)
                        {
                            self.stray_statements.push(said);
                        }
                    }
                    // A denial outside the allergy section decides nothing about it.
                    Some(Read::Absent(_) | Read::OtherPerson) => {}
                    // An allergy the reader cannot name is still an allergy: the section
                    // must not say « aucune allergie connue » (`allergies`).
                    None => self.stray_unreadable += 1,
                }
            }
        }
    }

    fn other(&mut self, node: Node<'_, '_>, code: Option<&str>, entries: usize) {
        let text = child(node, "text").and_then(narrative);
        self.other_sections.push(OtherSection {
            title: child(node, "title").map(text_of).and_then(non_empty),
            code: code.map(str::to_owned),
            entries,
            narrative_cut: text.as_ref().is_some_and(|t| t.cut),
            narrative: text.map(|t| t.text),
        });
    }

    /// A section whose entries are items or unreadable (every kind but allergies, which
    /// may also state an absence), one read per entry.
    fn plain<T>(
        &mut self,
        (node, path, topic): (Node<'_, '_>, &str, &str),
        entries: &[Node<'_, '_>],
        read: fn(Node<'_, '_>) -> Option<T>,
    ) -> Section<T> {
        self.read_section((node, path, topic), entries, read, |entry| vec![entry])
    }

    /// [`Self::plain`] for sections whose entries may be concern acts grouping several
    /// observations (problems): each observation is an item, or unreadable.
    fn each_observation<T>(
        &mut self,
        (node, path, topic): (Node<'_, '_>, &str, &str),
        entries: &[Node<'_, '_>],
        read: fn(Node<'_, '_>) -> Option<T>,
    ) -> Section<T> {
        self.read_section((node, path, topic), entries, read, observations)
    }

    /// Reads each of what `expand` finds in an entry (the entry itself, or its
    /// observations); an entry where it finds nothing is unreadable.
    fn read_section<'a, 'i, T>(
        &mut self,
        (node, path, topic): (Node<'a, 'i>, &str, &str),
        entries: &[Node<'a, 'i>],
        read: fn(Node<'_, '_>) -> Option<T>,
        expand: fn(Node<'a, 'i>) -> Vec<Node<'a, 'i>>,
    ) -> Section<T> {
        let mut section = section_shell::<T>(node);
        let (mut absent, mut no_information, mut reads) = (false, false, 0);
        for (i, entry) in entries.iter().enumerate() {
            let found = expand(*entry);
            if found.is_empty() {
                reads += 1;
                match absent_or_unknown(*entry, topic).filter(|_| !negated(*entry)) {
                    Some(stated) => {
                        absent |= stated.absence;
                        no_information |= stated.no_information;
                        section.statements.push(stated.said);
                    }
                    None => self.unreadable_entry(&mut section, path, i),
                }
            }
            for one in found {
                reads += 1;
                // A family member's problem or treatment (a `relatedSubject`) is theirs:
                // left out and counted, as the allergies' are.
                if about_someone_else(statement_of(one).unwrap_or(one), *entry) {
                    section.other_person_entries += 1;
                    continue;
                }
                // "No known medications" names no medicine: a statement, never an item.
                // Asked of each observation: a concern grouping a statement and a problem
                // keeps the problem.
                if let Some(stated) = absent_or_unknown(one, topic) {
                    // Denying a statement of absence or of no information (`negationInd`)
                    // says neither: the entry is unreadable.
                    if negated(one) {
                        self.unreadable_entry(&mut section, path, i);
                        continue;
                    }
                    absent |= stated.absence;
                    no_information |= stated.no_information;
                    section.statements.push(stated.said);
                    continue;
                }
                match read(one) {
                    Some(item) => section.items.push(item),
                    None => self.unreadable_entry(&mut section, path, i),
                }
            }
        }
        judge(&mut section, reads, absent, node.attribute("nullFlavor"));
        if section.status == SectionStatus::NotRecorded && no_information {
            // Said so, for `merge`: another section of the kind saying "none known" beside
            // it says two things.
            section.basis = NOTHING_KNOWN.into();
        }
        // "None known" beside "no information" says two things (docs/summary.md).
        if section.status == SectionStatus::NoneKnown && no_information {
            section.status = SectionStatus::Conflicting;
            section.basis = "a statement of absence next to one that nothing is known".into();
        } else if section.status == SectionStatus::NoneKnown && section.other_person_entries > 0 {
            // As for the allergies: if that judgement was wrong, they are the patient's,
            // and "none known" would hide them.
            section.status = SectionStatus::Conflicting;
            section.basis =
                "a statement of absence and entries left out as another person's".into();
        }
        section
    }

    /// The content of a level-1 body: text kept to show inline, a PDF kept to serve under
    /// the grant, anything else described but not shown.
    fn unstructured(&mut self, body: Node<'_, '_>) -> Unstructured {
        use base64::Engine as _;
        self.warnings.push(
            "the document is unstructured (CDA level 1: nonXMLBody): no section can be read".into(),
        );
        let text = child(body, "text");
        let declared = text
            .and_then(|t| t.attribute("mediaType"))
            .unwrap_or("text/plain")
            .to_ascii_lowercase();
        // The media type is echoed to the page and the logs: only a plain token passes.
        let media_type = if declared.len() <= 64
            && declared.contains('/')
            && declared
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.+-".contains(&b))
        {
            declared
        } else {
            "application/octet-stream".to_owned()
        };
        let mut out = Unstructured {
            media_type,
            size: 0,
            text: None,
            pdf: false,
            by_reference: false,
            content: None,
        };
        let Some(text) = text else {
            self.warnings
                .push("component/nonXMLBody: no text element, nothing to show".into());
            return out;
        };
        let raw: String = text
            .children()
            .filter(Node::is_text)
            .filter_map(|t| t.text())
            .collect();
        if raw.trim().is_empty() {
            out.by_reference = child(text, "reference").is_some();
            self.warnings.push(if out.by_reference {
                "component/nonXMLBody/text: the content is only referenced, not held in the document".into()
            } else {
                "component/nonXMLBody/text: empty".into()
            });
            return out;
        }
        let bytes = if text.attribute("representation") == Some("B64") {
            let compact: String = raw.split_ascii_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(bytes) => bytes,
                Err(_) => {
                    self.bad_attachments += 1;
                    self.warnings
                        .push("component/nonXMLBody/text: the content is not valid base64".into());
                    return out;
                }
            }
        } else {
            raw.into_bytes()
        };
        out.size = bytes.len();
        match out.media_type.as_str() {
            "application/pdf" if bytes.starts_with(b"%PDF-") => {
                out.pdf = true;
                out.content = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
            }
            "application/pdf" => {
                self.bad_attachments += 1;
                self.warnings.push(
                    "component/nonXMLBody/text: declared application/pdf but is not a PDF".into(),
                );
            }
            "text/plain" => match String::from_utf8(bytes) {
                Ok(text) => out.text = Some(text),
                Err(_) => {
                    self.bad_attachments += 1;
                    self.warnings
                        .push("component/nonXMLBody/text: the text is not UTF-8".into());
                }
            },
            other => self.warnings.push(format!(
                "component/nonXMLBody/text: content of type {other} is not shown"
            )),
        }
        out
    }

    fn unreadable_entry<T>(&mut self, section: &mut Section<T>, path: &str, i: usize) {
        section.unreadable_entries += 1;
        self.unreadable += 1;
        // Named up to a point, then only counted: a hostile document's millions of empty
        // entries, each named by a long path, would otherwise fill memory.
        if self.unreadable <= MAX_NAMED_UNREADABLE {
            self.warnings.push(format!(
                "{path}/entry[{i}]: not a readable entry of its section"
            ));
        }
    }

    /// The allergies, with those found in other sections: listed, and the section
    /// recorded, or conflicting beside a statement of absence.
    fn allergies(&mut self) -> Option<Section<Allergy>> {
        let mut section = self.allergies.take();
        // "None known" stands only if nothing else in the allergy sections speaks against
        // it: a statement that nothing is known (the FHIR reader's rule too), or a section
        // of text only, whose words the reader cannot weigh (the page shows the text of a
        // conflicting section).
        if let Some(held) = section.as_mut()
            && held.status == SectionStatus::NoneKnown
        {
            if self.allergies_no_information {
                held.status = SectionStatus::Conflicting;
                held.basis = "a statement of absence and one that nothing is known".into();
            } else if held.other_person_entries > 0 {
                // As the FHIR reader rules: if that judgement was wrong, they are the
                // patient's, and "none known" would hide them.
                held.status = SectionStatus::Conflicting;
                held.basis =
                    "a statement of absence and entries left out as another person's".into();
            } else if self.allergy_text_only {
                held.status = SectionStatus::Conflicting;
                held.basis =
                    "a statement of absence next to an allergy section of text only".into();
            }
        }
        if self.stray_unreadable > 0 {
            let held = section.get_or_insert_with(|| absent("48765-2"));
            held.unreadable_entries += self.stray_unreadable;
            self.warnings.push(format!(
                "{} allergy entr{} outside the allergy section could not be read",
                self.stray_unreadable,
                if self.stray_unreadable == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
            match held.status {
                SectionStatus::NoneKnown => {
                    held.status = SectionStatus::Conflicting;
                    held.basis =
                        "a statement of absence next to an unreadable allergy in another section"
                            .into();
                }
                SectionStatus::NotRecorded => {
                    held.status = SectionStatus::Unreadable;
                    held.basis = "an allergy entry in another section could not be read".into();
                }
                _ => {}
            }
        }
        if self.stray_allergies.is_empty() && self.stray_statements.is_empty() {
            return section;
        }
        let held = section.get_or_insert_with(|| absent("48765-2"));
        held.statements.append(&mut self.stray_statements);
        // The same entry written again elsewhere (a vigilance section repeating the
        // allergies) is shown once; one that differs in anything is shown as written.
        // A set, not a search of the list per item: a hostile document can write
        // thousands of allergies outside the section.
        let mut found = 0;
        let mut shown: std::collections::HashSet<Allergy> = held.items.iter().cloned().collect();
        for item in std::mem::take(&mut self.stray_allergies) {
            if shown.insert(item.clone()) {
                held.items.push(item);
                found += 1;
            }
        }
        if found == 0 {
            return section;
        }
        self.warnings.push(format!(
            "{found} allergy entr{} found outside the allergy section",
            if found == 1 { "y" } else { "ies" }
        ));
        (held.status, held.basis) = if self.allergies_absent {
            (
                SectionStatus::Conflicting,
                "allergies in another section next to a statement of absence".into(),
            )
        } else if held.status == SectionStatus::Recorded {
            (SectionStatus::Recorded, std::mem::take(&mut held.basis))
        } else {
            (SectionStatus::Recorded, "entries in another section".into())
        };
        section
    }

    fn finish(
        mut self,
        document: DocumentInfo,
        patient: Option<DocumentPatient>,
    ) -> CriticalSummary {
        CriticalSummary {
            document,
            patient_in_document: patient,
            allergies: self.allergies().unwrap_or_else(|| absent("48765-2")),
            medications: self.medications.unwrap_or_else(|| absent("10160-0")),
            problems: self.problems.unwrap_or_else(|| absent("11450-4")),
            past_problems: self.past_problems.unwrap_or_else(|| absent("11348-0")),
            procedures: self.procedures.unwrap_or_else(|| absent("47519-4")),
            immunizations: self.immunizations,
            devices: self.devices,
            pregnancy: self.pregnancy,
            advance_directives: self.advance_directives,
            vigilance: self.vigilance,
            dispensations: self.dispensations,
            unstructured: None,
            other_sections: self.other_sections,
            documents: Vec::new(),
            provenance: Vec::new(),
            defects: DocumentDefects {
                unreadable_entries: self.unreadable,
                bad_attachments: self.bad_attachments,
                ..DocumentDefects::default()
            },
            warnings: {
                let mut warnings = self.warnings;
                if self.unreadable > MAX_NAMED_UNREADABLE {
                    warnings.push(format!(
                        "… and {} more unreadable entries",
                        self.unreadable - MAX_NAMED_UNREADABLE
                    ));
                }
                warnings
            },
            notices: Vec::new(),
        }
    }
}

/// A section the document does not have (`what`: its code).
fn absent<T>(what: &str) -> Section<T> {
    Section {
        status: SectionStatus::NotRecorded,
        basis: format!("section absent ({what})"),
        title: None,
        items: Vec::new(),
        unlisted_items: Vec::new(),
        statements: Vec::new(),
        unreadable_entries: 0,
        duplicate_entries: 0,
        other_person_entries: 0,
        narrative: None,
        narrative_cut: false,
    }
}

enum Read<T> {
    Item(T),
    /// A statement that there is none (of the section's kind).
    Absent(String),
    /// A statement worth showing that establishes nothing about the section as a whole.
    Noted(String),
    /// A statement that nothing is known of the section's kind (IPS `no-allergy-info`):
    /// next to a "none known", the section says two things.
    NoInformation(String),
    /// About someone other than the patient (a `relatedSubject`): left out, counted.
    OtherPerson,
}

/// Whether `node`, or a statement it sits in up to `top`, is about someone other than the
/// patient: its `subject` names a `relatedSubject` (a family member).
fn about_someone_else(node: Node<'_, '_>, top: Node<'_, '_>) -> bool {
    let mut at = Some(node);
    while let Some(n) = at {
        if child(n, "subject")
            .and_then(|s| child(s, "relatedSubject"))
            .is_some()
        {
            return true;
        }
        if n == top {
            break;
        }
        at = n.parent();
    }
    false
}

/// Allergy and intolerance observation templates: IHE PCC's (which the French profiles
/// build on), CCD's alert, C-CDA's and the IPS's (docs/summary.md).
const ALLERGY_TEMPLATES: [&str; 4] = [
    "1.3.6.1.4.1.19376.1.5.3.1.4.6",
    "2.16.840.1.113883.10.20.1.18",
    "2.16.840.1.113883.10.20.22.4.7",
    "2.16.840.1.113883.10.22.4.1",
];

/// HL7 v3 ObservationIntoleranceType, the code system of an allergy observation's code
/// in PCC: allergies and intolerances to drugs, food, environment, or anything.
const INTOLERANCE_TYPES: (&str, [&str; 13]) = (
    "2.16.840.1.113883.5.4",
    [
        "ALG", "DALG", "EALG", "FALG", "INT", "DINT", "EINT", "FINT", "OINT", "NAINT", "DNAINT",
        "ENAINT", "FNAINT",
    ],
);

/// SNOMED CT allergy and intolerance types an observation's code may name (allergy to a
/// substance, drug, food; propensity to adverse reactions, to a drug, to food; drug
/// intolerance).
const SNOMED_ALLERGY_TYPES: [&str; 7] = [
    "419199007",
    "416098002",
    "414285001",
    "420134006",
    "419511003",
    "418471000",
    "59037007",
];

/// A section's LOINC code: its `code`'s, or a LOINC translation's when the code is in
/// another system (a local code with its LOINC beside it).
fn section_code<'a>(section: Node<'a, '_>) -> Option<&'a str> {
    let code = child(section, "code")?;
    let loinc = |c: &Node<'_, '_>| c.attribute("codeSystem") == Some(LOINC);
    if code.attribute("codeSystem").is_none() || loinc(&code) {
        return code.attribute("code");
    }
    children(code, "translation")
        .find(loinc)
        .and_then(|t| t.attribute("code"))
        .or_else(|| code.attribute("code"))
}

/// Whether `node` is an allergy or intolerance observation, by its template or its code.
fn is_allergy_observation(node: &Node<'_, '_>) -> bool {
    if !is(node, "observation") {
        return false;
    }
    let templated = children(*node, "templateId").any(|t| {
        t.attribute("root")
            .is_some_and(|r| ALLERGY_TEMPLATES.contains(&r))
    });
    let (system, types) = INTOLERANCE_TYPES;
    templated
        || child(*node, "code").is_some_and(|c| {
            let code = c.attribute("code").unwrap_or_default();
            match c.attribute("codeSystem") {
                Some(s) if s == system => types.contains(&code),
                Some(SNOMED) => SNOMED_ALLERGY_TYPES.contains(&code),
                _ => false,
            }
        })
}

/// The first observation of an entry: directly, or inside a concern act.
fn observation<'a, 'i>(entry: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    observations(entry).into_iter().next()
}

/// Every observation of an entry: the one it holds directly, or each one its concern act
/// holds (a PCC concern may group several allergies or problems: none is dropped).
fn observations<'a, 'i>(entry: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
    if let Some(direct) = child(entry, "observation") {
        return vec![direct];
    }
    // An organizer (a cluster) groups its observations as components.
    if let Some(organizer) = child(entry, "organizer") {
        return children(organizer, "component")
            .filter_map(|c| child(c, "observation"))
            .collect();
    }
    child(entry, "act")
        .into_iter()
        .flat_map(|act| children(act, "entryRelationship"))
        .filter_map(|r| child(r, "observation"))
        .collect()
}

/// What an allergy entry says: one read per observation (a concern act may hold several),
/// `None` for each that cannot be read.
fn allergies(entry: Node<'_, '_>) -> Vec<Option<Read<Allergy>>> {
    let observations = observations(entry);
    if observations.is_empty() {
        return vec![stated(entry).filter(|_| !negated(entry))];
    }
    // Each observation for itself: one coded "no known food allergy" says nothing of the
    // penicillin allergy grouped with it.
    observations
        .into_iter()
        .map(|one| {
            if about_someone_else(one, entry) {
                return Some(Read::OtherPerson);
            }
            read_allergy(one)
        })
        .collect()
}

/// What an allergy observation (or an entry without one) states of allergies in the IPS
/// absent-or-unknown codes, if it does.
fn stated(node: Node<'_, '_>) -> Option<Read<Allergy>> {
    stated_code(node).map(|(value, said)| match value.as_str() {
        "no-known-allergies" => Read::Absent(said),
        "no-allergy-info" => Read::NoInformation(said),
        _ => Read::Noted(said),
    })
}

/// One allergy observation: a statement in the absent-or-unknown codes, else an allergy
/// (or a denial); wherever it is filed, so that a "no known allergies" outside the allergy
/// section is never taken for an allergy named by its value.
fn read_allergy(observation: Node<'_, '_>) -> Option<Read<Allergy>> {
    // Denying a statement of absence ("not: no known allergies") says there is one,
    // unnamed; denying "no information" says nothing either way: neither may stand as
    // what it denies.
    if negated(observation) && stated(observation).is_some() {
        return None;
    }
    // A substance named as the agent is an allergy, whatever "no known allergies" code
    // stands beside it: the statement cannot take the named substance with it.
    if observation.attribute("negationInd") != Some("true")
        && agent_words(observation).is_some()
        && let Some(item @ Read::Item(_)) = allergy(observation)
    {
        return Some(item);
    }
    stated(observation).or_else(|| allergy(observation))
}

/// The observation's agent (`participant/participantRole/playingEntity`) and what names
/// it: its code's words, else the code itself, else the entity's `name` (a free-text
/// substance is written with a code whose `nullFlavor` says it is not coded).
fn agent_words<'a, 'i>(observation: Node<'a, 'i>) -> Option<(Node<'a, 'i>, String)> {
    let entity = child(observation, "participant")
        .and_then(|p| child(p, "participantRole"))
        .and_then(|r| child(r, "playingEntity"))?;
    let code = child(entity, "code");
    let named = code.and_then(|c| {
        words(c).or_else(|| {
            c.attribute("nullFlavor")
                .is_none()
                .then(|| c.attribute("code").map(|v| format!("code {v}")))
                .flatten()
        })
    });
    let name = || child(entity, "name").map(text_of).and_then(non_empty);
    match (code, named.or_else(name)) {
        (_, None) => None,
        (Some(code), Some(said)) => Some((code, said)),
        (None, Some(said)) => Some((entity, said)),
    }
}

fn allergy(observation: Node<'_, '_>) -> Option<Read<Allergy>> {
    let code = child(observation, "code");
    let negated = observation.attribute("negationInd") == Some("true");
    let value = child(observation, "value");
    let stated_absent = [code, value]
        .iter()
        .flatten()
        .any(|c| c.attribute("code") == Some(NO_KNOWN_ALLERGY));
    let agent = agent_words(observation);
    if negated && let Some((_, what)) = &agent {
        // "Not allergic to X" (X named, coded, or in free text) says nothing of the other
        // substances: noted, never read as "no known allergies".
        return Some(Read::Noted(format!("absence d'allergie à : {what}")));
    }
    if negated {
        let said = code
            .and_then(words)
            .unwrap_or_else(|| "absence d'allergie".into());
        // Without an agent, what is denied is the value: allergy as such, or one kind.
        // Without a coded value, the observation's own type says it: only "allergy"
        // (ALG) denies them all; "drug allergy" (DALG), a food or an environmental one,
        // an intolerance, or an assertion naming nothing leave the others unknown.
        // Denying "no known allergy" (as the value, or as the code with no value) says
        // there is one, unnamed: read as neither, so that the section is unreadable, or
        // conflicting beside a "none known".
        let own_code = code.and_then(|c| c.attribute("code"));
        if value.is_none() && own_code == Some(NO_KNOWN_ALLERGY) {
            return None;
        }
        return match value.and_then(|v| v.attribute("code")) {
            Some(NO_KNOWN_ALLERGY) => None,
            Some(denied) if GENERAL_ALLERGY.contains(&denied) => {
                Some(Read::Absent(format!("absence : {said}")))
            }
            Some(denied) => {
                let kind = value
                    .and_then(words)
                    .unwrap_or_else(|| format!("code {denied}"));
                Some(Read::Noted(format!("absence : {kind}")))
            }
            None if code
                .and_then(|c| c.attribute("code"))
                .is_some_and(|c| c == "ALG" || GENERAL_ALLERGY.contains(&c)) =>
            {
                Some(Read::Absent(format!("absence : {said}")))
            }
            None => Some(Read::Noted(format!("absence : {said}"))),
        };
    }
    // A substance named as the agent makes this an allergy to it, whatever "no known
    // allergy" code stands beside it (docs/summary.md): read on below, by the agent.
    if stated_absent && agent.is_none() {
        let said = code
            .and_then(words)
            .unwrap_or_else(|| "absence d'allergie".into());
        return Some(Read::Absent(said));
    }
    // The agent by its words, else by its code, else by its name; without an agent, what
    // the value says ("allergy to penicillin"): an allergy the document names at all is
    // shown.
    let named_value = value.filter(|v| v.attribute("nullFlavor").is_none());
    let (substance, coded) = match agent {
        Some((coded, said)) => (said, coded),
        None => {
            let value = named_value?;
            (words(value)?, value)
        }
    };
    let related = |code: &str| related_value(observation, code);
    let verification_status = verification_status(observation);
    // A refuted allergy ("not allergic to X after all") or one entered in error is no
    // allergy: a note, like a denied one, never an item the physician would avoid a drug
    // for, nor one that contradicts a "none known" (the FHIR reader leaves them out).
    match verification_status.as_deref() {
        Some("refuted") => return Some(Read::Noted(format!("allergie réfutée : {substance}"))),
        Some("entered-in-error") => {
            return Some(Read::Noted(format!(
                "allergie annulée (saisie par erreur) : {substance}"
            )));
        }
        _ => {}
    }
    // LOINC 82606-5 is the criticality observation of IPS-FR allergies (HL7 v3
    // criticality codes, mapped onto FHIR's so that the page flags a high one the same
    // way); SEV the PCC severity, shown as written.
    let criticality = related("82606-5")
        .and_then(|v| v.attribute("code"))
        .map(|c| match c {
            "CRITH" => "high".to_owned(),
            "CRITL" => "low".to_owned(),
            "CRITU" => "unable-to-assess".to_owned(),
            other => other.to_owned(),
        })
        .or_else(|| {
            related("SEV")
                .and_then(|v| v.attribute("displayName").or(v.attribute("code")))
                .map(str::to_owned)
        });
    let reactions = children(observation, "entryRelationship")
        .filter(|r| r.attribute("typeCode") == Some("MFST"))
        .filter_map(|r| child(r, "observation"))
        .filter_map(|o| child(o, "value"))
        .filter_map(words)
        .collect();
    Some(Read::Item(Allergy {
        substance,
        codes: codes(coded),
        criticality,
        kind: code
            .and_then(|c| c.attribute("displayName"))
            .map(str::to_owned),
        categories: Vec::new(),
        clinical_status: clinical_status(observation),
        verification_status,
        reactions,
        onset: child(observation, "effectiveTime")
            .and_then(|t| child(t, "low"))
            .and_then(|l| l.attribute("value"))
            .map(str::to_owned),
    }))
}

/// The value of the observation coded `code` related to `observation` (its
/// `entryRelationship`s): a status, a criticality, a certainty.
fn related_value<'a, 'i>(observation: Node<'a, 'i>, code: &str) -> Option<Node<'a, 'i>> {
    children(observation, "entryRelationship")
        .filter_map(|r| child(r, "observation"))
        .find(|o| child(*o, "code").and_then(|c| c.attribute("code")) == Some(code))
        .and_then(|o| child(o, "value"))
}

/// The clinical status of an allergy or a problem (LOINC 33999-4, "statut du problème"),
/// in FHIR's words so that the page says « résolu » or « inactif » the same way for both
/// readers: the CI-SIS writes FHIR's codes, IHE PCC SNOMED CT's. Another value is shown
/// as written.
fn clinical_status(observation: Node<'_, '_>) -> Option<String> {
    let value = related_value(observation, "33999-4")?;
    let code = value.attribute("code");
    let known = match code {
        Some("55561003") => Some("active"),
        Some("73425007") => Some("inactive"),
        Some("413322009") => Some("resolved"),
        Some(
            word @ ("active" | "inactive" | "resolved" | "recurrence" | "relapse" | "remission"),
        ) => Some(word),
        _ => None,
    };
    known.map(str::to_owned).or_else(|| {
        words(value).or_else(|| code.map(|c| crate::encoding::peer_token(c, 40, "-._", None)))
    })
}

/// The certainty of an allergy or a problem (LOINC 66455-7, "certitude", in FHIR's
/// verification codes; IHE's `uncertaintyCode` `U` says unconfirmed).
fn verification_status(observation: Node<'_, '_>) -> Option<String> {
    let stated = related_value(observation, "66455-7")
        .and_then(|v| v.attribute("code"))
        .and_then(|code| match code {
            "unconfirmed" | "provisional" | "differential" | "confirmed" | "refuted"
            | "entered-in-error" => Some(code.to_owned()),
            _ => None,
        });
    stated.or_else(|| {
        (child(observation, "uncertaintyCode").and_then(|c| c.attribute("code")) == Some("U"))
            .then(|| "unconfirmed".to_owned())
    })
}

fn medication(entry: Node<'_, '_>) -> Option<Medication> {
    let administration = child(entry, "substanceAdministration")?;
    let material = child(administration, "consumable")
        .and_then(|c| child(c, "manufacturedProduct"))
        .and_then(|p| child(p, "manufacturedMaterial"))?;
    let code = child(material, "code");
    let name = code
        .and_then(words)
        .or_else(|| child(material, "name").map(text_of).and_then(non_empty))?;
    let period = children(administration, "effectiveTime")
        .find_map(|t| child(t, "low").and_then(|l| l.attribute("value")))
        .map(str::to_owned);
    let ended = children(administration, "effectiveTime")
        .find_map(|t| child(t, "high").and_then(|h| h.attribute("value")))
        .is_some_and(before_today);
    // The CI-SIS and IHE PCC treatment entries fix `statusCode` to `completed` (the
    // statement is complete, not the treatment): it never says a treatment stopped. A
    // treatment is stopped when its period ended (`high` before today); an order not to
    // give it (`negationInd`) says so, whatever its status.
    let status = if administration.attribute("negationInd") == Some("true") {
        Some("do-not-perform".to_owned())
    } else if ended {
        Some("completed".to_owned())
    } else {
        child(administration, "statusCode")
            .and_then(|s| s.attribute("code"))
            .filter(|code| *code != "completed")
            .map(str::to_owned)
    };
    let dosage = child(administration, "doseQuantity")
        .map(|d| {
            // UCUM writes a unit that is a thing as an annotation: {comprimé}.
            let unit = d.attribute("unit").map(|u| u.trim_matches(['{', '}']));
            [d.attribute("value"), unit]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .and_then(non_empty)
        .into_iter()
        .chain(
            child(administration, "text")
                .map(text_of)
                .and_then(non_empty),
        )
        .collect();
    Some(Medication {
        name,
        codes: code.map(codes).unwrap_or_default(),
        dosage,
        status,
        source: "substanceAdministration".into(),
        period,
    })
}

/// Whether an HL7 time (`YYYYMMDD…`, or a shorter `YYYY[MM]`) is before today (UTC).
fn before_today(value: &str) -> bool {
    let digits: String = value
        .chars()
        .take_while(char::is_ascii_digit)
        .take(8)
        .collect();
    if digits.len() < 4 {
        return false;
    }
    let today: String = crate::clock::now()
        .0
        .chars()
        .filter(char::is_ascii_digit)
        .take(8)
        .collect();
    digits.as_str() < &today[..digits.len().min(today.len())]
}

fn problem(observation: Node<'_, '_>) -> Option<Problem> {
    let value = child(observation, "value").filter(|v| {
        v.attribute((XSI, "type"))
            .is_none_or(|t| t.ends_with("CD") || t.ends_with("CE"))
    })?;
    let name = words(value)?;
    // "No diabetes" is not diabetes: said as an absence, never listed as the problem.
    let name = if observation.attribute("negationInd") == Some("true") {
        format!("absence : {name}")
    } else {
        name
    };
    let time = child(observation, "effectiveTime");
    let at = |edge: &str| {
        time.and_then(|t| child(t, edge))
            .and_then(|n| n.attribute("value"))
            .map(str::to_owned)
    };
    Some(Problem {
        name,
        codes: codes(value),
        clinical_status: clinical_status(observation),
        verification_status: verification_status(observation),
        onset: at("low"),
        abatement: at("high"),
    })
}

fn procedure(entry: Node<'_, '_>) -> Option<Procedure> {
    let procedure = child(entry, "procedure")?;
    let code = child(procedure, "code")?;
    Some(Procedure {
        name: words(code)?,
        codes: codes(code),
        status: child(procedure, "statusCode")
            .and_then(|s| s.attribute("code"))
            .map(str::to_owned),
        performed: child(procedure, "effectiveTime")
            .and_then(|t| {
                t.attribute("value")
                    .or_else(|| child(t, "low")?.attribute("value"))
            })
            .map(str::to_owned),
    })
}

/// `read` added to what `slot` already holds: a document may split one kind over several
/// sections (a VSM's treatments and long-term treatment). Items from both are kept; an
/// item next to a statement of absence makes the whole conflicting.
/// Appends a section's text to what is held, on a line of its own. In place: a copy of
/// what is held for each section merged would be quadratic in a document of many
/// same-coded sections.
fn append_narrative(held: &mut Option<String>, more: Option<String>) {
    match (held, more) {
        (Some(held), Some(more)) => {
            held.push('\n');
            held.push_str(&more);
        }
        (held @ None, more) => *held = more,
        (Some(_), None) => {}
    }
}

/// The basis of a section not recorded because it says that nothing is known.
const NOTHING_KNOWN: &str = "a statement that nothing is known";

fn merge<T>(slot: &mut Option<Section<T>>, read: Section<T>) {
    let Some(held) = slot else {
        *slot = Some(read);
        return;
    };
    use SectionStatus::{Conflicting, NoneKnown, NotRecorded, Recorded, Unreadable};
    // As within one section (`judge`): an entry that could not be read may be exactly
    // what the absence denies.
    let unreadable_beside_absence = (held.status == NoneKnown && read.unreadable_entries > 0)
        || (read.status == NoneKnown && held.unreadable_entries > 0);
    // A section "not recorded" because it says that nothing is known (`no-…-info`): beside
    // "none known" in another section of the same kind, the two say two things, as they
    // would in one section (`read_section`).
    let said_nothing_known = |s: &Section<T>| s.status == NotRecorded && s.basis == NOTHING_KNOWN;
    let no_information_beside_absence = (held.status == NoneKnown && said_nothing_known(&read))
        || (read.status == NoneKnown && said_nothing_known(held));
    // Entries left out as another person's: if that judgement was wrong, they are the
    // patient's, and "none known" would hide them (as within one section).
    let others_beside_absence = (held.status == NoneKnown && read.other_person_entries > 0)
        || (read.status == NoneKnown && held.other_person_entries > 0);
    let status = match (held.status, read.status) {
        (Conflicting, _) | (_, Conflicting) => Conflicting,
        _ if unreadable_beside_absence
            || no_information_beside_absence
            || others_beside_absence =>
        {
            Conflicting
        }
        (Recorded, NoneKnown) | (NoneKnown, Recorded) => Conflicting,
        (Recorded, _) | (_, Recorded) => Recorded,
        (NoneKnown, _) | (_, NoneKnown) => NoneKnown,
        (Unreadable, _) | (_, Unreadable) => Unreadable,
        (NotRecorded, NotRecorded) => NotRecorded,
    };
    if status != held.status {
        held.basis = if status == read.status {
            read.basis
        } else if no_information_beside_absence {
            "a statement of absence in one section, one that nothing is known in another".into()
        } else if others_beside_absence {
            "a statement of absence and entries left out as another person's".into()
        } else {
            "items in one section, a statement of absence in another".into()
        };
    }
    held.status = status;
    held.items.extend(read.items);
    held.statements.extend(read.statements);
    held.unreadable_entries += read.unreadable_entries;
    held.other_person_entries += read.other_person_entries;
    append_narrative(&mut held.narrative, read.narrative);
    held.narrative_cut |= read.narrative_cut;
    if held.title.is_none() {
        held.title = read.title;
    }
}

/// The date an act happened: `effectiveTime@value`, else its `low`.
fn when(node: Node<'_, '_>) -> Option<String> {
    children(node, "effectiveTime")
        .find_map(|t| {
            t.attribute("value")
                .or_else(|| child(t, "low").and_then(|l| l.attribute("value")))
        })
        .map(str::to_owned)
}

/// The product an act is about: its code's words, else the material's name.
fn material(product: Node<'_, '_>) -> Option<(String, Vec<Code>)> {
    let material =
        child(product, "manufacturedProduct").and_then(|p| child(p, "manufacturedMaterial"))?;
    let code = child(material, "code");
    // The code's own words first; then the material's name (a reimbursement history
    // codes only in translations, and names the product here); then a translation's.
    let own = code.and_then(|c| {
        c.attribute("displayName")
            .map(str::to_owned)
            .or_else(|| child(c, "originalText").map(text_of).and_then(non_empty))
    });
    let name = own
        .or_else(|| child(material, "name").map(text_of).and_then(non_empty))
        .or_else(|| code.and_then(words))?;
    Some((name, code.map(codes).unwrap_or_default()))
}

/// A dispensation of a reimbursement history: a `supply` (IHE PCC) or a
/// `substanceAdministration` carrying one, with its product and date.
fn dispensation(entry: Node<'_, '_>) -> Option<Dispensation> {
    let act = child(entry, "supply").or_else(|| {
        child(entry, "substanceAdministration").map(|a| {
            children(a, "entryRelationship")
                .find_map(|r| child(r, "supply"))
                .unwrap_or(a)
        })
    })?;
    let (name, codes) = child(act, "product")
        .or_else(|| child(act, "consumable"))
        .and_then(material)
        .or_else(|| {
            // A supply nested in an administration names the product on the
            // administration.
            act.parent_element()
                .and_then(|r| r.parent_element())
                .and_then(|a| child(a, "consumable"))
                .and_then(material)
        })
        .or_else(|| device(entry).map(|d| (d.name, d.codes)))?;
    let quantity = child(act, "quantity")
        .map(|q| {
            [q.attribute("value"), q.attribute("unit")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .and_then(non_empty);
    // A reimbursement history dates the handing out on the pharmacy (the performer).
    let handed_out = child(act, "performer")
        .and_then(|p| child(p, "time"))
        .and_then(|t| {
            t.attribute("value")
                .or_else(|| child(t, "low")?.attribute("value"))
        })
        .map(str::to_owned);
    Some(Dispensation {
        name,
        codes,
        date: handed_out.or_else(|| when(act)),
        quantity,
    })
}

/// A vaccination: a `substanceAdministration` of a vaccine. One recorded as not given
/// (`negationInd`) is not a vaccination.
fn immunization(entry: Node<'_, '_>) -> Option<Immunization> {
    let administration = child(entry, "substanceAdministration")?;
    if administration.attribute("negationInd") == Some("true") {
        return None;
    }
    let (vaccine, codes) = child(administration, "consumable").and_then(material)?;
    Some(Immunization {
        vaccine,
        codes,
        status: child(administration, "statusCode")
            .and_then(|s| s.attribute("code"))
            .map(str::to_owned),
        date: when(administration),
    })
}

/// A medical device: the `playingDevice` of a `supply` (or of any act naming one).
fn device(entry: Node<'_, '_>) -> Option<Device> {
    let device = entry.descendants().find(|n| is(n, "playingDevice"))?;
    let code = child(device, "code");
    let name = code.and_then(words).or_else(|| {
        child(device, "manufacturerModelName")
            .map(text_of)
            .and_then(non_empty)
    })?;
    Some(Device {
        name,
        codes: code.map(codes).unwrap_or_default(),
    })
}

/// A plain observation (pregnancy status, an advance directive): what, its value as text,
/// when.
fn observed(entry: Node<'_, '_>) -> Option<Observation> {
    let observation = observation(entry).or_else(|| {
        child(entry, "organizer")
            .into_iter()
            .flat_map(|o| children(o, "component"))
            .find_map(|c| child(c, "observation"))
    })?;
    let name = child(observation, "code").and_then(words)?;
    let value = child(observation, "value").and_then(|v| {
        // A yes/no answer (BL), said in the physician's language.
        if v.attribute((XSI, "type"))
            .is_some_and(|t| t.ends_with("BL"))
        {
            return match v.attribute("value") {
                Some("true") => Some("oui".to_owned()),
                Some("false") => Some("non".to_owned()),
                _ => v.attribute("nullFlavor").map(|f| format!("inconnu ({f})")),
            };
        }
        words(v)
            .or_else(|| {
                let amount = v.attribute("value")?;
                Some(match v.attribute("unit") {
                    Some(unit) if unit != "1" => format!("{amount} {unit}"),
                    _ => amount.to_owned(),
                })
            })
            .or_else(|| non_empty(text_of(v)))
    });
    let negated = observation.attribute("negationInd") == Some("true");
    Some(Observation {
        name: if negated {
            format!("non : {name}")
        } else {
            name
        },
        value,
        date: when(observation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roxmltree::Document;

    fn level_1(text: &str) -> CriticalSummary {
        extract(
            format!(
                "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><code code=\"11488-4\"/><component><nonXMLBody>{text}</nonXMLBody></component></ClinicalDocument>"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// An element's words stop at a bound, on a character boundary, marked as cut.
    #[test]
    fn words_are_bounded() {
        let long = "é".repeat(MAX_WORDS_BYTES);
        let xml =
            format!("<originalText xmlns=\"urn:hl7-org:v3\">court {long} suite</originalText>");
        let doc = Document::parse(&xml).unwrap();
        let text = text_of(doc.root_element());
        assert!(
            text.starts_with("court éé") && text.ends_with('…'),
            "{}",
            &text[..20]
        );
        assert!(text.len() <= MAX_WORDS_BYTES + '…'.len_utf8());
        let doc = Document::parse("<t xmlns=\"urn:hl7-org:v3\"> a  b\n<x>c</x> </t>").unwrap();
        assert_eq!(text_of(doc.root_element()), "a b c");
    }

    #[test]
    fn the_narrative_block_keeps_its_lines_and_cells() {
        let xml = "<text xmlns=\"urn:hl7-org:v3\"><paragraph>Vit <content styleCode=\"Bold\">seule</content>.</paragraph>\
            <table><thead><tr><th>Quoi</th><th>Quand</th></tr></thead><tbody><tr><td>Pose de <linkHtml href=\"#x\">stent</linkHtml></td><td/><td>2019</td></tr></tbody></table>\
            <list><item>un</item><item>deux<br/>trois</item></list>fin</text>";
        let doc = Document::parse(xml).unwrap();
        let read = narrative(doc.root_element()).unwrap();
        assert_eq!(
            read.text,
            "Vit seule.\nQuoi | Quand\nPose de stent | | 2019\nun\ndeux\ntrois\nfin"
        );
        assert!(!read.cut);
        let empty = Document::parse("<text xmlns=\"urn:hl7-org:v3\"> <br/> </text>").unwrap();
        assert!(narrative(empty.root_element()).is_none());
    }

    /// A narrative block past the bound is cut as a FHIR narrative is, and says so: before,
    /// a CDA text was kept whole whatever its size, and a cut FHIR one only ended with `…`.
    #[test]
    fn a_long_narrative_block_is_cut_and_marked() {
        let xml = format!(
            "<text xmlns=\"urn:hl7-org:v3\"><paragraph>{}</paragraph><paragraph>Allergie pénicilline</paragraph></text>",
            "mot ".repeat(6_000)
        );
        let doc = Document::parse(&xml).unwrap();
        let read = narrative(doc.root_element()).unwrap();
        assert!(read.cut && read.text.ends_with('…') && !read.text.contains("Allergie"));
    }

    #[test]
    fn merged_sections_keep_every_item_and_conflict_on_an_absence() {
        let section = |status, items: Vec<&str>, statements: Vec<&str>| Section {
            status,
            basis: format!("{status:?}"),
            title: None,
            items: items.into_iter().map(str::to_owned).collect(),
            unlisted_items: Vec::new(),
            statements: statements.into_iter().map(str::to_owned).collect(),
            unreadable_entries: 0,
            duplicate_entries: 0,
            other_person_entries: 0,
            narrative: Some("a".into()),
            narrative_cut: false,
        };
        let mut slot = None;
        merge(
            &mut slot,
            section(SectionStatus::Recorded, vec!["x"], vec![]),
        );
        merge(
            &mut slot,
            section(SectionStatus::NotRecorded, vec![], vec![]),
        );
        let held = slot.as_ref().unwrap();
        assert_eq!(held.status, SectionStatus::Recorded);
        assert_eq!(held.narrative.as_deref(), Some("a\na"));
        assert!(!held.narrative_cut);
        // One cut text among those merged: the whole is marked.
        let mut cut = section(SectionStatus::NotRecorded, vec![], vec![]);
        cut.narrative_cut = true;
        let mut marked = slot.clone();
        merge(&mut marked, cut);
        assert!(marked.is_some_and(|held| held.narrative_cut));
        merge(
            &mut slot,
            section(SectionStatus::NoneKnown, vec![], vec!["aucun"]),
        );
        let held = slot.as_ref().unwrap();
        assert_eq!(held.status, SectionStatus::Conflicting);
        assert_eq!(
            held.basis,
            "items in one section, a statement of absence in another"
        );
        assert_eq!((held.items.len(), held.statements.len()), (1, 1));
        // Unreadable and not recorded together: unreadable (something was there).
        let mut slot = None;
        merge(
            &mut slot,
            section(SectionStatus::NotRecorded, vec![], vec![]),
        );
        merge(
            &mut slot,
            section(SectionStatus::Unreadable, vec![], vec![]),
        );
        assert_eq!(slot.unwrap().status, SectionStatus::Unreadable);
        // "None known" in one section and an entry unreadable in another: conflicting, as
        // in one section (before, "none known" stood).
        for order in [false, true] {
            let mut unreadable = section(SectionStatus::Unreadable, vec![], vec![]);
            unreadable.unreadable_entries = 1;
            let none = section(SectionStatus::NoneKnown, vec![], vec!["aucun"]);
            let (first, second) = if order {
                (unreadable, none)
            } else {
                (none, unreadable)
            };
            let mut slot = None;
            merge(&mut slot, first);
            merge(&mut slot, second);
            assert_eq!(slot.unwrap().status, SectionStatus::Conflicting);
        }
    }

    #[test]
    fn a_level_1_body_is_described_and_never_trusted() {
        // Bad base64: counted, nothing kept.
        let s = level_1("<text mediaType=\"application/pdf\" representation=\"B64\">%%%</text>");
        let body = s.unstructured.as_ref().unwrap();
        assert!(!body.pdf && body.content.is_none());
        assert_eq!(s.defects.bad_attachments, 1);
        // Declared a PDF, is not one.
        let s = level_1(
            "<text mediaType=\"application/pdf\" representation=\"B64\">PGh0bWw+PC9odG1sPg==</text>",
        );
        assert!(!s.unstructured.as_ref().unwrap().pdf);
        assert_eq!(s.defects.bad_attachments, 1);
        assert!(s.warnings.iter().any(|w| w.contains("not a PDF")));
        // Only referenced: said, nothing to show.
        let s = level_1(
            "<text mediaType=\"application/pdf\"><reference value=\"http://x/doc.pdf\"/></text>",
        );
        let body = s.unstructured.as_ref().unwrap();
        assert!(body.by_reference && !body.pdf && body.size == 0);
        // Plain text, base64 or not, shown as written.
        let s = level_1(
            "<text mediaType=\"text/plain\" representation=\"B64\">QWxsZXJnaWUgOiBhcmFjaGlkZQ==</text>",
        );
        assert_eq!(
            s.unstructured.as_ref().unwrap().text.as_deref(),
            Some("Allergie : arachide")
        );
        // A media type that is not a plain token never reaches the page.
        let s = level_1("<text mediaType=\"text/html&lt;script&gt;\">x</text>");
        assert_eq!(
            s.unstructured.as_ref().unwrap().media_type,
            "application/octet-stream"
        );
        // A real PDF: kept for the grant's document route.
        let s = level_1(
            "<text mediaType=\"application/pdf\" representation=\"B64\">JVBERi0xLjQKJSVFT0YK</text>",
        );
        let body = s.unstructured.as_ref().unwrap();
        assert!(body.pdf && body.content.is_some());
        assert_eq!(s.document.bundle_type, "cda-unstructured");
        assert_eq!(s.document.template.as_deref(), Some("CDA"));
    }

    #[test]
    fn the_kind_comes_from_the_template_then_the_type_code() {
        let kind = |inner: &str| {
            let xml =
                format!("<ClinicalDocument xmlns=\"urn:hl7-org:v3\">{inner}</ClinicalDocument>");
            let doc = Document::parse(&xml).unwrap();
            Shape::of(doc.root_element())
        };
        assert_eq!(
            kind("<templateId root=\"1.2.250.1.213.1.1.1.36\"/><code code=\"60591-5\"/>"),
            Shape::Hr
        );
        assert_eq!(
            kind("<templateId root=\"1.2.250.1.213.1.1.1.22\"/>"),
            Shape::Dlu
        );
        assert_eq!(
            kind("<templateId root=\"1.2.250.1.213.1.1.1.21\"/>"),
            Shape::LdlEes
        );
        assert_eq!(kind("<code code=\"REMB\"/>"), Shape::Hr);
        assert_eq!(kind("<code code=\"SYNTH\"/>"), Shape::Vsm);
        assert_eq!(kind("<code code=\"11502-2\"/>"), Shape::Other);
        assert_eq!(Shape::Hr.meaning("10160-0"), Meaning::Dispensations);
        assert_eq!(Shape::Hr.meaning("11369-6"), Meaning::Dispensations);
        assert_eq!(Shape::IpsFr.meaning("11369-6"), Meaning::Immunizations);
        assert_eq!(Shape::Vsm.meaning("18776-5"), Meaning::Medications);
        assert_eq!(Shape::Dlu.meaning("18776-5"), Meaning::Other);
        assert_eq!(Shape::Vsm.meaning("30954-2"), Meaning::Vigilance);
        assert_eq!(Shape::IpsFr.meaning("30954-2"), Meaning::Other);
        assert_eq!(Shape::LdlSes.meaning("10183-2"), Meaning::Medications);
    }
}
