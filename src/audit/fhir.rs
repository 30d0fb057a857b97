//! Mapping of records onto FHIR R4 AuditEvent resources, following IHE Basic Audit Log
//! Patterns (BALP) where BALP has a pattern for the event (docs/audit.md, "FHIR
//! AuditEvent and BALP"):
//!
//! - a patient record read is a RESTful read (`IHE.BasicAudit.PatientRead`), a patient search
//!   or a compliance officer's read of the trail a RESTful query (`IHE.BasicAudit.PatientQuery`
//!   when it names one patient, `IHE.BasicAudit.Query` otherwise): type `rest`, the
//!   interaction as subtype (the DICOM EventID kept beside it), client and server agents with
//!   their network names, the user as information recipient;
//! - every other kind keeps its DICOM codes as type and subtype and claims no BALP profile,
//!   because BALP has none for it (no login, logout, application activity, emergency override
//!   or security alert profile);
//! - `meta.profile` is claimed only when the resource meets it: the event succeeded (BALP
//!   fixes the outcome) and the client's network name is known;
//! - `purposeOfEvent` only on events of an emergency access (TRE_R248 mode): ETREAT, plus BTG
//!   for break-glass; a service start has no purpose of use;
//! - ids are valid FHIR ids for any node id; the chain fields (node, epoch, seq, prev, hash)
//!   ride in an extension so an export can be matched against a verified trail.

use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use super::event::{AccessMode, EventKind, Outcome, PatientRef, Record};
use crate::encoding::hex;

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ID_NAT_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";
const PROFESSION_SYSTEM: &str = "urn:oid:1.2.250.1.71.1.2.7";
/// The gateway's own identifier systems: nodes and workstations are named by the centre.
const NODE_SYSTEM: &str = "urn:samu-gateway:node";
const WORKSTATION_SYSTEM: &str = "urn:samu-gateway:workstation";
/// Where BALP's profiles live.
pub const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
/// Extension carrying node, epoch, seq, prev and hash.
pub const CHAIN_EXTENSION: &str = "urn:samu-gateway:fhir:audit-chain";

/// The RESTful shape of a kind, when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// The desk read a patient's summary.
    Read,
    /// A search, of patients or of the trail.
    Query,
}

impl Rest {
    fn of(kind: EventKind) -> Option<Self> {
        match kind {
            EventKind::PatientRecordRead => Some(Self::Read),
            EventKind::PatientSearch | EventKind::AuditLogUsed => Some(Self::Query),
            _ => None,
        }
    }

    fn interaction(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Query => "search-type",
        }
    }

    /// BALP's roles: for a read the client is the destination, for a query the source
    /// (DICOM's convention, which BALP keeps).
    fn client_role(self) -> (&'static str, &'static str) {
        match self {
            Self::Read => ("110152", "Destination Role ID"),
            Self::Query => ("110153", "Source Role ID"),
        }
    }

    fn server_role(self) -> (&'static str, &'static str) {
        match self {
            Self::Read => ("110153", "Source Role ID"),
            Self::Query => ("110152", "Destination Role ID"),
        }
    }
}

/// The AuditEvent for one record whose stored bytes hash to `hash` (hex).
pub fn audit_event(record: &Record, hash: &str) -> Value {
    let event = &record.event;
    let dicom = event.kind.dicom();
    let rest = Rest::of(event.kind);
    let patients = patients(record);
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": resource_id(record),
        "extension": [{
            "url": CHAIN_EXTENSION,
            "extension": [
                {"url": "node", "valueString": record.node},
                {"url": "epoch", "valueString": record.epoch.to_string()},
                {"url": "seq", "valueString": record.seq.to_string()},
                {"url": "prev", "valueString": record.prev},
                {"url": "hash", "valueString": hash},
            ]
        }],
        // A query is an execution in BALP's patterns, whatever it reads.
        "action": match rest {
            Some(Rest::Read) => "R".to_owned(),
            Some(Rest::Query) => "E".to_owned(),
            None => dicom.action.to_string(),
        },
        "recorded": record.time,
        "outcome": event.outcome.indicator(),
        "agent": agents(record, rest),
        "source": {
            "observer": node_reference(&record.node),
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    });
    match rest {
        Some(rest) => {
            resource["type"] =
                json!({"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"});
            resource["subtype"] = json!([
                {"system": RESTFUL_INTERACTION, "code": rest.interaction()},
                {"system": DCM, "code": dicom.event_id.code, "display": dicom.event_id.display},
            ]);
        }
        None => {
            resource["type"] = json!({"system": DCM, "code": dicom.event_id.code, "display": dicom.event_id.display});
            if let Some(subtype) = dicom.event_type {
                resource["subtype"] =
                    json!([{"system": DCM, "code": subtype.code, "display": subtype.display}]);
            }
        }
    }
    if let Some(profile) = profile(record, rest, patients.len()) {
        resource["meta"] = json!({"profile": [format!("{BALP}{profile}")]});
    }
    if let Some(reason) = event.outcome.reason() {
        resource["outcomeDesc"] = json!(reason);
    }
    if let Some(purpose) = purpose_of_use(record) {
        resource["purposeOfEvent"] = purpose;
    }
    let entities = entities(record, rest, &patients);
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource
}

