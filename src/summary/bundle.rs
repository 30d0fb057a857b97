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
//!
//! Claimants are told apart once, when the bundle is indexed, and every reference to
//! them is handed the same shared list: references are not bounded by [`MAX_ENTRIES`],
//! and a hostile section's 190,000 references written differently to one identity that
//! 10,000 entries claim (`1/AllergyIntolerance/x`, `2/AllergyIntolerance/x`…) would
//! otherwise each gather the claimants again (~2×10⁹ steps).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Map, Value};

/// Most entries read from one bundle: beyond, the document is refused as oversize.
pub const MAX_ENTRIES: usize = 20_000;

type Object = Map<String, Value>;

/// Different resources claiming one identity, in document order, identical copies kept
/// once: the index's own list, shared with every reference to the identity.
type Shared<'a> = Rc<[&'a Object]>;

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
    /// each of them must be considered. The list is the index's own, shared: every
    /// reference to the identity, however written, is handed the same one (at no cost),
    /// so a caller can tell a list it has already read by its address.
    Ambiguous(Rc<[&'a Object]>),
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
            Self::Ambiguous(all) => &all[..],
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
    /// With several entries, once the bundle is indexed ([`Claims::tell_apart`]): the
    /// different resources among them all (for a reference naming no version)…
    any_version: Option<Shared<'a>>,
    /// …and among those of each version the entries hold.
    by_version: HashMap<&'a str, Shared<'a>>,
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

    /// Tells the claimants apart (`entries` are the index's): identical copies are one
    /// resource. Done once, when the bundle is indexed: each claimant is serialised once,
    /// for its list and for its version's.
    fn tell_apart(&mut self, entries: &[Entry<'a>]) {
        if self.entries.len() < 2 {
            return;
        }
        let claimants: Vec<(&'a Object, Option<&'a str>, String)> = self
            .entries
            .iter()
            .map(|&at| {
                let entry = &entries[at];
                let text = serde_json::to_string(entry.resource).unwrap_or_default();
                (entry.resource, entry.version, text)
            })
            .collect();
        self.any_version = Some(distinct(
            claimants
                .iter()
                .map(|(resource, _, text)| (*resource, text.as_str())),
        ));
        let mut versions: HashMap<&'a str, Vec<(&'a Object, &str)>> = HashMap::new();
        for (resource, version, text) in &claimants {
            if let Some(version) = *version {
                versions
                    .entry(version)
                    .or_default()
                    .push((*resource, text.as_str()));
            }
        }
        self.by_version = versions
            .into_iter()
            .map(|(version, group)| (version, distinct(group)))
            .collect();
    }

    /// What a reference to the identity means in `version` (`None`: any version), when
    /// an entry holds it in that version: the list told apart above, handed out again.
    fn target(&self, entries: &[Entry<'a>], version: Option<&str>) -> Option<Target<'a>> {
        if let [at] = self.entries.as_slice() {
            // One claimant: nothing to tell apart.
            let entry = &entries[*at];
            return (version.is_none() || entry.version == version)
                .then_some(Target::Found(entry.resource));
        }
        let all = match version {
            None => self.any_version.as_ref(),
            Some(version) => self.by_version.get(version),
        };
        all.map(shared)
    }
}

/// The entries of a bundle, indexed.
pub struct Index<'a> {
    /// Every entry with a resource, in order.
    pub entries: Vec<Entry<'a>>,
    /// Unversioned fullUrl → entries, told apart.
    by_full_url: HashMap<&'a str, Claims<'a>>,
    /// Type and id → entries whatever their fullUrl, told apart (only their entries and
    /// lists are kept: the duplicates are counted by fullUrl, or in `unnamed`).
    by_type_id: HashMap<(&'a str, &'a str), Claims<'a>>,
    /// Type and id → entries without a fullUrl (whose identity is their type and id), to
    /// count duplicates; not told apart (references are resolved through the others).
    unnamed: HashMap<(&'a str, &'a str), Claims<'a>>,
    /// Resource address → entry, for a resource's own fullUrl.
    by_address: HashMap<*const Object, usize>,
    /// Contained resources by their owner's address, then by id: the different ones
    /// claiming the id. Built with the index for every resource that may own some (see
    /// [`index_contained`]): a resource with 100,000 contained ones and as many `#`
    /// references to them costs a pass, not a pass per reference. Nothing is filled in
    /// later: there is no interior mutability, so the index stays covariant in its
    /// lifetime (callers shorten it to resolve against a resource they borrow).
    contained: HashMap<usize, HashMap<&'a str, Shared<'a>>>,
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
            contained: HashMap::new(),
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
                index.by_type_id.entry(key).or_default().entries.push(at);
            }
            index.by_address.insert(std::ptr::from_ref(resource), at);
            index.entries.push(Entry {
                full_url,
                resource,
                version,
            });
        }
        // Claimants told apart once, for every reference to them.
        let entries = &index.entries;
        for claims in index
            .by_full_url
            .values_mut()
            .chain(index.by_type_id.values_mut())
        {
            claims.tell_apart(entries);
        }
        index.contained = index_contained(&index.entries);
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
            // By the owner's address and the id (a `#` never names a version).
            let owner = contained.map_or(0, |c| std::ptr::from_ref(c) as usize);
            return self
                .contained
                .get(&owner)
                .and_then(|ids| ids.get(local))
                .map_or(Target::Missing, shared);
        }
        let (unversioned, version) = split_version(reference);
        let mut any_version = false;
        let mut pick = |claims: Option<&Claims<'a>>| -> Option<Target<'a>> {
            let claims = claims.filter(|c| !c.entries.is_empty())?;
            any_version = true;
            claims.target(&self.entries, version)
        };
        if let Some(target) = pick(self.by_full_url.get(unversioned)) {
            return target;
        }
        // Only a relative reference is read against a base or by type and id: an absolute
        // one names a resource on its own server, and another server's `Medication/20` is
        // not this bundle's.
        let relative = type_and_id(unversioned).filter(|_| !is_absolute(unversioned));
        if let Some((kind, id)) = relative {
            if let Some(base) = from.and_then(restful_base) {
                let absolute = format!("{base}{kind}/{id}");
                if let Some(target) = pick(self.by_full_url.get(absolute.as_str())) {
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

    /// The fullUrl of the entry holding `resource` (by identity).
    pub fn full_url_of(&self, resource: &Object) -> Option<&'a str> {
        self.by_address
            .get(&std::ptr::from_ref(resource))
            .and_then(|&at| self.entries[at].full_url)
    }
}

/// The contained resources of every resource in `entries`, and of theirs (hostile
/// documents nest them, whatever FHIR's dom-2 says; a reference may be resolved against
/// any of them), by owner address and id, told apart.
fn index_contained<'a>(entries: &[Entry<'a>]) -> HashMap<usize, HashMap<&'a str, Shared<'a>>> {
    let mut index: HashMap<usize, HashMap<&'a str, Shared<'a>>> = HashMap::new();
    let mut owners: Vec<&'a Object> = entries.iter().map(|e| e.resource).collect();
    while let Some(owner) = owners.pop() {
        let Some(all) = owner.get("contained").and_then(Value::as_array) else {
            continue;
        };
        let mut ids: HashMap<&'a str, Vec<&'a Object>> = HashMap::new();
        for resource in all.iter().filter_map(Value::as_object) {
            owners.push(resource);
            if let Some(id) = resource.get("id").and_then(Value::as_str) {
                ids.entry(id).or_default().push(resource);
            }
        }
        let ids: HashMap<&'a str, Shared<'a>> = ids
            .into_iter()
            .map(|(id, found)| (id, distinct_resources(&found)))
            .collect();
        index.insert(std::ptr::from_ref(owner) as usize, ids);
    }
    index
}

