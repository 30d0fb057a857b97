//! How long the disk takes for the trail, as histograms the metrics endpoint serves.
//!
//! Every access waits for its record's journal sync before the data leaves, so the
//! journal's sync time is part of what a physician waits for; a slow or shared disk shows
//! here first. The index commits run beside the syncs on the same disk, and a journal sync
//! issued during one waits for it (docs/audit.md, "Disk stalls").

use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The audit pipeline's disk timings. Cheap to clone: the clones share their counts.
#[derive(Debug, Clone)]
pub struct DiskTimes {
    journal_sync: Histogram,
    index_commit: Histogram,
}

impl Default for DiskTimes {
    fn default() -> Self {
        Self {
            journal_sync: buckets(),
            index_commit: buckets(),
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
    }

    /// One redb transaction of the indexer, its syncs included.
    pub(super) fn index_committed(&self, took: Duration) {
        self.index_commit.observe(took.as_secs_f64());
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
