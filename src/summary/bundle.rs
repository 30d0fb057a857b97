//! A Bundle's resources, indexed for reference resolution the way real bundles need it:
//! absolute references (`urn:uuid:…`, `urn:oid:…`, `http…`) against `fullUrl`; relative
//! `Type/id` references against the referencing entry's RESTful base, then against any
//! entry of that type and id (bundles mixing `Type/id` references with `urn:uuid:`
//! fullUrls are common); `#id` against the resource's contained resources.
//!
//! Resolution never picks: when several different resources claim one identity (two
//! entries with one fullUrl, two versions of one resource under an unversioned reference)
//! every candidate is returned and the caller shows them all. A versioned reference
//! (`…/_history/N`) resolves only to that version. See `docs/summary.md`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Most entries read from one bundle: beyond, the document is refused as oversize.
pub const MAX_ENTRIES: usize = 20_000;

type Object = Map<String, Value>;

/// A claimant list's (or a contained list's owner's) address, and the version (or `#id`)
/// asked for.
type Resolution = (usize, Option<String>);

/// One entry: its fullUrl and resource.
pub struct Entry<'a> {
    /// `fullUrl`, if any.
    pub full_url: Option<&'a str>,
    /// The resource.
    pub resource: &'a Object,
    /// Its version: `meta.versionId`, else the fullUrl's `_history/N`.
    version: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// What makes two entries versions of one resource: the same type and unversioned
    /// fullUrl, or, for entries without a fullUrl, the same type and id. Ids alone are not
    /// identities: entries under `urn:uuid:` fullUrls may share one, and bundles reuse an
    /// id across types.
    pub fn identity(&self) -> Option<(&'a str, Option<&'a str>, &'a str)> {
        let kind = self.resource.get("resourceType").and_then(Value::as_str)?;
        match self.full_url {
            Some(url) => Some((kind, Some(split_version(url).0), "")),
            None => Some((kind, None, self.resource.get("id").and_then(Value::as_str)?)),
        }
    }

    /// Its version as a number, when it is one (FHIR servers count versions up from 1).
    pub fn version_number(&self) -> Option<u64> {
        self.version.and_then(|v| v.parse().ok())
    }
}

/// What a reference points to.
pub enum Target<'a> {
    /// Exactly one resource (identical copies count as one).
    Found(&'a Object),
    /// Several different resources claim the identity: the document is defective, and
    /// each of them must be considered.
    Ambiguous(Vec<&'a Object>),
    /// A versioned reference whose version the document does not hold (other versions
    /// of the resource may be there: they are not that version).
    VersionMissing,
    /// Nothing in the document.
    Missing,
}

/// The variant and how many resources: the resources are a patient's record.
impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Found(_) => f.write_str("Found(..)"),
            Self::Ambiguous(all) => write!(f, "Ambiguous({} resources)", all.len()),
            Self::VersionMissing => f.write_str("VersionMissing"),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

impl<'a> Target<'a> {
    /// Every resource the reference may mean.
    pub fn candidates(&self) -> &[&'a Object] {
        match self {
            Self::Found(one) => std::slice::from_ref(one),
            Self::Ambiguous(all) => all,
            Self::VersionMissing | Self::Missing => &[],
        }
    }
}

/// The entries claiming one identity, and their versions (to tell duplicates, which the
/// bundle may not have, from versions, which it may: FHIR's bdl-7).
#[derive(Default)]
struct Claims<'a> {
    entries: Vec<usize>,
    unversioned: usize,
    versions: HashSet<&'a str>,
}

impl<'a> Claims<'a> {
    /// Adds entry `at`; whether it duplicates an earlier claimant in the same version.
    fn claim(&mut self, at: usize, version: Option<&'a str>) -> bool {
        let duplicate = match version {
            None => !self.entries.is_empty(),
            Some(v) => self.unversioned > 0 || !self.versions.insert(v),
        };
        if version.is_none() {
            self.unversioned += 1;
        }
        self.entries.push(at);
        duplicate
    }
}

