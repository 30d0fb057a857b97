//! The physician's page in a real browser: Debian's Chromium driven by Playwright
//! (`tests/browser/*.mjs`, dependencies pinned in `tests/browser/package-lock.json`,
//! installed by `.ci/deps`), against a real gateway with a virtual card on a private pcscd
//! and the dev upstream over mutual TLS. The browser presents the desk's workstation
//! certificate (Playwright's `clientCertificates`), as a desk's browser would.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::{DevUpstream, family, nir, own_bundle, own_cda, patient};
use support::{DESK_A, Gateway, Pki, write_config};

/// An export the gateway cuts short (a damaged record in the trail) is a failed download
/// in the browser's list: the page hands the export's link to the browser's own download,
/// which sees the transfer break.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_cut_short_is_a_failed_download_in_the_browser() {
    use redb::{ReadableDatabase, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let login = || {
        samu_gateway::audit::Event::new(
            samu_gateway::audit::EventKind::UserLogin,
            samu_gateway::audit::Outcome::Success,
        )
    };
    support::write_trail(
        dir.path(),
        &pki.audit_key,
        (0..40).map(|_| login()).collect(),
    );
    // Record 20's bytes as a damaged disk could leave them.
    let db = redb::Database::create(dir.path().join("state/audit.redb")).unwrap();
    let records: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
    assert!(
        db.begin_read()
            .unwrap()
            .open_table(records)
            .unwrap()
            .get(20)
            .unwrap()
            .is_some()
    );
    let txn = db.begin_write().unwrap();
    txn.open_table(records)
        .unwrap()
        .insert(20, b"{\"v\":1,\"seq\":20,".as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let config = write_config(
        dir.path(),
        &pki,
        "",
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n",
    );
    let gateway = Gateway::launch(dir, pki, config, &[]);
    let env = script_env(&gateway, support::UNMAPPED, vec![]);
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("export-cut.mjs"), &env, |_| false)
    });
    assert!(result["failure"].is_string(), "{result}");
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The project's own IPS bundles (`tests/fixtures/ips`).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ips")
        .join(name)
}

