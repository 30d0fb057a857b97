use super::*;

/// The project's own message: two patients, every field the gateway reads.
const OWN: &str = include_str!("../../../tests/fixtures/hub/rs-eda-two-patients.json");

fn own() -> serde_json::Value {
    serde_json::from_str(OWN).unwrap()
}

/// `message` inside an EDXL-DE envelope (the RC-DE header beside it, as the Hub sends).
/// (The Hub's own examples go through the API: `tests/suite/cases.rs`.)
fn enveloped(message: &serde_json::Value, kind: &str, status: &str) -> Vec<u8> {
    let mut inner = serde_json::json!({
        "messageId": "fr.health.samu690_lrm-7f3e",
        "sender": {"name": "samu690", "URI": "hubex:fr.health.samu690"},
        "sentAt": "2026-12-04T09:13:00+01:00",
        "kind": kind,
        "status": status,
        "recipient": [{"name": "gateway", "URI": "hubex:fr.health.samu690.gateway"}]
    });
    inner["createCaseHealth"] = message["createCaseHealth"].clone();
    serde_json::to_vec(&serde_json::json!({
        "distributionID": "fr.health.samu690_lrm-7f3e",
        "senderID": "fr.health.samu690",
        "dateTimeSent": "2026-12-04T09:13:00+01:00",
        "dateTimeExpires": "2099-12-31T09:13:00+01:00",
        "distributionStatus": status,
        "distributionKind": kind,
        "descriptor": {"language": "fr-FR", "explicitAddress": {"explicitAddressScheme": "hubex", "explicitAddressValue": "fr.health.samu690"}},
        "content": [{"jsonContent": {"embeddedJsonContent": {"message": inner}}}]
    }))
    .unwrap()
}

#[test]
fn the_projects_message_reads_into_every_field() {
    let case = parse(OWN.as_bytes()).unwrap();
    assert_eq!(case.case_id, "fr.health.samu690.DRFR156902612040001");
    assert_eq!(case.owner, "fr.health.samu690");
    assert_eq!(
        case.motive,
        Some((
            "M04.01".to_owned(),
            "Malaise avec perte de connaissance".to_owned()
        ))
    );
    assert_eq!(case.priority.as_deref(), Some("P0"));
    assert!(!case.exercise);
    assert_eq!(case.sender, None);
    assert_eq!(case.patients.len(), 2);
    let first = &case.patients[0];
    assert_eq!(first.birth_name.as_deref(), Some("FICTIF"));
    assert_eq!(first.birth_date.as_deref(), Some("1958-03-14"));
    assert_eq!(first.sex, Some(Sex::Female));
    assert_eq!(first.first_name.as_deref(), Some("Odile"));
    // The NIR among other external ids, kept as an unqualified hint.
    assert_eq!(first.nir.as_deref(), Some("258037512345678"));
    assert!(
        first
            .history
            .as_deref()
            .unwrap()
            .starts_with("Insuffisance")
    );
    assert!(
        first
            .treatment
            .as_deref()
            .unwrap()
            .starts_with("Anticoagulant")
    );
    // The note about this patient is theirs; the case-wide note is nobody's.
    assert_eq!(first.notes.len(), 1);
    let second = &case.patients[1];
    assert_eq!(second.sex, Some(Sex::Male));
    assert_eq!(
        (second.birth_name.as_ref(), second.nir.as_ref()),
        (None, None)
    );
    assert!(second.notes.is_empty());
}

