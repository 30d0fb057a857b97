//! Audit trail benchmark: `cargo bench --bench audit` prints a report.
//!
//! - durable appends per second and p50/p99 append latency with 1, 8 and 64 concurrent
//!   appenders, for three writer batch policies (up to 64 records, with and without a 2 ms
//!   wait for the batch to fill, and one record per batch); whatever the policy, one
//!   `fdatasync` of the journal covers every batch written while the previous one ran, and
//!   an append returns only after the `fdatasync` that covers it;
//! - verification speed over 1,000,000 records;
//! - indexed lookups over them, and the trail of the access that came first (through the
//!   indexes, against a read of every record after it, which is what it cost before the
//!   subject index), and the review queue's first look over them.
//!
//! Pass `--quick` for a short smoke run (fewer records, shorter phases).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use samu_gateway::audit::event::{Decision, Review};
use samu_gateway::audit::export::{self, Filter};
use samu_gateway::audit::review;
use samu_gateway::audit::store::ReadStore;
use samu_gateway::audit::{
    Actor, AuditLog, AuditReader, AuditStore, CallContext, Event, EventKind, Outcome, PatientRef,
    Settings, Signer,
};

fn event(i: u64) -> Event {
    Event {
        actor: Some(Actor {
            id_nat: Some(format!("8100000{:05}", i % 300)),
            name: Some("Dr Bench".into()),
            profession: Some("10".into()),
            specialty: Some("SM59".into()),
            desk: Some(format!("regul-{}", i % 12)),
            workstation_sha256: Some("ab".repeat(32)),
            workstation: Some(format!("poste-{}", i % 12)),
        }),
        patient: Some(PatientRef {
            ins: format!("18505780{:07}", i % 100_000),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        call: Some(CallContext {
            call_id: format!("call-{i}"),
            reason_code: Some("patient_inconscient".into()),
            justification: Some(
                "Patient inconscient, recherche d'allergies avant administration".into(),
            ),
        }),
        ..Event::new(EventKind::PatientRecordRead, Outcome::Success)
    }
}

fn settings(batch_max_records: usize, batch_max_wait: Duration) -> Settings {
    Settings {
        node: "bench".into(),
        batch_max_records,
        batch_max_wait,
        checkpoint_every_records: 1000,
        checkpoint_every: Duration::from_secs(60),
    }
}

fn start(dir: &Path, name: &str, settings: Settings) -> Arc<AuditLog> {
    let key = dir.join(format!("{name}.key"));
    let signer = Signer::generate(&key).expect("key");
    let store = Arc::new(AuditStore::open(&dir.join(format!("{name}.redb"))).expect("store"));
    Arc::new(AuditLog::start(store, signer, settings).expect("log"))
}

struct Phase {
    appends: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run_phase(log: Arc<AuditLog>, appenders: u64, duration: Duration) -> Phase {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = a;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let _receipt = log.append(event(i)).await.expect("append");
                    latencies.push(t.elapsed());
                    i += appenders;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Phase {
        appends: latencies.len() as u64,
        elapsed,
        latencies,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let phase = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let verify_records: u64 = if quick { 20_000 } else { 1_000_000 };
    let dir = tempfile::Builder::new()
        .prefix("samu-audit-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!("# audit trail benchmark");
    println!("machine: {}; store in {}", machine(), dir.path().display());
    println!("each phase appends for {phase:?}; a record is ~600 bytes of JSON\n");
    println!(
        "target (issue 20): ≥ 100 000 durable appends/s with 64 appenders, p99 ≤ 2 ms; verification ≥ 500 000 records/s\n"
    );
    println!(
        "| writer batches | appenders | durable appends/s | p50 latency | p99 latency | journal syncs (records each; mean, longest) | index commits (mean, longest) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, batch, wait) in [
        ("up to 64 records, no wait", 64, Duration::ZERO),
        ("up to 64 records, 2 ms wait", 64, Duration::from_millis(2)),
        ("one record", 1, Duration::ZERO),
    ] {
        for appenders in [1u64, 8, 64] {
            let name = format!("{}-{}-{appenders}", batch, wait.as_millis());
            let log = start(dir.path(), &name, settings(batch, wait));
            let result = runtime.block_on(run_phase(log.clone(), appenders, phase));
            log.close().expect("close");
            let disk = log.disk_times().totals();
            let mean = |time: Duration, count: u64| {
                ms(time / u32::try_from(count.max(1)).unwrap_or(u32::MAX))
            };
            println!(
                "| {label} | {appenders} | {:.0} | {} | {} | {} ({:.1}; {}, {}) | {} ({}, {}) |",
                result.appends as f64 / result.elapsed.as_secs_f64(),
                ms(percentile(&result.latencies, 0.50)),
                ms(percentile(&result.latencies, 0.99)),
                disk.syncs,
                result.appends as f64 / disk.syncs.max(1) as f64,
                mean(disk.sync_time, disk.syncs),
                ms(disk.sync_max),
                disk.commits,
                mean(disk.commit_time, disk.commits),
                ms(disk.commit_max),
            );
        }
    }

    // Verification: load records in large batches, then verify the whole trail.
    let log = start(dir.path(), "verify", settings(4096, Duration::ZERO));
    // The first access of the trail: its decision comes last, a million records later.
    let first_access = runtime.block_on(async {
        let mut started = event(7);
        started.kind = EventKind::BreakGlassStarted;
        started.grant = Some("bench-grant".into());
        log.append(started).await.expect("append").seq()
    });
    let loading = Instant::now();
    runtime.block_on(async {
        let per_task = verify_records / 256;
        let tasks: Vec<_> = (0..256u64)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let _receipt = log.append(event(t * per_task + i)).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let decided = Event {
            review: Some(Review {
                of: first_access,
                decision: Decision::Justified,
                comment: String::new(),
                replaces: None,
            }),
            ..Event::new(EventKind::AccessReviewed, Outcome::Success)
        };
        let _receipt = log.append(decided).await.expect("append");
    });
    log.close().expect("close");
    let loaded = loading.elapsed();
    let trusted = Signer::load(&dir.path().join("verify.key"))
        .expect("key")
        .trusted();
    let reader = AuditReader::open(&dir.path().join("verify.redb")).expect("reader");
    let verifying = Instant::now();
    let report = export::verify_store(&reader, &trusted).expect("verify");
    let verified = verifying.elapsed();
    assert!(report.is_intact(), "{:?}", report.findings);
    println!(
        "\nverification: {} records and {} checkpoint signatures in {:.2} s = {:.0} records/s (loaded at {:.0} appends/s with 256 appenders, batches of up to 4096)",
        report.records,
        report.checkpoints_verified,
        verified.as_secs_f64(),
        report.records as f64 / verified.as_secs_f64(),
        report.records as f64 / loaded.as_secs_f64(),
    );
    let txn = reader.snapshot().expect("snapshot");
    for (what, filter) in [
        (
            "patient",
            Filter {
                patient: Some(format!("18505780{:07}", 4242)),
                ..Filter::default()
            },
        ),
        (
            "professional",
            Filter {
                professional: Some(format!("8100000{:05}", 42)),
                ..Filter::default()
            },
        ),
    ] {
        let t = Instant::now();
        let selection = export::select(&txn, &filter, None).expect("select");
        println!(
            "lookup by {what} over {} records: {} matching, {} read, in {}",
            report.records,
            selection.records.len(),
            selection.examined,
            ms(t.elapsed()),
        );
    }
    drop(txn);
    let t = Instant::now();
    let trail = review::trail(&reader, first_access)
        .expect("trail")
        .expect("an access");
    let indexed = t.elapsed();
    assert_eq!(trail.access.last_decision, Some(Decision::Justified));
    // No index by kind: every record is read and parsed, as the trail did before.
    let t = Instant::now();
    let every = export::select(
        &reader.snapshot().expect("snapshot"),
        &Filter {
            kind: Some(EventKind::AccessReviewed),
            ..Filter::default()
        },
        None,
    )
    .expect("select");
    let every_record = t.elapsed();
    println!(
        "trail of the first access ({} records, its decision {} records later): {} through the indexes; reading every record after it: {}",
        trail.records.len(),
        every.examined,
        ms(indexed),
        ms(every_record),
    );
    // The compliance page's first look after a start: starts and decisions parsed, the
    // rest told apart by their kind.
    let t = Instant::now();
    let pending = review::pending(&reader).expect("pending");
    println!(
        "review queue's first look over {} records: {} ({} accesses to review)",
        every.examined,
        ms(t.elapsed()),
        pending.len(),
    );
}