/// Where screenshots are kept as test artifacts.
fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// Runs `script` in node with `env`; each other line it prints that `act` knows is a
/// command, carried out before the script is told "done". Returns its RESULT object.
fn run_script(script: &Path, env: &[(&str, String)], mut act: impl FnMut(&str) -> bool) -> Value {
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(browser_dir())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (from .ci/deps) runs the browser tests");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut result = Value::Null;
    for line in stdout.lines() {
        let line = line.unwrap();
        eprintln!("browser: {line}");
        if let Some(json) = line.strip_prefix("RESULT ") {
            result = serde_json::from_str(json).unwrap();
        } else if act(&line) {
            writeln!(stdin, "done").unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the browser scenario failed (see above)");
    result
}

/// A scenario's environment: the gateway's URL, the `client` certificate it presents,
/// where screenshots go, and the scenario's own `extra` variables.
fn script_env(
    gateway: &Gateway,
    client: &str,
    extra: Vec<(&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let cert = &gateway.pki.clients[client];
    let mut env = vec![
        ("GATEWAY", gateway.url("").trim_end_matches('/').to_owned()),
        ("CLIENT_CERT", cert.cert.display().to_string()),
        ("CLIENT_KEY", cert.key.display().to_string()),
        ("SHOTS", shots_dir().display().to_string()),
    ];
    env.extend(extra);
    env
}

/// A gateway trusting `card`, asking `upstream`, with the cache (`cache` appended to its
/// `[cache]` section), on `pcscd`'s reader for desk A.
fn centre_gateway(
    pcscd: &Pcscd,
    card: &VirtualCard,
    upstream: &DevUpstream,
    cache: &str,
) -> Gateway {
    centre_gateway_on(pcscd, card, &upstream.toml_section(), cache)
}

/// As [`centre_gateway`], with the `[upstream]` section given.
fn centre_gateway_on(pcscd: &Pcscd, card: &VirtualCard, upstream: &str, cache: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let master = dir.path().join("cache.key");
    samu_gateway::cache::sealed::MasterKey::generate(&master).unwrap();
    let extra = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n[cache]\nmaster_key = \"{}\"\n{cache}",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        upstream,
        master.display(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    Gateway::launch(dir, pki, config, &[(key, value.as_str())])
}

#[tokio::test(flavor = "multi_thread")]
async fn physician_reaches_the_allergies_by_keyboard_and_pulling_the_card_clears_the_page() {
    let pcscd = Pcscd::start(1);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let card_dir = card.dir.clone();
    let mut opposed = patient("p2", 2, &fixture("one-entry-per-section.json"));
    opposed["opposed"] = json!(["centre_15"]);
    let partial_dir = tempfile::tempdir().unwrap();
    let upstream = DevUpstream::start(vec![
        patient(
            "p1",
            1,
            &fixture("penicillin-allergy-high-criticality.json"),
        ),
        opposed,
        // One entry the reader leaves out (a malformed date): a partial summary.
        patient(
            "p3",
            3,
            &own_bundle(
                partial_dir.path(),
                "malformed-multibyte-date-in-allergy.json",
                3,
                |_| {},
            ),
        ),
    ]);
    let gateway = centre_gateway(
        &pcscd,
        &card,
        &upstream,
        "fresh_seconds = 1\nmax_stale_seconds = 3600\n",
    );
    let env = script_env(
        &gateway,
        DESK_A,
        vec![
            ("INS", nir(1)),
            ("OPPOSED_INS", nir(2)),
            ("PARTIAL_INS", nir(3)),
            ("FAMILY", family(1)),
        ],
    );
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("physician.mjs"), &env, |command| {
            match command {
                "REMOVE" => card.remove(),
                "INSERT" => card = VirtualCard::insert_from(&pcscd, 0, &card_dir, &[]),
                "UPSTREAM_DOWN" => {
                    runtime.block_on(upstream.fault(json!({"kind": "status", "status": 503})))
                }
                _ => return false,
            }
            true
        })
    });
    let cleared = result["clearedMs"].as_u64().unwrap();
    // The screen must never show a patient after the card is pulled: within one second.
    assert!(
        cleared < 1000,
        "patient data stayed {cleared} ms after removal"
    );
    assert!(
        result["opposition"].as_str().unwrap().contains("opposé"),
        "{result}"
    );
    assert!(
        result["stale"]
            .as_str()
            .unwrap()
            .contains("DONNÉES ANCIENNES : le dossier national ne répond pas."),
        "{result}"
    );
}

/// A case from the regulation software reaches the page: reason, candidate, Enter, and the
/// allergies are on screen; the access is recorded under the case's id.
#[tokio::test(flavor = "multi_thread")]
async fn a_case_from_the_regulation_software_takes_the_physician_to_the_allergies_in_three_actions()
{
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let upstream = DevUpstream::start(vec![patient(
        "p1",
        1,
        &fixture("penicillin-allergy-high-criticality.json"),
    )]);
    let gateway = centre_gateway(
        &pcscd,
        &card,
        &upstream,
        "\n[integration]\ncn = \"poste-x\"\n",
    );
    // The regulation software: the case comes once the physician is logged in.
    let integration = gateway.client(Some(support::UNMAPPED));
    let case_id = "fr.health.samu690.DRFR156902612040009";
    let mut case = support::hub::one_patient_case(case_id, &family(1));
    // The caller read out the patient's NIR: a hint the page shows as unverified.
    case["createCaseHealth"]["patient"][0]["administrativeFile"] =
        json!({"externalId": [{"source": "NIR", "value": nir(1)}]});
    // Revised while the access is on its way (case.mjs's REVISE).
    let revised = support::hub::revised(&case);
    // Corrected, with birth dates the page must not show as days (case.mjs's RESEND).
    let mut corrected = support::hub::one_patient_case(case_id, "CAMILLE");
    support::hub::resent_with_unusable_birth_dates(&mut corrected);
    let mut drill =
        support::hub::one_patient_case("fr.health.samu690.DRFR156902612040010", &family(1));
    drill["kind"] = "Report".into();
    drill["status"] = "Exercise".into();
    let env = script_env(
        &gateway,
        DESK_A,
        vec![("CASE_ID", case_id.to_owned()), ("CASE_NIR", nir(1))],
    );
    let drill_id = "fr.health.samu690.DRFR156902612040010";
    // A case of another call, come once the physician's reason is chosen (case.mjs's
    // LATE_CASE).
    let late_id = "fr.health.samu690.DRFR156902612040011";
    let late = support::hub::one_patient_case(late_id, &family(1));
    let runtime = tokio::runtime::Handle::current();
    // The case the desk holds, which a close names.
    let mut held = case_id;
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("case.mjs"), &env, |command| {
            let url = gateway.url("/api/v1/desks/desk-a/case");
            let (request, expected) = match command {
                "CASE" => (integration.post(url).json(&case), 201),
                "RESEND" => (integration.post(url).json(&corrected), 201),
                "REVISE" => (integration.post(url).json(&revised), 201),
                "EXERCISE" => {
                    held = drill_id;
                    (integration.post(url).json(&drill), 201)
                }
                "LATE_CASE" => {
                    held = late_id;
                    (integration.post(url).json(&late), 201)
                }
                "CLOSE" => (integration.delete(format!("{url}?case_id={held}")), 204),
                _ => return false,
            };
            let answer = runtime.block_on(request.send()).unwrap();
            assert_eq!(answer.status(), expected, "{command}");
            true
        })
    });
    assert_case_path_on_the_record(&result, &gateway.config, case_id);
}

