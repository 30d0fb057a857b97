//! What the gateway understands of a saved DMP message (`samu-gateway dmp inspect`):
//! a TD3.1 or TD3.2 request or answer, an MTOM body, a SOAP fault. For integrators
//! comparing what the DMP sent with what the gateway read; it prints what the message
//! holds, so it is a tool for files the engineer already has, never a log.

use serde::Serialize;

use super::xds::{self, DocumentEntry, RegistryError, Status};
use super::{DmpError, hl7v3, mtom, soap};

/// A retrieved document, described.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievedSummary {
    /// Its unique id.
    pub unique_id: String,
    /// Its repository.
    pub repository_unique_id: String,
    /// Its media type.
    pub mime_type: String,
    /// Its size.
    pub bytes: usize,
    /// SHA-256 of its bytes (hex).
    pub sha256: String,
}

/// What a message is and holds.
#[derive(Clone, Serialize)]
pub struct Inspection {
    /// `td0.2-request`, `td0.2-answer`, `td0.5-request`, `td0.5-answer`, `td3.1-request`,
    /// `td3.1-answer`, `td3.2-request`, `td3.2-answer`, `fault`.
    pub message: &'static str,
    /// `wsa:Action`, when the header has one.
    pub action: Option<String>,
    /// The registry's or repository's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// TD3.1 answer: the documents listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<DocumentEntry>>,
    /// TD3.2 answer: the documents retrieved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieved: Option<Vec<RetrievedSummary>>,
    /// TD3.2 request: the (repository, unique id) pairs asked for; TD3.1 request: the
    /// slots by name with their values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<Vec<(String, String)>>,
    /// Errors listed by the registry or repository.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RegistryError>,
    /// TD0.2 answer: what it says of the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existence: Option<hl7v3::Existence>,
    /// TD0.5 answer: the candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<hl7v3::SearchCandidate>>,
    /// A fault: its code, subcodes and reason as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSummary>,
}

redacted_debug!(Inspection);

/// A fault, as `dmp inspect` prints it.
#[derive(Clone, Serialize)]
pub struct FaultSummary {
    /// The most specific code.
    pub code: String,
    /// Every code, outermost first.
    pub codes: Vec<String>,
    /// The reason, as sent.
    pub reason: String,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(FaultSummary);

const MAX_PARTS: usize = 64;

/// Reads `bytes`: an MTOM body when its first line is a boundary (`--…`), else XML.
pub async fn inspect(bytes: Vec<u8>) -> Result<Inspection, DmpError> {
    let (xml, mut attachments) = if bytes.starts_with(b"--") {
        let first = bytes
            .split(|b| *b == b'\n')
            .next()
            .map(|line| String::from_utf8_lossy(line).trim().to_owned())
            .unwrap_or_default();
        // One `--` only: a boundary may itself start with dashes (`----=_Part_0`).
        let boundary = first.strip_prefix("--").unwrap_or(&first).to_owned();
        let parts = mtom::split(bytes, &boundary, None, MAX_PARTS).await?;
        (parts.envelope, parts.attachments)
    } else {
        let text = String::from_utf8(bytes)
            .map_err(|_| DmpError::Answer("the message is not UTF-8".into()))?;
        (text, Default::default())
    };
    let doc = soap::parse(&xml)?;
    let action = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name((soap::SOAP, "Header")))
        .and_then(|h| soap::child_text(h, soap::WSA, "Action"))
        .map(soap::token);
    let mut out = Inspection {
        message: "fault",
        action,
        status: None,
        documents: None,
        retrieved: None,
        requested: None,
        errors: Vec::new(),
        existence: None,
        candidates: None,
        fault: None,
    };
    let body = match soap::body(&doc) {
        Ok(body) => body,
        Err(DmpError::Fault(fault)) => {
            let mut codes = vec![fault.code.clone()];
            codes.extend(fault.subcodes.iter().cloned());
            out.fault = Some(FaultSummary {
                code: fault.most_specific().to_owned(),
                codes,
                reason: fault.reason.clone(),
            });
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    match body.tag_name().name() {
        "AdhocQueryResponse" => {
            let found = xds::read_found(body)?;
            out.message = "td3.1-answer";
            out.status = Some(found.status);
            out.documents = Some(found.documents);
            out.errors = found.errors;
        }
        "RetrieveDocumentSetResponse" => {
            // Taken, not copied, as the client does (one part named many times).
            let parts = std::cell::RefCell::new(std::mem::take(&mut attachments));
            let retrieved = xds::read_retrieved(body, &|id| parts.borrow_mut().remove(id))?;
            out.message = "td3.2-answer";
            out.status = Some(retrieved.status);
            out.errors = retrieved.errors;
            out.retrieved = Some(
                retrieved
                    .documents
                    .iter()
                    .map(|d| RetrievedSummary {
                        unique_id: d.unique_id.clone(),
                        repository_unique_id: d.repository_unique_id.clone(),
                        mime_type: d.mime_type.clone(),
                        bytes: d.bytes.len(),
                        sha256: crate::encoding::hex(&crate::encoding::sha256(&d.bytes)),
                    })
                    .collect(),
            );
        }
        "PRPA_IN201308UV02" => {
            out.message = "td0.2-answer";
            out.existence = Some(hl7v3::read_existence(body)?);
        }
        "PRPA_IN201306UV02" => {
            out.message = "td0.5-answer";
            out.candidates = Some(hl7v3::read_search(body, &crate::patient::INS_OIDS)?);
        }
        "PRPA_IN201307UV02" => out.message = "td0.2-request",
        "PRPA_IN201305UV02" => out.message = "td0.5-request",
        "AdhocQueryRequest" => {
            out.message = "td3.1-request";
            out.requested = Some(xds::read_find_request(body));
        }
        "RetrieveDocumentSetRequest" => {
            out.message = "td3.2-request";
            out.requested = Some(xds::read_retrieve_request(body));
        }
        other => {
            return Err(DmpError::Answer(format!(
                "a {} message is not one the gateway reads",
                soap::token(other)
            )));
        }
    }
    Ok(out)
}
