//! Physician login with a CPS card over real PC/SC: a private pcscd with vpcd readers, the
//! virtual card, and the gateway watching the desk readers. Each scenario checks the API
//! answer and the audit record.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::{DESK_A, DESK_B, Gateway, Pki, write_config};

/// A gateway trusting `card`'s CA and CRL, on `pcscd`'s readers (desk-a: Desk0, desk-b: Desk1).
fn gateway(pcscd: &Pcscd, card: &VirtualCard, extra_trust: &str) -> Gateway {
    gateway_with_desk_b(pcscd, card, "", extra_trust)
}

/// The same, with `desk_b` appended to desk-b's settings.
fn gateway_with_desk_b(
    pcscd: &Pcscd,
    card: &VirtualCard,
    desk_b: &str,
    extra_trust: &str,
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cards = format!(
        "{desk_b}\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{extra_trust}\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display()
    );
    let config = write_config(dir.path(), &pki, "", &cards);
    let (key, value) = pcscd.env();
    Gateway::launch(dir, pki, config, &[(key, value.as_str())])
}

/// A desk (reader Desk0) holding a virtual card made with `emulate`, watched by a gateway
/// configured with `extra`, once the card's state on the desk is `state`.
async fn desk_with_card(
    emulate: &[&str],
    extra: &str,
    state: &str,
) -> (Pcscd, VirtualCard, Gateway) {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, emulate);
    let gateway = gateway(&pcscd, &card, extra);
    wait_card_state(&gateway, state).await;
    (pcscd, card, gateway)
}

async fn desk(gateway: &Gateway, who: &str) -> Value {
    support::get_json(&gateway.client(Some(who)), &gateway.url("/api/v1/desk"))
        .await
        .1
}

/// Polls desk-a until its card state is `state`.
async fn wait_card_state(gateway: &Gateway, state: &str) -> Value {
    wait_card_state_at(gateway, DESK_A, state).await
}

