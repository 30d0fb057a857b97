//! The DMP's two HL7 v3 patient transactions (docs/dmp.md, "Patients"): TD0.2, the test
//! of existence (`PRPA_IN201307UV02` → `PRPA_IN201308UV02`, service `patients`), and
//! TD0.5, the search without INS that regulation may use (`PRPA_IN201305UV02` →
//! `PRPA_IN201306UV02`, service `patientsPDQ`). Requests written with quick-xml; answers
//! read with roxmltree, accepting both ways the DMP writes an acknowledgement.

use quick_xml::Writer;
use quick_xml::events::BytesText;
use roxmltree::Node;
use serde::Serialize;

use super::DmpError;
use super::soap::token;
use crate::patient::{Sex, Traits};

/// TD0.2's action.
pub const EXISTENCE_ACTION: &str = "urn:hl7-org:v3:PRPA_IN201307UV02";
/// TD0.5's action.
pub const SEARCH_ACTION: &str = "urn:hl7-org:v3:PRPA_IN201305UV02";
const HL7: &str = "urn:hl7-org:v3";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The DMP's own device id.
const DMP_DEVICE: &str = "1.2.250.1.213.4.1.1.1";
/// National structure identifiers: the sending device belongs to the centre.
const STRUCTURE_IDS: &str = "1.2.250.1.71.4.2.2";
/// The DMP's patient observation codes (oppositions, links).
const PATIENT_FLAGS: &str = "1.2.250.1.213.4.1.2.3";
/// Most candidates a search answer may list.
const MAX_CANDIDATES: usize = 100;

/// What the transmission wrapper says of the message.
#[derive(Debug, Clone, Copy)]
pub struct Transmission<'a> {
    /// The message id (a UUID).
    pub message_id: &'a str,
    /// The query id (a UUID).
    pub query_id: &'a str,
    /// `YYYYMMDDhhmmss`, UTC.
    pub created: &'a str,
    /// The centre's structure id (the sending device's owner).
    pub structure_id: &'a str,
}

/// A [`Transmission`] the body writer owns (it runs after the caller's borrows end).
#[derive(Clone)]
struct Owned {
    message_id: String,
    query_id: String,
    created: String,
    structure_id: String,
}

impl Owned {
    fn of(t: Transmission<'_>) -> Self {
        Self {
            message_id: t.message_id.to_owned(),
            query_id: t.query_id.to_owned(),
            created: t.created.to_owned(),
            structure_id: t.structure_id.to_owned(),
        }
    }

    fn borrowed(&self) -> Transmission<'_> {
        Transmission {
            message_id: &self.message_id,
            query_id: &self.query_id,
            created: &self.created,
            structure_id: &self.structure_id,
        }
    }
}

fn wrapper(
    w: &mut Writer<Vec<u8>>,
    root: &str,
    t: Transmission<'_>,
    control: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    w.create_element(root)
        .with_attribute(("xmlns", HL7))
        .with_attribute(("xmlns:xsi", XSI))
        .with_attribute(("ITSVersion", "XML_1.0"))
        .write_inner_content(|w| {
            w.create_element("id")
                .with_attribute(("root", t.message_id))
                .write_empty()?;
            w.create_element("creationTime")
                .with_attribute(("value", t.created))
                .write_empty()?;
            w.create_element("interactionId")
                .with_attribute(("root", "2.16.840.1.113883.1.6"))
                .with_attribute(("extension", root))
                .write_empty()?;
            w.create_element("processingCode")
                .with_attribute(("code", "P"))
                .write_empty()?;
            w.create_element("processingModeCode")
                .with_attribute(("code", "T"))
                .write_empty()?;
            w.create_element("acceptAckCode")
                .with_attribute(("code", "AL"))
                .write_empty()?;
            for (element, type_code, id, extension, name) in [
                ("receiver", "RCV", DMP_DEVICE, None, "DMP"),
                (
                    "sender",
                    "SND",
                    STRUCTURE_IDS,
                    Some(t.structure_id),
                    "samu-gateway",
                ),
            ] {
                w.create_element(element)
                    .with_attribute(("typeCode", type_code))
                    .write_inner_content(|w| {
                        w.create_element("device")
                            .with_attribute(("classCode", "DEV"))
                            .with_attribute(("determinerCode", "INSTANCE"))
                            .write_inner_content(|w| {
                                let mut id_element =
                                    w.create_element("id").with_attribute(("root", id));
                                if let Some(extension) = extension {
                                    id_element =
                                        id_element.with_attribute(("extension", extension));
                                }
                                id_element.write_empty()?;
                                w.create_element("softwareName")
                                    .write_text_content(BytesText::new(name))?;
                                Ok(())
                            })?;
                        Ok(())
                    })?;
            }
            w.create_element("controlActProcess")
                .with_attribute(("classCode", "CACT"))
                .with_attribute(("moodCode", "EVN"))
                .write_inner_content(control)?;
            Ok(())
        })?;
    Ok(())
}

