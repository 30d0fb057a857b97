//! The audit journal: where a record first becomes durable.
//!
//! A redb commit costs tens of microseconds of CPU per record in small batches (each index
//! is a B-tree whose pages are copied on write), all of it between an access and the
//! release of its data. The journal takes that path instead: the writer appends a batch's
//! records to a plain file as checksummed frames, one `fdatasync` makes them durable, and
//! only then do appenders get their receipts. The records go into redb, where every reader
//! looks, in large batches off the critical path; when the store opens for writing, it
//! first takes in the frames redb does not have yet. A record with a receipt is therefore
//! in the store after any crash (docs/audit.md, "The journal").
//!
//! Layout (version 2): an 8-byte magic and the journal's generation (u64 LE), then frames
//! `len: u32 LE | SHA-256(generation | payload) | payload`. The file is reused, not
//! truncated: emptying it writes the next generation into its header, so the frames of
//! earlier generations still in it fail their digest. Overwriting blocks the file already
//! has spares each `fdatasync` the file-system metadata commit an append needs (half the
//! sync's latency and a third of its kernel CPU on the build machine; docs/audit.md,
//! "The journal"). A frame that runs past the end of the file or whose digest does not
//! match ends the journal: it is the torn tail of a write that was never acknowledged, or
//! an earlier generation's, or the zeros the file was prepared with.
//!
//! Version 1 (magic `SAMUJNL1`, no generation, digest over the payload alone, truncated to
//! empty it) is still read, so that a journal left by an earlier build is taken in.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::AuditError;
use super::store::{Index, NewRecord};

const MAGIC: &[u8; 8] = b"SAMUJNL2";
const MAGIC_V1: &[u8; 8] = b"SAMUJNL1";
/// The magic and the generation.
const HEADER_LEN: u64 = 16;
/// A frame's length and digest.
const FRAME_HEADER: usize = 4 + 32;
/// The file is grown by writing zeros this far ahead of the frames, so that a frame's write
/// rarely extends it (an extension makes the next `fdatasync` commit metadata too). Once a
/// file has been through one fill it keeps its size, and no write extends it again.
const PREPARE_STEP: u64 = 1024 * 1024;
const RECORD: u8 = 1;
const CHECKPOINT: u8 = 2;
/// A frame larger than this is corruption, not a record (records are capped at 64 KiB).
const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// The journal that goes with the redb file at `store`: `audit.redb` has `audit.journal`.
/// A file not named `.redb` keeps its whole name (`audit.2026-12-01` has
/// `audit.2026-12-01.journal`): replacing its last extension would name the live store's
/// journal beside it, and a backup read there would wait on the service's frames.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    if store.extension().is_some_and(|e| e == "redb") {
        store.with_extension("journal")
    } else {
        let mut name = store.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }
}

/// One frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// A record, with what the store indexes it by.
    Record(NewRecord),
    /// A signed checkpoint over the record `seq`.
    Checkpoint(u64, Vec<u8>),
}

