//! The audit trail: durable appends, a chain that survives restarts and refuses to fork,
//! verification that names each kind of tampering, indexed queries, retention.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use samu_gateway::audit::export::{self, Filter};
use samu_gateway::audit::store::ReadStore;
use samu_gateway::audit::verify::Finding;
use samu_gateway::audit::{
    Actor, AuditError, AuditLog, AuditReader, AuditStore, CallContext, Event, EventKind, Outcome,
    PatientRef, Settings, Signer, TrustedKeys,
};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Sets a counter of the store's meta table behind the gateway's back, as someone with
/// write access to the file could (the store's own writers are private to `audit`).
fn tamper_meta(path: &Path, key: &str, value: u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

fn settings(checkpoint_every_records: u64) -> Settings {
    Settings {
        node: "gw-test".into(),
        batch_max_records: 64,
        // No extra wait: these tests append mostly from one thread at a time.
        batch_max_wait: Duration::ZERO,
        checkpoint_every_records,
        checkpoint_every: Duration::from_secs(3600),
    }
}

/// A break-glass read by one of 4 professionals at one of 2 desks, for one of `patients`.
fn access(i: u64, patients: u64) -> Event {
    Event {
        actor: Some(Actor {
            id_nat: Some(format!("81000000000{}", i % 4)),
            name: Some("Dr Test".into()),
            desk: Some(format!("regul-{}", i % 2)),
            ..Actor::default()
        }),
        patient: Some(PatientRef {
            ins: format!("1850578006{:05}", i % patients),
            oid: "1.2.250.1.213.1.4.8".into(),
        }),
        call: Some(CallContext {
            call_id: format!("call-{i}"),
            reason_code: Some("inconscient".into()),
            justification: None,
        }),
        ..Event::new(EventKind::PatientRecordRead, Outcome::Success)
    }
}

struct Trail {
    dir: tempfile::TempDir,
    key: PathBuf,
    trusted: TrustedKeys,
}

impl Trail {
    /// A closed trail of `n` records with a checkpoint every `every` records.
    fn new(n: u64, every: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.key");
        let signer = Signer::generate(&key).unwrap();
        let trusted = signer.trusted();
        let trail = Self { dir, key, trusted };
        let log = trail.open(every);
        for i in 1..=n {
            let _receipt = log.append_blocking(access(i, 10)).unwrap();
        }
        log.close().unwrap();
        trail
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.redb")
    }

    fn open(&self, every: u64) -> AuditLog {
        let store = Arc::new(AuditStore::open(&self.path()).unwrap());
        AuditLog::start(store, Signer::load(&self.key).unwrap(), settings(every)).unwrap()
    }

    /// A copy of the store, rewritten by `edit` as someone with the file could.
    fn tampered(
        &self,
        edit: impl FnOnce(&mut BTreeMap<u64, Vec<u8>>, &mut BTreeMap<u64, Vec<u8>>),
    ) -> PathBuf {
        let copy = self.dir.path().join(format!("copy-{}.redb", rand_u64()));
        std::fs::copy(self.path(), &copy).unwrap();
        let db = redb::Database::create(&copy).unwrap();
        let read = |table: TableDefinition<u64, &[u8]>| -> BTreeMap<u64, Vec<u8>> {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(table).unwrap();
            t.iter()
                .unwrap()
                .map(|e| e.unwrap())
                .map(|(k, v)| (k.value(), v.value().to_vec()))
                .collect()
        };
        let (mut records, mut checkpoints) = (read(RECORDS), read(CHECKPOINTS));
        edit(&mut records, &mut checkpoints);
        let txn = db.begin_write().unwrap();
        for (table, content) in [(RECORDS, &records), (CHECKPOINTS, &checkpoints)] {
            let mut t = txn.open_table(table).unwrap();
            t.retain(|_, _| false).unwrap();
            for (k, v) in content {
                t.insert(*k, v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        copy
    }

    /// The whole trail exported as JSONL, as `audit export` writes it.
    fn export_jsonl(&self) -> PathBuf {
        let file = self.dir.path().join("export.jsonl");
        let reader = AuditReader::open(&self.path()).unwrap();
        let mut out = std::fs::File::create(&file).unwrap();
        export::export(
            &reader.snapshot().unwrap(),
            &Filter::default(),
            export::Format::Jsonl,
            &mut out,
        )
        .unwrap();
        file
    }

    fn verify(&self, path: &Path) -> Vec<Finding> {
        export::verify_store(&AuditReader::open(path).unwrap(), &self.trusted)
            .unwrap()
            .findings
    }
}

fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn edit_record(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    f(&mut value);
    // Same field order as the writer (serde_json keeps insertion order only with
    // preserve_order; re-serialising is what a tamperer would do anyway).
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn intact_trail_verifies_with_every_checkpoint() {
    let trail = Trail::new(30, 10);
    let report =
        export::verify_store(&AuditReader::open(&trail.path()).unwrap(), &trail.trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.records, 30);
    assert_eq!(report.range, Some((1, 30)));
    assert_eq!(report.checkpoints_verified, 3);
}

#[test]
fn modified_record_is_named() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        let edited = edit_record(&records[&15], |v| v["call"]["call_id"] = "call-999".into());
        records.insert(15, edited);
    });
    assert_eq!(trail.verify(&copy), vec![Finding::Modified { seq: 15 }]);
}

/// Verification digests chunks of 1,024 records on several threads and applies them in
/// order: findings on both sides of a chunk boundary, and in a later chunk, come out as
/// they do serially.
#[test]
fn verification_across_chunks_names_each_finding_once() {
    let trail = Trail::new(3500, 500);
    let copy = trail.tampered(|records, _| {
        let edited = edit_record(&records[&1024], |v| v["call"]["call_id"] = "call-x".into());
        // The last record of the first chunk: its successor, first of the next, links to it.
        records.insert(1024, edited);
        records.remove(&3001);
    });
    assert_eq!(
        trail.verify(&copy),
        vec![
            Finding::Modified { seq: 1024 },
            Finding::Deleted {
                from: 3001,
                to: 3001
            },
        ]
    );
}

#[test]
fn modified_record_under_a_checkpoint_is_named_twice() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        let edited = edit_record(&records[&20], |v| {
            v["actor"]["id_nat"] = "810000000009".into()
        });
        records.insert(20, edited);
    });
    let findings = trail.verify(&copy);
    assert!(
        findings.contains(&Finding::Modified { seq: 20 }),
        "{findings:?}"
    );
    assert!(
        findings.contains(&Finding::CheckpointMismatch { checkpoint: 20 }),
        "{findings:?}"
    );
}

