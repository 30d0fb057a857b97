//! The summary cache: short-lived copies of critical summaries, kept in sled. Disposable by
//! design (losing it costs an upstream call, never evidence), which is why sled's
//! non-durable flush is acceptable here and not for the audit trail.
//!
//! This module owns the store's bootstrap (open, format version, health check, flush at
//! shutdown); [`sealed`] owns the entries: encrypted, keyed by a keyed hash of the INS,
//! expiring.

pub mod sealed;

use std::path::{Path, PathBuf};

/// `[cache]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Master key (64 hex characters; file or `credential:NAME`). Without it, or if it
    /// cannot be read, the cache is disabled with a warning and every read goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<crate::secret::SecretPath>,
    /// Seconds a copy is served as fresh.
    #[serde(default = "defaults::fresh_seconds")]
    pub fresh_seconds: u64,
    /// Seconds a copy is kept, served (labelled stale) only when the record service is
    /// unavailable; purged after.
    #[serde(default = "defaults::max_stale_seconds")]
    pub max_stale_seconds: u64,
    /// Seconds between purges of expired copies.
    #[serde(default = "defaults::purge_interval_secs")]
    pub purge_interval_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            fresh_seconds: defaults::fresh_seconds(),
            max_stale_seconds: defaults::max_stale_seconds(),
            purge_interval_secs: defaults::purge_interval_secs(),
        }
    }
}

impl CacheConfig {
    /// The lifetimes configured.
    pub fn lifetimes(&self) -> sealed::Lifetimes {
        sealed::Lifetimes {
            fresh: std::time::Duration::from_secs(self.fresh_seconds),
            max_stale: std::time::Duration::from_secs(self.max_stale_seconds),
        }
    }
}

mod defaults {
    pub(super) fn fresh_seconds() -> u64 {
        600
    }
    pub(super) fn max_stale_seconds() -> u64 {
        7200
    }
    pub(super) fn purge_interval_secs() -> u64 {
        60
    }
}

/// Version of the gateway's layout inside the sled database.
pub const FORMAT_VERSION: u64 = 1;

const FORMAT_KEY: &[u8] = b"samu-gateway:format_version";
/// A file in the cache directory, present only between a clean stop and the next start
/// (`start_run`, `mark_clean_stop`): a file fsync'd with its directory, since sled's own
/// writes are not durable enough to say so.
const CLEAN_STOP_FILE: &str = "stopped-cleanly";
/// sled's default page cache is 1 GiB; the cache holds a few hours of summaries.
const PAGE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Why the cache store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Another process holds the database.
    #[error(
        "summary cache {path} is locked by another process (is another gateway running on this state directory?)"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// Written by another version of the gateway or of sled.
    #[error(
        "summary cache {path} has format version {found}; this build reads version {supported}: the cache is disposable, remove the directory to start afresh"
    )]
    UnknownFormat {
        /// The database directory.
        path: PathBuf,
        /// What the store says.
        found: String,
        /// What this build reads.
        supported: u64,
    },
    /// Not a readable sled database.
    #[error("summary cache {path} cannot be opened: {reason}")]
    Unreadable {
        /// The database directory.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// An operation failed on an open store.
    #[error("summary cache operation failed: {0}")]
    Storage(String),
}

/// The sled database holding cached summaries.
#[derive(Debug)]
pub struct SummaryCache {
    db: sled::Db,
    path: PathBuf,
    /// Set by the sealed summaries when a removal failed in this run.
    removal_failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when this run has no usable key ([`SummaryCache::run_without_key`]).
    keyless: std::sync::atomic::AtomicBool,
}

