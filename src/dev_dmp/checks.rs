//! What the stand-in checks of each request before answering, in the order the DMP is
//! described to (docs/dmp.md, "dev-dmp"): the envelope, the VIHF's signature, its signer
//! (trusted, and a signature certificate, not an authentication one), its attributes and
//! validity, the mode against the rights, the patient named against the patient asked
//! for; then the transaction itself.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use roxmltree::Node;

use super::{DevState, LoadedDocument, LoadedPatient, answers};
use crate::upstream::AccessMode;
use crate::upstream::dmp::soap::{self, SOAP, WSSE};
use crate::upstream::dmp::vihf::{
    self, PURPOSE_OF_USE, REQUIRED_ATTRIBUTES, RESOURCE_ID, ReadVihf,
};

const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const HL7: &str = "urn:hl7-org:v3";
const XDSB: &str = "urn:ihe:iti:xds-b:2007";
/// Clock difference tolerated on the assertion's validity.
const SKEW_MS: u64 = 60_000;

/// A refusal: the DMP code (the SOAP fault's subcode) and its French reason.
pub(super) struct Refusal {
    pub code: &'static str,
    pub reason: &'static str,
}

fn refuse<T>(code: &'static str, reason: &'static str) -> Result<T, Refusal> {
    Err(Refusal { code, reason })
}

/// What a verified assertion grants.
struct Granted {
    mode: AccessMode,
    indirect: bool,
    patient: Option<String>,
}

/// The request's `wsa:MessageID`, which the answer names in `wsa:RelatesTo`.
pub(super) fn message_id(text: &str) -> Option<String> {
    let doc = soap::parse(text).ok()?;
    let header = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name((SOAP, "Header")))?;
    soap::child_text(header, soap::WSA, "MessageID").map(str::to_owned)
}

/// Checks the request `text` to `service`, received over a TLS connection authenticated
/// by `client` (its certificate, DER), and answers it.
pub(super) fn handle(
    state: &DevState,
    service: &str,
    text: &str,
    client: Option<&[u8]>,
) -> Result<Response, Refusal> {
    let Ok(doc) = soap::parse(text) else {
        return refuse("DMPMalformedRequest", "Requête SOAP illisible");
    };
    let root = doc.root_element();
    if !root.has_tag_name((SOAP, "Envelope")) {
        return refuse("DMPMalformedRequest", "Enveloppe SOAP 1.2 attendue");
    }
    let assertion = root
        .children()
        .find(|n| n.has_tag_name((SOAP, "Header")))
        .and_then(|h| h.children().find(|n| n.has_tag_name((WSSE, "Security"))))
        .and_then(|s| s.children().find(|n| n.has_tag_name((SAML, "Assertion"))));
    let Some(assertion) = assertion else {
        return refuse("DMPVIHFMissing", "Jeton VIHF absent");
    };
    let granted = check_vihf(state, &doc, assertion, client)?;
    let Ok(body) = soap::body(&doc) else {
        return refuse("DMPMalformedRequest", "Corps SOAP vide");
    };
    match (service, body.tag_name().name()) {
        ("patients", "PRPA_IN201307UV02") => existence(state, body, &granted),
        ("patientsPDQ", "PRPA_IN201305UV02") => search(state, body),
        ("registry", "AdhocQueryRequest") | ("repository", "RetrieveDocumentSetRequest")
            if granted.indirect =>
        {
            refuse(
                "DMPAccessDenied",
                "Recherche et consultation de documents refusées en authentification indirecte",
            )
        }
        ("registry", "AdhocQueryRequest") => find(state, body, &granted),
        ("repository", "RetrieveDocumentSetRequest") => retrieve(state, body, &granted),
        _ => refuse(
            "DMPUnknownTransaction",
            "Transaction inconnue pour ce service",
        ),
    }
}

