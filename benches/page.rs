//! The physician's flow in a real browser, measured: `cargo bench --bench page` prints a
//! report. Debian's Chromium (Playwright, `tests/browser/measure.mjs`) on the gateway's
//! page, a private pcscd with the virtual card, the dev upstream over mutual TLS (one
//! patient per run, so every run asks it: no cache). 20 runs of: card inserted → PIN +
//! Enter → INS, call id, reason + Enter → allergies visible; then 20 runs with the desk
//! holding a case from the regulation software: card → PIN + Enter → reason, candidate,
//! Enter → allergies. Reports the user's actions and the system time (what the physician
//! waits for; typing excluded), median and p95.
//!
//! Needs `bash .ci/deps` (pcscd, vsmartcard-vpcd, chromium, playwright-core). `--quick`
//! runs 3.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::{DevUpstream, family, nir, patient};
use support::{DESK_A, Gateway, Pki, UNMAPPED, write_config};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `tests/browser/measure.mjs` for `runs` runs on `gateway` (the case's path when
/// `case_id` is given) and returns its samples.
fn measure(
    gateway: &Gateway,
    pcscd: &Pcscd,
    card_dir: &std::path::Path,
    patients: &[String],
    case_id: Option<&str>,
) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let desk = &gateway.pki.clients[DESK_A];
    let mut command = Command::new("node");
    command
        .arg(root.join("tests/browser/measure.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("GATEWAY", gateway.url("").trim_end_matches('/'))
        .env("CLIENT_CERT", &desk.cert)
        .env("CLIENT_KEY", &desk.key)
        .env("RUNS", patients.len().to_string())
        .env("INS_LIST", patients.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(case_id) = case_id {
        command.env("CASE_ID", case_id);
    }
    let mut child = command.spawn().expect("node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut card: Option<VirtualCard> = None;
    let mut samples = Value::Null;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("line");
        match line.as_str() {
            "INSERT" => card = Some(VirtualCard::insert_from(pcscd, 0, card_dir, &[])),
            "REMOVE" => {
                if let Some(mut card) = card.take() {
                    card.remove();
                }
            }
            other => {
                if let Some(json) = other.strip_prefix("RESULT ") {
                    samples = serde_json::from_str(json).expect("result");
                }
                continue;
            }
        }
        writeln!(stdin, "done").expect("answer");
    }
    assert!(child.wait().expect("node").success(), "the scenario failed");
    samples.as_array().expect("samples").clone()
}

/// Prints one path's figures.
fn report(title: &str, samples: &[Value], steps: &[(&str, &str)], actions_are: &str) {
    let sorted = |key: &str| {
        let mut values: Vec<f64> = samples.iter().filter_map(|s| s[key].as_f64()).collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let waited = sorted("waited");
    println!("\n## {title} ({} runs)\n", waited.len());
    println!("| measure | median | p95 | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| system time, card inserted → allergies visible (typing excluded) | {:.0} ms | {:.0} ms | {:.0} ms |",
        percentile(&waited, 0.5),
        percentile(&waited, 0.95),
        waited[waited.len() - 1]
    );
    for (key, what) in steps {
        let part = sorted(key);
        println!(
            "| … {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            percentile(&part, 0.5),
            percentile(&part, 0.95),
            part[part.len() - 1]
        );
    }
    for (key, what) in [
        ("actions", actions_are),
        ("keys", "keys pressed or fields typed"),
    ] {
        let values = sorted(key);
        println!(
            "| {what} | {} | {} | {} |",
            percentile(&values, 0.5),
            percentile(&values, 0.95),
            values[values.len() - 1]
        );
    }
}

fn main() {
    let runs: u32 = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        20
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bundle = root.join("tests/fixtures/ips/penicillin-allergy-high-criticality.json");
    let upstream = DevUpstream::start(
        (1..=runs)
            .map(|n| patient(&format!("p{n}"), n, &bundle))
            .collect(),
    );
    let pcscd = Pcscd::start(1);
    // The card's files (key, certificate) are made by a first insertion, then reused.
    let card_dir = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"])
        .dir
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    // The integration certificate (the unmapped workstation's) sends the case.
    let extra = format!(
        "\n[cards]\npin_attempts_per_minute = 1000\n\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n[integration]\ncn = \"poste-x\"\n",
        card_dir.join("card-ca.pem").display(),
        card_dir.join("card-ca.crl").display(),
        upstream.toml_section(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let integration = gateway.client(Some(UNMAPPED));

    let patients: Vec<String> = (1..=runs).map(nir).collect();
    let manual = measure(&gateway, &pcscd, &card_dir, &patients, None);

    // The same, the desk holding a case whose patient is the first one (the record service
    // is asked every run: no cache).
    let case_id = "fr.health.samu690.DRFR156902612040100";
    let case = support::hub::one_patient_case(case_id, &family(1));
    let posted = runtime
        .block_on(async {
            integration
                .post(gateway.url("/api/v1/desks/desk-a/case"))
                .json(&case)
                .send()
                .await
        })
        .expect("case");
    assert_eq!(posted.status(), 201, "case");
    let by_case = measure(&gateway, &pcscd, &card_dir, &patients, Some(case_id));

    println!(
        "# physician's flow in Chromium (real pcscd + virtual CPS card, dev upstream over mutual TLS, no cache)"
    );
    report(
        "manual identification: card → PIN + Enter → INS, call id, reason + Enter → allergies",
        &manual,
        &[
            (
                "card",
                "card inserted → PIN field shown (pcscd, card read, certificate checked)",
            ),
            ("login", "PIN + Enter → identification form shown"),
            (
                "access",
                "form + Enter → allergies visible (record service asked)",
            ),
        ],
        "user actions before the allergies (insert card; PIN + Enter; identify: INS + call id; justify: reason + Enter)",
    );
    report(
        "a case from the regulation software: card → PIN + Enter → reason, candidate, Enter → allergies",
        &by_case,
        &[
            ("card", "card inserted → PIN field shown"),
            ("login", "PIN + Enter → identification form shown"),
            ("case", "form shown → the case shown"),
            (
                "candidates",
                "reason chosen → candidates shown (search by traits, record service asked)",
            ),
            (
                "access",
                "candidate chosen, Enter → allergies visible (record service asked)",
            ),
        ],
        "user actions before the allergies (insert card; PIN + Enter; justify and choose: reason + candidate + Enter)",
    );
}