impl SummaryCache {
    /// Opens (creating if absent) the cache directory and checks its format version.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(PAGE_CACHE_BYTES)
            .open()
            .map_err(|e| open_error(path, e))?;
        let cache = Self {
            db,
            path: path.to_owned(),
            removal_failed: std::sync::Arc::default(),
            keyless: std::sync::atomic::AtomicBool::new(false),
        };
        match cache.format_version()? {
            Some(FORMAT_VERSION) => Ok(cache),
            Some(found) => Err(CacheError::UnknownFormat {
                path: path.to_owned(),
                found: found.to_string(),
                supported: FORMAT_VERSION,
            }),
            None => {
                cache
                    .db
                    .insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(storage)?;
                Ok(cache)
            }
        }
    }

    /// The sealed summaries, with `master`.
    pub fn sealed(
        &self,
        master: &sealed::MasterKey,
        lifetimes: sealed::Lifetimes,
    ) -> Result<sealed::SealedSummaries, CacheError> {
        sealed::SealedSummaries::new(&self.db, master, lifetimes, self.removal_failed.clone())
    }

    /// Counts the cached summaries without opening them (no key needed).
    pub fn stats(&self, now_ms: u64) -> Result<sealed::Stats, CacheError> {
        sealed::stats(&sealed::tree(&self.db)?, now_ms)
    }

    /// The summaries tree itself, for tests that tamper with entries.
    #[cfg(test)]
    pub(crate) fn summaries_tree(&self) -> Result<sled::Tree, CacheError> {
        sealed::tree(&self.db)
    }

    /// Deletes every summary for which `expired(fetched_at)` holds (no key needed).
    pub fn purge(&self, expired: impl Fn(Option<u64>) -> bool) -> Result<u64, CacheError> {
        sealed::purge(&sealed::tree(&self.db)?, expired)
    }

    /// Deletes every summary older than `max_stale` at `now_ms` (or from the future, or
    /// unreadable), without the key: copies an earlier run sealed keep expiring while this
    /// run has no usable key (they are never served without it).
    pub fn purge_older_than(
        &self,
        max_stale: std::time::Duration,
        now_ms: u64,
    ) -> Result<u64, CacheError> {
        let limit = u64::try_from(max_stale.as_millis()).unwrap_or(u64::MAX);
        self.purge(|at| at.is_none_or(|at| now_ms.saturating_sub(at) > limit || at > now_ms))
    }

    /// Proves the store still answers a read (readiness, watchdog).
    pub fn check(&self) -> Result<(), CacheError> {
        self.format_version().map(drop)
    }

    /// A service run begins. After a run that did not stop cleanly (killed, crashed, power
    /// lost), every cached summary is deleted: sled writes out every 500 ms and its flush
    /// is not an fsync, so a copy removed on a refusal (an opposition, a closure) just
    /// before may be back. Copies cost an upstream call; a refused one served costs the
    /// patient's will. Returns how many were deleted.
    pub fn start_run(&self) -> Result<u64, CacheError> {
        let marker = self.path.join(CLEAN_STOP_FILE);
        let deleted = match std::fs::remove_file(&marker) {
            Ok(()) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let deleted = self.purge(|_| true)?;
                self.flush()?;
                deleted
            }
            Err(e) => return Err(file_error(&marker, &e)),
        };
        // The marker's removal is on disk before anything of this run is cached.
        self.sync_dir()?;
        Ok(deleted)
    }

    /// This run has no usable key: the copies an earlier run sealed cannot be found to be
    /// removed when a patient opposes, is blocked or their record closes. Its stop is then
    /// never marked clean, so the next start with the key deletes every copy instead of
    /// serving one this run could not withdraw (ARCHITECTURE.md, "Invariants").
    pub fn run_without_key(&self) {
        self.keyless
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The run stops cleanly: every removal has been written out, then the marker is. Not
    /// after a removal failed in this run: a refused patient's copy may still be there, and
    /// the next start must delete every copy (an error says so). Not after a run without
    /// the key either ([`SummaryCache::run_without_key`]), which is no failure: nothing is
    /// marked, and the next start deletes every copy.
    pub fn mark_clean_stop(&self) -> Result<(), CacheError> {
        self.flush()?;
        if self.keyless.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        if self
            .removal_failed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(CacheError::Storage(
                "a copy could not be removed in this run: no clean stop is marked, so the next start deletes every copy".into(),
            ));
        }
        let marker = self.path.join(CLEAN_STOP_FILE);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| file_error(&marker, &e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), CacheError> {
        std::fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| file_error(&self.path, &e))
    }

    /// Writes buffered pages out (best effort: see the module note on durability).
    pub fn flush(&self) -> Result<(), CacheError> {
        self.db.flush().map(drop).map_err(storage)
    }

    fn format_version(&self) -> Result<Option<u64>, CacheError> {
        let Some(raw) = self.db.get(FORMAT_KEY).map_err(storage)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| {
            CacheError::Storage(format!("format marker has {} bytes, expected 8", raw.len()))
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }
}

fn file_error(path: &Path, e: &std::io::Error) -> CacheError {
    CacheError::Storage(format!("{}: {e}", path.display()))
}

fn storage(e: sled::Error) -> CacheError {
    CacheError::Storage(e.to_string())
}

