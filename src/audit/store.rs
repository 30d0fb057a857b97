//! The redb audit database: tables, the writer's batch commit, and read access for the
//! running service and for other processes.
//!
//! The writer opens the file in redb's `SingleWriter` concurrency mode: no other process can
//! write, but `audit verify`, `audit list` and `audit export` may open it read-only while
//! `serve` runs and read consistent snapshots of its commits. That is how the live trail is
//! verified without stopping the service.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, MultimapTableDefinition, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableTable, StorageBackend, TableDefinition, TableError,
};

use super::AuditError;
use super::journal::{self, Entry, Progress};

/// redb's page cache (its default is 1 GiB, which a busy indexer fills: the break-glass
/// bench's gateway peaked at 145 MiB resident). Reads past it come from the kernel's page
/// cache; the indexer's large transactions touch the same few pages at the trees' ends.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Version of the gateway's own layout inside the redb file. A file written by a newer
/// gateway is refused rather than misread; one written by an older gateway is upgraded by
/// the first writable open (version 1 kept its indexes as multimaps: [`upgrade_indexes`];
/// version 2 had no subject index: [`index_subjects`]).
pub const FORMAT_VERSION: u64 = 3;

/// The layout whose indexes were redb multimaps, one entry per record and key.
const FORMAT_MULTIMAP_INDEXES: u64 = 1;

/// The layout with posting blocks but no [`Index::Subject`]: its decisions and alerts are
/// found only by reading the trail.
const FORMAT_WITHOUT_SUBJECTS: u64 = 2;

/// The subject key an alert naming more records than [`SUBJECTS_MAX`] is indexed under,
/// instead of one key per record: a reader looking for an alert about a record reads these
/// few alerts too.
pub const MANY_SUBJECTS: &str = "many";

/// The subject key the upgrade to version 3 indexes a record it cannot read under: what
/// it is about cannot be told, so every access before it reads it, and its trail stops
/// there as a read of the whole trail would.
pub const UNREADABLE_SUBJECTS: &str = "unreadable";

/// Most subject keys one record is indexed under: a journal frame holds at most 65,535
/// keys, and an alert about a professional's hour of accesses could name more.
pub const SUBJECTS_MAX: usize = 256;

/// Most sequence numbers one posting block holds: bounds a block's size (8 bytes each) when
/// an old store's long lists are cut into blocks.
const BLOCK_MAX_SEQS: usize = 4096;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("index_time");

/// Secondary indexes, maintained in the same transaction as the records they point to.
///
/// Each index is a table of posting blocks: `(key, first seq) → seqs`, the sequence numbers
/// (8 bytes each, little-endian, ascending) of the records that carry `key` and were
/// committed in one transaction. An access writes several records with the same patient,
/// professional, desk and call, and a transaction gathers thousands of records, so one
/// B-tree insert per key and transaction replaces one per record and key (docs/audit.md,
/// "Index layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Index {
    /// Patient INS.
    Patient,
    /// Professional idNat.
    Professional,
    /// Desk id.
    Desk,
    /// Emergency call id.
    Call,
    /// The records a record is about, by sequence number in decimal: the access a decision
    /// is on, the records an alert names (or [`MANY_SUBJECTS`]). How an access's trail
    /// finds its decisions and alerts without reading every record after it.
    Subject,
}

impl Index {
    const ALL: [Index; 5] = [
        Index::Patient,
        Index::Professional,
        Index::Desk,
        Index::Call,
        Index::Subject,
    ];

    /// Its tag in a journal frame.
    pub(super) fn tag(self) -> u8 {
        match self {
            Self::Patient => 1,
            Self::Professional => 2,
            Self::Desk => 3,
            Self::Call => 4,
            Self::Subject => 5,
        }
    }

    pub(super) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|index| index.tag() == tag)
    }

    fn table(self) -> TableDefinition<'static, (&'static str, u64), &'static [u8]> {
        match self {
            Self::Patient => TableDefinition::new("postings_patient"),
            Self::Professional => TableDefinition::new("postings_professional"),
            Self::Desk => TableDefinition::new("postings_desk"),
            Self::Call => TableDefinition::new("postings_call"),
            Self::Subject => TableDefinition::new("postings_subject"),
        }
    }

    /// Its name in logs and errors (never a key: keys are patient and professional ids).
    fn name(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Professional => "professional",
            Self::Desk => "desk",
            Self::Call => "call",
            Self::Subject => "subject",
        }
    }

    /// Where format version 1 kept it (it had no subject index).
    fn legacy_table(self) -> Option<MultimapTableDefinition<'static, &'static str, u64>> {
        match self {
            Self::Patient => Some(MultimapTableDefinition::new("index_patient")),
            Self::Professional => Some(MultimapTableDefinition::new("index_professional")),
            Self::Desk => Some(MultimapTableDefinition::new("index_desk")),
            Self::Call => Some(MultimapTableDefinition::new("index_call")),
            Self::Subject => None,
        }
    }
}

/// Keys under which the meta table keeps counters.
#[derive(Debug, Clone, Copy)]
pub enum Meta {
    /// Layout version.
    FormatVersion,
    /// Highest sequence number ever committed (survives record deletion: a truncated tail shows).
    HeadSeq,
    /// Records up to this sequence were confirmed shipped to every audit repository.
    ShippedUpTo,
    /// Records up to this sequence were pruned; the checkpoint at it anchors the chain.
    PrunedThrough,
    /// The epoch new records are written in: the store's creation time (Unix ms; absent,
    /// so 0, in stores created before stores had their own), then each restore's.
    Epoch,
    /// Set only in a copy made by [`backup`]: the last sequence number it holds. The writer
    /// that opens such a copy starts a new epoch before anything else, and clears it.
    BackupHead,
    /// Set with [`Meta::BackupHead`]: when the copy was taken (Unix ms).
    BackupTakenMs,
}

impl Meta {
    fn key(self) -> &'static str {
        match self {
            Self::FormatVersion => "format_version",
            Self::HeadSeq => "head_seq",
            Self::ShippedUpTo => "shipped_up_to",
            Self::PrunedThrough => "pruned_through",
            Self::Epoch => "epoch",
            Self::BackupHead => "backup_head",
            Self::BackupTakenMs => "backup_taken_ms",
        }
    }
}

/// One record ready to be committed.
#[derive(Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The stored bytes.
    pub bytes: Vec<u8>,
    /// Unix milliseconds, for the time index.
    pub time_ms: u64,
    /// Index keys.
    pub keys: Vec<(Index, String)>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(NewRecord);

/// A record to delete when pruning, with what its index entries are.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// Its sequence number.
    pub seq: u64,
    /// Unix ms (time index key).
    pub time_ms: u64,
    /// Index keys.
    pub keys: Vec<(Index, String)>,
}

/// The writable audit database (held by one process: the service, or a maintenance command).
/// Only `audit` writes through it (its writing methods are private to the module); other
/// modules open it and hand it to [`super::AuditLog`], or read it.
#[derive(Debug)]
pub struct AuditStore {
    db: Database,
    path: PathBuf,
    /// Set by the audit log that writes through this store: in-process readers wait on it
    /// so that they see every record that has a receipt.
    progress: std::sync::OnceLock<std::sync::Arc<Progress>>,
}

