//! Cards over the real PC/SC stack: a private pcscd, vsmartcard-vpcd readers, and the
//! virtual CPS card (`samu-gateway card emulate`) plugged into them.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::pcsc::{Pcscd, VirtualCard};

const READER: &str = "Desk0 00 00";

fn card(pcscd: &Pcscd, args: &[&str]) -> (i32, String, String) {
    let (key, value) = pcscd.env();
    let out = Command::new(support::BIN)
        .arg("card")
        .args(args)
        .env(key, value)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `card list` until `reader` shows (or no longer shows) a card.
fn wait_card(pcscd: &Pcscd, reader: &str, present: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, stdout, stderr) = card(pcscd, &["list"]);
        assert_eq!(code, 0, "{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(reader))
            .unwrap_or_default()
            .to_owned();
        if line.contains("card present") == present {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "card in {reader} never became present={present}:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readers_are_listed_and_insertion_and_removal_are_seen() {
    let pcscd = Pcscd::start(2);
    let (code, stdout, stderr) = card(&pcscd, &["list"]);
    assert_eq!(code, 0, "{stderr}");
    for reader in ["Desk0 00 00", "Desk0 00 01", "Desk1 00 00"] {
        assert!(stdout.contains(&format!("{reader}\tno card")), "{stdout}");
    }
    let inserted = VirtualCard::insert(&pcscd, 1, &[]);
    let line = wait_card(&pcscd, "Desk1 00 00", true);
    assert!(
        line.ends_with("ATR 3bac00402a001225006480000310009000"),
        "{line}"
    );
    assert!(
        wait_card(&pcscd, READER, false).contains("no card"),
        "the card went into the wrong reader"
    );
    drop(inserted);
    wait_card(&pcscd, "Desk1 00 00", false);
}

#[test]
fn probe_reads_whose_card_it_is_without_a_pin() {
    let pcscd = Pcscd::start(1);
    let inserted = VirtualCard::insert(
        &pcscd,
        0,
        &[
            "--id-nat",
            "810001234567",
            "--given-name",
            "Paul",
            "--surname",
            "SAMU",
        ],
    );
    wait_card(&pcscd, READER, true);
    let resets = |c: &VirtualCard| c.said.all().matches("card reset by the reader").count();
    let before = resets(&inserted);
    let (code, stdout, stderr) = card(&pcscd, &["probe", "--reader", READER]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("idNat (CN): 810001234567"), "{stdout}");
    assert!(stdout.contains("name:       Paul SAMU"), "{stdout}");
    assert!(stdout.contains("(valid now)"), "{stdout}");
    // A probe leaves the card as it was: a reset would end the verified PIN of a
    // physician's session on it. (The emulator says each reset as it happens.)
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(resets(&inserted), before, "{}", inserted.said.all());
}

#[test]
fn probe_shows_an_expired_certificate() {
    let pcscd = Pcscd::start(1);
    let _card = VirtualCard::insert(&pcscd, 0, &["--expired"]);
    wait_card(&pcscd, READER, true);
    let (code, stdout, stderr) = card(&pcscd, &["probe", "--reader", READER]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("NOT valid now"), "{stdout}");
}

#[test]
fn garbage_answers_are_a_clear_error_not_a_panic() {
    let pcscd = Pcscd::start(1);
    let _card = VirtualCard::insert(&pcscd, 0, &["--fault", "garbage"]);
    wait_card(&pcscd, READER, true);
    let (code, _, stderr) = card(&pcscd, &["probe", "--reader", READER]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("malformed card answer"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn probing_an_empty_or_unknown_reader_says_so() {
    let pcscd = Pcscd::start(1);
    let (code, _, stderr) = card(&pcscd, &["probe", "--reader", READER]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no card in reader 'Desk0 00 00'"),
        "{stderr}"
    );
    let (code, _, stderr) = card(&pcscd, &["probe", "--reader", "Nowhere 00 00"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Nowhere 00 00"), "{stderr}");
}

/// Several programs reading one card at once (three gateways here, as the benches run;
/// a gateway and `card probe` in a centre): every sequence (the reading at insertion, a
/// login, a signature) runs in a PC/SC transaction, so none sees its commands
/// interleaved with another's. Once each gateway has read the card, the three log in at
/// the same moment, one attempt each, then open an access at the same moment (each
/// signing its VIHF and TLS handshake with the card): every one succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn several_programs_reading_one_card_never_interleave_their_commands() {
    use support::dmp::{DevDmp, INS, TEST_OID, dmp_gateway, patients};
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &[]);
    let documents = tempfile::tempdir().unwrap();
    let dmp = DevDmp::start(
        patients(),
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
    );
    let gateways: Vec<_> = (0..3).map(|_| dmp_gateway(&pcscd, &card, &dmp)).collect();
    for gateway in &gateways {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, desk) = support::get_json(
                &gateway.client(Some(support::DESK_A)),
                &gateway.url("/api/v1/desk"),
            )
            .await;
            if desk["card"]["state"] == "present" {
                break;
            }
            assert!(Instant::now() < deadline, "the card was never read: {desk}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let logins = gateways.iter().map(|gateway| async move {
        let (status, body) = gateway
            .post_desk_a("/api/v1/session", None, &serde_json::json!({"pin": "1234"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    });
    let tokens = futures_util::future::join_all(logins).await;
    let request = serde_json::json!({
        "ins": INS,
        "ins_oid": TEST_OID,
        "call_id": "CRRA-2026-001818",
        "reason_code": "inconscient",
        "access_mode": "centre_15",
    });
    let accesses = gateways.iter().zip(&tokens).map(|(gateway, token)| {
        let request = &request;
        async move {
            let (status, body) = gateway
                .post_desk_a("/api/v1/break-glass", Some(token), request)
                .await;
            assert_eq!(status, 201, "{body}");
        }
    });
    futures_util::future::join_all(accesses).await;
}

/// `card probe` reads the card as the gateway is configured to (`[cards.profile]`): a
/// profile naming another certificate file fails the probe as it would fail logins.
/// Before, the probe read with the default profile and passed.
#[test]
fn probe_reads_the_card_with_the_configured_profile() {
    let pcscd = Pcscd::start(1);
    let inserted = VirtualCard::insert(&pcscd, 0, &[]);
    wait_card(&pcscd, READER, true);
    let dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(dir.path());
    let configured = |file: &str| {
        support::write_config(
            dir.path(),
            &pki,
            "",
            &format!(
                "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n\n[cards.profile]\ncertificate_file = \"{file}\"\n",
                inserted.dir.join("card-ca.pem").display(),
                inserted.dir.join("card-ca.crl").display()
            ),
        )
    };
    let (key, value) = pcscd.env();
    let env = [(key, value.as_str())];
    let probe = ["card", "probe", "--reader", READER];
    let (code, stdout, stderr) = support::run(&configured("D002"), &probe, &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = support::run(&configured("D00F"), &probe, &env);
    assert_eq!(code, 1, "{stdout}{stderr}");
}
