//! The record service client against a real dev upstream over mutual TLS: every IPS
//! fixture served and extracted, identification by INS and by traits, the patient's
//! oppositions and blocks, assertions refused when missing or forged, and every injected
//! fault turned into a typed outcome within the deadline.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use samu_gateway::patient::{Ins, InsPolicy, Sex, Traits};
use samu_gateway::upstream::client::FhirClient;
use samu_gateway::upstream::{Access, AccessMode, RecordService, UpstreamError, resolve};
use serde_json::{Value, json};
use support::upstream::{DevUpstream, TEST_OID, nir, patient};

/// The project's own IPS bundles (`tests/fixtures/ips`).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ips")
        .join(name)
}

fn ins(serial: u32) -> Ins {
    Ins::parse(
        &nir(serial),
        TEST_OID,
        InsPolicy {
            accept_test_oids: true,
        },
    )
    .unwrap()
}

fn client(upstream: &DevUpstream) -> FhirClient {
    FhirClient::new(&upstream.config, "1750000000").unwrap()
}

/// Fetches patient `id` (INS `serial`) in `mode` as the test physician.
async fn fetch(
    client: &FhirClient,
    id: &str,
    serial: u32,
    mode: AccessMode,
) -> Result<samu_gateway::summary::CriticalSummary, UpstreamError> {
    let professional = crate::support::physician();
    let ins = ins(serial);
    let access = Access {
        mode,
        professional: &professional,
        patient: Some(&ins),
        card: None,
    };
    client.summary(id, &access).await
}