/// `node-epoch-seq` when that is a FHIR id (`[A-Za-z0-9.-]{1,64}`); otherwise the node is
/// replaced by the first 16 hex digits of its SHA-256, so any node id (underscores, 64
/// characters) still gives a valid, stable id.
pub fn resource_id(record: &Record) -> String {
    let plain = format!("{}-{}-{}", record.node, record.epoch, record.seq);
    let valid = plain.len() <= 64
        && plain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        return plain;
    }
    let node = hex(digest(&SHA256, record.node.as_bytes()).as_ref());
    format!("{}-{}-{}", &node[..16], record.epoch, record.seq)
}

/// The BALP profile this resource meets, if any.
fn profile(record: &Record, rest: Option<Rest>, patients: usize) -> Option<&'static str> {
    let rest = rest?;
    // BALP's patterns are for successful operations, between a known client and server.
    if record.event.outcome != Outcome::Success || client_name(record).is_none() {
        return None;
    }
    match (rest, patients) {
        (Rest::Read, 1) => Some("IHE.BasicAudit.PatientRead"),
        (Rest::Read, _) => None,
        (Rest::Query, 1) => Some("IHE.BasicAudit.PatientQuery"),
        (Rest::Query, _) => Some("IHE.BasicAudit.Query"),
    }
}