fn query(
    w: &mut Writer<Vec<u8>>,
    query_id: &str,
    parameters: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    w.create_element("queryByParameter")
        .write_inner_content(|w| {
            w.create_element("queryId")
                .with_attribute(("root", query_id))
                .write_empty()?;
            w.create_element("statusCode")
                .with_attribute(("code", "new"))
                .write_empty()?;
            w.create_element("parameterList")
                .write_inner_content(parameters)?;
            Ok(())
        })?;
    Ok(())
}

fn semantics(w: &mut Writer<Vec<u8>>, text: &str) -> std::io::Result<()> {
    w.create_element("semanticsText")
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

/// TD0.2's body: does the patient `ins` under `root` (an INS OID) have a record, and may
/// this professional read it.
pub fn existence_body(
    t: Transmission<'_>,
    root: &str,
    ins: &str,
) -> impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()> + use<> {
    let t = Owned::of(t);
    let (root, ins) = (root.to_owned(), ins.to_owned());
    move |w| {
        let t = t.borrowed();
        wrapper(w, "PRPA_IN201307UV02", t, |w| {
            w.create_element("reasonCode")
                .with_attribute(("code", "TEST_EXST"))
                .with_attribute(("codeSystem", "1.2.250.1.213.1.1.4.11"))
                .with_attribute(("displayName", "Test d'existence de dossier"))
                .write_empty()?;
            query(w, t.query_id, |w| {
                w.create_element("patientIdentifier")
                    .write_inner_content(|w| {
                        w.create_element("value")
                            .with_attribute(("root", root.as_str()))
                            .with_attribute(("extension", ins.as_str()))
                            .write_empty()?;
                        semantics(w, "Patient.id")
                    })?;
                Ok(())
            })
        })
    }
}

/// TD0.5's body: patients matching the identity traits (birth name, first names, birth
/// date, sex).
pub fn search_body(
    t: Transmission<'_>,
    traits: &Traits,
) -> impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()> + use<> {
    let t = Owned::of(t);
    let family = traits.birth_name.trim().to_owned();
    let given = traits.first_names.trim().to_owned();
    let birth = traits.birth_date.replace('-', "");
    let sex = match traits.sex {
        Sex::F => Some("F"),
        Sex::M => Some("M"),
        Sex::I => None,
    };
    move |w| {
        let t = t.borrowed();
        wrapper(w, "PRPA_IN201305UV02", t, |w| {
            w.create_element("code")
                .with_attribute(("code", "PRPA_TE201305UV02"))
                .with_attribute(("codeSystem", "2.16.840.1.113883.1.6"))
                .write_empty()?;
            query(w, t.query_id, |w| {
                // The schema's order: gender, birth time, name.
                if let Some(sex) = sex {
                    w.create_element("livingSubjectAdministrativeGender")
                        .write_inner_content(|w| {
                            w.create_element("value")
                                .with_attribute(("code", sex))
                                .with_attribute(("codeSystem", "2.16.840.1.113883.5.1"))
                                .write_empty()?;
                            semantics(w, "LivingSubject.administrativeGender")
                        })?;
                }
                w.create_element("livingSubjectBirthTime")
                    .write_inner_content(|w| {
                        w.create_element("value")
                            .with_attribute(("value", birth.as_str()))
                            .write_empty()?;
                        semantics(w, "LivingSubject.birthTime")
                    })?;
                w.create_element("livingSubjectName")
                    .write_inner_content(|w| {
                        w.create_element("value").write_inner_content(|w| {
                            w.create_element("family")
                                .with_attribute(("qualifier", "BR"))
                                .write_text_content(BytesText::new(&family))?;
                            for name in given.split_whitespace().take(1) {
                                w.create_element("given")
                                    .write_text_content(BytesText::new(name))?;
                            }
                            Ok(())
                        })?;
                        semantics(w, "LivingSubject.name")
                    })?;
                Ok(())
            })
        })
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name((HL7, name)))
}

/// The one child `name` of `node`, if there is one. Two are refused: which one the DMP
/// means is not for the gateway to guess (the first was read, hiding a second
/// acknowledgement's refusal or a second status's closure).
fn only_child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Result<Option<Node<'a, 'i>>, DmpError> {
    let mut found = node.children().filter(|n| n.has_tag_name((HL7, name)));
    let first = found.next();
    if found.next().is_some() {
        return Err(DmpError::Answer(format!(
            "the answer has more than one {name} in a {}",
            token(node.tag_name().name())
        )));
    }
    Ok(first)
}

/// The children `name` of `node`.
fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |n| n.has_tag_name((HL7, name)))
}