impl Entry {
    fn encode_into(&self, generation: u64, out: &mut Vec<u8>) -> Result<(), AuditError> {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        match self {
            Self::Record(record) => {
                out.push(RECORD);
                out.extend_from_slice(&record.seq.to_le_bytes());
                out.extend_from_slice(&record.time_ms.to_le_bytes());
                let count = u16::try_from(record.keys.len())
                    .map_err(|_| AuditError::Serialize("too many index keys".into()))?;
                out.extend_from_slice(&count.to_le_bytes());
                for (index, key) in &record.keys {
                    out.push(index.tag());
                    let len = u16::try_from(key.len())
                        .map_err(|_| AuditError::Serialize("index key too long".into()))?;
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(key.as_bytes());
                }
                put_bytes(out, &record.bytes)?;
            }
            Self::Checkpoint(seq, bytes) => {
                out.push(CHECKPOINT);
                out.extend_from_slice(&seq.to_le_bytes());
                put_bytes(out, bytes)?;
            }
        }
        let payload = start + FRAME_HEADER;
        let len = out.len() - payload;
        if len > MAX_PAYLOAD {
            out.truncate(start);
            return Err(AuditError::Serialize(format!(
                "journal frame of {len} bytes exceeds {MAX_PAYLOAD}"
            )));
        }
        let digest = frame_digest(Some(generation), &out[payload..]);
        // `len` ≤ MAX_PAYLOAD, checked above, fits in a u32.
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        out[start + 4..payload].copy_from_slice(digest.as_ref());
        Ok(())
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let mut at = Cursor { bytes: payload };
        match at.u8()? {
            RECORD => {
                let seq = at.u64()?;
                let time_ms = at.u64()?;
                let count = at.u16()?;
                let mut keys = Vec::with_capacity(usize::from(count).min(64));
                for _ in 0..count {
                    let index = Index::from_tag(at.u8()?)?;
                    let len = at.u16()?;
                    let key = std::str::from_utf8(at.take(usize::from(len))?).ok()?;
                    keys.push((index, key.to_owned()));
                }
                let bytes = at.bytes()?.to_vec();
                at.bytes.is_empty().then_some(Self::Record(NewRecord {
                    seq,
                    bytes,
                    time_ms,
                    keys,
                }))
            }
            CHECKPOINT => {
                let seq = at.u64()?;
                let bytes = at.bytes()?.to_vec();
                at.bytes.is_empty().then_some(Self::Checkpoint(seq, bytes))
            }
            _ => None,
        }
    }
}

/// A frame's digest: over the generation and the payload (version 2), or over the payload
/// alone (version 1, no generation).
fn frame_digest(generation: Option<u64>, payload: &[u8]) -> ring::digest::Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    if let Some(generation) = generation {
        context.update(&generation.to_le_bytes());
    }
    context.update(payload);
    context.finish()
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), AuditError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| AuditError::Serialize("journal entry too long".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }
}

/// What a journal file holds: its complete frames.
#[derive(Debug, Default)]
pub(super) struct Contents {
    /// Every complete frame of the current generation, in order.
    pub(super) entries: Vec<Entry>,
}

impl Contents {
    /// The highest record sequence number the journal holds.
    pub(super) fn last_record(&self) -> Option<u64> {
        self.entries.iter().rev().find_map(|entry| match entry {
            Entry::Record(record) => Some(record.seq),
            Entry::Checkpoint(..) => None,
        })
    }
}