/// Failing commits on demand, by store path (tests run in parallel, each on its own path).
#[cfg(test)]
pub(super) mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(in crate::audit) fn set(path: &Path, failing: bool) {
        let mut all = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|p| p != path);
        if failing {
            all.push(path.to_owned());
        }
    }

    pub(super) fn check(path: &Path) -> Result<(), super::AuditError> {
        let all = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        if all.iter().any(|p| p == path) {
            Err(super::AuditError::Storage("injected commit error".into()))
        } else {
            Ok(())
        }
    }
}

/// A read-only view, usable while another process writes.
pub struct AuditReader {
    db: ReadOnlyDatabase,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader").finish_non_exhaustive()
    }
}

/// Read access shared by the writer and readers.
pub trait ReadStore {
    /// A consistent snapshot.
    fn snapshot(&self) -> Result<ReadTransaction, AuditError>;
}

/// How long a reader waits for redb to take in what the journal holds; the indexer needs
/// milliseconds, so running out means it failed or is stuck (and the log says so on its
/// own).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What redb holds now. Followers of the trail (shippers, alerts) read this way: they are
/// told of each index commit. A reader that must see every record with a receipt (the
/// compliance views) waits first: [`AuditStore::settled_snapshot`].
impl ReadStore for AuditStore {
    fn snapshot(&self) -> Result<ReadTransaction, AuditError> {
        self.db.begin_read().map_err(storage)
    }
}

impl ReadStore for AuditReader {
    fn snapshot(&self) -> Result<ReadTransaction, AuditError> {
        self.db.begin_read().map_err(storage)
    }
}

