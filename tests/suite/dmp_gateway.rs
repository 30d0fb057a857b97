//! The gateway on the DMP path, end to end (issue 18): `[upstream] protocol = "dmp"` in
//! `DIRECTE` mode, the physician logged in with the virtual card over real pcscd, the
//! stand-in DMP over mutual TLS authenticated by the card (its authentication
//! certificate, the handshake signed by its key). Each request's VIHF is signed by the
//! card's signature key through the session held since the login; the stand-in trusts the
//! card CA, and xmlsec1 verifies what it received with the card's signature certificate.
//! Oppositions come back as French refusals; pulling the card ends the card session,
//! nothing more can be signed, and the card's connection to the DMP closes.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::dmp::{DevDmp, INS, OTHER_INS, TEST_OID, dmp_gateway_with, patients};
use crate::support::pcsc::{Pcscd, VirtualCard};

fn request(ins: &str, mode: &str) -> Value {
    json!({
        "ins": ins,
        "ins_oid": TEST_OID,
        "call_id": "CRRA-2026-001818",
        "reason_code": "inconscient",
        "access_mode": mode,
    })
}

/// `POST /api/v1/break-glass` for `ins` in `mode`, with the session `token`.
async fn break_glass(
    desk: &reqwest::Client,
    gateway: &crate::support::Gateway,
    token: &str,
    ins: &str,
    mode: &str,
) -> reqwest::Response {
    desk.post(gateway.url("/api/v1/break-glass"))
        .bearer_auth(token)
        .json(&request(ins, mode))
        .send()
        .await
        .unwrap()
}

/// A card issued by an intermediate authority, as IGC-Santé's cards are, reaches a DMP
/// that trusts only the root: the gateway sends the intermediate after the card's
/// certificate in the handshake. Before, it sent the card's certificate alone, and every
/// `DIRECTE` access failed against such a front end.
#[tokio::test(flavor = "multi_thread")]
async fn a_card_under_an_intermediate_authority_reaches_a_dmp_trusting_only_the_root() {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--intermediate"]);
    let documents = tempfile::tempdir().unwrap();
    let dmp = DevDmp::start_trusting(
        patients(),
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
        &[card.dir.join("card-intermediate.pem").as_path()],
    );
    let gateway = dmp_gateway_with(&pcscd, &card, &dmp, "", &[]);
    let token = gateway.login_desk_a().await;
    let desk = gateway.client(Some(crate::support::DESK_A));
    let body = opened(&desk, &gateway, &token).await;
    assert_eq!(
        body["summary"]["allergies"]["items"][0]["substance"],
        "Pénicilline"
    );
    assert!(dmp.connections_of("810002813839").await >= 1);
}

/// A break-glass access to the test patient in regulation, opened (201): its answer.
async fn opened(desk: &reqwest::Client, gateway: &crate::support::Gateway, token: &str) -> Value {
    let answer = break_glass(desk, gateway, token, INS, "centre_15").await;
    assert_eq!(
        answer.status(),
        StatusCode::CREATED,
        "{}",
        gateway.stderr.all()
    );
    answer.json().await.unwrap()
}