fn check_vihf(
    state: &DevState,
    doc: &roxmltree::Document<'_>,
    assertion: Node<'_, '_>,
    client: Option<&[u8]>,
) -> Result<Granted, Refusal> {
    let Ok(verified) = crate::xmldsig::verify_element(doc, assertion) else {
        return refuse("DMPInvalidSignature", "La signature du VIHF est invalide");
    };
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(&verified.certificate) else {
        return refuse("DMPInvalidCertificate", "Certificat de signature illisible");
    };
    let trusted = state.signer_cas.iter().any(|ca| {
        ca == &verified.certificate
            || x509_parser::parse_x509_certificate(ca).is_ok_and(|(_, ca)| {
                certificate.issuer() == ca.subject()
                    && certificate.verify_signature(Some(ca.public_key())).is_ok()
            })
    });
    if !trusted || !certificate.validity().is_valid() {
        return refuse(
            "DMPInvalidCertificate",
            "Le certificat ayant signé le VIHF n'est pas reconnu",
        );
    }
    // A card's signature certificate says non-repudiation; its authentication
    // certificate does not: the field report of a VIHF signed with the wrong key.
    let non_repudiation = certificate
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|usage| usage.value.non_repudiation());
    if !non_repudiation {
        return refuse(
            "DMPInvalidCertificate",
            "Le certificat ayant signé le VIHF est invalide : ce n'est pas un certificat de signature",
        );
    }
    let read: ReadVihf = vihf::read(assertion);
    if REQUIRED_ATTRIBUTES
        .iter()
        .any(|name| read.first(name).is_none_or(str::is_empty))
        || read.name_id.as_deref().is_none_or(str::is_empty)
        || read.first("Ressource_URN") != Some("urn:dmp")
    {
        return refuse("DMPVIHFIncomplete", "Le VIHF est incomplet");
    }
    let now = crate::clock::now().1;
    let within = |at: Option<&String>, check: &dyn Fn(u64) -> bool| {
        at.and_then(|t| crate::clock::parse_time(t))
            .is_some_and(check)
    };
    if !within(read.not_before.as_ref(), &|t| t <= now + SKEW_MS)
        || !within(read.not_on_or_after.as_ref(), &|t| now < t + SKEW_MS)
    {
        return refuse(
            "DMPVIHFExpired",
            "Le VIHF n'est pas dans sa période de validité",
        );
    }
    let mode = match read.first(PURPOSE_OF_USE) {
        Some("centre_15") => AccessMode::Centre15,
        Some("bris_de_glace") => AccessMode::BrisDeGlace,
        _ => {
            return refuse(
                "DMPAccessDenied",
                "Mode d'accès non autorisé pour un centre de régulation",
            );
        }
    };
    let indirect = match read.first("Authentification_Mode") {
        Some("DIRECTE") => {
            check_card_connection(&certificate, client)?;
            false
        }
        Some("INDIRECTE_RENFORCEE") => false,
        Some("INDIRECTE") => true,
        _ => return refuse("DMPVIHFIncomplete", "Mode d'authentification inconnu"),
    };
    Ok(Granted {
        mode,
        indirect,
        patient: read.first(RESOURCE_ID).map(str::to_owned),
    })
}

/// In `DIRECTE` mode the connection is authenticated by the card whose signature key
/// signed the assertion: the TLS client certificate is that card's authentication
/// certificate (the same holder, without non-repudiation).
fn check_card_connection(
    signer: &x509_parser::certificate::X509Certificate<'_>,
    client: Option<&[u8]>,
) -> Result<(), Refusal> {
    let tls = client.and_then(|der| x509_parser::parse_x509_certificate(der).ok());
    let Some((_, tls)) = tls else {
        return refuse(
            "DMPInvalidAuthentication",
            "Connexion sans certificat client",
        );
    };
    let authentication = tls
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|usage| usage.value.digital_signature() && !usage.value.non_repudiation());
    if tls.subject().as_raw() != signer.subject().as_raw() || !authentication {
        return refuse(
            "DMPInvalidAuthentication",
            "En mode DIRECTE, la connexion doit être authentifiée par la carte du signataire du VIHF",
        );
    }
    Ok(())
}

fn resource_id(patient: &LoadedPatient) -> String {
    format!(
        "{}^^^&{}&ISO^NH",
        patient.patient.ins, patient.patient.ins_oid
    )
}