impl AuditStore {
    /// Opens (creating if absent) the database at `path` and checks its format version.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        Self::checked(db, path)
    }

    /// Opens a database on another storage backend (tests inject disk faults this way).
    pub fn open_with_backend(
        backend: impl StorageBackend,
        label: &Path,
    ) -> Result<Self, AuditError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| open_error(label, e))?;
        Self::checked(db, label)
    }

    fn checked(db: Database, path: &Path) -> Result<Self, AuditError> {
        let store = Self {
            db,
            path: path.to_owned(),
            progress: std::sync::OnceLock::new(),
        };
        let txn = store.snapshot()?;
        match meta(&txn, Meta::FormatVersion)? {
            Some(FORMAT_VERSION) => {
                drop(txn);
                store.take_in_journal()?;
                Ok(store)
            }
            // The journal first: an older gateway's frames carry no subject keys, so the
            // records they hold must be in the store when it is read for them.
            Some(FORMAT_WITHOUT_SUBJECTS) => {
                drop(txn);
                store.take_in_journal()?;
                store.index_subjects()?;
                Ok(store)
            }
            Some(FORMAT_MULTIMAP_INDEXES) => {
                drop(txn);
                store.upgrade_indexes()?;
                store.take_in_journal()?;
                store.index_subjects()?;
                Ok(store)
            }
            Some(found) => Err(AuditError::UnknownFormat {
                path: path.to_owned(),
                found: found.to_string(),
                supported: FORMAT_VERSION,
            }),
            None => {
                drop(txn);
                // A new store (first install, or one recreated after a purge or a lost
                // disk) starts its own epoch, the Unix time in ms, so that its records
                // never share an identity (node, epoch, seq) with those an earlier store
                // on this node wrote and shipped (docs/audit.md, "A record's identity"). Set
                // before the format: a store with a format and no epoch is an old one.
                let (_, now_ms) = crate::clock::now();
                store.set_meta(Meta::Epoch, now_ms.max(1))?;
                store.set_meta(Meta::FormatVersion, FORMAT_VERSION)?;
                store.take_in_journal()?;
                Ok(store)
            }
        }
    }

    /// Deletes record `seq` as someone with write access to the file could (its indexes
    /// left as they are): for the tests of what start-up and verification notice.
    #[cfg(test)]
    pub(crate) fn remove_record_for_tests(&self, seq: u64) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(RECORDS).unwrap().remove(seq).unwrap();
        txn.commit().unwrap();
    }

    /// Deletes every checkpoint as someone with write access to the file could: for the
    /// tests of what verification notices.
    #[cfg(test)]
    pub(crate) fn remove_checkpoints_for_tests(&self) {
        let txn = self.db.begin_write().unwrap();
        let seqs: Vec<u64> = {
            let table = txn.open_table(CHECKPOINTS).unwrap();
            table
                .iter()
                .unwrap()
                .map(|e| e.unwrap().0.value())
                .collect()
        };
        {
            let mut table = txn.open_table(CHECKPOINTS).unwrap();
            for seq in seqs {
                table.remove(seq).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal that goes with it.
    pub fn journal_path(&self) -> PathBuf {
        journal::path_for(&self.path)
    }

    /// Blocks (off the async workers: up to seconds) until redb holds every record
    /// written so far; false when it still lags after the wait (a read now would miss
    /// the last records). True for a store no writer follows.
    pub fn wait_settled(&self) -> bool {
        self.progress
            .get()
            .is_none_or(|progress| progress.wait_settled(SETTLE_WAIT))
    }

    /// Blocks (off the async workers: up to seconds) until redb holds every record
    /// written so far, then takes a snapshot: it shows every record that has a receipt.
    /// An error when redb still lags after the wait: a read then would miss the last
    /// records and look whole.
    pub fn settled_snapshot(&self) -> Result<ReadTransaction, AuditError> {
        if !self.wait_settled() {
            return Err(AuditError::Storage(
                "the audit index lags the journal: a read now would miss its last records".into(),
            ));
        }
        self.snapshot()
    }

    /// Registers the writer's progress (once: one log writes through one store).
    pub(super) fn follow(&self, progress: std::sync::Arc<Progress>) -> Result<(), AuditError> {
        self.progress
            .set(progress)
            .map_err(|_| AuditError::Storage("an audit log already writes this store".into()))
    }

    /// Commits the records the journal holds and redb does not (the writer's last batches
    /// before a crash), then empties the journal. They must continue the store's chain
    /// exactly: the next sequence number, linked to the last record.
    fn take_in_journal(&self) -> Result<(), AuditError> {
        let path = self.journal_path();
        let contents = journal::read(&path)?;
        if contents.entries.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_read().map_err(storage)?;
        let last = last_record(&txn)?;
        let head = last
            .as_ref()
            .map(|(seq, _)| *seq)
            .max(meta(&txn, Meta::HeadSeq)?)
            .unwrap_or(0);
        drop(txn);
        let integrity = |what: String| AuditError::Integrity {
            path: self.path.clone(),
            what,
        };
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        for entry in contents.entries {
            match entry {
                Entry::Record(record) if record.seq <= head => {}
                Entry::Record(record) => {
                    let expected = head + 1 + records.len() as u64;
                    if record.seq != expected {
                        return Err(integrity(format!(
                            "the journal {} holds record {} where record {expected} was due",
                            path.display(),
                            record.seq
                        )));
                    }
                    records.push(record);
                }
                Entry::Checkpoint(seq, bytes) if seq > head => checkpoints.push((seq, bytes)),
                Entry::Checkpoint(..) => {}
            }
        }
        if let (Some(first), Some((seq, bytes))) = (records.first(), &last) {
            #[derive(serde::Deserialize)]
            struct Link {
                prev: String,
            }
            let linked = serde_json::from_slice::<Link>(&first.bytes)
                .is_ok_and(|link| link.prev == crate::encoding::hex(&super::chain::hash(bytes)));
            if !linked {
                return Err(integrity(format!(
                    "the journal {}'s record {} does not link to record {seq}",
                    path.display(),
                    first.seq
                )));
            }
        }
        if !records.is_empty() || !checkpoints.is_empty() {
            let count = records.len();
            self.commit(&records, &checkpoints)?;
            tracing::warn!(
                records = count,
                checkpoints = checkpoints.len(),
                "audit journal taken into the store after an unclean stop"
            );
        }
        // Opening the journal for writing empties it (its next generation), keeping its size.
        journal::Journal::open(&path).map(drop)
    }

    /// Proves the store still answers a read transaction (readiness, watchdog).
    pub fn check(&self) -> Result<(), AuditError> {
        meta(&self.snapshot()?, Meta::FormatVersion).map(drop)
    }

    /// Sets a meta counter in its own durable transaction.
    pub(super) fn set_meta(&self, key: Meta, value: u64) -> Result<(), AuditError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(META)
            .map_err(storage)?
            .insert(key.key(), value)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Sets audit repository `receiver`'s "shipped up to" cursor (durable).
    pub(super) fn set_receiver_cursor(&self, receiver: &str, seq: u64) -> Result<(), AuditError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(META)
            .map_err(storage)?
            .insert(format!("shipped_to:{receiver}").as_str(), seq)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Commits records (and checkpoints) in one fsync'd transaction; all or nothing.
    pub(super) fn commit(
        &self,
        records: &[NewRecord],
        checkpoints: &[(u64, Vec<u8>)],
    ) -> Result<(), AuditError> {
        self.commit_with_meta(records, checkpoints, &[])
    }

    /// As [`AuditStore::commit`], setting (`Some`) or removing (`None`) meta counters in the
    /// same transaction: a new epoch and its first record exist together or not at all.
    pub(super) fn commit_with_meta(
        &self,
        records: &[NewRecord],
        checkpoints: &[(u64, Vec<u8>)],
        counters: &[(Meta, Option<u64>)],
    ) -> Result<(), AuditError> {
        #[cfg(test)]
        faults::check(&self.path)?;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(storage)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(storage)?;
            let mut indexes = Vec::new();
            for index in Index::ALL {
                indexes.push((index, txn.open_table(index.table()).map_err(storage)?));
            }
            for record in records {
                table
                    .insert(record.seq, record.bytes.as_slice())
                    .map_err(storage)?;
                by_time
                    .insert((record.time_ms, record.seq), ())
                    .map_err(storage)?;
            }
            // Sorted, one key's records are neighbours (one block each) and each index's
            // leaves are reached one after the other instead of at random (docs/audit.md).
            let mut keys: Vec<(Index, &str, u64)> = records
                .iter()
                .flat_map(|r| r.keys.iter().map(|(i, k)| (*i, k.as_str(), r.seq)))
                .collect();
            keys.sort_unstable_by(|a, b| (a.0.tag(), a.1, a.2).cmp(&(b.0.tag(), b.1, b.2)));
            // A record names a key once per index, as a multimap kept it.
            keys.dedup();
            for group in keys.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
                let (index, key, first) = group[0];
                let block = encode_block(group.iter().map(|(_, _, seq)| *seq));
                if let Some((_, table)) = indexes.iter_mut().find(|(i, _)| *i == index) {
                    table
                        .insert((key, first), block.as_slice())
                        .map_err(storage)?;
                }
            }
            if !checkpoints.is_empty() {
                let mut table = txn.open_table(CHECKPOINTS).map_err(storage)?;
                for (seq, bytes) in checkpoints {
                    table.insert(*seq, bytes.as_slice()).map_err(storage)?;
                }
            }
            let mut meta = txn.open_table(META).map_err(storage)?;
            if let Some(last) = records.last() {
                meta.insert(Meta::HeadSeq.key(), last.seq)
                    .map_err(storage)?;
            }
            for (key, value) in counters {
                match value {
                    Some(value) => meta.insert(key.key(), *value).map(drop),
                    None => meta.remove(key.key()).map(drop),
                }
                .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Deletes records up to and including `through` (with their index entries) and every
    /// checkpoint before it, keeping the checkpoint at `through` as the chain's new anchor.
    pub(super) fn prune_through(&self, through: u64, doomed: &[Pruned]) -> Result<(), AuditError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(storage)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(storage)?;
            let mut keys = std::collections::BTreeSet::new();
            for record in doomed {
                records.remove(record.seq).map_err(storage)?;
                by_time
                    .remove((record.time_ms, record.seq))
                    .map_err(storage)?;
                keys.extend(record.keys.iter().map(|(i, k)| (*i, k.as_str())));
            }
            // A block may hold records on both sides of `through`: it is cut, not dropped.
            for (index, key) in keys {
                let mut table = txn.open_table(index.table()).map_err(storage)?;
                let mut blocks = Vec::new();
                for entry in table.range((key, 0)..=(key, through)).map_err(storage)? {
                    let (k, v) = entry.map_err(storage)?;
                    blocks.push((k.value().1, decode_block(index, v.value())?));
                }
                for (first, seqs) in blocks {
                    table.remove((key, first)).map_err(storage)?;
                    let kept: Vec<u64> = seqs.into_iter().filter(|seq| *seq > through).collect();
                    if let Some(first_kept) = kept.first() {
                        table
                            .insert(
                                (key, *first_kept),
                                encode_block(kept.iter().copied()).as_slice(),
                            )
                            .map_err(storage)?;
                    }
                }
            }
            let mut checkpoints = txn.open_table(CHECKPOINTS).map_err(storage)?;
            checkpoints
                .retain(|seq, _| seq >= through)
                .map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(Meta::PrunedThrough.key(), through)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Rewrites format version 1's index multimaps as posting blocks, in one transaction
    /// with the new version stamp: the store is upgraded whole or not at all. A multimap
    /// yields its keys in order and each key's sequence numbers ascending, so each list is
    /// cut into blocks as it is read.
    fn upgrade_indexes(&self) -> Result<(), AuditError> {
        use redb::ReadableMultimapTable;
        let started = std::time::Instant::now();
        let mut entries = 0u64;
        let txn = self.db.begin_write().map_err(storage)?;
        for (index, legacy) in Index::ALL
            .into_iter()
            .filter_map(|index| Some((index, index.legacy_table()?)))
        {
            {
                let legacy = txn.open_multimap_table(legacy).map_err(storage)?;
                let mut postings = txn.open_table(index.table()).map_err(storage)?;
                let mut seqs = Vec::new();
                for entry in legacy.iter().map_err(storage)? {
                    let (key, values) = entry.map_err(storage)?;
                    seqs.clear();
                    for value in values {
                        seqs.push(value.map_err(storage)?.value());
                    }
                    entries += seqs.len() as u64;
                    for chunk in seqs.chunks(BLOCK_MAX_SEQS) {
                        let block = encode_block(chunk.iter().copied());
                        postings
                            .insert((key.value(), chunk[0]), block.as_slice())
                            .map_err(storage)?;
                    }
                }
            }
            txn.delete_multimap_table(legacy).map_err(storage)?;
        }
        txn.open_table(META)
            .map_err(storage)?
            .insert(Meta::FormatVersion.key(), FORMAT_WITHOUT_SUBJECTS)
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        tracing::info!(
            from = FORMAT_MULTIMAP_INDEXES,
            to = FORMAT_WITHOUT_SUBJECTS,
            entries,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "audit store layout upgraded: index entries rewritten as posting blocks"
        );
        Ok(())
    }
}

impl AuditStore {
    /// Builds format version 2's missing subject index from the records, in one
    /// transaction with the new version stamp. Only decisions and alerts have subjects:
    /// a record whose bytes say it is of another kind (see [`super::event::may_be_of`]) is not
    /// parsed. A record that does not parse is indexed under [`UNREADABLE_SUBJECTS`] and
    /// counted in a warning: refusing to start on it would stop every access, and leaving
    /// it out would let an access's trail look whole without a decision it may hold.
    fn index_subjects(&self) -> Result<(), AuditError> {
        let started = std::time::Instant::now();
        let mut keys: Vec<(String, u64)> = Vec::new();
        let mut unreadable = 0u64;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let records = txn.open_table(RECORDS).map_err(storage)?;
            for entry in records.iter().map_err(storage)? {
                let (seq, bytes) = entry.map_err(storage)?;
                let (seq, bytes) = (seq.value(), bytes.value());
                if !super::event::may_be_of(
                    bytes,
                    &[
                        super::event::EventKind::AccessReviewed,
                        super::event::EventKind::SecurityAlert,
                    ],
                ) {
                    continue;
                }
                match super::event::read_record(seq, bytes) {
                    Ok(record) => keys.extend(
                        super::event::subject_keys(&record.event)
                            .into_iter()
                            .map(|key| (key, seq)),
                    ),
                    Err(_) => {
                        unreadable += 1;
                        keys.push((UNREADABLE_SUBJECTS.to_owned(), seq));
                    }
                }
            }
            keys.sort_unstable();
            keys.dedup();
            let mut postings = txn.open_table(Index::Subject.table()).map_err(storage)?;
            for group in keys.chunk_by(|a, b| a.0 == b.0) {
                for chunk in group.chunks(BLOCK_MAX_SEQS) {
                    let block = encode_block(chunk.iter().map(|(_, seq)| *seq));
                    postings
                        .insert((chunk[0].0.as_str(), chunk[0].1), block.as_slice())
                        .map_err(storage)?;
                }
            }
            txn.open_table(META)
                .map_err(storage)?
                .insert(Meta::FormatVersion.key(), FORMAT_VERSION)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "audit store upgrade met records that do not parse: the trails of the accesses before them stop there; `audit verify` names them"
            );
        }
        tracing::info!(
            from = FORMAT_WITHOUT_SUBJECTS,
            to = FORMAT_VERSION,
            entries = keys.len() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "audit store layout upgraded: decisions and alerts indexed by the records they are about"
        );
        Ok(())
    }
}

/// Whether the store's subject index is whole: written since format version 3, and every
/// earlier decision and alert indexed by the upgrade. A store not upgraded yet (read by
/// another process, before the service's writable open) must be read record by record.
pub fn subjects_indexed(txn: &ReadTransaction) -> Result<bool, AuditError> {
    Ok(meta(txn, Meta::FormatVersion)? == Some(FORMAT_VERSION))
}

impl AuditReader {
    /// Opens read-only; if the file needs crash recovery and no other process holds it,
    /// recovers it first through a brief writable open (redb's recovery rebuilds its own
    /// allocation state; it does not change committed records).
    pub fn open_recovering(path: &Path) -> Result<Self, AuditError> {
        match Self::open(path) {
            Err(AuditError::NeedsRecovery { .. }) => {
                drop(AuditStore::open(path)?);
                Self::open(path)
            }
            other => other,
        }
    }

    /// Opens the database read-only; works while the service has it open for writing.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        if !path.exists() {
            return Err(AuditError::Unreadable {
                path: path.to_owned(),
                reason: "no such file".into(),
            });
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(CACHE_BYTES)
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        let reader = Self { db };
        // A version 1 store is read as it is (see [`index_walk`]): a read-only open must
        // not rewrite the evidence; the next writable open upgrades it.
        match meta(&reader.snapshot()?, Meta::FormatVersion)? {
            Some(FORMAT_VERSION | FORMAT_WITHOUT_SUBJECTS | FORMAT_MULTIMAP_INDEXES) | None => {
                reader.wait_for_journal(path)?;
                Ok(reader)
            }
            Some(found) => Err(AuditError::UnknownFormat {
                path: path.to_owned(),
                found: found.to_string(),
                supported: FORMAT_VERSION,
            }),
        }
    }
}

