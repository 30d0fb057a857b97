//! Cases from the regulation software (SAMU Hub RS-EDA): only its integration certificate
//! puts or closes a desk's case; the desk's physician reads it; every case received,
//! refused or ended is on the record with its Hub id and never its patients.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::{DESK_A, DESK_B, Gateway, Pki, UNMAPPED, write_config};

const OWN: &str = include_str!("../fixtures/hub/rs-eda-two-patients.json");
const CASE_ID: &str = "fr.health.samu690.DRFR156902612040001";

/// A gateway whose integration certificate is the unmapped workstation's (CN poste-x),
/// with desk A's physician logged in; `extra` is appended to the configuration. No roster:
/// case intake needs only the integration certificate.
async fn centre(extra: &str) -> (Pcscd, VirtualCard, Gateway, String) {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let config_text = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n\n[integration]\ncn = \"poste-x\"\n{extra}\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
    );
    let config = write_config(dir.path(), &pki, "", &config_text);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let token = gateway.login_desk_a().await;
    (pcscd, card, gateway, token)
}

async fn send(gateway: &Gateway, who: &str, desk: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = gateway
        .client(Some(who))
        .post(gateway.url(&format!("/api/v1/desks/{desk}/case")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn close(gateway: &Gateway, who: &str, desk: &str) -> (StatusCode, Value) {
    close_named(gateway, who, desk, "").await
}

/// A close with `query` (`?case_id=…` to name the case, or empty).
async fn close_named(gateway: &Gateway, who: &str, desk: &str, query: &str) -> (StatusCode, Value) {
    let response = gateway
        .client(Some(who))
        .delete(gateway.url(&format!("/api/v1/desks/{desk}/case{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn read(gateway: &Gateway, token: &str) -> (StatusCode, Value, Option<String>) {
    let response = gateway
        .client(Some(DESK_A))
        .get(gateway.url("/api/v1/case"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or_default(), cache)
}

fn audit(gateway: &Gateway, kind: &str) -> Vec<Value> {
    support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", kind],
        &[],
    )
    .1
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_regulation_software_puts_a_case_at_a_desk_and_its_physician_reads_it() {
    // No [roster]: the physician logged in without one, and the integration certificate
    // sends cases all the same; it is told there is no roster to replace.
    let (_pcscd, _card, mut gateway, token) = centre("").await;
    assert_eq!(read(&gateway, &token).await.0, StatusCode::NO_CONTENT);
    let roster = gateway
        .client(Some(UNMAPPED))
        .put(gateway.url("/api/v1/roster"))
        .json(&json!({"shifts": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(roster.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (status, body) = send(&gateway, UNMAPPED, "desk-a", OWN.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["case_id"], CASE_ID);
    assert_eq!(body["desk"], "desk-a");
    assert_eq!(body["patients"], 2);
    assert!(
        body["expires_in_seconds"].as_u64().unwrap() > 7000,
        "{body}"
    );

    let (status, case, cache) = read(&gateway, &token).await;
    assert_eq!(status, StatusCode::OK, "{case}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(case["case_id"], CASE_ID);
    assert_eq!(case["motive_code"], "M04.01");
    assert_eq!(case["priority"], "P0");
    assert_eq!(case["exercise"], false);
    let patient = &case["patients"][0];
    assert_eq!(patient["birth_name"], "FICTIF");
    assert_eq!(patient["birth_date"], "1958-03-14");
    assert_eq!(patient["sex"], "F");
    assert_eq!(patient["nir_unverified"], "258037512345678");
    assert_eq!(patient["notes"].as_array().unwrap().len(), 1);
    assert_eq!(case["patients"][1]["sex"], "M");
    // Read again (the page asks at every change): shown once to this session on the record.
    assert_eq!(read(&gateway, &token).await.0, StatusCode::OK);

    // Desk B's workstation holds no session and sees nothing of desk A's case.
    let other = gateway
        .client(Some(DESK_B))
        .get(gateway.url("/api/v1/case"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(other, StatusCode::UNAUTHORIZED);

    // The same case sent again, corrected: the desk's case is the new sending, shown
    // (and recorded as shown) again, with what changed.
    let before = case["version"].as_u64().unwrap();
    let mut corrected: Value = serde_json::from_str(OWN).unwrap();
    let first_patient = &mut corrected["createCaseHealth"]["patient"][0];
    assert_eq!(
        first_patient["identity"]["strictFeatures"]["birthName"],
        "FICTIF"
    );
    first_patient["identity"]["strictFeatures"]["birthName"] = json!("FICTIVE");
    let (status, _) = send(
        &gateway,
        UNMAPPED,
        "desk-a",
        serde_json::to_vec(&corrected).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again, _) = read(&gateway, &token).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["case_id"], CASE_ID);
    assert_ne!(again["version"].as_u64().unwrap(), before);
    assert_eq!(again["patients"][0]["birth_name"], "FICTIVE");

    // A second case replaces the first; closing ends it.
    let mut second: Value = serde_json::from_str(OWN).unwrap();
    second["createCaseHealth"]["caseId"] = json!("fr.health.samu690.DRFR156902612040002");
    let (status, _) = send(
        &gateway,
        UNMAPPED,
        "desk-a",
        serde_json::to_vec(&second).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        read(&gateway, &token).await.1["case_id"],
        "fr.health.samu690.DRFR156902612040002"
    );
    // A close naming the first case (retried after the second arrived) closes nothing.
    let (status, body) =
        close_named(&gateway, UNMAPPED, "desk-a", &format!("?case_id={CASE_ID}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("case_mismatch"))
    );
    assert!(!body.to_string().contains("DRFR156902612040002"), "{body}");
    assert_eq!(read(&gateway, &token).await.0, StatusCode::OK);
    let (status, _) = close_named(&gateway, UNMAPPED, "desk-a", "?case_uid=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        close_named(
            &gateway,
            UNMAPPED,
            "desk-a",
            "?case_id=fr.health.samu690.DRFR156902612040002"
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(read(&gateway, &token).await.0, StatusCode::NO_CONTENT);
    // A close must name its case: retried after the next case arrived, an unnamed one
    // would close that one.
    let (status, body) = close(&gateway, UNMAPPED, "desk-a").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("case_id_required"))
    );
    let (status, body) = close_named(
        &gateway,
        UNMAPPED,
        "desk-a",
        "?case_id=fr.health.samu690.DRFR156902612040002",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_case"))
    );

    // The record: received three times, ended as replaced twice then closed; ids and
    // counts only.
    let received = audit(&gateway, "case_received");
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(
        received[0]["detail"],
        format!("case {CASE_ID}; desk desk-a; patients 2")
    );
    assert_eq!(received[0]["actor"]["workstation"], "poste-x");
    let closed: Vec<String> = audit(&gateway, "case_closed")
        .iter()
        .map(|r| r["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        closed,
        vec![
            format!("case {CASE_ID}; desk desk-a; ended: replaced"),
            format!("case {CASE_ID}; desk desk-a; ended: replaced"),
            "case fr.health.samu690.DRFR156902612040002; desk desk-a; ended: closed".to_owned(),
        ]
    );
    // Shown once per case to the session's professional, before the page had it.
    let shown = audit(&gateway, "case_shown");
    let details: Vec<&str> = shown
        .iter()
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        vec![
            format!("case {CASE_ID}; desk desk-a; patients 2").as_str(),
            format!("case {CASE_ID}; desk desk-a; patients 2").as_str(),
            "case fr.health.samu690.DRFR156902612040002; desk desk-a; patients 2",
        ]
    );
    assert_eq!(
        shown[0]["actor"]["id_nat"], "810002813839",
        "{:?}",
        shown[0]
    );
    assert_eq!(shown[0]["actor"]["desk"], "desk-a");
    let trail = support::run(&gateway.config, &["audit", "list", "--json"], &[]).1;
    for secret in SECRETS_OF_OWN {
        assert!(!trail.contains(secret), "{secret} on the record");
    }

    // The closed case sent again late (a retry of its sending): refused, on the record,
    // and the desk shows nothing. Before, it came back for another two hours.
    let (status, body) = send(
        &gateway,
        UNMAPPED,
        "desk-a",
        serde_json::to_vec(&second).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("case_closed")),
        "{body}"
    );
    assert_eq!(read(&gateway, &token).await.0, StatusCode::NO_CONTENT);
    let refused = audit(&gateway, "case_received");
    assert_eq!(
        refused.last().unwrap()["outcome"]["reason"],
        "case_closed",
        "{refused:?}"
    );
    let logs = gateway.logs_once_stopped();
    assert!(logs.contains("/case"), "the requests were logged");
    for secret in SECRETS_OF_OWN {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

/// What the project's RS-EDA message says of its patients: none of it may reach the trail
/// or the logs.
const SECRETS_OF_OWN: [&str; 7] = [
    "FICTIF",
    "FICTIVE",
    "Odile",
    "1958-03-14",
    "258037512345678",
    "Insuffisance",
    "Anticoagulant",
];

#[tokio::test(flavor = "multi_thread")]
async fn only_the_integration_sends_cases_and_bad_messages_are_refused_without_echo() {
    let (_pcscd, _card, mut gateway, _token) = centre("").await;
    let body = OWN.as_bytes().to_vec();
    // A desk's workstation, and no certificate at all.
    let (status, refused) = send(&gateway, DESK_A, "desk-a", body.clone()).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("case_forbidden"))
    );
    let anonymous = gateway
        .client(None)
        .post(gateway.url("/api/v1/desks/desk-a/case"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(anonymous, StatusCode::FORBIDDEN);
    // A desk this gateway does not have: not echoed.
    let (status, refused) = send(&gateway, UNMAPPED, "desk-zz-unknown", body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !refused.to_string().contains("desk-zz-unknown"),
        "{refused}"
    );
    // Not JSON as declared.
    let plain = gateway
        .client(Some(UNMAPPED))
        .post(gateway.url("/api/v1/desks/desk-a/case"))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(plain, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A malformed message: the field is named, the value is not repeated.
    let mut bad: Value = serde_json::from_str(OWN).unwrap();
    bad["createCaseHealth"]["patient"][0]["identity"]["strictFeatures"]["birthDate"] =
        json!("14/02/1958");
    let (status, refused) = send(
        &gateway,
        UNMAPPED,
        "desk-a",
        serde_json::to_vec(&bad).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "case_invalid");
    let text = refused.to_string();
    assert!(text.contains("birthDate"), "{text}");
    assert!(!text.contains("1958") && !text.contains("FICTIF"), "{text}");
    // Garbage; and a message too large, refused before it is read (so not a case).
    let (status, _) = send(
        &gateway,
        UNMAPPED,
        "desk-a",
        b"{\"createCaseHealth\":".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&gateway, UNMAPPED, "desk-a", vec![b' '; 300 * 1024]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A large case is taken: 40 patients, well over the 16 KiB other routes accept.
    let mut many: Value = serde_json::from_str(OWN).unwrap();
    let first = many["createCaseHealth"]["patient"][0].clone();
    let patients: Vec<Value> = (1..=40)
        .map(|i| {
            let mut p = first.clone();
            p["patientId"] = json!(format!("fr.health.samu690.patient.DRFR156902612040001.{i}"));
            p
        })
        .collect();
    many["createCaseHealth"]["patient"] = json!(patients);
    let body = serde_json::to_vec(&many).unwrap();
    assert!(body.len() > 16 * 1024, "{}", body.len());
    let (status, answer) = send(&gateway, UNMAPPED, "desk-a", body).await;
    assert_eq!(
        (status, answer["patients"].as_u64()),
        (StatusCode::CREATED, Some(40))
    );
    // Refusals are on the record as such, without a word of the message.
    let received: Vec<Value> = audit(&gateway, "case_received")
        .into_iter()
        .filter(|r| r["outcome"]["status"] != "success")
        .collect();
    assert_eq!(received.len(), 2, "{received:?}");
    for record in &received {
        assert_eq!(record["outcome"]["status"], "refused", "{record}");
        assert_eq!(record["outcome"]["reason"], "case_invalid");
        assert_eq!(record["detail"], "desk desk-a");
    }
    let logs = gateway.logs_once_stopped();
    assert!(logs.contains("/case"), "the requests were logged");
    assert!(!logs.contains("FICTIF"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_waits_for_no_one_lapses_on_its_own_and_its_end_is_recorded() {
    let (_pcscd, _card, gateway, token) = centre("\n[cases]\nttl_minutes = 5\n").await;
    // Desk B has no session: the case waits there, shown to no one.
    let (status, body) = send(&gateway, UNMAPPED, "desk-b", OWN.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let left = body["expires_in_seconds"].as_u64().unwrap();
    assert!((290..=300).contains(&left), "{body}");
    assert_eq!(
        read(&gateway, &token).await.0,
        StatusCode::NO_CONTENT,
        "desk A sees nothing"
    );
    // A clean stop ends it on the record.
    let mut gateway = gateway;
    gateway.terminate();
    assert!(gateway.wait(Duration::from_secs(20)).success());
    let closed = audit(&gateway, "case_closed");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(
        closed[0]["detail"],
        format!("case {CASE_ID}; desk desk-b; ended: gateway_stopped")
    );
}

/// The project's own message is what the Hub's schema describes: checked with the
/// published `RS-EDA.schema.json` by an independent validator (Python's `jsonschema`).
#[test]
fn the_projects_message_follows_the_hubs_schema() {
    if !support::hub::schema_present("cases: the project's RS-EDA message") {
        return;
    }
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub/rs-eda-two-patients.json");
    let (valid, stdout, stderr) = support::validators::run("rs_eda.py", &fixture);
    assert!(valid, "{stdout}{stderr}");
    // The validator is not lenient: a broken copy fails.
    let mut broken: Value = serde_json::from_str(OWN).unwrap();
    broken["createCaseHealth"]["patient"][0]["identity"]["strictFeatures"]["sex"] = json!("H");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
    let (valid, stdout, _) = support::validators::run("rs_eda.py", &path);
    assert!(!valid && stdout.contains("sex"), "{stdout}");
}

/// Each of the Hub's published RS-EDA examples, bare and in an EDXL-DE envelope, is taken
/// through the API and shows at the desk as published.
#[tokio::test(flavor = "multi_thread")]
async fn every_published_rs_eda_example_is_taken_bare_and_enveloped() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/hub/sample/examples/RS-EDA");
    if !dir.is_dir() {
        support::skipped(&format!(
            "cases: {} is absent; the Hub's own RS-EDA examples were not sent",
            dir.display()
        ));
        return;
    }
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 4, "{examples:?}");
    let (_pcscd, _card, gateway, token) = centre("").await;
    for path in &examples {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let message: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let expected = message["createCaseHealth"]["patient"]
            .as_array()
            .map_or(0, Vec::len);
        let enveloped = json!({
            "distributionID": "fr.health.samu690_lrm-0001",
            "senderID": "fr.health.samu690",
            "dateTimeSent": "2026-12-04T09:13:00+01:00",
            "dateTimeExpires": "2099-12-31T09:13:00+01:00",
            "distributionStatus": "Actual",
            "distributionKind": "Report",
            "descriptor": {"language": "fr-FR", "explicitAddress": {
                "explicitAddressScheme": "hubex", "explicitAddressValue": "fr.health.samu690"}},
            "content": [{"jsonContent": {"embeddedJsonContent": {"message": {
                "messageId": "fr.health.samu690_lrm-0001",
                "sender": {"name": "samu690", "URI": "hubex:fr.health.samu690"},
                "sentAt": "2026-12-04T09:13:00+01:00",
                "kind": "Report",
                "status": "Actual",
                "recipient": [{"name": "gateway", "URI": "hubex:fr.health.samu690.gateway"}],
                "createCaseHealth": message["createCaseHealth"].clone()
            }}}}]
        });
        for body in [message.clone(), enveloped] {
            let (status, answer) = send(
                &gateway,
                UNMAPPED,
                "desk-a",
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{name}: {answer}");
            assert_eq!(
                answer["case_id"], message["createCaseHealth"]["caseId"],
                "{name}"
            );
            assert_eq!(answer["patients"], expected, "{name}");
            let (status, shown, _) = read(&gateway, &token).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(
                shown["patients"].as_array().unwrap().len(),
                expected,
                "{name}"
            );
            for (i, patient) in shown["patients"].as_array().unwrap().iter().enumerate() {
                let strict =
                    &message["createCaseHealth"]["patient"][i]["identity"]["strictFeatures"];
                assert_eq!(patient["sex"], strict["sex"], "{name} patient {i}");
                assert_eq!(
                    patient["birth_date"], strict["birthDate"],
                    "{name} patient {i}"
                );
            }
        }
    }
}
