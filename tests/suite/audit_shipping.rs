//! The trail shipped to a real rsyslog over mutual TLS (RFC 5424/5425, DICOM payload):
//! every record arrives, validates against the DICOM schema and chains; a receiver outage
//! and gateway restarts lose nothing; a gateway killed mid-drain resumes; a receiver that
//! refuses the gateway's certificate gets nothing and the gateway says so.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use samu_gateway::audit::{Event, EventKind, Outcome};
use support::rsyslog::Rsyslog;
use support::{Gateway, Pki, write_config};

const PATIENCE: Duration = Duration::from_secs(60);

/// `n` earlier records, as a previous run would have left them.
fn prepopulate(dir: &std::path::Path, key: &std::path::Path, n: u64) {
    let events = (0..n)
        .map(|_| Event::new(EventKind::PatientSearch, Outcome::Success).with_detail("backlog"))
        .collect();
    support::write_trail(dir, key, events);
}

/// (seq, prev, hash, body) of a received message.
fn parse(line: &str) -> (u64, String, String, String) {
    let field = |name: &str| {
        let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        line[start..start + line[start..].find('"').unwrap()].to_owned()
    };
    // The structured data ends at the first `"] ` (values escape `]`).
    let body = line[line.find("\"] ").unwrap() + 3..].to_owned();
    (
        field("seq").parse().unwrap(),
        field("prev"),
        field("hash"),
        body,
    )
}

/// Messages by sequence number (duplicates allowed: delivery is at least once).
fn by_seq(lines: &[String]) -> BTreeMap<u64, (String, String, String)> {
    lines
        .iter()
        .map(|l| {
            let (seq, prev, hash, body) = parse(l);
            (seq, (prev, hash, body))
        })
        .collect()
}

fn assert_complete_chain(messages: &BTreeMap<u64, (String, String, String)>, through: u64) {
    let seqs: Vec<u64> = messages.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=through).collect::<Vec<_>>(),
        "a record is missing"
    );
    for seq in 2..=through {
        assert_eq!(
            messages[&seq].0,
            messages[&(seq - 1)].1,
            "chain broken at {seq}"
        );
    }
}

fn gateway(rsyslog: &Rsyslog, cn: &str, backlog: u64) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    if backlog > 0 {
        prepopulate(dir.path(), &pki.audit_key, backlog);
    }
    let config = write_config(
        dir.path(),
        &pki,
        "",
        &rsyslog.receiver_toml("repository", cn),
    );
    Gateway::launch(dir, pki, config, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_arrives_validates_and_chains() {
    let rsyslog = Rsyslog::start();
    let gateway = gateway(&rsyslog, "gateway-test", 40);
    // 40 earlier records, then this run's configuration_loaded and service_started.
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(42, PATIENCE));
    let messages = by_seq(&lines);
    assert_complete_chain(&messages, 42);
    assert!(lines[0].starts_with("<85>1 "), "{}", lines[0]);
    assert!(lines[0].contains(" samu-gateway - IHE+RFC-3881 [samu@32473 node=\"gateway-test\""));
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = messages
        .iter()
        .map(|(seq, (_, _, body))| {
            let path = dir.path().join(format!("{seq}.xml"));
            std::fs::write(&path, body).unwrap();
            path
        })
        .collect();
    let (schemas, _scratch) = support::dicom::schemas();
    for schema in &schemas {
        if let Err(report) = support::dicom::validate(schema, &files) {
            panic!("{report}");
        }
    }
    // The current edition's participant-object rule, which needs no schema: what the
    // message above says is checked when the schemas are absent.
    let bodies: Vec<&str> = messages
        .values()
        .map(|(_, _, body)| body.as_str())
        .collect();
    assert_eq!(
        support::dicom::participant_objects_without_name_or_query(&bodies, dir.path()),
        0
    );
    drop(gateway);
}