/// The bundles of `dir`, sorted; none when it is absent.
fn bundles_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_is_served_over_mutual_tls_and_extracted_as_from_the_file() {
    // The project's bundles always; the third-party corpus beside the repository when there.
    let mut files = bundles_in(&fixture(""));
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/ips");
    let corpus = bundles_in(&shared);
    if corpus.is_empty() {
        support::skipped(&format!(
            "upstream::every_fixture_is_served…: {} is absent; only the project's own bundles were served",
            shared.display()
        ));
    }
    files.extend(corpus);
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let patients = files
        .iter()
        .enumerate()
        .map(|(i, path)| patient(&format!("p{i}"), i as u32 + 1, path))
        .collect();
    let upstream = DevUpstream::start(patients);
    let client = client(&upstream);
    for (i, name) in names.iter().enumerate() {
        let served = fetch(
            &client,
            &format!("p{i}"),
            i as u32 + 1,
            AccessMode::Centre15,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let direct = samu_gateway::summary::extract(&std::fs::read(name).unwrap()).unwrap();
        assert_eq!(served, direct, "{name}");
    }
    assert_eq!(upstream.stats().await["summaries"], names.len());
}

fn one_patient(flags: Value) -> DevUpstream {
    let mut p = patient(
        "p1",
        1,
        &fixture("penicillin-allergy-high-criticality.json"),
    );
    for (k, v) in flags.as_object().unwrap() {
        p[k] = v.clone();
    }
    let twin = {
        let mut twin = patient("p2", 1, &fixture("one-entry-per-section.json"));
        twin["ins"] = nir(2).into();
        twin["family"] = p["family"].clone();
        twin
    };
    DevUpstream::start(vec![p, twin])
}

#[tokio::test(flavor = "multi_thread")]
async fn patients_are_found_by_ins_and_by_traits_and_never_picked_among_several() {
    let upstream = one_patient(json!({}));
    let client = client(&upstream);
    let professional = crate::support::physician();
    let known = ins(1);
    let access = Access {
        mode: AccessMode::Centre15,
        professional: &professional,
        patient: Some(&known),
        card: None,
    };
    let found = resolve(&client, &known, &access).await.unwrap();
    assert_eq!(found.id, "p1");
    assert!(found.has_ins);
    assert_eq!(found.birth_date.as_deref(), Some("1980-01-17"));
    let unknown = ins(99);
    assert_eq!(
        resolve(
            &client,
            &unknown,
            &Access {
                patient: Some(&unknown),
                ..access.clone()
            }
        )
        .await,
        Err(UpstreamError::NoRecord)
    );
    // Two patients share these traits: both come back, for the physician to choose.
    let traits = Traits {
        birth_name: support::upstream::family(1).to_lowercase(),
        first_names: "Camille".into(),
        birth_date: "1980-01-17".into(),
        sex: Sex::F,
        birthplace: None,
    };
    let search_access = Access {
        patient: None,
        ..access.clone()
    };
    let mut ids: Vec<String> = client
        .search(&traits, &search_access)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p2"]);
    // An undetermined sex (the caller could not say) filters nothing: both again.
    let undetermined = Traits {
        sex: Sex::I,
        ..traits.clone()
    };
    assert_eq!(
        client
            .search(&undetermined, &search_access)
            .await
            .unwrap()
            .len(),
        2
    );
    let wrong = Traits {
        birth_date: "1980-01-18".into(),
        ..traits
    };
    assert!(
        client
            .search(&wrong, &search_access)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicated_ins_upstream_is_ambiguous_not_a_pick() {
    let first = patient("p1", 1, &fixture("one-entry-per-section.json"));
    let second = patient("p2", 1, &fixture("one-entry-per-section.json"));
    let upstream = DevUpstream::start(vec![first, second]);
    let client = client(&upstream);
    let professional = crate::support::physician();
    let known = ins(1);
    let access = Access {
        mode: AccessMode::BrisDeGlace,
        professional: &professional,
        patient: Some(&known),
        card: None,
    };
    assert_eq!(
        resolve(&client, &known, &access).await,
        Err(UpstreamError::Ambiguous(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oppositions_blocks_and_closed_records_are_typed_outcomes() {
    let upstream = one_patient(json!({"opposed": ["centre_15"]}));
    let client = client(&upstream);
    assert_eq!(
        fetch(&client, "p1", 1, AccessMode::Centre15).await,
        Err(UpstreamError::PatientOpposed(AccessMode::Centre15))
    );
    // The two oppositions are distinct: break-glass is still allowed here.
    assert!(
        fetch(&client, "p1", 1, AccessMode::BrisDeGlace)
            .await
            .is_ok()
    );
    drop(upstream);

    let upstream = one_patient(json!({"opposed": ["bris_de_glace"]}));
    let client = self::client(&upstream);
    assert_eq!(
        fetch(&client, "p1", 1, AccessMode::BrisDeGlace).await,
        Err(UpstreamError::PatientOpposed(AccessMode::BrisDeGlace))
    );
    drop(upstream);

    let upstream = one_patient(json!({"blocked_professionals": ["810002813839"]}));
    let client = self::client(&upstream);
    for mode in [AccessMode::Centre15, AccessMode::BrisDeGlace] {
        assert_eq!(
            fetch(&client, "p1", 1, mode).await,
            Err(UpstreamError::ProfessionalBlocked)
        );
    }
    drop(upstream);

    let upstream = one_patient(json!({"record_closed": true}));
    let client = self::client(&upstream);
    assert_eq!(
        fetch(&client, "p1", 1, AccessMode::Centre15).await,
        Err(UpstreamError::RecordClosed)
    );
    assert_eq!(
        fetch(&client, "nobody", 1, AccessMode::Centre15).await,
        Err(UpstreamError::NoRecord)
    );
    let messages = [
        UpstreamError::PatientOpposed(AccessMode::Centre15).message_fr(),
        UpstreamError::ProfessionalBlocked.message_fr(),
        UpstreamError::RecordClosed.message_fr(),
    ];
    assert!(messages.iter().all(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_forged_incomplete_or_misdirected_assertions_are_refused() {
    let upstream = one_patient(json!({}));
    let url = format!("{}/Patient/p1/$summary", upstream.url);
    // No assertion at all.
    let response = upstream.raw_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "assertion-invalid"
    );
    // Forged: a well-formed assertion signed by a key the upstream does not trust.
    let mut forged = upstream.config.clone();
    let other_key = upstream.dir.join("other.key");
    samu_gateway::audit::Signer::generate(&other_key).unwrap();
    forged.assertion_key = other_key.into();
    let forger = FhirClient::new(&forged, "1750000000").unwrap();
    assert!(matches!(
        fetch(&forger, "p1", 1, AccessMode::Centre15).await,
        Err(UpstreamError::AssertionRefused(_))
    ));
    // Incomplete: no profession on the card → no role attribute.
    let client = client(&upstream);
    let mut anonymous = crate::support::physician();
    anonymous.title = None;
    let known = ins(1);
    let access = Access {
        mode: AccessMode::Centre15,
        professional: &anonymous,
        patient: Some(&known),
        card: None,
    };
    assert!(matches!(
        client.summary("p1", &access).await,
        Err(UpstreamError::AssertionRefused(_))
    ));
    // Misdirected: the assertion names patient 2, the request asks for patient 1.
    assert_eq!(
        fetch(&client, "p1", 2, AccessMode::Centre15).await,
        Err(UpstreamError::AssertionRefused(
            "assertion-patient-mismatch".into()
        ))
    );
    // An INS look-up whose assertion names another patient, as a record service refuses
    // it (before, the stand-in took any assertion for a search).
    let other = ins(2);
    let misdirected = Access {
        mode: AccessMode::Centre15,
        professional: &crate::support::physician(),
        patient: Some(&other),
        card: None,
    };
    assert_eq!(
        client.find_by_ins(&known, &misdirected).await.unwrap_err(),
        UpstreamError::AssertionRefused("assertion-patient-mismatch".into())
    );
    // The same assertion sent twice: the second is a replay, refused.
    let signer = samu_gateway::upstream::assertion::AssertionSigner::load(
        &upstream.dir.join("assertion.key"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = signer
        .sign(&samu_gateway::upstream::assertion::Claims {
            iss: "samu-gateway/1750000000".into(),
            aud: upstream.url.clone(),
            iat: now,
            exp: now + samu_gateway::upstream::assertion::LIFETIME_SECS,
            jti: samu_gateway::upstream::assertion::new_jti().unwrap(),
            purpose_of_use: AccessMode::Centre15,
            subject_id: "Jeanne URGENTISTE".into(),
            subject_nameid: "810002813839".into(),
            role: Some("10".into()),
            specialty: None,
            structure_id: "1750000000".into(),
            activity_sector: "SA01".into(),
            resource_id: Some(known.resource_id()),
            lps_name: "samu-gateway".into(),
            lps_version: "test".into(),
            auth_mode: "DIRECTE".into(),
        })
        .unwrap();
    let send = || upstream.raw_client().get(&url).bearer_auth(&token).send();
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(send().await.unwrap().status(), 401);
    assert!(
        upstream.stats().await["refused_assertions"]
            .as_u64()
            .unwrap()
            >= 3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_clients_with_a_structure_certificate_get_through() {
    let upstream = one_patient(json!({}));
    let anonymous = support::tls_client(upstream.record_ca_der.clone(), None);
    let result = anonymous
        .get(format!("{}/Patient/p1/$summary", upstream.url))
        .send()
        .await;
    assert!(result.is_err(), "a client without certificate was served");
    let stranger = upstream.other_ca.issue_client("stranger").unwrap();
    let (cert, key) =
        samu_gateway::dev_pki::write_pair(&upstream.dir, "stranger", &stranger).unwrap();
    let mut config = upstream.config.clone();
    config.client_cert = cert;
    config.client_key = key.into();
    let client = FhirClient::new(&config, "1750000000").unwrap();
    assert!(matches!(
        fetch(&client, "p1", 1, AccessMode::Centre15).await,
        Err(UpstreamError::Unavailable(_))
    ));
}

/// Runs one fetch under `fault`, returning the outcome and how long it took.
async fn under_fault(
    upstream: &DevUpstream,
    client: &FhirClient,
    fault: Value,
) -> (Result<(), UpstreamError>, Duration) {
    upstream.fault(fault).await;
    let started = Instant::now();
    let outcome = fetch(client, "p1", 1, AccessMode::Centre15).await.map(drop);
    (outcome, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_injected_fault_is_a_typed_outcome_within_the_deadline() {
    let upstream = one_patient(json!({}));
    let mut config = upstream.config.clone();
    config.total_timeout_ms = 1500;
    let client = FhirClient::new(&config, "1750000000").unwrap();
    let deadline = Duration::from_millis(config.total_timeout_ms);
    // Generous bound: the point is "nothing hangs", not a latency figure.
    let bound = deadline + Duration::from_millis(1000);

    let (outcome, _) = under_fault(&upstream, &client, json!({"kind": "latency", "ms": 200})).await;
    assert_eq!(outcome, Ok(()));

    for (fault, check) in [
        (json!({"kind": "latency", "ms": 5000}), "timed out"),
        (json!({"kind": "timeout"}), "timed out"),
        (json!({"kind": "status", "status": 500}), "unavailable"),
        (json!({"kind": "truncated"}), "truncated"),
        (json!({"kind": "wrong_content_type"}), "content type"),
        (
            json!({"kind": "oversize", "bytes": 20_000_000}),
            "larger than",
        ),
        (json!({"kind": "garbage"}), "JSON syntax"),
    ] {
        let (outcome, took) = under_fault(&upstream, &client, fault.clone()).await;
        let error = outcome.expect_err(&fault.to_string());
        let text = match &error {
            UpstreamError::TimedOut(_) => "timed out".to_owned(),
            UpstreamError::Unavailable(why) => format!("unavailable {why}"),
            UpstreamError::Malformed(why) => why.clone(),
            other => panic!("{fault}: unexpected {other:?}"),
        };
        assert!(text.contains(check), "{fault}: {text}");
        assert!(took < bound, "{fault}: took {took:?}");
    }

    // An access's look-up and summary share one deadline: each 1 s late, the two would
    // take 2 s within their own deadlines; the access times out at 1.5 s instead.
    upstream.fault(json!({"kind": "latency", "ms": 1000})).await;
    let (known, professional) = (ins(1), crate::support::physician());
    let access = Access {
        mode: AccessMode::Centre15,
        professional: &professional,
        patient: Some(&known),
        card: None,
    };
    let started = Instant::now();
    let outcome = client.patient_summary(&known, &access).await;
    assert!(
        matches!(outcome, Err(UpstreamError::TimedOut(1500))),
        "{:?}",
        outcome.map(drop)
    );
    assert!(started.elapsed() < deadline + Duration::from_millis(400));

    // 503 is retried (bounded), 500 is not.
    upstream
        .fault(json!({"kind": "status", "status": 503}))
        .await;
    let before = upstream.stats().await["summaries"].as_u64().unwrap();
    let outcome = fetch(&client, "p1", 1, AccessMode::Centre15).await;
    assert!(
        matches!(outcome, Err(UpstreamError::Unavailable(_))),
        "{outcome:?}"
    );
    let after = upstream.stats().await["summaries"].as_u64().unwrap();
    assert_eq!(after - before, 1 + u64::from(config.max_retries));

    upstream.fault(json!({"kind": "none"})).await;
    assert!(fetch(&client, "p1", 1, AccessMode::Centre15).await.is_ok());
}
