//! Card login benchmark over the real PC/SC stack: `cargo bench --bench card` prints a
//! report. A private pcscd with a vsmartcard-vpcd reader, the virtual CPS card, and the
//! gateway (bench-profile binary) watching the reader; 50 rounds of:
//! - PIN submitted (`POST /api/v1/session`) → session open (201 received);
//! - card pulled (the virtual card's connection closed) → the desk shows no session.
//!
//! Needs pcscd and vsmartcard-vpcd (`bash .ci/deps`). `--quick` runs 5 rounds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::{DESK_A, Gateway, Pki, write_config};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn desk(gateway: &Gateway, client: &reqwest::Client) -> Value {
    support::get_json(client, &gateway.url("/api/v1/desk"))
        .await
        .1
}

fn main() {
    let rounds = if std::env::args().any(|a| a == "--quick") {
        5
    } else {
        50
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pcscd = Pcscd::start(1);
    let mut card = VirtualCard::insert(&pcscd, 0, &[]);
    let card_dir = card.dir.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let trust = format!(
        // 50 logins a minute on one desk: above the default PIN attempt limit, on purpose.
        "\n[cards]\npin_attempts_per_minute = 1000\n\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n",
        card_dir.join("card-ca.pem").display(),
        card_dir.join("card-ca.crl").display()
    );
    let config = write_config(dir.path(), &pki, "", &trust);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let client = gateway.client(Some(DESK_A));
    let (mut logins, mut removals) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 0..rounds {
            if round > 0 {
                card = VirtualCard::insert_from(&pcscd, 0, &card_dir, &[]);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while desk(&gateway, &client).await["card"]["state"] != "present" {
                assert!(Instant::now() < deadline, "card never present");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let submitted = Instant::now();
            let response = client
                .post(gateway.url("/api/v1/session"))
                .json(&json!({"pin": "1234"}))
                .send()
                .await
                .expect("login");
            assert_eq!(response.status(), 201);
            logins.push(submitted.elapsed());

            let pulled = Instant::now();
            card.remove();
            while desk(&gateway, &client).await["state"] != "no_session" {
                assert!(
                    pulled.elapsed() < Duration::from_secs(10),
                    "session outlived the card"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            removals.push(pulled.elapsed());
        }
    });
    logins.sort_unstable();
    removals.sort_unstable();
    println!(
        "# card login benchmark ({rounds} rounds, real pcscd + vsmartcard-vpcd + virtual CPS card, RSA-2048)"
    );
    println!("| measure | median | p95 | max |");
    println!("|---|---:|---:|---:|");
    for (what, values) in [
        ("PIN submitted → session open", &logins),
        ("card pulled → session ended", &removals),
    ] {
        println!(
            "| {what} | {} | {} | {} |",
            ms(percentile(values, 0.5)),
            ms(percentile(values, 0.95)),
            ms(values[values.len() - 1])
        );
    }
}
