//! The audit trail: legal evidence of every access, kept in redb because redb commits with
//! fsync (sled does not: its flush is `sync_file_range`, sled issue #1452).
//!
//! This module is the only writer of audit records. For now it owns the store's bootstrap:
//! open, lock, format version, health check. Records, the hash chain and signatures come
//! with the audit-core issue.

mod store;

pub use store::{AuditError, AuditStore, FORMAT_VERSION};
