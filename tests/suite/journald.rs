//! Under systemd, stderr is journald's stream (`JOURNAL_STREAM` names it): each line the
//! service writes starts with its syslog priority, which journald keeps as the entry's, so
//! `journalctl -u samu-gateway -p warning` shows the warnings, errors and alerts. Read
//! here from what the real binary writes, start to stop.

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use samu_gateway::audit::{Actor, Event, EventKind, Outcome};
use serde_json::Value;

/// Runs `serve` on a trail holding three wrong PINs at one desk (so the alert follower
/// raises a security alert at start) and without `[cards]` (a warning), stderr a file;
/// `JOURNAL_STREAM` names that file when `journal` is set, and another one otherwise.
/// Returns the lines written, once the service stopped.
fn lines_written(journal: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(dir.path());
    let wrong_pin = || Event {
        actor: Some(Actor {
            id_nat: Some("810002813839".into()),
            desk: Some("desk-a".into()),
            ..Actor::default()
        }),
        ..Event::new(
            EventKind::UserLogin,
            Outcome::Refused {
                reason: "wrong_pin".into(),
            },
        )
    };
    support::write_trail(
        dir.path(),
        &pki.audit_key,
        (0..3).map(|_| wrong_pin()).collect(),
    );
    let config = support::write_config(dir.path(), &pki, "", "");
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let named = if journal {
        std::fs::metadata(&log).unwrap()
    } else {
        std::fs::metadata(&config).unwrap()
    };
    let mut child = Command::new(support::BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("JOURNAL_STREAM", format!("{}:{}", named.dev(), named.ino()))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("listening") && text.contains("security alert") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "exited early: {text}");
        assert!(
            Instant::now() < deadline,
            "never listened and alerted: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    support::signal(child.id(), "TERM");
    assert_eq!(
        support::wait_child(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn under_journald_every_line_carries_the_priority_of_its_event() {
    let lines = lines_written(true);
    let mut seen = Vec::new();
    for line in &lines {
        let (priority, json) = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .unwrap_or_else(|| panic!("no priority prefix: {line}"));
        let priority: u8 = priority.parse().unwrap();
        let event: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("not JSON after the prefix ({e}): {line}"));
        // The priority is the event's own: its level, raised for alerts and notices.
        let expected = match event["level"].as_str().unwrap() {
            _ if event.get("alert").is_some() => 1,
            "ERROR" => 3,
            "WARN" => 4,
            "INFO" if event["notice"] == true => 5,
            "INFO" => 6,
            _ => 7,
        };
        assert_eq!(priority, expected, "{line}");
        seen.push((priority, event["message"].as_str().unwrap().to_owned()));
    }
    for (priority, message) in [
        (1, "security alert"),
        (4, "no [cards] section: card login is disabled"),
        (5, "listening"),
        (5, "stopped"),
        (6, "stores open"),
    ] {
        assert!(
            seen.iter().any(|(p, m)| *p == priority && m == message),
            "<{priority}> {message} not written: {lines:#?}"
        );
    }
    // What `journalctl -p warning` would show: the warning and the alert, not the rest.
    let shown: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| *p <= 4)
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(!shown.contains(&"listening"), "{shown:?}");
}

#[test]
fn outside_journald_lines_are_plain_json() {
    for line in lines_written(false) {
        assert!(line.starts_with('{'), "{line}");
        let _: Value = serde_json::from_str(&line).unwrap();
    }
}

/// A configuration `serve` refuses is written before logging starts: under journald its
/// lines are errors all the same, so `journalctl -u samu-gateway -p err` names the problem.
#[test]
fn under_journald_a_refused_configuration_is_written_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(dir.path());
    let config = support::write_config(dir.path(), &pki, "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[limits]\nper_hour_typo = 3\n")).unwrap();
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let named = std::fs::metadata(&log).unwrap();
    let status = Command::new(support::BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("JOURNAL_STREAM", format!("{}:{}", named.dev(), named.ino()))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(!written.is_empty());
    for line in written.lines() {
        assert!(line.starts_with("<3>configuration error: "), "{written}");
    }
    assert!(written.contains("per_hour_typo"), "{written}");
}