impl AuditReader {
    /// Waits until redb holds every record the journal holds, so that this view includes
    /// every record that has a receipt. A running service takes them in within
    /// milliseconds; a service that stopped uncleanly left them for the next writable open.
    fn wait_for_journal(&self, path: &Path) -> Result<(), AuditError> {
        let Some(last) = journal::read(&journal::path_for(path))?.last_record() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        loop {
            // The head counter is committed with the records, as shippers and alerts read it.
            let head = meta(&self.snapshot()?, Meta::HeadSeq)?.unwrap_or(0);
            if head >= last {
                return Ok(());
            }
            if started.elapsed() > SETTLE_WAIT {
                return Err(AuditError::NeedsRecovery {
                    path: path.to_owned(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// A meta counter.
pub fn meta(txn: &ReadTransaction, key: Meta) -> Result<Option<u64>, AuditError> {
    let Some(table) = open_existing(txn, META)? else {
        return Ok(None);
    };
    Ok(table.get(key.key()).map_err(storage)?.map(|v| v.value()))
}

/// A stored record as a writer would store it, for tests reading the store directly:
/// `seq` in `epoch`, written at `ms` (Unix), its chain fields placeholders.
#[cfg(test)]
pub(crate) fn test_record(seq: u64, epoch: u64, ms: u64, event: super::Event) -> NewRecord {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a test time within range");
    let record = super::Record {
        v: super::event::RECORD_VERSION,
        seq,
        node: "gw".into(),
        epoch,
        time: crate::clock::format_time(time).0,
        run: "run".into(),
        mono_ns: seq,
        prev: "0".repeat(64),
        event,
    };
    NewRecord {
        seq,
        bytes: serde_json::to_vec(&record).expect("a record serializes"),
        time_ms: ms,
        // As the writer indexes it.
        keys: super::log::index_keys(&record.event),
    }
}

/// The record with the highest sequence number.
pub fn last_record(txn: &ReadTransaction) -> Result<Option<(u64, Vec<u8>)>, AuditError> {
    let Some(table) = open_existing(txn, RECORDS)? else {
        return Ok(None);
    };
    Ok(table
        .last()
        .map_err(storage)?
        .map(|(k, v)| (k.value(), v.value().to_vec())))
}

/// One record.
pub fn record(txn: &ReadTransaction, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let Some(table) = open_existing(txn, RECORDS)? else {
        return Ok(None);
    };
    Ok(table.get(seq).map_err(storage)?.map(|v| v.value().to_vec()))
}

/// Audit repository `receiver`'s "shipped up to" cursor (0: nothing shipped yet).
pub fn receiver_cursor(txn: &ReadTransaction, receiver: &str) -> Result<u64, AuditError> {
    let Some(table) = open_existing(txn, META)? else {
        return Ok(0);
    };
    Ok(table
        .get(format!("shipped_to:{receiver}").as_str())
        .map_err(storage)?
        .map_or(0, |v| v.value()))
}

/// The furthest any repository was told it has the trail: the highest of every
/// repository's cursor and the shipped-up-to mark (0: nothing shipped).
pub fn highest_shipped(txn: &ReadTransaction) -> Result<u64, AuditError> {
    let Some(table) = open_existing(txn, META)? else {
        return Ok(0);
    };
    let mut highest = 0;
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let key = key.value();
        if key.starts_with("shipped_to:") || key == Meta::ShippedUpTo.key() {
            highest = highest.max(value.value());
        }
    }
    Ok(highest)
}

/// Calls `visit` with every record from `from` on, in sequence order, until it breaks.
pub fn for_each_record(
    txn: &ReadTransaction,
    from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
) -> Result<(), AuditError> {
    let Some(table) = open_existing(txn, RECORDS)? else {
        return Ok(());
    };
    for entry in table.range(from..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        if visit(k.value(), v.value()).is_break() {
            break;
        }
    }
    Ok(())
}

/// Every checkpoint, by the sequence number it covers.
pub fn checkpoints(txn: &ReadTransaction) -> Result<BTreeMap<u64, Vec<u8>>, AuditError> {
    let Some(table) = open_existing(txn, CHECKPOINTS)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for entry in table.iter().map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        out.insert(k.value(), v.value().to_vec());
    }
    Ok(out)
}

/// Sequence numbers an index holds for `key`, ascending: the whole list at once, which
/// the tests compare; readers walk it ([`index_walk`], [`index_walk_back`]).
#[cfg(test)]
pub(crate) fn index_lookup(
    txn: &ReadTransaction,
    index: Index,
    key: &str,
) -> Result<Vec<u64>, AuditError> {
    let Some(table) = open_existing(txn, index.table())? else {
        return legacy_lookup(txn, index, key);
    };
    let mut out = Vec::new();
    for entry in table.range((key, 0)..=(key, u64::MAX)).map_err(storage)? {
        out.extend(decode_block(index, entry.map_err(storage)?.1.value())?);
    }
    // Blocks are written in sequence order and never overlap; sorting costs nothing then and
    // keeps the promise if a damaged store says otherwise.
    if !out.is_sorted() {
        out.sort_unstable();
        out.dedup();
    }
    Ok(out)
}

/// Calls `visit` with each sequence number at or after `from` that the index holds for
/// `key`, in order, until it breaks: reads only the posting blocks it needs, so a page of
/// a long list (a desk's two million records) costs that page, not the list.
pub fn index_walk(
    txn: &ReadTransaction,
    index: Index,
    key: &str,
    from: u64,
    mut visit: impl FnMut(u64) -> Result<ControlFlow<()>, AuditError>,
) -> Result<(), AuditError> {
    let Some(table) = open_existing(txn, index.table())? else {
        for seq in legacy_lookup(txn, index, key)? {
            if seq >= from && visit(seq)?.is_break() {
                break;
            }
        }
        return Ok(());
    };
    // Blocks are keyed by their first number and never overlap: the one `from` falls in
    // starts at or before it.
    let start = match table
        .range((key, 0)..=(key, from))
        .map_err(storage)?
        .next_back()
    {
        Some(entry) => entry.map_err(storage)?.0.value().1,
        None => from,
    };
    let mut last = None;
    for entry in table
        .range((key, start)..=(key, u64::MAX))
        .map_err(storage)?
    {
        for seq in decode_block(index, entry.map_err(storage)?.1.value())? {
            // In order, once each, whatever a damaged store says.
            if seq < from || last.is_some_and(|l| seq <= l) {
                continue;
            }
            last = Some(seq);
            if visit(seq)?.is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Calls `visit` with each sequence number before `before` that the index holds for `key`,
/// latest first, until it breaks: reads only the posting blocks it needs, from the end (a
/// desk's latest login before an access is near it, not among the desk's first records).
pub fn index_walk_back(
    txn: &ReadTransaction,
    index: Index,
    key: &str,
    before: u64,
    mut visit: impl FnMut(u64) -> Result<ControlFlow<()>, AuditError>,
) -> Result<(), AuditError> {
    let Some(table) = open_existing(txn, index.table())? else {
        for seq in legacy_lookup(txn, index, key)?.into_iter().rev() {
            if seq < before && visit(seq)?.is_break() {
                break;
            }
        }
        return Ok(());
    };
    let mut last = None;
    // A block keyed before `before` may hold numbers at or after it: they are passed over.
    for entry in table.range((key, 0)..(key, before)).map_err(storage)?.rev() {
        for seq in decode_block(index, entry.map_err(storage)?.1.value())?
            .into_iter()
            .rev()
        {
            // Descending, once each, whatever a damaged store says.
            if seq >= before || last.is_some_and(|l| seq >= l) {
                continue;
            }
            last = Some(seq);
            if visit(seq)?.is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A key's sequence numbers on a version 1 store, read by another process before its
/// upgrade.
fn legacy_lookup(txn: &ReadTransaction, index: Index, key: &str) -> Result<Vec<u64>, AuditError> {
    let Some(legacy) = index.legacy_table() else {
        return Ok(Vec::new());
    };
    let table = match txn.open_multimap_table(legacy) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut out = Vec::new();
    for value in table.get(key).map_err(storage)? {
        out.push(value.map_err(storage)?.value());
    }
    Ok(out)
}

/// One posting block's value: the sequence numbers, 8 bytes each, little-endian.
fn encode_block(seqs: impl Iterator<Item = u64>) -> Vec<u8> {
    seqs.flat_map(u64::to_le_bytes).collect()
}

/// The sequence numbers of one posting block.
fn decode_block(index: Index, bytes: &[u8]) -> Result<Vec<u64>, AuditError> {
    let seqs = bytes.chunks_exact(8);
    if !seqs.remainder().is_empty() || bytes.is_empty() {
        return Err(AuditError::Storage(format!(
            "a block of the {} index is malformed ({} bytes)",
            index.name(),
            bytes.len()
        )));
    }
    Ok(seqs
        .map(|chunk| {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(chunk);
            u64::from_le_bytes(seq)
        })
        .collect())
}

/// Sequence numbers of records whose time is within `[from_ms, to_ms]`, ascending by time.
/// Every write of records writes the time index in the same transaction: a store without
/// the table holds no record.
pub fn time_range(txn: &ReadTransaction, from_ms: u64, to_ms: u64) -> Result<Vec<u64>, AuditError> {
    let Some(table) = open_existing(txn, BY_TIME)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table
        .range((from_ms, 0)..=(to_ms, u64::MAX))
        .map_err(storage)?
    {
        out.push(entry.map_err(storage)?.0.value().1);
    }
    Ok(out)
}

/// What [`backup`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The last sequence number in the copy (0: an empty trail).
    pub head: u64,
    /// Records copied.
    pub records: u64,
    /// The epoch the copy was in.
    pub epoch: u64,
    /// When the snapshot was taken (Unix ms).
    pub taken_ms: u64,
}

/// Copies one consistent snapshot of `source` (which may be written meanwhile by the
/// running service) into a new database at `output`, marked as a backup (docs/audit.md,
/// "Backup and restore"). The copy is written beside `output` under a temporary name,
/// fsync'd, readable by its owner only, then renamed into place and its directory fsync'd:
/// `output` is either absent or a complete backup. An existing `output` is refused.
pub fn backup(
    source: &impl ReadStore,
    output: &Path,
    taken_ms: u64,
) -> Result<BackupReport, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;

    if output.exists() {
        return Err(AuditError::Storage(format!(
            "{} already exists; choose another name (a backup never overwrites)",
            output.display()
        )));
    }
    let file_name = output
        .file_name()
        .ok_or_else(|| AuditError::Storage(format!("{} names no file", output.display())))?;
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let partial = directory.join(format!(
        ".{}.partial-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let created = |e: std::io::Error| {
        AuditError::Storage(format!("cannot create {}: {e}", partial.display()))
    };
    // The copy holds patient identifiers: owner-only from its first byte.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(created)?;
    let result = (|| {
        let backend =
            redb::backends::FileBackend::new(file).map_err(|e| open_error(&partial, e))?;
        let copy = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(&partial, e))?;
        let snapshot = source.snapshot()?;
        let report = copy_snapshot(&snapshot, &copy, taken_ms)?;
        drop(copy);
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(created)?;
        std::fs::rename(&partial, output).map_err(|e| {
            AuditError::Storage(format!("cannot rename into {}: {e}", output.display()))
        })?;
        std::fs::File::open(&directory)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                AuditError::Storage(format!("cannot sync {}: {e}", directory.display()))
            })?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Every table of `from`, into one transaction of `to`, plus the backup marks.
fn copy_snapshot(
    from: &ReadTransaction,
    to: &Database,
    taken_ms: u64,
) -> Result<BackupReport, AuditError> {
    let txn = to.begin_write().map_err(storage)?;
    let mut records = 0;
    let head;
    {
        let mut meta_out = txn.open_table(META).map_err(storage)?;
        if let Some(table) = open_existing(from, META)? {
            for entry in table.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                meta_out.insert(k.value(), v.value()).map_err(storage)?;
            }
        }
        let mut records_out = txn.open_table(RECORDS).map_err(storage)?;
        if let Some(table) = open_existing(from, RECORDS)? {
            for entry in table.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                records_out.insert(k.value(), v.value()).map_err(storage)?;
                records += 1;
            }
        }
        let mut checkpoints_out = txn.open_table(CHECKPOINTS).map_err(storage)?;
        if let Some(table) = open_existing(from, CHECKPOINTS)? {
            for entry in table.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                checkpoints_out
                    .insert(k.value(), v.value())
                    .map_err(storage)?;
            }
        }
        let mut time_out = txn.open_table(BY_TIME).map_err(storage)?;
        if let Some(table) = open_existing(from, BY_TIME)? {
            for entry in table.iter().map_err(storage)? {
                let (k, _) = entry.map_err(storage)?;
                time_out.insert(k.value(), ()).map_err(storage)?;
            }
        }
        for index in Index::ALL {
            if let Some(table) = open_existing(from, index.table())? {
                let mut out = txn.open_table(index.table()).map_err(storage)?;
                for entry in table.iter().map_err(storage)? {
                    let (k, v) = entry.map_err(storage)?;
                    out.insert(k.value(), v.value()).map_err(storage)?;
                }
            }
            // A version 1 source is copied as it is, stamp included; the copy is upgraded
            // when it is restored (opened for writing).
            use redb::ReadableMultimapTable;
            let Some(legacy) = index.legacy_table() else {
                continue;
            };
            let table = match from.open_multimap_table(legacy) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(storage(e)),
            };
            let mut out = txn.open_multimap_table(legacy).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (k, values) = entry.map_err(storage)?;
                for value in values {
                    out.insert(k.value(), value.map_err(storage)?.value())
                        .map_err(storage)?;
                }
            }
        }
        let pruned = meta(from, Meta::PrunedThrough)?.unwrap_or(0);
        head = last_record(from)?.map_or(pruned, |(seq, _)| seq);
        meta_out
            .insert(Meta::BackupHead.key(), head)
            .map_err(storage)?;
        meta_out
            .insert(Meta::BackupTakenMs.key(), taken_ms)
            .map_err(storage)?;
    }
    let epoch = meta(from, Meta::Epoch)?.unwrap_or(0);
    txn.commit().map_err(storage)?;
    Ok(BackupReport {
        head,
        records,
        epoch,
        taken_ms,
    })
}

/// Opens a table for reading; a table never written to does not exist yet, and reads as empty.
fn open_existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    definition: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, AuditError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

pub(super) fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

fn open_error(path: &Path, e: redb::DatabaseError) -> AuditError {
    let path = path.to_owned();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            AuditError::Locked { path }
        }
        redb::DatabaseError::RepairAborted => AuditError::NeedsRecovery { path },
        redb::DatabaseError::UpgradeRequired(v) => AuditError::UnknownFormat {
            path,
            found: format!("redb file format {v}"),
            supported: FORMAT_VERSION,
        },
        other => AuditError::Unreadable {
            path,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record on its way to the store carries the patient's INS (an index key) and the
    /// record's text: its `Debug` shows neither, nor does the filter that looks one up.
    #[test]
    fn records_and_filters_print_no_patient_data() {
        let ins = "269054958815780";
        let record = NewRecord {
            seq: 1,
            bytes: format!("{{\"patient\":{{\"ins\":\"{ins}\"}}}}").into_bytes(),
            time_ms: 0,
            keys: vec![(Index::Patient, ins.into())],
        };
        let filter = super::super::export::Filter {
            patient: Some(ins.into()),
            ..Default::default()
        };
        for printed in [format!("{record:?}"), format!("{filter:?}")] {
            assert!(
                !printed.contains("2690549") && !printed.contains("50, 54"),
                "{printed}"
            );
        }
    }

    #[test]
    fn reopening_keeps_the_format_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        drop(AuditStore::open(&path).unwrap());
        let store = AuditStore::open(&path).unwrap();
        assert_eq!(
            meta(&store.snapshot().unwrap(), Meta::FormatVersion).unwrap(),
            Some(FORMAT_VERSION)
        );
        store.check().unwrap();
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        AuditStore::open(&path)
            .unwrap()
            .set_meta(Meta::FormatVersion, 99)
            .unwrap();
        let err = AuditStore::open(&path).unwrap_err();
        assert!(
            matches!(err, AuditError::UnknownFormat { ref found, .. } if found == "99"),
            "{err}"
        );
        assert!(err.to_string().contains("format version 99"), "{err}");
        let err = AuditReader::open(&path).unwrap_err();
        assert!(matches!(err, AuditError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn garbage_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        std::fs::write(&path, b"this is not a redb database, just some text").unwrap();
        let err = AuditStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("audit.redb"), "{err}");
        assert!(!matches!(err, AuditError::Locked { .. }));
    }

    #[test]
    fn a_reader_follows_the_writers_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        let store = AuditStore::open(&path).unwrap();
        let reader = AuditReader::open(&path).unwrap();
        let record = |seq| NewRecord {
            seq,
            bytes: vec![b'x'],
            time_ms: seq,
            keys: vec![(Index::Patient, "p".into())],
        };
        store.commit(&[record(1), record(2)], &[]).unwrap();
        let txn = reader.snapshot().unwrap();
        assert_eq!(last_record(&txn).unwrap().map(|r| r.0), Some(2));
        assert_eq!(index_lookup(&txn, Index::Patient, "p").unwrap(), vec![1, 2]);
        assert_eq!(time_range(&txn, 2, 10).unwrap(), vec![2]);
        assert!(
            AuditStore::open(&path).is_err(),
            "a second writer must be refused"
        );
    }

    fn record_with(seq: u64, patient: &str, desk: &str) -> NewRecord {
        NewRecord {
            seq,
            bytes: vec![b'x'],
            time_ms: seq,
            keys: vec![(Index::Patient, patient.into()), (Index::Desk, desk.into())],
        }
    }

    fn blocks(txn: &ReadTransaction, index: Index) -> Vec<(String, u64, usize)> {
        let table = open_existing(txn, index.table()).unwrap().unwrap();
        table
            .iter()
            .unwrap()
            .map(|entry| {
                let (k, v) = entry.unwrap();
                (k.value().0.to_owned(), k.value().1, v.value().len() / 8)
            })
            .collect()
    }

    #[test]
    fn a_transaction_writes_one_block_per_key_and_lookups_join_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        // One access's records share their keys; another patient comes between them.
        store
            .commit(
                &[
                    record_with(1, "p1", "d"),
                    record_with(2, "p2", "d"),
                    record_with(3, "p1", "d"),
                ],
                &[],
            )
            .unwrap();
        store
            .commit(&[record_with(4, "p1", "d"), record_with(5, "p3", "e")], &[])
            .unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(
            blocks(&txn, Index::Patient),
            vec![
                ("p1".to_owned(), 1, 2),
                ("p1".to_owned(), 4, 1),
                ("p2".to_owned(), 2, 1),
                ("p3".to_owned(), 5, 1),
            ]
        );
        assert_eq!(
            blocks(&txn, Index::Desk),
            vec![
                ("d".to_owned(), 1, 3),
                ("d".to_owned(), 4, 1),
                ("e".to_owned(), 5, 1)
            ]
        );
        assert_eq!(
            index_lookup(&txn, Index::Patient, "p1").unwrap(),
            vec![1, 3, 4]
        );
        assert_eq!(
            index_lookup(&txn, Index::Desk, "d").unwrap(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            index_lookup(&txn, Index::Patient, "p").unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(
            index_lookup(&txn, Index::Call, "p1").unwrap(),
            Vec::<u64>::new()
        );
        drop(txn);
        let mut twice = record_with(6, "p4", "d");
        twice.keys.push((Index::Patient, "p4".into()));
        store.commit(&[twice], &[]).unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(index_lookup(&txn, Index::Patient, "p4").unwrap(), vec![6]);
    }

    #[test]
    fn pruning_cuts_a_block_that_straddles_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let records: Vec<_> = (1..=5).map(|seq| record_with(seq, "p", "d")).collect();
        store.commit(&records, &[(2, b"cp".to_vec())]).unwrap();
        let doomed: Vec<_> = records[..2]
            .iter()
            .map(|r| Pruned {
                seq: r.seq,
                time_ms: r.time_ms,
                keys: r.keys.clone(),
            })
            .collect();
        store.prune_through(2, &doomed).unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(
            index_lookup(&txn, Index::Patient, "p").unwrap(),
            vec![3, 4, 5]
        );
        assert_eq!(blocks(&txn, Index::Desk), vec![("d".to_owned(), 3, 3)]);
        assert_eq!(record(&txn, 2).unwrap(), None);
        assert_eq!(time_range(&txn, 0, 10).unwrap(), vec![3, 4, 5]);
    }

    #[test]
    fn a_malformed_block_is_an_error_that_names_the_index_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(Index::Patient.table())
            .unwrap()
            .insert(("185057800000042", 1), [1u8, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let err = index_lookup(
            &store.snapshot().unwrap(),
            Index::Patient,
            "185057800000042",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("patient index") && err.contains("3 bytes"),
            "{err}"
        );
        assert!(!err.contains("185057800000042"), "{err}");
    }

    /// Writes a store as format version 1 did: multimap indexes.
    fn write_version_1(path: &Path, patient_records: u64) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(Meta::FormatVersion.key(), FORMAT_MULTIMAP_INDEXES)
                .unwrap();
            meta.insert(Meta::HeadSeq.key(), patient_records + 1)
                .unwrap();
            let mut records = txn.open_table(RECORDS).unwrap();
            let mut patients = txn
                .open_multimap_table(Index::Patient.legacy_table().unwrap())
                .unwrap();
            for seq in 1..=patient_records {
                records.insert(seq, b"x".as_slice()).unwrap();
                patients.insert("p", seq).unwrap();
            }
            records
                .insert(patient_records + 1, b"x".as_slice())
                .unwrap();
            patients.insert("q", patient_records + 1).unwrap();
            txn.open_multimap_table(Index::Desk.legacy_table().unwrap())
                .unwrap()
                .insert("d", 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }

    /// A decision on access 1 and alerts naming it, as an older gateway wrote them: no
    /// subject keys.
    fn without_subjects(seq: u64, event: super::super::Event) -> NewRecord {
        let mut record = test_record(seq, 1, seq, event);
        record.keys.retain(|(index, _)| *index != Index::Subject);
        record
    }

    fn decision_on(of: u64) -> super::super::Event {
        use super::super::event::{Decision, EventKind, Outcome, Review};
        super::super::Event {
            review: Some(Review {
                of,
                decision: Decision::Justified,
                comment: String::new(),
                replaces: None,
            }),
            ..super::super::Event::new(EventKind::AccessReviewed, Outcome::Success)
        }
    }

    fn alert_on(records: Vec<u64>) -> super::super::Event {
        use super::super::event::{Alert, AlertKind, EventKind, Outcome};
        super::super::Event {
            alert: Some(Alert {
                kind: AlertKind::ManyPatients,
                records,
            }),
            ..super::super::Event::new(EventKind::SecurityAlert, Outcome::Success)
        }
    }

    #[test]
    fn the_writer_indexes_what_a_decision_or_an_alert_is_about() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let many: Vec<u64> = (1..=SUBJECTS_MAX as u64 + 1).collect();
        store
            .commit(
                &[
                    test_record(400, 1, 400, decision_on(7)),
                    test_record(401, 1, 401, alert_on(vec![7, 9, 7])),
                    test_record(402, 1, 402, alert_on(many)),
                ],
                &[],
            )
            .unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(
            index_lookup(&txn, Index::Subject, "7").unwrap(),
            vec![400, 401]
        );
        assert_eq!(index_lookup(&txn, Index::Subject, "9").unwrap(), vec![401]);
        assert_eq!(
            index_lookup(&txn, Index::Subject, MANY_SUBJECTS).unwrap(),
            vec![402]
        );
        assert_eq!(
            index_lookup(&txn, Index::Subject, "1").unwrap(),
            Vec::<u64>::new(),
            "an alert naming too many records is under one key, not one per record"
        );
        assert!(subjects_indexed(&txn).unwrap());
    }

    /// A version 2 store (an older gateway's) gets its subject index from its records,
    /// those its journal still held included, on the first writable open; a reader before
    /// that sees it as not indexed.
    #[test]
    fn a_version_2_store_is_indexed_by_subject_on_the_first_writable_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        let many: Vec<u64> = (1..=SUBJECTS_MAX as u64 + 1).collect();
        let store = AuditStore::open(&path).unwrap();
        store
            .commit(
                &[
                    without_subjects(1, decision_on(0)),
                    without_subjects(2, decision_on(1)),
                    without_subjects(3, alert_on(vec![1, 2])),
                    without_subjects(4, alert_on(many)),
                    NewRecord {
                        seq: 5,
                        bytes: vec![0xff, 0xfe],
                        time_ms: 5,
                        keys: Vec::new(),
                    },
                ],
                &[],
            )
            .unwrap();
        store
            .set_meta(Meta::FormatVersion, FORMAT_WITHOUT_SUBJECTS)
            .unwrap();
        drop(store);
        let reader = AuditReader::open(&path).unwrap();
        assert!(!subjects_indexed(&reader.snapshot().unwrap()).unwrap());
        drop(reader);
        // The older gateway stopped with a decision still in its journal only.
        let mut sixth = without_subjects(6, decision_on(1));
        let mut record: super::super::Record = serde_json::from_slice(&sixth.bytes).unwrap();
        record.prev = crate::encoding::hex(&super::super::chain::hash(&[0xff, 0xfe]));
        sixth.bytes = serde_json::to_vec(&record).unwrap();
        let mut journal = journal::Journal::open(&journal::path_for(&path)).unwrap();
        journal.append(&[Entry::Record(sixth)]).unwrap();
        journal.syncer().unwrap().sync().unwrap();
        drop(journal);

        let store = AuditStore::open(&path).unwrap();
        let txn = store.snapshot().unwrap();
        assert!(subjects_indexed(&txn).unwrap());
        assert_eq!(
            meta(&txn, Meta::FormatVersion).unwrap(),
            Some(FORMAT_VERSION)
        );
        assert_eq!(
            index_lookup(&txn, Index::Subject, "1").unwrap(),
            vec![2, 3, 6]
        );
        assert_eq!(index_lookup(&txn, Index::Subject, "0").unwrap(), vec![1]);
        assert_eq!(index_lookup(&txn, Index::Subject, "2").unwrap(), vec![3]);
        assert_eq!(
            index_lookup(&txn, Index::Subject, MANY_SUBJECTS).unwrap(),
            vec![4]
        );
        drop(txn);
        drop(store);
        // Opened again, nothing is indexed twice.
        let store = AuditStore::open(&path).unwrap();
        assert_eq!(
            blocks(&store.snapshot().unwrap(), Index::Subject)
                .iter()
                .map(|(key, first, len)| (key.as_str(), *first, *len))
                .collect::<Vec<_>>(),
            vec![
                ("0", 1, 1),
                ("1", 2, 3),
                ("2", 3, 1),
                ("many", 4, 1),
                (UNREADABLE_SUBJECTS, 5, 1)
            ]
        );
    }

    #[test]
    fn a_walk_back_reads_the_latest_first_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        store
            .commit(
                &(1..=4)
                    .map(|s| record_with(s, "p", "d"))
                    .collect::<Vec<_>>(),
                &[],
            )
            .unwrap();
        store
            .commit(
                &(5..=7)
                    .map(|s| record_with(s, "p", "d"))
                    .collect::<Vec<_>>(),
                &[],
            )
            .unwrap();
        let txn = store.snapshot().unwrap();
        let walk = |before: u64, most: usize| {
            let mut seen = Vec::new();
            index_walk_back(&txn, Index::Patient, "p", before, |seq| {
                seen.push(seq);
                Ok(if seen.len() == most {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .unwrap();
            seen
        };
        assert_eq!(walk(100, usize::MAX), vec![7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(walk(6, usize::MAX), vec![5, 4, 3, 2, 1]);
        assert_eq!(walk(3, usize::MAX), vec![2, 1], "inside a block");
        assert_eq!(walk(7, 3), vec![6, 5, 4], "stops when told");
        assert_eq!(walk(1, usize::MAX), Vec::<u64>::new());
    }

    #[test]
    fn a_version_1_store_is_read_as_it_is_and_upgraded_by_the_first_writable_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        let long = BLOCK_MAX_SEQS as u64 + 10;
        write_version_1(&path, long);
        let all: Vec<u64> = (1..=long).collect();

        // A reader (`audit verify` with the service stopped) changes nothing.
        let reader = AuditReader::open(&path).unwrap();
        let txn = reader.snapshot().unwrap();
        assert_eq!(index_lookup(&txn, Index::Patient, "p").unwrap(), all);
        assert_eq!(
            meta(&txn, Meta::FormatVersion).unwrap(),
            Some(FORMAT_MULTIMAP_INDEXES)
        );
        drop((txn, reader));

        let store = AuditStore::open(&path).unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(
            meta(&txn, Meta::FormatVersion).unwrap(),
            Some(FORMAT_VERSION)
        );
        assert_eq!(index_lookup(&txn, Index::Patient, "p").unwrap(), all);
        assert_eq!(
            index_lookup(&txn, Index::Patient, "q").unwrap(),
            vec![long + 1]
        );
        assert_eq!(index_lookup(&txn, Index::Desk, "d").unwrap(), vec![1]);
        assert_eq!(
            blocks(&txn, Index::Patient)
                .iter()
                .map(|(key, first, len)| (key.as_str(), *first, *len))
                .collect::<Vec<_>>(),
            vec![
                ("p", 1, BLOCK_MAX_SEQS),
                ("p", BLOCK_MAX_SEQS as u64 + 1, 10),
                ("q", long + 1, 1)
            ]
        );
        assert!(matches!(
            txn.open_multimap_table(Index::Patient.legacy_table().unwrap()),
            Err(TableError::TableDoesNotExist(_))
        ));
        drop(txn);
        // New records join the upgraded index.
        store
            .commit(&[record_with(long + 2, "p", "d")], &[])
            .unwrap();
        let txn = store.snapshot().unwrap();
        assert_eq!(
            index_lookup(&txn, Index::Patient, "p").unwrap().len(),
            all.len() + 1
        );
        drop(txn);
        drop(store);
        AuditStore::open(&path).unwrap();
    }
}
