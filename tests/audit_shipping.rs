//! The trail shipped to a real rsyslog over mutual TLS (RFC 5424/5425, DICOM payload):
//! every record arrives, validates against the DICOM schema and chains; a receiver outage
//! and gateway restarts lose nothing; a gateway killed mid-drain resumes; a receiver that
//! refuses the gateway's certificate gets nothing and the gateway says so.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

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
    let body = line[line.find("] <").unwrap() + 2..].to_owned();
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
    assert!(lines[0].contains(" samu-gateway - IHE+DICOM [samu@32473 node=\"gateway-test\""));
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = messages
        .iter()
        .map(|(seq, (_, _, body))| {
            let path = dir.path().join(format!("{seq}.xml"));
            std::fs::write(&path, body).unwrap();
            path
        })
        .collect();
    let schema = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/audit/dicom2017c.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let gateway = gateway(&rsyslog, "gateway-test", 6000);
    tokio::task::block_in_place(|| rsyslog.wait_for(1000, PATIENCE));
    support::signal(gateway.pid(), "KILL");
    let config = gateway.config.clone();
    let (mut again, _, _) = support::spawn(&config, &["serve"], &[]);
    // 6000 + two runs' configuration_loaded and service_started.
    let deadline = std::time::Instant::now() + PATIENCE;
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rsyslog.received().is_empty(), "{:?}", rsyslog.received());
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
        let (status, body) = support::get_json(&client, &gateway.url("/readyz")).await;
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
    let (_, metrics) = support::get_text(&client, &gateway.url("/metrics")).await;
    assert!(
        metrics.contains("samu_gateway_audit_ship_backlog_records{receiver=\"repository\"} 5"),
        "{metrics}"
    );
    assert!(!metrics.contains("samu_gateway_audit_ship_errors{receiver=\"repository\"} 0"));
}
