//! Compliance review: officers' certificates (configured, distinct from desks) list the
//! break-glass accesses to review and record decisions, which are audit records; desks
//! cannot reach these endpoints and officers cannot reach patient data.

use crate::support;

use reqwest::StatusCode;
use samu_gateway::audit::{AccessMode, Actor, CallContext, Event, EventKind, Outcome, PatientRef};
use serde_json::{Value, json};
use support::{DESK_A, UNMAPPED};

/// A break-glass start as the access module records it.
fn started(n: u64, outcome: Outcome) -> Event {
    of_access(EventKind::BreakGlassStarted, n, outcome)
}

/// A record of access `n` (patient and call `n`) by Dr Urgentiste at desk-a.
fn of_access(kind: EventKind, n: u64, outcome: Outcome) -> Event {
    Event {
        actor: Some(Actor {
            id_nat: Some("810002813839".into()),
            name: Some("Jeanne URGENTISTE".into()),
            desk: Some("desk-a".into()),
            ..Actor::default()
        }),
        patient: Some(PatientRef {
            ins: format!("26905495881578{n}"),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        call: Some(CallContext {
            call_id: format!("CRRA-{n}"),
            reason_code: Some("inconscient".into()),
            justification: None,
        }),
        access_mode: Some(AccessMode::BrisDeGlace),
        ..Event::new(kind, outcome)
    }
}

/// Three successful starts and a refused one, as an earlier run left them.
fn trail() -> Vec<Event> {
    vec![
        started(1, Outcome::Success),
        started(2, Outcome::Success),
        started(
            9,
            Outcome::Refused {
                reason: "rate_limited:professional".into(),
            },
        ),
        started(3, Outcome::Success),
        Event::new(EventKind::PatientRecordRead, Outcome::Success),
    ]
}

/// The `audit_log_used` records of `gateway`'s trail, as `audit list --json` gives them.
fn uses_of_the_trail(gateway: &support::Gateway) -> Vec<Value> {
    let (_, listed, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "audit_log_used", "--json"],
        &[],
    );
    listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The seqs of the records an answer lists (`records[].seq`).
fn seqs(body: &Value) -> Vec<u64> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// `response` is an unfiltered JSONL export, named as one, that `audit verify --file`
/// verifies with the trail's public key.
async fn verifies_offline(gateway: &support::Gateway, response: reqwest::Response, file: &str) {
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"audit-"),
        "{disposition}"
    );
    assert!(disposition.ends_with(".jsonl\""), "{disposition}");
    let path = gateway.dir.path().join(file);
    std::fs::write(&path, response.bytes().await.unwrap()).unwrap();
    let (code, out, stderr) = support::run(
        &gateway.config,
        &["audit", "verify", "--file", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{stderr}");
}

const OFFICER_CONFIG: &str = "\n[compliance]\nofficer_cns = [\"poste-x\"]\n";

/// A download link serves the certificate that asked for it, once: another officer's
/// fetch, and a `HEAD`, leave it where it is. Each certificate has its own share of the
/// links that may wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_download_link_serves_only_the_officer_who_asked_once() {
    let gateway = support::launch_on_trail(
        trail(),
        "\n[compliance]\nofficer_cns = [\"poste-x\", \"poste-inconnu\"]\n",
    );
    let (first, second) = (
        gateway.client(Some(UNMAPPED)),
        gateway.client(Some(support::STRANGER)),
    );
    let offer = |client: &reqwest::Client| {
        let request = client
            .post(gateway.url("/api/v1/compliance/downloads"))
            .json(&json!({"format": "csv"}));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = offer(&first).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = gateway.url(body["href"].as_str().unwrap());
    let other = second.get(&url).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "another officer's");
    let look = first.head(&url).send().await.unwrap();
    assert_eq!(look.status(), StatusCode::OK);
    let response = first.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().starts_with("seq,time,node"));
    assert_eq!(first.head(&url).send().await.unwrap().status(), 404);

    // Four waiting are the first officer's share; the second still has theirs.
    for _ in 0..4 {
        assert_eq!(offer(&first).await.0, StatusCode::CREATED);
    }
    let (status, body) = offer(&first).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "downloads_full");
    assert_eq!(offer(&second).await.0, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn officers_review_break_glass_accesses_and_nobody_else_can() {
    let gateway = support::launch_on_trail(trail(), OFFICER_CONFIG);
    let officer = gateway.client(Some(UNMAPPED));
    let pending = |client: reqwest::Client| {
        let url = gateway.url("/api/v1/compliance/pending");
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = pending(officer.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seqs: Vec<u64> = body["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 4], "successful starts only, oldest first");
    assert_eq!(body["accesses"][0]["call_id"], "CRRA-1");
    assert_eq!(body["accesses"][0]["name"], "Jeanne URGENTISTE");

    // A desk cannot review; an anonymous caller neither.
    let (status, body) = pending(gateway.client(Some(DESK_A))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "compliance_only");
    assert_eq!(pending(gateway.client(None)).await.0, StatusCode::FORBIDDEN);

    let review = |client: &reqwest::Client, body: Value| {
        let request = client
            .post(gateway.url("/api/v1/compliance/reviews"))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = review(
        &officer,
        json!({"seq": 1, "decision": "justified", "comment": "arrêt cardiaque, appel CRRA-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let justified = answer["recorded"].as_u64().unwrap();
    assert!(justified > 5);
    let (status, answer) = review(&officer, json!({"seq": 2, "decision": "to_investigate"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let investigated = answer["recorded"].as_u64().unwrap();
    // Not a successful start: nothing to review there.
    let (status, body) = review(&officer, json!({"seq": 3, "decision": "unjustified"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = review(
        &gateway.client(Some(DESK_A)),
        json!({"seq": 4, "decision": "justified"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // What the queue holds: each access's start and last decision.
    let left = |body: &Value| -> Vec<(u64, Value)> {
        body["accesses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["seq"].as_u64().unwrap(), a["last_decision"].clone()))
            .collect()
    };
    let (_, body) = pending(officer.clone()).await;
    assert_eq!(
        left(&body),
        [(2, json!("to_investigate")), (4, Value::Null)]
    );
    // Each names its latest decision's record and who took it: what a next decision
    // replaces.
    assert_eq!(body["accesses"][0]["last_decision_seq"], investigated);
    assert_eq!(body["accesses"][0]["last_decided_by"], "poste-x");
    assert_eq!(body["accesses"][1]["last_decision_seq"], Value::Null);

    // The decisions are audit records; the command line sees the same list.
    let (_, listed, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "access_reviewed", "--json"],
        &[],
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("\"decision\":\"justified\""), "{listed}");
    let (code, out, stderr) = support::run(&gateway.config, &["audit", "pending"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("2 access(es) to review"), "{out}");

    // A decision on an access already decided names the decision it replaces: without
    // it, or naming another record, it is refused and says which decision stands.
    let (status, body) = review(&officer, json!({"seq": 1, "decision": "to_investigate"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "already_decided");
    let said = body["message_fr"].as_str().unwrap();
    assert!(said.contains("« Justifié » par poste-x"), "{said}");
    assert!(said.contains(&format!("n° {justified}")), "{said}");
    for named in [json!(investigated), json!(justified + 1000)] {
        let asked = json!({"seq": 1, "decision": "unjustified", "replaces": named});
        let (status, body) = review(&officer, asked).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "decision_changed");
    }
    // Naming one on an access never decided is refused too: it was read elsewhere.
    let asked = json!({"seq": 4, "decision": "to_investigate", "replaces": justified});
    let (status, body) = review(&officer, asked).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "decision_changed");

    // The page's queue reads on from where it stopped: an access closed earlier and put
    // back under investigation is on it again, in its place; one closed now leaves it.
    let asked = json!({"seq": 1, "decision": "to_investigate", "replaces": justified});
    let (status, answer) = review(&officer, asked).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let reopened = answer["recorded"].as_u64().unwrap();
    let (status, _) = review(&officer, json!({"seq": 4, "decision": "unjustified"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = pending(officer.clone()).await;
    assert_eq!(
        left(&body),
        [(1, json!("to_investigate")), (2, json!("to_investigate"))]
    );
    assert_eq!(body["accesses"][0]["call_id"], "CRRA-1");
    let (_, out, _) = support::run(&gateway.config, &["audit", "pending"], &[]);
    assert!(out.contains("2 access(es) to review"), "{out}");
    // The replacing decision says so on the trail.
    let (status, trail) =
        support::get_json(&officer, &gateway.url("/api/v1/compliance/accesses/1")).await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let last = trail["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["seq"], reopened);
    assert_eq!(last["record"]["review"]["replaces"], justified);
    assert_eq!(trail["access"]["last_decision_seq"], reopened);

    // Two officers deciding at once against the same decision: one is recorded, the
    // others are told a decision came in between (none replaces another unseen).
    let racing = (0..6).map(|i| {
        let decision = if i % 2 == 0 {
            "justified"
        } else {
            "unjustified"
        };
        review(
            &officer,
            json!({"seq": 2, "decision": decision, "replaces": investigated}),
        )
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(racing)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );

    // Officers reach no patient data.
    let response = officer
        .post(gateway.url("/api/v1/break-glass"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anomaly_report_flags_each_pattern_with_its_records() {
    let login = |reason: Option<&str>, detail: Option<&str>| Event {
        actor: Some(Actor {
            id_nat: Some("810002813839".into()),
            desk: Some("desk-a".into()),
            ..Actor::default()
        }),
        detail: detail.map(str::to_owned),
        ..Event::new(
            EventKind::UserLogin,
            match reason {
                Some(reason) => Outcome::Refused {
                    reason: reason.into(),
                },
                None => Outcome::Success,
            },
        )
    };
    let read = |outcome: Outcome, source: Option<samu_gateway::audit::DataSource>| Event {
        source,
        ..Event::new(EventKind::PatientRecordRead, outcome)
    };
    let mut events: Vec<Event> = (1..=11).map(|n| started(n, Outcome::Success)).collect();
    let mut bogus = started(12, Outcome::Success);
    bogus.call.as_mut().unwrap().call_id = "BOGUS".into();
    events.push(bogus);
    events.extend([
        login(Some("wrong_pin"), None),
        login(Some("wrong_pin"), None),
        login(Some("pin_blocked"), None),
        login(None, Some("crl_stale")),
        read(
            Outcome::Refused {
                reason: "patient_opposed:centre_15".into(),
            },
            None,
        ),
        read(
            Outcome::Success,
            Some(samu_gateway::audit::DataSource::StaleCache),
        ),
    ]);
    let gateway = support::launch_on_trail(
        events,
        &format!("{OFFICER_CONFIG}call_id_pattern = \"^CRRA-[0-9]+$\"\n"),
    );
    let (status, body) = support::get_json(
        &gateway.client(Some(UNMAPPED)),
        &gateway.url("/api/v1/compliance/report?since=1h"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let flags = body["flags"].as_array().unwrap();
    let records_of = |kind: &str| -> Vec<u64> {
        flags
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} flag in {body}"))["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect()
    };
    assert_eq!(records_of("many_patients"), (1..=12).collect::<Vec<_>>());
    assert_eq!(records_of("call_id_mismatch"), [12]);
    assert_eq!(records_of("pin_failures"), [13, 14, 15]);
    assert_eq!(records_of("stale_crl_session"), [16]);
    assert_eq!(records_of("refused_by_patient"), [17]);
    assert_eq!(records_of("stale_cache_read"), [18]);
    assert_eq!(records_of("unusual_volume").len(), 12);
    assert!(
        !body.to_string().contains("26905495881578"),
        "no patient in the report"
    );
    let desk = support::get_json(
        &gateway.client(Some(DESK_A)),
        &gateway.url("/api/v1/compliance/report"),
    )
    .await;
    assert_eq!(desk.0, StatusCode::FORBIDDEN);
    let (code, out, stderr) = support::run(
        &gateway.config,
        &["audit", "report", "--since", "1h", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli.as_array().unwrap().len(), flags.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn officers_search_export_and_follow_an_access_and_each_read_is_recorded() {
    let login = Event {
        patient: None,
        call: None,
        access_mode: None,
        ..of_access(EventKind::UserLogin, 0, Outcome::Success)
    };
    let events = vec![
        login,                                                        // 1
        started(1, Outcome::Success),                                 // 2
        of_access(EventKind::PatientRecordRead, 1, Outcome::Success), // 3
        started(2, Outcome::Success),                                 // 4
        of_access(EventKind::PatientRecordRead, 2, Outcome::Success), // 5
        of_access(EventKind::BreakGlassStopped, 1, Outcome::Success), // 6
        of_access(EventKind::PatientRecordRead, 1, Outcome::Success), // 7: a later access's
        of_access(EventKind::BreakGlassStopped, 2, Outcome::Success), // 8
    ];
    let mut gateway = support::launch_on_trail(events, OFFICER_CONFIG);
    let officer = gateway.client(Some(UNMAPPED));
    let post = |client: &reqwest::Client, path: &str, body: Value| {
        let request = client.post(gateway.url(path)).json(&body);
        async move { request.send().await.unwrap() }
    };

    // Search by patient (in the body: no INS in a URL), one page at a time.
    let search = json!({"filter": {"patient": "269054958815781"}, "limit": 2});
    let response = post(&officer, "/api/v1/compliance/search", search).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page: Value = response.json().await.unwrap();
    assert_eq!(seqs(&page), [2, 3]);
    assert_eq!(page["next_after"], 3);
    assert_eq!(page["records"][0]["record"]["kind"], "break_glass_started");
    assert_eq!(page["records"][0]["hash"].as_str().unwrap().len(), 64);
    let next = json!({"filter": {"patient": "269054958815781", "after": 3}, "limit": 2});
    let page: Value = post(&officer, "/api/v1/compliance/search", next)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&page), [6, 7]);
    // The searches are themselves on the trail, naming the patient looked up.
    assert_eq!(page["next_after"], 7);
    let last = json!({"filter": {"patient": "269054958815781", "after": 7}});
    let page: Value = post(&officer, "/api/v1/compliance/search", last)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2, "{page}");
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["record"]["kind"] == "audit_log_used")
    );
    assert_eq!(page["next_after"], Value::Null);
    let by_kind = json!({"filter": {"kind": "break_glass_stopped", "desk": "desk-a"}});
    let page: Value = post(&officer, "/api/v1/compliance/search", by_kind)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&page), [6, 8]);
    for bad in [
        json!({"filter": {"since": "yesterday"}}),
        json!({"filter": {"outcome": "maybe"}}),
    ] {
        let response = post(&officer, "/api/v1/compliance/search", bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_filter", "{body}");
    }
    let unknown = post(&officer, "/api/v1/compliance/search", json!({"filtre": {}})).await;
    assert!(unknown.status().is_client_error());
    let not_an_ins = json!({"filter": {"patient": "x".repeat(5000)}});
    let response = post(&officer, "/api/v1/compliance/search", not_an_ins).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // An INS the trail does not know: nothing found, and the search's record names the
    // INS looked up all the same (a probe for someone never handled leaves its trace),
    // so a later search for it finds that record.
    let never = json!({"filter": {"patient": "185057800608436"}});
    let page: Value = post(&officer, "/api/v1/compliance/search", never.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 0, "{page}");
    let page: Value = post(&officer, "/api/v1/compliance/search", never)
        .await
        .json()
        .await
        .unwrap();
    let found = page["records"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{page}");
    assert_eq!(found[0]["record"]["kind"], "audit_log_used");
    assert!(
        found[0]["record"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ins"] == "185057800608436" && c["oid"] == "1.2.250.1.213.1.4.8"),
        "{page}"
    );

    // An access's trail: the login that opened the session, start, read, stop, decision;
    // not the other access's records, nor a later read of the same patient.
    let decision = json!({"seq": 2, "decision": "justified", "comment": "ACR"});
    let response = post(&officer, "/api/v1/compliance/reviews", decision).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let recorded = response.json::<Value>().await.unwrap()["recorded"]
        .as_u64()
        .unwrap();
    let (status, trail) =
        support::get_json(&officer, &gateway.url("/api/v1/compliance/accesses/2")).await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    assert_eq!(seqs(&trail), [1, 2, 3, 6, recorded]);
    assert_eq!(trail["access"]["last_decision"], "justified");
    assert_eq!(trail["access"]["call_id"], "CRRA-1");
    let (status, body) =
        support::get_json(&officer, &gateway.url("/api/v1/compliance/accesses/3")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no_such_access");

    // Exports: the unfiltered JSONL export verifies offline with the trail's public key.
    let response = post(
        &officer,
        "/api/v1/compliance/export",
        json!({"format": "jsonl"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    verifies_offline(&gateway, response, "export.jsonl").await;
    let csv = json!({"format": "csv", "filter": {"kind": "break_glass_started"}});
    let response = post(&officer, "/api/v1/compliance/export", csv).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("seq,time,node,epoch,kind"), "{text}");
    assert_eq!(text.lines().count(), 3, "header and two starts: {text}");
    // Each row names its store's epoch, which tells two records of one seq apart after a
    // restore; one cell per column.
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let epoch = header.iter().position(|c| *c == "epoch").unwrap();
    for row in text.lines().skip(1) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        assert!(cells[epoch].parse::<u64>().is_ok_and(|e| e > 0), "{row}");
    }
    // FHIR: one Bundle of AuditEvents, valid JSON even when nothing matches.
    for (filter, entries) in [
        (json!({"kind": "break_glass_started"}), 2),
        (json!({"call": "NO-SUCH-CALL"}), 0),
    ] {
        let fhir = json!({"format": "fhir", "filter": filter});
        let response = post(&officer, "/api/v1/compliance/export", fhir).await;
        assert_eq!(response.headers()["content-type"], "application/fhir+json");
        let bundle: Value = response.json().await.unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(
            bundle["entry"].as_array().unwrap().len(),
            entries,
            "{bundle}"
        );
        if entries > 0 {
            assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "AuditEvent");
        }
    }

    // The page's way: the export is recorded, then its one-use link is fetched by the
    // browser's own download (the same certificate only), which writes it as it comes.
    let desk = gateway.client(Some(DESK_A));
    let response = post(
        &officer,
        "/api/v1/compliance/downloads",
        json!({"format": "jsonl"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let offer: Value = response.json().await.unwrap();
    let href = offer["href"].as_str().unwrap().to_owned();
    assert!(href.starts_with("/api/v1/compliance/downloads/"), "{href}");
    let fetch = |client: &reqwest::Client| client.get(gateway.url(&href)).send();
    assert_eq!(fetch(&desk).await.unwrap().status(), StatusCode::FORBIDDEN);
    let response = fetch(&officer).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    verifies_offline(&gateway, response, "downloaded.jsonl").await;
    let again = fetch(&officer).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "one use");
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"], "no_such_download");

    // Desks reach none of it.
    for (path, body) in [
        ("/api/v1/compliance/search", json!({})),
        ("/api/v1/compliance/export", json!({"format": "csv"})),
        ("/api/v1/compliance/downloads", json!({"format": "csv"})),
    ] {
        assert_eq!(
            post(&desk, path, body).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    let (status, _) = support::get_json(&desk, &gateway.url("/api/v1/compliance/accesses/2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Every read by the officer is on the trail, with what was asked, never the values
    // (the patient looked up is recorded as the patient of the record).
    let uses = uses_of_the_trail(&gateway);
    let details: Vec<&str> = uses.iter().map(|u| u["detail"].as_str().unwrap()).collect();
    assert_eq!(
        details,
        [
            "search filters=patient results=2",
            "search filters=patient,after results=2",
            "search filters=patient,after results=2",
            "search filters=desk,kind results=2",
            "search filters=patient results=0",
            "search filters=patient results=1",
            "trail of 2",
            "export format=jsonl filters=none",
            "export format=csv filters=kind",
            "export format=fhir filters=kind",
            "export format=fhir filters=call",
            "export format=jsonl filters=none",
        ]
    );
    assert!(uses.iter().all(|u| u["actor"]["name"] == "poste-x"));
    assert_eq!(uses[0]["patient"]["ins"], "269054958815781");
    // "trail of 2" names the access's patient.
    assert_eq!(uses[6]["patient"]["ins"], "269054958815781");
    assert!(uses[3].get("patient").is_none());
    // The INS nobody on the trail has: named among the search's candidates, no patient.
    assert!(uses[4].get("patient").is_none());
    assert_eq!(uses[4]["candidates"][0]["ins"], "185057800608436");

    // The officer's reads (a patient looked up by INS, exports) left no INS in the logs.
    let logs = gateway.logs_once_stopped();
    assert!(logs.contains("compliance"), "the requests were logged");
    for ins in ["269054958815781", "185057800608436"] {
        assert!(!logs.contains(ins), "an INS leaked into the logs");
    }
}

/// An officer who looks a patient up finds them also among a search's candidates (a
/// search by traits names no patient, only the candidates it returned); the record of
/// that look-up names the patient all the same, for a search and for an export.
#[tokio::test(flavor = "multi_thread")]
async fn a_look_up_that_matches_a_search_candidate_names_the_patient() {
    let searched = Event {
        patient: None,
        candidates: vec![PatientRef {
            ins: "269054958815784".into(),
            oid: "1.2.250.1.213.1.4.8".into(),
        }],
        ..of_access(EventKind::PatientSearch, 4, Outcome::Success)
    };
    let gateway = support::launch_on_trail(vec![searched], OFFICER_CONFIG);
    let officer = gateway.client(Some(UNMAPPED));
    let filter = json!({"patient": "269054958815784"});
    for (path, body) in [
        ("/api/v1/compliance/search", json!({ "filter": filter })),
        (
            "/api/v1/compliance/export",
            json!({"format": "jsonl", "filter": filter}),
        ),
    ] {
        let response = officer
            .post(gateway.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let _ = response.bytes().await.unwrap();
    }
    let uses = uses_of_the_trail(&gateway);
    assert_eq!(uses.len(), 2, "{uses:?}");
    for used in &uses {
        assert_eq!(used["patient"]["ins"], "269054958815784", "{used}");
    }
}

/// Two accesses of one professional at one desk to one patient for one call (a double
/// click, or Centre 15 then break-glass) are two grants: each trail holds its own reads and
/// stop. Before, records were tied by professional, desk, patient and call: the first
/// access's trail took the second's reads and ended at the second's stop, so its own later
/// reads were in no trail.
#[tokio::test(flavor = "multi_thread")]
async fn each_access_trail_is_its_own_grants_even_for_the_same_patient_and_call() {
    let granted = |kind, grant: &str, outcome| Event {
        grant: Some(grant.into()),
        ..of_access(kind, 5, outcome)
    };
    let stopped = |grant: &str| Event {
        detail: Some("ended: closed".into()),
        ..granted(EventKind::BreakGlassStopped, grant, Outcome::Success)
    };
    let gateway = support::launch_on_trail(
        vec![
            granted(EventKind::BreakGlassStarted, "g1", Outcome::Success),
            granted(EventKind::BreakGlassStarted, "g2", Outcome::Success),
            granted(EventKind::PatientRecordRead, "g1", Outcome::Success),
            stopped("g2"),
            granted(EventKind::PatientRecordRead, "g1", Outcome::Success),
            stopped("g1"),
            // Recorded after its stop (between a read's last check and its record): still
            // the access's own.
            granted(EventKind::PatientRecordRead, "g1", Outcome::Success),
        ],
        OFFICER_CONFIG,
    );
    let officer = gateway.client(Some(UNMAPPED));
    let (status, first) =
        support::get_json(&officer, &gateway.url("/api/v1/compliance/accesses/1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(seqs(&first), [1, 3, 5, 6, 7]);
    let (_, second) =
        support::get_json(&officer, &gateway.url("/api/v1/compliance/accesses/2")).await;
    assert_eq!(seqs(&second), [2, 4]);
}
