//! Every API request is attributed to exactly one desk by its workstation certificate, over
//! real TLS, or refused.

use crate::support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{DESK_A, DESK_B, EXPIRED, FOREIGN, Gateway, UNMAPPED};

async fn desk_of(gateway: &Gateway, identity: &str) -> (StatusCode, Value) {
    support::get_json(
        &gateway.client(Some(identity)),
        &gateway.url("/api/v1/desk"),
    )
    .await
}

#[tokio::test]
async fn each_mapped_certificate_acts_for_its_own_desk_only() {
    let gateway = Gateway::start();
    let (status, a) = desk_of(&gateway, DESK_A).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["desk"]["id"], "desk-a");
    assert_eq!(a["desk"]["reader"], "Desk0 00 00");
    assert_eq!(a["workstation"]["cn"], "poste-a");
    assert_eq!(a["centre"]["structure_id"], "1750000000");
    assert_eq!(a["state"], "no_session");

    let (status, b) = desk_of(&gateway, DESK_B).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["desk"]["id"], "desk-b");
    assert_ne!(a["workstation"]["sha256"], b["workstation"]["sha256"]);
}

#[tokio::test]
async fn certificate_from_the_workstation_ca_but_unmapped_gets_nothing() {
    let gateway = Gateway::start();
    let (status, body) = desk_of(&gateway, UNMAPPED).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "workstation_not_mapped");
    assert!(
        body["message"].as_str().unwrap().contains("poste-x"),
        "{body}"
    );
    assert!(
        body["message_fr"].as_str().unwrap().contains("pupitre"),
        "{body}"
    );
    assert!(
        gateway
            .stderr
            .has("workstation certificate not mapped to a desk")
    );
}

#[tokio::test]
async fn no_certificate_reaches_liveness_but_not_the_api() {
    let gateway = Gateway::start();
    let client = gateway.client(None);
    let health = client.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let response = client
        .get(gateway.url("/api/v1/desk"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "client_certificate_required");
}

#[tokio::test]
async fn certificates_outside_the_workstation_pki_fail_the_handshake() {
    let gateway = Gateway::start();
    for identity in [FOREIGN, EXPIRED] {
        let result = gateway
            .client(Some(identity))
            .get(gateway.url("/api/v1/desk"))
            .send()
            .await;
        assert!(
            result.is_err(),
            "{identity}: {:?}",
            result.map(|r| r.status())
        );
    }
    // The refusals are visible to operators: in the log with their reason, and in metrics.
    for reason in ["UnknownIssuer", "certificate expired"] {
        let line = gateway
            .stderr
            .wait_for(std::time::Duration::from_secs(5), |l| {
                l.contains("TLS handshake refused") && l.contains(reason)
            });
        assert!(
            line.is_some(),
            "no refusal for {reason}:\n{}",
            gateway.stderr.all()
        );
    }
    let (_, metrics) =
        support::get_text(&gateway.client(None), &gateway.management_url("/metrics")).await;
    assert!(
        metrics.contains("samu_gateway_tls_handshake_failures_total 2"),
        "{metrics}"
    );
}

fn pinned_desk(pin: &str) -> String {
    format!(
        "\n[[desks]]\nid = \"desk-c\"\nname = \"C\"\nreader = \"Desk2 00 00\"\nworkstation_cn = \"poste-x\"\nworkstation_sha256 = \"{pin}\"\n"
    )
}

#[tokio::test]
async fn pinned_desk_accepts_only_the_pinned_certificate() {
    let gateway = Gateway::start_with("", |pki| pinned_desk(&pki.fingerprint(UNMAPPED)));
    let (status, body) = desk_of(&gateway, UNMAPPED).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["desk"]["id"], "desk-c");

    // Same CN, another certificate: the pin does not match.
    let gateway = Gateway::start_with("", |_| pinned_desk(&"00".repeat(32)));
    let (status, body) = desk_of(&gateway, UNMAPPED).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "workstation_not_mapped");
}

#[tokio::test]
async fn every_answer_carries_a_request_id_that_the_log_shares() {
    let gateway = Gateway::start();
    let response = gateway
        .client(Some(DESK_A))
        .get(gateway.url("/api/v1/desk"))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let line = gateway
        .stderr
        .wait_for(std::time::Duration::from_secs(5), |l| {
            l.contains(&id) && l.contains("request served")
        })
        .unwrap_or_else(|| panic!("no log line with {id}:\n{}", gateway.stderr.all()));
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["span"]["route"], "/api/v1/desk");
    assert_eq!(json["span"]["desk"], "desk-a");
    assert_eq!(json["status"], 200);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let gateway = Gateway::start();
    let client = gateway.client(Some(DESK_A));
    for _ in 0..3 {
        client
            .get(gateway.url("/api/v1/desk"))
            .send()
            .await
            .unwrap();
    }
    gateway
        .client(None)
        .get(gateway.url("/api/v1/desk"))
        .send()
        .await
        .unwrap();
    let metrics = client.get(gateway.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"samu_gateway_http_requests_total{route="/api/v1/desk",method="GET",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"samu_gateway_http_requests_total{route="/api/v1/desk",method="GET",status="403"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"samu_gateway_http_request_duration_seconds_count{route="/api/v1/desk",method="GET",status="200"} 3"#), "{text}");
}

#[tokio::test]
async fn readiness_reports_each_check() {
    let gateway = Gateway::start();
    let response = gateway
        .client(None)
        .get(gateway.management_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config", "audit_store", "cache_store"]);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let gateway = Gateway::start();
    let response = gateway
        .client(Some(DESK_B))
        .get(gateway.url("/api/v1/desk"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}