#[test]
fn deleted_record_is_named() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        records.remove(&7);
    });
    assert_eq!(
        trail.verify(&copy),
        vec![Finding::Deleted { from: 7, to: 7 }]
    );
}

#[test]
fn reordered_records_are_named() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        let (a, b) = (records[&12].clone(), records[&13].clone());
        records.insert(12, b);
        records.insert(13, a);
    });
    assert_eq!(trail.verify(&copy), vec![Finding::Reordered { seq: 12 }]);
}

#[test]
fn inserted_record_is_named() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        // A forged record linked to record 4, slipped in as 5; what followed moves down one slot.
        let forged = edit_record(&records[&5], |v| v["call"]["call_id"] = "forged".into());
        let shifted: Vec<(u64, Vec<u8>)> = records
            .range(5..)
            .map(|(k, v)| (k + 1, v.clone()))
            .collect();
        records.retain(|k, _| *k < 5);
        records.insert(5, forged);
        records.extend(shifted);
    });
    assert_eq!(trail.verify(&copy), vec![Finding::Inserted { seq: 5 }]);
}

#[test]
fn truncated_tail_after_the_last_checkpoint_is_named() {
    let trail = Trail::new(25, 10);
    let copy = trail.tampered(|records, _| {
        records.retain(|k, _| *k <= 22);
    });
    assert_eq!(
        trail.verify(&copy),
        vec![Finding::TruncatedTail {
            last: 22,
            expected: 25
        }]
    );
}

/// The tail removed with the store's own count lowered to match: the records a
/// repository was sent still say how far the trail went.
#[test]
fn a_tail_a_repository_received_is_missed_even_with_the_count_lowered() {
    let trail = Trail::new(25, 10);
    let copy = trail.tampered(|records, _| {
        records.retain(|k, _| *k <= 22);
    });
    tamper_meta(&copy, "head_seq", 22);
    tamper_meta(&copy, "shipped_to:repository-1", 24);
    assert!(
        trail.verify(&copy).contains(&Finding::TruncatedTail {
            last: 22,
            expected: 25
        }),
        "the last checkpoint (25) says so first"
    );
    // Below the last checkpoint, only the repository's cursor tells.
    let copy = trail.tampered(|records, checkpoints| {
        records.retain(|k, _| *k <= 20);
        checkpoints.retain(|k, _| *k <= 20);
    });
    tamper_meta(&copy, "head_seq", 20);
    tamper_meta(&copy, "shipped_to:repository-1", 23);
    assert_eq!(
        trail.verify(&copy),
        vec![Finding::TruncatedTail {
            last: 20,
            expected: 23
        }]
    );
}

#[test]
fn truncation_past_a_checkpoint_is_named() {
    let trail = Trail::new(25, 10);
    let copy = trail.tampered(|records, _| {
        records.retain(|k, _| *k <= 17);
    });
    let findings = trail.verify(&copy);
    assert!(
        findings.contains(&Finding::TruncatedTail {
            last: 17,
            expected: 20
        }),
        "{findings:?}"
    );
}

#[test]
fn bad_checkpoint_signature_is_named() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|_, checkpoints| {
        let edited = edit_record(&checkpoints[&10], |v| {
            let sig = v["signature"].as_str().unwrap().to_owned();
            let flipped = if sig.starts_with('0') { "1" } else { "0" };
            v["signature"] = format!("{flipped}{}", &sig[1..]).into();
        });
        checkpoints.insert(10, edited);
    });
    assert_eq!(
        trail.verify(&copy),
        vec![Finding::BadSignature { checkpoint: 10 }]
    );
}

#[test]
fn rewritten_and_relinked_trail_is_caught_by_its_checkpoint() {
    // The strongest local attack: modify record 12 and recompute every later link. Only
    // the signed checkpoint at 20 can tell, and it does.
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        let mut prev: Option<String> = None;
        for seq in 12..=30 {
            let edited = edit_record(&records[&seq], |v| {
                if seq == 12 {
                    v["actor"]["id_nat"] = "810000000009".into();
                }
                if let Some(p) = &prev {
                    v["prev"] = p.clone().into();
                }
            });
            prev = Some(samu_gateway::encoding::hex(
                &samu_gateway::audit::chain::hash(&edited),
            ));
            records.insert(seq, edited);
        }
    });
    let findings = trail.verify(&copy);
    assert!(
        findings.contains(&Finding::Modified { seq: 11 })
            || findings.contains(&Finding::CheckpointMismatch { checkpoint: 20 }),
        "{findings:?}"
    );
    assert!(
        findings.contains(&Finding::CheckpointMismatch { checkpoint: 20 }),
        "{findings:?}"
    );
}

