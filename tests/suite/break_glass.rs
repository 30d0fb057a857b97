//! Break-glass access end to end: a real gateway with a virtual card on a private pcscd,
//! the dev upstream over mutual TLS, the encrypted cache. Each scenario checks the API
//! answer (French message for the screen) and the audit trail.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::{DevUpstream, TEST_OID, nir, own_cda, patient};
use support::{DESK_A, DESK_B, Gateway, Pki, write_config};

/// The project's own IPS bundles (`tests/fixtures/ips`).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ips")
        .join(name)
}

/// The patients every scenario can use, by INS serial:
/// 1 penicillin allergy; 2 opposed Centre 15; 3 minimal; 4 blocked the test physician;
/// 5 record closed; 6 no known allergies; 7 an IPS-FR CDA document; 8 a summary held only
/// as a PDF (CDA level 1). The CDA documents are written into `dir`.
fn patients(dir: &std::path::Path) -> Vec<Value> {
    let mut opposed = patient("p2", 2, &fixture("one-entry-per-section.json"));
    opposed["opposed"] = json!(["centre_15"]);
    let mut blocked = patient("p4", 4, &fixture("one-entry-per-section.json"));
    blocked["blocked_professionals"] = json!(["810002813839"]);
    let mut closed = patient("p5", 5, &fixture("one-entry-per-section.json"));
    closed["record_closed"] = json!(true);
    vec![
        patient(
            "p1",
            1,
            &fixture("penicillin-allergy-high-criticality.json"),
        ),
        opposed,
        patient("p3", 3, &fixture("one-entry-per-section.json")),
        blocked,
        closed,
        patient("p6", 6, &fixture("no-known-allergies.json")),
        patient(
            "p7",
            7,
            &own_cda(dir, "ips-fr-allergy-treatment-problem.xml", 7),
        ),
        patient("p8", 8, &own_cda(dir, "level-1-pdf.xml", 8)),
        // Filed under patient 9, about patient 10 (its document names 10's INS).
        patient("p9", 9, &{
            let elsewhere = dir.join("elsewhere");
            std::fs::create_dir_all(&elsewhere).unwrap();
            own_cda(&elsewhere, "ips-fr-allergy-treatment-problem.xml", 10)
        }),
    ]
}

struct Centre {
    _pcscd: Pcscd,
    card: VirtualCard,
    upstream: DevUpstream,
    gateway: Gateway,
    token: String,
}

/// A desk (A) with a logged-in physician, the dev upstream and the cache; `extra` is
/// appended to the configuration.
async fn centre(extra: &str) -> Centre {
    centre_with_key(extra, true).await
}

/// The same; without `key`, the configured master key file does not exist.
async fn centre_with_key(extra: &str, key: bool) -> Centre {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let documents = tempfile::tempdir().unwrap();
    let upstream = DevUpstream::start(patients(documents.path()));
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let master = dir.path().join("cache.key");
    if key {
        samu_gateway::cache::sealed::MasterKey::generate(&master).unwrap();
    }
    let config_text = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n[cache]\nmaster_key = \"{}\"\n{extra}\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        upstream.toml_section(),
        master.display(),
    );
    let config = write_config(dir.path(), &pki, "", &config_text);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let token = gateway.login_desk_a().await;
    Centre {
        _pcscd: pcscd,
        card,
        upstream,
        gateway,
        token,
    }
}

fn request(serial: u32, mode: &str) -> Value {
    json!({
        "ins": nir(serial),
        "ins_oid": TEST_OID,
        "call_id": "CRRA-2026-001234",
        "reason_code": "inconscient",
        "access_mode": mode,
    })
}

struct Answer {
    status: StatusCode,
    cache_control: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

impl Centre {
    async fn send(&self, builder: reqwest::RequestBuilder) -> Answer {
        let response = builder.bearer_auth(&self.token).send().await.unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let cache_control = header("cache-control");
        let retry_after = header("retry-after");
        let status = response.status();
        Answer {
            status,
            cache_control,
            retry_after,
            body: response.json().await.unwrap_or(Value::Null),
        }
    }

    async fn break_glass(&self, body: Value) -> Answer {
        let client = self.gateway.client(Some(DESK_A));
        self.send(
            client
                .post(self.gateway.url("/api/v1/break-glass"))
                .json(&body),
        )
        .await
    }

    async fn reread(&self, grant: &str) -> Answer {
        let client = self.gateway.client(Some(DESK_A));
        let url = self.gateway.url(&format!("/api/v1/grants/{grant}/summary"));
        self.send(client.get(url)).await
    }