/// Only an emergency access has a purpose of use.
fn purpose_of_use(record: &Record) -> Option<Value> {
    let mode = record.event.access_mode?;
    let mut purpose = vec![
        json!({"coding": [{"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}]}),
    ];
    if mode == AccessMode::BrisDeGlace {
        purpose.push(
            json!({"coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}]}),
        );
    }
    Some(Value::Array(purpose))
}

/// The workstation's network name: the CN of its certificate.
fn client_name(record: &Record) -> Option<&str> {
    record.event.actor.as_ref()?.workstation.as_deref()
}

fn node_reference(node: &str) -> Value {
    json!({"identifier": {"system": NODE_SYSTEM, "value": node}, "display": node})
}

fn network(address: &str) -> Value {
    // Type 1: machine name (DNS name or the certificate's CN).
    json!({"address": address, "type": "1"})
}

fn agents(record: &Record, rest: Option<Rest>) -> Value {
    let event = &record.event;
    let mut agents = Vec::new();
    let person = event
        .actor
        .as_ref()
        .filter(|a| a.id_nat.is_some() || a.name.is_some());
    if let Some(actor) = person {
        // The person who asked: the information recipient of a read or query, the author
        // of anything else they did.
        let (code, display) = match rest {
            Some(_) => ("IRCP", "information recipient"),
            None => ("AUT", "author (originator)"),
        };
        let mut agent = json!({
            "type": {"coding": [{"system": PARTICIPATION, "code": code, "display": display}]},
            "requestor": true,
        });
        agent["who"] = match (&actor.id_nat, &actor.name) {
            (Some(id), _) => json!({"identifier": {"system": ID_NAT_SYSTEM, "value": id}}),
            (None, Some(name)) => json!({"display": name}),
            (None, None) => Value::Null,
        };
        if let Some(name) = &actor.name {
            agent["name"] = json!(name);
        }
        if let Some(profession) = &actor.profession {
            agent["role"] =
                json!([{"coding": [{"system": PROFESSION_SYSTEM, "code": profession}]}]);
        }
        if let Some(purpose) = purpose_of_use(record) {
            agent["purposeOfUse"] = purpose;
        }
        agents.push(agent);
    }
    if let Some(workstation) = client_name(record) {
        let (code, display) = rest.map_or(("110153", "Source Role ID"), Rest::client_role);
        let mut agent = json!({
            "type": {"coding": [{"system": DCM, "code": code, "display": display}]},
            "who": {"identifier": {"system": WORKSTATION_SYSTEM, "value": workstation}, "display": workstation},
            "requestor": false,
            "network": network(workstation),
        });
        if let Some(desk) = event.actor.as_ref().and_then(|a| a.desk.as_deref()) {
            agent["location"] = json!({"display": desk});
        }
        agents.push(agent);
    }
    let (code, display) = rest.map_or(("110150", "Application"), Rest::server_role);
    agents.push(json!({
        "type": {"coding": [{"system": DCM, "code": code, "display": display}]},
        "who": node_reference(&record.node),
        // With nobody behind it, the gateway itself started the event.
        "requestor": person.is_none(),
        "network": network(&record.node),
    }));
    Value::Array(agents)
}

/// The patients the event concerns: its patient, then a search's candidates, each once.
fn patients(record: &Record) -> Vec<&PatientRef> {
    let mut out: Vec<&PatientRef> = Vec::new();
    for patient in record
        .event
        .patient
        .iter()
        .chain(record.event.candidates.iter())
    {
        if !out
            .iter()
            .any(|p| p.ins == patient.ins && p.oid == patient.oid)
        {
            out.push(patient);
        }
    }
    out
}

fn entities(record: &Record, rest: Option<Rest>, patients: &[&PatientRef]) -> Vec<Value> {
    use base64::Engine;
    let event = &record.event;
    let mut entities = Vec::new();
    match rest {
        Some(Rest::Read) => {
            let mut data = json!({
                "what": {"display": "critical summary (patient summary from the shared record)"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            });
            // The documents it was composed from (the national record's), on the one data
            // entity BALP's PatientRead allows.
            let documents: Vec<Value> = super::event::retrieved_documents(event.detail.as_deref())
                .map(|id| json!({"type": "retrieved_document", "valueString": id}))
                .collect();
            if !documents.is_empty() {
                data["detail"] = Value::Array(documents);
            }
            entities.push(data);
        }
        Some(Rest::Query) => {
            // What was asked, as the trail recorded it (names of filters, identity traits
            // searched); never the HTTP request, which the trail does not keep.
            let asked = event
                .detail
                .clone()
                .unwrap_or_else(|| event.kind.as_str().to_owned());
            entities.push(json!({
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64::engine::general_purpose::STANDARD.encode(asked.as_bytes()),
                "description": asked,
            }));
        }
        None => {}
    }
    for patient in patients {
        entities.push(json!({
            "what": {
                "type": "Patient",
                "identifier": {"system": format!("urn:oid:{}", patient.oid), "value": patient.ins},
            },
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }));
    }
    if let Some(alert) = &event.alert {
        // The alert names records, never a patient: the paged person opens the trail.
        let records = super::dicom::seq_list(&alert.records);
        entities.push(json!({
            "what": {"display": format!("{} records {records}", record.node)},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "13", "display": "Security Resource"},
            "detail": [
                {"type": "alert", "valueString": alert.kind.as_str()},
                {"type": "records", "valueString": records},
            ],
        }));
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::*;

    #[test]
    fn break_glass_start_maps_to_security_alert_with_purposes() {
        let record = Record {
            v: 1,
            seq: 7,
            node: "gw1".into(),
            epoch: 0,
            time: "2026-11-23T10:00:00.000Z".into(),
            run: "00".into(),
            mono_ns: 1,
            prev: "00".repeat(32),
            event: Event {
                actor: Some(Actor {
                    id_nat: Some("810002813839".into()),
                    desk: Some("regul-1".into()),
                    ..Actor::default()
                }),
                patient: Some(PatientRef {
                    ins: "185057800608436".into(),
                    oid: "1.2.250.1.213.1.4.8".into(),
                }),
                access_mode: Some(AccessMode::BrisDeGlace),
                ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
            },
        };
        let r = audit_event(&record, "ab");
        assert_eq!(r["type"]["code"], "110113");
        assert_eq!(r["subtype"][0]["code"], "110127");
        assert_eq!(r["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(r["purposeOfEvent"][1]["coding"][0]["code"], "BTG");
        assert_eq!(r["agent"][0]["who"]["identifier"]["value"], "810002813839");
        assert_eq!(r["agent"][0]["requestor"], true);
        assert_eq!(
            r["entity"][0]["what"]["identifier"]["system"],
            "urn:oid:1.2.250.1.213.1.4.8"
        );
        assert_eq!(r["outcome"], "0");
    }
}

#[cfg(test)]
mod balp_tests {
    use super::*;
    use crate::audit::event::*;

    fn record(node: &str, event: Event) -> Record {
        Record {
            v: 1,
            seq: 12,
            node: node.into(),
            epoch: 0,
            time: "2026-12-03T08:00:00.000Z".into(),
            run: "00".into(),
            mono_ns: 1,
            prev: "00".repeat(32),
            event,
        }
    }

    fn read(outcome: Outcome) -> Event {
        Event {
            actor: Some(Actor {
                id_nat: Some("810002813839".into()),
                desk: Some("regul-1".into()),
                workstation: Some("poste-a".into()),
                ..Actor::default()
            }),
            patient: Some(PatientRef {
                ins: "185057800608436".into(),
                oid: "1.2.250.1.213.1.4.8".into(),
            }),
            access_mode: Some(AccessMode::Centre15),
            ..Event::new(EventKind::PatientRecordRead, outcome)
        }
    }

    #[test]
    fn ids_are_fhir_ids_for_any_node() {
        let plain = record(
            "gw-1.samu",
            Event::new(EventKind::ServiceStarted, Outcome::Success),
        );
        assert_eq!(resource_id(&plain), "gw-1.samu-0-12");
        let underscored = record(
            "gw_1",
            Event::new(EventKind::ServiceStarted, Outcome::Success),
        );
        let id = resource_id(&underscored);
        assert!(id.ends_with("-0-12") && id.len() == 21, "{id}");
        assert_ne!(id, resource_id(&record("gw_2", underscored.event.clone())));
        let long = record(&"n".repeat(64), underscored.event.clone());
        assert!(resource_id(&long).len() <= 64);
    }

    #[test]
    fn a_successful_read_claims_patient_read_and_a_refused_one_does_not() {
        let ok = audit_event(&record("gw", read(Outcome::Success)), "ab");
        assert_eq!(
            ok["meta"]["profile"][0],
            format!("{BALP}IHE.BasicAudit.PatientRead")
        );
        assert_eq!(ok["type"]["code"], "rest");
        assert_eq!(ok["subtype"][0]["code"], "read");
        assert_eq!(
            ok["subtype"][1]["code"], "110110",
            "the DICOM EventID stays"
        );
        assert_eq!(ok["agent"][0]["type"]["coding"][0]["code"], "IRCP");
        assert_eq!(ok["agent"][1]["type"]["coding"][0]["code"], "110152");
        assert_eq!(ok["agent"][1]["network"]["address"], "poste-a");
        assert_eq!(ok["agent"][2]["type"]["coding"][0]["code"], "110153");
        assert_eq!(ok["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert!(
            ok["purposeOfEvent"].get(1).is_none(),
            "Centre 15 mode is not break-glass"
        );
        let refused = audit_event(
            &record(
                "gw",
                read(Outcome::Refused {
                    reason: "patient_opposed".into(),
                }),
            ),
            "ab",
        );
        assert!(refused.get("meta").is_none(), "BALP is for successes");
        assert_eq!(refused["type"]["code"], "rest");
    }

    #[test]
    fn the_services_own_events_have_no_purpose_of_use_and_the_gateway_asks() {
        let started = audit_event(
            &record(
                "gw",
                Event::new(EventKind::ServiceStarted, Outcome::Success),
            ),
            "ab",
        );
        assert!(started.get("purposeOfEvent").is_none());
        assert!(started.get("meta").is_none());
        assert_eq!(started["agent"][0]["type"]["coding"][0]["code"], "110150");
        assert_eq!(started["agent"][0]["requestor"], true);
    }
}
