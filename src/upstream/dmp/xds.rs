//! IHE XDS.b as the DMP uses it (docs/dmp.md, "Finding and retrieving documents"):
//! TD3.1, the FindDocuments stored query (ITI-18), and TD3.2, RetrieveDocumentSet
//! (ITI-43), whose answer comes as MTOM/XOP (the documents in MIME parts the XML
//! points to) or with the documents inline in base64.

use quick_xml::Writer;
use quick_xml::events::BytesText;
use roxmltree::Node;
use serde::Serialize;

use super::DmpError;
use super::soap::{self, child_text, token};

/// ITI-18's action.
pub const FIND_ACTION: &str = "urn:ihe:iti:2007:RegistryStoredQuery";
/// ITI-43's action.
pub const RETRIEVE_ACTION: &str = "urn:ihe:iti:2007:RetrieveDocumentSet";
const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
const XDSB: &str = "urn:ihe:iti:xds-b:2007";
const XOP: &str = "http://www.w3.org/2004/08/xop/include";
/// The FindDocuments stored query.
const FIND_DOCUMENTS: &str = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d";
const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
// Classification and identification schemes of a document entry (IHE ITI TF-3).
const TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
const CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
const FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
const CONFIDENTIALITY_CODE: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
const AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
const UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
const PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
/// Most documents a search may list: a record has tens to hundreds.
const MAX_ENTRIES: usize = 5_000;
/// Most documents one retrieval asks for.
pub const MAX_RETRIEVE: usize = 32;

/// A coded value of the metadata (`code^^scheme` when queried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coded {
    /// The code (`nodeRepresentation`).
    pub code: String,
    /// Its coding scheme, when given.
    pub scheme: Option<String>,
    /// Its display name, when given.
    pub display: Option<String>,
}

/// One document of the patient's record, as the registry lists it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct DocumentEntry {
    /// The document's unique id, which retrieval asks for.
    pub unique_id: String,
    /// The repository holding it.
    pub repository_unique_id: String,
    /// The document type (`60591-5`, `SYNTH`, `REMB`…).
    pub type_code: Option<Coded>,
    /// The class.
    pub class_code: Option<Coded>,
    /// Structured (`urn:ihe:pcc:ips:2020`…) or not (`urn:ihe:iti:xds-sd:pdf:2008`…).
    pub format_code: Option<Coded>,
    /// Confidentiality codes, `INVISIBLE_PATIENT` and masks among them.
    pub confidentiality: Vec<Coded>,
    /// `creationTime` (UTC, `YYYYMMDDhhmmss` or shorter).
    pub creation_time: Option<String>,
    /// `serviceStartTime`.
    pub service_start_time: Option<String>,
    /// The entry's title.
    pub title: Option<String>,
    /// Authors, by name (`authorPerson`).
    pub authors: Vec<String>,
    /// `mimeType`.
    pub mime_type: Option<String>,
    /// The document's SHA-1 (`hash` slot, lowercase hex), which what is retrieved must
    /// have.
    pub hash: Option<String>,
    /// The document's size in bytes (`size` slot), which what is retrieved must have.
    pub size: Option<u64>,
    /// Listed as approved (or with no status): a deprecated entry (replaced by a newer
    /// version) is listed by a registry that ignored the query's status filter, and is
    /// never chosen as the summary.
    pub approved: bool,
    /// The patient the registry files it under (`XDSDocumentEntry.patientId`), as
    /// (identifier, assigning authority's OID), when the entry says; never serialised.
    #[serde(skip)]
    pub patient_id: Option<(String, String)>,
}

redacted_debug!(DocumentEntry);

/// One document retrieved.
#[derive(Clone, PartialEq, Eq)]
pub struct RetrievedDocument {
    /// Its unique id.
    pub unique_id: String,
    /// The repository it came from.
    pub repository_unique_id: String,
    /// Its media type.
    pub mime_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

redacted_debug!(RetrievedDocument);

/// An error the registry or repository listed (`RegistryError`): codes only, the text
/// stays out (it may name the patient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryError {
    /// `errorCode`.
    pub code: String,
    /// `severity`, local part (`Error`, `Warning`).
    pub severity: String,
}

/// The registry's or repository's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything asked for.
    Success,
    /// Some of it, with errors listed.
    PartialSuccess,
    /// Nothing, with errors listed.
    Failure,
}

