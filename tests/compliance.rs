//! Compliance review: officers' certificates (configured, distinct from desks) list the
//! break-glass accesses to review and record decisions, which are audit records; desks
//! cannot reach these endpoints and officers cannot reach patient data.

mod support;

use reqwest::StatusCode;
use samu_gateway::audit::{AccessMode, Actor, CallContext, Event, EventKind, Outcome, PatientRef};
use serde_json::{Value, json};
use support::{DESK_A, Gateway, Pki, UNMAPPED, write_config};

/// A break-glass start as the access module records it.
fn started(n: u64, outcome: Outcome) -> Event {
    Event {
        actor: Some(Actor {
            id_nat: Some("810002813839".into()),
            name: Some("Jeanne URGENTISTE".into()),
            desk: Some("desk-a".into()),
            ..Actor::default()
        }),
        patient: Some(PatientRef {
            ins: format!("26905495881578{n}"),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        call: Some(CallContext {
            call_id: format!("CRRA-{n}"),
            reason_code: Some("inconscient".into()),
            justification: None,
        }),
        access_mode: Some(AccessMode::BrisDeGlace),
        ..Event::new(EventKind::BreakGlassStarted, outcome)
    }
}

fn trail(dir: &std::path::Path, key: &std::path::Path) {
    let events = vec![
        started(1, Outcome::Success),
        started(2, Outcome::Success),
        started(
            9,
            Outcome::Refused {
                reason: "rate_limited:professional".into(),
            },
        ),
        started(3, Outcome::Success),
        Event::new(EventKind::PatientRecordRead, Outcome::Success),
    ];
    support::write_trail(dir, key, events);
}

#[tokio::test(flavor = "multi_thread")]
async fn officers_review_break_glass_accesses_and_nobody_else_can() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (path, key) = (dir.path().to_owned(), pki.audit_key.clone());
    std::thread::spawn(move || trail(&path, &key))
        .join()
        .unwrap();
    let config = write_config(
        dir.path(),
        &pki,
        "",
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n",
    );
    let gateway = Gateway::launch(dir, pki, config, &[]);
    let officer = gateway.client(Some(UNMAPPED));
    let pending = |client: reqwest::Client| {
        let url = gateway.url("/api/v1/compliance/pending");
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = pending(officer.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seqs: Vec<u64> = body["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 4], "successful starts only, oldest first");
    assert_eq!(body["accesses"][0]["call_id"], "CRRA-1");
    assert_eq!(body["accesses"][0]["name"], "Jeanne URGENTISTE");

    // A desk cannot review; an anonymous caller neither.
    let (status, body) = pending(gateway.client(Some(DESK_A))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "compliance_only");
    assert_eq!(pending(gateway.client(None)).await.0, StatusCode::FORBIDDEN);

    let review = |client: &reqwest::Client, body: Value| {
        let request = client
            .post(gateway.url("/api/v1/compliance/reviews"))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = review(
        &officer,
        json!({"seq": 1, "decision": "justified", "comment": "arrêt cardiaque, appel CRRA-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(answer["recorded"].as_u64().unwrap() > 5);
    let (status, _) = review(&officer, json!({"seq": 2, "decision": "to_investigate"})).await;
    assert_eq!(status, StatusCode::CREATED);
    // Not a successful start: nothing to review there.
    let (status, body) = review(&officer, json!({"seq": 3, "decision": "unjustified"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = review(
        &gateway.client(Some(DESK_A)),
        json!({"seq": 4, "decision": "justified"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, body) = pending(officer.clone()).await;
    let left: Vec<(u64, Value)> = body["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["seq"].as_u64().unwrap(), a["last_decision"].clone()))
        .collect();
    assert_eq!(left, [(2, json!("to_investigate")), (4, Value::Null)]);

    // The decisions are audit records; the command line sees the same list.
    let (_, listed, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "access_reviewed", "--json"],
        &[],
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("\"decision\":\"justified\""), "{listed}");
    let (code, out, stderr) = support::run(&gateway.config, &["audit", "pending"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("2 access(es) to review"), "{out}");

    // Officers reach no patient data.
    let response = officer
        .post(gateway.url("/api/v1/break-glass"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