#[test]
fn debug_shows_the_case_id_and_the_count_only() {
    let case = parse(OWN.as_bytes()).unwrap();
    let shown = format!("{case:?} {:?}", case.patients);
    assert!(shown.contains("DRFR156902612040001") && shown.contains("patients: 2"));
    for secret in ["FICTIF", "Odile", "1958", "258037512345678", "Insuffisance"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn an_envelope_says_whether_it_is_a_drill_and_must_carry_one_new_case() {
    let message = own();
    let drill = parse(&enveloped(&message, "Report", "Exercise")).unwrap();
    assert!(drill.exercise);
    for (kind, status, expected) in [
        ("Update", "Actual", "distributionKind must be Report"),
        ("Cancel", "Actual", "distributionKind must be Report"),
        (
            "Report",
            "System",
            "distributionStatus must be Actual or Exercise",
        ),
    ] {
        let err = parse(&enveloped(&message, kind, status)).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    // An envelope carrying another message.
    let mut other: serde_json::Value =
        serde_json::from_slice(&enveloped(&message, "Report", "Actual")).unwrap();
    let inner = &mut other["content"][0]["jsonContent"]["embeddedJsonContent"]["message"];
    inner.as_object_mut().unwrap().remove("createCaseHealth");
    inner["createCase"] = serde_json::json!({"caseId": "x"});
    let err = parse(&serde_json::to_vec(&other).unwrap()).unwrap_err();
    assert_eq!(
        err,
        CaseError::Envelope("no createCaseHealth message in content")
    );
    // An envelope missing a required field names it.
    other.as_object_mut().unwrap().remove("senderID");
    let err = parse(&serde_json::to_vec(&other).unwrap()).unwrap_err();
    assert!(err.to_string().contains("senderID"), "{err}");
}

/// A birth date the Hub's pattern allows is kept as sent, the page judging it: one whose
/// day, or month and day, are unknown (`00`, as the registers write them), and one that
/// names no day at all. Before, the whole case was refused, and with it every other
/// patient of the call.
#[test]
fn a_birth_date_the_hubs_pattern_allows_is_received_as_sent() {
    for date in [
        "1958-00-00",
        "1958-03-00",
        "2024-02-29",
        "1958-02-30",
        "1958-13-00",
        "0000-00-00",
    ] {
        let mut message = own();
        *message["createCaseHealth"]
            .pointer_mut("/patient/0/identity/strictFeatures/birthDate")
            .unwrap() = serde_json::json!(date);
        let case = parse(&serde_json::to_vec(&message).unwrap()).unwrap();
        assert_eq!(case.patients[0].birth_date.as_deref(), Some(date));
        assert_eq!(case.patients.len(), 2);
    }
}

/// Each change breaks the message at one place; the error names the place and never
/// repeats the value.
#[test]
fn malformed_messages_name_the_field_and_never_the_value() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/caseId", serde_json::json!("fr.health"), "caseId"),
        (
            "/caseId",
            serde_json::json!("fr.health.samu690.ABC 123"),
            "caseId",
        ),
        ("/owner", serde_json::json!("fr"), "owner"),
        (
            "/creation",
            serde_json::json!("2026-12-04T09:12:30Z"),
            "creation",
        ),
        (
            "/creation",
            serde_json::json!("2026-13-04T09:12:30+01:00"),
            "creation",
        ),
        (
            "/qualification/healthMotive/code",
            serde_json::json!("X04.01"),
            "healthMotive.code",
        ),
        (
            "/qualification/details/priority",
            serde_json::json!("URGENT"),
            "priority",
        ),
        (
            "/patient/0/patientId",
            serde_json::json!("fr.health.samu690.DRFR156902612040001"),
            "patient[0].patientId",
        ),
        (
            "/patient/0/identity/strictFeatures/birthDate",
            serde_json::json!("1958-2-30"),
            "birthDate",
        ),
        (
            "/patient/0/identity/strictFeatures/birthDate",
            serde_json::json!("14/03/1958"),
            "birthDate",
        ),
        (
            "/patient/0/identity/strictFeatures/birthDate",
            serde_json::json!("1958-03-14T00:00:00+01:00"),
            "birthDate",
        ),
        (
            "/patient/0/identity/strictFeatures/birthDate",
            serde_json::json!("١٩٥٨-٠٣-١٤"),
            "birthDate",
        ),
        (
            "/patient/0/identity/strictFeatures/sex",
            serde_json::json!("H"),
            "sex",
        ),
        (
            "/patient/0/identity/strictFeatures/birthName",
            serde_json::json!(42),
            "birthName",
        ),
        (
            "/patient/0/identity/strictFeatures/birthName",
            serde_json::json!("FIC\u{0007}TIF"),
            "birthName",
        ),
        (
            "/patient/0/administrativeFile/externalId/1/source",
            serde_json::json!("INS"),
            "externalId[1]",
        ),
        (
            "/patient/1/patientId",
            serde_json::json!("fr.health.samu690.patient.DRFR156902612040001.1"),
            "appears twice",
        ),
        (
            "/patient/0/detail/treatment",
            serde_json::json!("x".repeat(4001)),
            "longer than 4000",
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut message = own();
        let shown = value.to_string();
        *message["createCaseHealth"].pointer_mut(pointer).unwrap() = value;
        let err = parse(&serde_json::to_vec(&message).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{pointer}: {text}");
        let bare = shown.trim_matches('"');
        if bare.len() > 3 {
            assert!(!text.contains(bare), "{pointer}: value echoed in {text}");
        }
    }
    // Required fields.
    for required in ["caseId", "creation", "qualification", "location", "owner"] {
        let mut message = own();
        message["createCaseHealth"]
            .as_object_mut()
            .unwrap()
            .remove(required);
        let err = parse(&serde_json::to_vec(&message).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("missing field `{required}`")),
            "{required}: {err}"
        );
    }
    assert_eq!(
        parse(b"{\"createCaseHealth\": ").unwrap_err(),
        CaseError::NotJson
    );
    assert_eq!(
        parse(b"[1, 2]").unwrap_err(),
        CaseError::Envelope("the message is not a JSON object")
    );
    assert!(matches!(
        parse(b"{\"createCase\": {}}").unwrap_err(),
        CaseError::Envelope(_)
    ));
    let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        parse(&huge).unwrap_err(),
        CaseError::TooLarge { .. }
    ));
}

