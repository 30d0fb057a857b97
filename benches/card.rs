//! Card login benchmark over the real PC/SC stack: `cargo bench --bench card` prints a
//! report. A private pcscd with a vsmartcard-vpcd reader, the virtual CPS card, and the
//! gateway (bench-profile binary) watching the reader; 50 rounds of:
//! - PIN submitted (`POST /api/v1/session`) → session open (201 received);
//! - card pulled (the virtual card's connection closed) → the desk shows no session.
//!
//! For both backends: APDUs, and PKCS#11 through SoftHSM2 holding the same card (the
//! card's presence still seen through pcscd).
//!
//! Needs pcscd, vsmartcard-vpcd and softhsm2 (`bash .ci/deps`). `--quick` runs 5 rounds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::softhsm::SoftHsm;
use support::{DESK_A, DESK_B, Gateway, Pki, write_config};

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

/// One backend's rounds: (PIN → session times, card pulled → session ended times).
fn measure(
    runtime: &tokio::runtime::Runtime,
    rounds: usize,
    pkcs11: bool,
) -> (Vec<Duration>, Vec<Duration>) {
    // PKCS#11 at desk B, whose token is found by its label (SoftHSM2 does not name slots
    // after readers); APDUs at desk A.
    let (desk_id, reader) = if pkcs11 { (DESK_B, 1) } else { (DESK_A, 0) };
    let pcscd = Pcscd::start(2);
    let mut card = VirtualCard::insert(&pcscd, reader, &[]);
    let card_dir = card.dir.clone();
    let hsm = pkcs11.then(|| SoftHsm::with_card(Some(&card_dir)));
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let backend = if pkcs11 {
        format!(
            "pkcs11_token = \"{}\"\n\n[cards]\nbackend = \"pkcs11\"\npkcs11_module = \"{}\"\n",
            support::softhsm::TOKEN,
            support::softhsm::module().display()
        )
    } else {
        "\n[cards]\n".to_owned()
    };
    let trust = format!(
        // 50 logins a minute on one desk: above the default PIN attempt limit, on purpose.
        "{backend}pin_attempts_per_minute = 1000\n\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n",
        card_dir.join("card-ca.pem").display(),
        card_dir.join("card-ca.crl").display()
    );
    let config = write_config(dir.path(), &pki, "", &trust);
    let (key, value) = pcscd.env();
    let mut env = vec![(key, value)];
    if let Some(hsm) = &hsm {
        let (key, value) = hsm.env();
        env.push((key, value));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = Gateway::launch(dir, pki, config, &env);
    let client = gateway.client(Some(desk_id));
    let (mut logins, mut removals) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 0..rounds {
            if round > 0 {
                card = VirtualCard::insert_from(&pcscd, reader, &card_dir, &[]);
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
    (logins, removals)
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
    let apdu = measure(&runtime, rounds, false);
    let pkcs11 = measure(&runtime, rounds, true);
    println!(
        "# card login benchmark ({rounds} rounds each, real pcscd + vsmartcard-vpcd + virtual CPS card, RSA-2048; PKCS#11: SoftHSM2 holding the same card)"
    );
    println!("| backend | measure | median | p95 | max |");
    println!("|---|---|---:|---:|---:|");
    for (backend, (logins, removals)) in [("apdu", &apdu), ("pkcs11", &pkcs11)] {
        for (what, values) in [
            ("PIN submitted → session open", logins),
            ("card pulled → session ended", removals),
        ] {
            println!(
                "| {backend} | {what} | {} | {} | {} |",
                ms(percentile(values, 0.5)),
                ms(percentile(values, 0.95)),
                ms(values[values.len() - 1])
            );
        }
    }
}
