//! How long the disk takes for the trail, as histograms the metrics endpoint serves.
//!
//! Every access waits for its record's journal sync before the data leaves, so the
//! journal's sync time is part of what a physician waits for; a slow or shared disk shows
//! here first. The index commits run beside the syncs on the same disk, and a journal sync
//! issued during one waits for it (docs/audit.md, "Disk stalls").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The audit pipeline's disk timings. Cheap to clone: the clones share their counts.
#[derive(Debug, Clone)]
pub struct DiskTimes {
    journal_sync: Histogram,
    index_commit: Histogram,
    /// Beside the histograms, which do not lend their counts.
    sync_totals: Arc<Totals>,
    commit_totals: Arc<Totals>,
}

/// How many, how long in all, and the longest, in nanoseconds.
#[derive(Debug, Default)]
struct Totals {
    count: AtomicU64,
    nanos: AtomicU64,
    longest: AtomicU64,
}

impl Totals {
    fn add(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.longest.fetch_max(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, Duration, Duration) {
        (
            self.count.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            Duration::from_nanos(self.longest.load(Ordering::Relaxed)),
        )
    }
}

/// How many journal syncs and index commits there were, and their time in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTotals {
    /// Journal `fdatasync` calls.
    pub syncs: u64,
    /// Their time in all.
    pub sync_time: Duration,
    /// The longest.
    pub sync_max: Duration,
    /// Index transactions.
    pub commits: u64,
    /// Their time in all.
    pub commit_time: Duration,
    /// The longest.
    pub commit_max: Duration,
}

impl Default for DiskTimes {
    fn default() -> Self {
        Self {
            journal_sync: buckets(),
            index_commit: buckets(),
            sync_totals: Arc::default(),
            commit_totals: Arc::default(),
        }
    }
}

/// 50 µs to ~1.6 s: an idle SSD's flush, up to a disk that stalls the service.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl DiskTimes {
    /// One `fdatasync` of the journal, covering one or more batches of records.
    pub(super) fn journal_synced(&self, took: Duration) {
        self.journal_sync.observe(took.as_secs_f64());
        self.sync_totals.add(took);
    }

    /// One redb transaction of the indexer, its syncs included.
    pub(super) fn index_committed(&self, took: Duration) {
        self.index_commit.observe(took.as_secs_f64());
        self.commit_totals.add(took);
    }

    /// The counts and times so far.
    pub fn totals(&self) -> DiskTotals {
        let (syncs, sync_time, sync_max) = self.sync_totals.read();
        let (commits, commit_time, commit_max) = self.commit_totals.read();
        DiskTotals {
            syncs,
            sync_time,
            sync_max,
            commits,
            commit_time,
            commit_max,
        }
    }

    /// The journal's sync times (shared with this value).
    pub fn journal_sync(&self) -> Histogram {
        self.journal_sync.clone()
    }

    /// The index commits' times (shared with this value).
    pub fn index_commit(&self) -> Histogram {
        self.index_commit.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_add_and_keep_the_longest_for_each_kind() {
        let times = DiskTimes::default();
        let shared = times.clone();
        times.journal_synced(Duration::from_micros(300));
        shared.journal_synced(Duration::from_micros(100));
        times.index_committed(Duration::from_millis(40));
        assert_eq!(
            times.totals(),
            DiskTotals {
                syncs: 2,
                sync_time: Duration::from_micros(400),
                sync_max: Duration::from_micros(300),
                commits: 1,
                commit_time: Duration::from_millis(40),
                commit_max: Duration::from_millis(40),
            }
        );
    }
}
