//! Records as DICOM audit messages (PS3.15 A.5, the `IHE+RFC-3881` syslog payload of IHE ATNA),
//! valid against both DICOM 2017c's schema and the current edition's (2024 and later: since
//! CP-2399 every participant object carries a name or a query, which 2017c left optional);
//! the tests check every event kind with `xmllint --schema` (docs/audit.md, "DICOM editions").
//!
//! - EventIdentification: the kind's DICOM EventID / EventTypeCode, action, time, outcome
//!   (0 success, 4 refused, 8 failed) with the reason as EventOutcomeDescription, and the
//!   access mode as PurposeOfUse (TRE_R248).
//! - ActiveParticipant: the professional (idNat as UserID, name, desk as network access
//!   point, profession as RoleIDCode) when there is one, and always the gateway itself.
//! - AuditSourceIdentification: the gateway's node id.
//! - ParticipantObjectIdentification: the patient (`INS^^^&OID&ISO`, with the call id,
//!   reason and data source as details), and the record itself (node, sequence number,
//!   previous and own hash) so a receiver can deduplicate and check the chain; and each
//!   document the national record returned for a read (a report, by its unique id).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::event::{Outcome, Record};

/// Code system of the profession codes (TRE_G15).
const PROFESSION_SYSTEM: &str = "1.2.250.1.71.1.2.7";
/// Code system of the access modes (TRE_R248).
const ACCESS_MODE_SYSTEM: &str = "1.2.250.1.213.1.1.4.248";

/// The DICOM audit message of `record`, whose stored bytes hash to `hash` (hex), on one
/// line (no XML declaration: UTF-8, as syslog carries it).
pub fn audit_message(record: &Record, hash: &str) -> String {
    let mut xml = String::with_capacity(1024);
    xml.push_str("<AuditMessage>");
    event_identification(&mut xml, record);
    active_participants(&mut xml, record);
    xml.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\">{}</AuditSourceIdentification>",
        attr(&record.node),
        code(
            "AuditSourceTypeCode",
            "4",
            "DCM",
            "Application Server Process or Thread"
        ),
    ));
    patient(&mut xml, record);
    candidates(&mut xml, &record.event);
    documents(&mut xml, &record.event);
    record_object(&mut xml, record, hash);
    xml.push_str("</AuditMessage>");
    xml
}

fn event_identification(xml: &mut String, record: &Record) {
    let event = &record.event;
    let dicom = event.kind.dicom();
    xml.push_str(&format!(
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        dicom.action,
        attr(&record.time),
        event.outcome.indicator()
    ));
    xml.push_str(&code(
        "EventID",
        dicom.event_id.code,
        "DCM",
        dicom.event_id.display,
    ));
    if let Some(kind) = dicom.event_type {
        xml.push_str(&code("EventTypeCode", kind.code, "DCM", kind.display));
    }
    if let Outcome::Refused { reason } | Outcome::Failed { reason } = &event.outcome {
        xml.push_str(&format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            text(reason)
        ));
    }
    if let Some(mode) = event.access_mode {
        let display = match mode {
            super::AccessMode::Centre15 => "Accès par un centre de régulation médicale",
            super::AccessMode::BrisDeGlace => "Accès en mode bris de glace",
        };
        xml.push_str(&code(
            "PurposeOfUse",
            mode.code(),
            ACCESS_MODE_SYSTEM,
            display,
        ));
    }
    xml.push_str("</EventIdentification>");
}

fn active_participants(xml: &mut String, record: &Record) {
    if let Some(actor) = &record.event.actor
        && let Some(id_nat) = &actor.id_nat
    {
        let mut attributes = format!("UserID=\"{}\"", attr(id_nat));
        if let Some(name) = &actor.name {
            attributes.push_str(&format!(" UserName=\"{}\"", attr(name)));
        }
        attributes.push_str(" UserIsRequestor=\"true\"");
        if let Some(desk) = &actor.desk {
            attributes.push_str(&format!(
                " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"1\"",
                attr(desk)
            ));
        }
        let role = actor
            .profession
            .as_deref()
            .map(|p| code("RoleIDCode", p, PROFESSION_SYSTEM, p))
            .unwrap_or_default();
        xml.push_str(&format!(
            "<ActiveParticipant {attributes}>{role}</ActiveParticipant>"
        ));
    }
    xml.push_str(&format!(
        "<ActiveParticipant UserID=\"samu-gateway\" AlternativeUserID=\"{}\" UserIsRequestor=\"false\">{}</ActiveParticipant>",
        attr(&record.node),
        code("RoleIDCode", "110150", "DCM", "Application"),
    ));
}

fn patient(xml: &mut String, record: &Record) {
    let event = &record.event;
    let Some(patient) = &event.patient else {
        return;
    };
    open_patient(xml, patient);
    if let Some(call) = &event.call {
        xml.push_str(&detail("call_id", &call.call_id));
        if let Some(reason) = &call.reason_code {
            xml.push_str(&detail("reason_code", reason));
        }
        if let Some(text) = &call.justification {
            xml.push_str(&detail("justification", text));
        }
    }
    if let Some(source) = event.source {
        let source = match source {
            super::DataSource::Upstream => "upstream",
            super::DataSource::Cache => "cache",
            super::DataSource::StaleCache => "stale_cache",
        };
        xml.push_str(&detail("source", source));
    }
    xml.push_str("</ParticipantObjectIdentification>");
}

