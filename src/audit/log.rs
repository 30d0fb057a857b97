//! The audit log: the one writer of audit records.
//!
//! Appenders hand events to a dedicated writer thread and wait. Three threads form a
//! pipeline, so that the CPU work of one batch overlaps the disk wait of the one before:
//!
//! - `audit-writer` gathers a batch (up to N records, or whatever arrives within T ms of
//!   the first), gives each record its sequence number, time and `prev` hash, adds a signed
//!   checkpoint when one is due, and appends the batch to the journal (`journal.rs`);
//! - `audit-sync` makes everything written so far durable with one `fdatasync`, and only
//!   then gives each appender of those batches its [`Receipt`]: the proof that its record
//!   is on disk;
//! - `audit-indexer` commits the durable records to redb in large transactions, where every
//!   reader finds them (in-process readers wait for it; see [`super::store`]).
//!
//! If a write or a sync fails, every appender concerned gets the error, the log reports
//! itself unhealthy (so that systemd restarts the service) and refuses later appends; a
//! refused record got no receipt, and one the journal kept anyway is taken in at restart.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::AuditError;
use super::chain::{self, Checkpoint, GENESIS, Hash, Signer};
use super::disk_times::DiskTimes;
use super::event::{Event, RECORD_VERSION, Record};
use super::journal::{Entry, Journal, Progress, Syncer};
use super::store::{self, AuditStore, Index, Meta, NewRecord, ReadStore};
use crate::encoding::hex;

/// Records larger than this are refused: an oversized justification must not bloat the
/// evidence store (and the refusal exercises the "no record, no access" path).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// The journal is emptied once it holds this much and redb has all of it.
const JOURNAL_LIMIT: u64 = 32 * 1024 * 1024;
/// The indexer commits up to this many records per redb transaction: large transactions
/// amortise redb's copy-on-write of index pages (docs/audit.md, "The journal").
const INDEX_BATCH: usize = 8192;
/// ...and gathers for up to this long: small redb transactions cost several times more per
/// record (measured: 50 µs in transactions of 64 records, 14 µs in 4096), and each ends on
/// an `fdatasync` that the journal's syncs issued meanwhile wait for (docs/audit.md, "The
/// journal"). The receipts do not wait for the index; shippers, alerts and compliance
/// views see a record up to this much later.
const INDEX_GATHER: Duration = Duration::from_millis(50);
/// ...looking every this long, so that a full transaction's worth is not held for long.
const INDEX_GATHER_STEP: Duration = Duration::from_millis(5);
/// How long the writer waits for the indexer before a step that needs redb complete.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

type Reply = oneshot::Sender<Result<Receipt, AuditError>>;

/// How the writer batches and checkpoints.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node id written into every record.
    pub node: String,
    /// A batch commits when it holds this many records...
    pub batch_max_records: usize,
    /// ...or this long after its first record arrived, whichever comes first.
    pub batch_max_wait: Duration,
    /// A checkpoint is signed after this many records...
    pub checkpoint_every_records: u64,
    /// ...or this long after the previous one if records were added since.
    pub checkpoint_every: Duration,
}

/// Proof that a record is durable. Only the audit log makes these; code that releases
/// patient data takes one, so it cannot run before the record of that release is on disk.
///
/// Not `Clone`, and built only here: one durable record authorises one release, which
/// consumes it (`access::deliver`, `Sessions::open`).
#[must_use = "a receipt is the proof of append that releasing data requires"]
#[derive(Debug, PartialEq, Eq)]
pub struct Receipt {
    seq: u64,
    hash: Hash,
}

impl Receipt {
    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The record's hash, hex.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// What pruning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The checkpoint now anchoring the chain, if anything was pruned.
    pub through: Option<u64>,
    /// Records deleted.
    pub records: u64,
    /// The first break-glass access not yet reviewed (or under investigation), which the
    /// prune stopped before: the trail of an access a compliance officer has still to
    /// look at is never deleted.
    pub held_by_review: Option<u64>,
}

/// Appends answer on tokio channels (awaited by request handlers); control messages answer
/// on std channels, which may be waited on from any thread, runtime or not.
enum Msg {
    Append(Box<Event>, Reply),
    AppendAll(Vec<(Event, Reply)>),
    Shipped(u64, mpsc::Sender<Result<(), AuditError>>),
    Cursor(String, u64, mpsc::Sender<Result<(), AuditError>>),
    Prune(
        u64,
        Vec<String>,
        mpsc::Sender<Result<PruneReport, AuditError>>,
    ),
    Checkpoint(mpsc::Sender<Result<u64, AuditError>>),
    Close(mpsc::Sender<Result<(), AuditError>>),
}

/// Handle to the writer thread. Cheap to share (`Arc`); closing it writes a final checkpoint.
#[derive(Debug)]
pub struct AuditLog {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    public_key: String,
    failed: Arc<AtomicBool>,
    commits: Arc<tokio::sync::Notify>,
    disk_times: DiskTimes,
}