/// The different resources among `found`, in document order. Copies are told by their
/// serialisation (keys sorted), so thousands of claimants cost their size, not their
/// number squared.
fn distinct_resources<'a>(found: &[&'a Object]) -> Shared<'a> {
    if found.len() < 2 {
        return found.into();
    }
    let texts: Vec<String> = found
        .iter()
        .map(|resource| serde_json::to_string(resource).unwrap_or_default())
        .collect();
    distinct(found.iter().copied().zip(texts.iter().map(String::as_str)))
}

/// Of resources and their serialisations, the first resource of each serialisation, in
/// order: identical copies are one resource; different ones are all kept.
fn distinct<'a, 's>(claimants: impl IntoIterator<Item = (&'a Object, &'s str)>) -> Shared<'a> {
    let mut seen = HashSet::new();
    claimants
        .into_iter()
        .filter(|(_, text)| seen.insert(*text))
        .map(|(resource, _)| resource)
        .collect()
}

/// The target a list of different resources makes: its one resource, or the list itself,
/// shared.
fn shared<'a>(all: &Shared<'a>) -> Target<'a> {
    match &all[..] {
        [] => Target::Missing,
        [one] => Target::Found(one),
        _ => Target::Ambiguous(Rc::clone(all)),
    }
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

    /// Contained resources are indexed once per owner, with the bundle, with the same
    /// answers as a search of the list each time (which a resource with 100,000 of them
    /// and as many references made quadratic).
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
        assert_eq!(index.contained.len(), 2, "the two owners");
        // Each `#a` is handed the one list, not a copy.
        let (Target::Ambiguous(one), Target::Ambiguous(again)) = (
            index.resolve("#a", None, Some(first)),
            index.resolve("#a", None, Some(first)),
        ) else {
            panic!("two claimants")
        };
        assert!(Rc::ptr_eq(&one, &again));
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
        // (each time would serialise every claimant again), with the same answers: the
        // same list, handed out again.
        let Target::Ambiguous(first) = index.resolve("urn:uuid:a", None, None) else {
            panic!("two claimants")
        };
        for _ in 0..3 {
            let Target::Ambiguous(again) = index.resolve("urn:uuid:a", None, None) else {
                panic!("two claimants")
            };
            assert!(Rc::ptr_eq(&first, &again));
            assert!(matches!(
                index.resolve("urn:uuid:b", None, None),
                Target::Found(_)
            ));
        }
    }

    /// References written differently to one identity (`0/AllergyIntolerance/x`,
    /// `1/AllergyIntolerance/x`…: each is its own text, all end in the same type and id)
    /// are each handed the one list of its claimants, never a list gathered anew: that
    /// was claimants times references (~2×10⁹ steps for a hostile bundle's 10,000
    /// claimants and a section's 190,000 references, which no entry limit bounds). The
    /// same for a version the claimants hold, and for one they do not.
    #[test]
    fn references_written_differently_to_one_identity_share_its_claimants() {
        let claimants = 2_000;
        let entries: Vec<Value> = (0..claimants)
            .map(|i| {
                json!({"resource": {"resourceType": "AllergyIntolerance", "id": "x",
                    "meta": {"versionId": (i % 2).to_string()}, "code": {"text": format!("substance {i}")}}})
            })
            .collect();
        let index = Index::new(&entries);
        let list = |reference: &str| match index.resolve(reference, None, None) {
            Target::Ambiguous(all) => all,
            other => panic!("{other:?}"),
        };
        let all = list("AllergyIntolerance/x");
        assert_eq!(all.len(), claimants);
        let second = list("AllergyIntolerance/x/_history/1");
        assert_eq!(second.len(), claimants / 2);
        for i in 0..20_000 {
            let again = list(&format!("{i}/AllergyIntolerance/x"));
            assert!(Rc::ptr_eq(&all, &again), "the one list, not a copy");
            let again = list(&format!("{i}/AllergyIntolerance/x/_history/1"));
            assert!(Rc::ptr_eq(&second, &again));
            assert!(matches!(
                index.resolve(&format!("{i}/AllergyIntolerance/x/_history/9"), None, None),
                Target::VersionMissing
            ));
        }
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
