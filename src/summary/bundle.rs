//! A Bundle's resources, indexed for reference resolution the way real bundles need it:
//! absolute references (`urn:uuid:…`, `urn:oid:…`, `http…`) against `fullUrl`; relative
//! `Type/id` references against the referencing entry's RESTful base, then against any
//! entry of that type and id (bundles mixing `Type/id` references with `urn:uuid:`
//! fullUrls are common); `#id` against the resource's contained resources.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Most entries read from one bundle: beyond, the document is refused as oversize.
pub const MAX_ENTRIES: usize = 20_000;

/// One entry: its fullUrl and resource.
pub struct Entry<'a> {
    /// `fullUrl`, if any.
    pub full_url: Option<&'a str>,
    /// The resource.
    pub resource: &'a Map<String, Value>,
}

/// The entries of a bundle, indexed.
pub struct Index<'a> {
    /// Every entry with a resource, in order.
    pub entries: Vec<Entry<'a>>,
    by_full_url: HashMap<&'a str, usize>,
    by_type_id: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> Index<'a> {
    /// Indexes `entries` (the Bundle's `entry` array).
    pub fn new(entries: &'a [Value]) -> Self {
        let mut index = Self {
            entries: Vec::new(),
            by_full_url: HashMap::new(),
            by_type_id: HashMap::new(),
        };
        for entry in entries {
            let Some(resource) = entry.get("resource").and_then(Value::as_object) else {
                continue;
            };
            let full_url = entry.get("fullUrl").and_then(Value::as_str);
            let at = index.entries.len();
            if let Some(url) = full_url {
                index.by_full_url.entry(url).or_insert(at);
            }
            if let (Some(kind), Some(id)) = (
                resource.get("resourceType").and_then(Value::as_str),
                resource.get("id").and_then(Value::as_str),
            ) {
                index.by_type_id.entry((kind, id)).or_insert(at);
            }
            index.entries.push(Entry { full_url, resource });
        }
        index
    }

    /// Resolves `reference` made from the entry whose fullUrl is `from`, or from a resource
    /// whose contained resources are `contained`.
    pub fn resolve(
        &self,
        reference: &str,
        from: Option<&str>,
        contained: Option<&'a Map<String, Value>>,
    ) -> Option<&'a Map<String, Value>> {
        if let Some(local) = reference.strip_prefix('#') {
            return contained?
                .get("contained")?
                .as_array()?
                .iter()
                .filter_map(Value::as_object)
                .find(|r| r.get("id").and_then(Value::as_str) == Some(local));
        }
        if let Some(&at) = self.by_full_url.get(reference) {
            return Some(self.entries[at].resource);
        }
        let (kind, id) = type_and_id(reference)?;
        if let Some(base) = from.and_then(restful_base) {
            let absolute = format!("{base}{kind}/{id}");
            if let Some(&at) = self.by_full_url.get(absolute.as_str()) {
                return Some(self.entries[at].resource);
            }
        }
        self.by_type_id
            .get(&(kind, id))
            .map(|&at| self.entries[at].resource)
    }

    /// Resources of `kind`, in order.
    pub fn of_type(&self, kind: &str) -> impl Iterator<Item = &Entry<'a>> {
        self.entries
            .iter()
            .filter(move |e| e.resource.get("resourceType").and_then(Value::as_str) == Some(kind))
    }

    /// The entry holding `resource` (by identity), for its fullUrl.
    pub fn full_url_of(&self, resource: &Map<String, Value>) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|e| std::ptr::eq(e.resource, resource))
            .and_then(|e| e.full_url)
    }
}

/// `Type/id` (possibly at the end of an absolute URL, possibly with `/_history/n`).
fn type_and_id(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split("/_history/").next()?;
    let mut parts = path.rsplitn(2, '/');
    let id = parts.next()?;
    let kind = parts.next()?.rsplit('/').next()?;
    (kind.starts_with(|c: char| c.is_ascii_uppercase()) && !id.is_empty()).then_some((kind, id))
}

/// `http://server/fhir/` for a fullUrl `http://server/fhir/Patient/1`.
fn restful_base(full_url: &str) -> Option<&str> {
    if !(full_url.starts_with("http://") || full_url.starts_with("https://")) {
        return None;
    }
    let (kind, id) = type_and_id(full_url)?;
    full_url.strip_suffix(&format!("{kind}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let id_of = |r: Option<&Map<String, Value>>| {
            r.and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        assert_eq!(
            id_of(index.resolve("urn:uuid:1", None, None)).as_deref(),
            Some("p1")
        );
        assert_eq!(
            id_of(index.resolve("Patient/p1", Some("urn:uuid:9"), None)).as_deref(),
            Some("p1")
        );
        assert_eq!(
            id_of(index.resolve("Medication/m2", Some("http://srv/fhir/Condition/c1"), None))
                .as_deref(),
            Some("m2")
        );
        assert_eq!(
            id_of(index.resolve("Organization/o1", None, None)).as_deref(),
            Some("o1")
        );
        let holder = index.entries[1].resource;
        assert_eq!(
            id_of(index.resolve("#m", None, Some(holder))).as_deref(),
            Some("m")
        );
        assert!(index.resolve("Patient/none", None, None).is_none());
        assert!(index.resolve("garbage", None, None).is_none());
        assert!(index.resolve("", None, None).is_none());
    }
}
