//! Audit shipping to a real rsyslog over mutual TLS: `cargo bench --bench shipping`.
//!
//! 1. Drain rate: a 100 000-record backlog in the trail, then the shipper starts; records/s
//!    until the repository has written them all.
//! 2. Lag at a steady 500 records/s for 10 s: time from each append's return (durable) to
//!    the repository's file holding it; median, p95, max over sampled records.
//! 3. The whole trail drained again to a second rsyslog over RELP (`imrelp`, TLS): each
//!    record counted only on the repository's acknowledgement.
//! 4. The steady load again over RELP.
//! 5. The anchor: the same messages to another RELP repository by rsyslog's own client
//!    (`omrelp`), fed over plain TCP from a queue that holds them all; and our RELP drain
//!    as a ratio of it.
//!
//! The shipper runs in-process (the library's `audit::ship`), as in the gateway. rsyslog
//! rsyslog-gnutls and rsyslog-relp (imrelp, omrelp) come with `bash .ci/deps`. `--quick` uses 10 000 records and 3 s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use samu_gateway::audit::ship::{self, Receiver, ReceiverConfig};
use samu_gateway::audit::{AuditLog, AuditStore, Event, EventKind, Outcome, Settings, Signer};
use support::rsyslog::{RelpForwarder, Rsyslog};

fn receiver(rsyslog: &Rsyslog, name: &str) -> Arc<Receiver> {
    let toml = rsyslog.receiver_toml(name, "gateway-bench");
    let table = toml.trim().trim_start_matches("[[audit.receivers]]");
    let config: ReceiverConfig = toml::from_str(table).expect("receiver");
    Arc::new(Receiver::new(config, 0).expect("receiver"))
}

fn log(dir: &std::path::Path) -> (Arc<AuditStore>, Arc<AuditLog>) {
    let key = dir.join("signing.key");
    if !key.exists() {
        Signer::generate(&key).expect("key");
    }
    let store = Arc::new(AuditStore::open(&dir.join("audit.redb")).expect("store"));
    let settings = Settings {
        node: "gateway-bench".into(),
        batch_max_records: 512,
        batch_max_wait: Duration::ZERO,
        checkpoint_every_records: 10_000,
        checkpoint_every: Duration::from_secs(3600),
    };
    let log = Arc::new(
        AuditLog::start(store.clone(), Signer::load(&key).expect("key"), settings).expect("log"),
    );
    (store, log)
}

