//! Start, readiness, systemd notification, shutdown: the gateway behaves like a well-kept
//! Debian service.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;
#[cfg(feature = "test-hooks")]
use std::time::Instant;

use support::{Gateway, Pki, run, spawn, wait_child, write_config};

const EXIT: Duration = Duration::from_secs(20);

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let mut gateway = Gateway::start();
    let client = gateway.client(Some(support::DESK_A));
    let url = gateway.url("/test-hooks/slow?ms=1500");
    let in_flight = tokio::spawn(async move { client.get(url).send().await?.text().await });
    let started = gateway
        .stderr
        .wait_for(EXIT, |l| l.contains("test hook: slow request started"));
    assert!(started.is_some(), "{}", gateway.stderr.all());

    gateway.terminate();
    let closed = gateway
        .stderr
        .wait_for(EXIT, |l| l.contains("listener closed"));
    assert!(closed.is_some(), "{}", gateway.stderr.all());
    // New connections are refused while the old request is still running.
    let late = gateway
        .client(None)
        .get(gateway.url("/healthz"))
        .send()
        .await;
    assert!(late.is_err(), "a new request was accepted during the drain");

    let body = in_flight
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!(body, "slept 1500 ms");
    assert_eq!(
        gateway.wait(EXIT).code(),
        Some(0),
        "{}",
        gateway.stderr.all()
    );
    let logs = gateway.stderr.all();
    assert!(logs.contains("all in-flight requests finished"), "{logs}");
    assert!(logs.contains(r#""message":"stopped""#), "{logs}");
}

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread")]
async fn grace_period_bounds_the_drain() {
    let mut gateway = Gateway::start_with("shutdown_grace_secs = 1", |_| String::new());
    let client = gateway.client(Some(support::DESK_A));
    let url = gateway.url("/test-hooks/slow?ms=20000");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    assert!(
        gateway
            .stderr
            .wait_for(EXIT, |l| l.contains("test hook: slow request started"))
            .is_some()
    );
    let stopping = Instant::now();
    gateway.terminate();
    assert_eq!(gateway.wait(EXIT).code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "drain was not bounded: {:?}",
        stopping.elapsed()
    );
    assert!(gateway.stderr.all().contains("grace period over"));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request cannot have succeeded"
    );
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut gateway = Gateway::start();
    support::signal(gateway.pid(), "INT");
    assert_eq!(gateway.wait(EXIT).code(), Some(0));
    assert!(
        gateway.stderr.all().contains(r#""signal":"SIGINT""#),
        "{}",
        gateway.stderr.all()
    );
}

#[test]
fn second_gateway_on_the_same_state_directory_is_refused() {
    let gateway = Gateway::start();
    let (code, _, stderr) = run(&gateway.config, &["serve"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    // The first one is unaffected.
    let bound = gateway.listen_env();
    let env: Vec<(&str, &str)> = bound.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, stdout, _) = run(&gateway.config, &["healthcheck"], &env);
    assert_eq!(code, 0, "{stdout}");
}

/// A listening address already taken fails the start before the stores open: a unit
/// restarting on it adds nothing to the trail at each attempt (before, each one recorded
/// its configuration load, then failed to bind).
#[test]
fn a_port_taken_fails_the_start_before_anything_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let config = write_config(dir.path(), &pki, "", "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = run(
        &config,
        &["serve"],
        &[("SAMU_GATEWAY__SERVER__LISTEN", addr.as_str())],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(
        !dir.path().join("state/audit.redb").exists(),
        "nothing written before the bind"
    );
}

#[test]
fn unreadable_audit_store_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let config = write_config(dir.path(), &pki, "", "");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/audit.redb"), b"definitely not redb").unwrap();
    let (code, _, stderr) = run(&config, &["serve"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("audit store") && stderr.contains("audit.redb"),
        "{stderr}"
    );
}

#[test]
fn healthcheck_follows_the_running_gateway() {
    let mut gateway = Gateway::start();
    let bound = gateway.listen_env();
    let env: Vec<(&str, &str)> = bound.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, stdout, stderr) = run(&gateway.config, &["healthcheck"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("management /healthz: 200"), "{stdout}");
    assert!(stdout.contains("management /readyz: 200"), "{stdout}");
    assert!(stdout.contains("public /healthz: 200"), "{stdout}");

    // As an operator runs it outside the unit: the key is a systemd credential it cannot
    // resolve, which healthcheck does not need.
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let key = format!("server_key = \"{}\"", gateway.pki.server_key.display());
    assert!(text.contains(&key));
    let outside = gateway.dir.path().join("outside-the-unit.toml");
    std::fs::write(
        &outside,
        text.replace(&key, "server_key = \"credential:server.key\""),
    )
    .unwrap();
    let (code, stdout, stderr) = run(&outside, &["healthcheck"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");

    gateway.terminate();
    gateway.wait(EXIT);
    let (code, stdout, _) = run(
        &gateway.config,
        &["healthcheck", "--timeout-secs", "2"],
        &env,
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("connect"), "{stdout}");
}

/// The gateway speaks the sd_notify protocol to a real datagram socket, as systemd does.
#[test]
fn notifies_ready_feeds_the_watchdog_and_announces_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let pki = Pki::new(dir.path());
    let config = write_config(dir.path(), &pki, "", "");
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "600000"),
    ];
    let (mut child, _, stderr) = spawn(&config, &["serve"], &env);

    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    while !received.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; got {received:?}\n{}", stderr.all()));
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(received[0].contains("READY=1"), "{received:?}");
    support::signal(child.id(), "TERM");
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert_eq!(wait_child(&mut child, EXIT).code(), Some(0));
    stderr.wait_closed(EXIT);
    assert!(stderr.all().contains("systemd watchdog enabled"));
}

/// `samu-gateway version | grep -q …`, `audit list | head`: a reader that goes away ends the
/// command with the shell's SIGPIPE status, without a panic or an error message.
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let gateway = Gateway::start();
    for args in [&["version"][..], &["audit", "list"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(support::BIN)
            .arg("--config")
            .arg(&gateway.config)
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

/// SIGHUP (an administrator's "reload" habit) is said to change nothing, and the gateway
/// goes on serving; a SIGTERM afterwards still stops it cleanly. Before, SIGHUP's default
/// ended the process at once: no drain, no stop on the record, and systemd took the exit
/// as clean and did not restart it.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_changes_nothing_and_the_gateway_keeps_serving() {
    let mut gateway = Gateway::start();
    support::signal(gateway.pid(), "HUP");
    let said = gateway
        .stderr
        .wait_for(EXIT, |l| l.contains("SIGHUP ignored"));
    assert!(said.is_some(), "{}", gateway.stderr.all());
    let health = gateway
        .client(None)
        .get(gateway.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(health, reqwest::StatusCode::OK);
    gateway.terminate();
    assert_eq!(
        gateway.wait(EXIT).code(),
        Some(0),
        "{}",
        gateway.stderr.all()
    );
    assert!(gateway.stderr.all().contains(r#""message":"stopped""#));
}