fn open_error(path: &Path, e: sled::Error) -> CacheError {
    let path = path.to_owned();
    match e {
        // sled reports its flock failure only as an Io error with this text.
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            CacheError::Locked { path }
        }
        sled::Error::Unsupported(reason) => CacheError::UnknownFormat {
            path,
            found: reason,
            supported: FORMAT_VERSION,
        },
        other => CacheError::Unreadable {
            path,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `path` once the previous handle's flusher thread has let go of the lock: sled
    /// releases it a moment after the last `Db` is dropped, later on a loaded machine.
    pub(super) fn reopen(path: &Path) -> Result<SummaryCache, CacheError> {
        for _ in 0..100 {
            match SummaryCache::open(path) {
                Err(CacheError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                other => return other,
            }
        }
        SummaryCache::open(path)
    }

    /// Summaries survive a clean stop; after a run that stopped any other way, none does
    /// (a removal on refusal may not have reached the disk).
    #[test]
    fn a_run_that_did_not_stop_cleanly_leaves_no_summary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let put = |cache: &SummaryCache| {
            sealed::tree(&cache.db)
                .unwrap()
                .insert(b"k", &[2u8; 16][..])
                .unwrap();
        };
        let entries = |cache: &SummaryCache| sealed::tree(&cache.db).unwrap().len();
        {
            let cache = SummaryCache::open(&path).unwrap();
            assert_eq!(cache.start_run().unwrap(), 0, "a new store");
            put(&cache);
            cache.mark_clean_stop().unwrap();
        }
        {
            let cache = reopen(&path).unwrap();
            assert_eq!(cache.start_run().unwrap(), 0, "after a clean stop");
            assert_eq!(entries(&cache), 1);
            // This run ends without marking its stop (killed).
            cache.flush().unwrap();
        }
        let cache = reopen(&path).unwrap();
        assert_eq!(cache.start_run().unwrap(), 1);
        assert_eq!(entries(&cache), 0);
    }

    /// A run without the key cannot withdraw the copies an earlier run sealed (it cannot
    /// find them by patient): its stop is not marked clean, so the next run with the key
    /// starts with none. Before, a refusal in the keyless run removed nothing, the stop was
    /// marked clean, and the next run served the refused patient's copy.
    #[test]
    fn a_run_without_the_key_leaves_no_copy_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let entries = |cache: &SummaryCache| sealed::tree(&cache.db).unwrap().len();
        {
            let cache = SummaryCache::open(&path).unwrap();
            cache.start_run().unwrap();
            sealed::tree(&cache.db)
                .unwrap()
                .insert(b"k", &[2u8; 16][..])
                .unwrap();
            cache.mark_clean_stop().unwrap();
        }
        {
            let cache = reopen(&path).unwrap();
            assert_eq!(cache.start_run().unwrap(), 0);
            cache.run_without_key();
            cache.mark_clean_stop().unwrap();
            assert_eq!(entries(&cache), 1, "kept while keyless, expiring by age");
        }
        let cache = reopen(&path).unwrap();
        assert_eq!(cache.start_run().unwrap(), 1);
        assert_eq!(entries(&cache), 0);
    }

    #[test]
    fn copies_expire_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SummaryCache::open(&dir.path().join("cache")).unwrap();
        let tree = sealed::tree(&cache.db).unwrap();
        // Version byte, then the fetch time (ms, big-endian): what `fetched_at` reads.
        let written = |at: u64| {
            let mut value = vec![2u8];
            value.extend_from_slice(&at.to_be_bytes());
            value.extend_from_slice(&[0; 32]);
            value
        };
        tree.insert(b"old", written(1_000)).unwrap();
        tree.insert(b"recent", written(7_000_000)).unwrap();
        tree.insert(b"future", written(9_000_000)).unwrap();
        tree.insert(b"garbled", &[9u8; 4][..]).unwrap();
        let removed = cache
            .purge_older_than(std::time::Duration::from_secs(7_200), 7_300_000)
            .unwrap();
        assert_eq!(removed, 3);
        assert_eq!(tree.len(), 1);
        assert!(tree.contains_key(b"recent").unwrap());
    }

    #[test]
    fn reopen_and_refuse_a_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        {
            let cache = SummaryCache::open(&path).unwrap();
            cache.check().unwrap();
            cache.flush().unwrap();
        }
        {
            let cache = reopen(&path).unwrap();
            cache.db.insert(FORMAT_KEY, &7u64.to_be_bytes()).unwrap();
            cache.flush().unwrap();
        }
        let err = reopen(&path).unwrap_err();
        assert!(
            matches!(err, CacheError::UnknownFormat { ref found, .. } if found == "7"),
            "{err}"
        );
    }
}