/// Every patient an answer names (`subject/registrationEvent/subject1/patient`, however
/// many of each level there are).
fn patients<'a, 'i>(control: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    children(control, "subject")
        .flat_map(|s| children(s, "registrationEvent"))
        .flat_map(|e| children(e, "subject1"))
        .flat_map(|s| children(s, "patient"))
}

/// The `queryAck` of `control` and its `queryResponseCode`'s code, each given once at most.
fn query_ack<'a, 'i>(
    control: Node<'a, 'i>,
) -> Result<(Option<Node<'a, 'i>>, Option<&'a str>), DmpError> {
    let ack = only_child(control, "queryAck")?;
    let code = match ack {
        Some(ack) => only_child(ack, "queryResponseCode")?.and_then(|c| c.attribute("code")),
        None => None,
    };
    Ok((ack, code))
}

/// The acknowledgement: `AA` or the refusal with its detail codes. The DMP writes the
/// type as an attribute (TD0.2) or as a child element (TD0.5).
fn acknowledged(message: Node<'_, '_>) -> Result<(), DmpError> {
    let ack = only_child(message, "acknowledgement")?
        .ok_or_else(|| DmpError::Answer("the answer has no acknowledgement".into()))?;
    let type_code = ack
        .attribute("typeCode")
        .or_else(|| child(ack, "typeCode").and_then(|t| t.attribute("code")))
        .unwrap_or_default();
    if type_code == "AA" || type_code == "CA" {
        return Ok(());
    }
    let details: Vec<String> = ack
        .children()
        .filter(|n| n.has_tag_name((HL7, "acknowledgementDetail")))
        .filter_map(|d| child(d, "code").and_then(|c| c.attribute("code")))
        .take(8)
        .map(token)
        .collect();
    Err(DmpError::Refused {
        code: if details.is_empty() {
            token(type_code)
        } else {
            details.join(",")
        },
    })
}

/// The answer to TD0.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existence {
    /// Whether the patient has a record (`OK`), or not (`NF`).
    pub found: bool,
    /// Whether that record is closed (`terminated`).
    pub closed: bool,
    /// The professional's authorisation (`VALIDE`…), when the answer says it.
    pub authorisation: Option<String>,
    /// Whether the professional is the patient's treating physician.
    pub treating_physician: Option<bool>,
    /// The oppositions the patient expressed (`OPPOSITION_ACCES_URGENCE`,
    /// `OPPOSITION_BRIS_DE_GLACE`) when the answer lists them.
    pub oppositions: Vec<String>,
    /// Who the answer is about: the patient's ids, which must include the INS asked for.
    #[serde(skip)]
    pub about: PatientIds,
    /// How many patients the answer names: one INS names one patient; of several, the
    /// first's closure and oppositions are the ones read, and nothing says they are the
    /// ones that hold.
    pub patients: usize,
}

/// A patient's ids as an answer gives them, `(root, extension)`: INS, so never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PatientIds(pub Vec<(String, String)>);

redacted_debug!(PatientIds);

impl PatientIds {
    /// Whether `value` under `oid` is among them.
    pub fn include(&self, oid: &str, value: &str) -> bool {
        self.0
            .iter()
            .any(|(root, extension)| root == oid && extension == value)
    }
}

