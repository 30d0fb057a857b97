//! Every event kind, as a DICOM audit message, validates against DICOM 2017c's schema and the
//! current edition's (`xmllint --schema`, support::dicom), through
//! `samu-gateway audit export --format dicom`.

mod support;

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
        detail: Some("age_seconds=42".into()),
        review: (kind == EventKind::AccessReviewed).then(|| Review {
            of: 3,
            decision: Decision::ToInvestigate,
            comment: "appel <non> retrouvé & à revoir".into(),
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

#[test]
fn every_event_kind_validates_against_the_dicom_schema() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit-signing.key");
    Signer::generate(&key).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = Arc::new(AuditStore::open(&state.join("audit.redb")).unwrap());
    let settings = samu_gateway::audit::Settings {
        node: "gw-test".into(),
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
    let pki = support::Pki::new(dir.path());
    let config = support::write_config(dir.path(), &pki, "", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &pki.audit_key.display().to_string(),
        &key.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();

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
    assert!(
        first.contains("Jeanne O&apos;Brien &amp; &lt;Fils&gt;"),
        "{first}"
    );
}