    /// The audit trail as JSON lines, optionally of one kind.
    fn audit(&self, kind: Option<&str>) -> Vec<Value> {
        let mut args = vec!["audit", "list", "--json"];
        if let Some(kind) = kind {
            args.extend(["--kind", kind]);
        }
        support::run(&self.gateway.config, &args, &[])
            .1
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_releases_the_summary_after_the_durable_record_then_grants_rereads() {
    let mut centre = centre("").await;
    let answer = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.cache_control.as_deref(), Some("no-store"));
    let body = &answer.body;
    assert_eq!(body["source"], "upstream");
    assert_eq!(body["stale"], false);
    assert_eq!(body["stale_because"], Value::Null);
    assert_eq!(body["summary"]["allergies"]["status"], "recorded");
    assert!(
        body["summary"]["allergies"]["items"][0]["substance"]
            .as_str()
            .unwrap()
            .contains("penicillin")
    );
    assert_eq!(body["grant"]["access_mode"], "bris_de_glace");
    assert!(body["grant"]["seconds_left"].as_u64().unwrap() > 7000);
    let grant = body["grant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(grant.len(), 32);

    // The trail: started, then the read (from the upstream), in that order.
    let trail = centre.audit(None);
    let kinds: Vec<&str> = trail.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    let started = kinds
        .iter()
        .position(|k| *k == "break_glass_started")
        .unwrap();
    let read = kinds
        .iter()
        .position(|k| *k == "patient_record_read")
        .unwrap();
    assert!(started < read);
    let read = &trail[read];
    assert_eq!(read["source"], "upstream");
    assert_eq!(read["patient"]["ins"], nir(1));
    assert_eq!(read["call"]["call_id"], "CRRA-2026-001234");
    assert_eq!(read["call"]["reason_code"], "inconscient");
    assert_eq!(read["access_mode"], "bris_de_glace");

    // Re-read within the grant: from the cache, recorded again, no new justification.
    let again = centre.reread(&grant).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["source"], "cache");
    // The copy goes out as the JSON it was sealed as: the same summary as the first answer.
    assert_eq!(again.body["summary"], body["summary"]);
    assert_eq!(again.cache_control.as_deref(), Some("no-store"));
    assert_eq!(centre.audit(Some("patient_record_read")).len(), 2);
    assert_eq!(centre.upstream.stats().await["summaries"], 1);

    // A HEAD would run the read and drop its body: a release on record that nobody saw.
    // Refused, and nothing recorded (before: 200 and a third read on record).
    let look = centre
        .send(
            centre.gateway.client(Some(DESK_A)).head(
                centre
                    .gateway
                    .url(&format!("/api/v1/grants/{grant}/summary")),
            ),
        )
        .await;
    assert_eq!(look.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(centre.audit(Some("patient_record_read")).len(), 2);

    // Another desk (another workstation) cannot use the grant, nor can a made-up id.
    let other = centre.gateway.client(Some(DESK_B));
    let url = centre
        .gateway
        .url(&format!("/api/v1/grants/{grant}/summary"));
    let status = other
        .get(url)
        .bearer_auth(&centre.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        centre
            .reread("00112233445566778899aabbccddeeff")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Closing ends the grant, recorded as "break-glass stopped".
    let client = centre.gateway.client(Some(DESK_A));
    let closed = centre
        .send(client.delete(centre.gateway.url(&format!("/api/v1/grants/{grant}"))))
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert_eq!(centre.reread(&grant).await.status, StatusCode::NOT_FOUND);
    let stopped = centre.audit(Some("break_glass_stopped"));
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["detail"], "ended: closed");

    // Nothing identifying reached the gateway's logs.
    let logs = centre.gateway.logs_once_stopped();
    assert!(
        !logs.contains(&nir(1)) && !logs.contains("enicillin"),
        "leak in logs"
    );
}

/// The record's CDA documents reach the page like bundles; a summary held only as a PDF
/// is opened from its grant: no-store, its own narrow CSP, recorded as a read before it
/// leaves, never inside the summary's JSON.
#[tokio::test(flavor = "multi_thread")]
async fn cda_documents_are_summarised_and_a_level_1_pdf_is_served_under_its_grant_and_audited() {
    let mut centre = centre("").await;
    let answer = centre.break_glass(request(7, "centre_15")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let summary = &answer.body["summary"];
    assert_eq!(summary["document"]["format"], "cda");
    assert_eq!(summary["document"]["template"], "IPS-FR");
    assert_eq!(summary["allergies"]["items"][0]["substance"], "Pénicilline");
    assert_eq!(summary["allergies"]["items"][0]["criticality"], "high");
    assert!(summary["unstructured"].is_null());
    let structured_grant = answer.body["grant"]["id"].as_str().unwrap().to_owned();
    let client = centre.gateway.client(Some(DESK_A));
    let document = |grant: &str| {
        client
            .get(
                centre
                    .gateway
                    .url(&format!("/api/v1/grants/{grant}/document")),
            )
            .bearer_auth(&centre.token)
    };
    // A structured document has no PDF to open; the read asked for is on record all the
    // same, as failed.
    let reads_before = centre.audit(Some("patient_record_read")).len();
    let none = document(&structured_grant).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    assert_eq!(none.json::<Value>().await.unwrap()["error"], "no_document");
    let reads = centre.audit(Some("patient_record_read"));
    assert_eq!(reads.len(), reads_before + 1);
    let failed = reads.last().unwrap().to_string();
    assert!(
        failed.contains("no_pdf") && failed.contains(&nir(7)),
        "{failed}"
    );

    let answer = centre.break_glass(request(8, "centre_15")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let summary = &answer.body["summary"];
    assert_eq!(summary["document"]["bundle_type"], "cda-unstructured");
    assert_eq!(summary["document"]["authors"][0], "Paul GENERALISTE");
    assert_eq!(summary["unstructured"]["media_type"], "application/pdf");
    assert_eq!(summary["unstructured"]["pdf"], true);
    assert!(
        summary["unstructured"].get("content").is_none(),
        "the PDF never travels inside the summary: {}",
        summary["unstructured"]
    );
    let grant = answer.body["grant"]["id"].as_str().unwrap().to_owned();
    let reads_before = centre.audit(Some("patient_record_read")).len();
    let pdf = document(&grant).send().await.unwrap();
    assert_eq!(pdf.status(), StatusCode::OK);
    let header = |name: &str| {
        pdf.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "application/pdf");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(
        header("content-disposition"),
        "inline; filename=\"document.pdf\""
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("object-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("script-src"),
        "{csp}"
    );
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-1.4"));
    assert_eq!(bytes.len(), 721, "the fixture's PDF, whole");
    // Recorded as a read of the record, saying what was read.
    let reads = centre.audit(Some("patient_record_read"));
    assert_eq!(reads.len(), reads_before + 1);
    let last = reads.last().unwrap();
    assert_eq!(last["patient"]["ins"], nir(8));
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("document=application/pdf"),
        "{last}"
    );
    // The application's pages keep their own policy.
    let page = client.get(centre.gateway.url("/")).send().await.unwrap();
    let page_csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(page_csp.contains("script-src 'self'") && !page_csp.contains("object-src 'self'"));
    // Without the grant (ended), nothing.
    let closed = centre
        .send(client.delete(centre.gateway.url(&format!("/api/v1/grants/{grant}"))))
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        document(&grant).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        centre.audit(Some("patient_record_read")).len(),
        reads_before + 1
    );
    let logs = centre.gateway.logs_once_stopped();
    assert!(
        !logs.contains(&nir(8)) && !logs.contains("GENERALISTE"),
        "leak in logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oppositions_blocks_closures_and_bad_requests_are_refused_in_french_and_audited() {
    let centre = centre("").await;
    for (serial, mode, status, code, french) in [
        (
            2,
            "centre_15",
            StatusCode::FORBIDDEN,
            "patient_opposed_centre_15",
            "opposé",
        ),
        (
            4,
            "bris_de_glace",
            StatusCode::FORBIDDEN,
            "professional_blocked",
            "bloqué",
        ),
        (
            5,
            "bris_de_glace",
            StatusCode::GONE,
            "record_closed",
            "fermé",
        ),
        (
            99,
            "bris_de_glace",
            StatusCode::NOT_FOUND,
            "no_record",
            "Aucun dossier",
        ),
    ] {
        let answer = centre.break_glass(request(serial, mode)).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.body["error"], code);
        assert!(
            answer.body["message_fr"].as_str().unwrap().contains(french),
            "{}",
            answer.body
        );
        assert_eq!(answer.cache_control.as_deref(), Some("no-store"));
    }
    // The opposition is to Centre 15 only: break-glass on the same patient works.
    assert_eq!(
        centre.break_glass(request(2, "bris_de_glace")).await.status,
        StatusCode::CREATED
    );

    let reads = centre.audit(Some("patient_record_read"));
    let reasons: Vec<&str> = reads
        .iter()
        .filter_map(|r| r["outcome"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "patient_opposed:centre_15",
            "professional_blocked",
            "record_closed",
            "no_record"
        ]
    );
    // Each refused access is closed in the trail.
    assert_eq!(centre.audit(Some("break_glass_stopped")).len(), 4);

    let mut bad_key = request(1, "bris_de_glace");
    bad_key["ins"] = json!(format!("{}00", &nir(1)[..13]));
    let mut bad_reason = request(1, "bris_de_glace");
    bad_reason["reason_code"] = json!("boredom");
    let mut missing_text = request(1, "bris_de_glace");
    missing_text["reason_code"] = json!("autre");
    let mut bad_call = request(1, "bris_de_glace");
    bad_call["call_id"] = json!("");
    for (body, expected) in [
        (bad_key, "clé"),
        (bad_reason, "motif"),
        (missing_text, "Précisez"),
        (bad_call, "appel"),
    ] {
        let answer = centre.break_glass(body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert!(
            answer.body["message_fr"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{}",
            answer.body
        );
    }
    // Without a session: refused before anything else.
    let anonymous = centre
        .gateway
        .client(Some(DESK_A))
        .post(centre.gateway.url("/api/v1/break-glass"))
        .json(&request(1, "bris_de_glace"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_is_served_labelled_when_the_upstream_is_down_and_never_after_a_refusal() {
    let centre = centre("fresh_seconds = 1\nmax_stale_seconds = 3600\n").await;
    let first = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    centre
        .upstream
        .fault(json!({"kind": "status", "status": 503}))
        .await;
    let stale = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(stale.status, StatusCode::CREATED, "{}", stale.body);
    assert_eq!(stale.body["source"], "stale_cache");
    assert_eq!(stale.body["stale"], true);
    assert_eq!(stale.body["stale_because"], "unavailable");
    assert!(stale.body["age_seconds"].as_u64().unwrap() >= 1);
    let reads = centre.audit(Some("patient_record_read"));
    assert_eq!(reads.last().unwrap()["source"], "stale_cache");
    // An answer that does not read is not an outage: the copy says so (the record may
    // hold something newer), on the page and on the trail.
    centre.upstream.fault(json!({"kind": "garbage"})).await;
    let unreadable = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(
        unreadable.status,
        StatusCode::CREATED,
        "{}",
        unreadable.body
    );
    assert_eq!(unreadable.body["source"], "stale_cache");
    assert_eq!(unreadable.body["stale_because"], "unreadable");
    let read = centre.audit(Some("patient_record_read")).pop().unwrap();
    assert!(
        read["detail"]
            .as_str()
            .unwrap()
            .ends_with("stale_because=unreadable"),
        "{read}"
    );
    centre
        .upstream
        .fault(json!({"kind": "status", "status": 503}))
        .await;

    // A patient never cached: the upstream's unavailability is the answer, in French.
    let down = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(
        down.body["message_fr"]
            .as_str()
            .unwrap()
            .contains("indisponible")
    );
    assert_eq!(
        centre.audit(Some("patient_record_read")).last().unwrap()["outcome"]["reason"],
        "upstream_unavailable"
    );
    // A copy is only for who the record service cleared: Centre 15 mode was never asked.
    let other_mode = centre.break_glass(request(3, "centre_15")).await;
    assert_eq!(
        other_mode.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        other_mode.body
    );

    // The patient opposes break-glass: once the record service says so, the copy is gone,
    // and an outage afterwards shows nothing stale.
    centre.upstream.fault(json!({"kind": "none"})).await;
    centre
        .upstream
        .flags("p3", json!({"opposed": ["bris_de_glace"]}))
        .await;
    let opposed = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(opposed.status, StatusCode::FORBIDDEN, "{}", opposed.body);
    centre
        .upstream
        .fault(json!({"kind": "status", "status": 503}))
        .await;
    let after = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(
        after.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        after.body
    );
}

/// After a run that did not stop cleanly, no copy is served: a removal on refusal (an
/// opposition heard just before the crash) may not have reached the disk.
#[tokio::test(flavor = "multi_thread")]
async fn no_copy_survives_a_run_that_did_not_stop_cleanly() {
    let mut centre = centre("fresh_seconds = 1\nmax_stale_seconds = 3600\n").await;
    let first = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    // Past sled's 500 ms write-out: the copy is on disk when the process dies.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (key, value) = centre._pcscd.env();
    centre.gateway.crash_and_restart(&[(key, value.as_str())]);
    assert!(
        centre.gateway.stderr.has("did not stop cleanly"),
        "{}",
        centre.gateway.stderr.all()
    );
    centre.token = centre.gateway.login_desk_a().await;
    centre
        .upstream
        .fault(json!({"kind": "status", "status": 503}))
        .await;
    let after = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(
        after.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        after.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clearance_is_honoured_only_while_fresh_whoever_refreshed_the_copy() {
    let centre = centre("fresh_seconds = 1\nmax_stale_seconds = 3600\n").await;
    // Cleared for break-glass now; a second later the copy is refreshed by an access in
    // another mode (as another professional's access would), which carries the first
    // clearance along with its own time.
    let first = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refresh = centre.break_glass(request(3, "centre_15")).await;
    assert_eq!(refresh.status, StatusCode::CREATED, "{}", refresh.body);
    assert_eq!(refresh.body["source"], "upstream");
    // The patient opposes break-glass since: the fresh copy must not stand in for asking.
    centre
        .upstream
        .flags("p3", json!({"opposed": ["bris_de_glace"]}))
        .await;
    let after = centre.break_glass(request(3, "bris_de_glace")).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN, "{}", after.body);
    // Asked each time: first, the refresh, and the refused one.
    assert_eq!(centre.upstream.stats().await["summaries"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_an_open_grant_gets_its_end_recorded_at_the_next_start() {
    let mut centre = centre("").await;
    let open = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(open.status, StatusCode::CREATED, "{}", open.body);
    // A second access, ended on purpose: it must not be ended twice.
    let closed = centre.break_glass(request(3, "centre_15")).await;
    let grant = closed.body["grant"]["id"].as_str().unwrap().to_owned();
    let client = centre.gateway.client(Some(DESK_A));
    let ended = centre
        .send(client.delete(centre.gateway.url(&format!("/api/v1/grants/{grant}"))))
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    let env = {
        let (key, value) = centre._pcscd.env();
        (key, value)
    };
    centre.gateway.crash_and_restart(&[(env.0, env.1.as_str())]);
    let stops = centre.audit(Some("break_glass_stopped"));
    let restarted: Vec<&Value> = stops
        .iter()
        .filter(|s| s["detail"] == "ended: gateway_restarted")
        .collect();
    assert_eq!(restarted.len(), 1, "{stops:?}");
    assert_eq!(restarted[0]["patient"]["ins"], nir(1));
    assert_eq!(restarted[0]["call"]["call_id"], "CRRA-2026-001234");
    // Recorded before anything of the new run.
    let all = centre.audit(None);
    let end = all
        .iter()
        .position(|r| r["detail"] == "ended: gateway_restarted")
        .unwrap();
    let started = all
        .iter()
        .rposition(|r| r["kind"] == "configuration_loaded")
        .unwrap();
    assert!(end < started, "the end comes before the new run's records");
    // The desk's session, open at the crash, gets its logout at the start too (before,
    // the login had none).
    let logouts = centre.audit(Some("user_logout"));
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["detail"], "gateway_restarted");
    assert_eq!(logouts[0]["actor"]["desk"], "desk-a");
    // A second restart owes nothing more.
    centre.gateway.crash_and_restart(&[(env.0, env.1.as_str())]);
    assert_eq!(centre.audit(Some("user_logout")).len(), 1);
    let again = centre.audit(Some("break_glass_stopped"));
    assert_eq!(
        again
            .iter()
            .filter(|s| s["detail"] == "ended: gateway_restarted")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_refuse_with_retry_after_and_an_audit_record() {
    let centre = centre(
        "\n[limits]\nper_professional_per_hour = 2\nsearches_per_professional_per_hour = 1\n",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            centre.break_glass(request(1, "bris_de_glace")).await.status,
            StatusCode::CREATED
        );
    }
    let limited = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.retry_after.unwrap().parse::<u64>().unwrap() > 60);
    assert!(
        limited.body["message_fr"]
            .as_str()
            .unwrap()
            .contains("Réessayez")
    );
    let started = centre.audit(Some("break_glass_started"));
    assert_eq!(
        started.last().unwrap()["outcome"]["reason"],
        "rate_limited:professional"
    );

    // Searches have their own limit, and record what was searched.
    let client = centre.gateway.client(Some(DESK_A));
    let search = |body: Value| {
        centre.send(
            client
                .post(centre.gateway.url("/api/v1/patients/search"))
                .json(&body),
        )
    };
    let found = search(json!({"ins": nir(1), "ins_oid": TEST_OID,
        "call_id": "CRRA-2026-001234", "reason_code": "inconscient"}))
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["candidates"][0]["id"], "p1");
    assert_eq!(found.cache_control.as_deref(), Some("no-store"));
    let refused = search(json!({"ins": nir(1), "ins_oid": TEST_OID,
        "call_id": "CRRA-2026-001234", "reason_code": "inconscient"}))
    .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let searches = centre.audit(Some("patient_search"));
    assert_eq!(searches.len(), 2);
    assert_eq!(searches[0]["patient"]["ins"], nir(1));
    assert_eq!(searches[1]["outcome"]["reason"], "rate_limited:search");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_by_traits_returns_candidates_and_records_what_was_searched() {
    let mut centre = centre("").await;
    let client = centre.gateway.client(Some(DESK_A));
    let answer = centre
        .send(
            client
                .post(centre.gateway.url("/api/v1/patients/search"))
                .json(&json!({
                    "traits": {"birth_name": support::upstream::family(3), "first_names": "Camille",
                               "birth_date": "1980-01-17", "sex": "f"},
                    "call_id": "CRRA-2026-001235", "reason_code": "inconscient"
                })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let candidates = answer.body["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0]["id"], "p3");
    let searches = centre.audit(Some("patient_search"));
    let searched = format!("birth_name={}", support::upstream::family(3));
    assert!(searches[0]["detail"].as_str().unwrap().contains(&searched));
    // The search is justified and names every identity it released, by INS.
    assert_eq!(searches[0]["call"]["call_id"], "CRRA-2026-001235");
    assert_eq!(searches[0]["call"]["reason_code"], "inconscient");
    assert_eq!(searches[0]["candidates"][0]["ins"], nir(3));
    let (_, by_patient, _) = support::run(
        &centre.gateway.config,
        &[
            "audit",
            "list",
            "--patient",
            &nir(3),
            "--kind",
            "patient_search",
        ],
        &[],
    );
    assert_eq!(by_patient.lines().count(), 1, "{by_patient}");
    // A pasted decomposed accent (a mark of its own, no letter) reads as the composed
    // letter: the patient is found; before, a 400.
    let pasted = centre
        .send(
            client
                .post(centre.gateway.url("/api/v1/patients/search"))
                .json(&json!({
                    "traits": {"birth_name": support::upstream::family(3),
                               "first_names": "Camille Ame\u{301}lie",
                               "birth_date": "1980-01-17", "sex": "f"},
                    "call_id": "CRRA-2026-001235", "reason_code": "inconscient"
                })),
        )
        .await;
    assert_eq!(pasted.status, StatusCode::OK, "{}", pasted.body);
    assert_eq!(pasted.body["candidates"][0]["id"], "p3", "{}", pasted.body);
    let bad = centre
        .send(client.post(centre.gateway.url("/api/v1/patients/search")).json(&json!({
            "traits": {"birth_name": "", "first_names": "Camille", "birth_date": "1980-01-17", "sex": "f"},
            "call_id": "CRRA-2026-001235", "reason_code": "inconscient"
        })))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Without a call and a reason, the record service is not asked.
    let before = centre.upstream.stats().await;
    for body in [
        json!({"ins": nir(3), "ins_oid": TEST_OID, "reason_code": "inconscient"}),
        json!({"ins": nir(3), "ins_oid": TEST_OID, "call_id": "", "reason_code": "inconscient"}),
        json!({"ins": nir(3), "ins_oid": TEST_OID, "call_id": "CRRA-1", "reason_code": "nope"}),
    ] {
        let unjustified = centre
            .send(
                client
                    .post(centre.gateway.url("/api/v1/patients/search"))
                    .json(&body),
            )
            .await;
        assert!(unjustified.status.is_client_error(), "{}", unjustified.body);
    }
    assert_eq!(centre.upstream.stats().await, before);

    // A logged-in physician's searches left neither the traits nor the INS in the logs.
    let logs = centre.gateway.logs_once_stopped();
    assert!(logs.contains("patients/search"), "the requests were logged");
    for secret in [support::upstream::family(3), nir(3), "1980-01-17".into()] {
        assert!(!logs.contains(&secret), "{secret} leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_one_patient_make_one_upstream_call() {
    let centre = centre("").await;
    centre
        .upstream
        .fault(json!({"kind": "latency", "ms": 400}))
        .await;
    let before = centre.upstream.stats().await;
    let answers = futures_join(&centre, 6).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::CREATED),
        "{answers:?}"
    );
    let after = centre.upstream.stats().await;
    let summaries = after["summaries"].as_u64().unwrap() - before["summaries"].as_u64().unwrap();
    assert_eq!(
        summaries, 1,
        "one upstream summary call for six concurrent requests"
    );
    assert_eq!(
        centre.audit(Some("patient_record_read")).len(),
        6,
        "each read is recorded"
    );
}

/// A desk that hangs up while the record service is answering (a closed tab, a reset
/// stream) does not cancel the access halfway: the read is still recorded, as the
/// start was.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_the_desk_hangs_up_on_is_still_recorded() {
    let centre = centre("").await;
    centre
        .upstream
        .fault(json!({"kind": "latency", "ms": 3000}))
        .await;
    let gone = centre
        .gateway
        .client(Some(DESK_A))
        .post(centre.gateway.url("/api/v1/break-glass"))
        .bearer_auth(&centre.token)
        .json(&request(7, "bris_de_glace"))
        .timeout(Duration::from_millis(1000))
        .send()
        .await;
    assert!(gone.is_err(), "the desk hung up before the answer");
    let deadline = Instant::now() + Duration::from_secs(15);
    while centre.audit(Some("patient_record_read")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the access was cancelled with the request: its read is not on record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn futures_join(centre: &Centre, n: usize) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = centre.gateway.client(Some(DESK_A));
        let url = centre.gateway.url("/api/v1/break-glass");
        let token = centre.token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&request(6, "bris_de_glace"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_the_card_ends_the_grant_and_the_cache_is_unreadable_at_rest() {
    let mut centre = centre("").await;
    let answer = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let grant = answer.body["grant"]["id"].as_str().unwrap().to_owned();
    centre.card.remove();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stopped = centre.audit(Some("break_glass_stopped"));
        if let Some(record) = stopped.first() {
            assert_eq!(record["detail"], "ended: session_ended");
            break;
        }
        assert!(Instant::now() < deadline, "the grant outlived the session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(centre.reread(&grant).await.status, StatusCode::UNAUTHORIZED);

    // The sealed cache: neither the INS nor the allergy can be read in any of sled's files
    // (its blobs too), read once the gateway has stopped and sled has written everything.
    centre.gateway.terminate();
    centre.gateway.wait(Duration::from_secs(30));
    let bytes = all_bytes(&centre.gateway.dir.path().join("state/cache"));
    // What was read is the copy: the cache holds it.
    let (code, stats, err) =
        support::run(&centre.gateway.config, &["cache", "stats", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(stats.trim()).unwrap();
    assert!(stats["entries"].as_u64().unwrap() >= 1, "{stats}");
    for needle in [
        nir(1).as_bytes(),
        b"enicillin".as_slice(),
        b"Anastrozole".as_slice(),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "readable at rest"
        );
    }
}

/// Every file's bytes under `dir`, its subdirectories' too.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_fault_is_a_clear_french_message_an_audit_record_and_no_hang() {
    let centre = centre("").await;
    let bound = Duration::from_secs(5);
    for (fault, status, reason) in [
        (
            json!({"kind": "timeout"}),
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
        ),
        (
            json!({"kind": "status", "status": 500}),
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
        ),
        (
            json!({"kind": "truncated"}),
            StatusCode::BAD_GATEWAY,
            "upstream_malformed",
        ),
        (
            json!({"kind": "wrong_content_type"}),
            StatusCode::BAD_GATEWAY,
            "upstream_malformed",
        ),
        (
            json!({"kind": "oversize", "bytes": 20_000_000}),
            StatusCode::BAD_GATEWAY,
            "upstream_malformed",
        ),
        (
            json!({"kind": "garbage"}),
            StatusCode::BAD_GATEWAY,
            "upstream_malformed",
        ),
    ] {
        centre.upstream.fault(fault.clone()).await;
        let started = Instant::now();
        let answer = centre.break_glass(request(5 + 1, "bris_de_glace")).await;
        assert!(started.elapsed() < bound, "{fault}: hung");
        assert_eq!(answer.status, status, "{fault}: {}", answer.body);
        assert!(!answer.body["message_fr"].as_str().unwrap().is_empty());
        let last = centre.audit(Some("patient_record_read"));
        assert_eq!(last.last().unwrap()["outcome"]["reason"], reason, "{fault}");
    }
}

/// A document about another patient than the one asked for is its own answer: a French
/// message saying so (not "illisible"), its own reason on the record, nothing of it shown.
#[tokio::test(flavor = "multi_thread")]
async fn a_document_about_another_patient_is_said_to_be_so() {
    let centre = centre("").await;
    let answer = centre.break_glass(request(9, "bris_de_glace")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert_eq!(
        answer.body["error"], "upstream_wrong_patient",
        "{}",
        answer.body
    );
    let message = answer.body["message_fr"].as_str().unwrap();
    assert!(message.contains("autre patient"), "{message}");
    assert!(answer.body.get("summary").is_none());
    let read = centre.audit(Some("patient_record_read"));
    assert_eq!(
        read.last().unwrap()["outcome"]["reason"],
        "upstream_wrong_patient"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_stats_and_purge_from_the_command_line() {
    let mut centre = centre("").await;
    assert_eq!(
        centre.break_glass(request(1, "bris_de_glace")).await.status,
        StatusCode::CREATED
    );
    let config = centre.gateway.config.clone();
    // While the gateway runs, the state directory is its own: the command says where to look.
    let (code, _, stderr) = support::run(&config, &["cache", "stats"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/metrics"), "{stderr}");
    centre.gateway.terminate();
    centre.gateway.wait(Duration::from_secs(20));
    let (code, stdout, stderr) = support::run(&config, &["cache", "stats", "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let stats: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(stats["entries"], 1);
    let (code, stdout, _) = support::run(&config, &["cache", "purge"], &[]);
    assert_eq!((code, stdout.trim()), (0, "0 cached summaries deleted"));
    let (code, stdout, _) = support::run(&config, &["cache", "purge", "--all"], &[]);
    assert_eq!((code, stdout.trim()), (0, "1 cached summaries deleted"));
    let (_, stdout, _) = support::run(&config, &["cache", "stats", "--json"], &[]);
    assert_eq!(
        serde_json::from_str::<Value>(stdout.trim()).unwrap()["entries"],
        0
    );
    let key = centre.gateway.dir.path().join("another.key");
    let (code, _, _) = support::run(&config, &["cache", "keygen", key.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    let (code, _, stderr) = support::run(&config, &["cache", "keygen", key.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "never overwrites: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_readable_master_key_the_cache_is_off_and_access_still_works() {
    let centre = centre_with_key("", false).await;
    assert!(centre.gateway.stderr.has("the summary cache is disabled"));
    for _ in 0..2 {
        let answer = centre.break_glass(request(1, "bris_de_glace")).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["source"], "upstream");
    }
    assert_eq!(centre.upstream.stats().await["summaries"], 2);
}

/// A session holds `open_grants_per_session` grants at most: one more ends the oldest,
/// recorded before the new access's own records, so memory stays bounded however many
/// accesses a session makes, and every access on the record still has its end.
#[tokio::test(flavor = "multi_thread")]
async fn one_grant_too_many_ends_the_sessions_oldest_on_the_record() {
    let mut centre = centre("\n[break_glass]\nopen_grants_per_session = 2\n").await;
    let mut grants = Vec::new();
    for serial in [1, 2, 3, 1] {
        let answer = centre.break_glass(request(serial, "bris_de_glace")).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        grants.push(answer.body["grant"]["id"].as_str().unwrap().to_owned());
    }
    // The first two are gone (oldest first), the last two still re-read.
    for gone in &grants[..2] {
        assert_eq!(centre.reread(gone).await.status, StatusCode::NOT_FOUND);
    }
    for open in &grants[2..] {
        assert_eq!(centre.reread(open).await.status, StatusCode::OK);
    }
    let trail = centre.audit(None);
    let superseded: Vec<&Value> = trail
        .iter()
        .filter(|r| r["detail"] == "ended: superseded")
        .collect();
    assert_eq!(superseded.len(), 2, "{superseded:?}");
    assert_eq!(superseded[0]["patient"]["ins"], nir(1));
    assert_eq!(superseded[1]["patient"]["ins"], nir(2));
    // Each end is recorded with the read of the access that needed the room, before it.
    let position = |detail: &str, nth: usize| {
        trail
            .iter()
            .enumerate()
            .filter(|(_, r)| r["detail"] == detail || r["kind"] == detail)
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap()
    };
    for (end, access) in [(0, 2), (1, 3)] {
        assert!(position("patient_record_read", access - 1) < position("ended: superseded", end));
        assert!(position("ended: superseded", end) < position("patient_record_read", access));
    }

    // A clean stop ends the two left; the trail then owes no end to anyone.
    centre.gateway.terminate();
    assert!(centre.gateway.wait(Duration::from_secs(20)).success());
    let stopped = centre.audit(Some("break_glass_stopped"));
    assert_eq!(stopped.len(), 4, "{stopped:?}");
    assert_eq!(
        stopped
            .iter()
            .filter(|r| r["detail"] == "ended: gateway_stopped")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_gateway_ends_open_grants_on_the_record() {
    let mut centre = centre("").await;
    assert_eq!(
        centre.break_glass(request(1, "bris_de_glace")).await.status,
        StatusCode::CREATED
    );
    centre.gateway.terminate();
    assert!(centre.gateway.wait(Duration::from_secs(20)).success());
    let stopped = centre.audit(Some("break_glass_stopped"));
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["detail"], "ended: gateway_stopped");
    let kinds: Vec<String> = centre
        .audit(None)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    let ended = kinds
        .iter()
        .position(|k| k == "break_glass_stopped")
        .unwrap();
    let service = kinds.iter().position(|k| k == "service_stopped").unwrap();
    assert!(
        ended < service,
        "grants end before the service stops: {kinds:?}"
    );
    // The desk's session too, after its grant (before, the login had no logout).
    let logouts = centre.audit(Some("user_logout"));
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["detail"], "gateway_stopped");
    let logout = kinds.iter().position(|k| k == "user_logout").unwrap();
    assert!(ended < logout && logout < service, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_card_pulled_while_the_record_service_answers_releases_nothing() {
    // Neither a summary nor search candidates (they identify patients). Each call 700 ms
    // late: the access's two calls fit its 2 s deadline, the card is pulled before.
    let mut centre = centre("").await;
    centre
        .upstream
        .fault(json!({"kind": "latency", "ms": 700}))
        .await;
    let client = centre.gateway.client(Some(DESK_A));
    let request = client
        .post(centre.gateway.url("/api/v1/break-glass"))
        .bearer_auth(&centre.token)
        .json(&request(1, "bris_de_glace"));
    let search = client
        .post(centre.gateway.url("/api/v1/patients/search"))
        .bearer_auth(&centre.token)
        .json(&json!({"ins": nir(1), "ins_oid": TEST_OID,
            "call_id": "CRRA-2026-001234", "reason_code": "inconscient"}));
    let in_flight = tokio::spawn(async move { request.send().await.unwrap() });
    let searching = tokio::spawn(async move { search.send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| centre.card.remove());
    for response in [in_flight.await.unwrap(), searching.await.unwrap()] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "no_session", "{body}");
        assert!(
            body.get("summary").is_none() && body.get("candidates").is_none(),
            "nothing released"
        );
    }
    // The access that started is closed on the record.
    let stopped = centre.audit(Some("break_glass_stopped"));
    assert_eq!(
        stopped.last().unwrap()["detail"],
        "ended: session_ended_before_release",
        "{stopped:?}"
    );
    // The search is on the record as not released (it said success, as if the
    // identities had reached the physician).
    let searches = centre.audit(Some("patient_search"));
    let last = searches.last().unwrap();
    assert_eq!(last["outcome"]["status"], "failed", "{last}");
    assert_eq!(
        last["outcome"]["reason"], "session_ended_before_release",
        "{last}"
    );
    // And so is the summary's read: nothing reached anyone (it said success).
    let reads = centre.audit(Some("patient_record_read"));
    let last = reads.last().unwrap();
    assert_eq!(last["outcome"]["status"], "failed", "{last}");
    assert_eq!(
        last["outcome"]["reason"], "session_ended_before_release",
        "{last}"
    );
}

/// A closing decision waits for the access's end: while its grant runs, reads may follow,
/// and an access decided "justified" at minute 10 left its later reads to no one. "To
/// investigate" keeps it on the list, so it may come at any time.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_is_decided_once_it_has_ended() {
    let centre = centre("\n[compliance]\nofficer_cns = [\"poste-x\"]\n").await;
    let access = centre.break_glass(request(1, "bris_de_glace")).await;
    assert_eq!(access.status, StatusCode::CREATED, "{}", access.body);
    let grant = access.body["grant"]["id"].as_str().unwrap().to_owned();
    let start = centre.audit(Some("break_glass_started"))[0]["seq"]
        .as_u64()
        .unwrap();
    let officer = centre.gateway.client(Some(support::UNMAPPED));
    let decide = |decision: &str, replaces: Option<u64>| {
        let request = officer
            .post(centre.gateway.url("/api/v1/compliance/reviews"))
            .json(&json!({"seq": start, "decision": decision, "replaces": replaces}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = decide("justified", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "access_still_open");
    let (status, body) = decide("to_investigate", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let investigated = body["recorded"].as_u64();
    // The grant's own records name it.
    let read = centre.audit(Some("patient_record_read"));
    assert_eq!(read.last().unwrap()["grant"], grant.as_str());
    let client = centre.gateway.client(Some(DESK_A));
    let ended = centre
        .send(client.delete(centre.gateway.url(&format!("/api/v1/grants/{grant}"))))
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(
        decide("justified", investigated).await.0,
        StatusCode::CREATED
    );
}