fn write_slot(w: &mut Writer<Vec<u8>>, name: &str, values: &[String]) -> std::io::Result<()> {
    w.create_element("rim:Slot")
        .with_attribute(("name", name))
        .write_inner_content(|w| {
            w.create_element("rim:ValueList").write_inner_content(|w| {
                for value in values {
                    // Quotes stay quotes: the stored query's syntax is read by people too.
                    w.create_element("rim:Value")
                        .write_text_content(BytesText::from_escaped(
                            quick_xml::escape::partial_escape(value.as_str()),
                        ))?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// A value as a stored query quotes it: `'…'`, with a quote inside doubled.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The FindDocuments body: approved documents of `patient_id` (`INS^^^&OID&ISO^NH`) of
/// the `types` (`code^^scheme`), every type in its own value (an OR).
pub fn find_documents_body(
    patient_id: &str,
    types: &[String],
) -> impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()> + use<> {
    let patient = quoted(patient_id);
    let types: Vec<String> = types.iter().map(|t| format!("({})", quoted(t))).collect();
    move |w| {
        w.create_element("query:AdhocQueryRequest")
            .with_attribute(("xmlns:query", QUERY))
            .with_attribute(("xmlns:rim", RIM))
            .write_inner_content(|w| {
                w.create_element("query:ResponseOption")
                    .with_attribute(("returnComposedObjects", "true"))
                    .with_attribute(("returnType", "LeafClass"))
                    .write_empty()?;
                w.create_element("rim:AdhocQuery")
                    .with_attribute(("id", FIND_DOCUMENTS))
                    .write_inner_content(|w| {
                        write_slot(w, "$XDSDocumentEntryPatientId", &[patient])?;
                        write_slot(
                            w,
                            "$XDSDocumentEntryStatus",
                            &[format!("({})", quoted(APPROVED))],
                        )?;
                        if !types.is_empty() {
                            write_slot(w, "$XDSDocumentEntryTypeCode", &types)?;
                        }
                        Ok(())
                    })?;
                Ok(())
            })?;
        Ok(())
    }
}

/// The RetrieveDocumentSet body for `documents` (repository, unique id), all in one
/// request.
pub fn retrieve_body(
    documents: &[(String, String)],
) -> impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()> + use<> {
    let documents = documents.to_vec();
    move |w| {
        w.create_element("xdsb:RetrieveDocumentSetRequest")
            .with_attribute(("xmlns:xdsb", XDSB))
            .write_inner_content(|w| {
                for (repository, unique_id) in &documents {
                    w.create_element("xdsb:DocumentRequest")
                        .write_inner_content(|w| {
                            w.create_element("xdsb:RepositoryUniqueId")
                                .write_text_content(BytesText::new(repository))?;
                            w.create_element("xdsb:DocumentUniqueId")
                                .write_text_content(BytesText::new(unique_id))?;
                            Ok(())
                        })?;
                }
                Ok(())
            })?;
        Ok(())
    }
}

fn status(node: Node<'_, '_>) -> Result<Status, DmpError> {
    let value = node.attribute("status").unwrap_or_default();
    match value.rsplit(':').next() {
        Some("Success") => Ok(Status::Success),
        Some("PartialSuccess") => Ok(Status::PartialSuccess),
        Some("Failure") => Ok(Status::Failure),
        _ => Err(DmpError::Answer(format!(
            "unknown registry status {}",
            token(value)
        ))),
    }
}

/// Distinct errors and distinct warnings kept of an answer, each: the list is bounded,
/// and warnings listed first never crowd out an error (an opposition) listed after them.
const MAX_REGISTRY_ERRORS: usize = 100;

fn registry_errors(node: Node<'_, '_>) -> Vec<RegistryError> {
    let (mut kept, mut warnings, mut errors) = (Vec::new(), 0, 0);
    let listed = node
        .descendants()
        .filter(|n| n.has_tag_name((RS, "RegistryError")))
        .map(|e| RegistryError {
            code: token(e.attribute("errorCode").unwrap_or_default()),
            severity: token(
                e.attribute("severity")
                    .unwrap_or_default()
                    .rsplit(':')
                    .next()
                    .unwrap_or_default(),
            ),
        });
    for error in listed {
        let count = if error.severity == "Warning" {
            &mut warnings
        } else {
            &mut errors
        };
        if *count < MAX_REGISTRY_ERRORS && !kept.contains(&error) {
            *count += 1;
            kept.push(error);
        }
        if warnings == MAX_REGISTRY_ERRORS && errors == MAX_REGISTRY_ERRORS {
            break;
        }
    }
    kept
}

/// The answer to FindDocuments: the entries, the status and the errors listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// Overall status.
    pub status: Status,
    /// The documents.
    pub documents: Vec<DocumentEntry>,
    /// Errors the registry listed.
    pub errors: Vec<RegistryError>,
}

/// Reads an `AdhocQueryResponse` (the body's element).
pub fn read_found(response: Node<'_, '_>) -> Result<Found, DmpError> {
    if !response.has_tag_name((QUERY, "AdhocQueryResponse")) {
        return Err(DmpError::Answer(format!(
            "expected an AdhocQueryResponse, got {}",
            token(response.tag_name().name())
        )));
    }
    let status = status(response)?;
    let mut documents = Vec::new();
    // Where ebRIM puts them, and only there: entries nested inside another entry's slots
    // would make each entry's reading walk the rest of the answer (quadratic).
    for (i, object) in response
        .children()
        .filter(|n| n.has_tag_name((RIM, "RegistryObjectList")))
        .flat_map(|list| list.children())
        .filter(|n| n.is_element())
        .enumerate()
    {
        // References only (`ObjectRef`: the registry did not return the entries asked
        // for) or anything else: an entry not read may be the synthesis, so the list is
        // not taken as the record's documents (an empty one would say "no summary
        // document" and withdraw the copies).
        if !object.has_tag_name((RIM, "ExtrinsicObject")) {
            return Err(DmpError::Answer(format!(
                "the document list holds a {} where a document entry was expected",
                token(object.tag_name().name())
            )));
        }
        if i == MAX_ENTRIES {
            return Err(DmpError::Answer(format!(
                "more than {MAX_ENTRIES} documents listed"
            )));
        }
        documents.push(read_entry(object, i)?);
    }
    Ok(Found {
        status,
        documents,
        errors: registry_errors(response),
    })
}

fn slot_values<'a>(node: Node<'a, '_>, name: &str) -> Vec<&'a str> {
    node.children()
        .filter(|n| n.has_tag_name((RIM, "Slot")) && n.attribute("name") == Some(name))
        .flat_map(|slot| {
            slot.children()
                .filter(|l| l.has_tag_name((RIM, "ValueList")))
        })
        .flat_map(|list| list.children().filter(|v| v.has_tag_name((RIM, "Value"))))
        .filter_map(|v| v.text())
        .map(str::trim)
        .collect()
}

fn localized(node: Node<'_, '_>, element: &str) -> Option<String> {
    node.children()
        .find(|n| n.has_tag_name((RIM, element)))
        .and_then(|name| {
            name.children()
                .find(|n| n.has_tag_name((RIM, "LocalizedString")))
        })
        .and_then(|s| s.attribute("value"))
        .map(str::to_owned)
}

fn read_entry<'a>(object: Node<'a, '_>, i: usize) -> Result<DocumentEntry, DmpError> {
    let classifications: Vec<Node<'_, '_>> = object
        .children()
        .filter(|n| n.has_tag_name((RIM, "Classification")))
        .collect();
    let coded = |scheme: &str| -> Vec<Coded> {
        classifications
            .iter()
            .filter(|c| c.attribute("classificationScheme") == Some(scheme))
            .filter_map(|c| {
                Some(Coded {
                    code: c.attribute("nodeRepresentation")?.trim().to_owned(),
                    scheme: slot_values(*c, "codingScheme")
                        .first()
                        .map(|s| (*s).to_owned()),
                    display: localized(*c, "Name"),
                })
            })
            .collect()
    };
    // One value each: of two, which one the registry means is its secret (a first
    // patient id naming the patient asked for would hide a second naming another).
    let one = |name: &str, values: Vec<&'a str>| match values.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(DmpError::Answer(format!(
            "document {i} of the list has more than one {name}"
        ))),
    };
    let single = |name: &str| one(name, slot_values(object, name));
    // One type, class and format: of two, the first was read (a PDF's format hiding
    // behind a structured one, a history's type behind a synthesis').
    let one_coded = |name: &str, scheme: &str| {
        let classified = classifications
            .iter()
            .filter(|c| c.attribute("classificationScheme") == Some(scheme))
            .count();
        if classified > 1 {
            return Err(DmpError::Answer(format!(
                "document {i} of the list has more than one {name}"
            )));
        }
        Ok(coded(scheme).into_iter().next())
    };
    let type_code = one_coded("typeCode", TYPE_CODE)?;
    let class_code = one_coded("classCode", CLASS_CODE)?;
    let format_code = one_coded("formatCode", FORMAT_CODE)?;
    let unique_id = one("uniqueId", external_ids(object, UNIQUE_ID))?
        .ok_or_else(|| DmpError::Answer(format!("document {i} of the list has no uniqueId")))?;
    let repository = single("repositoryUniqueId")?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            DmpError::Answer(format!(
                "document {i} of the list has no repositoryUniqueId"
            ))
        })?;
    for (name, id) in [("uniqueId", unique_id), ("repositoryUniqueId", repository)] {
        check_id(id, || format!("document {i} of the list: {name}"))?;
    }
    let patient_id = one("patientId", external_ids(object, PATIENT_ID))?;
    let creation_time = single("creationTime")?;
    let hash = single("hash")?
        .map(|h| {
            if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(DmpError::Answer(format!(
                    "document {i} of the list: its hash is not a SHA-1"
                )))
            }
        })
        .transpose()?;
    let size = single("size")?
        .map(|n| {
            n.parse::<u64>().map_err(|_| {
                DmpError::Answer(format!(
                    "document {i} of the list: its size is not a number"
                ))
            })
        })
        .transpose()?;
    let approved = object
        .attribute("status")
        .is_none_or(|s| s == "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved");
    let authors = classifications
        .iter()
        .filter(|c| c.attribute("classificationScheme") == Some(AUTHOR))
        .flat_map(|c| slot_values(*c, "authorPerson"))
        .map(person_name)
        .collect();
    Ok(DocumentEntry {
        unique_id: unique_id.to_owned(),
        repository_unique_id: repository.to_owned(),
        type_code,
        class_code,
        format_code,
        confidentiality: coded(CONFIDENTIALITY_CODE),
        creation_time: creation_time.map(str::to_owned),
        service_start_time: slot_values(object, "serviceStartTime")
            .first()
            .map(|s| (*s).to_owned()),
        title: localized(object, "Name"),
        authors,
        mime_type: object.attribute("mimeType").map(str::to_owned),
        hash,
        size,
        approved,
        patient_id: patient_id.map(patient_of),
    })
}

