//! The physician's flow in a real browser, measured: `cargo bench --bench page` prints a
//! report. Debian's Chromium (Playwright, `tests/browser/measure.mjs`) on the gateway's
//! page, a private pcscd with the virtual card, the dev upstream over mutual TLS (one
//! patient per run, so every run asks it: no cache). 20 runs of: card inserted → PIN +
//! Enter → INS, call id, reason + Enter → allergies visible. Reports the user's actions and
//! the system time (what the physician waits for; typing excluded), median and p95.
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
use support::upstream::{DevUpstream, nir, patient};
use support::{DESK_A, Gateway, Pki, write_config};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
    let extra = format!(
        "\n[cards]\npin_attempts_per_minute = 1000\n\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n",
        card_dir.join("card-ca.pem").display(),
        card_dir.join("card-ca.crl").display(),
        upstream.toml_section(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let desk = &gateway.pki.clients[DESK_A];
    let patients: Vec<String> = (1..=runs).map(nir).collect();
    let mut child = Command::new("node")
        .arg(root.join("tests/browser/measure.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("GATEWAY", gateway.url("").trim_end_matches('/'))
        .env("CLIENT_CERT", &desk.cert)
        .env("CLIENT_KEY", &desk.key)
        .env("RUNS", runs.to_string())
        .env("INS_LIST", patients.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut card: Option<VirtualCard> = None;
    let mut samples = Value::Null;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("line");
        match line.as_str() {
            "INSERT" => card = Some(VirtualCard::insert_from(&pcscd, 0, &card_dir, &[])),
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
    let samples = samples.as_array().expect("samples");
    let mut waited: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["waited"].as_f64())
        .collect();
    waited.sort_by(f64::total_cmp);
    let mut actions: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["actions"].as_f64())
        .collect();
    actions.sort_by(f64::total_cmp);
    println!(
        "# physician's flow in Chromium ({} runs: real pcscd + virtual CPS card, dev upstream over mutual TLS, no cache)",
        waited.len()
    );
    println!("| measure | median | p95 | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| system time, card inserted → allergies visible (typing excluded) | {:.0} ms | {:.0} ms | {:.0} ms |",
        percentile(&waited, 0.5),
        percentile(&waited, 0.95),
        waited[waited.len() - 1]
    );
    for (key, what) in [
        (
            "card",
            "card inserted → PIN field shown (pcscd, card read, certificate checked)",
        ),
        ("login", "PIN + Enter → identification form shown"),
        (
            "access",
            "form + Enter → allergies visible (record service asked)",
        ),
    ] {
        let mut part: Vec<f64> = samples.iter().filter_map(|s| s[key].as_f64()).collect();
        part.sort_by(f64::total_cmp);
        println!(
            "| … {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            percentile(&part, 0.5),
            percentile(&part, 0.95),
            part[part.len() - 1]
        );
    }
    println!(
        "| user actions (insert card; PIN + Enter; INS + call id + reason + Enter; read) | {} | {} | {} |",
        percentile(&actions, 0.5),
        percentile(&actions, 0.95),
        actions[actions.len() - 1]
    );
}
