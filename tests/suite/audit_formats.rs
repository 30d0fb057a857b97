//! Every event kind, exported as the repositories receive it (`samu-gateway audit export`):
//! as a DICOM audit message, valid against DICOM 2017c's schema and the current edition's
//! (`xmllint --schema`, support::dicom); as a FHIR AuditEvent, valid R4 for an independent
//! validator (the `fhir.resources` models) and meeting the BALP profile it claims
//! (`tests/validators/fhir_audit.py`).

use crate::support;

use std::sync::Arc;

use samu_gateway::audit::{
    AccessMode, Actor, Alert, AlertKind, AuditLog, AuditStore, CallContext, DataSource, Decision,
    Event, EventKind, Outcome, PatientRef, Review, Signer,
};

/// An event of `kind` with every optional part a real one of that kind can carry, and
/// characters that need escaping.
fn event(kind: EventKind, outcome: Outcome) -> Event {
    Event {
        actor: Some(Actor {
            id_nat: Some("810002813839".into()),
            name: Some("Jeanne O'Brien & <Fils>".into()),
            profession: Some("10".into()),
            desk: Some("regul-1".into()),
            workstation: Some("poste-a".into()),
            ..Actor::default()
        }),
        patient: Some(PatientRef {
            ins: "269054958815780".into(),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        call: Some(CallContext {
            call_id: "CRRA-2026-001234".into(),
            reason_code: Some("inconscient".into()),
            justification: Some("patient \"inconscient\", voie publique\nrisque vital".into()),
        }),
        access_mode: Some(AccessMode::BrisDeGlace),
        source: Some(DataSource::StaleCache),
        // A read from the national record names its exchanges and the documents it
        // retrieved, which the messages carry as participant objects.
        detail: Some(if kind == EventKind::PatientRecordRead {
            "dmp=patients:_a1 dmp=registry:_a2 dmp=repository:_a3 retrieved=1.2.250.1.999.1.1 retrieved=1.2.250.1.999.1.3".into()
        } else {
            "age_seconds=42".into()
        }),
        review: (kind == EventKind::AccessReviewed).then(|| Review {
            of: 3,
            decision: Decision::ToInvestigate,
            comment: "appel <non> retrouvé & à revoir".into(),
            replaces: Some(2),
        }),
        alert: (kind == EventKind::SecurityAlert).then(|| Alert {
            kind: AlertKind::ManyPatients,
            records: vec![4, 9, 12],
        }),
        // A search names every identity it released.
        candidates: if kind == EventKind::PatientSearch {
            vec![
                PatientRef {
                    ins: "269054958815780".into(),
                    oid: "1.2.250.1.213.1.4.8".into(),
                },
                PatientRef {
                    ins: "180017500000134".into(),
                    oid: "1.2.250.1.213.1.4.10".into(),
                },
            ]
        } else {
            Vec::new()
        },
        ..Event::new(kind, outcome)
    }
}

/// A trail holding every kind with every outcome, and the bare form of each, written by
/// `node`; the configuration to export it with.
fn every_kind(dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    let key = dir.join("audit-signing.key");
    Signer::generate(&key).unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = Arc::new(AuditStore::open(&state.join("audit.redb")).unwrap());
    let settings = samu_gateway::audit::Settings {
        node: node.into(),
        batch_max_records: 64,
        batch_max_wait: std::time::Duration::ZERO,
        checkpoint_every_records: 10,
        checkpoint_every: std::time::Duration::from_secs(3600),
    };
    let log = AuditLog::start(store, Signer::load(&key).unwrap(), settings).unwrap();
    let outcomes = [
        Outcome::Success,
        Outcome::Refused {
            reason: "patient_opposed:centre_15".into(),
        },
        Outcome::Failed {
            reason: "upstream_timeout".into(),
        },
    ];
    for kind in EventKind::ALL {
        for outcome in &outcomes {
            let _receipt = log.append_blocking(event(kind, outcome.clone())).unwrap();
        }
        // And the bare form the service's own events take.
        let _receipt = log
            .append_blocking(Event::new(kind, Outcome::Success))
            .unwrap();
    }
    log.close().unwrap();
    let pki = support::Pki::new(dir);
    let config = support::write_config(dir, &pki, "", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &pki.audit_key.display().to_string(),
        &key.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn every_event_kind_validates_against_the_dicom_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config = every_kind(dir.path(), "gw-test");
    let (code, stdout, stderr) =
        support::run(&config, &["audit", "export", "--format", "dicom"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let messages: Vec<&str> = stdout.lines().collect();
    assert_eq!(messages.len(), EventKind::ALL.len() * 4);
    let files: Vec<std::path::PathBuf> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let path = dir.path().join(format!("message-{i}.xml"));
            std::fs::write(&path, message).unwrap();
            path
        })
        .collect();
    // The current edition's rule, checked without any third-party file: it fails on the
    // messages of 2017c's era, where neither the patient nor the record had a name.
    let objects: usize = messages
        .iter()
        .map(|m| m.matches("<ParticipantObjectIdentification ").count())
        .sum();
    assert!(objects >= messages.len(), "every message names its record");
    assert_eq!(
        support::dicom::participant_objects_without_name_or_query(&messages, dir.path()),
        0
    );
    let (schemas, _scratch) = support::dicom::schemas();
    for schema in &schemas {
        if let Err(report) = support::dicom::validate(schema, &files) {
            panic!("{report}");
        }
    }

    // The chain fields ride along for the receiver.
    let first = messages[0];
    assert!(
        first.contains("ParticipantObjectDetail type=\"seq\""),
        "{first}"
    );
    assert!(first.contains("csd-code=\"bris_de_glace\""), "{first}");
    // A read from the national record carries each retrieved document as a report.
    let documents = messages
        .iter()
        .filter(|m| {
            m.contains("ParticipantObjectID=\"1.2.250.1.999.1.3\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\"")
        })
        .count();
    assert_eq!(
        documents, 3,
        "the read's three outcomes each name the documents"
    );
    assert!(
        first.contains("Jeanne O&apos;Brien &amp; &lt;Fils&gt;"),
        "{first}"
    );
}

/// Problems `tests/validators/fhir_audit.py` finds in `resources` (one per line).
fn fhir_problems(dir: &std::path::Path, resources: &[serde_json::Value]) -> Vec<String> {
    let path = dir.join(format!("resources-{}.ndjson", resources.len()));
    let text: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    let (success, stdout, stderr) = support::validators::run("fhir_audit.py", &path);
    assert!(
        stderr.contains("FHIR 4.0.1"),
        "the validator must be R4: {stderr}"
    );
    let problems: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(success, problems.is_empty(), "{stderr}");
    problems
}

#[test]
fn every_event_kind_is_an_r4_audit_event_meeting_the_balp_profile_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    // The longest node id configtest allows, with underscores: not a FHIR id by itself.
    let node = format!("samu_75-{}", "x".repeat(56));
    let config = every_kind(dir.path(), &node);
    let (code, stdout, stderr) =
        support::run(&config, &["audit", "export", "--format", "fhir"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let bundle: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let resources: Vec<serde_json::Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    assert_eq!(resources.len(), EventKind::ALL.len() * 4);
    assert_eq!(fhir_problems(dir.path(), &resources), Vec::<String>::new());

    let claimed = |profile: &str| {
        resources
            .iter()
            .filter(|r| {
                r["meta"]["profile"][0]
                    .as_str()
                    .is_some_and(|p| p.ends_with(profile))
            })
            .count()
    };
    // Only successes from a known workstation: the read of one patient, the search that
    // released two identities (a query, one patient per PatientQuery event in BALP), the
    // officer's read of one patient's trail. Bare events have no workstation.
    assert_eq!(claimed("IHE.BasicAudit.PatientRead"), 1);
    // The read's data entity names the documents it was composed from.
    let read = resources
        .iter()
        .find(|r| {
            r["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("IHE.BasicAudit.PatientRead"))
        })
        .unwrap();
    let details = read["entity"][0]["detail"].to_string();
    assert!(
        details.contains("1.2.250.1.999.1.1") && details.contains("1.2.250.1.999.1.3"),
        "{read}"
    );
    assert_eq!(claimed("IHE.BasicAudit.Query"), 1);
    assert_eq!(claimed("IHE.BasicAudit.PatientQuery"), 1);
    let ids: std::collections::HashSet<&str> = resources
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), resources.len(), "ids are unique");
    // Purpose of use only where it is true: never on the service's own events.
    let started: Vec<&serde_json::Value> = resources
        .iter()
        .filter(|r| r["subtype"][0]["code"] == "110120")
        .collect();
    assert_eq!(started.len(), 4);
    assert!(
        started.iter().any(|r| r.get("purposeOfEvent").is_none()),
        "{started:?}"
    );

    // The validator is not a rubber stamp: each of these breaks a rule it checks.
    let read = resources
        .iter()
        .find(|r| {
            r["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("PatientRead"))
        })
        .unwrap()
        .clone();
    let mut no_network = read.clone();
    for agent in no_network["agent"].as_array_mut().unwrap() {
        agent.as_object_mut().unwrap().remove("network");
    }
    let mut bad_id = read.clone();
    bad_id["id"] = serde_json::json!(format!("{node}-0-1"));
    let mut refused = read.clone();
    refused["outcome"] = serde_json::json!("4");
    let mut no_patient = read.clone();
    no_patient["entity"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["role"]["code"] != "1");
    let problems = fhir_problems(dir.path(), &[no_network, bad_id, refused, no_patient]);
    for (line, needle) in [
        (1, "needs network"),
        (2, "not an R4 AuditEvent"),
        (3, "outcome must be 0"),
        (4, "exactly one patient entity"),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("line {line}: ")) && p.contains(needle)),
            "line {line} should say {needle}: {problems:?}"
        );
    }
}

/// `audit export --output` writes an owner-only file, the same text as on standard
/// output, and never replaces an existing file (an export holds patients' identities; a
/// mistyped path must not truncate anything).
#[test]
fn an_export_file_is_owner_only_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = every_kind(dir.path(), "gw-test");
    let (_, stdout, _) = support::run(&config, &["audit", "export"], &[]);
    let out = dir.path().join("trail.jsonl");
    let arg = out.to_str().unwrap();
    let (code, _, stderr) = support::run(&config, &["audit", "export", "--output", arg], &[]);
    assert_eq!(code, 0, "{stderr}");
    // The same export (its header's time aside).
    let written = std::fs::read_to_string(&out).unwrap();
    let body = |text: &str| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert!(
        body(&written) == body(&stdout),
        "the file differs from standard output"
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(&out, "kept").unwrap();
    let (code, _, stderr) = support::run(&config, &["audit", "export", "--output", arg], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("never replaces"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "kept");
    // Written under a temporary name, then linked into place: none is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".audit-export-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