/// Polls `who`'s desk until its card state is `state`.
async fn wait_card_state_at(gateway: &Gateway, who: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = desk(gateway, who).await;
        if view["card"]["state"] == state {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "card state never became {state}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(gateway: &Gateway, who: &str, pin: &str) -> (StatusCode, Value) {
    let response = gateway
        .client(Some(who))
        .post(gateway.url("/api/v1/session"))
        .json(&json!({ "pin": pin }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// What `GET /api/v1/session` answers `who` presenting `token`.
async fn session_status(gateway: &Gateway, who: &str, token: &str) -> StatusCode {
    let request = gateway
        .client(Some(who))
        .get(gateway.url("/api/v1/session"))
        .bearer_auth(token);
    request.send().await.unwrap().status()
}

fn audit(gateway: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["audit", "list"];
    all.extend_from_slice(args);
    support::run(&gateway.config, &all, &[]).1
}

#[tokio::test(flavor = "multi_thread")]
async fn good_login_opens_a_session_bound_to_the_desk_and_removal_ends_it() {
    let pcscd = Pcscd::start(2);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let gateway = gateway(&pcscd, &card, "");
    let view = wait_card_state(&gateway, "present").await;
    assert_eq!(view["card"]["holder"]["id_nat"], "810002813839", "{view}");
    assert_eq!(view["state"], "no_session");

    let (status, session) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(session["professional"]["surname"], "URGENTISTE");
    assert_eq!(desk(&gateway, DESK_A).await["state"], "session_open");

    assert_eq!(
        session_status(&gateway, DESK_A, &token).await,
        StatusCode::OK
    );
    // The same token replayed from another desk's workstation is refused.
    assert_eq!(
        session_status(&gateway, DESK_B, &token).await,
        StatusCode::UNAUTHORIZED
    );

    // Pull the card: the session must end promptly.
    let pulled = Instant::now();
    card.remove();
    let deadline = pulled + Duration::from_secs(5);
    while desk(&gateway, DESK_A).await["state"] != "no_session" {
        assert!(Instant::now() < deadline, "the session outlived the card");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = pulled.elapsed();
    eprintln!("card removal to session end: {} ms", ended.as_millis());
    assert!(
        ended < Duration::from_millis(1500),
        "removal took {ended:?} (target 500 ms)"
    );
    assert_eq!(
        session_status(&gateway, DESK_A, &token).await,
        StatusCode::UNAUTHORIZED
    );

    // The records of the removal follow the session's end closely.
    let expected = [
        "card_inserted          success",
        "user_login             success",
        "card_removed",
        "user_logout",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trail = audit(&gateway, &["--desk", "desk-a"]);
        if expected.iter().all(|e| trail.contains(e)) {
            break;
        }
        assert!(Instant::now() < deadline, "records missing:\n{trail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A browser's login answers the session in an `HttpOnly` cookie only: the token is not in
/// the body, where the page's script could read it. Logging out expires the cookie.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_gets_its_session_token_only_in_the_cookie() {
    let (_pcscd, _card, gateway) = desk_with_card(&[], "", "present").await;
    let client = gateway.client(Some(DESK_A));
    let (_, csrf) = support::get_json(&client, &gateway.url("/api/v1/csrf-token")).await;
    let csrf = csrf["token"].as_str().unwrap().to_owned();
    let response = client
        .post(gateway.url("/api/v1/session"))
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &csrf)
        .json(&json!({ "pin": "1234" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let body: Value = response.json().await.unwrap();
    assert!(body.get("token").is_none(), "{body}");
    assert_eq!(body["professional"]["surname"], "URGENTISTE");
    let session = cookie.split(';').next().unwrap().to_owned();
    let current = client
        .get(gateway.url("/api/v1/session"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    let logout = client
        .delete(gateway.url("/api/v1/session"))
        .header("sec-fetch-site", "same-origin")
        .header("x-csrf-token", &csrf)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let expired = logout.headers()["set-cookie"].to_str().unwrap();
    assert!(expired.contains("Max-Age=0"), "{expired}");
}

/// The right PIN resets the card's counter: after a wrong PIN, a login and a logout, the
/// desk no longer counts the spent try (it would later ask to confirm a "last try" the card
/// does not have).
#[tokio::test(flavor = "multi_thread")]
async fn a_successful_login_forgets_the_tries_spent_before_it() {
    let (_pcscd, _card, gateway) = desk_with_card(&[], "", "present").await;
    let (status, _) = login(&gateway, DESK_A, "0000").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_tries_left"], 2);
    let (status, session) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let logout = gateway
        .client(Some(DESK_A))
        .delete(gateway.url("/api/v1/session"))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let view = desk(&gateway, DESK_A).await;
    assert_ne!(view["card"]["pin_tries_left"], 2, "{view}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_pins_show_tries_left_then_block_the_card() {
    let (_pcscd, _card, gateway) = desk_with_card(&[], "", "present").await;
    // Asked at insertion without spending a try, shown before any attempt.
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_tries_left"], 3);
    let (status, body) = login(&gateway, DESK_A, "0000").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "wrong_pin");
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_tries_left"], 2);
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("Il reste 2 essais"),
        "{body}"
    );
    let (_, body) = login(&gateway, DESK_A, "0000").await;
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("dernier essai"),
        "{body}"
    );
    // One try left: no PIN reaches the card unless the login confirms spending it, however
    // often a client retries.
    for _ in 0..3 {
        let (status, body) = login(&gateway, DESK_A, "0000").await;
        assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{body}");
        assert_eq!(body["error"], "last_try_unconfirmed");
    }
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_tries_left"], 1);
    let response = gateway
        .client(Some(DESK_A))
        .post(gateway.url("/api/v1/session"))
        .json(&json!({"pin": "0000", "last_try_confirmed": true}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("Carte bloquée"),
        "{body}"
    );
    // Blocked: even the right PIN is refused without asking the card again.
    let (status, _) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_blocked"], true);
    let trail = audit(&gateway, &["--kind", "user_login", "--outcome", "refused"]);
    assert!(
        trail.contains("reason=wrong_pin") && trail.contains("reason=pin_blocked"),
        "{trail}"
    );
    // Refusals before the card are on record too, a desk's repeats within a minute once:
    // the three unconfirmed last tries are one record, the blocked card's retry another.
    assert_eq!(
        trail.matches("reason=last_try_unconfirmed").count(),
        1,
        "{trail}"
    );
    assert_eq!(
        trail.matches("reason=pin_already_blocked").count(),
        1,
        "{trail}"
    );
}

/// A card the gateway must refuse at insertion, with the code the desk shows.
async fn refused_card(emulate: &[&str], trust: &str, code: &str) {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, emulate);
    let gateway = gateway(&pcscd, &card, trust);
    let view = wait_card_state(&gateway, "refused").await;
    assert_eq!(view["card"]["code"], code, "{view}");
    let (status, body) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let trail = audit(&gateway, &["--kind", "card_inserted"]);
    assert!(trail.contains(&format!("reason={code}")), "{trail}");
    // Whose card it was: its certificate's SHA-256 (before, the desk alone).
    let trail = audit(&gateway, &["--kind", "card_inserted", "--json"]);
    let digest = certificate_digest(&trail);
    assert_eq!(digest.len(), 64, "{trail}");
}

/// The hex after `certificate_sha256=` in `trail`.
fn certificate_digest(trail: &str) -> String {
    trail
        .split("certificate_sha256=")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_certificate_is_refused() {
    refused_card(&["--expired"], "", "expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_certificate_is_refused() {
    refused_card(&["--revoked"], "", "revoked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_crl_is_refused_under_the_refuse_policy() {
    refused_card(
        &["--crl-age-days", "5"],
        "crl_max_age_hours = 48\nstale_crl = \"refuse\"",
        "stale_crl",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_crl_is_accepted_and_flagged_under_the_flag_policy() {
    let (_pcscd, _card, gateway) = desk_with_card(
        &["--crl-age-days", "5"],
        "crl_max_age_hours = 48\nstale_crl = \"accept_and_flag\"",
        "present",
    )
    .await;
    let (status, session) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["crl_stale"], true);
    let trail = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "user_login", "--json"],
        &[],
    )
    .1;
    assert!(trail.contains("\"detail\":\"crl_stale\""), "{trail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn card_from_an_unknown_authority_is_refused() {
    let pcscd = Pcscd::start(2);
    let card = VirtualCard::insert(&pcscd, 0, &[]);
    // The gateway trusts another virtual card's CA, not this one's.
    let other = VirtualCard::insert(&pcscd, 1, &[]);
    let gateway = gateway(&pcscd, &other, "");
    let view = wait_card_state(&gateway, "refused").await;
    assert_eq!(view["card"]["code"], "unknown_issuer", "{view}");
    drop(card);
}

#[tokio::test(flavor = "multi_thread")]
async fn card_whose_signature_does_not_match_its_certificate_is_refused() {
    let (_pcscd, _card, gateway) = desk_with_card(&["--fault", "wrong-key"], "", "present").await;
    let (status, body) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "signature_mismatch");
    assert!(audit(&gateway, &["--kind", "user_login"]).contains("reason=signature_mismatch"));
}

async fn readiness(gateway: &Gateway) -> (StatusCode, Value) {
    support::get_json(&gateway.client(None), &gateway.management_url("/readyz")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pcscd_restart_ends_sessions_reports_unready_and_is_survived() {
    let (mut pcscd, _card, gateway) = desk_with_card(&[], "", "present").await;
    assert_eq!(login(&gateway, DESK_A, "1234").await.0, StatusCode::CREATED);
    assert_eq!(readiness(&gateway).await.0, StatusCode::OK);

    pcscd.stop();
    wait_card_state(&gateway, "reader_unavailable").await;
    assert_eq!(
        desk(&gateway, DESK_A).await["state"],
        "no_session",
        "card presence can no longer be vouched for"
    );
    let (status, body) = readiness(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "card_readers" && c["status"] == "failed"),
        "{body}"
    );

    pcscd.restart();
    // The gateway reconnects, and the virtual card reinserts itself into the new vpcd.
    wait_card_state(&gateway, "present").await;
    assert_eq!(readiness(&gateway).await.0, StatusCode::OK);
    assert_eq!(login(&gateway, DESK_A, "1234").await.0, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_cards_ends_the_old_session() {
    let pcscd = Pcscd::start(1);
    let mut first = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810000000001"]);
    let gateway = gateway(&pcscd, &first, "");
    wait_card_state(&gateway, "present").await;
    assert_eq!(login(&gateway, DESK_A, "1234").await.0, StatusCode::CREATED);
    first.remove();
    // Another professional's card, from an authority this gateway does not trust.
    let _second = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810000000002"]);
    let view = wait_card_state(&gateway, "refused").await;
    assert_eq!(view["state"], "no_session", "{view}");
    assert!(view["session"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_professional_on_duty_may_log_in_and_only_the_integration_certificate_sets_the_roster()
 {
    // The unmapped workstation certificate (CN poste-x) plays the regulation software.
    let (_pcscd, _card, gateway) = desk_with_card(
        &["--id-nat", "810002813839"],
        "\n[integration]\ncn = \"poste-x\"\n\n[roster]\ngrace_minutes = 15\n",
        "present",
    )
    .await;

    let (status, body) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "not_on_duty");
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("pas inscrit de garde"),
        "{body}"
    );
    assert!(audit(&gateway, &["--kind", "user_login"]).contains("reason=not_on_duty"));

    let now = time::OffsetDateTime::now_utc();
    let format = &time::format_description::well_known::Rfc3339;
    let shift = |from: i64, to: i64| {
        json!({"shifts": [{
            "id_nat": "810002813839",
            "start": (now + time::Duration::hours(from)).format(format).unwrap(),
            "end": (now + time::Duration::hours(to)).format(format).unwrap(),
        }]})
    };
    let put = |who: &'static str, body: Value| {
        let request = gateway
            .client(Some(who))
            .put(gateway.url("/api/v1/roster"))
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        put(DESK_A, shift(-1, 8)).await,
        StatusCode::FORBIDDEN,
        "a desk may not set the roster"
    );
    assert_eq!(
        put(
            support::UNMAPPED,
            json!({"shifts": [{"id_nat": "x", "start": "soon", "end": "later"}]})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(put(support::UNMAPPED, shift(-1, 8)).await, StatusCode::OK);

    // The refusal cost no PIN try: the right PIN now opens the session.
    let (status, body) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let loaded = audit(&gateway, &["--kind", "configuration_loaded", "--json"]);
    assert!(
        loaded.contains("roster replaced: 1 shift(s)") && loaded.contains("sha256:"),
        "{loaded}"
    );

    // A roster that would log the physician out mid-call (a partial export naming someone
    // else, or none at all) is refused, and the session stays; on purpose, it is taken.
    let someone_else = json!({"shifts": [{
        "id_nat": "899700000001",
        "start": (now - time::Duration::hours(1)).format(format).unwrap(),
        "end": (now + time::Duration::hours(8)).format(format).unwrap(),
    }]});
    let put_answer = |path: &'static str, body: Value| {
        let request = gateway
            .client(Some(support::UNMAPPED))
            .put(gateway.url(path))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put_answer("/api/v1/roster", someone_else.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "roster_ends_sessions");
    assert!(
        body["message_fr"].as_str().unwrap().contains("1 session"),
        "{body}"
    );
    let (status, body) = put_answer("/api/v1/roster", json!({"shifts": []})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "roster_empty");
    assert!(
        !desk(&gateway, DESK_A).await["session"].is_null(),
        "still open"
    );
    assert!(
        audit(&gateway, &["--kind", "configuration_loaded"])
            .contains("reason=roster_ends_sessions")
    );
    let (status, body) = put_answer("/api/v1/roster?force=true", someone_else).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(audit(&gateway, &["--kind", "configuration_loaded", "--json"]).contains("(forced)"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !desk(&gateway, DESK_A).await["session"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its forced roster"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profession_not_allowed_is_refused_before_any_pin_try() {
    // A nurse's card (profession code 60) at a gateway allowing physicians only.
    let (_pcscd, _card, gateway) = desk_with_card(&["--profession", "60"], "", "present").await;
    let (status, body) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "profession_not_allowed");
    assert!(
        body["message_fr"].as_str().unwrap().contains("profession"),
        "{body}"
    );
    let trail = audit(&gateway, &["--kind", "user_login", "--json"]);
    assert!(
        trail.contains("profession_not_allowed") && trail.contains("\"detail\":\"profession=60\""),
        "{trail}"
    );
    assert_eq!(
        trail.lines().count(),
        1,
        "one attempt, no PIN sent: {trail}"
    );
    assert!(desk(&gateway, DESK_A).await["session"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_pad_desk_never_takes_a_typed_pin_and_says_when_its_reader_has_no_keypad() {
    // desk-b is configured for PIN-pad entry; vpcd's readers have no keypad, so the real
    // SCardControl feature query through pcscd finds no FEATURE_VERIFY_PIN_DIRECT.
    let pcscd = Pcscd::start(2);
    let card = VirtualCard::insert(&pcscd, 1, &[]);
    let gateway = gateway_with_desk_b(&pcscd, &card, "pin_entry = \"pinpad\"", "");
    let view = wait_card_state_at(&gateway, DESK_B, "present").await;
    assert_eq!(view["desk"]["pin_entry"], "pinpad", "{view}");

    let (status, body) = login(&gateway, DESK_B, "1234").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "pin_on_reader");

    let response = gateway
        .client(Some(DESK_B))
        .post(gateway.url("/api/v1/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "pin_pad_unavailable", "{body}");
    assert!(
        body["message_fr"].as_str().unwrap().contains("clavier"),
        "{body}"
    );
    assert!(audit(&gateway, &["--kind", "user_login"]).contains("reason=pin_pad_unavailable"));
    // A keyboard desk still wants its PIN in the request.
    let (status, body) = login(&gateway, DESK_A, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_card_at_one_desk_never_delays_a_removal_at_another() {
    let pcscd = Pcscd::start(2);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let gateway = gateway(&pcscd, &card, "");
    wait_card_state(&gateway, "present").await;
    let (status, session) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    // A card that takes seconds per answer arrives at desk B; while it is being read, the
    // physician at desk A pulls theirs.
    let _slow = VirtualCard::insert(
        &pcscd,
        1,
        &["--id-nat", "810000000009", "--delay-ms", "2000"],
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pulled = Instant::now();
    card.remove();
    let deadline = pulled + Duration::from_secs(10);
    while desk(&gateway, DESK_A).await["state"] != "no_session" {
        assert!(Instant::now() < deadline, "the session outlived the card");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = pulled.elapsed();
    eprintln!(
        "removal at desk A while desk B's card is read: {} ms",
        ended.as_millis()
    );
    assert!(
        ended < Duration::from_millis(1500),
        "removal took {ended:?}"
    );
    // The slow card itself is reported unreadable at its deadline, not waited for.
    let view = wait_card_state_at(&gateway, DESK_B, "refused").await;
    assert_eq!(view["card"]["code"], "unreadable", "{view}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_card_that_stops_answering_mid_login_is_given_up_and_frees_its_desk() {
    let pcscd = Pcscd::start(1);
    let mut card = VirtualCard::insert(&pcscd, 0, &["--fault", "silent-on-verify"]);
    let gateway = gateway_with_desk_b(&pcscd, &card, "[cards]\nlogin_timeout_secs = 2", "");
    let view = wait_card_state(&gateway, "present").await;
    assert_eq!(view["card"]["pin_tries_left"], 3, "{view}");
    // The card reads, then never answers the PIN's check: the physician is told so at the
    // deadline, not left waiting.
    let started = Instant::now();
    let (status, body) = login(&gateway, DESK_A, "1234").await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "card_unresponsive", "{body}");
    assert!(
        body["message_fr"]
            .as_str()
            .unwrap()
            .contains("ne répond pas"),
        "{body}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    eprintln!("a silent card given up after {} ms", waited.as_millis());
    assert!(audit(&gateway, &["--kind", "user_login"]).contains("reason=card_unresponsive"));
    // The PIN may yet reach the card and spend a try: the desk counts one fewer.
    assert_eq!(desk(&gateway, DESK_A).await["card"]["pin_tries_left"], 2);
    // The silent card leaves; a sound one (the same card, answering) logs in at that desk.
    let dir = card.dir.clone();
    card.remove();
    wait_card_state(&gateway, "no_card").await;
    let _card = VirtualCard::insert_from(&pcscd, 0, &dir, &[]);
    wait_card_state(&gateway, "present").await;
    let (status, session) = login(&gateway, DESK_A, "1234").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
}