/// The patient the assertion names, who must be the one asked for (`asked`, as a
/// resource id).
fn patient_named(
    state: &DevState,
    granted: &Granted,
    asked: &str,
) -> Result<Option<LoadedPatient>, Refusal> {
    if granted.patient.as_deref() != Some(asked) {
        return refuse(
            "DMPPatientMismatch",
            "Le patient du VIHF n'est pas celui de la requête",
        );
    }
    Ok(state
        .patients
        .read()
        .ok()
        .and_then(|all| all.iter().find(|p| resource_id(p) == asked).cloned()))
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")],
        body,
    )
        .into_response()
}

fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|n| n.has_tag_name((ns, name)))
}

fn existence(state: &DevState, body: Node<'_, '_>, granted: &Granted) -> Result<Response, Refusal> {
    let value = child(body, HL7, "patientIdentifier").and_then(|p| child(p, HL7, "value"));
    let (Some(root), Some(ins)) = (
        value.and_then(|v| v.attribute("root")),
        value.and_then(|v| v.attribute("extension")),
    ) else {
        return refuse("DMPMalformedRequest", "Identifiant du patient absent");
    };
    let mut patient = patient_named(state, granted, &format!("{ins}^^^&{root}&ISO^NH"))?;
    // A mix-up on the way: the answer about another patient of the stand-in.
    if let Ok(super::DmpFault::ExistenceAbout { ins }) = state.fault.lock().map(|f| f.clone()) {
        patient = state
            .patients
            .read()
            .ok()
            .and_then(|all| all.iter().find(|p| p.patient.ins == ins).cloned());
    }
    Ok(xml(answers::existence(
        patient.as_ref().map(|p| &p.patient),
    )))
}

fn search(state: &DevState, body: Node<'_, '_>) -> Result<Response, Refusal> {
    let text = |name: &str| {
        child(body, HL7, name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_lowercase())
            .unwrap_or_default()
    };
    let family = text("family");
    let given = text("given");
    let birth = child(body, HL7, "livingSubjectBirthTime")
        .and_then(|b| child(b, HL7, "value"))
        .and_then(|v| v.attribute("value"))
        .unwrap_or_default()
        .to_owned();
    let sex = child(body, HL7, "livingSubjectAdministrativeGender")
        .and_then(|g| child(g, HL7, "value"))
        .and_then(|v| v.attribute("code"))
        .map(str::to_owned);
    if family.is_empty() {
        return refuse("DMPMalformedRequest", "Nom de naissance absent");
    }
    let all = state.patients.read().map(|p| p.clone()).unwrap_or_default();
    // A plain score for a stand-in: birth name 40, birth date 30, first name 20, sex 10.
    let mut found: Vec<(&LoadedPatient, u8)> = all
        .iter()
        .map(|p| {
            let mut score = 0u8;
            if p.patient.family.to_lowercase() == family {
                score += 40;
            }
            if p.patient.birth_date.replace('-', "") == birth {
                score += 30;
            }
            if p.patient.given.iter().any(|g| g.to_lowercase() == given) {
                score += 20;
            }
            if sex.as_deref().is_none_or(|s| s == p.patient.gender) {
                score += 10;
            }
            (p, score)
        })
        .filter(|(_, score)| *score >= 70)
        .collect();
    found.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
    let listed: Vec<_> = found.iter().map(|(p, s)| (&p.patient, *s)).collect();
    Ok(xml(answers::candidates(&listed)))
}

/// The documents of `patient` the mode may see.
fn visible(patient: &LoadedPatient, mode: AccessMode) -> impl Iterator<Item = &LoadedDocument> {
    let masked_ok = patient.patient.masked_readable_in.contains(&mode);
    patient
        .documents
        .iter()
        .filter(move |d| !d.meta.masked || masked_ok)
}

/// The refusal a record's state imposes on a document transaction, as registry errors.
fn record_refusal(patient: Option<&LoadedPatient>, mode: AccessMode) -> Option<&'static str> {
    match patient {
        None => Some("XDSUnknownPatientId"),
        Some(p) if p.patient.closed => Some("DMPClosed"),
        Some(p) if p.patient.opposed.contains(&mode) => Some(match mode {
            AccessMode::Centre15 => "OPPOSITION_ACCES_URGENCE",
            AccessMode::BrisDeGlace => "OPPOSITION_BRIS_DE_GLACE",
        }),
        Some(_) => None,
    }
}

