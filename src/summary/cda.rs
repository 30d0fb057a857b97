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

use roxmltree::{Document, Node, ParsingOptions};

use super::{
    Allergy, Code, CriticalSummary, DocumentDefects, DocumentInfo, DocumentPatient, Medication,
    OtherSection, Problem, Procedure, Section, SectionStatus, SummaryError,
};

const HL7: &str = "urn:hl7-org:v3";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Real documents nest sections and entries a few dozen levels deep at most.
const MAX_DEPTH: usize = 128;
/// Far above the largest real summary (a few thousand entries).
const MAX_NODES: u32 = 4_000_000;
/// The INS OIDs share this prefix (docs/domain.md §4).
const INS_ROOT_PREFIX: &str = "1.2.250.1.213.1.4.";
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
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let document = Document::parse_with_options(text, options)
        .map_err(|e| SummaryError::Xml(e.to_string()))?;
    check_depth(document.root())?;
    let root = document.root_element();
    if root.tag_name().name() != "ClinicalDocument" || root.tag_name().namespace() != Some(HL7) {
        return Err(SummaryError::NotACda(format!(
            "the root element is {}{}",
            root.tag_name().name(),
            root.tag_name()
                .namespace()
                .map_or(" without a namespace".to_owned(), |ns| format!(
                    " in namespace {ns}"
                ))
        )));
    }
    let mut reader = Reader::default();
    let body = child(root, "component");
    let structured = body.and_then(|c| child(c, "structuredBody"));
    let unstructured = body.and_then(|c| child(c, "nonXMLBody"));
    if let Some(body) = structured {
        for component in children(body, "component") {
            if let Some(section) = child(component, "section") {
                reader.section(section, "component/structuredBody/component/section");
            }
        }
    } else if unstructured.is_some() {
        reader.warnings.push(
            "the document is unstructured (CDA level 1: nonXMLBody): no section can be read".into(),
        );
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
    Ok(reader.finish(header(root, kind), patient(root)))
}

