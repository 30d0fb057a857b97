//! Whose document is it, and whose is each entry. The subject is the Patient the
//! Composition names; other Patient resources describing the same person (real bundles
//! repeat the patient) join it, and those describing someone else (family members appear in
//! real bundles) are another person: their entries are left out and counted, never merged.
//! The document is refused only when its subject cannot be determined. See
//! `docs/summary.md`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::bundle::{Entry, Index};
use super::{DocumentPatient, SummaryError, narrative};

type Object = Map<String, Value>;

/// The document's subject.
pub(super) struct Subject<'a> {
    /// Patient resources describing the subject (empty when the bundle holds none), by
    /// address.
    patients: HashSet<*const Object>,
    /// The Composition's subject reference, as written.
    reference: Option<&'a str>,
}

/// Whose an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whose {
    /// The subject's (or it names nobody, and is taken as the subject's).
    Subject,
    /// Someone else's: a Patient that is not the subject, or another kind of resource.
    Other,
    /// Its subject reference resolves to nothing in the document.
    Unknown,
}

/// What the bundle says of its subject.
pub(super) struct Found<'a> {
    pub subject: Subject<'a>,
    /// The subject's traits as the document writes them.
    pub patient: Option<DocumentPatient>,
    /// A remark for the warnings, if the subject had to be inferred.
    pub remark: Option<&'static str>,
}

/// Determines the subject from the Composition (if any) and the Patient resources.
pub(super) fn find<'a>(
    index: &'a Index<'a>,
    composition: Option<&Entry<'a>>,
) -> Result<Found<'a>, SummaryError> {
    let patients: Vec<(&'a Object, DocumentPatient)> = index
        .of_type("Patient")
        .map(|e| (e.resource, traits(e.resource)))
        .collect();
    let reference = composition
        .and_then(|c| c.resource.get("subject"))
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str);
    let named: Vec<(&'a Object, DocumentPatient)> = match (composition, reference) {
        (Some(c), Some(r)) => index
            .resolve(r, c.full_url, Some(c.resource))
            .candidates()
            .iter()
            .filter(|p| p.get("resourceType").and_then(Value::as_str) == Some("Patient"))
            .map(|p| (*p, traits(p)))
            .collect(),
        _ => Vec::new(),
    };
    let mut remark = None;
    let pool = if named.is_empty() {
        if reference.is_some() && !patients.is_empty() {
            remark = Some("the Composition's subject names no Patient of the bundle");
        }
        &patients
    } else {
        &named
    };
    let Some((anchor, anchor_traits)) = pool.first() else {
        return Ok(Found {
            subject: Subject {
                patients: HashSet::new(),
                reference,
            },
            patient: None,
            remark,
        });
    };
    // Without a Composition subject naming one, the Patients must all be one person; a
    // subject named by several different Patient resources must be one person too.
    if pool.iter().any(|(_, other)| disagree(anchor_traits, other)) {
        return Err(SummaryError::ConflictingPatients(pool.len()));
    }
    let mut same: HashSet<*const Object> = HashSet::from([std::ptr::from_ref(*anchor)]);
    let mut patient = anchor_traits.clone();
    let mut known: HashSet<String> = patient.ins.iter().cloned().collect();
    // The INS each joined Patient names (each distinct set once): a Patient that agrees
    // with a bare anchor may still name an INS that shares nothing with one joined before
    // it. Two people joined as one would pass the patient check for either INS
    // (`upstream::check_same_patient`) and mix their entries: the subject cannot be
    // determined. Other traits stay judged against the anchor only, as leniently as
    // `disagree` says: a document refused shows the physician nothing at all.
    let mut named_ins: Vec<&[String]> = Vec::new();
    if !anchor_traits.ins.is_empty() {
        named_ins.push(&anchor_traits.ins);
    }
    for (resource, other) in patients.iter().chain(named.iter()) {
        let address = std::ptr::from_ref(*resource);
        if disagree(anchor_traits, other) || same.contains(&address) {
            continue;
        }
        if !other.ins.is_empty() && !named_ins.contains(&other.ins.as_slice()) {
            let apart = named_ins
                .iter()
                .any(|held| !held.iter().any(|i| other.ins.contains(i)));
            if apart || named_ins.len() == MAX_INS_SETS {
                return Err(SummaryError::ConflictingPatients(patients.len()));
            }
            named_ins.push(&other.ins);
        }
        same.insert(address);
        for ins in &other.ins {
            if known.insert(ins.clone()) {
                patient.ins.push(ins.clone());
            }
        }
    }
    Ok(Found {
        subject: Subject {
            patients: same,
            reference,
        },
        patient: Some(patient),
        remark,
    })
}