/// The documents the record service returned for a read (`retrieved=` in the detail),
/// one participant object each: a report, by its unique id.
fn documents(xml: &mut String, event: &super::Event) {
    for unique_id in super::event::retrieved_documents(event.detail.as_deref()) {
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">",
            attr(unique_id)
        ));
        xml.push_str(&code(
            "ParticipantObjectIDTypeCode",
            "9",
            "RFC-3881",
            "Report Number",
        ));
        xml.push_str(&format!(
            "<ParticipantObjectName>document {}</ParticipantObjectName>",
            text(unique_id)
        ));
        xml.push_str("</ParticipantObjectIdentification>");
    }
}

/// The patients a search returned, one participant object each.
fn candidates(xml: &mut String, event: &super::Event) {
    for candidate in &event.candidates {
        open_patient(xml, candidate);
        xml.push_str(&detail("role", "search_candidate"));
        xml.push_str("</ParticipantObjectIdentification>");
    }
}

/// Opens a patient's participant object (`INS^^^&OID&ISO`, patient number); the caller adds
/// its details and closes it.
///
/// Its name is the INS, not the patient's name: records identify patients by INS only
/// (docs/audit.md), and the current edition requires a name or a query on every
/// participant object.
fn open_patient(xml: &mut String, patient: &super::PatientRef) {
    xml.push_str(&format!(
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">",
        attr(&format!("{}^^^&{}&ISO", patient.ins, patient.oid))
    ));
    xml.push_str(&code(
        "ParticipantObjectIDTypeCode",
        "2",
        "RFC-3881",
        "Patient Number",
    ));
    xml.push_str(&format!(
        "<ParticipantObjectName>INS {}</ParticipantObjectName>",
        text(&patient.ins)
    ));
}

fn record_object(xml: &mut String, record: &Record, hash: &str) {
    xml.push_str(&format!(
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">",
        attr(&record_id(record))
    ));
    xml.push_str(&code(
        "ParticipantObjectIDTypeCode",
        "audit-record",
        "urn:samu-gateway:audit",
        "samu-gateway audit record",
    ));
    xml.push_str(&format!(
        "<ParticipantObjectName>samu-gateway audit record {}</ParticipantObjectName>",
        text(&record_id(record))
    ));
    xml.push_str(&detail("kind", record.event.kind.as_str()));
    xml.push_str(&detail("epoch", &record.epoch.to_string()));
    xml.push_str(&detail("seq", &record.seq.to_string()));
    xml.push_str(&detail("prev", &record.prev));
    xml.push_str(&detail("hash", hash));
    xml.push_str(&detail("run", &record.run));
    if let Some(extra) = &record.event.detail {
        xml.push_str(&detail("detail", extra));
    }
    if let Some(review) = &record.event.review {
        xml.push_str(&detail("reviews", &review.of.to_string()));
        let decision = match review.decision {
            super::Decision::Justified => "justified",
            super::Decision::ToInvestigate => "to_investigate",
            super::Decision::Unjustified => "unjustified",
        };
        xml.push_str(&detail("decision", decision));
        if let Some(replaces) = review.replaces {
            xml.push_str(&detail("replaces", &replaces.to_string()));
        }
        if !review.comment.is_empty() {
            xml.push_str(&detail("comment", &review.comment));
        }
    }
    if let Some(alert) = &record.event.alert {
        xml.push_str(&detail("alert", alert.kind.as_str()));
        xml.push_str(&detail("alert_records", &seq_list(&alert.records)));
    }
    xml.push_str("</ParticipantObjectIdentification>");
}

/// What identifies a record across restores: `node:epoch:seq` (docs/audit.md).
pub(super) fn record_id(record: &Record) -> String {
    format!("{}:{}:{}", record.node, record.epoch, record.seq)
}

/// `12,13,15`.
pub(super) fn seq_list(seqs: &[u64]) -> String {
    seqs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn code(element: &str, code: &str, system: &str, display: &str) -> String {
    format!(
        "<{element} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        attr(code),
        attr(system),
        attr(display)
    )
}

/// A `ParticipantObjectDetail` (its value is base64 by the schema).
fn detail(kind: &str, value: &str) -> String {
    format!(
        "<ParticipantObjectDetail type=\"{}\" value=\"{}\"/>",
        attr(kind),
        STANDARD.encode(value.as_bytes())
    )
}

/// Escapes an attribute value; characters XML 1.0 cannot carry become U+FFFD.
fn attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes element text.
fn text(value: &str) -> String {
    attr(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            attr("a&b<c>\"d'\u{1}\ne"),
            "a&amp;b&lt;c&gt;&quot;d&apos;\u{FFFD} e"
        );
    }
}