/// Reads a journal file without changing it; an absent file is an empty journal. Only the
/// frames are read, not the prepared space after them.
pub(super) fn read(path: &Path) -> Result<Contents, AuditError> {
    match File::open(path) {
        Ok(file) => parse(path, std::io::BufReader::with_capacity(256 * 1024, file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
        Err(e) => Err(io_error(path, "open", &e)),
    }
}

/// Fills `buf` from `from`; `Ok(false)` when the input ends first.
fn fill(from: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match from.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn not_a_journal(path: &Path) -> AuditError {
    AuditError::Unreadable {
        path: path.to_owned(),
        reason: "not an audit journal (wrong magic)".into(),
    }
}

fn parse(path: &Path, mut from: impl Read) -> Result<Contents, AuditError> {
    let failed = |e: std::io::Error| io_error(path, "read", &e);
    let mut magic = [0; 8];
    let mut got = 0;
    // A file cut before its header was complete was never written to.
    while got < magic.len() {
        match from.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed(e)),
        }
    }
    if got < magic.len() {
        if magic[..got] == MAGIC[..got] || magic[..got] == MAGIC_V1[..got] {
            return Ok(Contents::default());
        }
        return Err(not_a_journal(path));
    }
    let generation = if &magic == MAGIC {
        let mut generation = [0; 8];
        if !fill(&mut from, &mut generation).map_err(failed)? {
            return Ok(Contents::default());
        }
        Some(u64::from_le_bytes(generation))
    } else if &magic == MAGIC_V1 {
        None
    } else {
        return Err(not_a_journal(path));
    };
    let mut at = magic.len() as u64 + if generation.is_some() { 8 } else { 0 };
    let mut entries = Vec::new();
    let mut header = [0; FRAME_HEADER];
    let mut payload = Vec::new();
    while fill(&mut from, &mut header).map_err(failed)? {
        let mut len = [0; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_PAYLOAD {
            break;
        }
        payload.resize(len, 0);
        if !fill(&mut from, &mut payload).map_err(failed)? {
            break;
        }
        if frame_digest(generation, &payload).as_ref() != &header[4..] {
            break;
        }
        let Some(entry) = Entry::decode(&payload) else {
            // A frame whose digest matches was written whole by us: a shape we cannot read
            // is a newer writer's, or damage; stopping here would silently drop records.
            return Err(AuditError::Unreadable {
                path: path.to_owned(),
                reason: format!("journal frame at byte {at} has an unknown shape"),
            });
        };
        entries.push(entry);
        at += (FRAME_HEADER + len) as u64;
    }
    Ok(Contents { entries })
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> AuditError {
    AuditError::Storage(format!(
        "cannot {what} the audit journal {}: {e}",
        path.display()
    ))
}

/// The open journal, written by the audit writer thread only.
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    /// The current generation: the header's, and every frame's digest's.
    generation: u64,
    /// Where the next frame goes.
    len: u64,
    /// How far the file is written (frames, then zeros or earlier generations' frames):
    /// writes below this overwrite blocks the file has.
    prepared: u64,
    buffer: Vec<u8>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(Journal);

impl Journal {
    /// Opens the journal for appending, creating it (owner-only: it holds patient
    /// identifiers) if absent, and empties it: the store took in its frames when it
    /// opened. A version 2 journal keeps its size and moves to its next generation; any
    /// other content is truncated.
    pub(super) fn open(path: &Path) -> Result<Self, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |what: &str, e: std::io::Error| io_error(path, what, &e);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail("open", e))?;
        let size = file.metadata().map_err(|e| fail("inspect", e))?.len();
        let mut header = [0; HEADER_LEN as usize];
        let generation = match file.read_exact_at(&mut header, 0) {
            Ok(()) if header.starts_with(MAGIC) => {
                let mut generation = [0; 8];
                generation.copy_from_slice(&header[8..]);
                Some(u64::from_le_bytes(generation))
            }
            _ => None,
        };
        let (generation, prepared) = match generation {
            Some(generation) => (generation, size),
            None => {
                file.set_len(0).map_err(|e| fail("truncate", e))?;
                (0, 0)
            }
        };
        let mut journal = Self {
            file,
            path: path.to_owned(),
            generation,
            len: 0,
            prepared,
            buffer: Vec::new(),
        };
        journal.reset()?;
        if size == 0 {
            // A new file: its name must survive a crash as surely as the frames it will
            // hold.
            sync_directory(path)?;
        }
        Ok(journal)
    }

    /// Bytes in the journal.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the journal (everything in it is in redb) and syncs that: the header names
    /// the next generation, so the frames still in the file no longer read.
    pub(super) fn reset(&mut self) -> Result<(), AuditError> {
        let next = self.generation.checked_add(1).ok_or_else(|| {
            AuditError::Storage(format!(
                "the audit journal {} has no generation left",
                self.path.display()
            ))
        })?;
        let mut header = [0; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&next.to_le_bytes());
        let fail = |what: &str, e: std::io::Error| io_error(&self.path, what, &e);
        // One sector: written whole or not at all. Either way the file reads as empty or
        // as frames redb already holds, which the next open skips.
        self.file
            .write_all_at(&header, 0)
            .map_err(|e| fail("write", e))?;
        self.file.sync_data().map_err(|e| fail("sync", e))?;
        self.generation = next;
        self.len = HEADER_LEN;
        self.prepared = self.prepared.max(HEADER_LEN);
        Ok(())
    }

    /// Writes `entries` at the end (not yet durable: see [`Journal::syncer`]). On failure
    /// the journal is cut back to where it was, so that no partial frame stays before the
    /// next write.
    pub(super) fn append(&mut self, entries: &[Entry]) -> Result<(), AuditError> {
        self.buffer.clear();
        for entry in entries {
            entry.encode_into(self.generation, &mut self.buffer)?;
        }
        let end = self.len + self.buffer.len() as u64;
        #[cfg(test)]
        let written = faults::check(&self.path, "write");
        #[cfg(not(test))]
        let written = Ok(());
        let written = written
            .and_then(|()| self.prepare(end))
            .and_then(|()| self.file.write_all_at(&self.buffer, self.len));
        if let Err(e) = written {
            let restored = self.file.set_len(self.len);
            self.prepared = self.len;
            return Err(match restored {
                Ok(()) => io_error(&self.path, "write", &e),
                Err(again) => AuditError::Storage(format!(
                    "cannot write the audit journal {} ({e}), nor cut it back ({again})",
                    self.path.display()
                )),
            });
        }
        self.len = end;
        Ok(())
    }

    /// Writes zeros past the prepared end so that it lies at least a step beyond `end`.
    fn prepare(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.prepared {
            return Ok(());
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let target = end.next_multiple_of(PREPARE_STEP) + PREPARE_STEP;
        while self.prepared < target {
            let n = (target - self.prepared).min(ZEROS.len() as u64);
            // `n` ≤ ZEROS.len(), so the slice is in bounds.
            self.file
                .write_all_at(&ZEROS[..n as usize], self.prepared)?;
            self.prepared += n;
        }
        Ok(())
    }

    /// A handle on the same file for the thread that makes writes durable.
    pub(super) fn syncer(&self) -> Result<Syncer, AuditError> {
        Ok(Syncer {
            file: self
                .file
                .try_clone()
                .map_err(|e| io_error(&self.path, "reopen", &e))?,
            path: self.path.clone(),
        })
    }
}

/// Syncs the directory holding `path`, so that a file just created there stays after a
/// crash.
fn sync_directory(path: &Path) -> Result<(), AuditError> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|e| {
        AuditError::Storage(format!(
            "cannot sync the audit directory {}: {e}",
            dir.display()
        ))
    })
}