#[test]
fn untrusted_signing_key_is_named() {
    let trail = Trail::new(10, 5);
    let other = Signer::generate(&trail.dir.path().join("other.key")).unwrap();
    let report =
        export::verify_store(&AuditReader::open(&trail.path()).unwrap(), &other.trusted()).unwrap();
    assert!(
        matches!(
            report.findings[0],
            Finding::UntrustedKey { checkpoint: 5, .. }
        ),
        "{:?}",
        report.findings
    );
}

/// An exported file is verified in chunks on several threads too: findings on both sides of
/// a chunk boundary, and unreadable lines in later chunks (one of them too long to be a
/// record), come out in the order read.
#[test]
fn exported_file_verification_across_chunks_names_each_finding_once() {
    let trail = Trail::new(3500, 500);
    let file = trail.export_jsonl();
    let record = |seq: u64| format!("{{\"v\":1,\"seq\":{seq},");
    let tampered: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with(&record(3001)))
        .map(|line| {
            if line.starts_with(&record(1024)) {
                line.replace("call-1024\"", "call-x\"")
            } else if line.starts_with(&record(2500)) {
                "not a record".to_owned()
            } else if line.starts_with(&record(3200)) {
                // Longer than any record can be: read past, never held whole.
                format!("{line}{}", " ".repeat(1 << 20))
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(&file, tampered.join("\n") + "\n").unwrap();
    let report = export::verify_file(&file, &trail.trusted).unwrap();
    assert_eq!(
        report.findings,
        vec![
            Finding::Modified { seq: 1024 },
            Finding::Unreadable { position: 2500 },
            Finding::Unreadable { position: 3199 },
            // An unreadable line holds no sequence number: the one it replaced is missing.
            Finding::Deleted {
                from: 2500,
                to: 2500
            },
            Finding::Deleted {
                from: 3001,
                to: 3001
            },
            Finding::Deleted {
                from: 3200,
                to: 3200
            },
        ]
    );
    assert_eq!(report.records, 3499);
}

/// The same tamperings, on an exported JSONL file.
#[test]
fn exported_file_verifies_and_its_tampering_is_named() {
    let trail = Trail::new(30, 10);
    let file = trail.export_jsonl();
    let report = export::verify_file(&file, &trail.trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.records, 30);

    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let record_line = |seq: u64| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("{{\"v\":1,\"seq\":{seq},")))
            .unwrap()
    };
    let check = |edit: &dyn Fn(&mut Vec<String>), expected: Vec<Finding>| {
        let mut copy = lines.clone();
        edit(&mut copy);
        let path = trail.dir.path().join("tampered.jsonl");
        std::fs::write(&path, copy.join("\n") + "\n").unwrap();
        assert_eq!(
            export::verify_file(&path, &trail.trusted).unwrap().findings,
            expected
        );
    };
    check(
        &|c| c[record_line(15)] = c[record_line(15)].replace("call-15", "call-51"),
        vec![Finding::Modified { seq: 15 }],
    );
    check(
        &|c| {
            c.remove(record_line(7));
        },
        vec![Finding::Deleted { from: 7, to: 7 }],
    );
    check(
        &|c| c.swap(record_line(12), record_line(13)),
        vec![Finding::Reordered { seq: 12 }],
    );
    check(
        &|c| {
            let forged = c[record_line(5)].replace("call-5\"", "forged\"");
            c.insert(record_line(5), forged);
        },
        vec![Finding::Inserted { seq: 5 }],
    );
    check(
        &|c| c.truncate(c.len() - 3),
        vec![
            Finding::TruncatedTail {
                last: 28,
                expected: 30,
            },
            Finding::ExportCutShort,
            // Checkpoint 30 signs a record the file lacks: 21 to 28 are under none.
            Finding::Unsigned { from: 21, to: 28 },
        ],
    );
}

/// An export's checkpoints are lines anyone can delete: records no trusted checkpoint
/// signs are named, so a file whose checkpoints were stripped, then edited at will, never
/// verifies. Before, the last record (which no later record links) could be rewritten
/// once its checkpoint line was gone, and the file read "intact, 0 signatures".
#[test]
fn an_export_whose_checkpoints_were_removed_does_not_verify() {
    let trail = Trail::new(30, 10);
    let file = trail.export_jsonl();
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let check = |keep: &dyn Fn(&str) -> bool, expected: Vec<Finding>| {
        let edited: Vec<String> = lines
            .iter()
            .filter(|l| keep(l))
            .map(|l| {
                if l.starts_with("{\"v\":1,\"seq\":30,") {
                    l.replace("call-30\"", "forged\"")
                } else {
                    l.clone()
                }
            })
            .collect();
        let path = trail.dir.path().join("stripped.jsonl");
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        let report = export::verify_file(&path, &trail.trusted).unwrap();
        assert_eq!(report.findings, expected);
    };
    let checkpoint = |l: &str| l.starts_with("{\"checkpoint\":");
    check(
        &|l| !checkpoint(l),
        vec![Finding::Unsigned { from: 1, to: 30 }],
    );
    check(
        &|l| !(checkpoint(l) && l.contains("\"seq\":30")),
        vec![Finding::Unsigned { from: 21, to: 30 }],
    );
}

#[test]
fn cli_verify_names_the_problem_and_exits_1() {
    let trail = Trail::new(30, 10);
    let copy = trail.tampered(|records, _| {
        records.remove(&9);
    });
    let state = trail.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::rename(&copy, state.join("audit.redb")).unwrap();
    let pki = support::Pki::new(trail.dir.path());
    let config = support::write_config(trail.dir.path(), &pki, "", "");
    let public_key = Signer::load(&trail.key)
        .unwrap()
        .public_key_hex()
        .to_owned();
    let (code, stdout, stderr) = support::run(
        &config,
        &["audit", "verify", "--public-key", &public_key],
        &[],
    );
    assert_eq!(code, 2, "not intact: {stdout}{stderr}");
    assert!(stdout.contains("record 9 was deleted"), "{stdout}");
    // A trail that could not be checked is another answer than one that failed it.
    let (code, stdout, stderr) = support::run(
        &config,
        &[
            "audit",
            "verify",
            "--file",
            "/nonexistent/export.jsonl",
            "--public-key",
            &public_key,
        ],
        &[],
    );
    assert_eq!(code, 1, "could not verify: {stdout}{stderr}");
    assert!(stderr.contains("cannot verify the file"), "{stderr}");
}