/// The values of `object`'s external identifiers under `scheme`, trimmed, not empty.
fn external_ids<'a>(object: Node<'a, '_>, scheme: &str) -> Vec<&'a str> {
    object
        .children()
        .filter(|n| {
            n.has_tag_name((RIM, "ExternalIdentifier"))
                && n.attribute("identificationScheme") == Some(scheme)
        })
        .filter_map(|n| n.attribute("value"))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// A CX (`id^^^&OID&ISO^type`) as (id, OID); the OID is empty when the value names no
/// assigning authority, which matches no patient asked for.
fn patient_of(cx: &str) -> (String, String) {
    let mut parts = cx.split('^');
    let id = parts.next().unwrap_or_default().trim().to_owned();
    let authority = parts.nth(2).unwrap_or_default();
    let oid = authority
        .split('&')
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    (id, oid)
}

/// Longest id accepted in an answer (an OID, with an extension for a uniqueId, is under a
/// hundred characters). Ids go into the access's audit record, whose size is bounded: a
/// hostile answer's huge id is refused here as malformed rather than failing the record.
const MAX_ID_CHARS: usize = 256;

/// Checks a document or repository id: bounded, and an OID or OID^extension of ASCII
/// letters, digits and `.^-_:` only. The ids go into the access's audit record
/// (`retrieved=<id>`, space-separated): a space or `=` in one would write a document the
/// record never sent.
fn check_id(id: &str, what: impl FnOnce() -> String) -> Result<(), DmpError> {
    let what = what();
    check_length(id, || what.clone())?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".^-_:".contains(&b))
    {
        return Err(DmpError::Answer(format!(
            "{what} holds characters an id does not"
        )));
    }
    Ok(())
}