/// Makes what was written to the journal durable.
#[derive(Debug)]
pub(super) struct Syncer {
    file: File,
    path: PathBuf,
}

impl Syncer {
    /// `fdatasync`: every frame written before this call is on disk when it returns.
    pub(super) fn sync(&self) -> Result<(), AuditError> {
        #[cfg(test)]
        faults::wait_while_held(&self.path);
        #[cfg(test)]
        faults::check(&self.path, "sync").map_err(|e| io_error(&self.path, "sync", &e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "sync", &e))
    }
}

/// Where the writer is: how far records are written to the journal, and how far redb has
/// them. Readers in the writing process wait on it so that they see every record that has a
/// receipt.
#[derive(Debug, Default)]
pub(super) struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct ProgressState {
    written: u64,
    indexed: u64,
    failed: bool,
}

impl Progress {
    pub(super) fn starting_at(head: u64) -> Self {
        Self {
            state: Mutex::new(ProgressState {
                written: head,
                indexed: head,
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ProgressState)) {
        // A poisoned lock only means a thread panicked while holding it: the counters are
        // plain numbers, still meaningful.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut state);
        self.changed.notify_all();
    }

    fn get(&self) -> ProgressState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Without a wake-up (each is a system call, and this runs for every batch): waiters
    /// wait for the index or a failure, and a write only moves the index further away.
    pub(super) fn written(&self, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.written = state.written.max(seq);
    }

    pub(super) fn indexed(&self, seq: u64) {
        self.update(|s| s.indexed = s.indexed.max(seq));
    }

    pub(super) fn failed(&self) {
        self.update(|s| s.failed = true);
    }

    /// The last record redb has.
    pub(super) fn indexed_through(&self) -> u64 {
        self.get().indexed
    }

    /// Waits until redb has every record written so far (or `timeout`, or a failure): true
    /// when it does.
    pub(super) fn wait_settled(&self, timeout: Duration) -> bool {
        let target = self.get().written;
        self.wait_indexed(target, timeout)
    }

    /// Waits until redb has record `seq` (or `timeout`, or a failure): true when it does.
    pub(super) fn wait_indexed(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.indexed >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.failed || left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// Disk errors on demand, by journal path (tests run in parallel, each on its own path).
#[cfg(test)]
pub(super) mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// Journal paths, and the step ("write" or "sync") that fails on them.
    static FAILING: Mutex<Vec<(PathBuf, &'static str)>> = Mutex::new(Vec::new());

    pub(in crate::audit) fn set(path: &Path, step: Option<&'static str>) {
        let mut all = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(p, _)| p != path);
        if let Some(step) = step {
            all.push((path.to_owned(), step));
        }
    }

    /// Journal paths whose syncs wait (a disk that stalls), and the wake-up on release.
    static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

    pub(crate) fn hold(path: &Path, held: bool) {
        let mut all = HELD.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|p| p != path);
        if held {
            all.push(path.to_owned());
        }
        RELEASED.notify_all();
    }

    pub(super) fn wait_while_held(path: &Path) {
        let mut all = HELD.lock().unwrap_or_else(|p| p.into_inner());
        while all.iter().any(|p| p == path) {
            all = RELEASED.wait(all).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn check(path: &Path, step: &str) -> std::io::Result<()> {
        let all = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        if all.iter().any(|(p, s)| p == path && *s == step) {
            Err(std::io::Error::other("injected I/O error"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live store's journal keeps its name; a backup named without `.redb` beside it
    /// never shares it.
    #[test]
    fn each_store_file_has_its_own_journal() {
        assert_eq!(
            path_for(Path::new("/var/lib/samu-gateway/audit.redb")),
            Path::new("/var/lib/samu-gateway/audit.journal")
        );
        assert_eq!(
            path_for(Path::new("/var/lib/samu-gateway/audit.2026-12-01")),
            Path::new("/var/lib/samu-gateway/audit.2026-12-01.journal")
        );
        assert_eq!(
            path_for(Path::new("/srv/backup/audit-2026-12-01.redb")),
            Path::new("/srv/backup/audit-2026-12-01.journal")
        );
    }

    fn record(seq: u64) -> Entry {
        Entry::Record(NewRecord {
            seq,
            bytes: format!("{{\"seq\":{seq}}}").into_bytes(),
            time_ms: 1_700_000_000_000 + seq,
            keys: vec![
                (Index::Patient, "185057800600003".into()),
                (Index::Call, format!("call-{seq}")),
            ],
        })
    }

    #[test]
    fn frames_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let mut journal = Journal::open(&path).unwrap();
        let written = vec![record(1), record(2), Entry::Checkpoint(2, b"{}".to_vec())];
        journal.append(&written[..2]).unwrap();
        journal.append(&written[2..]).unwrap();
        journal.syncer().unwrap().sync().unwrap();
        let contents = read(&path).unwrap();
        assert_eq!(contents.entries, written);
        assert_eq!(contents.last_record(), Some(2));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_tail_ends_the_journal_at_its_last_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&[record(1), record(2)]).unwrap();
        let mut whole = std::fs::read(&path).unwrap();
        // The zeros the file is prepared with read as the end; a cut file ends on its own.
        assert!(whole.len() as u64 > journal.len());
        assert_eq!(parse(&path, &whole[..]).unwrap().entries.len(), 2);
        whole.truncate(journal.len() as usize);
        let first_end = {
            let mut one = Vec::new();
            record(1).encode_into(journal.generation, &mut one).unwrap();
            HEADER_LEN as usize + one.len()
        };
        // Every cut inside the second frame reads as the first frame alone.
        for cut in first_end..whole.len() {
            let contents = parse(&path, &whole[..cut]).unwrap();
            assert_eq!(contents.entries, vec![record(1)], "cut at {cut}");
        }
        // A flipped bit in the second frame's payload ends the journal there too.
        let mut damaged = whole.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(parse(&path, &damaged[..]).unwrap().entries, vec![record(1)]);
        // A cut inside the magic is an empty journal.
        assert!(parse(&path, &whole[..3]).unwrap().entries.is_empty());
    }

    #[test]
    fn a_foreign_file_or_an_unknown_frame_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let err = parse(&path, &b"not a journal at all"[..]).unwrap_err();
        assert!(err.to_string().contains("not an audit journal"), "{err}");
        // A frame with a good digest and a kind this build does not know.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let payload = [9u8, 1, 2, 3];
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(frame_digest(Some(7), &payload).as_ref());
        bytes.extend_from_slice(&payload);
        let err = parse(&path, &bytes[..]).unwrap_err();
        assert!(err.to_string().contains("unknown shape"), "{err}");
    }

    #[test]
    fn reopening_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        Journal::open(&path).unwrap().append(&[record(1)]).unwrap();
        assert_eq!(read(&path).unwrap().entries.len(), 1);
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.len(), HEADER_LEN);
        assert!(read(&path).unwrap().entries.is_empty());
        assert!(
            read(&dir.path().join("absent.journal"))
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[test]
    fn emptying_keeps_the_file_and_hides_earlier_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let size = || std::fs::metadata(&path).unwrap().len();
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(size(), HEADER_LEN);
        journal.append(&[record(1), record(2), record(3)]).unwrap();
        // The first write prepares the file a step beyond it.
        assert_eq!(size(), 2 * PREPARE_STEP);
        journal.reset().unwrap();
        assert!(read(&path).unwrap().entries.is_empty());
        // The new frame has the old first frame's length, so the old second frame starts
        // where it ends, whole and with the digest it had: the generation refuses it.
        journal.append(&[record(4)]).unwrap();
        assert_eq!(read(&path).unwrap().entries, vec![record(4)]);
        let generation = journal.generation;
        drop(journal);
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.generation, generation + 1);
        assert!(read(&path).unwrap().entries.is_empty());
        assert_eq!(size(), 2 * PREPARE_STEP, "reused, not truncated");
    }

    #[test]
    fn writes_fill_the_prepared_space_and_grow_it_a_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let size = || std::fs::metadata(&path).unwrap().len();
        let mut journal = Journal::open(&path).unwrap();
        let mut written = Vec::new();
        let mut sizes = std::collections::BTreeSet::new();
        let mut seq = 0;
        while journal.len() < 3 * PREPARE_STEP {
            let batch: Vec<_> = (0..64).map(|i| record(seq + i)).collect();
            seq += 64;
            journal.append(&batch).unwrap();
            written.extend(batch);
            // Zeros always lie beyond the frames, never more than two steps of them.
            assert!(size() > journal.len());
            assert!(size() <= journal.len() + 2 * PREPARE_STEP);
            sizes.insert(size());
        }
        assert!(sizes.iter().all(|s| s % PREPARE_STEP == 0), "{sizes:?}");
        assert_eq!(read(&path).unwrap().entries, written);
    }

    #[test]
    fn a_version_1_journal_is_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        // Version 1: no generation, each digest over the payload alone.
        let mut bytes = MAGIC_V1.to_vec();
        for seq in 1..=2 {
            let mut frame = Vec::new();
            record(seq).encode_into(0, &mut frame).unwrap();
            let digest = frame_digest(None, &frame[FRAME_HEADER..]);
            frame[4..FRAME_HEADER].copy_from_slice(digest.as_ref());
            bytes.extend_from_slice(&frame);
        }
        std::fs::write(&path, &bytes).unwrap();
        let contents = read(&path).unwrap();
        assert_eq!(contents.entries, vec![record(1), record(2)]);
        let journal = Journal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN);
        assert_eq!(journal.generation, 1);
        assert!(read(&path).unwrap().entries.is_empty());
    }

    #[test]
    fn progress_waits_for_the_index_and_gives_up_on_failure() {
        let progress = std::sync::Arc::new(Progress::starting_at(5));
        assert!(progress.wait_settled(Duration::ZERO));
        progress.written(7);
        assert!(!progress.wait_settled(Duration::from_millis(10)));
        let indexer = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.indexed(7))
        };
        assert!(progress.wait_settled(Duration::from_secs(5)));
        indexer.join().unwrap();
        progress.written(8);
        progress.failed();
        let started = Instant::now();
        assert!(!progress.wait_settled(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// Arbitrary bytes never panic the reader.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let mut bytes = MAGIC.to_vec();
            let mut s = seed;
            for _ in 0..len {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                bytes.push((s >> 56) as u8);
            }
            let _ = parse(Path::new("x"), &bytes[..]);
            let _ = Entry::decode(&bytes[MAGIC.len()..]);
        }
    }
}