/// The opposition flags set to true among `patient`'s administrative observations.
fn oppositions(patient: Node<'_, '_>) -> Vec<String> {
    patient
        .descendants()
        .filter(|n| n.has_tag_name((HL7, "administrativeObservation")))
        .filter_map(|o| {
            let code = child(o, "code")?;
            (code.attribute("codeSystem") == Some(PATIENT_FLAGS)).then_some(())?;
            let name = code.attribute("code")?;
            let set = child(o, "value").and_then(|v| v.attribute("value")) == Some("true");
            (set && name.starts_with("OPPOSITION_")).then(|| token(name))
        })
        .take(8)
        .collect()
}

/// Reads a `PRPA_IN201308UV02` (the body's element).
pub fn read_existence(answer: Node<'_, '_>) -> Result<Existence, DmpError> {
    if !answer.has_tag_name((HL7, "PRPA_IN201308UV02")) {
        return Err(DmpError::Answer(format!(
            "expected PRPA_IN201308UV02, got {}",
            token(answer.tag_name().name())
        )));
    }
    acknowledged(answer)?;
    let control = child(answer, "controlActProcess")
        .ok_or_else(|| DmpError::Answer("the answer has no controlActProcess".into()))?;
    let found = match query_ack(control)?.1 {
        Some("OK") => true,
        Some("NF") => false,
        other => {
            return Err(DmpError::Answer(format!(
                "query response code {}",
                token(other.unwrap_or("(none)"))
            )));
        }
    };
    let named: Vec<Node<'_, '_>> = patients(control).collect();
    let patient = named.first().copied();
    // "Found" with no patient says nothing of closure or oppositions: never read as an
    // open, unopposed record.
    if found && patient.is_none() {
        return Err(DmpError::Answer(
            "the answer says found and names no patient".into(),
        ));
    }
    // A patient both open and closed is neither.
    for p in &named {
        only_child(*p, "statusCode")?;
    }
    let closed = patient
        .and_then(|p| child(p, "statusCode"))
        .and_then(|s| s.attribute("code"))
        == Some("terminated");
    let mut authorisation = None;
    let mut treating_physician = None;
    for line in answer
        .children()
        .filter(|n| n.has_tag_name((HL7, "attentionLine")))
    {
        let key = child(line, "keyWordText").and_then(|k| k.attribute("code"));
        let value = child(line, "value");
        match key {
            Some("AUTORISATION") => {
                authorisation = value.and_then(|v| v.attribute("code")).map(token);
            }
            Some("STATUT_MT") => {
                treating_physician = value
                    .and_then(|v| v.attribute("value"))
                    .map(|v| v == "true");
            }
            _ => {}
        }
    }
    let about = PatientIds(
        patient
            .into_iter()
            .flat_map(|p| p.children().filter(|n| n.has_tag_name((HL7, "id"))))
            .take(8)
            .filter_map(|id| {
                Some((
                    id.attribute("root")?.trim().to_owned(),
                    id.attribute("extension")?.trim().to_owned(),
                ))
            })
            .collect(),
    );
    Ok(Existence {
        found,
        closed,
        authorisation,
        treating_physician,
        oppositions: patient.map(oppositions).unwrap_or_default(),
        about,
        patients: named.len(),
    })
}

/// One patient a TD0.5 search proposes.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SearchCandidate {
    /// The INS the DMP holds (`extension`).
    pub ins: Option<String>,
    /// Its OID (`root`).
    pub oid: Option<String>,
    /// How well the candidate matches, percent.
    pub match_percent: Option<u8>,
    /// Names as the DMP holds them (`given family`).
    pub names: Vec<String>,
    /// Birth date, `YYYYMMDD`.
    pub birth_date: Option<String>,
    /// `M`, `F`.
    pub gender: Option<String>,
    /// The oppositions the DMP lists for the candidate.
    pub oppositions: Vec<String>,
}

redacted_debug!(SearchCandidate);