fn check_length(value: &str, what: impl FnOnce() -> String) -> Result<(), DmpError> {
    if value.len() > MAX_ID_CHARS {
        return Err(DmpError::Answer(format!(
            "{} is longer than {MAX_ID_CHARS} characters",
            what()
        )));
    }
    Ok(())
}

/// An XCN (`id^family^given^…`) as a name: given then family; the id alone when that is
/// all there is.
fn person_name(xcn: &str) -> String {
    let parts: Vec<&str> = xcn.split('^').collect();
    let family = parts.get(1).copied().unwrap_or_default();
    let given = parts.get(2).copied().unwrap_or_default();
    let name = [given, family]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        parts.first().copied().unwrap_or_default().to_owned()
    } else {
        name
    }
}

/// The answer to RetrieveDocumentSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieved {
    /// Overall status.
    pub status: Status,
    /// The documents, each with its bytes.
    pub documents: Vec<RetrievedDocument>,
    /// Errors the repository listed.
    pub errors: Vec<RegistryError>,
}

/// Reads a `RetrieveDocumentSetResponse` (the body's element); `attachment` gives a
/// MIME part's bytes by Content-ID (without `cid:`) for documents sent as XOP includes.
pub fn read_retrieved(
    response: Node<'_, '_>,
    attachment: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Retrieved, DmpError> {
    if !response.has_tag_name((XDSB, "RetrieveDocumentSetResponse")) {
        return Err(DmpError::Answer(format!(
            "expected a RetrieveDocumentSetResponse, got {}",
            token(response.tag_name().name())
        )));
    }
    // One status and one error list: of two, the first was read (a `Success` hiding a
    // `Failure` and its refusal after it).
    let mut registries = response
        .children()
        .filter(|n| n.has_tag_name((RS, "RegistryResponse")));
    let registry = registries
        .next()
        .ok_or_else(|| DmpError::Answer("no RegistryResponse in the answer".into()))?;
    if registries.next().is_some() {
        return Err(DmpError::Answer(
            "more than one RegistryResponse in the answer".into(),
        ));
    }
    let mut documents = Vec::new();
    for (i, answer) in response
        .children()
        .filter(|n| n.has_tag_name((XDSB, "DocumentResponse")))
        .enumerate()
    {
        if i == MAX_RETRIEVE {
            return Err(DmpError::Answer(format!(
                "more than {MAX_RETRIEVE} documents returned"
            )));
        }
        // One of each: of two ids, two media types or two documents, which one the
        // repository means is its secret (the first of two ids could be checked against
        // the listing while the second names what the bytes are).
        let once = |name: &str| {
            if answer
                .children()
                .filter(|n| n.has_tag_name((XDSB, name)))
                .nth(1)
                .is_some()
            {
                return Err(DmpError::Answer(format!(
                    "document {i} returned has more than one {name}"
                )));
            }
            Ok(())
        };
        for name in [
            "DocumentUniqueId",
            "RepositoryUniqueId",
            "mimeType",
            "Document",
        ] {
            once(name)?;
        }
        let field = |name: &str| {
            let value = child_text(answer, XDSB, name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| DmpError::Answer(format!("document {i} returned has no {name}")))?;
            let what = || format!("document {i} returned: {name}");
            if name == "mimeType" {
                check_length(&value, what)?;
            } else {
                check_id(&value, what)?;
            }
            Ok(value)
        };
        let document = answer
            .children()
            .find(|n| n.has_tag_name((XDSB, "Document")))
            .ok_or_else(|| DmpError::Answer(format!("document {i} returned has no Document")))?;
        let bytes = match document
            .children()
            .find(|n| n.has_tag_name((XOP, "Include")))
        {
            Some(include) => {
                let href = include.attribute("href").unwrap_or_default();
                let id = href.strip_prefix("cid:").ok_or_else(|| {
                    DmpError::Answer(format!(
                        "document {i}: an XOP include that is not a cid: reference"
                    ))
                })?;
                let id = percent_decoded(id);
                attachment(&id).ok_or_else(|| {
                    DmpError::Answer(format!(
                        "document {i}: the MIME part it points to is missing or was already used"
                    ))
                })?
            }
            None => crate::xmldsig::base64_text(document)
                .ok_or_else(|| DmpError::Answer(format!("document {i}: not base64")))?,
        };
        let document = RetrievedDocument {
            unique_id: field("DocumentUniqueId")?,
            repository_unique_id: field("RepositoryUniqueId")?,
            mime_type: field("mimeType")?,
            bytes,
        };
        // Two answers for one document, maybe with different bytes: which is the
        // document is not for the gateway to guess (at most MAX_RETRIEVE: no quadratic).
        if documents.iter().any(|d: &RetrievedDocument| {
            d.unique_id == document.unique_id
                && d.repository_unique_id == document.repository_unique_id
        }) {
            return Err(DmpError::Answer(format!(
                "document {i} returned was returned before"
            )));
        }
        documents.push(document);
    }
    Ok(Retrieved {
        status: status(registry)?,
        documents,
        errors: registry_errors(registry),
    })
}

/// A Content-ID as a `cid:` URL writes it (RFC 2392: `%hh` escapes).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A FindDocuments request's slots: (name, value) in document order.
pub fn read_find_request(request: Node<'_, '_>) -> Vec<(String, String)> {
    request
        .descendants()
        .filter(|n| n.has_tag_name((RIM, "Slot")))
        .flat_map(|slot| {
            let name = slot.attribute("name").unwrap_or_default().to_owned();
            slot.children()
                .filter(|l| l.has_tag_name((RIM, "ValueList")))
                .flat_map(|list| list.children())
                .filter(|v| v.has_tag_name((RIM, "Value")))
                .filter_map(|v| v.text())
                .map(move |v| (name.clone(), v.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .take(1_000)
        .collect()
}

/// A RetrieveDocumentSet request's (repository, unique id) pairs.
pub fn read_retrieve_request(request: Node<'_, '_>) -> Vec<(String, String)> {
    request
        .children()
        .filter(|n| n.has_tag_name((XDSB, "DocumentRequest")))
        .take(1_000)
        .map(|d| {
            (
                child_text(d, XDSB, "RepositoryUniqueId")
                    .unwrap_or_default()
                    .to_owned(),
                child_text(d, XDSB, "DocumentUniqueId")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Reads a whole FindDocuments answer envelope.
pub fn found_from_envelope(xml: &str) -> Result<Found, DmpError> {
    let doc = soap::parse(xml)?;
    read_found(soap::body(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::{check_id, found_from_envelope, patient_of};

    fn td31() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dmp/td31-answer.xml"
        ))
        .unwrap()
    }

    /// Two answers for one document (maybe with different bytes) refuse the retrieval:
    /// which is the document is not for the gateway to guess.
    #[test]
    fn a_document_returned_twice_is_refused() {
        let answer = |bodies: &[&str]| {
            let responses: String = bodies
                .iter()
                .map(|b| {
                    format!(
                        "<xdsb:DocumentResponse><xdsb:RepositoryUniqueId>1.2.3</xdsb:RepositoryUniqueId>\
                         <xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId>\
                         <xdsb:mimeType>text/xml</xdsb:mimeType><xdsb:Document>{b}</xdsb:Document>\
                         </xdsb:DocumentResponse>"
                    )
                })
                .collect();
            format!(
                "<xdsb:RetrieveDocumentSetResponse xmlns:xdsb=\"{}\" xmlns:rs=\"{}\">\
                 <rs:RegistryResponse status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success\"/>\
                 {responses}</xdsb:RetrieveDocumentSetResponse>",
                super::XDSB,
                super::RS
            )
        };
        let read = |xml: String| {
            let doc = roxmltree::Document::parse(&xml).unwrap();
            super::read_retrieved(doc.root_element(), &|_| None).map(|r| r.documents.len())
        };
        // "<a></a>" and "<b></b>", base64.
        assert_eq!(read(answer(&["PGE+PC9hPg=="])).unwrap(), 1);
        let err = read(answer(&["PGE+PC9hPg==", "PGI+PC9iPg=="])).unwrap_err();
        assert!(err.to_string().contains("returned before"), "{err}");
    }

    /// An entry's size, SHA-1 and status are read; one that cannot be what it says is
    /// refused, not read as having none.
    #[test]
    fn an_entrys_size_hash_and_status_are_read() {
        let text = td31();
        let found = found_from_envelope(&text).unwrap();
        let first = &found.documents[0];
        assert_eq!(first.size, Some(641));
        assert_eq!(
            first.hash.as_deref(),
            Some("63ca9b4bfb1cac63711c6c67b64e15a134b16420")
        );
        assert!(found.documents.iter().all(|d| d.approved));
        let deprecated = text.replacen("StatusType:Approved", "StatusType:Deprecated", 1);
        let found = found_from_envelope(&deprecated).unwrap();
        assert!(!found.documents[0].approved);
        assert!(found.documents[1].approved);
        let size = "<rim:Value>641</rim:Value>";
        let hash = "<rim:Value>63CA9B4BFB1CAC63711C6C67B64E15A134B16420</rim:Value>";
        for (from, to, why) in [
            (
                size,
                "<rim:Value>641 octets</rim:Value>",
                "size is not a number",
            ),
            (size, "<rim:Value>-1</rim:Value>", "size is not a number"),
            (
                size,
                "<rim:Value>1</rim:Value><rim:Value>2</rim:Value>",
                "more than one size",
            ),
            (
                hash,
                "<rim:Value>63CA9B4B</rim:Value>",
                "hash is not a SHA-1",
            ),
            (hash, &hash.replace("63CA", "ZZCA"), "hash is not a SHA-1"),
        ] {
            assert!(text.contains(from));
            let err = found_from_envelope(&text.replacen(from, to, 1)).unwrap_err();
            assert!(err.to_string().contains(why), "{to}: {err}");
        }
    }

    /// References instead of entries (`ObjectRef`), or anything but an entry, in the
    /// list: refused, never read as a list without the synthesis (which withdrew the
    /// patient's copies). An id, a patient id, a repository or a creation time given
    /// twice: refused (the first was read, hiding a second patient id).
    #[test]
    fn a_list_of_references_or_an_entry_saying_two_things_is_refused() {
        let text = td31();
        let list = "<rim:RegistryObjectList>";
        assert!(text.contains(list));
        let with_ref = text.replacen(
            list,
            "<rim:RegistryObjectList><rim:ObjectRef id=\"urn:uuid:1\"/>",
            1,
        );
        let err = found_from_envelope(&with_ref).unwrap_err().to_string();
        assert!(err.contains("ObjectRef"), "{err}");
        let found = found_from_envelope(&text).unwrap();
        let patient = "<rim:ExternalIdentifier";
        let first = text.find(patient).unwrap();
        let end = first
            + text[first..].find("</rim:ExternalIdentifier>").unwrap()
            + "</rim:ExternalIdentifier>".len();
        let identifier = &text[first..end];
        let twice = format!("{}{identifier}{}", &text[..end], &text[end..]);
        let err = found_from_envelope(&twice).unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
        let created = "name=\"creationTime\"><rim:ValueList><rim:Value>";
        assert!(text.contains(created));
        let err = found_from_envelope(&text.replacen(
            created,
            "name=\"creationTime\"><rim:ValueList><rim:Value>20990101</rim:Value><rim:Value>",
            1,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than one creationTime"), "{err}");
        assert!(!found.documents.is_empty());
    }

    /// Two `RegistryResponse`s in a retrieval's answer: refused, not read by the first (a
    /// `Success` hid the `Failure` after it).
    #[test]
    fn a_retrieval_answer_with_two_statuses_is_refused() {
        let answer = |statuses: &[&str]| {
            let registries: String = statuses
                .iter()
                .map(|s| {
                    format!(
                        "<rs:RegistryResponse status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{s}\"/>"
                    )
                })
                .collect();
            format!(
                "<xdsb:RetrieveDocumentSetResponse xmlns:xdsb=\"{}\" xmlns:rs=\"{}\">{registries}\
                 </xdsb:RetrieveDocumentSetResponse>",
                super::XDSB,
                super::RS
            )
        };
        let read = |xml: String| {
            let doc = roxmltree::Document::parse(&xml).unwrap();
            super::read_retrieved(doc.root_element(), &|_| None).map(|r| r.status)
        };
        assert_eq!(read(answer(&["Success"])).unwrap(), super::Status::Success);
        let err = read(answer(&["Success", "Failure"])).unwrap_err();
        assert!(
            err.to_string().contains("more than one RegistryResponse"),
            "{err}"
        );
        let err = read(answer(&[])).unwrap_err();
        assert!(err.to_string().contains("no RegistryResponse"), "{err}");
    }

    /// A returned document giving two ids, two media types or two documents: refused, not
    /// read by the first.
    #[test]
    fn a_returned_document_saying_a_field_twice_is_refused() {
        let response = |extra: &str| {
            format!(
                "<xdsb:RetrieveDocumentSetResponse xmlns:xdsb=\"{x}\" xmlns:rs=\"{r}\">\
                 <rs:RegistryResponse status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success\"/>\
                 <xdsb:DocumentResponse><xdsb:RepositoryUniqueId>1.2.3</xdsb:RepositoryUniqueId>\
                 <xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId>{extra}\
                 <xdsb:mimeType>text/xml</xdsb:mimeType><xdsb:Document>PGEvPg==</xdsb:Document>\
                 </xdsb:DocumentResponse></xdsb:RetrieveDocumentSetResponse>",
                x = super::XDSB,
                r = super::RS
            )
        };
        let read = |xml: String| {
            let doc = roxmltree::Document::parse(&xml).unwrap();
            super::read_retrieved(doc.root_element(), &|_| None).map(|r| r.documents.len())
        };
        assert_eq!(read(response("")).unwrap(), 1);
        for (extra, name) in [
            (
                "<xdsb:DocumentUniqueId>9.9.9</xdsb:DocumentUniqueId>",
                "DocumentUniqueId",
            ),
            (
                "<xdsb:RepositoryUniqueId>9.9</xdsb:RepositoryUniqueId>",
                "RepositoryUniqueId",
            ),
            ("<xdsb:mimeType>application/pdf</xdsb:mimeType>", "mimeType"),
            ("<xdsb:Document>PGIvPg==</xdsb:Document>", "Document"),
        ] {
            let err = read(response(extra)).unwrap_err();
            assert!(
                err.to_string().contains(&format!("more than one {name}")),
                "{extra}: {err}"
            );
        }
    }

    /// An entry with two classifications under the type, class or format scheme: refused,
    /// not read by the first (which one the registry means is its secret).
    #[test]
    fn an_entry_with_two_types_classes_or_formats_is_refused() {
        let text = td31();
        let first = "<rim:Classification id=\"urn:uuid:c2\"";
        assert!(text.contains(first));
        for (scheme, name) in [
            (super::TYPE_CODE, "typeCode"),
            (super::CLASS_CODE, "classCode"),
            (super::FORMAT_CODE, "formatCode"),
        ] {
            let another = format!(
                "<rim:Classification classificationScheme=\"{scheme}\" nodeRepresentation=\"REMB\"/>{first}"
            );
            let err = found_from_envelope(&text.replacen(first, &another, 1))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("document 0 of the list has more than one {name}")),
                "{err}"
            );
        }
        let found = found_from_envelope(&text).unwrap();
        let code = |c: &Option<super::Coded>| c.as_ref().map(|c| c.code.clone());
        assert_eq!(
            code(&found.documents[0].type_code).as_deref(),
            Some("60591-5")
        );
        assert_eq!(code(&found.documents[0].class_code).as_deref(), Some("60"));
        assert_eq!(
            code(&found.documents[0].format_code).as_deref(),
            Some("urn:ihe:pcc:ips:2020")
        );
    }

    /// Warnings listed first never crowd an error out of the kept list: an opposition
    /// after a hundred warnings is still seen.
    #[test]
    fn an_error_after_many_warnings_is_kept() {
        let warnings: String = (0..300)
            .map(|i| {
                format!(
                    "<rs:RegistryError errorCode=\"W{i}\" severity=\"urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning\"/>"
                )
            })
            .collect();
        let xml = format!(
            "<q:AdhocQueryResponse xmlns:q=\"{}\" xmlns:rs=\"{}\" status=\"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure\"><rs:RegistryErrorList>{warnings}\
             <rs:RegistryError errorCode=\"OPPOSITION_ACCES_URGENCE\" severity=\"urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error\"/>\
             <rs:RegistryError errorCode=\"OPPOSITION_ACCES_URGENCE\" severity=\"urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error\"/>\
             </rs:RegistryErrorList></q:AdhocQueryResponse>",
            super::QUERY,
            super::RS
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let found = super::read_found(doc.root_element()).unwrap();
        assert_eq!(found.errors.len(), super::MAX_REGISTRY_ERRORS + 1);
        assert_eq!(
            found.errors.last().unwrap().code,
            "OPPOSITION_ACCES_URGENCE",
            "kept once"
        );
    }

    #[test]
    fn an_entry_patient_id_is_read_as_id_and_authority() {
        let read = |cx: &str| patient_of(cx);
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            read("180017500000134^^^&1.2.250.1.213.1.4.8&ISO^NH"),
            pair("180017500000134", "1.2.250.1.213.1.4.8")
        );
        // Without the identifier type, and with spaces around.
        assert_eq!(
            read(" 180017500000134^^^&1.2.250.1.213.1.4.10&ISO"),
            pair("180017500000134", "1.2.250.1.213.1.4.10")
        );
        // No assigning authority: an empty OID, which no INS has.
        assert_eq!(read("180017500000134"), pair("180017500000134", ""));
        assert_eq!(read("180017500000134^^^"), pair("180017500000134", ""));
        assert_eq!(read(""), pair("", ""));
    }

    #[test]
    fn ids_are_oids_or_oids_with_an_extension() {
        let what = || "id".to_owned();
        assert!(check_id("1.2.250.1.999.1.1", what).is_ok());
        assert!(check_id("1.2.250.1.213.1.1.9^doc-42_a:b", what).is_ok());
        for forged in [
            "1.2.3 retrieved=9.9.9",
            "1.2.3\tx",
            "1.2.3=",
            "1.2.3\u{a0}",
            &"1".repeat(300),
        ] {
            assert!(check_id(forged, what).is_err(), "{forged}");
        }
    }
}