/// Refuses nesting deeper than [`MAX_DEPTH`], walking each node once.
fn check_depth(root: Node<'_, '_>) -> Result<(), SummaryError> {
    let mut stack = vec![(root, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(SummaryError::Xml(format!(
                "elements nested deeper than {MAX_DEPTH} levels"
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

/// Text content of an element and its descendants, whitespace collapsed.
fn text_of(node: Node<'_, '_>) -> String {
    let mut out = String::new();
    for piece in node.descendants().filter(Node::is_text) {
        for word in piece.text().unwrap_or("").split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
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

fn header(root: Node<'_, '_>, kind: &str) -> DocumentInfo {
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
            child(a, "assignedPerson").and_then(person).or_else(|| {
                child(a, "representedOrganization")
                    .and_then(|o| child(o, "name"))
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
        title,
        date: child(root, "effectiveTime").and_then(|t| t.attribute("value").map(str::to_owned)),
        timestamp: None,
        authors,
        custodian,
    }
}

fn patient(root: Node<'_, '_>) -> Option<DocumentPatient> {
    let role = child(root, "recordTarget").and_then(|r| child(r, "patientRole"))?;
    let ins = children(role, "id")
        .filter_map(|id| {
            let oid = id.attribute("root")?;
            let value = id.attribute("extension")?;
            oid.starts_with(INS_ROOT_PREFIX)
                .then(|| format!("{oid}|{value}"))
        })
        .collect();
    let person = child(role, "patient");
    let names = person
        .into_iter()
        .flat_map(|p| children(p, "name"))
        .filter_map(|n| non_empty(text_of(n)))
        .collect();
    Some(DocumentPatient {
        names,
        birth_date: person
            .and_then(|p| child(p, "birthTime"))
            .and_then(|b| b.attribute("value").map(str::to_owned)),
        gender: person
            .and_then(|p| child(p, "administrativeGenderCode"))
            .and_then(|g| g.attribute("code").map(str::to_owned)),
        ins,
    })
}

/// What the sections of one document yield.
#[derive(Default)]
struct Reader {
    allergies: Option<Section<Allergy>>,
    /// Entries and statements of absence over every allergy-like section read so far.
    allergy_entries: usize,
    allergies_absent: bool,
    medications: Option<Section<Medication>>,
    problems: Option<Section<Problem>>,
    past_problems: Option<Section<Problem>>,
    procedures: Option<Section<Procedure>>,
    other_sections: Vec<OtherSection>,
    unreadable: usize,
    warnings: Vec<String>,
}

fn section_shell<T>(node: Node<'_, '_>) -> Section<T> {
    Section {
        status: SectionStatus::NotRecorded,
        basis: "no entries".into(),
        title: child(node, "title").map(text_of).and_then(non_empty),
        items: Vec::new(),
        unlisted_items: Vec::new(),
        statements: Vec::new(),
        unreadable_entries: 0,
        duplicate_entries: 0,
        other_person_entries: 0,
        narrative: child(node, "text").map(text_of).and_then(non_empty),
    }
}

/// The status of a section from what was read: items make it recorded; an explicit
/// statement of absence, "none known"; both together, conflicting; entries none of which
/// could be read, unreadable.
fn judge<T>(section: &mut Section<T>, entries: usize, absent: bool, null_flavor: Option<&str>) {
    section.status = match (section.items.is_empty(), absent) {
        (false, true) => SectionStatus::Conflicting,
        (false, false) => SectionStatus::Recorded,
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
        let code = child(node, "code").and_then(|c| c.attribute("code"));
        // Sections that only wrap others (as a VSM does) are read through.
        for (i, nested) in children(node, "component")
            .filter_map(|c| child(c, "section"))
            .enumerate()
        {
            self.section(nested, &format!("{path}/component[{i}]/section"));
        }
        let entries: Vec<Node<'_, '_>> = children(node, "entry").collect();
        let null_flavor = node.attribute("nullFlavor");
        match code {
            // Adverse drug effects are what a physician about to prescribe must see with the
            // allergies: one section, in document order.
            Some("48765-2" | "44939-7") => {
                let mut section = self
                    .allergies
                    .take()
                    .unwrap_or_else(|| section_shell::<Allergy>(node));
                if section.narrative.is_none() {
                    section.narrative = child(node, "text").map(text_of).and_then(non_empty);
                }
                let mut absent = false;
                for (i, entry) in entries.iter().enumerate() {
                    match allergy(*entry) {
                        Some(Read::Item(item)) => section.items.push(item),
                        Some(Read::Absent(statement)) => {
                            absent = true;
                            section.statements.push(statement);
                        }
                        Some(Read::Noted(statement)) => section.statements.push(statement),
                        None => self.unreadable_entry(&mut section, path, i),
                    }
                }
                absent |= self.allergies_absent;
                self.allergy_entries += entries.len();
                judge(&mut section, self.allergy_entries, absent, null_flavor);
                self.allergies_absent = absent;
                self.allergies = Some(section);
            }
            Some("10160-0") => {
                self.medications = Some(self.plain(node, path, &entries, medication));
            }
            Some("11450-4") => self.problems = Some(self.plain(node, path, &entries, problem)),
            Some("11348-0") => {
                self.past_problems = Some(self.plain(node, path, &entries, problem));
            }
            Some("47519-4") => {
                self.procedures = Some(self.plain(node, path, &entries, procedure));
            }
            _ => self.other_sections.push(OtherSection {
                title: child(node, "title").map(text_of).and_then(non_empty),
                code: code.map(str::to_owned),
                entries: entries.len(),
                narrative: child(node, "text").map(text_of).and_then(non_empty),
            }),
        }
    }

    /// A section whose entries are items or unreadable (every kind but allergies, which
    /// may also state an absence).
    fn plain<T>(
        &mut self,
        node: Node<'_, '_>,
        path: &str,
        entries: &[Node<'_, '_>],
        read: fn(Node<'_, '_>) -> Option<T>,
    ) -> Section<T> {
        let mut section = section_shell::<T>(node);
        for (i, entry) in entries.iter().enumerate() {
            match read(*entry) {
                Some(item) => section.items.push(item),
                None => self.unreadable_entry(&mut section, path, i),
            }
        }
        judge(
            &mut section,
            entries.len(),
            false,
            node.attribute("nullFlavor"),
        );
        section
    }

    fn unreadable_entry<T>(&mut self, section: &mut Section<T>, path: &str, i: usize) {
        section.unreadable_entries += 1;
        self.unreadable += 1;
        self.warnings.push(format!(
            "{path}/entry[{i}]: not a readable entry of its section"
        ));
    }

    fn finish(self, document: DocumentInfo, patient: Option<DocumentPatient>) -> CriticalSummary {
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
            }
        }
        CriticalSummary {
            document,
            patient_in_document: patient,
            allergies: self.allergies.unwrap_or_else(|| absent("48765-2")),
            medications: self.medications.unwrap_or_else(|| absent("10160-0")),
            problems: self.problems.unwrap_or_else(|| absent("11450-4")),
            past_problems: self.past_problems.unwrap_or_else(|| absent("11348-0")),
            procedures: self.procedures.unwrap_or_else(|| absent("47519-4")),
            immunizations: None,
            devices: None,
            pregnancy: None,
            other_sections: self.other_sections,
            defects: DocumentDefects {
                unreadable_entries: self.unreadable,
                ..DocumentDefects::default()
            },
            warnings: self.warnings,
        }
    }
}

enum Read<T> {
    Item(T),
    /// A statement that there is none (of the section's kind).
    Absent(String),
    /// A statement worth showing that establishes nothing about the section as a whole.
    Noted(String),
}

/// The first observation of an entry: directly, or inside a concern act.
fn observation<'a, 'i>(entry: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    child(entry, "observation").or_else(|| {
        child(entry, "act")
            .into_iter()
            .flat_map(|act| children(act, "entryRelationship"))
            .find_map(|r| child(r, "observation"))
    })
}

fn allergy(entry: Node<'_, '_>) -> Option<Read<Allergy>> {
    let observation = observation(entry)?;
    let code = child(observation, "code");
    let negated = observation.attribute("negationInd") == Some("true");
    let value = child(observation, "value");
    let stated_absent = [code, value]
        .iter()
        .flatten()
        .any(|c| c.attribute("code") == Some(NO_KNOWN_ALLERGY));
    let agent = child(observation, "participant")
        .and_then(|p| child(p, "participantRole"))
        .and_then(|r| child(r, "playingEntity"))
        .and_then(|e| child(e, "code"));
    let named_agent = agent.and_then(words);
    if negated && let Some(agent) = &named_agent {
        // "Not allergic to X" says nothing of the other substances: noted, never read as
        // "no known allergies".
        return Some(Read::Noted(format!("absence d'allergie à : {agent}")));
    }
    if negated || stated_absent {
        let said = code
            .and_then(words)
            .unwrap_or_else(|| "absence d'allergie".into());
        return Some(Read::Absent(if negated {
            format!("absence : {said}")
        } else {
            said
        }));
    }
    let agent = agent?;
    let substance = words(agent)?;
    let related = |code: &str| {
        children(observation, "entryRelationship")
            .filter_map(|r| child(r, "observation"))
            .find(|o| child(*o, "code").and_then(|c| c.attribute("code")) == Some(code))
            .and_then(|o| child(o, "value"))
    };
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
        codes: codes(agent),
        criticality,
        kind: code
            .and_then(|c| c.attribute("displayName"))
            .map(str::to_owned),
        categories: Vec::new(),
        clinical_status: None,
        verification_status: None,
        reactions,
        onset: child(observation, "effectiveTime")
            .and_then(|t| child(t, "low"))
            .and_then(|l| l.attribute("value"))
            .map(str::to_owned),
    }))
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
    let dosage = child(administration, "doseQuantity")
        .map(|d| {
            [d.attribute("value"), d.attribute("unit")]
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
        status: child(administration, "statusCode")
            .and_then(|s| s.attribute("code"))
            .map(str::to_owned),
        source: "substanceAdministration".into(),
        period,
    })
}

fn problem(entry: Node<'_, '_>) -> Option<Problem> {
    let observation = observation(entry)?;
    let value = child(observation, "value").filter(|v| {
        v.attribute((XSI, "type"))
            .is_none_or(|t| t.ends_with("CD") || t.ends_with("CE"))
    })?;
    let name = words(value)?;
    let time = child(observation, "effectiveTime");
    let at = |edge: &str| {
        time.and_then(|t| child(t, edge))
            .and_then(|n| n.attribute("value"))
            .map(str::to_owned)
    };
    Some(Problem {
        name,
        codes: codes(value),
        clinical_status: None,
        verification_status: None,
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