/// The case path reached a penicillin allergy, and the search, the access and the read
/// are recorded under the case's id, in Centre 15 mode.
fn assert_case_path_on_the_record(result: &Value, config: &Path, case_id: &str) {
    let allergies = result["allergies"].as_str().unwrap().to_lowercase();
    assert!(
        allergies.contains("pénicilline") || allergies.contains("penicillin"),
        "{result}"
    );
    let trail = support::run(config, &["audit", "list", "--json"], &[]).1;
    let records: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in [
        "patient_search",
        "break_glass_started",
        "patient_record_read",
    ] {
        let record = records
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {trail}"));
        assert_eq!(record["call"]["call_id"], case_id, "{record}");
        assert_eq!(record["access_mode"], "centre_15", "{record}");
    }
}

/// The same three actions on the national record's protocol: the demo (dev-dmp, the
/// virtual card signing), its regulation software sending the sample case with the
/// integration certificate, TD0.5 finding the patient by the case's traits.
#[tokio::test(flavor = "multi_thread")]
async fn the_case_path_works_on_the_national_records_protocol_too() {
    let (mut demo, dir, _) = start_demo();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["upstream"], "dmp");
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let (url, desk, integration) = (
        text(&manifest["url"]),
        &manifest["desks"][0],
        &manifest["integration"],
    );
    assert_eq!(desk["id"], manifest["card"]["desk"]);
    let case_id = text(&integration["case_id"]);
    let env = vec![
        ("GATEWAY", url.clone()),
        ("CLIENT_CERT", text(&desk["cert"])),
        ("CLIENT_KEY", text(&desk["key"])),
        ("SHOTS", shots_dir().join("dmp").display().to_string()),
        ("CASE_ID", case_id.clone()),
        ("MATCH_SHOWN", "1".to_owned()),
    ];
    use rustls::pki_types::pem::PemObject;
    let pem = |v: &Value| std::fs::read(text(v)).unwrap();
    let regulation = support::tls_client(
        rustls::pki_types::CertificateDer::from_pem_slice(&pem(&manifest["ca_cert"])).unwrap(),
        Some((
            rustls::pki_types::CertificateDer::from_pem_slice(&pem(&integration["cert"])).unwrap(),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem(&integration["key"])).unwrap(),
        )),
    );
    let case = pem(&integration["case"]);
    // Revised while the access is on its way (case.mjs's REVISE).
    let revised = serde_json::to_vec(&support::hub::revised(
        &serde_json::from_slice(&case).unwrap(),
    ))
    .unwrap();
    // The same case, corrected, with birth dates the page must not show as days
    // (case.mjs's RESEND).
    let mut corrected: Value = serde_json::from_slice(&case).unwrap();
    assert!(
        corrected["createCaseHealth"]["patient"][0]["identity"]["strictFeatures"].is_object(),
        "{corrected}"
    );
    support::hub::resent_with_unusable_birth_dates(&mut corrected);
    let corrected = serde_json::to_vec(&corrected).unwrap();
    // The same patients as a drill (case.mjs's EXERCISE), under a case id of its own: the
    // real case, once closed, is not sent again.
    let mut drill: Value = serde_json::from_slice(&case).unwrap();
    drill["kind"] = json!("Report");
    drill["status"] = json!("Exercise");
    let drill_id = format!("{case_id}9");
    // A case of another call, come once the physician's reason is chosen (case.mjs's
    // LATE_CASE).
    let mut late: Value = serde_json::from_slice(&case).unwrap();
    let late_id = format!("{case_id}8");
    late["createCaseHealth"]["caseId"] = json!(late_id);
    let late = serde_json::to_vec(&late).unwrap();
    drill["createCaseHealth"]["caseId"] = json!(drill_id);
    let drill = serde_json::to_vec(&drill).unwrap();
    let case_url = format!("{url}/api/v1/desks/{}/case", text(&integration["desk"]));
    let runtime = tokio::runtime::Handle::current();
    let mut held = case_id.clone();
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("case.mjs"), &env, |command| {
            let (request, expected) = match command {
                "CASE" => (
                    regulation
                        .post(&case_url)
                        .header("content-type", "application/json")
                        .body(case.clone()),
                    201,
                ),
                "RESEND" => (
                    regulation
                        .post(&case_url)
                        .header("content-type", "application/json")
                        .body(corrected.clone()),
                    201,
                ),
                "REVISE" => (
                    regulation
                        .post(&case_url)
                        .header("content-type", "application/json")
                        .body(revised.clone()),
                    201,
                ),
                "EXERCISE" => {
                    held.clone_from(&drill_id);
                    (
                        regulation
                            .post(&case_url)
                            .header("content-type", "application/json")
                            .body(drill.clone()),
                        201,
                    )
                }
                "LATE_CASE" => {
                    held.clone_from(&late_id);
                    (
                        regulation
                            .post(&case_url)
                            .header("content-type", "application/json")
                            .body(late.clone()),
                        201,
                    )
                }
                "CLOSE" => (regulation.delete(format!("{case_url}?case_id={held}")), 204),
                _ => return false,
            };
            let answer = runtime.block_on(request.send()).unwrap();
            assert_eq!(answer.status(), expected, "{command}");
            true
        })
    });
    assert_case_path_on_the_record(&result, &dir.path().join("gateway.toml"), &case_id);
    let _ = demo.kill();
    let _ = demo.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn compliance_officers_review_accesses_in_their_own_view() {
    use samu_gateway::audit::{
        AccessMode, Actor, CallContext, Event, EventKind, Outcome, PatientRef,
    };
    let actor = Some(Actor {
        id_nat: Some("810002813839".into()),
        name: Some("Jeanne URGENTISTE".into()),
        desk: Some("desk-a".into()),
        ..Actor::default()
    });
    let mut events = vec![Event {
        actor: actor.clone(),
        ..Event::new(EventKind::UserLogin, Outcome::Success)
    }];
    for n in 1..=2 {
        events.push(Event {
            actor: actor.clone(),
            patient: Some(PatientRef {
                ins: nir(n),
                oid: "1.2.250.1.213.1.4.10".into(),
            }),
            call: Some(CallContext {
                call_id: format!("CRRA-{n}"),
                reason_code: Some("inconscient".into()),
                justification: None,
            }),
            access_mode: Some(AccessMode::BrisDeGlace),
            ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
        });
    }
    // The trail was restored from a backup once (taken after those records): the page says
    // so, since the records written between the backup and the restore are not there.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    support::write_trail(dir.path(), &pki.audit_key, events);
    let config = write_config(
        dir.path(),
        &pki,
        "",
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n",
    );
    let backup = dir.path().join("trail.backup");
    let backup_arg = backup.to_str().unwrap();
    for step in [
        ["audit", "backup", "--output", backup_arg],
        ["audit", "restore", "--input", backup_arg],
    ] {
        let (code, stdout, stderr) = support::run(&config, &step, &[]);
        assert_eq!(code, 0, "{step:?}: {stdout}{stderr}");
    }
    let gateway = Gateway::launch(dir, pki, config, &[]);
    let export = gateway.dir.path().join("downloaded.jsonl");
    let env = script_env(
        &gateway,
        support::UNMAPPED,
        vec![("EXPORT", export.display().to_string())],
    );
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("compliance.mjs"), &env, |_| false)
    });
    assert_eq!(result["left"], 1);
    let (code, out, err) = support::run(
        &gateway.config,
        &["audit", "verify", "--file", export.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "the downloaded export verifies: {out}{err}");
    let (_, listed, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "access_reviewed", "--json"],
        &[],
    );
    assert!(listed.contains("\"decision\":\"justified\""), "{listed}");
}