impl AuditLog {
    /// Checks the tail of the chain and starts the writer thread.
    pub fn start(
        store: Arc<AuditStore>,
        signer: Signer,
        settings: Settings,
    ) -> Result<Self, AuditError> {
        let failed = Arc::new(AtomicBool::new(false));
        let mut writer = Writer::resume(store, signer, settings, failed.clone())?;
        writer.begin_epoch_if_restored()?;
        // A tail a crash left unsigned (checked whole by `resume`) is signed now, before
        // anything of this run: a store's unsigned tail stays within what a running writer
        // leaves (`export::UnsignedTail`), so a longer one says checkpoints were removed.
        writer.checkpoint_now()?;
        let commits = Arc::new(tokio::sync::Notify::new());
        let public_key = writer.signer.public_key_hex().to_owned();
        let disk_times = DiskTimes::default();
        writer.pipeline = Some(Pipeline::start(
            &writer.store,
            writer.head_seq,
            failed.clone(),
            commits.clone(),
            disk_times.clone(),
        )?);
        let (tx, rx) = mpsc::channel();
        let thread = spawn("audit-writer", move || writer.run(rx))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            public_key,
            failed,
            commits,
            disk_times,
        })
    }

    /// How long the journal's syncs and the index commits take (the metrics serve them).
    pub fn disk_times(&self) -> &DiskTimes {
        &self.disk_times
    }

    /// Notified (`notify_waiters`) after each commit of records: followers of the trail
    /// (shippers, alerts) wait on it instead of polling.
    pub fn commits(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    /// False once a commit failed on a storage error. redb then refuses every later write
    /// until the database is reopened, so the service reports not ready, stops feeding the
    /// systemd watchdog, and is restarted: appends fail (and accesses are refused) meanwhile.
    pub fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
    }

    /// The public key checkpoints are signed with (hex).
    pub fn public_key_hex(&self) -> &str {
        &self.public_key
    }

    /// Records `event` and returns once it is durable.
    pub async fn append(&self, event: Event) -> Result<Receipt, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Append(Box::new(event), reply))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Records `events`, in order, in one commit (one fsync), and returns once all are
    /// durable: for records that belong together, such as an access and its read. All or
    /// nothing: if one cannot be recorded (too large), none is, and the error says why.
    pub async fn append_all(&self, events: Vec<Event>) -> Result<Vec<Receipt>, AuditError> {
        let (batch, answers): (Vec<_>, Vec<_>) = events
            .into_iter()
            .map(|event| {
                let (reply, rx) = oneshot::channel();
                ((event, reply), rx)
            })
            .unzip();
        self.send(Msg::AppendAll(batch))?;
        let mut receipts = Vec::with_capacity(answers.len());
        for rx in answers {
            receipts.push(rx.await.map_err(|_| AuditError::Closed)??);
        }
        Ok(receipts)
    }

    /// As [`AuditLog::append`], for synchronous callers outside an async runtime (CLI, tests).
    pub fn append_blocking(&self, event: Event) -> Result<Receipt, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Append(Box::new(event), reply))?;
        rx.blocking_recv().map_err(|_| AuditError::Closed)?
    }

    /// Records that everything up to `seq` reached every audit repository.
    pub fn mark_shipped(&self, seq: u64) -> Result<(), AuditError> {
        self.control(|reply| Msg::Shipped(seq, reply))
    }

    /// Records that everything up to `seq` reached audit repository `receiver`.
    pub fn mark_shipped_to(&self, receiver: &str, seq: u64) -> Result<(), AuditError> {
        let receiver = receiver.to_owned();
        self.control(move |reply| Msg::Cursor(receiver, seq, reply))
    }

    /// Prunes what is older than `cutoff_ms` (Unix ms), confirmed by every repository in
    /// `repositories` (their own cursors; with none, what the shippers last stored as
    /// shipped by all), and before a checkpoint. A `trail_pruned` record saying so is
    /// appended and signed first.
    pub fn prune(
        &self,
        cutoff_ms: u64,
        repositories: Vec<String>,
    ) -> Result<PruneReport, AuditError> {
        self.control(|reply| Msg::Prune(cutoff_ms, repositories, reply))
    }

    /// Signs a checkpoint of the chain's head now, unless one already signs it: an export
    /// taken after it has every record under a signature (blocking: call it off the
    /// async workers). Returns the sequence number the trail is signed through.
    pub fn checkpoint(&self) -> Result<u64, AuditError> {
        self.control(Msg::Checkpoint)
    }

    /// Signs a final checkpoint and stops the writer; later appends fail with `Closed`.
    pub fn close(&self) -> Result<(), AuditError> {
        let result = self.control(Msg::Close);
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
        result
    }

    fn control<T>(
        &self,
        msg: impl FnOnce(mpsc::Sender<Result<T, AuditError>>) -> Msg,
    ) -> Result<T, AuditError> {
        let (reply, rx) = mpsc::channel();
        self.send(msg(reply))?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        let guard = self.tx.lock().map_err(|_| AuditError::Closed)?;
        let tx = guard.as_ref().ok_or(AuditError::Closed)?;
        tx.send(msg).map_err(|_| AuditError::Closed)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.thread.lock().map(|t| t.is_some()).unwrap_or(false) {
            let _ = self.close();
        }
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, AuditError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map_err(|e| AuditError::Storage(format!("cannot start the {name} thread: {e}")))
}

/// A batch written to the journal, waiting for its sync.
struct Written {
    replies: Vec<(Reply, Receipt)>,
    entries: Vec<Entry>,
}

/// The journal and the two threads after the writer.
struct Pipeline {
    journal: Journal,
    progress: Arc<Progress>,
    to_sync: Option<mpsc::Sender<Written>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    fn start(
        store: &Arc<AuditStore>,
        head: u64,
        failed: Arc<AtomicBool>,
        commits: Arc<tokio::sync::Notify>,
        times: DiskTimes,
    ) -> Result<Self, AuditError> {
        let progress = Arc::new(Progress::starting_at(head));
        store.follow(progress.clone())?;
        let journal = Journal::open(&store.journal_path())?;
        let syncer = journal.syncer()?;
        let (to_index, index_rx) = mpsc::channel();
        let (to_sync, sync_rx) = mpsc::channel();
        let indexer = {
            let (store, progress, failed) = (store.clone(), progress.clone(), failed.clone());
            let times = times.clone();
            spawn("audit-indexer", move || {
                index_loop(&store, &index_rx, &progress, &failed, &commits, &times);
            })?
        };
        let sync = {
            let progress = progress.clone();
            spawn("audit-sync", move || {
                sync_loop(&syncer, &sync_rx, &to_index, &progress, &failed, &times);
            })?
        };
        Ok(Self {
            journal,
            progress,
            to_sync: Some(to_sync),
            threads: vec![sync, indexer],
        })
    }

