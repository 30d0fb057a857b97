//! Verification of a whole trail, from the live store or from an exported file.
//!
//! Records are checked by their own `seq` and `prev` fields, in the order they are stored,
//! so that each kind of tampering gets its own name: a modified record breaks the link from
//! its successor; a deleted one leaves a gap; a reordered one appears after a later one; an
//! inserted one duplicates a sequence number; a truncated tail falls short of the head the
//! store (or the export header) recorded, or of a checkpoint; a checkpoint must carry a good
//! signature from a trusted key and match the record it covers.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::chain::{self, Checkpoint, GENESIS, Hash, SignatureProblem, TrustedKeys};
use super::event::EventKind;

/// How many recent records are remembered to check links across local reorderings.
const WINDOW: usize = 4096;

/// One thing wrong with a trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An entry that is not a readable record.
    Unreadable {
        /// 1-based position among the records read.
        position: u64,
    },
    /// A record's content changed after it was written.
    Modified {
        /// Its sequence number.
        seq: u64,
    },
    /// Records are missing from the sequence.
    Deleted {
        /// First missing.
        from: u64,
        /// Last missing.
        to: u64,
    },
    /// A record appears after a record with a higher sequence number.
    Reordered {
        /// Its sequence number.
        seq: u64,
    },
    /// Two records claim the same sequence number: one was inserted.
    Inserted {
        /// The duplicated sequence number.
        seq: u64,
    },
    /// The records end before the recorded head or before a checkpoint.
    TruncatedTail {
        /// Last record present.
        last: u64,
        /// The head that should be there.
        expected: u64,
    },
    /// A checkpoint's signature does not verify.
    BadSignature {
        /// The checkpoint's sequence number.
        checkpoint: u64,
    },
    /// A checkpoint was signed by a key the verifier does not trust.
    UntrustedKey {
        /// The checkpoint's sequence number.
        checkpoint: u64,
        /// The key's id.
        key_id: String,
    },
    /// The record at a checkpoint is not the one the checkpoint signed.
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        checkpoint: u64,
    },
    /// A checkpoint entry is not readable.
    UnreadableCheckpoint {
        /// Its key or position.
        at: u64,
    },
    /// Records were pruned but the checkpoint anchoring what remains is missing.
    MissingAnchor {
        /// The pruned-through sequence number.
        seq: u64,
    },
    /// The trail starts after record 1, yet no `trail_pruned` record accounts for the
    /// records before it: they were deleted, not pruned.
    UnrecordedPrune {
        /// The pruned-through sequence number the store or export claims.
        through: u64,
    },
    /// The epoch changes at a record that is not a `trail_restored` record, or a
    /// `trail_restored` record does not start a later epoch: record identities (node,
    /// epoch, seq) can no longer be told apart from another copy's.
    UnrecordedEpoch {
        /// The record where it happens.
        seq: u64,
    },
    /// A record's epoch is older than the one before it.
    EpochWentBack {
        /// The record where it happens.
        seq: u64,
    },
    /// An export file ends without its closing line: it was cut short.
    ExportCutShort,
    /// Records that no trusted checkpoint matching the records signs: whoever removed the
    /// checkpoints could have forged them. Every such record of an export file; of a
    /// store, a tail longer than its writer leaves unsigned (it signs within
    /// `audit.checkpoint_every_records` and `audit.checkpoint_every_secs`: a live or
    /// crashed store's short tail is not a finding).
    Unsigned {
        /// First record without a signature.
        from: u64,
        /// Last one.
        to: u64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { position } => {
                write!(f, "entry {position} is not a readable audit record")
            }
            Self::Modified { seq } => write!(
                f,
                "record {seq} was modified: its hash no longer matches the link stored in record {}",
                seq + 1
            ),
            Self::Deleted { from, to } if from == to => {
                write!(f, "record {from} was deleted: the sequence jumps over it")
            }
            Self::Deleted { from, to } => write!(
                f,
                "records {from} to {to} were deleted: the sequence jumps over them"
            ),
            Self::Reordered { seq } => write!(
                f,
                "record {seq} was reordered: it appears after a later record"
            ),
            Self::Inserted { seq } => write!(
                f,
                "a record was inserted: two records claim sequence number {seq}"
            ),
            Self::TruncatedTail { last, expected } => write!(
                f,
                "the tail was truncated: the trail ends at record {last} but reached record {expected}"
            ),
            Self::BadSignature { checkpoint } => {
                write!(f, "checkpoint {checkpoint} has a bad signature")
            }
            Self::UntrustedKey { checkpoint, key_id } => write!(
                f,
                "checkpoint {checkpoint} is signed by key {key_id}, which is not trusted"
            ),
            Self::CheckpointMismatch { checkpoint } => write!(
                f,
                "record {checkpoint} is not the record checkpoint {checkpoint} signed: it was modified or replaced"
            ),
            Self::UnreadableCheckpoint { at } => write!(f, "checkpoint entry {at} is not readable"),
            Self::MissingAnchor { seq } => write!(
                f,
                "records up to {seq} were pruned but checkpoint {seq}, which anchors the rest, is missing"
            ),
            Self::UnrecordedPrune { through } => write!(
                f,
                "records up to {through} are gone but no trail_pruned record accounts for them: they were deleted, not pruned"
            ),
            Self::UnrecordedEpoch { seq } => write!(
                f,
                "record {seq} changes the epoch without being the trail_restored record that starts one (or restores without a new epoch)"
            ),
            Self::EpochWentBack { seq } => write!(
                f,
                "record {seq} belongs to an older epoch than the record before it"
            ),
            Self::ExportCutShort => write!(
                f,
                "the export file was cut short: its closing line is missing"
            ),
            Self::Unsigned { from, to } => write!(
                f,
                "records {from} to {to} are under no trusted checkpoint signature: they cannot be told from forged ones (a store's writer signs within audit.checkpoint_every_records and audit.checkpoint_every_secs; export through the compliance API, which signs a checkpoint first, or after the service signed its next one)"
            ),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints_verified: u64,
    /// Lowest and highest sequence numbers seen.
    pub range: Option<(u64, u64)>,
    /// The last checkpoint.
    pub last_checkpoint: Option<u64>,
    /// The last record a trusted checkpoint that matches the records signs (the records
    /// up to it are under a signature).
    pub signed_through: Option<u64>,
    /// Each epoch the trail holds and its first sequence number here, in order: more than
    /// one when the store was restored from a backup (docs/audit.md).
    pub epochs: Vec<(u64, u64)>,
    /// Everything wrong, in the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// What the trail's container says about it (store meta or export header).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// Highest sequence number ever written.
    pub head_seq: Option<u64>,
    /// Records up to this were pruned.
    pub pruned_through: u64,
}

