//! `samu-gateway demo` runs on embedded defaults, writes demo.json and gateway.toml, serves
//! the desk state to the demo certificates, and leaves a configuration other subcommands use.

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Starts `samu-gateway demo` in `dir` with `extra` arguments; returns it and demo.json.
fn start_demo(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, Value) {
    let (child, demo, _) = start_demo_printing(dir, extra);
    (child, demo)
}

/// As `start_demo`, with what the demo prints (its banner).
fn start_demo_printing(
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, Value, support::Lines) {
    let mut child = Command::new(support::BIN)
        .args(["demo", "--port", "0", "--dir"])
        .arg(dir)
        .args(extra)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (printed, logged) = (support::Lines::default(), support::Lines::default());
    printed.follow(child.stdout.take().unwrap());
    logged.follow(child.stderr.take().unwrap());
    let manifest = dir.join("demo.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !manifest.exists() {
        assert!(child.try_wait().unwrap().is_none(), "demo exited early");
        assert!(Instant::now() < deadline, "demo.json never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let demo = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    (child, demo, printed)
}

/// The card desk's client and a session token, once the virtual card is read.
async fn log_in(demo: &Value) -> (reqwest::Client, String) {
    let url = demo["url"].as_str().unwrap();
    let ca = std::fs::read(demo["ca_cert"].as_str().unwrap()).unwrap();
    let at = demo["card"]["desk"].as_str().unwrap();
    let desk = demo["desks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == at)
        .unwrap();
    let mut identity = std::fs::read(desk["cert"].as_str().unwrap()).unwrap();
    identity.extend(std::fs::read(desk["key"].as_str().unwrap()).unwrap());
    let physician = client(&ca, Some(&identity));
    let deadline = Instant::now() + Duration::from_secs(20);
    while support::get_json(&physician, &format!("{url}/api/v1/desk"))
        .await
        .1["card"]["state"]
        != "present"
    {
        assert!(Instant::now() < deadline, "the demo card never showed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login = physician
        .post(format!("{url}/api/v1/session"))
        .json(&serde_json::json!({ "pin": demo["card"]["pin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 201);
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (physician, token)
}

/// `demo --case` sends its sample case to the card's desk as the regulation software
/// would, before demo.json appears; the curl lines the demo prints close it and send it
/// again, run as printed; the case is on the record each time.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_sends_its_sample_case_and_prints_the_curl_lines_that_do_it_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, demo, printed) = start_demo_printing(dir.path(), &["--case"]);
    let url = demo["url"].as_str().unwrap();
    let case_id = demo["integration"]["case_id"].as_str().unwrap();
    let (physician, token) = log_in(&demo).await;
    let case = |expected: u16| {
        let request = physician
            .get(format!("{url}/api/v1/case"))
            .bearer_auth(&token);
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), expected);
            answer.json::<Value>().await.unwrap_or_default()
        }
    };
    let shown = case(200).await;
    assert_eq!(shown["case_id"], case_id, "{shown}");
    assert_eq!(shown["priority"], "P0", "{shown}");
    let patient = &shown["patients"][0];
    let sample = demo["patients"][0]["name"].as_str().unwrap();
    assert_eq!(
        format!(
            "{} {}",
            patient["birth_name"].as_str().unwrap(),
            patient["first_name"].as_str().unwrap()
        ),
        sample,
        "the case describes the first sample patient: {shown}"
    );

    assert!(
        printed
            .wait_for(Duration::from_secs(10), |l| l.contains("-X DELETE"))
            .is_some(),
        "{}",
        printed.all()
    );
    let banner = printed.all();
    assert!(banner.contains("It was sent once at start"), "{banner}");
    let line = |needle: &str| {
        banner
            .lines()
            .find(|l| l.contains(needle) && l.trim_start().starts_with("curl "))
            .unwrap_or_else(|| panic!("no curl line with {needle}: {banner}"))
            .trim()
            .to_owned()
    };
    let shell = |command: String| async move {
        let out = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Sent again (a new version of the case), then closed: once closed, the same sending
    // is refused (a late retry must not bring a closed case back).
    let answer = shell(line("--data-binary @")).await;
    assert!(answer.contains(case_id), "{answer}");
    assert_eq!(case(200).await["case_id"], case_id);
    shell(line("-X DELETE")).await;
    case(204).await;

    let config = dir.path().join("gateway.toml");
    let (_, received, _) = support::run(
        &config,
        &["audit", "list", "--kind", "case_received", "--json"],
        &[],
    );
    assert_eq!(received.matches(case_id).count(), 2, "{received}");
    let (_, closed, _) = support::run(
        &config,
        &["audit", "list", "--kind", "case_closed", "--json"],
        &[],
    );
    assert!(closed.contains(case_id), "{closed}");
    support::signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The demo's case is what the Hub's schema describes (Python's `jsonschema` on the
/// published `RS-EDA.schema.json`).
#[test]
fn the_demos_case_follows_the_hubs_schema() {
    if !support::hub::schema_present("demo: the demo's case") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, demo) = start_demo(dir.path(), &[]);
    let case = std::path::PathBuf::from(demo["integration"]["case"].as_str().unwrap());
    let (valid, stdout, stderr) = support::validators::run("rs_eda.py", &case);
    let _ = child.kill();
    let _ = child.wait();
    assert!(valid, "{stdout}{stderr}");
}

/// `demo --upstream fhir` keeps the FHIR stand-in: the same patients, read from bundles.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_keeps_the_fhir_path_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, demo) = start_demo(dir.path(), &["--upstream", "fhir"]);
    assert_eq!(demo["upstream"], "fhir");
    let (physician, token) = log_in(&demo).await;
    let patient = &demo["patients"][0];
    let answer = physician
        .post(format!(
            "{}/api/v1/break-glass",
            demo["url"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "ins": patient["ins"], "ins_oid": patient["ins_oid"], "call_id": "DEMO-0002",
            "reason_code": "inconscient", "access_mode": "centre_15",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["summary"]["document"]["format"], "fhir", "{body}");
    assert_eq!(body["summary"]["allergies"]["status"], "recorded");
    support::signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_its_desks_and_leaves_a_usable_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, demo, printed) = start_demo_printing(dir.path(), &[]);
    // The national record's protocol, unless asked otherwise.
    assert_eq!(demo["upstream"], "dmp");
    let url = demo["url"].as_str().unwrap();
    let ca = std::fs::read(demo["ca_cert"].as_str().unwrap()).unwrap();
    assert_eq!(demo["desks"].as_array().unwrap().len(), 2);
    for desk in demo["desks"].as_array().unwrap() {
        let mut identity = std::fs::read(desk["cert"].as_str().unwrap()).unwrap();
        identity.extend(std::fs::read(desk["key"].as_str().unwrap()).unwrap());
        let client = client(&ca, Some(&identity));
        let (_, body) = support::get_json(&client, &format!("{url}/api/v1/desk")).await;
        assert_eq!(body["desk"]["id"], desk["id"], "{body}");
    }
    // Demo only: this machine's connections without a certificate (a browser's) act for
    // the card's desk, and say so.
    let (status, body) = support::get_json(&client(&ca, None), &format!("{url}/api/v1/desk")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["desk"]["id"], demo["card"]["desk"]);
    assert_eq!(body["workstation"]["demo_loopback"], true);
    assert_eq!(body["workstation"]["sha256"], "");

    // The virtual card at the first desk logs in with the PIN demo.json gives.
    let (physician, token) = log_in(&demo).await;
    let view = support::get_json(&physician, &format!("{url}/api/v1/desk"))
        .await
        .1;
    assert_eq!(view["state"], "session_open", "{view}");
    assert_eq!(
        view["session"]["professional"]["id_nat"],
        demo["card"]["id_nat"]
    );

    // Every sample patient demonstrates what demo.json says.
    let patients = demo["patients"].as_array().unwrap();
    assert_eq!(patients.len(), 6);
    let expected = [
        ("bris_de_glace", 201, "recorded"),
        ("bris_de_glace", 201, "none_known"),
        ("centre_15", 403, ""),
        ("bris_de_glace", 201, "not_recorded"),
        ("centre_15", 201, "recorded"),
        ("centre_15", 201, "not_recorded"),
    ];
    let mut answers = Vec::new();
    for (patient, (mode, status, allergies)) in patients.iter().zip(expected) {
        let answer = physician
            .post(format!("{url}/api/v1/break-glass"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "ins": patient["ins"], "ins_oid": patient["ins_oid"], "call_id": "DEMO-0001",
                "reason_code": "inconscient", "access_mode": mode,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{patient}");
        let body: Value = answer.json().await.unwrap();
        if status == 201 {
            assert_eq!(
                body["summary"]["allergies"]["status"], allergies,
                "{patient}"
            );
        } else {
            assert_eq!(body["error"], "patient_opposed_centre_15", "{body}");
        }
        answers.push(body);
    }
    // The national record's shapes: an IPS-FR in CDA, and a summary held only as a PDF
    // that opens under its grant.
    // The first patient's record holds a summary and a reimbursement history: both used.
    let durand = &answers[0]["summary"];
    assert_eq!(durand["document"]["format"], "cda", "{durand}");
    assert!(
        durand["dispensations"]["items"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{durand}"
    );
    assert_eq!(durand["documents"].as_array().unwrap().len(), 2, "{durand}");
    let cda = &answers[4]["summary"];
    assert_eq!(cda["document"]["format"], "cda", "{cda}");
    assert_eq!(cda["document"]["template"], "IPS-FR", "{cda}");
    assert_eq!(cda["allergies"]["items"][0]["criticality"], "high", "{cda}");
    assert!(
        cda["vigilance"]["narrative"]
            .as_str()
            .unwrap()
            .contains("hypoglycémie"),
        "{cda}"
    );
    let pdf = &answers[5];
    assert_eq!(
        pdf["summary"]["document"]["bundle_type"], "cda-unstructured",
        "{pdf}"
    );
    let document = physician
        .get(format!(
            "{url}/api/v1/grants/{}/document",
            pdf["grant"]["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), 200);
    assert!(document.bytes().await.unwrap().starts_with(b"%PDF-"));

    support::signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    printed.wait_closed(Duration::from_secs(10));
    let stdout = printed.all();
    assert!(
        stdout.contains(&format!(
            "curl --cacert {}",
            demo["ca_cert"].as_str().unwrap()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("/api/v1/session") && stdout.contains("PIN 1234"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/api/v1/break-glass") && stdout.contains("255087511204947"),
        "{stdout}"
    );

    // The effective configuration drives later subcommands on the demo's state.
    let config = dir.path().join("gateway.toml");
    let (code, stdout, stderr) = support::run(&config, &["configtest"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&dir.path().join("state").display().to_string()),
        "{stdout}"
    );
    assert!(dir.path().join("state/audit.redb").exists());

    // The same configuration served for real maps nobody without a certificate, and no
    // key can ask for the demo's loopback mapping.
    let (mut served, _, stderr) = support::spawn(&config, &["serve"], &[]);
    let line = stderr
        .wait_for(Duration::from_secs(30), |l| l.contains("listening"))
        .expect("serve never listened");
    let addr = line
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let refused = client(&ca, None)
        .get(format!("https://{addr}/api/v1/desk"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let _ = served.kill();
    let _ = served.wait();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[server]\n", "[server]\ndemo_loopback_desk = \"regul-1\"\n");
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = support::run(&config, &["configtest"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("demo_loopback_desk"), "{stderr}");
}

/// The demo's certificates are plain PEM files, as curl would use them.
fn client(ca: &[u8], identity: Option<&[u8]>) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let identity = identity.map(|pem| {
        let cert = CertificateDer::from_pem_slice(pem).unwrap();
        (cert, PrivateKeyDer::from_pem_slice(pem).unwrap())
    });
    support::tls_client(CertificateDer::from_pem_slice(ca).unwrap(), identity)
}