/// Reads a `PRPA_IN201306UV02` (the body's element); `ins_roots` are the OIDs an INS may
/// carry.
pub fn read_search(
    answer: Node<'_, '_>,
    ins_roots: &[&str],
) -> Result<Vec<SearchCandidate>, DmpError> {
    if !answer.has_tag_name((HL7, "PRPA_IN201306UV02")) {
        return Err(DmpError::Answer(format!(
            "expected PRPA_IN201306UV02, got {}",
            token(answer.tag_name().name())
        )));
    }
    acknowledged(answer)?;
    let control = child(answer, "controlActProcess")
        .ok_or_else(|| DmpError::Answer("the answer has no controlActProcess".into()))?;
    // A query error under an accepted message (`QE`, `AE`) is no "nobody matches": the
    // physician would look for the patient elsewhere, or give up.
    let (ack, code) = query_ack(control)?;
    match code {
        Some("OK" | "NF") => {}
        other => {
            return Err(DmpError::Answer(format!(
                "query response code {}",
                token(other.unwrap_or("(none)"))
            )));
        }
    }
    let mut out = Vec::new();
    for patient in patients(control) {
        if out.len() == MAX_CANDIDATES {
            return Err(DmpError::Partial(format!(
                "more than {MAX_CANDIDATES} candidates"
            )));
        }
        let ins = patient
            .children()
            .filter(|n| n.has_tag_name((HL7, "id")))
            .find_map(|id| {
                let root = id.attribute("root")?;
                ins_roots
                    .contains(&root)
                    .then(|| {
                        Some((
                            id.attribute("extension")?.trim().to_owned(),
                            root.to_owned(),
                        ))
                    })
                    .flatten()
            });
        let person = child(patient, "patientPerson");
        let names = person
            .into_iter()
            .flat_map(|p| p.children().filter(|n| n.has_tag_name((HL7, "name"))))
            .map(|name| {
                name.children()
                    .filter(|n| n.has_tag_name((HL7, "given")) || n.has_tag_name((HL7, "family")))
                    .filter_map(|n| n.text())
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|n| !n.is_empty())
            .take(4)
            .collect();
        let match_percent = patient
            .descendants()
            .filter(|n| n.has_tag_name((HL7, "queryMatchObservation")))
            .find(|o| child(*o, "code").and_then(|c| c.attribute("code")) == Some("POURCENTAGE"))
            .and_then(|o| child(o, "value"))
            .and_then(|v| v.attribute("value"))
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|p| *p <= 100);
        let (ins, oid) = ins.unzip();
        out.push(SearchCandidate {
            ins,
            oid,
            match_percent,
            names,
            birth_date: person
                .and_then(|p| child(p, "birthTime"))
                .and_then(|b| b.attribute("value"))
                .and_then(birth_day),
            gender: person
                .and_then(|p| child(p, "administrativeGenderCode"))
                .and_then(|g| g.attribute("code"))
                .map(token),
            oppositions: oppositions(patient),
        });
    }
    if let Some(ack) = ack {
        whole_answer(ack, out.len())?;
    }
    Ok(out)
}

/// Refuses a search answer that is a first page: the DMP says more candidates remain
/// (`resultRemainingQuantity`, `resultTotalQuantity` above what the answer names, a
/// continuation awaited), or that it holds more than it names (`resultCurrentQuantity`).
/// Shown as the whole answer, it would hide the patient among those left out, and the
/// physician would pick a namesake. A quantity not given is not read as any.
fn whole_answer(ack: Node<'_, '_>, read: usize) -> Result<(), DmpError> {
    let quantity = |name: &str| -> Result<Option<u64>, DmpError> {
        let Some(q) = only_child(ack, name)? else {
            return Ok(None);
        };
        let value = q.attribute("value").map(str::trim).unwrap_or_default();
        // Digits only: `parse` would take a sign.
        match value.parse::<u64>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(DmpError::Answer(format!(
                "{name} is not a non-negative integer"
            ))),
        }
    };
    let total = quantity("resultTotalQuantity")?;
    let current = quantity("resultCurrentQuantity")?;
    let remaining = quantity("resultRemainingQuantity")?;
    let waiting = only_child(ack, "statusCode")?.and_then(|s| s.attribute("code"))
        == Some("waitContinuedQueryResponse");
    let read = read as u64;
    let first_page = waiting
        || remaining.is_some_and(|r| r > 0)
        || total.is_some_and(|t| t > read || current.is_some_and(|c| t > c));
    if first_page {
        return Err(DmpError::Partial(format!(
            "the answer is a first page of {read} candidates; refine the search"
        )));
    }
    if let Some(current) = current.filter(|c| *c > read) {
        return Err(DmpError::Answer(format!(
            "the answer says it holds {current} candidates and names {read}"
        )));
    }
    Ok(())
}