/// What the checks need from one record, computed from its bytes alone: records are
/// digested in parallel, then applied in stored order ([`Verifier::apply`]).
#[derive(Debug, Clone)]
pub enum Digest {
    /// Not a record.
    Unreadable,
    /// A record's chain fields.
    Record {
        /// Its sequence number.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// SHA-256 of its bytes.
        hash: Hash,
        /// Its `prev` field.
        link: Hash,
        /// It is a `trail_restored` record (the only one that may start an epoch).
        restores: bool,
        /// For a `trail_pruned` record, the `through=` of its detail.
        prunes_through: Option<u64>,
    },
}

/// The fields of a stored record the chain checks read. Parsed alone, borrowing from the
/// bytes: the full [`super::event::Record`] flattens its event, which serde reads through
/// an intermediate buffer, several times slower. A record with a good hash link was written
/// by the gateway, whole; tampering with any other field changes its hash, which the link
/// from its successor or its checkpoint catches.
#[derive(serde::Deserialize)]
struct ChainFields<'a> {
    seq: u64,
    #[serde(default)]
    epoch: u64,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
    kind: EventKind,
    #[serde(borrow, default)]
    detail: Option<std::borrow::Cow<'a, str>>,
}

/// Digests one record's bytes (no state: safe to run on any thread).
pub fn digest(bytes: &[u8]) -> Digest {
    let Ok(fields) = serde_json::from_slice::<ChainFields<'_>>(bytes) else {
        return Digest::Unreadable;
    };
    let prunes_through = (fields.kind == EventKind::TrailPruned).then(|| {
        fields
            .detail
            .as_deref()
            .and_then(|d| {
                d.split_whitespace()
                    .find_map(|w| w.strip_prefix("through="))
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    });
    Digest::Record {
        seq: fields.seq,
        epoch: fields.epoch,
        hash: chain::hash(bytes),
        link: chain::parse_hash(&fields.prev).unwrap_or(GENESIS),
        restores: fields.kind == EventKind::TrailRestored,
        prunes_through,
    }
}

/// The hashes of the records seen with one sequence number: one, unless records were
/// inserted. The first is held inline: a vector per record was most of verification's
/// allocations.
struct SeenHashes {
    first: Hash,
    more: Vec<Hash>,
}

impl SeenHashes {
    fn new(first: Hash) -> Self {
        Self {
            first,
            more: Vec::new(),
        }
    }

    fn contains(&self, hash: &Hash) -> bool {
        self.first == *hash || self.more.contains(hash)
    }
}

/// Streams records through the checks.
pub struct Verifier {
    checkpoints: BTreeMap<u64, Checkpoint>,
    window: BTreeMap<u64, SeenHashes>,
    pending_links: BTreeMap<u64, Vec<(u64, Hash)>>,
    gaps: BTreeMap<u64, u64>,
    next_expected: u64,
    max_seen: u64,
    matched_checkpoints: HashSet<u64>,
    /// The checkpoints whose signature verified with a trusted key.
    signed_checkpoints: HashSet<u64>,
    /// The `trail_pruned` records seen, as (seq, through).
    prunes: Vec<(u64, u64)>,
    report: Report,
    expect: Expect,
}

impl Verifier {
    /// A verifier trusting `trusted`, given the container's expectations and checkpoints.
    pub fn new(
        trusted: &TrustedKeys,
        expect: Expect,
        raw_checkpoints: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Self {
        let mut report = Report::default();
        let mut checkpoints = BTreeMap::new();
        let mut signed_checkpoints = HashSet::new();
        for (at, bytes) in raw_checkpoints {
            match serde_json::from_slice::<Checkpoint>(&bytes) {
                Ok(c) => {
                    match c.verify(trusted) {
                        Ok(()) => {
                            report.checkpoints_verified += 1;
                            signed_checkpoints.insert(c.seq);
                        }
                        Err(SignatureProblem::BadSignature) => report
                            .findings
                            .push(Finding::BadSignature { checkpoint: c.seq }),
                        Err(SignatureProblem::UntrustedKey) => {
                            report.findings.push(Finding::UntrustedKey {
                                checkpoint: c.seq,
                                key_id: c.key_id.clone(),
                            })
                        }
                    }
                    checkpoints.insert(c.seq, c);
                }
                Err(_) => report.findings.push(Finding::UnreadableCheckpoint { at }),
            }
        }
        report.last_checkpoint = checkpoints.keys().next_back().copied();
        let anchor = expect.pruned_through;
        let mut window = BTreeMap::new();
        if anchor == 0 {
            window.insert(0, SeenHashes::new(GENESIS));
        } else if let Some(head) = checkpoints
            .get(&anchor)
            .and_then(|c| chain::parse_hash(&c.head))
        {
            window.insert(anchor, SeenHashes::new(head));
            checkpoints.remove(&anchor);
        } else {
            report.findings.push(Finding::MissingAnchor { seq: anchor });
        }
        Self {
            checkpoints,
            window,
            pending_links: BTreeMap::new(),
            gaps: BTreeMap::new(),
            // Saturating: a hostile container may say any u64.
            next_expected: anchor.saturating_add(1),
            max_seen: anchor,
            matched_checkpoints: HashSet::new(),
            signed_checkpoints,
            prunes: Vec::new(),
            report,
            expect,
        }
    }

    /// Checks the next record in stored order, digested beforehand.
    pub fn apply(&mut self, digest: Digest) {
        self.report.records += 1;
        let Digest::Record {
            seq,
            epoch,
            hash,
            link,
            restores,
            prunes_through,
        } = digest
        else {
            self.report.findings.push(Finding::Unreadable {
                position: self.report.records,
            });
            return;
        };
        if let Some(through) = prunes_through {
            self.prunes.push((seq, through));
        }
        self.check_epoch(seq, epoch, restores);
        self.report.range = Some(match self.report.range {
            None => (seq, seq),
            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
        });
        self.place(seq);
        self.check_link(seq, link);
        self.resolve_pending(seq, hash);
        if let Some(checkpoint) = self.checkpoints.get(&seq)
            && chain::parse_hash(&checkpoint.head) == Some(hash)
        {
            self.matched_checkpoints.insert(seq);
        }
        match self.window.entry(seq) {
            Entry::Vacant(vacant) => {
                vacant.insert(SeenHashes::new(hash));
            }
            Entry::Occupied(mut seen) => seen.get_mut().more.push(hash),
        }
        while self.window.len() > WINDOW {
            self.window.pop_first();
        }
    }

    /// An epoch starts only at a `trail_restored` record, and only moves forward.
    fn check_epoch(&mut self, seq: u64, epoch: u64, restores: bool) {
        let Some(&(current, _)) = self.report.epochs.last() else {
            // The first record here: what came before may have been pruned.
            self.report.epochs.push((epoch, seq));
            return;
        };
        if epoch < current {
            self.report.findings.push(Finding::EpochWentBack { seq });
        } else if (epoch > current) != restores {
            self.report.findings.push(Finding::UnrecordedEpoch { seq });
        }
        if epoch > current {
            self.report.epochs.push((epoch, seq));
        }
    }

    /// Sequence bookkeeping: gaps, reorderings, duplicates.
    fn place(&mut self, seq: u64) {
        if self.window.contains_key(&seq) {
            self.report.findings.push(Finding::Inserted { seq });
        } else if seq < self.max_seen {
            self.report.findings.push(Finding::Reordered { seq });
            self.fill_gap(seq);
        } else if seq > self.next_expected {
            self.gaps.insert(self.next_expected, seq - 1);
        }
        self.max_seen = self.max_seen.max(seq);
        self.next_expected = self.next_expected.max(seq.saturating_add(1));
    }

    fn fill_gap(&mut self, seq: u64) {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return;
        };
        if seq > end {
            return;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq - 1);
        }
        if seq < end {
            self.gaps.insert(seq + 1, end);
        }
    }

    fn check_link(&mut self, seq: u64, link: Hash) {
        let Some(previous) = seq.checked_sub(1) else {
            return;
        };
        match self.window.get(&previous) {
            Some(hashes) if hashes.contains(&link) => {}
            Some(_) => self
                .report
                .findings
                .push(Finding::Modified { seq: previous }),
            None if previous >= self.expect.pruned_through => {
                self.pending_links
                    .entry(previous)
                    .or_default()
                    .push((seq, link));
            }
            None => {}
        }
    }

    /// A record whose successor arrived first: check the link the successor holds.
    fn resolve_pending(&mut self, seq: u64, hash: Hash) {
        if let Some(waiting) = self.pending_links.remove(&seq)
            && waiting.iter().any(|(_, link)| *link != hash)
        {
            self.report.findings.push(Finding::Modified { seq });
        }
    }

    /// Finishes: gaps become deletions, unmatched checkpoints and short tails are named.
    pub fn finish(mut self) -> Report {
        let through = self.expect.pruned_through;
        // A prune is recorded only by a `trail_pruned` record that a signed checkpoint
        // matching the records covers (the writer signs one right after it): one appended
        // at the tail by whoever cut the trail's head would vouch for its own deletion.
        let covered = self
            .matched_checkpoints
            .intersection(&self.signed_checkpoints)
            .max()
            .copied();
        self.report.signed_through = covered;
        let recorded_prune = self
            .prunes
            .iter()
            .filter(|(seq, _)| covered.is_some_and(|c| *seq <= c))
            .map(|(_, through)| *through)
            .max()
            .unwrap_or(0);
        if through > 0 && recorded_prune < through {
            self.report
                .findings
                .push(Finding::UnrecordedPrune { through });
        }
        let gaps = std::mem::take(&mut self.gaps);
        for (&from, &to) in &gaps {
            self.report.findings.push(Finding::Deleted { from, to });
        }
        // Looked up in the gaps (sorted), not in the findings: a container of many
        // checkpoints inside one gap would otherwise take quadratic time.
        let deleted = |seq: u64| {
            gaps.range(..=seq)
                .next_back()
                .is_some_and(|(_, &to)| seq <= to)
        };
        let last = self.max_seen;
        for &seq in self.checkpoints.keys() {
            if seq > last {
                self.report.findings.push(Finding::TruncatedTail {
                    last,
                    expected: seq,
                });
            } else if !self.matched_checkpoints.contains(&seq) && !deleted(seq) {
                self.report
                    .findings
                    .push(Finding::CheckpointMismatch { checkpoint: seq });
            }
        }
        if let Some(head) = self.expect.head_seq
            && head > last
            && !self
                .report
                .findings
                .iter()
                .any(|f| matches!(f, Finding::TruncatedTail { .. }))
        {
            self.report.findings.push(Finding::TruncatedTail {
                last,
                expected: head,
            });
        }
        self.report
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::audit::event::Record;
    use crate::audit::{Event, EventKind, Outcome};

    /// Stored bytes of a well-chained trail, one record per `(epoch, kind)`.
    pub(crate) fn trail(records: &[(u64, EventKind)]) -> Vec<Vec<u8>> {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for (i, (epoch, kind)) in records.iter().enumerate() {
            let record = Record {
                v: 1,
                seq: i as u64 + 1,
                node: "gw".into(),
                epoch: *epoch,
                time: "2026-12-03T08:00:00.000Z".into(),
                run: "r".into(),
                mono_ns: i as u64,
                prev: crate::encoding::hex(&prev),
                event: Event::new(*kind, Outcome::Success),
            };
            let bytes = serde_json::to_vec(&record).unwrap();
            prev = chain::hash(&bytes);
            out.push(bytes);
        }
        out
    }

    fn verify(records: &[(u64, EventKind)]) -> Report {
        let mut verifier = Verifier::new(&TrustedKeys::default(), Expect::default(), []);
        for bytes in trail(records) {
            verifier.apply(digest(&bytes));
        }
        verifier.finish()
    }

    /// A container may say any u64: the top of the range is a finding, never an
    /// overflow (release builds check overflow, so it was a panic of `audit verify`).
    #[test]
    fn sequence_numbers_at_the_top_of_the_range_never_overflow() {
        let expect = Expect {
            head_seq: Some(u64::MAX),
            pruned_through: u64::MAX,
        };
        let mut verifier = Verifier::new(&TrustedKeys::default(), expect, []);
        let mut record: serde_json::Value =
            serde_json::from_slice(&trail(&[(0, SEARCH)])[0]).unwrap();
        record["seq"] = u64::MAX.into();
        verifier.apply(digest(&serde_json::to_vec(&record).unwrap()));
        record["seq"] = (u64::MAX - 5).into();
        verifier.apply(digest(&serde_json::to_vec(&record).unwrap()));
        let report = verifier.finish();
        assert!(!report.is_intact());
        assert!(
            report
                .findings
                .contains(&Finding::MissingAnchor { seq: u64::MAX }),
            "{:?}",
            report.findings
        );
    }

    const SEARCH: EventKind = EventKind::PatientSearch;
    const RESTORED: EventKind = EventKind::TrailRestored;

    #[test]
    fn an_epoch_starts_only_at_a_restore_record() {
        let report = verify(&[(0, SEARCH), (0, SEARCH), (7, RESTORED), (7, SEARCH)]);
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.epochs, vec![(0, 1), (7, 3)]);
        // Epoch 0 records keep the form they had before epochs existed.
        assert!(!String::from_utf8_lossy(&trail(&[(0, SEARCH)])[0]).contains("epoch"));

        let report = verify(&[(0, SEARCH), (7, SEARCH)]);
        assert_eq!(report.findings, vec![Finding::UnrecordedEpoch { seq: 2 }]);
        let report = verify(&[(0, SEARCH), (0, RESTORED)]);
        assert_eq!(report.findings, vec![Finding::UnrecordedEpoch { seq: 2 }]);
        let report = verify(&[(7, SEARCH), (0, SEARCH)]);
        assert_eq!(report.findings, vec![Finding::EpochWentBack { seq: 2 }]);
        assert!(
            Finding::UnrecordedEpoch { seq: 2 }
                .to_string()
                .contains("record 2 changes the epoch")
        );
    }
}
