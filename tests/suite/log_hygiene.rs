//! Nothing that identifies a patient ever reaches a log line or a metric, whatever a client
//! puts in a URL, a query, a header or a body. The requests below carry a real-format INS
//! (NIR with a valid key), a birth name and a clinical phrase everywhere a client could put
//! them; the gateway's captured output must contain none of them.

use crate::support;

use std::time::Duration;

use support::{DESK_A, Gateway};

const INS: &str = "185057800608436";
const NAME: &str = "DUPONTEL";
const CLINICAL: &str = "allergie-penicilline";

// Multi-threaded: the harness's polling waits block a thread, and the clients' HTTP/2
// connections must still answer the gateway's shutdown PING meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn patient_identifiers_never_reach_logs_or_metrics() {
    let gateway = Gateway::start();
    let client = gateway.client(Some(DESK_A));
    let anonymous = gateway.client(None);
    let urls = [
        format!("/api/v1/patients/{INS}/summary"),
        format!("/api/v1/desk?ins={INS}&nom={NAME}&note={CLINICAL}"),
        format!("/{NAME}/{CLINICAL}"),
    ];
    for url in &urls {
        for c in [&client, &anonymous] {
            let response = c
                .post(gateway.url(url))
                .header("x-patient", format!("{NAME} {INS}"))
                .header("user-agent", format!("regulation-software {INS}"))
                .body(format!(
                    r#"{{"ins":"{INS}","nom":"{NAME}","motif":"{CLINICAL}"}}"#
                ))
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_client_error(),
                "{url}: {}",
                response.status()
            );
            let body = response.text().await.unwrap();
            assert!(
                !body.contains(INS) && !body.contains(NAME),
                "error body echoes the request: {body}"
            );
        }
        client.get(gateway.url(url)).send().await.unwrap();
    }
    // A handler that panics on patient text (a bug on a document's text would): the
    // journal gets where, not what.
    let response = client
        .get(gateway.url(&format!("/test-hooks/panic?text={NAME}-{INS}-{CLINICAL}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    // Answered with the same headers as any other, and counted (a 5xx rate alert sees it).
    assert_eq!(
        response.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    assert!(
        gateway
            .stderr
            .wait_for(Duration::from_secs(5), |l| l
                .contains("panic (its message is not shown")
                && l.contains("test_hooks.rs")
                && serde_json::from_str::<serde_json::Value>(l).is_ok())
            .is_some(),
        "{}",
        gateway.stderr.all()
    );
    let (_, metrics) = support::get_text(&client, &gateway.url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("samu_gateway_http_requests_total")
                && l.contains("route=\"(before routing)\"")
                && l.contains("status=\"500\"")),
        "{metrics}"
    );

    // The requests were logged (so this test can fail), only without what they carried.
    let logged = gateway
        .stderr
        .wait_for_count(Duration::from_secs(10), 10, |l| {
            l.contains("request served")
        });
    assert!(logged, "{}", gateway.stderr.all());
    // Stop the gateway so that every line it wrote is captured before looking for leaks.
    let mut gateway = gateway;
    gateway.terminate();
    gateway.wait(Duration::from_secs(20));
    assert!(
        !gateway.stderr.all().contains("grace period over"),
        "{}",
        gateway.stderr.all()
    );
    let logs = format!("{}\n{}", gateway.stderr.all(), gateway.stdout.all());
    assert!(logs.contains(r#""route":"unmatched""#), "{logs}");
    for secret in [INS, NAME, CLINICAL, "nom=", "ins="] {
        assert!(!logs.contains(secret), "log contains {secret:?}:\n{logs}");
        assert!(
            !metrics.contains(secret),
            "metrics contain {secret:?}:\n{metrics}"
        );
    }
}

/// `{:?}` of what holds health data shows none of it: a summary (clinical text, the
/// document's patient), an audit event (INS, justification, searched traits), a record.
#[test]
fn debug_output_never_shows_health_data() {
    use samu_gateway::audit::{CallContext, Event, EventKind, Outcome, PatientRef};
    let bundle = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ips/penicillin-allergy-high-criticality.json"),
    )
    .unwrap();
    let summary = samu_gateway::summary::extract(&bundle).unwrap();
    assert!(summary.allergies.items[0].substance.contains("penicillin"));
    let shown = format!(
        "{summary:?} {:?} {:?}",
        summary.allergies, summary.patient_in_document
    );
    for secret in [
        "enicillin",
        "Apixaban",
        "Fibrillation",
        "SYNTHESE",
        "Camille",
        "1980",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("items: 1"), "counts still show: {shown}");

    let event = Event {
        patient: Some(PatientRef {
            ins: INS.into(),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        candidates: vec![PatientRef {
            ins: INS.into(),
            oid: "1.2.250.1.213.1.4.8".into(),
        }],
        call: Some(CallContext {
            call_id: "CRRA-1".into(),
            reason_code: Some("inconscient".into()),
            justification: Some(CLINICAL.into()),
        }),
        detail: Some(format!("traits: birth_name={NAME}")),
        ..Event::new(EventKind::PatientSearch, Outcome::Success)
    };
    let shown = format!("{event:?}");
    for secret in [INS, NAME, CLINICAL] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("PatientSearch") && shown.contains("CRRA-1"),
        "{shown}"
    );
}