fn unquote(value: &str) -> String {
    let v = value
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
        .replace("''", "'")
}

fn find(state: &DevState, body: Node<'_, '_>, granted: &Granted) -> Result<Response, Refusal> {
    let slots = crate::upstream::dmp::xds::read_find_request(body);
    let Some(asked) = slots
        .iter()
        .find(|(name, _)| name == "$XDSDocumentEntryPatientId")
        .map(|(_, v)| unquote(v))
    else {
        return refuse("DMPMalformedRequest", "Identifiant du patient absent");
    };
    let types: Vec<String> = slots
        .iter()
        .filter(|(name, _)| name == "$XDSDocumentEntryTypeCode")
        .flat_map(|(_, v)| {
            v.trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .map(unquote)
                .collect::<Vec<_>>()
        })
        .collect();
    let patient = patient_named(state, granted, &asked)?;
    if let Some(code) = record_refusal(patient.as_ref(), granted.mode) {
        let empty = super::DmpPatient {
            ins: String::new(),
            ins_oid: String::new(),
            family: String::new(),
            given: Vec::new(),
            birth_date: String::new(),
            gender: String::new(),
            closed: false,
            opposed: Vec::new(),
            masked_readable_in: Vec::new(),
            documents: Vec::new(),
        };
        return Ok(xml(answers::found(&empty, &[], &[code])));
    }
    let Some(patient) = patient else {
        return refuse("DMPMalformedRequest", "Patient introuvable");
    };
    let documents: Vec<&LoadedDocument> = visible(&patient, granted.mode)
        .filter(|d| {
            types.is_empty()
                || types.contains(&format!("{}^^{}", d.meta.type_code, d.meta.type_scheme))
        })
        .collect();
    Ok(xml(answers::found(&patient.patient, &documents, &[])))
}

fn retrieve(state: &DevState, body: Node<'_, '_>, granted: &Granted) -> Result<Response, Refusal> {
    let Some(asked) = granted.patient.clone() else {
        return refuse("DMPVIHFIncomplete", "Patient absent du VIHF");
    };
    let patient = patient_named(state, granted, &asked)?;
    if let Some(code) = record_refusal(patient.as_ref(), granted.mode) {
        let (content_type, body) = answers::retrieved(&[], &[code]);
        return Ok(multipart(content_type, body));
    }
    let Some(patient) = patient else {
        return refuse("DMPMalformedRequest", "Patient introuvable");
    };
    let requests: Vec<String> = body
        .children()
        .filter(|n| n.has_tag_name((XDSB, "DocumentRequest")))
        .take(64)
        .filter_map(|d| {
            child(d, XDSB, "DocumentUniqueId")
                .and_then(|u| u.text())
                .map(|t| t.trim().to_owned())
        })
        .collect();
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    let fault = state.fault.lock().map(|f| f.clone()).unwrap_or_default();
    let withheld = match &fault {
        super::DmpFault::Withhold { unique_id } => Some(unique_id),
        _ => None,
    };
    for unique_id in &requests {
        if withheld == Some(unique_id) {
            errors.push("XDSDocumentUniqueIdError");
            continue;
        }
        // Another patient's document, or a masked one this mode may not read, does not
        // exist for this request.
        match visible(&patient, granted.mode).find(|d| &d.unique_id == unique_id) {
            Some(d) => {
                let mut d = d.clone();
                if let super::DmpFault::Substitute { unique_id, with } = &fault
                    && *unique_id == d.unique_id
                    && let Some(other) = patient.documents.iter().find(|o| o.unique_id == *with)
                {
                    d.bytes = other.bytes.clone();
                }
                documents.push(d);
            }
            None => errors.push("XDSDocumentUniqueIdError"),
        }
    }
    let documents: Vec<&super::LoadedDocument> = documents.iter().collect();
    let (content_type, body) = answers::retrieved(&documents, &errors);
    Ok(multipart(content_type, body))
}

fn multipart(content_type: String, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