/// The entries of a bundle, indexed.
pub struct Index<'a> {
    /// Every entry with a resource, in order.
    pub entries: Vec<Entry<'a>>,
    /// Unversioned fullUrl → entries.
    by_full_url: HashMap<&'a str, Claims<'a>>,
    by_type_id: HashMap<(&'a str, &'a str), Vec<usize>>,
    /// Type and id → entries without a fullUrl (whose identity is their type and id).
    unnamed: HashMap<(&'a str, &'a str), Claims<'a>>,
    /// Resource address → entry, for a resource's own fullUrl.
    by_address: HashMap<*const Object, usize>,
    /// Resolutions already made: which of the candidates are distinct, by claimant list
    /// (its address) and version, or by contained list (its owner's address) and local
    /// id. Telling identical claimants apart serialises each of them, which a hostile
    /// bundle would otherwise have done for every reference to a much-claimed identity
    /// (claimants times references). Positions, not resources, so that the index stays
    /// covariant in its lifetime.
    resolved: RefCell<HashMap<Resolution, Vec<usize>>>,
    /// Contained resources by their owner's address, then by id: their positions in the
    /// owner's `contained`. Built once per owner: a resource with 100,000 contained ones
    /// and as many `#` references to them costs a pass, not a pass per reference. Ids
    /// are owned for the same reason as above.
    contained_ids: RefCell<HashMap<usize, HashMap<String, Vec<usize>>>>,
    /// Entries claiming the identity (fullUrl, or type and id without a fullUrl) of an
    /// earlier entry in the same version: the bundle is defective.
    pub duplicates: usize,
}

impl<'a> Index<'a> {
    /// Indexes `entries` (the Bundle's `entry` array).
    pub fn new(entries: &'a [Value]) -> Self {
        let mut index = Self {
            entries: Vec::new(),
            by_full_url: HashMap::new(),
            by_type_id: HashMap::new(),
            unnamed: HashMap::new(),
            by_address: HashMap::new(),
            resolved: RefCell::default(),
            contained_ids: RefCell::default(),
            duplicates: 0,
        };
        for entry in entries {
            let Some(resource) = entry.get("resource").and_then(Value::as_object) else {
                continue;
            };
            let full_url = entry.get("fullUrl").and_then(Value::as_str);
            let version = resource
                .get("meta")
                .and_then(|m| m.get("versionId"))
                .and_then(Value::as_str)
                .or_else(|| full_url.and_then(|u| split_version(u).1));
            let at = index.entries.len();
            let type_id = match (
                resource.get("resourceType").and_then(Value::as_str),
                resource.get("id").and_then(Value::as_str),
            ) {
                (Some(kind), Some(id)) => Some((kind, id)),
                _ => None,
            };
            let duplicate = match (full_url, type_id) {
                (Some(url), _) => index
                    .by_full_url
                    .entry(split_version(url).0)
                    .or_default()
                    .claim(at, version),
                (None, Some(key)) => index.unnamed.entry(key).or_default().claim(at, version),
                (None, None) => false,
            };
            index.duplicates += usize::from(duplicate);
            if let Some(key) = type_id {
                index.by_type_id.entry(key).or_default().push(at);
            }
            index.by_address.insert(std::ptr::from_ref(resource), at);
            index.entries.push(Entry {
                full_url,
                resource,
                version,
            });
        }
        index
    }