    /// Lets the threads finish what they hold, and waits for them.
    fn stop(&mut self) {
        self.to_sync.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What an append gets once the log has failed, until the restart.
fn stopped() -> AuditError {
    AuditError::Storage("an earlier audit write failed; the trail needs a restart".into())
}

fn fail(failed: &AtomicBool, progress: &Progress) {
    failed.store(true, Ordering::SeqCst);
    progress.failed();
}

/// `audit-sync`: one `fdatasync` for every batch written meanwhile, then their receipts.
fn sync_loop(
    syncer: &Syncer,
    batches: &mpsc::Receiver<Written>,
    to_index: &mpsc::Sender<Vec<Entry>>,
    progress: &Progress,
    failed: &AtomicBool,
    times: &DiskTimes,
) {
    while let Ok(first) = batches.recv() {
        // Only batches written before the sync starts are covered by it.
        let mut written = vec![first];
        written.extend(batches.try_iter());
        let synced = if failed.load(Ordering::SeqCst) {
            Err(stopped())
        } else {
            let started = Instant::now();
            let synced = syncer.sync();
            times.journal_synced(started.elapsed());
            synced
        };
        match synced {
            Ok(()) => {
                for batch in written {
                    for (reply, receipt) in batch.replies {
                        let _ = reply.send(Ok(receipt));
                    }
                    let _ = to_index.send(batch.entries);
                }
            }
            Err(e) => {
                fail(failed, progress);
                let records: usize = written.iter().map(|b| b.replies.len()).sum();
                tracing::error!(error = %e, records, "audit journal sync failed; the batch is refused and the audit trail needs a restart");
                for (reply, _) in written.into_iter().flat_map(|b| b.replies) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// `audit-indexer`: durable records into redb, many batches per transaction.
fn index_loop(
    store: &AuditStore,
    batches: &mpsc::Receiver<Vec<Entry>>,
    progress: &Progress,
    failed: &AtomicBool,
    commits: &tokio::sync::Notify,
    times: &DiskTimes,
) {
    while let Ok(mut entries) = batches.recv() {
        // Gathers by sleeping, then taking what came: waiting on the channel instead would
        // wake this thread, a system call and a context switch, for every batch synced
        // meanwhile.
        let deadline = Instant::now() + INDEX_GATHER;
        loop {
            // At a stop, the sync thread is gone: commit what came without waiting more.
            let mut stopping = false;
            while entries.len() < INDEX_BATCH {
                match batches.try_recv() {
                    Ok(more) => entries.extend(more),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if stopping || entries.len() >= INDEX_BATCH || left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(INDEX_GATHER_STEP));
        }
        let mut records = Vec::with_capacity(entries.len());
        let mut checkpoints = Vec::new();
        for entry in entries {
            match entry {
                Entry::Record(record) => records.push(record),
                Entry::Checkpoint(seq, bytes) => checkpoints.push((seq, bytes)),
            }
        }
        let started = Instant::now();
        let committed = store.commit(&records, &checkpoints);
        times.index_committed(started.elapsed());
        match committed {
            Ok(()) => {
                if let Some(last) = records.last() {
                    progress.indexed(last.seq);
                }
                commits.notify_waiters();
            }
            Err(e) => {
                fail(failed, progress);
                tracing::error!(error = %e, records = records.len(), "audit index commit failed; the records are in the journal, and the audit trail needs a restart to take them in");
                // The journal keeps what follows; the restart takes it in.
                for _ in batches.iter() {}
                return;
            }
        }
    }
}

struct Writer {
    store: Arc<AuditStore>,
    signer: Signer,
    settings: Settings,
    head_seq: u64,
    head_hash: Hash,
    checkpointed_seq: u64,
    checkpointed_at: Instant,
    run: String,
    epoch: u64,
    started: Instant,
    failed: Arc<AtomicBool>,
    /// Set once the writer is resumed (the epoch check commits straight to redb before).
    pipeline: Option<Pipeline>,
}

impl Writer {
    /// Finds the chain head and checks the tail since the last checkpoint, so that a restart
    /// continues the chain it left and never forks from a damaged or rolled-back store.
    fn resume(
        store: Arc<AuditStore>,
        signer: Signer,
        settings: Settings,
        failed: Arc<AtomicBool>,
    ) -> Result<Self, AuditError> {
        let txn = store.snapshot()?;
        let checkpoints = store::checkpoints(&txn)?;
        let pruned = store::meta(&txn, Meta::PrunedThrough)?.unwrap_or(0);
        let (head_seq, head_hash) = match store::last_record(&txn)? {
            Some((seq, bytes)) => (seq, chain::hash(&bytes)),
            None if pruned > 0 => (pruned, anchor_hash(&checkpoints, pruned)?),
            None => (0, GENESIS),
        };
        let integrity = |what: String| AuditError::Integrity {
            path: store.path().to_owned(),
            what,
        };
        let marked = store::meta(&txn, Meta::HeadSeq)?.unwrap_or(0);
        if marked > head_seq {
            return Err(integrity(format!(
                "the store recorded {marked} records but the last one present is {head_seq}: its tail was removed"
            )));
        }
        // The furthest any repository received (not the slowest's cursor): every record
        // a repository holds must stay the one it holds.
        let shipped = store::highest_shipped(&txn)?;
        if shipped > head_seq {
            return Err(integrity(format!(
                "records up to {shipped} were shipped but the store ends at {head_seq}: it was rolled back, and continuing would fork the chain"
            )));
        }
        let last_checkpoint = checkpoints.keys().next_back().copied().unwrap_or(0);
        if last_checkpoint > head_seq {
            return Err(integrity(format!(
                "checkpoint {last_checkpoint} signs a record the store no longer has (it ends at {head_seq}): its tail was removed"
            )));
        }
        check_tail(&txn, &checkpoints, last_checkpoint, pruned, head_seq)
            .map_err(|e| integrity(e.to_string()))?;
        // A crash leaves at most what a running writer leaves unsigned; more says the
        // checkpoints were removed (and the records they signed may be forged). Signing it
        // now would pass it off as genuine: the start is refused, for a person to judge.
        let signed = last_checkpoint.max(pruned);
        if head_seq > signed
            && super::export::UnsignedTail::of(&settings).exceeded_by(&txn, signed + 1, head_seq)
        {
            return Err(integrity(format!(
                "records {} to {head_seq} are under no checkpoint signature, more than this writer ever leaves: checkpoints were removed (run samu-gateway audit verify; restore from a backup), or audit.checkpoint_every_records / checkpoint_every_secs was lowered since the last run (set it back for one start)",
                signed + 1
            )));
        }
        let epoch = store::meta(&txn, Meta::Epoch)?.unwrap_or(0);
        let run = crate::random::hex_id::<8>().map_err(|e| AuditError::Storage(e.to_string()))?;
        Ok(Self {
            store,
            signer,
            settings,
            head_seq,
            head_hash,
            checkpointed_seq: last_checkpoint.max(pruned),
            checkpointed_at: Instant::now(),
            run,
            epoch,
            started: Instant::now(),
            failed,
            pipeline: None,
        })
    }

    /// A store copied by `audit backup` and put back in place continues on a new epoch, so
    /// that the records it writes from now on never share an identity (node, epoch, seq)
    /// with records the lost copy wrote after the backup and may have shipped. The first
    /// record of the epoch says so, and a checkpoint signs it, before anything else is
    /// written; the backup marks go in the same transaction (docs/audit.md).
    fn begin_epoch_if_restored(&mut self) -> Result<(), AuditError> {
        let txn = self.store.snapshot()?;
        let Some(backup_head) = store::meta(&txn, Meta::BackupHead)? else {
            return Ok(());
        };
        let taken_ms = store::meta(&txn, Meta::BackupTakenMs)?.unwrap_or(0);
        drop(txn);
        if backup_head != self.head_seq {
            return Err(AuditError::Integrity {
                path: self.store.path().to_owned(),
                what: format!(
                    "this backup was taken at record {backup_head} but now ends at record {}",
                    self.head_seq
                ),
            });
        }
        let previous = self.epoch;
        let (_, now_ms) = crate::clock::now();
        let epoch = now_ms.max(previous + 1);
        let taken =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(taken_ms) * 1_000_000)
                .map(|t| crate::clock::format_time(t).0)
                .unwrap_or_else(|_| taken_ms.to_string());
        let event = Event::new(super::EventKind::TrailRestored, super::Outcome::Success)
            .with_detail(format!(
                "previous_epoch={previous} backup_head={backup_head} backup_taken={taken}"
            ));
        self.epoch = epoch;
        let seq = self.head_seq + 1;
        let committed = self
            .prepare(seq, &self.head_hash, event)
            .and_then(|record| {
                let hash = chain::hash(&record.bytes);
                let checkpoint = self.signer.checkpoint(&self.settings.node, seq, &hash);
                let checkpoint = serde_json::to_vec(&checkpoint)
                    .map_err(|e| AuditError::Serialize(e.to_string()))?;
                self.store.commit_with_meta(
                    std::slice::from_ref(&record),
                    &[(seq, checkpoint)],
                    &[
                        (Meta::Epoch, Some(epoch)),
                        (Meta::BackupHead, None),
                        (Meta::BackupTakenMs, None),
                    ],
                )?;
                Ok(hash)
            });
        match committed {
            Ok(hash) => {
                self.head_seq = seq;
                self.head_hash = hash;
                self.checkpointed_seq = seq;
                self.checkpointed_at = Instant::now();
                tracing::warn!(
                    previous_epoch = previous,
                    epoch,
                    backup_head,
                    "audit store restored from a backup: the trail continues on a new epoch"
                );
                Ok(())
            }
            Err(e) => {
                self.epoch = previous;
                Err(e)
            }
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut pending: Option<Msg> = None;
        loop {
            let first = match pending.take() {
                Some(msg) => msg,
                None => match self.wait_first(&rx) {
                    Some(msg) => msg,
                    None => break,
                },
            };
            // Groups (an `append_all` is one), each committed whole or refused whole.
            let mut batch = match first {
                Msg::Append(event, reply) => vec![vec![(*event, reply)]],
                Msg::AppendAll(events) => vec![events],
                other => {
                    if self.control(other) {
                        break;
                    }
                    continue;
                }
            };
            let deadline = Instant::now() + self.settings.batch_max_wait;
            let mut records: usize = batch.iter().map(Vec::len).sum();
            while records < self.settings.batch_max_records {
                let wait = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(Msg::Append(event, reply)) => {
                        records += 1;
                        batch.push(vec![(*event, reply)]);
                    }
                    Ok(Msg::AppendAll(events)) => {
                        records += events.len();
                        batch.push(events);
                    }
                    Ok(other) => {
                        pending = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        let closed = self.checkpoint_now();
        if let Some(mut pipeline) = self.pipeline.take() {
            pipeline.stop();
            // The journal may hold the only copy of records that have receipts (their data
            // has left): it is emptied only once redb holds every one of them. A failed
            // index commit leaves them to the next start, which takes them in.
            let indexed = pipeline.progress.indexed_through();
            if closed.is_err() || self.failed.load(Ordering::SeqCst) || indexed < self.head_seq {
                tracing::warn!(
                    indexed,
                    head = self.head_seq,
                    "the audit journal is kept at stop: the index lacks some of its records; the next start takes them in"
                );
            } else if let Err(e) = pipeline.journal.reset() {
                // Everything is in redb: a clean stop leaves an empty journal.
                tracing::warn!(error = %e, "cannot empty the audit journal at stop");
            }
        }
    }

    /// Waits until redb holds every record written, for steps that read or write redb.
    fn drain(&self) -> Result<(), AuditError> {
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        if pipeline.progress.wait_indexed(self.head_seq, DRAIN_WAIT) {
            Ok(())
        } else {
            Err(AuditError::Storage(format!(
                "the audit index stopped at record {} of {}",
                pipeline.progress.indexed_through(),
                self.head_seq
            )))
        }
    }

    /// Empties the journal when it is large and redb has all of it.
    fn make_room(&mut self) -> Result<(), AuditError> {
        let full = self
            .pipeline
            .as_ref()
            .is_some_and(|p| p.journal.len() >= JOURNAL_LIMIT);
        if !full {
            return Ok(());
        }
        self.drain()?;
        match self.pipeline.as_mut() {
            Some(pipeline) => pipeline.journal.reset(),
            None => Ok(()),
        }
    }

    /// Blocks for the next message; wakes on its own to sign a time-based checkpoint.
    fn wait_first(&mut self, rx: &mpsc::Receiver<Msg>) -> Option<Msg> {
        loop {
            if self.head_seq == self.checkpointed_seq {
                return rx.recv().ok();
            }
            let due = self
                .settings
                .checkpoint_every
                .saturating_sub(self.checkpointed_at.elapsed());
            match rx.recv_timeout(due) {
                Ok(msg) => return Some(msg),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.checkpoint_now() {
                        tracing::error!(error = %e, "audit checkpoint failed");
                        self.checkpointed_at = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Handles a non-append message; true when the writer must stop.
    fn control(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Append(..) | Msg::AppendAll(..) => false,
            Msg::Shipped(seq, reply) => {
                let result = if seq > self.head_seq {
                    Err(AuditError::Storage(format!(
                        "cannot mark {seq} shipped: the log ends at {}",
                        self.head_seq
                    )))
                } else {
                    self.store.set_meta(Meta::ShippedUpTo, seq)
                };
                let _ = reply.send(result);
                false
            }
            Msg::Cursor(receiver, seq, reply) => {
                let result = if seq > self.head_seq {
                    Err(AuditError::Storage(format!(
                        "cannot mark {seq} shipped: the log ends at {}",
                        self.head_seq
                    )))
                } else {
                    self.store.set_receiver_cursor(&receiver, seq)
                };
                let _ = reply.send(result);
                false
            }
            Msg::Prune(cutoff_ms, repositories, reply) => {
                let _ = reply.send(self.prune(cutoff_ms, &repositories));
                false
            }
            Msg::Checkpoint(reply) => {
                let _ = reply.send(self.checkpoint_now().map(|()| self.checkpointed_seq));
                false
            }
            Msg::Close(reply) => {
                let _ = reply.send(self.checkpoint_now());
                true
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Vec<(Event, Reply)>>) {
        let refuse = |batch: Vec<Vec<(Event, Reply)>>, e: AuditError| {
            for (_, reply) in batch.into_iter().flatten() {
                let _ = reply.send(Err(e.clone()));
            }
        };
        if self.failed.load(Ordering::SeqCst) {
            return refuse(batch, stopped());
        }
        if let Err(e) = self.make_room() {
            tracing::error!(error = %e, "cannot empty the audit journal");
            if let Some(pipeline) = &self.pipeline {
                fail(&self.failed, &pipeline.progress);
            }
            return refuse(batch, e);
        }
        let mut prepared = Vec::with_capacity(batch.len());
        let mut receipts = Vec::with_capacity(batch.len());
        let (mut seq, mut prev) = (self.head_seq, self.head_hash);
        for group in batch {
            // A group is recorded whole or not at all: the records of an access that go
            // together (its start and its read, a superseded grant's end) never appear
            // one without the other. One record that cannot be prepared (too large)
            // refuses its whole group, and the chain goes on from before it.
            let (group_seq, group_prev) = (seq, prev);
            let mut replies = Vec::with_capacity(group.len());
            let mut records = Vec::with_capacity(group.len());
            let mut failure = None;
            for (event, reply) in group {
                replies.push(reply);
                if failure.is_some() {
                    continue;
                }
                match self.prepare(seq + 1, &prev, event) {
                    Ok(record) => {
                        seq += 1;
                        prev = chain::hash(&record.bytes);
                        records.push((Receipt { seq, hash: prev }, record));
                    }
                    Err(e) => failure = Some(e),
                }
            }
            match failure {
                None => {
                    for (reply, (receipt, record)) in replies.into_iter().zip(records) {
                        receipts.push((reply, receipt));
                        prepared.push(record);
                    }
                }
                Some(e) => {
                    (seq, prev) = (group_seq, group_prev);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if prepared.is_empty() {
            return;
        }
        let checkpoint = self
            .checkpoint_due(seq)
            .then(|| self.signer.checkpoint(&self.settings.node, seq, &prev));
        let checkpoint_bytes = match checkpoint.as_ref().map(serde_json::to_vec).transpose() {
            Ok(bytes) => bytes.map(|b| (seq, b)),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a checkpoint; committing without it");
                None
            }
        };
        let signed = checkpoint_bytes.is_some();
        let mut entries: Vec<Entry> = prepared.into_iter().map(Entry::Record).collect();
        entries.extend(checkpoint_bytes.map(|(seq, bytes)| Entry::Checkpoint(seq, bytes)));
        let Some(pipeline) = self.pipeline.as_mut() else {
            for (reply, _) in receipts {
                let _ = reply.send(Err(AuditError::Closed));
            }
            return;
        };
        match pipeline.journal.append(&entries) {
            Ok(()) => {
                self.head_seq = seq;
                self.head_hash = prev;
                pipeline.progress.written(seq);
                if signed {
                    self.checkpointed_seq = seq;
                    self.checkpointed_at = Instant::now();
                }
                let written = Written {
                    replies: receipts,
                    entries,
                };
                let sent = pipeline.to_sync.as_ref().map(|sync| sync.send(written));
                if !matches!(sent, Some(Ok(()))) {
                    // The sync thread is gone (it only ends when told to): the appenders see
                    // their replies dropped, as `Closed`.
                    fail(&self.failed, &pipeline.progress);
                    tracing::error!(
                        "the audit sync thread is gone; the audit trail needs a restart"
                    );
                }
            }
            Err(e) => {
                fail(&self.failed, &pipeline.progress);
                tracing::error!(error = %e, records = receipts.len(), "audit journal write failed; the batch is refused and the audit trail needs a restart");
                for (reply, _) in receipts {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn prepare(&self, seq: u64, prev: &Hash, event: Event) -> Result<NewRecord, AuditError> {
        let (time, time_ms) = crate::clock::now();
        let keys = index_keys(&event);
        let record = Record {
            v: RECORD_VERSION,
            seq,
            node: self.settings.node.clone(),
            epoch: self.epoch,
            time,
            run: self.run.clone(),
            mono_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            prev: hex(prev),
            event,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| AuditError::Serialize(e.to_string()))?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(AuditError::Serialize(format!(
                "record of {} bytes exceeds the {MAX_RECORD_BYTES}-byte limit",
                bytes.len()
            )));
        }
        Ok(NewRecord {
            seq,
            bytes,
            time_ms,
            keys,
        })
    }

    fn checkpoint_due(&self, new_head: u64) -> bool {
        // `resume` refuses a checkpoint beyond the head, so this never saturates.
        new_head.saturating_sub(self.checkpointed_seq) >= self.settings.checkpoint_every_records
            || self.checkpointed_at.elapsed() >= self.settings.checkpoint_every
    }

    fn checkpoint_now(&mut self) -> Result<(), AuditError> {
        // Also when the last batch carried the checkpoint already: a stop must not report
        // success while redb lacks records the journal holds.
        self.drain()?;
        if self.head_seq == self.checkpointed_seq {
            return Ok(());
        }
        let checkpoint =
            self.signer
                .checkpoint(&self.settings.node, self.head_seq, &self.head_hash);
        let bytes =
            serde_json::to_vec(&checkpoint).map_err(|e| AuditError::Serialize(e.to_string()))?;
        self.store.commit(&[], &[(self.head_seq, bytes)])?;
        self.checkpointed_seq = self.head_seq;
        self.checkpointed_at = Instant::now();
        Ok(())
    }

    /// Deletes whole segments before a checkpoint, only when shipped and older than the
    /// cutoff; the `trail_pruned` record is committed and signed before anything goes (a
    /// crash in between leaves a record of a prune not yet done, never the reverse).
    fn prune(
        &mut self,
        cutoff_ms: u64,
        repositories: &[String],
    ) -> Result<PruneReport, AuditError> {
        self.drain()?;
        let txn = self.store.snapshot()?;
        // What every repository named now has confirmed, from their own cursors: the
        // stored "shipped up to" is the running shippers' minimum over the repositories
        // configured then, and a repository added since (or renamed) has received nothing.
        let shipped = if repositories.is_empty() {
            store::meta(&txn, Meta::ShippedUpTo)?.unwrap_or(0)
        } else {
            let mut slowest = u64::MAX;
            for name in repositories {
                slowest = slowest.min(store::receiver_cursor(&txn, name)?);
            }
            slowest
        };
        let pruned = store::meta(&txn, Meta::PrunedThrough)?.unwrap_or(0);
        let checkpoints = store::checkpoints(&txn)?;
        // Whole-trail read, as `audit pending` does: prunes are rare, and a decision on an
        // old access may be anywhere later in the trail.
        let held_by_review = super::review::pending(&*self.store)?
            .iter()
            .map(|access| access.seq)
            .min();
        let mut doomed = Vec::new();
        let mut through = None;
        let mut segment = Vec::new();
        let mut failure = None;
        store::for_each_record(&txn, pruned + 1, |seq, bytes| {
            let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
                failure = Some(format!(
                    "record {seq} is unreadable; prune refused (run audit verify)"
                ));
                return ControlFlow::Break(());
            };
            let time_ms = crate::clock::parse_time(&record.time).unwrap_or(u64::MAX);
            if seq > shipped || time_ms > cutoff_ms || held_by_review.is_some_and(|h| seq >= h) {
                return ControlFlow::Break(());
            }
            segment.push(store::Pruned {
                seq,
                time_ms,
                keys: index_keys(&record.event),
            });
            if checkpoints.contains_key(&seq) {
                doomed.append(&mut segment);
                through = Some(seq);
            }
            ControlFlow::Continue(())
        })?;
        if let Some(what) = failure {
            return Err(AuditError::Integrity {
                path: self.store.path().to_owned(),
                what,
            });
        }
        drop(txn);
        let Some(through) = through else {
            return Ok(PruneReport {
                held_by_review,
                ..PruneReport::default()
            });
        };
        let confirmed = if repositories.is_empty() {
            "-".to_owned()
        } else {
            repositories.join(",")
        };
        let event = super::Event::new(super::EventKind::TrailPruned, super::Outcome::Success)
            .with_detail(format!(
                "through={through} records={} older_than_ms={cutoff_ms} shipped_up_to={shipped} confirmed_by={confirmed}",
                doomed.len()
            ));
        let (reply, mut receipt) = oneshot::channel();
        self.commit_batch(vec![vec![(event, reply)]]);
        // Once redb has it, its sync is done and its receipt sent.
        self.drain()?;
        match receipt.try_recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(AuditError::Closed),
        }
        self.checkpoint_now()?;
        self.store.prune_through(through, &doomed)?;
        Ok(PruneReport {
            through: Some(through),
            records: doomed.len() as u64,
            held_by_review,
        })
    }
}

/// What is wrong with the tail of a store the writer was asked to continue.
#[derive(Debug, thiserror::Error)]
enum TailDefect {
    /// The last checkpoint cannot be read.
    #[error("checkpoint {0} is unreadable: {1}")]
    UnreadableCheckpoint(u64, String),
    /// Its signature does not verify.
    #[error("checkpoint {0} has a bad signature")]
    BadSignature(u64),
    /// A record after it does not link up.
    #[error("the chain is broken at record {0} after the last checkpoint")]
    BrokenAt(u64),
    /// A record after it is missing.
    #[error("record {0} is missing after the last checkpoint")]
    Missing(u64),
    /// The records cannot be read.
    #[error("the records cannot be read: {0}")]
    Unreadable(String),
}

/// Checks that the records after the last checkpoint link up to it and that it is signed
/// by the key it names (trust in that key is `audit verify`'s question, not start-up's).
fn check_tail(
    txn: &redb::ReadTransaction,
    checkpoints: &std::collections::BTreeMap<u64, Vec<u8>>,
    last_checkpoint: u64,
    pruned: u64,
    head_seq: u64,
) -> Result<(), TailDefect> {
    let mut expected: Option<Hash> = None;
    if let Some(bytes) = checkpoints.get(&last_checkpoint) {
        let checkpoint: Checkpoint = serde_json::from_slice(bytes)
            .map_err(|e| TailDefect::UnreadableCheckpoint(last_checkpoint, e.to_string()))?;
        let mut own = chain::TrustedKeys::default();
        own.add_hex(&checkpoint.public_key)
            .map_err(|e| TailDefect::UnreadableCheckpoint(last_checkpoint, e.to_string()))?;
        checkpoint
            .verify(&own)
            .map_err(|_| TailDefect::BadSignature(last_checkpoint))?;
        expected = chain::parse_hash(&checkpoint.head);
    }
    let from = if last_checkpoint > pruned {
        last_checkpoint
    } else {
        pruned + 1
    };
    // The first record of a trail nothing was pruned from links to the genesis.
    if expected.is_none() && from == 1 {
        expected = Some(chain::GENESIS);
    }
    // Every record from `from` to the head is there, in order: a deleted one (the one the
    // last checkpoint signs, the first of the trail, any after) is a hole the writer must
    // not continue past, even when the next one links up to what came before it.
    let mut next = from;
    let mut problem = None;
    store::for_each_record(txn, from, |seq, bytes| {
        if seq != next {
            problem = Some(TailDefect::Missing(next));
            return ControlFlow::Break(());
        }
        next = seq + 1;
        let hash = chain::hash(bytes);
        let record = serde_json::from_slice::<Record>(bytes);
        let ok = match (&record, expected) {
            (Err(_), _) => false,
            (Ok(r), Some(want)) if seq == last_checkpoint && last_checkpoint > pruned => {
                hash == want && r.seq == seq
            }
            (Ok(r), Some(want)) => chain::parse_hash(&r.prev) == Some(want) && r.seq == seq,
            (Ok(r), None) => r.seq == seq,
        };
        if !ok {
            problem = Some(TailDefect::BrokenAt(seq));
            return ControlFlow::Break(());
        }
        expected = Some(hash);
        ControlFlow::Continue(())
    })
    .map_err(|e| TailDefect::Unreadable(e.to_string()))?;
    if problem.is_none() && head_seq >= from && next != head_seq + 1 {
        problem = Some(TailDefect::Missing(next));
    }
    problem.map_or(Ok(()), Err)
}

fn anchor_hash(
    checkpoints: &std::collections::BTreeMap<u64, Vec<u8>>,
    seq: u64,
) -> Result<Hash, AuditError> {
    checkpoints
        .get(&seq)
        .and_then(|bytes| serde_json::from_slice::<Checkpoint>(bytes).ok())
        .and_then(|c| chain::parse_hash(&c.head))
        .ok_or_else(|| {
            AuditError::Storage(format!(
                "the anchor checkpoint {seq} of the pruned chain is missing"
            ))
        })
}

/// The index keys of an event.
pub fn index_keys(event: &Event) -> Vec<(Index, String)> {
    let mut keys = Vec::new();
    for patient in event.patient.iter().chain(&event.candidates) {
        keys.push((Index::Patient, patient.ins.clone()));
    }
    if let Some(actor) = &event.actor {
        if let Some(id) = &actor.id_nat {
            keys.push((Index::Professional, id.clone()));
        }
        if let Some(desk) = &actor.desk {
            keys.push((Index::Desk, desk.clone()));
        }
    }
    if let Some(call) = &event.call {
        keys.push((Index::Call, call.call_id.clone()));
    }
    keys.extend(
        super::event::subject_keys(event)
            .into_iter()
            .map(|key| (Index::Subject, key)),
    );
    keys
}

/// What other modules' tests start an audit log with.
#[cfg(test)]
impl Settings {
    pub(crate) fn for_tests() -> Self {
        Self {
            node: "test".into(),
            batch_max_records: 64,
            batch_max_wait: Duration::ZERO,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
impl AuditLog {
    /// A log on a new store in `dir`, its signing key made there too.
    pub(crate) fn for_tests(dir: &std::path::Path) -> (Arc<AuditStore>, Arc<Self>) {
        let store = Arc::new(AuditStore::open(&dir.join("audit.redb")).unwrap());
        let signer = Signer::generate(&dir.join("audit-signing.key")).unwrap();
        let log = Self::start(store.clone(), signer, Settings::for_tests()).unwrap();
        (store, Arc::new(log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::journal::faults;
    use crate::audit::{EventKind, Outcome, TrustedKeys};

    fn start(dir: &std::path::Path) -> (Arc<AuditStore>, AuditLog) {
        start_with(dir, 1000)
    }

    fn start_with(
        dir: &std::path::Path,
        checkpoint_every_records: u64,
    ) -> (Arc<AuditStore>, AuditLog) {
        let key = dir.join("k");
        let signer = if key.exists() {
            Signer::load(&key).unwrap()
        } else {
            Signer::generate(&key).unwrap()
        };
        let store = Arc::new(AuditStore::open(&dir.join("audit.redb")).unwrap());
        let settings = Settings {
            node: "test".into(),
            batch_max_records: 64,
            batch_max_wait: Duration::ZERO,
            checkpoint_every_records,
            checkpoint_every: Duration::from_secs(60),
        };
        let log = AuditLog::start(store.clone(), signer, settings).unwrap();
        (store, log)
    }

    fn event() -> Event {
        Event::new(EventKind::UserLogin, Outcome::Success)
    }

    /// A store whose checkpoints were removed: its whole trail is an unsigned tail, longer
    /// than a writer leaves, and verification says so (it said "intact"); a start refuses
    /// to sign over it. A tail as short as a crash leaves is signed at the next start.
    #[test]
    fn a_store_without_its_checkpoints_does_not_verify_nor_get_signed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let trusted = || {
            let mut trusted = TrustedKeys::default();
            trusted
                .add_hex(
                    Signer::load(&dir.path().join("k"))
                        .unwrap()
                        .public_key_hex(),
                )
                .unwrap();
            trusted
        };
        let verify = |tail: crate::audit::export::UnsignedTail| {
            let reader = crate::audit::AuditReader::open(&dir.path().join("audit.redb")).unwrap();
            crate::audit::export::verify_store_within(&reader, &trusted(), tail).unwrap()
        };
        let short = crate::audit::export::UnsignedTail {
            records: 2,
            span: Duration::from_secs(3600),
        };
        let write = |records: usize| {
            let (store, log) = start(dir.path());
            for _ in 0..records {
                let _receipt = log.append_blocking(event()).unwrap();
            }
            log.close().unwrap();
            drop(log);
            store.remove_checkpoints_for_tests();
        };
        write(5);
        let report = verify(short);
        assert!(
            report.findings.iter().any(|f| matches!(
                f,
                super::super::verify::Finding::Unsigned { from: 1, to: 5 }
            )),
            "{:?}",
            report.findings
        );
        // Within what a writer leaves: no finding (a live store's tail, a crash's).
        assert!(
            verify(crate::audit::export::UnsignedTail {
                records: 5,
                ..short
            })
            .is_intact()
        );
        // So the next start signs it.
        let (store, log) = start(dir.path());
        log.close().unwrap();
        drop((log, store));
        assert!(verify(short).is_intact());
        // Past what a writer leaves (more than checkpoint_every_records and a batch: 10 +
        // 64), the start is refused rather than sign it.
        write(100);
        let store = Arc::new(AuditStore::open(&dir.path().join("audit.redb")).unwrap());
        let settings = Settings {
            node: "test".into(),
            batch_max_records: 64,
            batch_max_wait: Duration::ZERO,
            checkpoint_every_records: 10,
            checkpoint_every: Duration::from_secs(60),
        };
        let Err(refused) = AuditLog::start(
            store,
            Signer::load(&dir.path().join("k")).unwrap(),
            settings,
        ) else {
            panic!("a start over removed checkpoints is refused");
        };
        assert!(
            refused
                .to_string()
                .contains("under no checkpoint signature"),
            "{refused}"
        );
    }

    fn intact(dir: &std::path::Path, range: (u64, u64)) {
        let mut trusted = TrustedKeys::default();
        trusted
            .add_hex(Signer::load(&dir.join("k")).unwrap().public_key_hex())
            .unwrap();
        let reader = crate::audit::AuditReader::open(&dir.join("audit.redb")).unwrap();
        let report = crate::audit::export::verify_store_within(
            &reader,
            &trusted,
            crate::audit::export::UnsignedTail::of(&Settings::for_tests()),
        )
        .unwrap();
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.range, Some(range));
    }

    /// A record deleted after the last checkpoint (the one it signs, or the first of a
    /// trail that has none) is a hole start-up refuses to continue past, though the next
    /// record links up to what came before it. Before, the tail check began at the first
    /// record present and took the hole for the start.
    #[test]
    fn a_record_missing_after_the_last_checkpoint_is_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = start_with(dir.path(), 3);
        for seq in 1..=7 {
            assert_eq!(log.append_blocking(event()).unwrap().seq(), seq);
        }
        log.close().unwrap();
        let txn = store.snapshot().unwrap();
        let mut checkpoints = store::checkpoints(&txn).unwrap();
        // As if the service had stopped before its last checkpoint.
        let last = *checkpoints.keys().rev().find(|seq| **seq < 7).unwrap();
        checkpoints.retain(|seq, _| *seq <= last);
        check_tail(&txn, &checkpoints, last, 0, 7).unwrap();
        check_tail(&txn, &Default::default(), 0, 0, 7).unwrap();
        drop(txn);
        store.remove_record_for_tests(last);
        let txn = store.snapshot().unwrap();
        assert!(matches!(
            check_tail(&txn, &checkpoints, last, 0, 7),
            Err(TailDefect::Missing(seq)) if seq == last
        ));
        drop(txn);
        store.remove_record_for_tests(1);
        let txn = store.snapshot().unwrap();
        assert!(matches!(
            check_tail(&txn, &Default::default(), 0, 0, 7),
            Err(TailDefect::Missing(1))
        ));
    }

    /// A journal that cannot be written (or synced) refuses the batch, gives no receipt,
    /// turns the log unhealthy, and the restarted trail continues without a gap.
    #[test]
    fn a_journal_disk_error_refuses_the_append_and_loses_nothing() {
        for failing_step in ["write", "sync"] {
            let dir = tempfile::tempdir().unwrap();
            let journal = dir.path().join("audit.journal");
            let (store, log) = start(dir.path());
            assert_eq!(log.append_blocking(event()).unwrap().seq(), 1);
            faults::set(&journal, Some(failing_step));
            let err = log.append_blocking(event()).unwrap_err();
            assert!(
                matches!(err, AuditError::Storage(_)),
                "{failing_step}: {err}"
            );
            assert!(err.to_string().contains("injected"), "{err}");
            assert!(!log.is_healthy(), "{failing_step}");
            faults::set(&journal, None);
            let err = log.append_blocking(event()).unwrap_err();
            assert!(err.to_string().contains("needs a restart"), "{err}");
            drop(log);
            drop(store);

            let (store, log) = start(dir.path());
            assert!(log.is_healthy());
            // A failed write was cut back: the refused record used no sequence number. A
            // failed sync leaves the written frame in the file, where the restart finds it:
            // a record without a receipt (nothing was released on it), never a gap.
            let next = if failing_step == "write" { 2 } else { 3 };
            assert_eq!(
                log.append_blocking(event()).unwrap().seq(),
                next,
                "{failing_step}"
            );
            log.close().unwrap();
            drop(store);
            intact(dir.path(), (1, next));
        }
    }

    /// A record whose receipt was given is in the journal alone when redb's commit fails:
    /// a stop then keeps the journal (even when that record's batch carried the
    /// checkpoint, so no final checkpoint is due), says the stop failed, and the next
    /// start takes the record in; its sequence number is never given again.
    #[test]
    fn a_failed_index_commit_keeps_the_journal_through_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let redb = dir.path().join("audit.redb");
        // A checkpoint with every batch: the stop has no checkpoint left to sign.
        let (store, log) = start_with(dir.path(), 1);
        assert_eq!(log.append_blocking(event()).unwrap().seq(), 1);
        crate::audit::store::faults::set(&redb, true);
        let receipt = log.append_blocking(event()).unwrap();
        assert_eq!(receipt.seq(), 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.is_healthy() {
            assert!(Instant::now() < deadline, "the index commit never failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let stopped = log.close();
        assert!(
            stopped.is_err(),
            "a stop that leaves records out of redb fails"
        );
        crate::audit::store::faults::set(&redb, false);
        let journal = crate::audit::journal::read(&dir.path().join("audit.journal")).unwrap();
        assert_eq!(journal.last_record(), Some(2), "the journal is kept");
        drop(store);

        let (store, log) = start_with(dir.path(), 1);
        let txn = store.settled_snapshot().unwrap();
        let bytes = store::record(&txn, 2).unwrap().expect("record 2 taken in");
        assert_eq!(hex(&chain::hash(&bytes)), receipt.hash_hex());
        drop(txn);
        assert_eq!(log.append_blocking(event()).unwrap().seq(), 3);
        log.close().unwrap();
        drop(store);
        intact(dir.path(), (1, 3));
    }

    /// An `append_all` is recorded whole or not at all: one record too large refuses the
    /// group (nothing of it in the trail, no sequence number used), and a group beside it
    /// in the same batch is committed.
    #[test]
    fn a_group_with_one_record_too_large_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = start(dir.path());
        let log = Arc::new(log);
        let oversized = Event {
            detail: Some("x".repeat(MAX_RECORD_BYTES)),
            ..event()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (refused, committed) = runtime.block_on(async {
            tokio::join!(
                log.append_all(vec![event(), oversized, event()]),
                log.append_all(vec![event(), event()])
            )
        });
        let err = refused.unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let seqs: Vec<u64> = committed.unwrap().iter().map(Receipt::seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(log.append_blocking(event()).unwrap().seq(), 3);
        log.close().unwrap();
        let txn = store.settled_snapshot().unwrap();
        assert!(store::record(&txn, 4).unwrap().is_none());
        drop(txn);
        drop(store);
        intact(dir.path(), (1, 3));
    }

    /// Records come back in order with their receipts' hashes, the journal empties itself
    /// once large, and a clean stop leaves it empty.
    #[test]
    fn receipts_match_the_store_and_the_journal_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = start(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let log = Arc::new(log);
        let receipts = runtime.block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut receipts = Vec::new();
                        for _ in 0..50 {
                            receipts.push(log.append(event()).await.unwrap());
                        }
                        receipts
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        });
        let txn = store.settled_snapshot().unwrap();
        for receipt in &receipts {
            let bytes = store::record(&txn, receipt.seq()).unwrap().unwrap();
            assert_eq!(hex(&chain::hash(&bytes)), receipt.hash_hex());
        }
        drop(txn);
        let mut seqs: Vec<u64> = receipts.iter().map(Receipt::seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<_>>());
        log.close().unwrap();
        assert!(
            crate::audit::journal::read(&dir.path().join("audit.journal"))
                .unwrap()
                .entries
                .is_empty(),
            "a clean stop leaves the journal empty"
        );
        drop(store);
        intact(dir.path(), (1, 800));
    }
}