/// An auditor with an export and the public key, on a machine with no gateway
/// configuration: verification needs nothing else, and without the key the refusal says
/// what to pass.
#[test]
fn an_export_verifies_offline_with_only_the_public_key() {
    let trail = Trail::new(12, 5);
    let file = trail.export_jsonl();
    let nowhere = trail.dir.path().join("no-such-gateway.toml");
    let file_arg = file.to_str().unwrap();
    let (code, stdout, stderr) =
        support::run(&nowhere, &["audit", "verify", "--file", file_arg], &[]);
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(
        stderr.contains("no trusted public key: pass --public-key"),
        "{stderr}"
    );
    let public_key = Signer::load(&trail.key)
        .unwrap()
        .public_key_hex()
        .to_owned();
    let (code, stdout, stderr) = support::run(
        &nowhere,
        &[
            "audit",
            "verify",
            "--file",
            file_arg,
            "--public-key",
            &public_key,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit trail intact"), "{stdout}");
}

/// The signing key passed where its public half belongs is named as such and never
/// printed (the refusal used to quote the file); a mistyped path says so; `audit keygen`
/// never overwrites a `.pub` left by an earlier key.
#[test]
fn key_files_given_by_mistake_are_named_and_never_printed() {
    let trail = Trail::new(3, 5);
    let file = trail.export_jsonl();
    let nowhere = trail.dir.path().join("no-such-gateway.toml");
    let file_arg = file.to_str().unwrap();
    let private = std::fs::read_to_string(&trail.key).unwrap();
    let body = private.lines().nth(1).unwrap().to_owned();
    let verify = |key: &str| {
        support::run(
            &nowhere,
            &["audit", "verify", "--file", file_arg, "--public-key", key],
            &[],
        )
    };
    let (code, stdout, stderr) = verify(trail.key.to_str().unwrap());
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(stderr.contains("this is a private key"), "{stderr}");
    assert!(
        !stderr.contains(&body) && !stdout.contains(&body),
        "the private key was printed: {stderr}"
    );
    // The key's text itself, pasted in place of a path (its base64 may hold a '/', which
    // read as a mistyped path and was quoted back whole).
    let (code, stdout, stderr) = verify(&private);
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(stderr.contains("not repeated here"), "{stderr}");
    assert!(
        !stderr.contains(&body) && !stdout.contains(&body),
        "the pasted private key was printed: {stderr}"
    );
    // One line of it (base64, which may hold a '/', read as a mistyped path before).
    let (code, stdout, stderr) = verify(&format!("{body}/"));
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(
        stderr.contains("not repeated here") && !stderr.contains(&body),
        "{stderr}"
    );
    let missing = trail.dir.path().join("audit-signing.key.pub");
    let (code, _, stderr) = verify(missing.to_str().unwrap());
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");

    let out = trail.dir.path().join("rotated.key");
    let public = trail.dir.path().join("rotated.key.pub");
    std::fs::write(&public, "earlier key's public half\n").unwrap();
    let (code, _, stderr) = support::run(
        &nowhere,
        &["audit", "keygen", "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("exists"), "{stderr}");
    assert!(
        !out.exists(),
        "a key was created beside a .pub it did not write"
    );
    assert_eq!(
        std::fs::read_to_string(&public).unwrap(),
        "earlier key's public half\n"
    );
    std::fs::remove_file(&public).unwrap();
    let (code, stdout, stderr) = support::run(
        &nowhere,
        &["audit", "keygen", "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let written = std::fs::read_to_string(&public).unwrap();
    assert_eq!(written.trim().len(), 64, "{written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_gap_free_durable_receipts() {
    let trail = Trail::new(0, 100);
    let log = Arc::new(trail.open(100));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    seqs.push(log.append(access(t * 100 + i, 7)).await.unwrap().seq());
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1280).collect::<Vec<u64>>());
    tokio::task::spawn_blocking(move || log.close())
        .await
        .unwrap()
        .unwrap();
    let report =
        export::verify_store(&AuditReader::open(&trail.path()).unwrap(), &trail.trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.records, 1280);
}

#[test]
fn restart_continues_the_chain() {
    let trail = Trail::new(12, 5);
    let log = trail.open(5);
    let receipt = log.append_blocking(access(13, 3)).unwrap();
    assert_eq!(receipt.seq(), 13);
    log.close().unwrap();
    let report =
        export::verify_store(&AuditReader::open(&trail.path()).unwrap(), &trail.trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.range, Some((1, 13)));
}

#[test]
fn records_appended_together_are_in_order_in_one_chain() {
    let trail = Trail::new(3, 5);
    let log = trail.open(5);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receipts = runtime
        .block_on(log.append_all(vec![access(4, 3), access(5, 3), access(6, 3)]))
        .unwrap();
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq()).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(log.append_blocking(access(7, 3)).unwrap().seq(), 7);
    log.close().unwrap();
    let report =
        export::verify_store(&AuditReader::open(&trail.path()).unwrap(), &trail.trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.range, Some((1, 7)));
}

#[test]
fn writer_refuses_to_continue_a_damaged_or_rolled_back_store() {
    let trail = Trail::new(12, 5);
    let signer = || Signer::load(&trail.key).unwrap();
    let truncated = trail.tampered(|records, _| {
        records.remove(&12);
    });
    let err = AuditLog::start(
        Arc::new(AuditStore::open(&truncated).unwrap()),
        signer(),
        settings(5),
    )
    .unwrap_err();
    assert!(err.to_string().contains("tail was removed"), "{err}");
    // The same, with the store's own count of records lowered to match: the last
    // checkpoint still signs record 12 (this start used to be accepted, and the writer's
    // first checkpoint then underflowed).
    let hidden = trail.tampered(|records, _| {
        records.remove(&12);
    });
    tamper_meta(&hidden, "head_seq", 11);
    let err = AuditLog::start(
        Arc::new(AuditStore::open(&hidden).unwrap()),
        signer(),
        settings(5),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("checkpoint 12 signs a record"),
        "{err}"
    );

    // Record 12 is covered by the checkpoint `close()` signed: start-up checks that tail.
    let modified = trail.tampered(|records, _| {
        let edited = edit_record(&records[&12], |v| v["call"]["call_id"] = "x".into());
        records.insert(12, edited);
    });
    let err = AuditLog::start(
        Arc::new(AuditStore::open(&modified).unwrap()),
        signer(),
        settings(5),
    )
    .unwrap_err();
    assert!(matches!(err, AuditError::Integrity { .. }), "{err}");

    // One repository's cursor past the end (the slowest's, which the shared cursor
    // follows, is not): that repository holds records the store would write again.
    let ahead = trail.tampered(|_, _| {});
    tamper_meta(&ahead, "shipped_to:repository-2", 50);
    let store = AuditStore::open(&ahead).unwrap();
    let err = AuditLog::start(Arc::new(store), signer(), settings(5)).unwrap_err();
    assert!(err.to_string().contains("fork"), "{err}");

    tamper_meta(&trail.path(), "shipped_up_to", 50);
    let store = AuditStore::open(&trail.path()).unwrap();
    let err = AuditLog::start(Arc::new(store), signer(), settings(5)).unwrap_err();
    assert!(err.to_string().contains("fork"), "{err}");
}

/// A store created again on the same node (a purge and reinstall, a lost disk with no
/// backup) starts a new epoch: its records never take the identities (node, epoch, seq)
/// the lost store's records had, which repositories deduplicate on.
#[test]
fn a_store_created_again_never_reuses_a_record_identity() {
    let first = Trail::new(3, 5);
    let identities = |path: &Path| -> Vec<(u64, u64)> {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let epoch = txn
            .open_table(META)
            .unwrap()
            .get("epoch")
            .unwrap()
            .map(|v| v.value());
        let records = txn.open_table(RECORDS).unwrap();
        records
            .iter()
            .unwrap()
            .map(|entry| {
                let record: serde_json::Value =
                    serde_json::from_slice(entry.unwrap().1.value()).unwrap();
                let in_record = record["epoch"].as_u64().unwrap_or(0);
                assert_eq!(
                    Some(in_record),
                    epoch,
                    "the record carries the store's epoch"
                );
                (in_record, record["seq"].as_u64().unwrap())
            })
            .collect()
    };
    let before = identities(&first.path());
    assert!(before[0].0 > 1_700_000_000_000, "{before:?}");
    // Everything of the first store gone, on the same node.
    let store = AuditStore::open(&first.path()).unwrap();
    let journal = store.journal_path();
    drop(store);
    std::fs::remove_file(first.path()).unwrap();
    let _ = std::fs::remove_file(journal);
    std::thread::sleep(Duration::from_millis(5));
    let log = first.open(5);
    for i in 1..=3 {
        let _receipt = log.append_blocking(access(i, 10)).unwrap();
    }
    log.close().unwrap();
    let after = identities(&first.path());
    assert_eq!(after.len(), 3);
    for identity in &after {
        assert!(!before.contains(identity), "{identity:?} used twice");
    }
}

/// A damaged record stops every read of the trail that meets it, naming it, instead of
/// being left out: an export with a silent hole (whose verification would then blame a
/// deletion), a review queue missing an access.
#[test]
fn a_damaged_record_stops_exports_and_reviews_instead_of_being_left_out() {
    let trail = Trail::new(8, 100);
    let damaged = trail.tampered(|records, _| {
        records.insert(5, b"{\"v\":1,\"seq\":5,".to_vec());
    });
    let reader = AuditReader::open(&damaged).unwrap();
    let mut out = Vec::new();
    let err = export::export(
        &reader.snapshot().unwrap(),
        &Filter::default(),
        export::Format::Jsonl,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(err, AuditError::Damaged { seq: 5, .. }), "{err}");
    assert!(err.to_string().contains("audit verify"), "{err}");
    let err = samu_gateway::audit::review::pending(&reader).unwrap_err();
    assert!(matches!(err, AuditError::Damaged { seq: 5, .. }), "{err}");
    // Start-up's own read (accesses a crash left open) goes on past it: a damaged record
    // must not keep the gateway from starting.
    assert!(
        samu_gateway::audit::recover::unended_accesses(&reader, Duration::from_secs(3600)).is_ok()
    );
    // A read that stops before it is unaffected.
    let first = export::select(&reader.snapshot().unwrap(), &Filter::default(), Some(4)).unwrap();
    assert_eq!(first.records.len(), 4);
    // The anomaly report reads its window and the 7 days before through the time index:
    // from the start of time it meets the damaged record; on a window after every record
    // it reads none (it used to walk the whole trail whatever the window).
    use samu_gateway::audit::report::{Thresholds, report};
    let thresholds = Thresholds {
        max_patients_per_hour: 3,
        pin_failures: 3,
        call_id_pattern: None,
    };
    let err = report(&reader, 0, &thresholds).unwrap_err();
    assert!(err.to_string().contains("record 5"), "{err}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let later = now_ms + 8 * 24 * 3_600_000;
    assert!(report(&reader, later, &thresholds).unwrap().is_empty());
}

/// After a key rotation the trail's older checkpoints are the earlier key's: backup and
/// restore take that key besides the configured one (before, neither could succeed, on
/// the very day a restore is needed).
#[test]
fn backup_and_restore_trust_an_earlier_key_given_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(dir.path());
    let config = support::write_config(dir.path(), &pki, "", "");
    support::write_trail(
        dir.path(),
        &pki.audit_key,
        (1..=5).map(|i| access(i, 3)).collect(),
    );
    let earlier = Signer::load(&pki.audit_key)
        .unwrap()
        .public_key_hex()
        .to_owned();
    // The configured key is now another one.
    std::fs::remove_file(&pki.audit_key).unwrap();
    let _ = std::fs::remove_file(pki.audit_key.with_extension("pem.pub"));
    Signer::generate(&pki.audit_key).unwrap();
    let backup = dir.path().join("audit-backup.redb");
    let backup_arg = backup.to_str().unwrap();
    let (code, _, stderr) =
        support::run(&config, &["audit", "backup", "--output", backup_arg], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does NOT verify"), "{stderr}");
    std::fs::remove_file(&backup).unwrap();
    let (code, stdout, stderr) = support::run(
        &config,
        &[
            "audit",
            "backup",
            "--output",
            backup_arg,
            "--public-key",
            &earlier,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("verified intact"), "{stdout}");
    let (code, _, stderr) =
        support::run(&config, &["audit", "restore", "--input", backup_arg], &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("--public-key"), "{stderr}");
    let (code, stdout, stderr) = support::run(
        &config,
        &[
            "audit",
            "restore",
            "--input",
            backup_arg,
            "--public-key",
            &earlier,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("records up to seq 5"), "{stdout}");

    // Listed in the configuration, the earlier key is trusted with no option: the
    // package's backup before an upgrade, which can pass none, succeeds.
    let (code, _, stderr) = support::run(&config, &["audit", "verify"], &[]);
    assert_eq!(code, 2, "{stderr}");
    let earlier_file = dir.path().join("audit-2026.key.pub");
    std::fs::write(&earlier_file, format!("{earlier}\n")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let listed = text.replacen(
        "node_id = \"gateway-test\"",
        &format!(
            "node_id = \"gateway-test\"\nearlier_public_keys = [\"{}\"]",
            earlier_file.display()
        ),
        1,
    );
    assert_ne!(listed, text);
    std::fs::write(&config, listed).unwrap();
    let (code, stdout, stderr) = support::run(&config, &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let again = dir.path().join("audit-backup-2.redb");
    let (code, stdout, stderr) = support::run(
        &config,
        &["audit", "backup", "--output", again.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("verified intact"), "{stdout}");
    // configtest checks that each listed file is a public key.
    std::fs::write(&earlier_file, "not a key\n").unwrap();
    let (code, stdout, stderr) = support::run(&config, &["configtest"], &[]);
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("audit.earlier_public_keys[0]"),
        "{stdout}{stderr}"
    );
}

#[test]
fn oversized_record_is_refused_and_uses_no_sequence_number() {
    let trail = Trail::new(3, 100);
    let log = trail.open(100);
    let mut event = access(4, 3);
    event.call.as_mut().unwrap().justification = Some("x".repeat(100_000));
    let err = log.append_blocking(event).unwrap_err();
    assert!(matches!(err, AuditError::Serialize(_)), "{err}");
    assert_eq!(log.append_blocking(access(5, 3)).unwrap().seq(), 4);
    log.close().unwrap();
}

/// A disk that fails on demand: the redb file layer below the audit store.
#[derive(Debug)]
struct FailingDisk {
    inner: redb::backends::FileBackend,
    failing: Arc<AtomicBool>,
}

impl FailingDisk {
    fn open(path: &Path, failing: Arc<AtomicBool>) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Self {
            inner: redb::backends::FileBackend::new(file).unwrap(),
            failing,
        }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected I/O error"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FailingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
}

/// redb failing under the indexer: the record already has its receipt (it is durable in the
/// journal), the log turns unhealthy and refuses what comes next, and the restart takes the
/// journal in, so nothing with a receipt is lost.
#[test]
fn index_disk_error_stops_the_trail_and_the_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.redb");
    let key = dir.path().join("k");
    let trusted = Signer::generate(&key).unwrap().trusted();
    let failing = Arc::new(AtomicBool::new(false));
    let start = || {
        let store = Arc::new(
            AuditStore::open_with_backend(FailingDisk::open(&path, failing.clone()), &path)
                .unwrap(),
        );
        let log =
            AuditLog::start(store.clone(), Signer::load(&key).unwrap(), settings(1000)).unwrap();
        (store, log)
    };
    let (store, log) = start();
    assert_eq!(log.append_blocking(access(1, 3)).unwrap().seq(), 1);
    // An in-process reader sees every record that has a receipt.
    let txn = store.settled_snapshot().unwrap();
    assert_eq!(
        samu_gateway::audit::store::last_record(&txn)
            .unwrap()
            .unwrap()
            .0,
        1
    );
    drop(txn);

    failing.store(true, Ordering::SeqCst);
    assert_eq!(
        log.append_blocking(access(2, 3)).unwrap().seq(),
        2,
        "the journal made it durable"
    );
    // The indexer fails on redb: the log reports itself unhealthy, which fails readiness
    // and stops the watchdog so that systemd restarts the service.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.is_healthy() {
        assert!(std::time::Instant::now() < deadline, "never unhealthy");
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = log.append_blocking(access(3, 3)).unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)), "{err}");
    failing.store(false, Ordering::SeqCst);
    drop(log);
    drop(store);

    let (store, log) = start();
    assert!(log.is_healthy());
    assert_eq!(
        log.append_blocking(access(4, 3)).unwrap().seq(),
        3,
        "record 2 came back from the journal, and the refused one used no sequence number"
    );
    log.close().unwrap();
    drop(store);
    let report = export::verify_store(&AuditReader::open(&path).unwrap(), &trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.range, Some((1, 3)));
}

/// The journal's frames are taken in by the next writable open, and a reader opened before
/// that refuses to show a trail without them.
#[test]
fn a_crash_between_journal_and_index_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.redb");
    let key = dir.path().join("k");
    let trusted = Signer::generate(&key).unwrap().trusted();
    let failing = Arc::new(AtomicBool::new(false));
    {
        let store = Arc::new(
            AuditStore::open_with_backend(FailingDisk::open(&path, failing.clone()), &path)
                .unwrap(),
        );
        let log =
            AuditLog::start(store.clone(), Signer::load(&key).unwrap(), settings(1000)).unwrap();
        for i in 1..=3 {
            let _receipt = log.append_blocking(access(i, 3)).unwrap();
        }
        drop(store.settled_snapshot().unwrap());
        // redb stops taking anything (as if the process died before indexing): the journal
        // alone keeps record 4, which has its receipt.
        failing.store(true, Ordering::SeqCst);
        assert_eq!(log.append_blocking(access(4, 3)).unwrap().seq(), 4);
        // Leave the log without closing it cleanly: what is on disk is what a crash leaves.
        std::mem::forget(log);
        std::mem::forget(store);
    }
    let journal = path.with_extension("journal");
    // A reader cannot take the journal in and no writer is running: it says so.
    // (The forgotten writer still holds the file lock, so open a copy.)
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(&journal, copy.with_extension("journal")).unwrap();
    let err = AuditReader::open(&copy).unwrap_err();
    assert!(matches!(err, AuditError::NeedsRecovery { .. }), "{err}");
    // open_recovering takes it in through a brief writable open.
    let reader = AuditReader::open_recovering(&copy).unwrap();
    let report = export::verify_store(&reader, &trusted).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!(report.range, Some((1, 4)));
    drop(reader);
    // Taken in, the journal no longer holds anything the store lacks.
    let report = export::verify_store(&AuditReader::open(&copy).unwrap(), &trusted).unwrap();
    assert_eq!(report.range, Some((1, 4)));
}

#[test]
fn lookups_by_patient_and_professional_read_only_their_records() {
    let trail = Trail::new(2000, 500);
    let reader = AuditReader::open(&trail.path()).unwrap();
    let txn = reader.snapshot().unwrap();
    let by_patient = Filter {
        patient: Some("185057800600003".into()),
        ..Filter::default()
    };
    let selection = export::select(&txn, &by_patient, None).unwrap();
    assert_eq!(selection.records.len(), 200);
    assert_eq!(
        selection.examined, 200,
        "the index must spare reading other patients' records"
    );
    let both = Filter {
        professional: Some("810000000001".into()),
        desk: Some("regul-1".into()),
        ..by_patient.clone()
    };
    let selection = export::select(&txn, &both, None).unwrap();
    assert!(
        selection
            .records
            .iter()
            .all(|s| s.record.event.actor.as_ref().unwrap().id_nat.as_deref()
                == Some("810000000001"))
    );
    // The patient's index drives the walk: only their records are read, the other
    // filters checked on each.
    assert_eq!(selection.examined, 200);
    assert_eq!(selection.records.len(), 100);
    // Paged: a page after a point reads only what follows it in the patient's list.
    let after = Filter {
        after_seq: Some(selection.records[49].record.seq),
        ..both.clone()
    };
    let page = export::select(&txn, &after, Some(10)).unwrap();
    let expected: Vec<u64> = selection.records[50..60]
        .iter()
        .map(|s| s.record.seq)
        .collect();
    let got: Vec<u64> = page.records.iter().map(|s| s.record.seq).collect();
    assert_eq!(got, expected, "the ten that follow, in order");
    // A page of none is none (it was one).
    assert!(
        export::select(&txn, &after, Some(0))
            .unwrap()
            .records
            .is_empty()
    );
    assert!(page.examined <= 20, "{}", page.examined);
    let by_call = Filter {
        call: Some("call-1234".into()),
        ..Filter::default()
    };
    assert_eq!(
        export::select(&txn, &by_call, None).unwrap().records.len(),
        1
    );
    let refused = Filter {
        outcome: Some("refused".into()),
        ..Filter::default()
    };
    assert_eq!(
        export::select(&txn, &refused, None).unwrap().records.len(),
        0
    );
}

#[test]
fn pruning_keeps_unshipped_records_and_leaves_a_verifiable_trail() {
    let trail = Trail::new(35, 10);
    let log = trail.open(10);
    let far_future = u64::MAX / 2;
    // Nothing shipped: nothing may go, however old.
    assert_eq!(log.prune(far_future, Vec::new()).unwrap().through, None);
    log.mark_shipped_to("repository", 25).unwrap();
    log.mark_shipped(25).unwrap();
    // A repository configured since (or renamed) has received nothing: nothing goes,
    // whatever the shippers last stored as shipped by all.
    assert_eq!(
        log.prune(far_future, vec!["repository".into(), "added".into()])
            .unwrap()
            .through,
        None
    );
    let report = log.prune(far_future, vec!["repository".into()]).unwrap();
    assert_eq!(
        report.through,
        Some(20),
        "only whole segments before a checkpoint, within what was shipped"
    );
    assert_eq!(report.records, 20);
    // The prune is on the record (signed before anything went), then appending goes on.
    assert_eq!(log.append_blocking(access(36, 3)).unwrap().seq(), 37);
    log.close().unwrap();
    let reader = AuditReader::open(&trail.path()).unwrap();
    let pruned = export::select(
        &reader.snapshot().unwrap(),
        &Filter {
            kind: Some(EventKind::TrailPruned),
            ..Filter::default()
        },
        None,
    )
    .unwrap();
    let detail = pruned.records[0].record.event.detail.clone().unwrap();
    assert!(
        detail.starts_with("through=20 records=20 ") && detail.ends_with("confirmed_by=repository"),
        "{detail}"
    );
    let verified = export::verify_store(&reader, &trail.trusted).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.findings);
    assert_eq!(verified.range, Some((21, 37)));
    drop(reader);
    // And the pruned store reopens.
    trail.open(10).close().unwrap();
}

/// Retention never deletes an access a compliance officer has still to look at: the
/// prune stops before the first break-glass start not yet reviewed (or under
/// investigation), and goes further once a decision closes it. Before, it went by age
/// and shipping only, and the access vanished from the pending list.
#[test]
fn pruning_stops_before_an_access_not_yet_reviewed() {
    use samu_gateway::audit::{Decision, Review};
    let trail = Trail::new(0, 10);
    let log = trail.open(10);
    for i in 1..=25 {
        let event = if i == 5 {
            Event {
                kind: EventKind::BreakGlassStarted,
                ..access(i, 3)
            }
        } else {
            access(i, 3)
        };
        let _receipt = log.append_blocking(event).unwrap();
    }
    log.mark_shipped(25).unwrap();
    let far_future = u64::MAX / 2;
    let report = log.prune(far_future, Vec::new()).unwrap();
    assert_eq!((report.through, report.held_by_review), (None, Some(5)));
    let decide = |decision| Event {
        review: Some(Review {
            of: 5,
            decision,
            comment: String::new(),
            replaces: None,
        }),
        ..Event::new(EventKind::AccessReviewed, Outcome::Success)
    };
    // Under investigation: still held.
    let _receipt = log
        .append_blocking(decide(Decision::ToInvestigate))
        .unwrap();
    assert_eq!(log.prune(far_future, Vec::new()).unwrap().through, None);
    let _receipt = log.append_blocking(decide(Decision::Justified)).unwrap();
    log.mark_shipped(27).unwrap();
    let report = log.prune(far_future, Vec::new()).unwrap();
    assert_eq!((report.through, report.held_by_review), (Some(20), None));
    log.close().unwrap();
}

/// Deleting a prefix up to a checkpoint and claiming it pruned, without the signed record
/// a real prune appends: the verifier names it.
#[test]
fn a_prefix_deleted_without_its_prune_record_is_named() {
    let trail = Trail::new(35, 10);
    // As a real prune leaves the store: records and earlier checkpoints gone, checkpoint
    // 20 anchoring the rest, the prune mark set, but no record of it.
    let copy = trail.tampered(|records, checkpoints| {
        records.retain(|seq, _| *seq > 20);
        checkpoints.retain(|seq, _| *seq >= 20);
    });
    tamper_meta(&copy, "pruned_through", 20);
    let findings = trail.verify(&copy);
    assert_eq!(findings, vec![Finding::UnrecordedPrune { through: 20 }]);
    assert!(
        findings[0].to_string().contains("deleted, not pruned"),
        "{}",
        findings[0]
    );
}

/// The same deletion, with a `trail_pruned` record forged at the tail to vouch for it:
/// no signed checkpoint covers that record (a real prune signs one right after it), so it
/// records nothing. Before, any `trail_pruned` record anywhere satisfied the check.
#[test]
fn a_prune_record_forged_at_the_tail_vouches_for_nothing() {
    let trail = Trail::new(35, 10);
    let copy = trail.tampered(|records, checkpoints| {
        records.retain(|seq, _| *seq > 20);
        checkpoints.retain(|seq, _| *seq >= 20);
        let last = records[&35].clone();
        let digest = ring::digest::digest(&ring::digest::SHA256, &last);
        let prev: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let forged = edit_record(&last, |v| {
            v["seq"] = 36.into();
            v["kind"] = "trail_pruned".into();
            v["detail"] = "through=20".into();
            v["prev"] = prev.into();
        });
        records.insert(36, forged);
    });
    tamper_meta(&copy, "pruned_through", 20);
    tamper_meta(&copy, "head_seq", 36);
    assert_eq!(
        trail.verify(&copy),
        vec![Finding::UnrecordedPrune { through: 20 }]
    );
}

#[test]
fn live_trail_verifies_while_the_service_runs_and_records_its_lifecycle() {
    let mut gateway = support::Gateway::start();
    let (code, stdout, stderr) = support::run(&gateway.config, &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit trail intact"), "{stdout}");
    let (code, stdout, _) = support::run(&gateway.config, &["audit", "list"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("configuration_loaded") && stdout.contains("service_started"),
        "{stdout}"
    );

    gateway.terminate();
    assert_eq!(gateway.wait(Duration::from_secs(20)).code(), Some(0));
    let (_, stdout, _) = support::run(
        &gateway.config,
        &["audit", "list", "--kind", "service_stopped"],
        &[],
    );
    assert!(stdout.contains("service_stopped"), "{stdout}");
    let (code, stdout, _) = support::run(&gateway.config, &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("3 record(s)") && stdout.contains("1 checkpoint signature(s) verified"),
        "{stdout}"
    );
}