fn event() -> Event {
    Event::new(EventKind::PatientSearch, Outcome::Success).with_detail("bench")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (backlog, steady_secs) = if quick {
        (10_000u64, 3u64)
    } else {
        (100_000, 10)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rsyslog = Rsyslog::start();
    let dir = tempfile::tempdir().expect("dir");
    let (store, log) = log(dir.path());

    // 1. Backlog, then drain.
    runtime.block_on(async {
        let mut left = backlog;
        while left > 0 {
            let n = left.min(500);
            log.append_all((0..n).map(|_| event()).collect())
                .await
                .expect("append");
            left -= n;
        }
    });
    let started = Instant::now();
    let mut offset = 0;
    let mut received = 0u64;
    runtime.block_on(async {
        ship::start(
            vec![receiver(&rsyslog, "bench")],
            store.clone(),
            log.clone(),
        );
        while received < backlog {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (lines, next) = rsyslog.tail(offset);
            received += lines.len() as u64;
            offset = next;
        }
    });
    let drain = started.elapsed();

    // 2. Steady 500 records/s for a while.
    let (steady_count, lags) = steady(&runtime, &log, &rsyslog, offset, backlog, steady_secs);
    println!("\naudit shipping to rsyslog (gtls, mutual TLS), DICOM payload\n");
    println!("| measure | result |\n|---|---|");
    println!(
        "| drain of a {backlog}-record backlog | {:.0} records/s ({:.1} s) |",
        backlog as f64 / drain.as_secs_f64(),
        drain.as_secs_f64()
    );
    if !lags.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| lag at a steady 500 records/s ({} records; observed by polling the file every 5 ms) | median {:.0} ms, p95 {:.0} ms, max {:.0} ms |",
            lags.len(),
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.95)),
            ms(*lags.last().expect("lags"))
        );
    }
    // 3. Everything again, over RELP.
    let relp = Rsyslog::start_relp();
    let total = backlog + steady_count;
    let started = Instant::now();
    let mut offset = 0;
    let mut received = 0u64;
    runtime.block_on(async {
        ship::start(
            vec![receiver(&relp, "bench-relp")],
            store.clone(),
            log.clone(),
        );
        while received < total {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (lines, next) = relp.tail(offset);
            received += lines.len() as u64;
            offset = next;
        }
    });
    let relp_drain = started.elapsed();
    println!(
        "| drain of {total} records over RELP (each acknowledged) | {:.0} records/s ({:.1} s); target ≥ 50,000/s |",
        total as f64 / relp_drain.as_secs_f64(),
        relp_drain.as_secs_f64()
    );
    // 4. The steady load again, the lag now observed on the RELP repository.
    let (_, lags) = steady(&runtime, &log, &relp, offset, total, steady_secs);
    if !lags.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| lag over RELP at a steady 500 records/s ({} records) | median {:.0} ms, p95 {:.0} ms, max {:.0} ms |",
            lags.len(),
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.95)),
            ms(*lags.last().expect("lags"))
        );
    }
    // 5. The anchor: the same messages, the same kind of repository, fed by rsyslog's
    // own RELP client (omrelp) instead of our shipper.
    let repository = Rsyslog::start_relp();
    let forwarder = RelpForwarder::start(&repository, "gateway-bench");
    let lines = rsyslog.received();
    let sent = lines.len() as u64;
    let started = Instant::now();
    {
        use std::io::Write as _;
        let mut plain = std::io::BufWriter::new(
            std::net::TcpStream::connect(("127.0.0.1", forwarder.port)).expect("forwarder"),
        );
        for line in &lines {
            plain.write_all(line.as_bytes()).expect("forward");
            plain.write_all(b"\n").expect("forward");
        }
        plain.flush().expect("forward");
    }
    let mut offset = 0;
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < sent {
        assert!(
            Instant::now() < deadline,
            "omrelp delivered only {received} of {sent}: {}",
            forwarder.log()
        );
        std::thread::sleep(Duration::from_millis(50));
        let (lines, next) = repository.tail(offset);
        received += lines.len() as u64;
        offset = next;
    }
    let anchor = started.elapsed();
    println!(
        "| anchor: the same {sent} messages to a RELP repository by rsyslog's own client (omrelp, window 1,024) | {:.0} records/s ({:.1} s) |",
        sent as f64 / anchor.as_secs_f64(),
        anchor.as_secs_f64()
    );
    println!(
        "| our RELP drain against omrelp's | {:.2}× |",
        (total as f64 / relp_drain.as_secs_f64()) / (sent as f64 / anchor.as_secs_f64())
    );
    drop(forwarder);
    drop(repository);
    drop(relp);
    drop(rsyslog);
}

/// Appends 500 records/s for `secs` seconds while a watcher thread notes when each record
/// (a sequence number above `after`) lands in `repository`'s file from `offset` on; the
/// number appended and each record's lag, sorted.
fn steady(
    runtime: &tokio::runtime::Runtime,
    log: &Arc<AuditLog>,
    repository: &Rsyslog,
    offset: u64,
    after: u64,
    secs: u64,
) -> (u64, Vec<Duration>) {
    let count = secs * 500;
    let (appended, arrived) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut arrived: HashMap<u64, Instant> = HashMap::new();
            let mut offset = offset;
            let deadline = Instant::now() + Duration::from_secs(secs + 60);
            while (arrived.len() as u64) < count && Instant::now() < deadline {
                let (lines, next) = repository.tail(offset);
                offset = next;
                let now = Instant::now();
                for line in &lines {
                    let seq = line
                        .find(" seq=\"")
                        .and_then(|at| line[at + 6..].split('"').next())
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(seq) = seq.filter(|s| *s > after) {
                        arrived.entry(seq).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            arrived
        });
        let appended: HashMap<u64, Instant> = runtime.block_on(async {
            let mut appended = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while (appended.len() as u64) < count {
                tick.tick().await;
                let receipts = log
                    .append_all((0..5).map(|_| event()).collect())
                    .await
                    .expect("append");
                let now = Instant::now();
                for receipt in receipts {
                    appended.insert(receipt.seq(), now);
                }
            }
            appended
        });
        (appended, watcher.join().expect("watcher"))
    });
    let mut lags: Vec<Duration> = appended
        .iter()
        .filter_map(|(seq, at)| Some(arrived.get(seq)?.saturating_duration_since(*at)))
        .collect();
    lags.sort();
    (appended.len() as u64, lags)
}
