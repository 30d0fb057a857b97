//! The audit trail: legal evidence of every access, and the only writer of audit records.
//!
//! - [`event`]: what is recorded (typed events, their DICOM codes) and the stored record.
//! - [`log`]: the writer thread with group commit; [`Receipt`] is the proof of append that
//!   any code releasing patient data must hold.
//! - [`chain`]: hashes and Ed25519-signed checkpoints.
//! - [`store`]: the redb tables and indexes; readable by other processes while `serve` writes.
//! - [`verify`]: whole-trail verification naming each kind of tampering.
//! - [`export`]: filtered listing and JSONL / CSV / FHIR / DICOM exports.
//! - [`ship`]: store-and-forward to the audit repositories (syslog over mutual TLS).
//! - [`review`], [`report`]: the compliance review queue, an access's trail, the anomaly
//!   report.
//! - [`alert`]: real-time alerts (outside shift, many patients, PIN failures) as records.
//!
//! redb, not sled: redb commits with fsync, sled's flush is `sync_file_range` (sled #1452).

pub mod alert;
pub mod chain;
pub mod dicom;
pub mod disk_times;
pub mod event;
pub mod export;
pub mod fhir;
mod journal;
/// The journal file that goes with a store file (the CLI moves both together).
pub(crate) use journal::path_for as journal_path;
pub mod log;
mod outq;
pub mod recover;
mod relp;
pub mod report;
pub mod review;
pub mod ship;
pub mod store;
pub mod verify;

use std::path::PathBuf;

pub use chain::{Signer, TrustedKeys};
pub use disk_times::{DiskTimes, DiskTotals};
pub use event::{
    AccessMode, Actor, Alert, AlertKind, CallContext, DataSource, Decision, Event, EventKind,
    Outcome, PatientRef, Record, Review,
};
pub use log::{AuditLog, PruneReport, Receipt, Settings};
pub use store::{AuditReader, AuditStore, FORMAT_VERSION};

/// Makes the syncs of the journal beside `store` wait until released, as a stalled disk
/// would (for other modules' tests of what must not wait for a record).
#[cfg(test)]
pub(crate) fn hold_syncs_for_tests(store: &std::path::Path, held: bool) {
    journal::faults::hold(&journal::path_for(store), held);
}

/// Why an audit operation failed. Cloneable: one failed commit answers every appender of
/// its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Another process holds the database open for writing.
    #[error(
        "audit store {path} is locked by another process (is another gateway running on this state directory?)"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file was written by another version of the gateway, or of redb.
    #[error(
        "audit store {path} has format version {found}; this build reads version {supported}: upgrade the gateway or restore the matching version"
    )]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// What this build reads.
        supported: u64,
    },
    /// The file is not a readable redb database.
    #[error("audit store {path} cannot be opened: {reason}")]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// The cause, from redb or the operating system.
        reason: String,
    },
    /// The file was not closed cleanly (crash, power loss) and only a writable open can
    /// run redb's recovery.
    #[error(
        "audit store {path} was not closed cleanly and needs recovery: start the service, or run this command while it is stopped"
    )]
    NeedsRecovery {
        /// The database file.
        path: PathBuf,
    },
    /// The stored chain is inconsistent; the writer refuses to continue it.
    #[error(
        "audit store {path} failed its integrity check: {what}; run `samu-gateway audit verify`"
    )]
    Integrity {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A transaction failed (disk error, full disk): the records concerned are not written.
    #[error("audit store transaction failed: {0}")]
    Storage(String),
    /// A stored record cannot go to a repository: shipping there stops before it.
    #[error(
        "audit record {seq} cannot be shipped: {why}; shipping to this repository stops before it"
    )]
    Unshippable {
        /// Its sequence number.
        seq: u64,
        /// Why (never its content).
        why: String,
    },
    /// A stored record does not read: a read of the trail that meets it stops there rather
    /// than leave it out (an export with a silent hole, a review queue missing an access).
    #[error(
        "audit record {seq} {why}; this read stops before it (`samu-gateway audit verify` names the damage)"
    )]
    Damaged {
        /// Its sequence number.
        seq: u64,
        /// Why (never its content).
        why: String,
    },
    /// The record could not be serialized or exceeds the size limit: it is not written.
    #[error("audit record refused: {0}")]
    Serialize(String),
    /// The checkpoint signing key is missing, unreadable or not private.
    #[error("audit signing key: {0}")]
    Key(String),
    /// The audit log was closed; nothing more can be recorded.
    #[error("the audit log is closed")]
    Closed,
}
