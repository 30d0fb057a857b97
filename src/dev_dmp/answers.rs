//! The stand-in's answers, in the shapes the gateway's DMP client reads
//! (docs/dmp.md): SOAP 1.2 envelopes written with quick-xml, documents retrieved as
//! MTOM/XOP.

use quick_xml::Writer;
use quick_xml::events::BytesText;

use super::{DmpPatient, LoadedDocument, REPOSITORY};

type W = Writer<Vec<u8>>;
type Io = std::io::Result<()>;

const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSA: &str = "http://www.w3.org/2005/08/addressing";
const HL7: &str = "urn:hl7-org:v3";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
const XDSB: &str = "urn:ihe:iti:xds-b:2007";

fn text(w: &mut W, name: &str, value: &str) -> Io {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

thread_local! {
    /// The request being answered (its `wsa:MessageID`), which every envelope written
    /// meanwhile names in `wsa:RelatesTo`.
    static RELATES_TO: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `answer` (synchronous) with its envelopes naming `request` as the one answered.
pub(super) fn answering<T>(request: Option<String>, answer: impl FnOnce() -> T) -> T {
    RELATES_TO.with(|r| *r.borrow_mut() = request);
    let answered = answer();
    RELATES_TO.with(|r| *r.borrow_mut() = None);
    answered
}

/// An envelope whose header says `action` (and the request it answers) and whose body
/// `body` writes.
fn envelope(action: &str, body: impl FnOnce(&mut W) -> Io) -> String {
    let relates_to = RELATES_TO.with(|r| r.borrow().clone());
    let mut w = Writer::new(Vec::new());
    let _ = w
        .create_element("soap:Envelope")
        .with_attribute(("xmlns:soap", SOAP))
        .write_inner_content(|w| {
            w.create_element("soap:Header").write_inner_content(|w| {
                w.create_element("Action")
                    .with_attribute(("xmlns", WSA))
                    .write_text_content(BytesText::new(action))?;
                if let Some(id) = &relates_to {
                    w.create_element("RelatesTo")
                        .with_attribute(("xmlns", WSA))
                        .write_text_content(BytesText::new(id))?;
                }
                Ok(())
            })?;
            w.create_element("soap:Body").write_inner_content(body)?;
            Ok(())
        });
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// A SOAP 1.2 fault: `side` (`Sender`: the request; `Receiver`: the service itself), the
/// DMP's code as subcode, a French reason.
pub(super) fn fault(side: &str, code: &str, reason: &str) -> String {
    envelope("http://www.w3.org/2005/08/addressing/soap/fault", |w| {
        w.create_element("soap:Fault").write_inner_content(|w| {
            w.create_element("soap:Code").write_inner_content(|w| {
                text(w, "soap:Value", &format!("soap:{side}"))?;
                w.create_element("soap:Subcode")
                    .write_inner_content(|w| text(w, "soap:Value", &format!("soap:{code}")))?;
                Ok(())
            })?;
            w.create_element("soap:Reason").write_inner_content(|w| {
                w.create_element("soap:Text")
                    .with_attribute(("xml:lang", "fr"))
                    .write_text_content(BytesText::new(reason))?;
                Ok(())
            })?;
            Ok(())
        })?;
        Ok(())
    })
}

/// An HL7 v3 answer. TD0.2's form (`existence`) carries the professional's authorisation
/// (always `VALIDE` here: the gateway does not need it in regulation) and writes the
/// acknowledgement type as an attribute; TD0.5's writes it as an element, as the DMP does.
fn hl7_answer(root: &str, existence: bool, control: impl FnOnce(&mut W) -> Io) -> String {
    envelope(&format!("urn:hl7-org:v3:{root}"), |w| {
        w.create_element(root)
            .with_attribute(("xmlns", HL7))
            .with_attribute(("xmlns:xsi", XSI))
            .with_attribute(("ITSVersion", "XML_1.0"))
            .write_inner_content(|w| {
                w.create_element("interactionId")
                    .with_attribute(("root", "2.16.840.1.113883.1.6"))
                    .with_attribute(("extension", root))
                    .write_empty()?;
                if existence {
                    // The schema puts the attention lines before the acknowledgement.
                    w.create_element("attentionLine").write_inner_content(|w| {
                        w.create_element("keyWordText")
                            .with_attribute(("code", "AUTORISATION"))
                            .with_attribute(("codeSystem", "1.2.250.1.213.4.1.2.6.1"))
                            .write_empty()?;
                        w.create_element("value")
                            .with_attribute(("xsi:type", "CV"))
                            .with_attribute(("code", "VALIDE"))
                            .with_attribute(("codeSystem", "1.2.250.1.213.4.1.2.6.2"))
                            .write_empty()?;
                        Ok(())
                    })?;
                    w.create_element("acknowledgement")
                        .with_attribute(("typeCode", "AA"))
                        .write_empty()?;
                } else {
                    w.create_element("acknowledgement")
                        .write_inner_content(|w| {
                            w.create_element("typeCode")
                                .with_attribute(("code", "AA"))
                                .write_empty()?;
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
    })
}

fn flag(w: &mut W, element: &str, code: &str, value: bool) -> Io {
    w.create_element(element).write_inner_content(|w| {
        w.create_element("administrativeObservation")
            .with_attribute(("classCode", "VERIF"))
            .write_inner_content(|w| {
                w.create_element("code")
                    .with_attribute(("code", code))
                    .with_attribute(("codeSystem", "1.2.250.1.213.4.1.2.3"))
                    .write_empty()?;
                w.create_element("value")
                    .with_attribute(("xsi:type", "BL"))
                    .with_attribute(("value", if value { "true" } else { "false" }))
                    .write_empty()?;
                Ok(())
            })?;
        Ok(())
    })?;
    Ok(())
}

fn patient_block(w: &mut W, patient: &DmpPatient, percent: Option<u8>) -> Io {
    w.create_element("subject").write_inner_content(|w| {
        w.create_element("registrationEvent")
            .write_inner_content(|w| {
                w.create_element("subject1").write_inner_content(|w| {
                    w.create_element("patient").write_inner_content(|w| {
                        w.create_element("id")
                            .with_attribute(("root", patient.ins_oid.as_str()))
                            .with_attribute(("extension", patient.ins.as_str()))
                            .write_empty()?;
                        w.create_element("statusCode")
                            .with_attribute((
                                "code",
                                if patient.closed {
                                    "terminated"
                                } else {
                                    "active"
                                },
                            ))
                            .write_empty()?;
                        w.create_element("patientPerson").write_inner_content(|w| {
                            w.create_element("name").write_inner_content(|w| {
                                for given in &patient.given {
                                    text(w, "given", given)?;
                                }
                                w.create_element("family")
                                    .with_attribute(("qualifier", "BR"))
                                    .write_text_content(BytesText::new(&patient.family))?;
                                Ok(())
                            })?;
                            w.create_element("administrativeGenderCode")
                                .with_attribute(("code", patient.gender.as_str()))
                                .write_empty()?;
                            w.create_element("birthTime")
                                .with_attribute((
                                    "value",
                                    patient.birth_date.replace('-', "").as_str(),
                                ))
                                .write_empty()?;
                            Ok(())
                        })?;
                        if let Some(percent) = percent {
                            w.create_element("subjectOf1").write_inner_content(|w| {
                                w.create_element("queryMatchObservation")
                                    .write_inner_content(|w| {
                                        w.create_element("code")
                                            .with_attribute(("code", "POURCENTAGE"))
                                            .write_empty()?;
                                        w.create_element("value")
                                            .with_attribute(("xsi:type", "INT"))
                                            .with_attribute(("value", percent.to_string().as_str()))
                                            .write_empty()?;
                                        Ok(())
                                    })?;
                                Ok(())
                            })?;
                        }
                        use crate::upstream::AccessMode;
                        flag(
                            w,
                            "subjectOf",
                            "OPPOSITION_ACCES_URGENCE",
                            patient.opposed.contains(&AccessMode::Centre15),
                        )?;
                        flag(
                            w,
                            "subjectOf",
                            "OPPOSITION_BRIS_DE_GLACE",
                            patient.opposed.contains(&AccessMode::BrisDeGlace),
                        )?;
                        Ok(())
                    })?;
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })?;
    Ok(())
}

fn query_ack(w: &mut W, found: bool) -> Io {
    w.create_element("queryAck").write_inner_content(|w| {
        w.create_element("queryResponseCode")
            .with_attribute(("code", if found { "OK" } else { "NF" }))
            .write_empty()?;
        Ok(())
    })?;
    Ok(())
}

/// TD0.2's answer: the patient's record, or none.
pub(super) fn existence(patient: Option<&DmpPatient>) -> String {
    hl7_answer("PRPA_IN201308UV02", true, |w| {
        if let Some(patient) = patient {
            patient_block(w, patient, None)?;
        }
        query_ack(w, patient.is_some())
    })
}

/// TD0.5's answer: the candidates with how well each matches.
pub(super) fn candidates(found: &[(&DmpPatient, u8)]) -> String {
    hl7_answer("PRPA_IN201306UV02", false, |w| {
        for (patient, percent) in found {
            patient_block(w, patient, Some(*percent))?;
        }
        query_ack(w, !found.is_empty())
    })
}

fn slot(w: &mut W, name: &str, value: &str) -> Io {
    w.create_element("rim:Slot")
        .with_attribute(("name", name))
        .write_inner_content(|w| {
            w.create_element("rim:ValueList")
                .write_inner_content(|w| text(w, "rim:Value", value))?;
            Ok(())
        })?;
    Ok(())
}

fn classification(
    w: &mut W,
    scheme: &str,
    object: &str,
    code: &str,
    coding: Option<&str>,
    slots: &[(&str, &str)],
) -> Io {
    w.create_element("rim:Classification")
        .with_attribute(("classificationScheme", scheme))
        .with_attribute(("classifiedObject", object))
        .with_attribute(("nodeRepresentation", code))
        .write_inner_content(|w| {
            if let Some(coding) = coding {
                slot(w, "codingScheme", coding)?;
            }
            for (name, value) in slots {
                slot(w, name, value)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn registry_errors(w: &mut W, errors: &[&str]) -> Io {
    if errors.is_empty() {
        return Ok(());
    }
    w.create_element("rs:RegistryErrorList")
        .with_attribute(("xmlns:rs", RS))
        .write_inner_content(|w| {
            for code in errors {
                w.create_element("rs:RegistryError")
                    .with_attribute(("errorCode", *code))
                    .with_attribute(("codeContext", "Refus du service de démonstration"))
                    .with_attribute((
                        "severity",
                        "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
                    ))
                    .write_empty()?;
            }
            Ok(())
        })?;
    Ok(())
}

fn status(documents: usize, errors: usize) -> &'static str {
    match (documents, errors) {
        (_, 0) => "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
        (0, _) => "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure",
        _ => "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess",
    }
}

/// TD3.1's answer: the documents listed, or the errors.
pub(super) fn found(
    patient: &DmpPatient,
    documents: &[&LoadedDocument],
    errors: &[&str],
) -> String {
    envelope("urn:ihe:iti:2007:RegistryStoredQueryResponse", |w| {
        w.create_element("query:AdhocQueryResponse")
            .with_attribute(("xmlns:query", QUERY))
            .with_attribute(("xmlns:rim", RIM))
            .with_attribute(("status", status(documents.len(), errors.len())))
            .write_inner_content(|w| {
                w.create_element("rim:RegistryObjectList")
                    .write_inner_content(|w| {
                        for (i, d) in documents.iter().enumerate() {
                            let id = format!("urn:uuid:00000000-0000-4000-8000-{:012}", i + 1);
                            w.create_element("rim:ExtrinsicObject")
                                .with_attribute(("id", id.as_str()))
                                .with_attribute(("mimeType", "text/xml"))
                                .with_attribute((
                                    "objectType",
                                    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
                                ))
                                .with_attribute((
                                    "status",
                                    "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
                                ))
                                .write_inner_content(|w| {
                                    slot(w, "creationTime", &d.meta.creation_time)?;
                                    slot(w, "repositoryUniqueId", REPOSITORY)?;
                                    // What retrieval must return: the gateway checks both.
                                    slot(w, "hash", &crate::encoding::sha1_hex(&d.bytes))?;
                                    slot(w, "size", &d.bytes.len().to_string())?;
                                    w.create_element("rim:Name").write_inner_content(|w| {
                                        w.create_element("rim:LocalizedString")
                                            .with_attribute(("value", d.meta.title.as_str()))
                                            .write_empty()?;
                                        Ok(())
                                    })?;
                                    if let Some(author) = &d.meta.author {
                                        let (given, family) =
                                            author.split_once(' ').unwrap_or(("", author));
                                        let xcn = format!("^{family}^{given}");
                                        classification(
                                            w,
                                            "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
                                            &id,
                                            "",
                                            None,
                                            &[("authorPerson", &xcn)],
                                        )?;
                                    }
                                    classification(
                                        w,
                                        "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
                                        &id,
                                        "N",
                                        Some("2.16.840.1.113883.5.25"),
                                        &[],
                                    )?;
                                    if d.meta.masked {
                                        classification(
                                            w,
                                            "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
                                            &id,
                                            "MASQUE_PS",
                                            Some("1.2.250.1.213.1.1.4.13"),
                                            &[],
                                        )?;
                                    }
                                    classification(
                                        w,
                                        "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
                                        &id,
                                        &d.meta.format_code,
                                        Some("1.3.6.1.4.1.19376.1.2.3"),
                                        &[],
                                    )?;
                                    classification(
                                        w,
                                        "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
                                        &id,
                                        &d.meta.type_code,
                                        Some(&d.meta.type_scheme),
                                        &[],
                                    )?;
                                    let patient_id =
                                        d.meta.filed_under.clone().unwrap_or_else(|| {
                                            format!("{}^^^&{}&ISO^NH", patient.ins, patient.ins_oid)
                                        });
                                    for (scheme, value) in [
                                        (
                                            "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",
                                            patient_id.as_str(),
                                        ),
                                        (
                                            "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
                                            d.unique_id.as_str(),
                                        ),
                                    ] {
                                        w.create_element("rim:ExternalIdentifier")
                                            .with_attribute(("identificationScheme", scheme))
                                            .with_attribute(("registryObject", id.as_str()))
                                            .with_attribute(("value", value))
                                            .write_empty()?;
                                    }
                                    Ok(())
                                })?;
                        }
                        Ok(())
                    })?;
                registry_errors(w, errors)
            })?;
        Ok(())
    })
}

/// TD3.2's answer as MTOM: (Content-Type, body). Each document in its own part.
pub(super) fn retrieved(documents: &[&LoadedDocument], errors: &[&str]) -> (String, Vec<u8>) {
    let boundary = "uuid:dev-dmp-boundary-7f1c";
    let cid = |i: usize| format!("doc-{}@dev-dmp.samu-gateway", i + 1);
    let xml = envelope("urn:ihe:iti:2007:RetrieveDocumentSetResponse", |w| {
        w.create_element("xdsb:RetrieveDocumentSetResponse")
            .with_attribute(("xmlns:xdsb", XDSB))
            .write_inner_content(|w| {
                w.create_element("rs:RegistryResponse")
                    .with_attribute(("xmlns:rs", RS))
                    .with_attribute(("status", status(documents.len(), errors.len())))
                    .write_inner_content(|w| registry_errors(w, errors))?;
                for (i, d) in documents.iter().enumerate() {
                    w.create_element("xdsb:DocumentResponse")
                        .write_inner_content(|w| {
                            text(w, "xdsb:RepositoryUniqueId", REPOSITORY)?;
                            text(w, "xdsb:DocumentUniqueId", &d.unique_id)?;
                            text(w, "xdsb:mimeType", "text/xml")?;
                            w.create_element("xdsb:Document").write_inner_content(|w| {
                                // The Content-ID's '@' is percent-escaped in the URL, as CXF does.
                                w.create_element("xop:Include")
                                    .with_attribute((
                                        "xmlns:xop",
                                        "http://www.w3.org/2004/08/xop/include",
                                    ))
                                    .with_attribute((
                                        "href",
                                        format!("cid:{}", cid(i).replace('@', "%40")).as_str(),
                                    ))
                                    .write_empty()?;
                                Ok(())
                            })?;
                            Ok(())
                        })?;
                }
                Ok(())
            })?;
        Ok(())
    });
    let mut body = Vec::new();
    body.extend_from_slice(format!(
        "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.message@dev-dmp.samu-gateway>\r\n\r\n{xml}\r\n"
    ).as_bytes());
    for (i, d) in documents.iter().enumerate() {
        body.extend_from_slice(format!(
            "--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\n\r\n",
            cid(i)
        ).as_bytes());
        body.extend_from_slice(&d.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related; type=\"application/xop+xml\"; boundary=\"{boundary}\"; start=\"<root.message@dev-dmp.samu-gateway>\"; start-info=\"application/soap+xml\""
    );
    (content_type, body)
}