/// A candidate's birth date as the physician needs it to tell two namesakes apart: the
/// HL7 time's year, month and day (`YYYY[MM[DD]]`, what is given of them). Anything
/// else is no date (never a token: `peer_token` masks digit runs, and "né(e) le #"
/// tells no one apart).
fn birth_day(value: &str) -> Option<String> {
    let value = value.trim();
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &value[digits..];
    let well_formed = rest.is_empty()
        || (digits >= 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.".contains(&b)));
    (matches!(digits, 4 | 6) && rest.is_empty() || digits >= 8 && well_formed)
        .then(|| value[..digits.min(8)].to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::soap;
    use super::{Existence, SearchCandidate, birth_day, read_existence, read_search};
    use crate::upstream::dmp::DmpError;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/dmp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn existence(xml: &str) -> Result<Existence, DmpError> {
        let doc = soap::parse(xml)?;
        read_existence(soap::body(&doc)?)
    }

    fn search(xml: &str) -> Result<Vec<SearchCandidate>, DmpError> {
        let doc = soap::parse(xml)?;
        read_search(soap::body(&doc)?, &crate::patient::INS_OIDS)
    }

    /// `text` with `from` (which it must hold) replaced once by `to`.
    fn edited(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from}");
        text.replacen(from, to, 1)
    }

    /// Two patient blocks answering one test of existence are both counted (the second's
    /// closure and oppositions were ignored); one is one.
    #[test]
    fn every_patient_an_existence_answer_names_is_counted() {
        let td02 = fixture("td02-answer.xml");
        assert_eq!(existence(&td02).unwrap().patients, 1);
        let start = td02.find("<subject typeCode").unwrap();
        let end = td02.find("</subject>").unwrap() + "</subject>".len();
        let closed = td02[start..end].replace(
            "<statusCode code=\"active\"/>",
            "<statusCode code=\"terminated\"/>",
        );
        let twice = format!("{}{closed}{}", &td02[..end], &td02[end..]);
        let read = existence(&twice).unwrap();
        assert_eq!(read.patients, 2);
        // A second patient in the same subject is one more too.
        let patient = "<patient classCode=\"PAT\">";
        let nested = edited(
            &td02,
            patient,
            &format!(
                "<patient classCode=\"PAT\"><statusCode code=\"terminated\"/></patient>{patient}"
            ),
        );
        assert_eq!(existence(&nested).unwrap().patients, 2);
    }

    /// A patient with two status codes, an answer with two acknowledgements, two query
    /// acknowledgements or two response codes: refused, not read by the first (which hid
    /// a closure, a refusal, a "not found").
    #[test]
    fn what_a_patient_answer_says_twice_is_refused() {
        let td02 = fixture("td02-answer.xml");
        let td05 = fixture("td05-answer.xml");
        let td02_read: fn(&str) -> Result<(), DmpError> = |xml| existence(xml).map(|_| ());
        let td05_read: fn(&str) -> Result<(), DmpError> = |xml| search(xml).map(|_| ());
        for ((text, read), from, to, why) in [
            (
                (&td02, td02_read),
                "<statusCode code=\"active\"/>",
                "<statusCode code=\"active\"/><statusCode code=\"terminated\"/>",
                "more than one statusCode",
            ),
            (
                (&td02, td02_read),
                "</acknowledgement>",
                "</acknowledgement><acknowledgement typeCode=\"AE\"/>",
                "more than one acknowledgement",
            ),
            (
                (&td02, td02_read),
                "<queryResponseCode code=\"OK\"/>",
                "<queryResponseCode code=\"OK\"/><queryResponseCode code=\"NF\"/>",
                "more than one queryResponseCode",
            ),
            (
                (&td02, td02_read),
                "</queryAck>",
                "</queryAck><queryAck><queryResponseCode code=\"NF\"/></queryAck>",
                "more than one queryAck",
            ),
            (
                (&td05, td05_read),
                "</acknowledgement>",
                "</acknowledgement><acknowledgement><typeCode code=\"AE\"/></acknowledgement>",
                "more than one acknowledgement",
            ),
            (
                (&td05, td05_read),
                "<queryResponseCode code=\"OK\"/>",
                "<queryResponseCode code=\"OK\"/><queryResponseCode code=\"QE\"/>",
                "more than one queryResponseCode",
            ),
            (
                (&td05, td05_read),
                "</queryAck>",
                "</queryAck><queryAck><queryResponseCode code=\"QE\"/></queryAck>",
                "more than one queryAck",
            ),
        ] {
            let err = read(&edited(text, from, to)).unwrap_err();
            assert!(
                matches!(&err, DmpError::Answer(m) if m.contains(why)),
                "{to}: {err}"
            );
        }
        assert!(existence(&td02).is_ok());
        assert!(search(&td05).is_ok());
    }

    /// A search answer that says more candidates remain, or that it holds more than it
    /// names, is refused as a first page (it was shown as the whole answer); quantities
    /// not given, or that agree with what is named, are accepted; one that is no
    /// non-negative integer is refused.
    #[test]
    fn a_first_page_of_candidates_is_not_the_whole_answer() {
        let td05 = fixture("td05-answer.xml");
        let total = "<resultTotalQuantity value=\"2\"/>";
        assert_eq!(search(&td05).unwrap().len(), 2);
        for accepted in [
            "",
            "<resultTotalQuantity value=\"2\"/><resultCurrentQuantity value=\"2\"/><resultRemainingQuantity value=\"0\"/>",
            "<statusCode code=\"deliveredResponse\"/><resultTotalQuantity value=\"2\"/>",
        ] {
            assert_eq!(
                search(&edited(&td05, total, accepted)).unwrap().len(),
                2,
                "{accepted}"
            );
        }
        for (to, why) in [
            ("<resultTotalQuantity value=\"5\"/>", "first page of 2"),
            (
                "<resultTotalQuantity value=\"2\"/><resultRemainingQuantity value=\"3\"/>",
                "first page of 2",
            ),
            ("<resultRemainingQuantity value=\"1\"/>", "first page of 2"),
            (
                "<resultTotalQuantity value=\"2\"/><resultCurrentQuantity value=\"1\"/>",
                "first page of 2",
            ),
            (
                "<statusCode code=\"waitContinuedQueryResponse\"/>",
                "first page of 2",
            ),
            ("<resultCurrentQuantity value=\"3\"/>", "holds 3 candidates"),
            (
                "<resultTotalQuantity value=\"-1\"/>",
                "not a non-negative integer",
            ),
            (
                "<resultTotalQuantity value=\"deux\"/>",
                "not a non-negative integer",
            ),
            ("<resultRemainingQuantity/>", "not a non-negative integer"),
            (
                "<resultTotalQuantity value=\"2\"/><resultTotalQuantity value=\"3\"/>",
                "more than one resultTotalQuantity",
            ),
        ] {
            let err = search(&edited(&td05, total, to)).unwrap_err();
            // A first page is partial (the physician is asked to narrow the search); a
            // contradiction or a malformed quantity is unusable.
            let partial = why.starts_with("first page");
            assert!(
                match &err {
                    DmpError::Partial(m) => partial && m.contains(why),
                    DmpError::Answer(m) => !partial && m.contains(why),
                    _ => false,
                },
                "{to}: {err}"
            );
        }
        // Nobody matches: nothing remains.
        let start = td05.find("<subject typeCode").unwrap();
        let end = td05.rfind("</subject>").unwrap() + "</subject>".len();
        let nobody = format!("{}{}", &td05[..start], &td05[end..])
            .replace(
                "<queryResponseCode code=\"OK\"/>",
                "<queryResponseCode code=\"NF\"/>",
            )
            .replace(total, "<resultTotalQuantity value=\"0\"/>");
        assert!(search(&nobody).unwrap().is_empty());
    }

    #[test]
    fn a_birth_time_gives_its_day_or_nothing() {
        assert_eq!(birth_day("19800117").as_deref(), Some("19800117"));
        assert_eq!(
            birth_day("19800117000000+0100").as_deref(),
            Some("19800117")
        );
        assert_eq!(birth_day("1980").as_deref(), Some("1980"));
        assert_eq!(birth_day("198001").as_deref(), Some("198001"));
        for garbled in ["", "19800", "1980-01-17", "19800117x", "abc", "٣١٩٨٠"] {
            assert_eq!(birth_day(garbled), None, "{garbled}");
        }
    }
}