/// The VIHF of a request dev-dmp recorded, verified by xmlsec1 with `certificate`.
fn xmlsec1_verifies_recorded(request: &Path, certificate: &Path) -> bool {
    crate::support::dmp::xmlsec1_verifies_recorded(request, certificate).0
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_over_the_dmp_signed_by_the_card() {
    let pcscd = Pcscd::start(1);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let documents = tempfile::tempdir().unwrap();
    let dmp = DevDmp::start(
        patients(),
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
    );
    // A short deadline for the access, for the stand-in that never answers below.
    let gateway = dmp_gateway_with(&pcscd, &card, &dmp, "total_timeout_ms = 1500\n", &[]);
    let token = gateway.login_desk_a().await;
    let desk = gateway.client(Some(crate::support::DESK_A));

    // Break-glass in regulation: the IPS-FR's allergy, the history's dispensations.
    let body = opened(&desk, &gateway, &token).await;
    let grant = body["grant"]["id"].as_str().unwrap().to_owned();
    let summary = &body["summary"];
    assert_eq!(summary["document"]["template"], "IPS-FR", "{summary}");
    assert_eq!(summary["allergies"]["items"][0]["substance"], "Pénicilline");
    assert!(
        summary["dispensations"]["items"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(summary["documents"].as_array().unwrap().len(), 2);
    // The connections are the card's: its authentication certificate (CN: the idNat)
    // and its key's handshake signature, dev-dmp checking the holder is the VIHF's
    // signer. Two at most: TD0.2 and TD3.1 went at once.
    let connections = dmp.connections_of("810002813839").await;
    assert!((1..=2).contains(&connections), "{connections}");

    // What the stand-in received: TD0.2 and TD3.1 (at once, in either order), then TD3.2,
    // each VIHF signed by the card's signature key (xmlsec1 agrees), never by its
    // authentication key.
    let mut recorded: Vec<_> = std::fs::read_dir(dmp.dir.join("requests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "xml") && !p.to_string_lossy().contains("assertion")
        })
        .collect();
    recorded.sort();
    let services: Vec<String> = recorded
        .iter()
        .map(|p| {
            p.file_stem()
                .unwrap()
                .to_string_lossy()
                .split('-')
                .nth(1)
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(services[2], "repository");
    let mut sorted = services.clone();
    sorted.sort();
    assert_eq!(sorted, ["patients", "registry", "repository"]);
    for request in &recorded {
        assert!(
            xmlsec1_verifies_recorded(request, &card.dir.join("card-sign.pem")),
            "{}",
            request.display()
        );
        assert!(!xmlsec1_verifies_recorded(
            request,
            &card.dir.join("card.pem")
        ));
        let text = std::fs::read_to_string(request).unwrap();
        assert!(text.contains("<AttributeValue>DIRECTE</AttributeValue>"));
        assert!(text.contains("code=\"centre_15\""));
    }

    // The read's audit record names the transactions with their assertions' ids and the
    // documents retrieved: the same ids as the requests the stand-in received.
    let (_, trail, _) = crate::support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_record_read"],
        &[],
    );
    let read: Value = serde_json::from_str(trail.lines().last().unwrap()).unwrap();
    let detail = read["detail"].as_str().unwrap();
    for (request, service) in recorded.iter().zip(&services) {
        let text = std::fs::read_to_string(request).unwrap();
        let id_at = text.find("<Assertion").unwrap();
        let id = text[id_at..]
            .split("ID=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(detail.contains(&format!("dmp={service}:{id}")), "{detail}");
    }
    assert!(
        detail.contains("retrieved=1.2.250.1.999.1.1")
            && detail.contains("retrieved=1.2.250.1.999.1.3"),
        "{detail}"
    );

    // A listed document opened under the grant: read now, recorded; one the access may
    // not see (the masked VSM, in regulation) is not listed; a structured one has no PDF;
    // a malformed id is refused before anything is asked.
    let open = |path: String| {
        let desk = desk.clone();
        let url = gateway.url(&format!("/api/v1/grants/{grant}/documents/{path}"));
        let token = token.clone();
        async move {
            let answer = desk.get(url).bearer_auth(token).send().await.unwrap();
            let status = answer.status();
            (status, answer.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, opened) = open("1.2.250.1.999.1.3".into()).await;
    assert_eq!(status, StatusCode::OK, "{opened}");
    assert_eq!(
        opened["summary"]["documents"][0]["unique_id"],
        "1.2.250.1.999.1.3"
    );
    assert!(
        opened["summary"]["dispensations"]["items"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    for (path, status, code) in [
        (
            "1.2.250.1.999.1.2",
            StatusCode::NOT_FOUND,
            "document_not_listed",
        ),
        (
            "1.2.250.1.999.1.3/pdf",
            StatusCode::NOT_FOUND,
            "no_document",
        ),
        ("not%20an%20id", StatusCode::BAD_REQUEST, "invalid_request"),
    ] {
        let (got, body) = open(path.into()).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(body["message_fr"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, trail, _) = crate::support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_record_read"],
        &[],
    );
    let opened: Vec<&str> = trail.lines().filter(|l| l.contains("opened=")).collect();
    assert_eq!(opened.len(), 3, "{trail}");
    assert!(opened[0].contains("retrieved=1.2.250.1.999.1.3"), "{trail}");
    assert!(opened[1].contains("document_not_listed"), "{trail}");
    // Fetched from the DMP but not released (no PDF): on record all the same.
    assert!(opened[2].contains("no_pdf"), "{trail}");

    // A grant closed while one of its documents was being read (from another tab, or by
    // the regulation software) releases nothing; the read asked for is on record, failed.
    dmp.fault(json!({"kind": "latency", "ms": 400})).await;
    let reading = tokio::spawn(open("1.2.250.1.999.1.3".into()));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let closed = desk
        .delete(gateway.url(&format!("/api/v1/grants/{grant}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    let (status, body) = reading.await.unwrap();
    dmp.fault(json!({"kind": "none"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_grant")),
        "{body}"
    );
    assert!(body.get("summary").is_none());
    let (_, trail, _) = crate::support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_record_read"],
        &[],
    );
    let last = trail.lines().last().unwrap();
    assert!(
        last.contains("grant_ended") && last.contains("opened=1.2.250.1.999.1.3"),
        "{last}"
    );

    // Break-glass: the document the patient masked from professionals (a VSM she lets be
    // read in break-glass only) is listed too.
    let answer = break_glass(&desk, &gateway, &token, INS, "bris_de_glace").await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["summary"]["documents"].as_array().unwrap().len(),
        3,
        "{body}"
    );

    // The DMP refusing the gateway (a fault about the assertion), down, or silent past
    // the access's deadline: each a French message, nothing shown.
    for (fault, status, code) in [
        (
            json!({"kind": "soap_fault", "code": "DMPInvalidCertificate"}),
            StatusCode::BAD_GATEWAY,
            "upstream_refused_gateway",
        ),
        (
            json!({"kind": "status", "status": 503}),
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
        ),
        (
            json!({"kind": "timeout"}),
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
        ),
    ] {
        dmp.fault(fault).await;
        let answer = break_glass(&desk, &gateway, &token, INS, "centre_15").await;
        // A copy of the earlier answer is not served: there is no cache on this gateway.
        assert_eq!(answer.status(), status);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message_fr"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body.get("summary").is_none());
    }
    dmp.fault(json!({"kind": "none"})).await;

    // A search by INS is recorded with how the DMP answered (TD0.2's transaction and its
    // assertion's id), as a read is: what lets it be matched to the DMP's own log.
    let searched = desk
        .post(gateway.url("/api/v1/patients/search"))
        .bearer_auth(&token)
        .json(&request(INS, "centre_15"))
        .send()
        .await
        .unwrap();
    assert_eq!(searched.status(), StatusCode::OK);
    let (_, trail, _) = crate::support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_search"],
        &[],
    );
    let search: Value = serde_json::from_str(trail.lines().last().unwrap()).unwrap();
    let detail = search["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("dmp=patients:_"), "{search}");
    assert_eq!(detail.matches("dmp=").count(), 1, "named once: {detail}");

    // The other patient opposed regulation access: refused in French, nothing shown.
    let answer = break_glass(&desk, &gateway, &token, OTHER_INS, "centre_15").await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "patient_opposed_centre_15", "{body}");

    // The card leaves: the session ends, and with it the card session that signed.
    card.remove();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = break_glass(&desk, &gateway, &token, INS, "bris_de_glace").await;
        if answer.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived the card"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // ... and the card's connection to the DMP with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dmp.connections_of("810002813839").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the card's DMP connection outlived its session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An opposition heard while opening a listed document removes the patient's cached copy,
/// as one heard while fetching the summary does: the next access asks the DMP again
/// instead of serving the copy as fresh.
/// A gateway on the DMP path with a summary cache, its card logged in at desk A.
struct Cached {
    gateway: crate::support::Gateway,
    dmp: DevDmp,
    token: String,
    desk: reqwest::Client,
    _held: (Pcscd, VirtualCard, tempfile::TempDir, tempfile::TempDir),
}

impl Cached {
    async fn start() -> Self {
        let pcscd = Pcscd::start(1);
        let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
        let documents = tempfile::tempdir().unwrap();
        let dmp = DevDmp::start(
            patients(),
            documents.path(),
            &[card.dir.join("card-ca.pem").as_path()],
        );
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("cache.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let gateway = dmp_gateway_with(
            &pcscd,
            &card,
            &dmp,
            "",
            &[("SAMU_GATEWAY__CACHE__MASTER_KEY", key.to_str().unwrap())],
        );
        let token = gateway.login_desk_a().await;
        let desk = gateway.client(Some(crate::support::DESK_A));
        Self {
            gateway,
            dmp,
            token,
            desk,
            _held: (pcscd, card, documents, keys),
        }
    }

    /// The patient reads on the trail, oldest first.
    fn reads(&self) -> Vec<Value> {
        let (_, trail, _) = crate::support::run(
            &self.gateway.config,
            &["audit", "list", "--json", "--kind", "patient_record_read"],
            &[],
        );
        trail
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opposition_heard_on_a_listed_document_drops_the_cached_copy() {
    let cached = Cached::start().await;
    let (gateway, dmp, token, desk) = (&cached.gateway, &cached.dmp, &cached.token, &cached.desk);
    let reads = || cached.reads();

    let answer = break_glass(desk, gateway, token, INS, "centre_15").await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    // Cached: a second access in the same mode is served from the copy.
    let again = break_glass(desk, gateway, token, INS, "centre_15").await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let grant = again.json::<Value>().await.unwrap()["grant"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let detail = |read: &Value| read["detail"].as_str().unwrap_or_default().to_owned();
    let all = reads();
    let (fetch, copy) = (detail(&all[all.len() - 2]), detail(&all[all.len() - 1]));
    assert!(copy.starts_with("age_seconds="), "{copy}");
    // The copy's read names the fetch it keeps: the same exchanges and documents, so the
    // two records (and the DMP's own log) can be matched.
    let fetched: Vec<&str> = fetch
        .split(' ')
        .filter(|t| t.starts_with("dmp=") || t.starts_with("retrieved="))
        .collect();
    assert!(
        fetched.iter().any(|t| t.starts_with("retrieved=")),
        "{fetch}"
    );
    assert!(
        copy.ends_with(&format!(" copy_of={}", fetched.join(","))),
        "{fetch} / {copy}"
    );

    dmp.fault(json!({"kind": "soap_fault", "code": "OPPOSITION_ACCES_URGENCE"}))
        .await;
    let opened = desk
        .get(gateway.url(&format!(
            "/api/v1/grants/{grant}/documents/1.2.250.1.999.1.3"
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::FORBIDDEN);
    dmp.fault(json!({"kind": "none"})).await;

    // The copy is gone: this access asks the DMP (which now answers normally).
    let after = break_glass(desk, gateway, token, INS, "centre_15").await;
    assert_eq!(after.status(), StatusCode::CREATED);
    let last = detail(reads().last().unwrap());
    assert!(
        last.contains("dmp=") && !last.contains("age_seconds="),
        "{last}"
    );
}

/// The DMP lists a document the patient masked only in the modes they allow: a copy
/// fetched in break-glass (masked VSM listed) is never served in regulation, nor the
/// reverse, however fresh the professional's clearance in that mode.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_fetched_in_one_access_mode_is_never_served_in_another() {
    let cached = Cached::start().await;
    let (gateway, token, desk) = (&cached.gateway, &cached.token, &cached.desk);
    let documents = |body: &Value| body["summary"]["documents"].as_array().map_or(0, Vec::len);
    let mut seen = Vec::new();
    for mode in ["centre_15", "bris_de_glace", "centre_15", "centre_15"] {
        let answer = break_glass(desk, gateway, token, INS, mode).await;
        assert_eq!(answer.status(), StatusCode::CREATED, "{mode}");
        let body: Value = answer.json().await.unwrap();
        let detail = cached.reads().last().unwrap()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push((mode, documents(&body), detail.starts_with("age_seconds=")));
    }
    assert_eq!(
        seen,
        [
            ("centre_15", 2, false),
            ("bris_de_glace", 3, false),
            // Cleared in regulation a moment ago, but the copy is break-glass's: asked again.
            ("centre_15", 2, false),
            ("centre_15", 2, true),
        ]
    );
}