    /// Resolves `reference` made from the entry whose fullUrl is `from`, or from a resource
    /// whose contained resources are `contained`.
    pub fn resolve(
        &self,
        reference: &str,
        from: Option<&str>,
        contained: Option<&'a Object>,
    ) -> Target<'a> {
        if let Some(local) = reference.strip_prefix('#') {
            let all: &'a [Value] = contained
                .and_then(|c| c.get("contained"))
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice);
            // Keyed by the owner's address and the id (a `#` never names a version).
            let owner = contained.map_or(0, |c| std::ptr::from_ref(c) as usize);
            let positions = self
                .contained_ids
                .borrow_mut()
                .entry(owner)
                .or_insert_with(|| {
                    let mut ids: HashMap<String, Vec<usize>> = HashMap::new();
                    for (at, resource) in all.iter().enumerate() {
                        if let Some(id) = resource.get("id").and_then(Value::as_str) {
                            ids.entry(id.to_owned()).or_default().push(at);
                        }
                    }
                    ids
                })
                .get(local)
                .cloned()
                .unwrap_or_default();
            let found: Vec<&'a Object> = positions
                .iter()
                .filter_map(|&at| all.get(at).and_then(Value::as_object))
                .collect();
            return self.distinct(owner, Some(format!("#{local}")), found);
        }
        let (unversioned, version) = split_version(reference);
        let mut any_version = false;
        let mut pick = |list: Option<&Vec<usize>>| -> Option<Target<'a>> {
            let list = list.filter(|l| !l.is_empty())?;
            any_version = true;
            let found: Vec<&'a Object> = list
                .iter()
                .map(|&at| &self.entries[at])
                .filter(|e| version.is_none() || e.version == version)
                .map(|e| e.resource)
                .collect();
            let key = std::ptr::from_ref(list) as usize;
            (!found.is_empty()).then(|| self.distinct(key, version.map(str::to_owned), found))
        };
        if let Some(target) = pick(self.by_full_url.get(unversioned).map(|c| &c.entries)) {
            return target;
        }
        // Only a relative reference is read against a base or by type and id: an absolute
        // one names a resource on its own server, and another server's `Medication/20` is
        // not this bundle's.
        let relative = type_and_id(unversioned).filter(|_| !is_absolute(unversioned));
        if let Some((kind, id)) = relative {
            if let Some(base) = from.and_then(restful_base) {
                let absolute = format!("{base}{kind}/{id}");
                if let Some(target) =
                    pick(self.by_full_url.get(absolute.as_str()).map(|c| &c.entries))
                {
                    return target;
                }
            }
            if let Some(target) = pick(self.by_type_id.get(&(kind, id))) {
                return target;
            }
        }
        if version.is_some() && any_version {
            Target::VersionMissing
        } else {
            Target::Missing
        }
    }

    /// Resources of `kind`, in order.
    pub fn of_type(&self, kind: &str) -> impl Iterator<Item = &Entry<'a>> {
        self.entries
            .iter()
            .filter(move |e| e.resource.get("resourceType").and_then(Value::as_str) == Some(kind))
    }

    /// [`distinct`], remembered under `(list, qualifier)`: `found` is the same for the
    /// same key, so its distinct positions are too.
    fn distinct(
        &self,
        list: usize,
        qualifier: Option<String>,
        found: Vec<&'a Object>,
    ) -> Target<'a> {
        if found.len() == 1 {
            return Target::Found(found[0]);
        }
        let key = (list, qualifier);
        let known = self.resolved.borrow().get(&key).cloned();
        let kept = match known {
            Some(kept) => kept,
            None => {
                let kept = distinct_positions(&found);
                self.resolved.borrow_mut().insert(key, kept.clone());
                kept
            }
        };
        let kept: Vec<&'a Object> = kept.iter().filter_map(|&i| found.get(i).copied()).collect();
        match kept.len() {
            0 => Target::Missing,
            1 => Target::Found(kept[0]),
            _ => Target::Ambiguous(kept),
        }
    }

    /// The fullUrl of the entry holding `resource` (by identity).
    pub fn full_url_of(&self, resource: &Object) -> Option<&'a str> {
        self.by_address
            .get(&std::ptr::from_ref(resource))
            .and_then(|&at| self.entries[at].full_url)
    }
}

/// Identical copies are one resource; different ones are all kept, in document order:
/// the positions in `found` of the first of each. Copies are told by their serialisation
/// (keys sorted), so thousands of claimants cost their size, not their number squared.
fn distinct_positions(found: &[&Object]) -> Vec<usize> {
    let mut seen = HashSet::with_capacity(found.len());
    found
        .iter()
        .enumerate()
        .filter(|(_, resource)| seen.insert(serde_json::to_string(resource).unwrap_or_default()))
        .map(|(i, _)| i)
        .collect()
}

