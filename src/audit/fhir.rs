//! Mapping of records onto FHIR R4 AuditEvent resources (IHE BALP style): `type` and
//! `subtype` from the DICOM codes, `purposeOfEvent` ETREAT (plus BTG for break-glass),
//! the professional as requesting agent, the gateway as source, the patient by INS. The
//! chain fields ride in an extension so an export can be matched against a verified trail.

use serde_json::{Value, json};

use super::event::{AccessMode, Record};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const ID_NAT_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";
/// Extension carrying seq, prev and hash.
pub const CHAIN_EXTENSION: &str = "urn:samu-gateway:fhir:audit-chain";

/// The AuditEvent for one record whose stored bytes hash to `hash` (hex).
pub fn audit_event(record: &Record, hash: &str) -> Value {
    let event = &record.event;
    let dicom = event.kind.dicom();
    let mut purpose = vec![
        json!({"coding": [{"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}]}),
    ];
    if event.access_mode == Some(AccessMode::BrisDeGlace) {
        purpose.push(json!({"coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}]}));
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": format!("{}-{}", record.node, record.seq),
        "extension": [{
            "url": CHAIN_EXTENSION,
            "extension": [
                {"url": "seq", "valueUnsignedInt": record.seq},
                {"url": "prev", "valueString": record.prev},
                {"url": "hash", "valueString": hash},
            ]
        }],
        "type": {"system": DCM, "code": dicom.event_id.code, "display": dicom.event_id.display},
        "action": dicom.action.to_string(),
        "recorded": record.time,
        "outcome": event.outcome.indicator(),
        "purposeOfEvent": purpose,
        "agent": [agent(record)],
        "source": {"observer": {"display": record.node}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
    });
    if let Some(subtype) = dicom.event_type {
        resource["subtype"] =
            json!([{"system": DCM, "code": subtype.code, "display": subtype.display}]);
    }
    if let Some(reason) = event.outcome.reason() {
        resource["outcomeDesc"] = json!(reason);
    }
    if let Some(patient) = &event.patient {
        resource["entity"] = json!([{
            "what": {"identifier": {"system": format!("urn:oid:{}", patient.oid), "value": patient.ins}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }]);
    }
    if let Some(alert) = &event.alert {
        // The alert names records, never a patient: the paged person opens the trail.
        resource["entity"] = json!([{
            "what": {"display": format!("{}:{}", record.node, super::dicom::seq_list(&alert.records))},
            "detail": [
                {"type": "alert", "valueString": alert.kind.as_str()},
                {"type": "records", "valueString": super::dicom::seq_list(&alert.records)},
            ],
        }]);
    }
    resource
}

fn agent(record: &Record) -> Value {
    let Some(actor) = &record.event.actor else {
        return json!({"who": {"display": record.node}, "requestor": false});
    };
    let mut agent = json!({"requestor": true});
    if let Some(id) = &actor.id_nat {
        agent["who"] = json!({"identifier": {"system": ID_NAT_SYSTEM, "value": id}});
    }
    if let Some(name) = &actor.name {
        agent["name"] = json!(name);
    }
    if let Some(desk) = &actor.desk {
        agent["location"] = json!({"display": desk});
    }
    if let Some(profession) = &actor.profession {
        agent["role"] =
            json!([{"coding": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": profession}]}]);
    }
    agent
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
