//! CPS cards through PKCS#11 (issue 19), against a real PKCS#11 module: SoftHSM2 with a
//! CPS-like token (the virtual card's two key pairs and certificates under the Cryptolib
//! CPS's labels), through the same code as a production module (the Cryptolib CPS, OpenSC):
//! the tools list and probe it without a PIN, sign a VIHF with its signature key after the
//! PIN (xmlsec1 verifies it with the signature certificate, not the authentication one),
//! and a missing or broken module is a clear error.

use std::path::Path;

use crate::support::dmp::{DMP_SECTION, xmlsec1_verifies};
use crate::support::softhsm::{PIN, SoftHsm, TOKEN, module};
use crate::support::{Pki, run, write_config};

#[test]
fn a_cps_like_token_is_listed_and_probed_without_a_pin() {
    let hsm = SoftHsm::with_card(None);
    let (key, value) = hsm.env();
    let env = [(key, value.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Pki::new(dir.path()), "", "");
    let module = module();
    let module = module.to_str().unwrap();

    let (code, out, err) = run(&config, &["card", "list", "--pkcs11-module", module], &env);
    assert_eq!(code, 0, "{err}");
    let slot = out
        .lines()
        .find(|l| l.contains(TOKEN))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        slot.starts_with("slot ") && slot.contains("model 'SoftHSM v2'"),
        "{slot}"
    );
    assert!(!slot.contains("BLOCKED"), "{slot}");

    // The holder, read through the module without a PIN: the token found by its label
    // (a software token's slot is not named after a reader, a Cryptolib slot is).
    let (code, out, err) = run(
        &config,
        &[
            "card",
            "probe",
            "--reader",
            "Desk0 00 00",
            "--pkcs11-module",
            module,
            "--token",
            TOKEN,
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("idNat (CN): 810002813839"), "{out}");
    assert!(
        out.contains("Jeanne URGENTISTE") && out.contains("valid now"),
        "{out}"
    );
    assert!(out.contains("signature:  certificate present"), "{out}");
    assert!(out.contains("typed at the workstation"), "{out}");

    // With `[cards] backend = "pkcs11"` in the configuration, the tools use its module and
    // the desks' token labels without being told.
    let configured = write_config(
        &dir.path().join("configured"),
        &Pki::new(&dir.path().join("configured")),
        "",
        &format!(
            "pkcs11_token = \"{TOKEN}\"\n\n[cards]\nbackend = \"pkcs11\"\npkcs11_module = \"{module}\"\n\n[cards.trust]\nanchors = [\"{0}\"]\ncrls = [\"{0}\"]\n",
            hsm.card_dir.join("card-ca.pem").display()
        ),
    );
    let (code, out, err) = run(&configured, &["card", "list"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(TOKEN), "{out}");
    let (code, out, err) = run(
        &configured,
        &["card", "probe", "--reader", "Desk1 00 00"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("idNat (CN): 810002813839"), "{out}");

    // No slot for that reader, no such module, a file that is not a module: each said.
    let (code, _, err) = run(
        &config,
        &[
            "card",
            "probe",
            "--reader",
            "Desk0 00 00",
            "--pkcs11-module",
            module,
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no slot for reader 'Desk0 00 00'"), "{err}");
    let (code, _, err) = run(
        &config,
        &[
            "card",
            "list",
            "--pkcs11-module",
            "/nonexistent/libcps3_pkcs11_lux.so",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no such module file"), "{err}");
    let not_a_module = dir.path().join("not-a-module.so");
    std::fs::write(&not_a_module, "garbage").unwrap();
    let (code, _, err) = run(
        &config,
        &[
            "card",
            "list",
            "--pkcs11-module",
            not_a_module.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot load"), "{err}");
}

/// `dmp vihf` signing with the token: the PIN from a file (never an argument), the
/// signature key's certificate in KeyInfo; xmlsec1 verifies it with that certificate and
/// not with the authentication one. A wrong PIN is refused and says so.
#[test]
fn dmp_vihf_signs_with_the_tokens_signature_key_after_its_pin() {
    let hsm = SoftHsm::with_card(None);
    let (key, value) = hsm.env();
    let env = [(key, value.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Pki::new(dir.path()), "", DMP_SECTION);
    let module = module();
    let vihf = |pin_file: &Path| {
        run(
            &config,
            &[
                "dmp",
                "vihf",
                "--ins",
                "180017500000134",
                "--ins-oid",
                "1.2.250.1.213.1.4.10",
                "--mode",
                "centre_15",
                "--professional",
                "810002813839",
                "--pkcs11-module",
                module.to_str().unwrap(),
                "--slot",
                TOKEN,
                "--pin-file",
                pin_file.to_str().unwrap(),
            ],
            &env,
        )
    };
    let secret = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        path
    };
    // A PIN file others can read is refused before the card is asked anything.
    let (code, _, err) = vihf(&secret("shared-pin", PIN, 0o644));
    assert_ne!(code, 0);
    assert!(err.contains("world-readable"), "{err}");
    let pin = secret("pin", &format!("{PIN}\n"), 0o600);
    let (code, assertion, err) = vihf(&pin);
    assert_eq!(code, 0, "{err}");
    let signed = dir.path().join("signed.xml");
    std::fs::write(&signed, &assertion).unwrap();
    let (ok, said) = xmlsec1_verifies(&signed, &hsm.card_dir.join("card-sign.pem"));
    assert!(ok, "{said}");
    let (ok, _) = xmlsec1_verifies(&signed, &hsm.card_dir.join("card.pem"));
    assert!(!ok, "signed with the authentication key");
    assert!(!err.contains(PIN) && !assertion.contains("1234\n"));

    let (code, out, err) = vihf(&secret("wrong-pin", "9999", 0o600));
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("wrong PIN"), "{err}");
    assert!(!err.contains("9999"), "{err}");
}

/// POSTs a login at `desk` with `pin`: (status, body).
async fn login(
    gateway: &crate::support::Gateway,
    desk: &str,
    pin: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = gateway
        .client(Some(desk))
        .post(gateway.url("/api/v1/session"))
        .json(&serde_json::json!({ "pin": pin }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// A gateway reaching desk B's card through `module` (its token found by its label:
/// SoftHSM2 does not name slots after readers), `desk` added to desk B, `more` appended
/// to its configuration (after `[cards]`), `env` beside pcscd's and the token's;
/// `configtest` passes first.
fn token_gateway(
    pcscd: &crate::support::pcsc::Pcscd,
    card_dir: &Path,
    hsm: &SoftHsm,
    module: &Path,
    (desk, more): (&str, &str),
    env: &[(&str, &str)],
) -> crate::support::Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let extra = format!(
        "pkcs11_token = \"{TOKEN}\"\n{desk}\n[cards]\nbackend = \"pkcs11\"\npkcs11_module = \"{}\"\n{more}\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n",
        module.display(),
        card_dir.join("card-ca.pem").display(),
        card_dir.join("card-ca.crl").display(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let (hsm_key, hsm_value) = hsm.env();
    let mut all = vec![(key, value.as_str()), (hsm_key, hsm_value.as_str())];
    all.extend_from_slice(env);
    let (code, _, err) = run(&config, &["configtest"], &all);
    assert_eq!(code, 0, "{err}");
    crate::support::Gateway::launch(dir, pki, config, &all)
}

/// Logs in at desk B with `pin` once the card is seen there: (status, body).
async fn first_login(
    gateway: &crate::support::Gateway,
    pin: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = login(gateway, crate::support::DESK_B, pin).await;
        if status != reqwest::StatusCode::CONFLICT {
            return (status, body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "card never seen: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The service with `[cards] backend = "pkcs11"`: the card's presence and removal seen
/// through real pcscd (the virtual card in a vpcd reader), its certificate, PIN and key
/// through the PKCS#11 module (SoftHSM2 holding the same card): a wrong PIN refused as
/// the token says, the right one opens the session, pulling the card ends it. A card the
/// module has no slot for (desk A's) is a clear refusal at that desk only.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_logs_in_through_the_module_and_a_pulled_card_ends_the_session() {
    use crate::support::DESK_B;
    use crate::support::pcsc::{Pcscd, VirtualCard};
    let pcscd = Pcscd::start(2);
    let mut card = VirtualCard::insert(&pcscd, 1, &[]);
    let _elsewhere = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813840"]);
    let hsm = SoftHsm::with_card(Some(&card.dir));
    let gateway = token_gateway(&pcscd, &card.dir, &hsm, &module(), ("", ""), &[]);

    // The card is seen (through pcscd), its holder read through the module; a wrong PIN
    // first (SoftHSM2 keeps no count: "wrong PIN" without tries).
    let (status, body) = first_login(&gateway, "9999").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "wrong_pin", "{body}");
    assert_eq!(body["message_fr"], "Code erroné.", "{body}");
    let (status, body) = login(&gateway, DESK_B, PIN).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    // Desk A's card: in its reader, but the module has no slot for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let desk_a = loop {
        let desk_a = crate::support::get_json(
            &gateway.client(Some(crate::support::DESK_A)),
            &gateway.url("/api/v1/desk"),
        )
        .await
        .1;
        if desk_a["card"]["state"] != "no_card" {
            break desk_a;
        }
        assert!(std::time::Instant::now() < deadline, "{desk_a}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(desk_a["card"]["state"], "refused", "{desk_a}");
    assert_eq!(desk_a["card"]["code"], "unreadable", "{desk_a}");
    let (status, body) = login(&gateway, crate::support::DESK_A, PIN).await;
    assert!(status.is_client_error(), "{status}: {body}");
    let session = gateway
        .client(Some(DESK_B))
        .get(gateway.url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), reqwest::StatusCode::OK);

    // The card leaves its reader: the session ends, as with APDUs.
    card.remove();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = gateway
            .client(Some(DESK_B))
            .get(gateway.url("/api/v1/session"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived the card"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The DMP path with the card reached through PKCS#11: each VIHF signed by the token's
/// signature key (xmlsec1 verifies what dev-dmp received with the signature
/// certificate), the TLS connection authenticated by its authentication key (dev-dmp
/// checks the holder and counts the connection under the card's idNat), and the
/// activity sector the card's practice situation at the centre's structure gives (SA07
/// here, the configuration's default being SA01; another structure's is not used), and
/// the specialty the card gives (SM59, the configuration's being SM26).
#[tokio::test(flavor = "multi_thread")]
async fn break_glass_over_the_dmp_signed_through_the_module() {
    break_glass_through_the_module("").await;
}

/// The same with a CPS4's scheme: the authentication key signs RSA-PSS (the login's
/// proof of possession, the TLS 1.2 handshake as `rsa_pss_rsae_sha256`); the VIHF stays
/// PKCS#1 v1.5 with the signature key.
#[tokio::test(flavor = "multi_thread")]
async fn break_glass_over_the_dmp_with_a_pss_authentication_key() {
    break_glass_through_the_module("\n[cards.profile]\nsignature = \"pss_sha256\"\n").await;
}

async fn break_glass_through_the_module(profile: &str) {
    use crate::support::DESK_B;
    use crate::support::dmp::{DevDmp, INS, TEST_OID, patients};
    use crate::support::pcsc::{Pcscd, VirtualCard};
    let pcscd = Pcscd::start(2);
    let card = VirtualCard::insert(&pcscd, 1, &["--id-nat", "810002813839"]);
    let hsm = SoftHsm::with_card_and(
        Some(&card.dir),
        &[
            "--activity",
            "9990000001:SA05:Cabinet ailleurs",
            "--activity",
            "1750000000:SA07:SAMU de test",
            "--specialty",
            "SM59",
        ],
    );
    let documents = tempfile::tempdir().unwrap();
    let dmp = DevDmp::start(
        patients(),
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
    );
    let dmp_section = format!(
        "{profile}\n[upstream]\nprotocol = \"dmp\"\naccept_test_ins = true\n\n[dmp]\nbase_url = \"{}\"\nserver_ca = \"{}\"\nspecialty = \"SM26\"\nhomologation_number = \"TEST-HOMOLOGATION-1\"\n",
        dmp.url,
        dmp.ca.display(),
    );
    let gateway = token_gateway(&pcscd, &card.dir, &hsm, &module(), ("", &dmp_section), &[]);
    let (status, body) = first_login(&gateway, PIN).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let answer = gateway
        .client(Some(DESK_B))
        .post(gateway.url("/api/v1/break-glass"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "ins": INS, "ins_oid": TEST_OID, "call_id": "CRRA-2026-001818",
            "reason_code": "inconscient", "access_mode": "centre_15",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body["summary"]["allergies"]["items"][0]["substance"],
        "Pénicilline"
    );
    assert!(dmp.connections_of("810002813839").await >= 1);
    let recorded: Vec<_> = std::fs::read_dir(dmp.dir.join("requests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recorded.len(), 3);
    for request in recorded {
        let text = std::fs::read_to_string(&request).unwrap();
        let (ok, said) = crate::support::dmp::xmlsec1_verifies_recorded(
            &request,
            &hsm.card_dir.join("card-sign.pem"),
        );
        assert!(ok, "{said}");
        assert!(text.contains(">SA07^1.2.250.1.71.4.2.4<"), "{text}");
        // The card's specialty, not the configuration's SM26.
        assert!(
            text.contains("code=\"SM59\"") && !text.contains("code=\"SM26\""),
            "{text}"
        );
    }
}

/// What a lockout-module gateway needs kept alive.
type LockoutParts = (
    crate::support::pcsc::Pcscd,
    crate::support::pcsc::VirtualCard,
    SoftHsm,
);

/// A gateway reaching desk B's card (the virtual card in a vpcd reader, the same card in
/// SoftHSM2) through the lockout module, `desk` added to desk B, `env` added.
fn lockout_gateway(desk: &str, env: &[(&str, &str)]) -> (LockoutParts, crate::support::Gateway) {
    use crate::support::pcsc::{Pcscd, VirtualCard};
    use crate::support::softhsm::{lockout_env, lockout_module};
    let pcscd = Pcscd::start(2);
    let card = VirtualCard::insert(&pcscd, 1, &[]);
    let hsm = SoftHsm::with_card(Some(&card.dir));
    let (key, value) = lockout_env();
    let mut all = vec![(key, value.as_str())];
    all.extend_from_slice(env);
    let gateway = token_gateway(&pcscd, &card.dir, &hsm, &lockout_module(), (desk, ""), &all);
    ((pcscd, card, hsm), gateway)
}

/// A token that blocks like a card (SoftHSM2 behind a module that counts wrong PINs as a
/// CPS does): the tries as the token reports them, then blocked; the right PIN no
/// longer opens a session, and the desk says the card is blocked.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_pins_count_down_as_the_token_reports_and_a_blocked_token_stays_blocked() {
    let (_parts, gateway) = lockout_gateway("", &[]);
    let (status, body) = first_login(&gateway, "9999").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["message_fr"], "Code erroné.", "{body}");
    let (status, body) = login(&gateway, crate::support::DESK_B, "9998").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("dernier essai"),
        "{body}"
    );
    // The last try is spent only when the physician confirms it, as with APDUs.
    let (status, body) = login(&gateway, crate::support::DESK_B, "9997").await;
    assert_eq!(status, reqwest::StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert_eq!(body["error"], "last_try_unconfirmed", "{body}");
    let response = gateway
        .client(Some(crate::support::DESK_B))
        .post(gateway.url("/api/v1/session"))
        .json(&serde_json::json!({ "pin": "9997", "last_try_confirmed": true }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::LOCKED, "{body}");
    assert_eq!(body["error"], "pin_blocked", "{body}");
    let (status, body) = login(&gateway, crate::support::DESK_B, PIN).await;
    assert_eq!(status, reqwest::StatusCode::LOCKED, "{body}");
    let desk = crate::support::get_json(
        &gateway.client(Some(crate::support::DESK_B)),
        &gateway.url("/api/v1/desk"),
    )
    .await
    .1;
    assert_eq!(desk["card"]["pin_blocked"], true, "{desk}");
    // The audit trail has each refusal with what the token said.
    let (_, trail, _) = run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "user_login"],
        &[],
    );
    assert!(trail.contains("tries_left=1"), "{trail}");
    assert!(trail.contains("pin_blocked"), "{trail}");
}

/// The desk's count of tries goes stale: a token that does not say its count after one
/// wrong PIN, then a wrong PIN that reaches it after the login's deadline. The card's own
/// count, read just before the next PIN, decides: no PIN reaches a card on its last try
/// unless the physician confirms, and the desk then says it is the last try. Before, the
/// third PIN went out unconfirmed and blocked the card.
#[tokio::test(flavor = "multi_thread")]
async fn a_card_on_its_last_try_gets_no_unconfirmed_pin_however_stale_the_desk_count() {
    let (_parts, gateway) = lockout_gateway(
        "",
        &[
            ("PKCS11_LOCKOUT_SLOW_PIN", "9998"),
            ("SAMU_GATEWAY__CARDS__LOGIN_TIMEOUT_SECS", "2"),
        ],
    );
    let (status, body) = first_login(&gateway, "9999").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = login(&gateway, crate::support::DESK_B, "9998").await;
    assert_eq!(status, reqwest::StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "card_unresponsive", "{body}");
    let desk = || async {
        crate::support::get_json(
            &gateway.client(Some(crate::support::DESK_B)),
            &gateway.url("/api/v1/desk"),
        )
        .await
        .1
    };
    let before = desk().await;
    assert_ne!(before["card"]["pin_tries_left"], 1, "{before}");
    // Waits at the reader for the late login, which spends the card's second try.
    let (status, body) = login(&gateway, crate::support::DESK_B, "9997").await;
    assert_eq!(status, reqwest::StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert_eq!(body["error"], "last_try_unconfirmed", "{body}");
    let after = desk().await;
    assert_eq!(after["card"]["pin_tries_left"], 1, "{after}");
    assert_eq!(after["card"]["pin_blocked"], false, "{after}");
    // The card still has its last try: the right PIN, confirmed, opens the session.
    let response = gateway
        .client(Some(crate::support::DESK_B))
        .post(gateway.url("/api/v1/session"))
        .json(&serde_json::json!({ "pin": PIN, "last_try_confirmed": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let (_, trail, _) = run(
        &gateway.config,
        &["audit", "list", "--json", "--kind", "user_login"],
        &[],
    );
    assert!(trail.contains("last_try_unconfirmed"), "{trail}");
}

/// A token already logged in (another session of the process holding it): the gateway
/// logs it out and gives the PIN again, so a wrong PIN is refused and the right one
/// opens the session. Before, "already logged in" was taken as a login: any PIN opened
/// a session.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_already_logged_in_still_checks_the_pin() {
    let (_parts, gateway) = lockout_gateway("", &[("PKCS11_LOCKOUT_HELD", "1")]);
    let (status, body) = first_login(&gateway, "9999").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["message_fr"], "Code erroné.", "{body}");
    let (status, body) = login(&gateway, crate::support::DESK_B, PIN).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
}

/// A token that reads the PIN on the reader (protected authentication path), at a PIN-pad
/// desk: the login carries no PIN, the module asks the reader (here the lockout module's
/// stand-in keypad), and the session opens; no PIN crossed the gateway. A token that does
/// not read it there is said to have no keypad.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_reading_the_pin_on_the_reader_logs_in_without_a_pin_from_the_desk() {
    // A PIN-pad desk whose token does not read the PIN on its reader: said so, and no
    // login without a PIN is tried on it (what a module does then is its guess).
    {
        let (_parts, gateway) = lockout_gateway("pin_entry = \"pinpad\"\n", &[]);
        let (status, body) = pinpad_login(&gateway).await;
        assert!(
            body["message_fr"]
                .as_str()
                .unwrap_or("")
                .contains("clavier"),
            "{status} {body}"
        );
    }
    let (_parts, gateway) = lockout_gateway(
        "pin_entry = \"pinpad\"\n",
        &[("PKCS11_LOCKOUT_PINPAD", PIN)],
    );
    let (status, body) = pinpad_login(&gateway).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let desk = crate::support::get_json(
        &gateway.client(Some(crate::support::DESK_B)),
        &gateway.url("/api/v1/desk"),
    )
    .await
    .1;
    assert_eq!(desk["desk"]["pin_entry"], "pinpad", "{desk}");
    assert_eq!(desk["state"], "session_open", "{desk}");
}

/// A login without a PIN at desk B (a PIN-pad desk) once its card is seen there: (status,
/// body) of the first answer that is not "no card yet".
async fn pinpad_login(
    gateway: &crate::support::Gateway,
) -> (reqwest::StatusCode, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = gateway
            .client(Some(crate::support::DESK_B))
            .post(gateway.url("/api/v1/session"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status != reqwest::StatusCode::CONFLICT {
            return (status, body);
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