/// A reference with a scheme (`http:`, `https:`, `urn:`…), as opposed to `Type/id`.
fn is_absolute(reference: &str) -> bool {
    reference.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && !scheme.contains('/')
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// `(reference without version, version)` for `…/_history/N`.
fn split_version(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once("/_history/") {
        Some((base, version)) => (base, Some(version).filter(|v| !v.is_empty())),
        None => (reference, None),
    }
}

/// `Type/id` at the end of a reference or an absolute URL (without its version).
fn type_and_id(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.rsplitn(2, '/');
    let id = parts.next()?;
    let kind = parts.next()?.rsplit('/').next()?;
    (kind.starts_with(|c: char| c.is_ascii_uppercase()) && !id.is_empty()).then_some((kind, id))
}

/// `http://server/fhir/` for a fullUrl `http://server/fhir/Patient/1`.
fn restful_base(full_url: &str) -> Option<&str> {
    if !(full_url.starts_with("http://") || full_url.starts_with("https://")) {
        return None;
    }
    let unversioned = split_version(full_url).0;
    let (kind, id) = type_and_id(unversioned)?;
    unversioned.strip_suffix(&format!("{kind}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id_of(target: &Target) -> Vec<String> {
        target
            .candidates()
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn references_resolve_the_ways_real_bundles_write_them() {
        let entries = json!([
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1"}},
            {"fullUrl": "http://srv/fhir/Condition/c1", "resource": {"resourceType": "Condition", "id": "c1",
              "contained": [{"resourceType": "Medication", "id": "m"}]}},
            {"fullUrl": "http://srv/fhir/Medication/m2", "resource": {"resourceType": "Medication", "id": "m2"}},
            {"resource": {"resourceType": "Organization", "id": "o1"}}
        ]);
        let entries = entries.as_array().unwrap();
        let index = Index::new(entries);
        assert_eq!(id_of(&index.resolve("urn:uuid:1", None, None)), ["p1"]);
        assert_eq!(
            id_of(&index.resolve("Patient/p1", Some("urn:uuid:9"), None)),
            ["p1"]
        );
        assert_eq!(
            id_of(&index.resolve("Medication/m2", Some("http://srv/fhir/Condition/c1"), None)),
            ["m2"]
        );
        assert_eq!(id_of(&index.resolve("Organization/o1", None, None)), ["o1"]);
        let holder = index.entries[1].resource;
        assert_eq!(id_of(&index.resolve("#m", None, Some(holder))), ["m"]);
        assert!(matches!(
            index.resolve("Patient/none", None, None),
            Target::Missing
        ));
        assert!(matches!(
            index.resolve("garbage", None, None),
            Target::Missing
        ));
        assert!(matches!(index.resolve("", None, None), Target::Missing));
        assert_eq!(index.duplicates, 0);
        assert_eq!(
            index.full_url_of(index.entries[2].resource),
            Some("http://srv/fhir/Medication/m2")
        );
    }

    /// An absolute reference names its own server's resource: one on another server
    /// resolves to nothing here, never to this bundle's resource of the same type and id.
    #[test]
    fn an_absolute_reference_to_another_server_is_not_read_by_type_and_id() {
        let entries = json!([
            {"fullUrl": "http://srv/fhir/Medication/20", "resource": {"resourceType": "Medication", "id": "20"}},
            {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Medication", "id": "21"}}
        ]);
        let index = Index::new(entries.as_array().unwrap());
        let from = Some("http://srv/fhir/MedicationStatement/1");
        for elsewhere in ["http://other/fhir/Medication/20", "urn:x:Medication/21"] {
            assert!(
                matches!(index.resolve(elsewhere, from, None), Target::Missing),
                "{elsewhere}"
            );
        }
        assert!(matches!(
            index.resolve("http://srv/fhir/Medication/20", from, None),
            Target::Found(_)
        ));
        assert!(matches!(
            index.resolve("Medication/20", from, None),
            Target::Found(_)
        ));
        assert!(matches!(
            index.resolve("Medication/21", from, None),
            Target::Found(_)
        ));
        assert!(is_absolute("urn:uuid:1") && is_absolute("https://a/b"));
        assert!(!is_absolute("Medication/2") && !is_absolute("Medication/a:b"));
    }

    /// Contained resources are indexed once per owner, with the same answers as a search
    /// of the list each time (which a resource with 100,000 of them and as many
    /// references made quadratic).
    #[test]
    fn contained_resources_are_indexed_once_per_owner() {
        let entries = json!([
            {"resource": {"resourceType": "Composition", "id": "c", "contained": [
                {"resourceType": "AllergyIntolerance", "id": "a", "code": {"text": "latex"}},
                {"resourceType": "AllergyIntolerance", "id": "b"},
                "not a resource",
                {"resourceType": "AllergyIntolerance", "id": "a", "code": {"text": "penicillin"}}
            ]}},
            {"resource": {"resourceType": "Condition", "id": "d", "contained": [
                {"resourceType": "Medication", "id": "a"}
            ]}}
        ]);
        let index = Index::new(entries.as_array().unwrap());
        let (first, second) = (index.entries[0].resource, index.entries[1].resource);
        for _ in 0..3 {
            let target = index.resolve("#a", None, Some(first));
            assert!(matches!(target, Target::Ambiguous(_)), "{target:?}");
            assert_eq!(id_of(&target), ["a", "a"]);
            assert_eq!(id_of(&index.resolve("#b", None, Some(first))), ["b"]);
            assert!(matches!(
                index.resolve("#z", None, Some(first)),
                Target::Missing
            ));
            // Another owner's "a" is its own.
            assert_eq!(id_of(&index.resolve("#a", None, Some(second))), ["a"]);
        }
        assert!(matches!(index.resolve("#a", None, None), Target::Missing));
        assert_eq!(index.contained_ids.borrow().len(), 3, "two owners and none");
    }

    #[test]
    fn one_identity_claimed_twice_yields_every_claimant() {
        let entries = json!([
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "AllergyIntolerance", "id": "x", "code": {"text": "none"}}},
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "AllergyIntolerance", "id": "y", "code": {"text": "penicillin"}}},
            {"fullUrl": "urn:uuid:b", "resource": {"resourceType": "Condition", "id": "c"}},
            {"fullUrl": "urn:uuid:b", "resource": {"resourceType": "Condition", "id": "c"}}
        ]);
        let index = Index::new(entries.as_array().unwrap());
        assert_eq!(index.duplicates, 2);
        let target = index.resolve("urn:uuid:a", None, None);
        assert!(matches!(target, Target::Ambiguous(_)), "{target:?}");
        assert_eq!(id_of(&target), ["x", "y"]);
        // Identical copies are one resource (the duplicate is still counted above).
        assert!(matches!(
            index.resolve("urn:uuid:b", None, None),
            Target::Found(_)
        ));
        // Claimants are told apart once per identity, however often it is referred to
        // (each time would serialise every claimant again), with the same answers.
        for _ in 0..3 {
            assert_eq!(id_of(&index.resolve("urn:uuid:a", None, None)), ["x", "y"]);
            assert!(matches!(
                index.resolve("urn:uuid:b", None, None),
                Target::Found(_)
            ));
        }
        assert_eq!(index.resolved.borrow().len(), 2);
    }

    #[test]
    fn versioned_references_resolve_to_that_version_only() {
        let entries = json!([
            {"fullUrl": "http://srv/AllergyIntolerance/x/_history/1", "resource": {"resourceType": "AllergyIntolerance", "id": "x", "meta": {"versionId": "1"}}},
            {"fullUrl": "http://srv/AllergyIntolerance/x/_history/2", "resource": {"resourceType": "AllergyIntolerance", "id": "x", "meta": {"versionId": "2"}, "criticality": "high"}},
            {"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Condition", "id": "c", "meta": {"versionId": "7"}}}
        ]);
        let index = Index::new(entries.as_array().unwrap());
        // Two versions under one fullUrl are allowed (bdl-7), not duplicates.
        assert_eq!(index.duplicates, 0);
        let second = index.resolve("AllergyIntolerance/x/_history/2", None, None);
        let Target::Found(found) = second else {
            panic!("{second:?}")
        };
        assert_eq!(found["criticality"], "high");
        let first = index.resolve("http://srv/AllergyIntolerance/x/_history/1", None, None);
        assert!(matches!(first, Target::Found(r) if r.get("criticality").is_none()));
        assert!(matches!(
            index.resolve("AllergyIntolerance/x/_history/3", None, None),
            Target::VersionMissing
        ));
        // Unversioned: both versions, never one picked silently.
        assert_eq!(
            index
                .resolve("AllergyIntolerance/x", None, None)
                .candidates()
                .len(),
            2
        );
        assert!(matches!(
            index.resolve("Condition/c/_history/7", None, None),
            Target::Found(_)
        ));
        assert!(matches!(
            index.resolve("Condition/c/_history/6", None, None),
            Target::VersionMissing
        ));
    }
}
