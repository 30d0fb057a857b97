//! Monitoring that pages: the alert rules in config/prometheus/ pass promtool's checks and
//! unit tests, and every series they use is one a running gateway serves, with the values
//! the rules expect (readers, certificates, CRLs).

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::DevUpstream;
use support::{DESK_A, Gateway, Pki, write_config};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool (Debian package prometheus, installed by .ci/deps)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_alert_rules_pass_promtools_check_and_unit_tests() {
    let checked = promtool(&["check", "rules", "--lint-fatal", "samu-gateway-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "samu-gateway-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The `samu_gateway_*` series the rules use.
fn series_in_rules() -> Vec<String> {
    let rules = std::fs::read_to_string(rules_dir().join("samu-gateway-alerts.yml")).unwrap();
    let mut names: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("samu_gateway_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway with card login on a pcscd of one reader (desk A's; desk B's is missing), an
/// audit repository that is not there, and a record service that has stopped.
async fn gateway_with_one_reader() -> (Pcscd, VirtualCard, DevUpstream, Gateway) {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // The stand-in's files (CA, structure certificate, keys), but a port where nothing
    // answers: the record service is down.
    let record_service = DevUpstream::start(Vec::new());
    let upstream = record_service.toml_section().replace(
        &record_service.url,
        &format!("https://localhost:{}", closed_port()),
    );
    let client = &pki.clients[DESK_A];
    let extra = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{upstream}\n[[audit.receivers]]\nname = \"central\"\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\ntransport = \"syslog_tls\"\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        closed_port(),
        pki.server_ca.display(),
        client.cert.display(),
        client.key.display(),
    );
    let config = write_config(dir.path(), &pki, "", &extra);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    (pcscd, card, record_service, gateway)
}

/// The value of the one sample of `series` (name and labels as written) in `scrape`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_the_rules_use_is_served_with_the_values_they_expect() {
    let (_pcscd, _card, _record_service, gateway) = gateway_with_one_reader().await;
    // One access while the record service is down: a failure to count.
    let token = gateway.login_desk_a().await;
    let refused = gateway
        .client(Some(DESK_A))
        .post(gateway.url("/api/v1/break-glass"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "ins": support::upstream::nir(1), "ins_oid": "1.2.250.1.213.1.4.10",
            "call_id": "CRRA-1", "reason_code": "inconscient", "access_mode": "bris_de_glace",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let client = gateway.client(None);
    let url = gateway.management_url("/metrics");
    // The series come with the monitoring's rounds (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let (_, text) = support::get_text(&client, &url).await;
        let counted = |series: &str| sample(&text, series).is_some_and(|n| n >= 1.0);
        if text.contains(r#"samu_gateway_desk_reader_present{desk="desk-a"} 1"#)
            && counted(r#"samu_gateway_audit_ship_errors_total{receiver="central"}"#)
            && counted(r#"samu_gateway_record_service_errors_total{kind="upstream_unavailable"}"#)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the series never all came: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every series a rule uses is declared by the gateway (a counter's `_total` and a
    // histogram's `_bucket` are its samples' suffixes), so no rule watches a name that does
    // not exist.
    for name in series_in_rules() {
        let family = ["_total", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            scrape.contains(&format!("# TYPE {family} ")),
            "{name} is used by a rule and not served: {scrape}"
        );
    }
    assert_eq!(
        sample(
            &scrape,
            r#"samu_gateway_desk_reader_present{desk="desk-b"}"#
        ),
        Some(0.0),
        "desk B's reader is not plugged in: {scrape}"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    for certificate in ["server", "workstation_ca", "card_ca"] {
        let expiry = sample(
            &scrape,
            &format!(r#"samu_gateway_certificate_expiry_timestamp_seconds{{certificate="{certificate}"}}"#),
        )
        .unwrap_or_else(|| panic!("no expiry for {certificate}: {scrape}"));
        assert!(
            expiry > now,
            "{certificate} expires at {expiry}, before now"
        );
    }
    let crl = r#"{source="cards",file="card-ca.crl"}"#;
    let issued = sample(
        &scrape,
        &format!("samu_gateway_crl_this_update_timestamp_seconds{crl}"),
    )
    .unwrap_or_else(|| panic!("no CRL issue date: {scrape}"));
    let next = sample(
        &scrape,
        &format!("samu_gateway_crl_next_update_timestamp_seconds{crl}"),
    )
    .unwrap_or_else(|| panic!("no CRL next update: {scrape}"));
    assert!(issued <= now && now < next, "{issued} {now} {next}");
    assert!(
        scrape.contains("# TYPE samu_gateway_audit_ship_errors counter"),
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            r#"samu_gateway_audit_ship_backlog_oldest_seconds{receiver="central"}"#
        )
        .is_some(),
        "{scrape}"
    );
}