impl Subject<'_> {
    /// Whose `resource` is, by its own `subject` or `patient` reference.
    pub(super) fn whose(&self, index: &Index, resource: &Object) -> Whose {
        let reference = ["subject", "patient"]
            .iter()
            .find_map(|field| resource.get(*field))
            .and_then(|s| s.get("reference"))
            .and_then(Value::as_str);
        let Some(reference) = reference else {
            return Whose::Subject;
        };
        if Some(reference) == self.reference {
            return Whose::Subject;
        }
        let target = index.resolve(reference, index.full_url_of(resource), Some(resource));
        let candidates = target.candidates();
        if candidates.is_empty() {
            return if self.patients.is_empty() {
                Whose::Subject
            } else {
                Whose::Unknown
            };
        }
        let subject = candidates
            .iter()
            .any(|c| self.patients.contains(&std::ptr::from_ref(*c)));
        if subject {
            Whose::Subject
        } else {
            Whose::Other
        }
    }
}

/// The distinct sets of INS the Patients joined as the subject may name: a patient's
/// resources name one INS (two when the NIR and the NIA are both given), written a few
/// ways at most; a hostile bundle's thousands would make each comparison long.
const MAX_INS_SETS: usize = 16;

/// The traits a Patient resource gives.
fn traits(resource: &Object) -> DocumentPatient {
    DocumentPatient {
        names: human_names(resource),
        birth_date: text(resource, "birthDate"),
        gender: text(resource, "gender"),
        ins: ins_identifiers(resource),
        // Set once the summary is read (`extract`), after the subject's Patients merged.
        no_ins: false,
    }
}

/// Whether two Patients contradict each other on INS, birth date, gender or every name.
/// One INS in common is one person whatever else differs. Traits one of them lacks (or
/// gives malformed) do not count: a bare Patient contradicts nobody. The same
/// person written two ways is not two people: a date is compared as precisely as both
/// give it (1950 and 1950-03-12 agree), only male and female contradict each other, and
/// names agree when they share a word ("DUPONT Jean" and "Jean Dupont"). Wrongly judged "another person", a patient's allergy would be
/// left out: the judgement leans the other way.
fn disagree(a: &DocumentPatient, b: &DocumentPatient) -> bool {
    // One INS in common is one person, whatever else differs (a mistyped date, a gender
    // recorded otherwise): the INS is the identity the record service files under.
    if a.ins.iter().any(|i| b.ins.contains(i)) {
        return false;
    }
    // A date that is not a FHIR date (counted as a defect) says nothing to compare.
    let valid = |date: &Option<String>| {
        date.as_deref()
            .filter(|d| super::validate::is_date_time(d))
            .map(str::to_owned)
    };
    let dates_differ = matches!(
        (valid(&a.birth_date), valid(&b.birth_date)),
        (Some(a), Some(b)) if !a.starts_with(b.as_str()) && !b.starts_with(a.as_str())
    );
    fn sexed(gender: &Option<String>) -> Option<&str> {
        gender.as_deref().filter(|g| *g == "male" || *g == "female")
    }
    let genders_differ =
        matches!((sexed(&a.gender), sexed(&b.gender)), (Some(a), Some(b)) if a != b);
    let words = |p: &DocumentPatient| -> std::collections::HashSet<String> {
        p.names
            .iter()
            .flat_map(|n| n.split(|c: char| !c.is_alphanumeric()))
            .filter(|w| w.chars().count() >= 2)
            .map(str::to_lowercase)
            .collect()
    };
    let names_differ = !a.names.is_empty() && !b.names.is_empty() && {
        let theirs = words(b);
        !words(a).iter().any(|w| theirs.contains(w))
    };
    dates_differ
        || genders_differ
        || (!a.ins.is_empty() && !b.ins.is_empty() && !a.ins.iter().any(|i| b.ins.contains(i)))
        || names_differ
}