/// Runs `script` against `samu-gateway demo` in a fresh directory, once its manifest is
/// written, with the demo's URL, PIN and sample patients in its environment.
fn run_on_demo(script: &str) -> Value {
    let (mut demo, _dir, env) = start_demo();
    let result = run_script(&browser_dir().join(script), &env, |_| false);
    let _ = demo.kill();
    let _ = demo.wait();
    result
}

/// The demo process, its directory, and the scenarios' environment (URL, PIN, patients).
fn start_demo() -> (
    std::process::Child,
    tempfile::TempDir,
    Vec<(&'static str, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let demo = Command::new(support::BIN)
        .args(["demo", "--port", "0", "--dir"])
        .arg(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let manifest = dir.path().join("demo.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !manifest.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "demo.json never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let env = vec![
        ("URL", format!("{}/", manifest["url"].as_str().unwrap())),
        ("PIN", manifest["card"]["pin"].as_str().unwrap().to_owned()),
        (
            "INS",
            manifest["patients"][0]["ins"].as_str().unwrap().to_owned(),
        ),
        (
            "INS_NONE_KNOWN",
            manifest["patients"][1]["ins"].as_str().unwrap().to_owned(),
        ),
        (
            "INS_NOT_RECORDED",
            manifest["patients"][3]["ins"].as_str().unwrap().to_owned(),
        ),
    ];
    (demo, dir, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_url_works_in_a_browser_on_the_same_machine_without_a_certificate() {
    let result = tokio::task::block_in_place(|| run_on_demo("demo.mjs"));
    assert!(
        result["banner"].as_str().unwrap().contains("Démonstration"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_works_in_firefox_too() {
    let result = tokio::task::block_in_place(|| run_on_demo("firefox.mjs"));
    assert!(
        result["userAgent"].as_str().unwrap().contains("firefox"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn defective_documents_show_their_state_in_the_block_concerned() {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let bundles = tempfile::tempdir().unwrap();
    let dir = bundles.path();
    let conflict = own_bundle(
        dir,
        "duplicate-fullurl-none-known-then-penicillin.json",
        21,
        |b| {
            let section = &mut b["entry"][0]["resource"]["section"][0]["entry"];
            section
                .as_array_mut()
                .unwrap()
                .push(json!({"reference": "AllergyIntolerance/missing"}));
        },
    );
    let mut patients = vec![patient("d1", 21, &conflict)];
    for (serial, name) in [
        (22, "family-members-as-extra-patients.json"),
        (23, "none-known-listed-allergy-unlisted.json"),
        (24, "versioned-references.json"),
        (25, "none-known-and-no-information.json"),
    ] {
        let bundle = own_bundle(dir, name, serial, |_| {});
        patients.push(patient(&format!("d{}", serial - 20), serial, &bundle));
    }
    // A document naming no INS of its patient (only its record ties it to the patient),
    // with entries whose status must show: a provisional diagnosis, a stopped procedure,
    // an order not to give a product.
    let no_ins_dir = tempfile::tempdir().unwrap();
    let no_ins = own_bundle(no_ins_dir.path(), "versioned-references.json", 26, |b| {
        let entries = b["entry"].as_array_mut().unwrap();
        for entry in entries.iter_mut() {
            if entry["fullUrl"] == "urn:uuid:patient-1" {
                entry["resource"]
                    .as_object_mut()
                    .unwrap()
                    .remove("identifier");
            }
        }
        let subject = json!({"reference": "urn:uuid:patient-1"});
        entries.push(json!({"fullUrl": "urn:uuid:provisional", "resource": {
            "resourceType": "Condition", "id": "provisional", "subject": subject,
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "provisional"}]},
            "code": {"text": "Embolie pulmonaire"}}}));
        entries.push(json!({"fullUrl": "urn:uuid:procedure", "resource": {
            "resourceType": "Procedure", "id": "procedure", "status": "stopped",
            "subject": subject, "code": {"text": "Chimiothérapie"}}}));
        entries.push(json!({"fullUrl": "urn:uuid:order", "resource": {
            "resourceType": "MedicationRequest", "id": "order", "status": "active",
            "intent": "order", "doNotPerform": true, "subject": subject,
            "medicationCodeableConcept": {"text": "Amoxicilline"}}}));
        let sections = entries[0]["resource"]["section"].as_array_mut().unwrap();
        for section in sections.iter_mut() {
            match section["code"]["coding"][0]["code"].as_str() {
                Some("11450-4") => section["entry"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"reference": "urn:uuid:provisional"})),
                Some("10160-0") => {
                    let section = section.as_object_mut().unwrap();
                    section.remove("emptyReason");
                    section.insert("entry".into(), json!([{"reference": "urn:uuid:order"}]));
                }
                _ => {}
            }
        }
        sections.push(json!({"title": "Actes", "code": {"coding": [{"system": "http://loinc.org", "code": "47519-4"}]},
            "entry": [{"reference": "urn:uuid:procedure"}]}));
    });
    patients.push(patient("d6", 26, &no_ins));
    let upstream = DevUpstream::start(patients);
    let gateway = centre_gateway(&pcscd, &card, &upstream, "");
    let env = script_env(
        &gateway,
        DESK_A,
        vec![
            ("CONFLICT_INS", nir(21)),
            ("FAMILY_INS", nir(22)),
            ("UNLISTED_INS", nir(23)),
            ("VERSIONED_INS", nir(24)),
            ("CONTRADICTION_INS", nir(25)),
            ("NO_INS_INS", nir(26)),
        ],
    );
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("defects.mjs"), &env, |_| false)
    });
    assert!(
        result["conflict"]
            .as_str()
            .unwrap()
            .contains("Penicillin allergy"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_drops_a_late_answer_hides_the_summary_without_its_event_stream_and_finds_a_restarted_gateway()
 {
    let pcscd = Pcscd::start(1);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let card_dir = card.dir.clone();
    let upstream = DevUpstream::start(vec![patient(
        "p1",
        1,
        &fixture("penicillin-allergy-high-criticality.json"),
    )]);
    let mut gateway = centre_gateway(&pcscd, &card, &upstream, "");
    let env = script_env(&gateway, DESK_A, vec![("INS", nir(1))]);
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("stream.mjs"), &env, |command| {
            match command {
                "SLOW_UPSTREAM" => {
                    runtime.block_on(upstream.fault(json!({"kind": "latency", "ms": 1500})))
                }
                "FAST_UPSTREAM" => runtime.block_on(upstream.fault(json!({"kind": "none"}))),
                "REMOVE" => card.remove(),
                "REMOVE_DURING_ACCESS" => {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while calls_records(&gateway.config, "break_glass_started", "CRRA-2026-000043")
                        .is_empty()
                    {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the access never started"
                        );
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    card.remove();
                }
                "INSERT" => card = VirtualCard::insert_from(&pcscd, 0, &card_dir, &[]),
                "GATEWAY_DOWN" => gateway.terminate(),
                // Its connections stay open and say nothing more.
                "GATEWAY_FREEZE" => support::signal(gateway.pid(), "STOP"),
                "GATEWAY_THAW" => support::signal(gateway.pid(), "CONT"),
                // Started again on the same ports and state: a new process, with a new
                // CSRF key, that the page must find again on its own.
                "GATEWAY_UP" => {
                    gateway.wait(std::time::Duration::from_secs(30));
                    let listen = gateway.listen_env();
                    let reader = pcscd.env();
                    let env: Vec<(&str, &str)> = listen
                        .iter()
                        .chain([&reader])
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect();
                    gateway.crash_and_restart(&env);
                }
                _ => return false,
            }
            true
        })
    });
    assert_eq!(result["lateAnswerDropped"], true, "{result}");
    assert!(result["hiddenMs"].as_u64().unwrap() < 5000, "{result}");
    assert_eq!(result["shownAfterRestart"], true, "{result}");
    assert_eq!(result["olderDeskAnswerDropped"], true, "{result}");
    assert!(
        result["hiddenAfterRestartMs"].as_u64().unwrap() < 5000,
        "{result}"
    );
    // Within the page's 25 s of silence (plus the last beat's 10 s at most).
    assert!(
        result["hiddenWhenSilentMs"].as_u64().unwrap() < 36_000,
        "{result}"
    );
    // The trail is read with the gateway stopped.
    gateway.terminate();
    gateway.wait(std::time::Duration::from_secs(30));
    // The late answer's access (call 000043) was opened on the record and closed there,
    // and its read released nothing: the card was pulled while it was under way.
    let stopped = calls_records(&gateway.config, "break_glass_stopped", "CRRA-2026-000043");
    assert_eq!(
        calls_records(&gateway.config, "break_glass_started", "CRRA-2026-000043").len(),
        1
    );
    assert_eq!(
        stopped.len(),
        1,
        "the dropped access is closed on the record"
    );
    let reads = calls_records(&gateway.config, "patient_record_read", "CRRA-2026-000043");
    assert!(
        reads.len() == 1 && !reads[0].contains("\"status\":\"success\""),
        "the dropped access released its read: {reads:?}"
    );
    // The access masked while the gateway was silent is ended by the page once the link is
    // back, not left open until the stop (before: `ended: gateway_stopped`).
    assert_eq!(result["linkBack"], true, "{result}");
    let (_, stopped, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "break_glass_stopped", "--json"],
        &[],
    );
    let masked: Vec<&str> = stopped
        .lines()
        .filter(|l| l.contains("CRRA-2026-000046"))
        .collect();
    assert!(
        masked.len() == 1 && masked[0].contains("\"ended: closed\""),
        "{masked:?}"
    );
}

/// The trail's `kind` records of call `call`, as JSON lines.
fn calls_records(config: &Path, kind: &str, call: &str) -> Vec<String> {
    let (_, lines, _) = support::run(
        config,
        &["audit", "list", "--json", "--kind", kind, "--call", call],
        &[],
    );
    lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A gateway that refuses test identifiers offers none, and the record service answers a
/// search with a patient under one: choosing them must not fill the INS in under a type
/// the desk offers (an identifier sent under another type names someone else, or no one).
#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_under_an_identifier_type_the_desk_does_not_offer_is_not_filled_in() {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let upstream = DevUpstream::start(vec![patient(
        "p1",
        1,
        &fixture("penicillin-allergy-high-criticality.json"),
    )]);
    let section = upstream.toml_section();
    assert!(section.contains("accept_test_ins = true"), "{section}");
    let refusing = section.replace("accept_test_ins = true", "accept_test_ins = false");
    let gateway = centre_gateway_on(&pcscd, &card, &refusing, "");
    let env = script_env(&gateway, DESK_A, vec![("FAMILY", family(1))]);
    let result =
        tokio::task::block_in_place(|| run_script(&browser_dir().join("oid.mjs"), &env, |_| false));
    assert_eq!(result["refused"], true, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_pad_desk_asks_for_the_code_on_the_reader_without_a_field() {
    let pcscd = Pcscd::start(2);
    let card = VirtualCard::insert(&pcscd, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Appended to the last desk's table (desk B), then the card trust.
    let extra = format!(
        "pin_entry = \"pinpad\"\n\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let env = script_env(&gateway, support::DESK_B, vec![]);
    let result = tokio::task::block_in_place(|| {
        run_script(&browser_dir().join("pinpad.mjs"), &env, |_| false)
    });
    assert!(
        result["message"].as_str().unwrap().contains("lecteur"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cda_documents_and_a_level_1_pdf_reach_the_page() {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let documents = tempfile::tempdir().unwrap();
    let dir = documents.path();
    let patients = [
        (31, "ips-fr-allergy-treatment-problem.xml"),
        (32, "hr-reimbursement-history.xml"),
        (33, "level-1-pdf.xml"),
        (34, "level-1-text.xml"),
    ]
    .iter()
    .map(|(serial, name)| patient(&format!("c{serial}"), *serial, &own_cda(dir, name, *serial)))
    .collect::<Vec<_>>();
    // The IPS-FR again, its points of vigilance a text too long to keep whole, an allergy
    // at its end.
    let long = dir.join("long-text.xml");
    // Its own folder: the IPS-FR of serial 31 keeps its name.
    let copy = dir.join("long");
    std::fs::create_dir(&copy).unwrap();
    let fixture =
        std::fs::read_to_string(own_cda(&copy, "ips-fr-allergy-treatment-problem.xml", 35))
            .unwrap();
    let text = format!(
        "<text><paragraph>{}</paragraph><paragraph>Allergie au latex</paragraph></text>",
        "Antécédent ancien sans suite. ".repeat(1_000)
    );
    let document = fixture.replacen("<text>Patiente sous anticoagulant</text>", &text, 1);
    assert_ne!(document, fixture, "the fixture's vigilance text moved");
    std::fs::write(&long, document).unwrap();
    let mut patients = patients;
    patients.push(patient("c35", 35, &long));
    let upstream = DevUpstream::start(patients);
    let gateway = centre_gateway(&pcscd, &card, &upstream, "");
    let env = script_env(
        &gateway,
        DESK_A,
        vec![
            ("CDA_INS", nir(31)),
            ("HR_INS", nir(32)),
            ("PDF_INS", nir(33)),
            ("TEXT_INS", nir(34)),
            ("LONG_INS", nir(35)),
        ],
    );
    let result =
        tokio::task::block_in_place(|| run_script(&browser_dir().join("cda.mjs"), &env, |_| false));
    assert_eq!(result["pdf"]["status"], 200, "{result}");
    // Each release of the PDF is on the trail, like the summaries.
    let (_, trail, _) = support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_record_read"],
        &[],
    );
    let pdf_reads = trail
        .lines()
        .filter(|l| l.contains("document=application/pdf") && l.contains(&nir(33)))
        .count();
    assert_eq!(pdf_reads, 2, "the tab and the fetch: {trail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_on_the_dmp_path_lists_the_record_documents_and_opens_the_others() {
    use support::dmp::{DevDmp, INS, cda, dmp_gateway, patients};
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let documents = tempfile::tempdir().unwrap();
    // Beside the summary's sources, a discharge letter and an older one held as a PDF:
    // listed, not used, opened from the page.
    let mut patients = patients();
    let listed = patients[0]["documents"].as_array_mut().unwrap();
    // The reimbursement history names no INS: its dispensations are the patient's by the
    // record's filing alone, which the page says in their block.
    let history = documents.path().join("history-without-ins.xml");
    let source = std::fs::read_to_string(cda("hr-reimbursement-history.xml")).unwrap();
    let ins_id = format!("<id root=\"1.2.250.1.213.1.4.10\" extension=\"{INS}\"/>");
    assert!(source.contains(&ins_id));
    // A dispensation written at 23:15 UTC on the 11th: the 12th in Paris.
    let late = "<time value=\"20261012\"/>";
    assert!(source.contains(late));
    std::fs::write(
        &history,
        source
            .replace(&ins_id, "")
            .replace(late, "<time value=\"20261011231500+0000\"/>"),
    )
    .unwrap();
    for document in listed.iter_mut() {
        if document["type_code"] == "REMB" {
            document["file"] = json!(history);
        }
    }
    listed.push(json!({"file": cda("ldl-ses-discharge.xml"), "unique_id": "1.2.250.1.999.1.4",
        "type_code": "11490-0", "type_scheme": "2.16.840.1.113883.6.1", "format_code": "urn:hl7-org:sdwg:ldl-ses:2019",
        "creation_time": "20261118233000", "title": "Lettre de liaison de sortie", "author": "Hugo CARDIOLOGUE"}));
    listed.push(json!({"file": cda("level-1-pdf.xml"), "unique_id": "1.2.250.1.999.1.5",
        "type_code": "11490-0", "type_scheme": "2.16.840.1.113883.6.1", "format_code": "urn:ihe:iti:xds-sd:pdf:2008",
        "creation_time": "20240101120000", "title": "Lettre de liaison (scannée)"}));
    let dmp = DevDmp::start(
        patients,
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
    );
    let gateway = dmp_gateway(&pcscd, &card, &dmp);
    let env = script_env(&gateway, DESK_A, vec![("INS", INS.to_owned())]);
    let result =
        tokio::task::block_in_place(|| run_script(&browser_dir().join("dmp.mjs"), &env, |_| false));
    assert!(
        result["documents"]
            .as_str()
            .unwrap()
            .contains("source de cette synthèse"),
        "{result}"
    );
    // Each opening is a read of the record naming the document, before it was shown:
    // the letter, the scanned letter's listing, then its PDF in the tab, and again in the
    // tab a middle click opened.
    let (_, trail, _) = support::run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "patient_record_read"],
        &[],
    );
    let opened: Vec<&str> = trail
        .lines()
        .filter_map(|l| l.split("opened=").nth(1))
        .map(|rest| rest.split([' ', '"']).next().unwrap())
        .collect();
    assert_eq!(
        opened,
        [
            "1.2.250.1.999.1.4",
            "1.2.250.1.999.1.5",
            "1.2.250.1.999.1.5",
            "1.2.250.1.999.1.5"
        ],
        "{trail}"
    );
    assert!(
        trail.contains("document=application/pdf opened=1.2.250.1.999.1.5"),
        "{trail}"
    );
}