/// The established connections to `port` (their local addresses), as `ss` sees them.
fn connections_to(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    let mut local: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    local.sort();
    local
}

/// Between batches a shipper keeps its connection: idle for a few seconds (several idle
/// rounds of the shipper), it is still the same one.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_shipper_keeps_its_connection() {
    let rsyslog = Rsyslog::start();
    let gateway = gateway(&rsyslog, "gateway-test", 0);
    tokio::task::block_in_place(|| rsyslog.wait_for(2, PATIENCE));
    let first = connections_to(rsyslog.port);
    assert_eq!(first.len(), 1, "{first:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(connections_to(rsyslog.port), first);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_and_restarts_lose_nothing_and_keep_the_order() {
    let mut rsyslog = Rsyslog::start();
    let mut gateway = gateway(&rsyslog, "gateway-test", 0);
    tokio::task::block_in_place(|| rsyslog.wait_for(2, PATIENCE));
    rsyslog.stop();
    // While the repository is down the gateway stops and starts again: three more records.
    gateway.terminate();
    assert!(gateway.wait(Duration::from_secs(20)).success());
    let (mut second, _, stderr) = support::spawn(&gateway.config, &["serve"], &[]);
    assert!(
        stderr
            .wait_for(PATIENCE, |l| l.contains("audit shipping failed"))
            .is_some(),
        "the outage is reported"
    );
    rsyslog.restart();
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(5, PATIENCE));
    assert_complete_chain(&by_seq(&lines), 5);
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_during_a_backlog_drain_resumes_without_loss() {
    let rsyslog = Rsyslog::start();
    let mut gateway = gateway(&rsyslog, "gateway-test", 6000);
    tokio::task::block_in_place(|| rsyslog.wait_for(1000, PATIENCE));
    support::signal(gateway.pid(), "KILL");
    // Gone before the next one starts: a dying process still holds the state lock.
    let _ = gateway.wait(Duration::from_secs(20));
    let config = gateway.config.clone();
    let (mut again, _, _) = support::spawn(&config, &["serve"], &[]);
    // 6000 + two runs' configuration_loaded and service_started (a drain shares the two
    // cores with the other tests of this file: twice the usual patience).
    let deadline = std::time::Instant::now() + 2 * PATIENCE;
    let messages = loop {
        let messages = by_seq(&rsyslog.received());
        if messages.len() >= 6004 || std::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_complete_chain(&messages, 6004);
    let _ = again.kill();
    let _ = again.wait();
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_refusing_the_certificate_gets_nothing_and_it_is_an_error() {
    let rsyslog = Rsyslog::start();
    let gateway = gateway(&rsyslog, "intruder", 0);
    assert!(
        gateway
            .stderr
            .wait_for(PATIENCE, |l| l.contains("audit shipping failed"))
            .is_some()
    );
    // Refused again on its retry (not a moment's failure): still nothing taken.
    assert!(
        gateway
            .stderr
            .wait_for_count(PATIENCE, 2, |l| l.contains("audit shipping failed"))
    );
    assert!(rsyslog.received().is_empty(), "{:?}", rsyslog.received());
}

/// The same with a backlog larger than a batch, where batches follow one another without
/// a watch between them (the next batch is the watch): a batch of thousands of records
/// meets the refusal while it is written, and nothing counts shipped.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_refusing_the_certificate_during_a_backlog_drain_gets_nothing_counted() {
    let rsyslog = Rsyslog::start();
    let gateway = gateway(&rsyslog, "intruder", 9000);
    assert!(
        gateway
            .stderr
            .wait_for(PATIENCE, |l| l.contains("audit shipping failed"))
            .is_some()
    );
    // Refused again on its retry, the backlog's batches written meanwhile: still nothing.
    assert!(
        gateway
            .stderr
            .wait_for_count(PATIENCE, 2, |l| l.contains("audit shipping failed"))
    );
    assert!(
        rsyslog.received().is_empty(),
        "{:?}",
        rsyslog.received().len()
    );
    assert_eq!(
        cursor(&gateway, "repository"),
        0,
        "counted shipped though refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_receiver_shows_in_readiness_and_metrics() {
    let mut rsyslog = Rsyslog::start();
    rsyslog.stop();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    prepopulate(dir.path(), &pki.audit_key, 3);
    // The repository is down: with a 10 s bound the backlog soon counts as lagging.
    let extra = rsyslog.receiver_toml("repository", "gateway-test");
    let config = write_config(dir.path(), &pki, "", &extra);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "node_id = \"gateway-test\"",
        "node_id = \"gateway-test\"\nship_alert_seconds = 10",
    );
    std::fs::write(&config, text).unwrap();
    let gateway = Gateway::launch(dir, pki, config, &[]);
    let client = gateway.client(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = support::get_json(&client, &gateway.management_url("/readyz")).await;
        if body["status"] == "degraded" {
            assert_eq!(status, 200, "the service still serves");
            assert!(
                body["checks"].to_string().contains("\"audit_shipping\""),
                "{body}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never degraded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, metrics) = support::get_text(&client, &gateway.management_url("/metrics")).await;
    assert!(
        metrics.contains("samu_gateway_audit_ship_backlog_records{receiver=\"repository\"} 5"),
        "{metrics}"
    );
    assert!(!metrics.contains("samu_gateway_audit_ship_errors{receiver=\"repository\"} 0"));
}

/// Whether a received message has severity 1 (alert) in facility 10: `<81>`.
fn is_alert(line: &str) -> bool {
    line.starts_with("<81>1 ")
}

/// The sequence number and body of the first received alert.
fn first_alert(lines: &[String]) -> Option<(u64, String)> {
    lines.iter().find(|l| is_alert(l)).map(|l| {
        let (seq, _, _, body) = parse(l);
        (seq, body)
    })
}

/// A gateway watching desk-a's reader (pcscd's Desk0) for `card`, shipping to `rsyslog`
/// in FHIR form (the alert's kind and records readable in the message), raising PIN
/// alerts at 2 failures.
fn gateway_with_card(
    rsyslog: &Rsyslog,
    pcscd: &support::pcsc::Pcscd,
    card: &support::pcsc::VirtualCard,
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let extra = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}format = \"fhir\"\n\n[compliance]\npin_failures = 2\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        rsyslog.receiver_toml("repository", "gateway-test"),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    Gateway::launch(dir, pki, config, &[(key, value.as_str())])
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_pin_failures_reach_the_repository_at_once_as_an_alert() {
    use support::pcsc::{Pcscd, VirtualCard};
    let rsyslog = Rsyslog::start();
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &[]);
    let gateway = gateway_with_card(&rsyslog, &pcscd, &card);
    let desk = gateway.client(Some(support::DESK_A));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, view) = support::get_json(&desk, &gateway.url("/api/v1/desk")).await;
        if view["card"]["state"] == "present" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..2 {
        let response = desk
            .post(gateway.url("/api/v1/session"))
            .json(&serde_json::json!({"pin": "0000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (seq, body) = loop {
        if let Some(alert) = first_alert(&rsyslog.received()) {
            break alert;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no message with severity 1 (alert): {:#?}",
            rsyslog.received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"]["code"], "110113");
    let details = event["entity"][0]["detail"].to_string();
    assert!(details.contains("pin_failures"), "{details}");
    // The two refused logins are the alert's records, and the alert follows them.
    let (_, listed, _) = support::run(
        &gateway.config,
        &[
            "audit",
            "list",
            "--kind",
            "user_login",
            "--outcome",
            "refused",
            "--json",
        ],
        &[],
    );
    let failures: Vec<u64> = listed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(failures.len(), 2, "{listed}");
    assert!(
        details.contains(&format!("{},{}", failures[0], failures[1])),
        "{details}"
    );
    assert!(seq > failures[1]);
    assert!(
        !body.contains("patient"),
        "an alert names no patient: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_the_last_run_did_not_record_is_raised_at_start_once() {
    let rsyslog = Rsyslog::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // A previous run recorded eleven patients opened by one professional within the hour
    // (the threshold is 10), and stopped before raising the alert.
    let events = (0..11)
        .map(|n| samu_gateway::audit::Event {
            actor: Some(samu_gateway::audit::Actor {
                id_nat: Some("810002813839".into()),
                desk: Some("desk-a".into()),
                ..Default::default()
            }),
            patient: Some(samu_gateway::audit::PatientRef {
                ins: format!("2690549588157{n:02}"),
                oid: "1.2.250.1.213.1.4.8".into(),
            }),
            ..Event::new(EventKind::BreakGlassStarted, Outcome::Success)
        })
        .collect();
    support::write_trail(dir.path(), &pki.audit_key, events);
    let config = write_config(
        dir.path(),
        &pki,
        "",
        &rsyslog.receiver_toml("repository", "gateway-test"),
    );
    let mut gateway = Gateway::launch(dir, pki, config, &[]);
    // The eleven accesses, eleven ends owed to them (the run stopped without recording
    // them), the configuration, the start, the alert.
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(25, PATIENCE));
    let (seq, body) = first_alert(&lines).expect("the missed alert is raised, severity 1");
    assert!(seq > 11, "after the records behind it");
    assert!(body.contains("<AuditMessage>"), "DICOM payload by default");
    assert!(!body.contains("269054958815700"), "no patient in an alert");
    let first = gateway
        .stderr
        .wait_for(PATIENCE, |l| {
            l.contains("real-time alerts follow the trail")
        })
        .expect("the alerts follow the trail");
    assert!(first.contains(r#""raised":1"#), "{first}");
    // Restarted, the gateway finds the alert on the trail and does not raise it again.
    gateway.terminate();
    assert!(gateway.wait(Duration::from_secs(20)).success());
    let (mut again, _, stderr) = support::spawn(&gateway.config, &["serve"], &[]);
    // Its replay of the last hour is over: it says what it raised (nothing).
    let replayed = stderr
        .wait_for(PATIENCE, |l| {
            l.contains("real-time alerts follow the trail")
        })
        .expect("the restarted gateway's alerts follow the trail");
    assert!(replayed.contains(r#""raised":0"#), "{replayed}");
    // service_stopped, then the new run's configuration_loaded and service_started.
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(28, PATIENCE));
    // Delivery is at least once: count alerts after dedupe by sequence number.
    let alerts: Vec<String> = rsyslog
        .received()
        .into_iter()
        .filter(|l| is_alert(l))
        .collect();
    assert_eq!(by_seq(&alerts).len(), 1, "{lines:#?}");
    let _ = again.kill();
    let _ = again.wait();
}

/// A repository that completes TLS and then takes nothing: in `relp` mode it answers the
/// session's `open` and reads every transaction without ever acknowledging one; otherwise
/// it never reads at all, with a receive buffer of a few kilobytes. Returns the receiver's
/// configuration (named `mute`) and whether anything connected.
async fn mute_repository(
    dir: &std::path::Path,
    relp: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use samu_gateway::dev_pki::{Authority, write_file, write_pair};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsAcceptor;
    let repo = dir.join("mute");
    std::fs::create_dir_all(&repo).unwrap();
    let ca = Authority::new("mute repository CA").unwrap();
    write_file(&repo.join("ca.pem"), ca.cert_pem(), 0o644).unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let (client_cert, client_key) =
        write_pair(&repo, "gateway", &ca.issue_client("gateway-test").unwrap()).unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(server.key_pem.as_bytes())
        .map(|k: rustls::pki_types::PrivatePkcs8KeyDer| k.secret_pkcs8_der().to_vec())
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server.der.clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key).unwrap(),
    )
    .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if !relp {
        socket.set_recv_buffer_size(2048).unwrap();
    }
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let connected = Arc::new(AtomicBool::new(false));
    let seen = connected.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            seen.store(true, Ordering::SeqCst);
            if relp {
                held.push(tokio::spawn(async move {
                    let mut first = [0u8; 256];
                    let _ = tls.read(&mut first).await;
                    let data = "200 OK\nrelp_version=0\ncommands=syslog";
                    let open = format!("1 rsp {} {data}\n", data.len());
                    let _ = tls.write_all(open.as_bytes()).await;
                    let mut sink = vec![0u8; 65536];
                    while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
                }));
            } else {
                held.push(tokio::spawn(async move {
                    // Held open, never read.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(tls);
                }));
            }
        }
    });
    let transport = if relp { "relp" } else { "syslog_tls" };
    let receiver = format!(
        "\n[[audit.receivers]]\nname = \"mute\"\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\ntransport = \"{transport}\"\n",
        repo.join("ca.pem").display(),
        client_cert.display(),
        client_key.display()
    );
    (receiver, connected)
}

/// Against a mute repository, no record may count as shipped.
async fn nothing_counts_as_shipped_to_a_mute_repository(relp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // A few records: for syslog over TLS, written at once into the gateway's send buffer,
    // more than the mute repository's receive buffer can take.
    // (Five: the first batch may hold only these, the gateway's start records following.)
    prepopulate(dir.path(), &pki.audit_key, 5);
    let (receiver, connected) = mute_repository(dir.path(), relp).await;
    let config = write_config(dir.path(), &pki, "", &receiver);
    let gateway = Gateway::launch(dir, pki, config, &[]);
    // Once the gateway has connected and has a batch under way (readiness says what the
    // repository has not confirmed, records and bytes), none of it counts as shipped. A
    // gateway that counted a batch shipped once written would have moved its cursor by
    // then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (_, ready) =
            support::get_json(&gateway.client(None), &gateway.management_url("/readyz")).await;
        let connected = connected.load(std::sync::atomic::Ordering::SeqCst);
        if connected && ready["repositories"][0]["unconfirmed_records"].as_u64() >= Some(5) {
            break ready;
        }
        assert!(Instant::now() < deadline, "no batch under way: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        cursor(&gateway, "mute"),
        0,
        "records counted shipped though the repository acknowledged none"
    );
    let repository = &ready["repositories"][0];
    assert_eq!(repository["name"], "mute", "{ready}");
    assert_eq!(
        repository["transport"],
        if relp { "relp" } else { "syslog_tls" }
    );
    // As of the batch under way: at least the prepopulated records (the records of the
    // gateway's start may follow them, in the next batch).
    assert!(
        repository["unconfirmed_records"].as_u64().unwrap() >= 5,
        "{ready}"
    );
    assert!(
        repository["unconfirmed_bytes"].as_u64().unwrap() > 0,
        "{ready}"
    );
}

/// Syslog over TLS: written is not delivered; the repository's TCP must acknowledge.
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_that_never_reads_gets_nothing_counted_as_shipped() {
    nothing_counts_as_shipped_to_a_mute_repository(false).await;
}

/// RELP: read is not taken; the repository must answer each transaction.
#[tokio::test(flavor = "multi_thread")]
async fn relp_counts_nothing_the_repository_did_not_acknowledge() {
    nothing_counts_as_shipped_to_a_mute_repository(true).await;
}

/// The receiver's cursor as the gateway keeps it in its audit store.
fn cursor(gateway: &Gateway, receiver: &str) -> u64 {
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let state = text
        .lines()
        .find_map(|l| l.strip_prefix("state_dir = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let reader =
        samu_gateway::audit::AuditReader::open(&std::path::Path::new(&state).join("audit.redb"))
            .unwrap();
    let txn = samu_gateway::audit::store::ReadStore::snapshot(&reader).unwrap();
    samu_gateway::audit::store::receiver_cursor(&txn, receiver).unwrap()
}

/// RELP over TLS to a real rsyslog `imrelp`: every record arrives, each acknowledged by the
/// repository; killed mid-stream and restarted, it still gets every record, and the cursor
/// never runs ahead of what the repository took.
#[tokio::test(flavor = "multi_thread")]
async fn relp_delivers_every_record_on_the_repositorys_acknowledgement() {
    let mut rsyslog = Rsyslog::start_relp();
    let gateway = gateway(&rsyslog, "gateway-test", 30);
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(32, PATIENCE));
    assert_complete_chain(&by_seq(&lines), 32);
    let deadline = std::time::Instant::now() + PATIENCE;
    while cursor(&gateway, "repository") < 32 {
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The repository dies (SIGKILL: no goodbye); the gateway goes on writing (a restart
    // of its own: its configuration and start records).
    rsyslog.kill();
    let mut gateway = gateway;
    gateway.crash_and_restart(&[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = by_seq(&rsyslog.received()).len() as u64;
    assert!(
        cursor(&gateway, "repository") <= taken,
        "the cursor ran ahead of what the repository took"
    );
    rsyslog.restart();
    // 32 + the new run's configuration_loaded and service_started.
    let lines = tokio::task::block_in_place(|| rsyslog.wait_for(34, PATIENCE));
    assert_complete_chain(&by_seq(&lines), 34);
}

/// (epoch, seq, prev, hash, is an alert) of a received message.
type Identity = (u64, u64, String, String, bool);

fn identity(line: &str) -> Identity {
    let field = |name: &str| {
        let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        line[start..start + line[start..].find('"').unwrap()].to_owned()
    };
    (
        field("epoch").parse().unwrap(),
        field("seq").parse().unwrap(),
        field("prev"),
        field("hash"),
        is_alert(line),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_backup_continues_on_a_new_epoch_and_reuses_no_record_identity() {
    let rsyslog = Rsyslog::start();
    let mut gateway = gateway(&rsyslog, "gateway-test", 10);
    // 10 earlier records, configuration_loaded, service_started: 12, all shipped.
    tokio::task::block_in_place(|| rsyslog.wait_for(12, PATIENCE));
    let backup = gateway.dir.path().join("backups").join("audit-backup.redb");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let backup_arg = backup.to_str().unwrap();

    // While the service runs.
    let (code, stdout, stderr) = support::run(
        &gateway.config,
        &["audit", "backup", "--output", backup_arg],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    // A store's first epoch is its creation time (Unix ms), not 0: a store created again
    // on this node never reuses an identity its predecessor shipped.
    let first_epoch: u64 = stdout
        .split("up to seq 12 (epoch ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in: {stdout}"));
    assert!(first_epoch > 1_700_000_000_000, "{stdout}");
    assert!(stdout.contains("verified intact"), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600,
        "a backup holds patient identifiers"
    );
    let (code, _, stderr) = support::run(
        &gateway.config,
        &["audit", "backup", "--output", backup_arg],
        &[],
    );
    assert_ne!(code, 0, "a backup never overwrites");
    assert!(stderr.contains("already exists"), "{stderr}");

    // Life goes on after the backup: the stop and a second run's start (13 to 15) reach
    // the repository, then the store is lost and the backup put back.
    gateway.terminate();
    assert!(gateway.wait(Duration::from_secs(20)).success());
    let (mut second, _, _) = support::spawn(&gateway.config, &["serve"], &[]);
    // Delivery is at least once: count identities, not lines.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !rsyslog
        .received()
        .iter()
        .any(|l| identity(l).0 == first_epoch && identity(l).1 == 15)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "record 15 never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, stderr) = support::run(
        &gateway.config,
        &["audit", "restore", "--input", backup_arg],
        &[],
    );
    assert_ne!(code, 0, "a restore under a running service is refused");
    assert!(stderr.contains("stop the service"), "{stderr}");
    support::signal(second.id(), "TERM");
    assert!(support::wait_child(&mut second, Duration::from_secs(20)).success());

    // On an appliance the store is the service user's, and a restore runs as root: every
    // audit file must stay the service user's, or the service cannot start. As root, the
    // test gives the state to another user (nobody) to see that.
    let state = gateway.dir.path().join("state");
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if as_root {
        for file in [
            state.clone(),
            state.join("audit.redb"),
            state.join("audit.journal"),
        ] {
            if file.exists() {
                std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
            }
        }
    } else {
        support::skipped("audit restore: not root, the restored files' owner is not checked");
    }
    let (code, stdout, stderr) = support::run(
        &gateway.config,
        &["audit", "restore", "--input", backup_arg],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    if as_root {
        use std::os::unix::fs::MetadataExt;
        for name in ["audit.redb", "audit.journal"] {
            let meta = std::fs::metadata(state.join(name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{name}");
        }
    }
    assert!(stdout.contains("records up to seq 12"), "{stdout}");
    assert!(stdout.contains("replaced store is kept"), "{stdout}");
    assert!(
        std::fs::read_dir(&state).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("audit.redb.replaced-")),
        "the replaced store is evidence: kept"
    );

    // The third run ships the restore record and its own start on the new epoch.
    let (mut third, _, _) = support::spawn(&gateway.config, &["serve"], &[]);
    let deadline = std::time::Instant::now() + PATIENCE;
    let received = loop {
        let received: Vec<_> = rsyslog.received().iter().map(|l| identity(l)).collect();
        if received.iter().filter(|r| r.0 != first_epoch).count() >= 3
            || std::time::Instant::now() > deadline
        {
            break received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_identity: BTreeMap<(u64, u64), &Identity> =
        received.iter().map(|r| ((r.0, r.1), r)).collect();
    let epochs: std::collections::BTreeSet<u64> = received.iter().map(|r| r.0).collect();
    assert_eq!(epochs.len(), 2, "two epochs: {epochs:?}");
    let epoch = *epochs.iter().next_back().unwrap();
    assert_eq!(*epochs.iter().next().unwrap(), first_epoch);
    assert!(
        epoch > 1_700_000_000_000,
        "an epoch is the restore's Unix ms: {epoch}"
    );
    // Sequence numbers 13 to 15 exist twice, as different records the repository keeps apart.
    for seq in 13..=15 {
        let old = by_identity
            .get(&(first_epoch, seq))
            .unwrap_or_else(|| panic!("({first_epoch}, {seq}) lost"));
        let new = by_identity
            .get(&(epoch, seq))
            .unwrap_or_else(|| panic!("({epoch}, {seq}) not shipped"));
        assert_ne!(old.3, new.3, "seq {seq}: two different records");
    }
    // The new epoch chains onto the backup's last record, and starts with an alert.
    assert_eq!(
        by_identity[&(epoch, 13)].2,
        by_identity[&(first_epoch, 12)].3
    );
    assert!(
        by_identity[&(epoch, 13)].4,
        "trail_restored is shipped as an alert"
    );
    let restored_line = rsyslog
        .received()
        .into_iter()
        .find(|l| identity(l).0 == epoch && identity(l).1 == 13)
        .unwrap();
    assert!(restored_line.contains("110134"), "{restored_line}");
    support::signal(third.id(), "TERM");
    assert!(support::wait_child(&mut third, Duration::from_secs(20)).success());

    let (code, stdout, stderr) = support::run(&gateway.config, &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit trail intact"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "epoch {first_epoch} from seq 1, epoch {epoch} from seq 13"
        )),
        "{stdout}"
    );
    let (_, listed, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "trail_restored", "--json"],
        &[],
    );
    assert!(
        listed.contains(&format!(
            "previous_epoch={first_epoch} backup_head=12 backup_taken="
        )),
        "{listed}"
    );
}