/// `OID|value` of every INS identifier (NIR, NIA, test, demo OIDs) of a Patient; another
/// OID of their arc (an INS-C) is no INS.
pub fn ins_identifiers(resource: &Object) -> Vec<String> {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| {
                    ins_identifier(id.get("system")?.as_str()?, id.get("value")?.as_str()?)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `OID|value` of an identifier `value` under `root` (a CDA `id`, a FHIR `identifier`'s
/// system) if `root` is an INS OID, in the form an INS asked for takes (`patient::Ins`):
/// spaces and invisible characters dropped, `2a` read as `2A`, a `urn:oid:` prefix
/// dropped. Compared raw, a document naming another patient's INS with a space in its
/// root would name "no INS" and pass the same-patient check, and a patient's own
/// document writing their NIR in groups would be refused as another's. `None` for
/// another root or an empty value.
pub(super) fn ins_identifier(root: &str, value: &str) -> Option<String> {
    let plain = crate::encoding::bare_identifier;
    let root = plain(root);
    let root = root.strip_prefix("URN:OID:").unwrap_or(&root);
    let oid = crate::ins_oid::INS_OIDS.iter().find(|oid| **oid == root)?;
    let value = plain(value);
    (!value.is_empty()).then(|| format!("{oid}|{value}"))
}

/// The names of a Patient or Practitioner, as written (text, else given names and family);
/// markup, which a name should never hold, is reduced to its text.
pub fn human_names(resource: &Object) -> Vec<String> {
    raw_names(resource)
        .into_iter()
        .map(|name| {
            if narrative::has_markup(&name) {
                narrative::to_text(&name).replace('\n', " ")
            } else {
                name
            }
        })
        .filter(|name| !name.trim().is_empty())
        .collect()
}

/// How many of a resource's names hold markup.
pub(super) fn names_with_markup(resource: &Object) -> usize {
    raw_names(resource)
        .iter()
        .filter(|name| narrative::has_markup(name))
        .count()
}

fn raw_names(resource: &Object) -> Vec<String> {
    resource
        .get("name")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    let written = n.get("text").and_then(Value::as_str).map(str::to_owned);
                    written.or_else(|| {
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

fn text(value: &Object, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(
        names: &[&str],
        birth: Option<&str>,
        gender: Option<&str>,
        ins: &[&str],
    ) -> DocumentPatient {
        DocumentPatient {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            birth_date: birth.map(str::to_owned),
            gender: gender.map(str::to_owned),
            ins: ins.iter().map(|i| (*i).to_owned()).collect(),
            no_ins: false,
        }
    }

    /// The same person written two ways is one person; two people stay two.
    #[test]
    fn the_same_person_written_two_ways_is_one_person() {
        let full = patient(&["Jean DUPONT"], Some("1950-03-12"), Some("male"), &["a|1"]);
        for same in [
            patient(&["DUPONT Jean"], Some("1950"), Some("unknown"), &[]),
            patient(&["Jean Dupont"], Some("1950-03"), None, &["a|1"]),
            patient(&[], None, Some("other"), &[]),
            // One INS in common: one person, though the date was mistyped.
            patient(&["Jean DUPONT"], Some("1951-03-12"), Some("male"), &["a|1"]),
            // A date that is not a date contradicts nothing.
            patient(&["Jean DUPONT"], Some("12/03/1951"), None, &[]),
        ] {
            assert!(!disagree(&full, &same), "{:?}", same.names);
            assert!(!disagree(&same, &full), "{:?}", same.names);
        }
        for other in [
            patient(&["Jean DUPONT"], Some("1951-03-12"), None, &[]),
            patient(&["Jean DUPONT"], None, Some("female"), &[]),
            patient(&["Paul MARTIN"], None, None, &[]),
            patient(&["Jean DUPONT"], None, None, &["a|2"]),
        ] {
            assert!(disagree(&full, &other), "{:?}", other.names);
        }
    }
}