#[test]
fn unknown_fields_are_tolerated_as_the_hub_evolves() {
    let mut message = own();
    message["createCaseHealth"]["futureField"] = serde_json::json!({"any": [1, 2]});
    message["createCaseHealth"]["patient"][0]["identity"]["strictFeatures"]["birthPlace"] =
        serde_json::json!("Lyon");
    let case = parse(&serde_json::to_vec(&message).unwrap()).unwrap();
    assert_eq!(case.patients.len(), 2);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn arbitrary_strings_in_every_read_field_never_panic(value in ".{0,40}") {
        for pointer in ["/caseId", "/owner", "/creation", "/qualification/healthMotive/code",
                        "/patient/0/patientId", "/patient/0/identity/strictFeatures/birthDate",
                        "/patient/0/identity/strictFeatures/sex"] {
            let mut message = own();
            *message["createCaseHealth"].pointer_mut(pointer).unwrap() = serde_json::json!(value.clone());
            let _ = parse(&serde_json::to_vec(&message).unwrap());
        }
    }
}

/// A message sent bare with its RC-DE header says with it whether it is a drill, and what
/// it is: an exercise is shown as one, a cancellation is not a new case; inside an
/// envelope, a header that contradicts the envelope is refused, not guessed at.
#[test]
fn the_messages_own_kind_and_status_are_read() {
    let with_header = |kind: &str, status: &str| {
        let mut message = own();
        message["kind"] = kind.into();
        message["status"] = status.into();
        serde_json::to_vec(&message).unwrap()
    };
    assert!(parse(&with_header("Report", "Exercise")).unwrap().exercise);
    assert!(!parse(&with_header("Report", "Actual")).unwrap().exercise);
    assert!(!parse(OWN.as_bytes()).unwrap().exercise);
    for (kind, status, refusal) in [
        ("Cancel", "Actual", "kind must be Report for a new case"),
        ("Report", "System", "status must be Actual or Exercise"),
    ] {
        let err = parse(&with_header(kind, status)).unwrap_err().to_string();
        assert!(err.contains(refusal), "{kind} {status}: {err}");
    }
    // The envelope says Actual, its message Exercise.
    let mut body: serde_json::Value =
        serde_json::from_slice(&enveloped(&own(), "Report", "Actual")).unwrap();
    body["content"][0]["jsonContent"]["embeddedJsonContent"]["message"]["status"] =
        "Exercise".into();
    let err = parse(&serde_json::to_vec(&body).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the envelope's"), "{err}");
    assert!(
        parse(&enveloped(&own(), "Report", "Exercise"))
            .unwrap()
            .exercise
    );
}

/// When a sending was sent: the message's own `sentAt`, else the envelope's
/// `dateTimeSent`; an envelope past its `dateTimeExpires` is out of date by its sender's
/// own word; malformed times are named.
#[test]
fn a_sendings_time_is_read_and_an_expired_envelope_refused() {
    let at = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let body = enveloped(&own(), "Report", "Actual");
    assert_eq!(
        parse(&body).unwrap().sent_at,
        Some(at("2026-12-04T09:13:00+01:00"))
    );
    let mut envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = "/content/0/jsonContent/embeddedJsonContent/message";
    *envelope.pointer_mut(&format!("{message}/sentAt")).unwrap() =
        serde_json::json!("2026-12-04T09:14:00+01:00");
    let case = parse(&serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert_eq!(case.sent_at, Some(at("2026-12-04T09:14:00+01:00")));
    envelope
        .pointer_mut(message)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("sentAt");
    let case = parse(&serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert_eq!(case.sent_at, Some(at("2026-12-04T09:13:00+01:00")));
    assert_eq!(parse(OWN.as_bytes()).unwrap().sent_at, None);

    envelope["dateTimeExpires"] = serde_json::json!("2026-01-01T00:00:00+01:00");
    let refused = parse(&serde_json::to_vec(&envelope).unwrap()).unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
    envelope["dateTimeExpires"] = serde_json::json!("tomorrow");
    let refused = parse(&serde_json::to_vec(&envelope).unwrap()).unwrap_err();
    assert!(refused.to_string().contains("dateTimeExpires"), "{refused}");
    let mut bare = own();
    bare["sentAt"] = serde_json::json!("2026-12-04T09:13:00Z");
    let refused = parse(&serde_json::to_vec(&bare).unwrap()).unwrap_err();
    assert!(refused.to_string().starts_with("sentAt"), "{refused}");
}

/// A case the regulation software says is over is not put at a desk as a live one, and a
/// status outside the Hub's list is named.
#[test]
fn a_case_over_in_the_regulation_software_is_refused() {
    for (status, accepted) in [
        ("ACTIF", true),
        ("ACHEVE", true),
        ("CLOTURE", false),
        ("CLASSE", false),
        ("ARCHIVE", false),
        ("FERME", false),
    ] {
        let mut message = own();
        message["createCaseHealth"]["qualification"]["details"]["status"] =
            serde_json::json!(status);
        let read = parse(&serde_json::to_vec(&message).unwrap());
        assert_eq!(read.is_ok(), accepted, "{status}: {read:?}");
        if let Err(e) = read {
            assert!(
                e.to_string()
                    .starts_with("createCaseHealth.qualification.details.status"),
                "{e}"
            );
        }
    }
}

/// A direction override turns the rest of a line around on the page; a zero-width
/// character makes a name that looks right miss in a search: both refused, named.
#[test]
fn invisible_formatting_characters_are_refused() {
    for invisible in ['\u{202E}', '\u{2067}', '\u{200B}', '\u{FEFF}'] {
        let mut message = own();
        message["createCaseHealth"]["patient"][0]["identity"]["strictFeatures"]["birthName"] =
            serde_json::json!(format!("FICTIF{invisible}"));
        let refused = parse(&serde_json::to_vec(&message).unwrap()).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("patient[0].identity.strictFeatures.birthName: holds invisible"),
            "{refused}"
        );
    }
}
