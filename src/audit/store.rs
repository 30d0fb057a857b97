//! Opening the redb audit database and checking that this build understands it.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

/// Version of the gateway's own layout inside the redb file. A file written by a newer
/// gateway is refused rather than misread.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format_version";

/// Why the audit store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Another process holds the database open.
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
    /// A transaction failed on an open store.
    #[error("audit store transaction failed: {0}")]
    Storage(String),
}

/// The redb database holding the audit trail.
#[derive(Debug)]
pub struct AuditStore {
    db: Database,
    path: PathBuf,
}

impl AuditStore {
    /// Opens (creating if absent) the database at `path` and checks its format version.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let db = Database::create(path).map_err(|e| open_error(path, e))?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        match store.format_version()? {
            Some(FORMAT_VERSION) => Ok(store),
            Some(found) => Err(AuditError::UnknownFormat {
                path: path.to_owned(),
                found: found.to_string(),
                supported: FORMAT_VERSION,
            }),
            None => {
                store.stamp_format_version()?;
                Ok(store)
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Proves the store still answers a read transaction (readiness, watchdog).
    pub fn check(&self) -> Result<(), AuditError> {
        self.format_version().map(drop)
    }

    fn format_version(&self) -> Result<Option<u64>, AuditError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(table.get(FORMAT_KEY).map_err(storage)?.map(|v| v.value()))
    }

    fn stamp_format_version(&self) -> Result<(), AuditError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(META)
            .map_err(storage)?
            .insert(FORMAT_KEY, FORMAT_VERSION)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

fn open_error(path: &Path, e: redb::DatabaseError) -> AuditError {
    let path = path.to_owned();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            AuditError::Locked { path }
        }
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

    #[test]
    fn reopening_keeps_the_format_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        drop(AuditStore::open(&path).unwrap());
        let store = AuditStore::open(&path).unwrap();
        assert_eq!(store.format_version().unwrap(), Some(FORMAT_VERSION));
        store.check().unwrap();
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = AuditStore::open(&path).unwrap_err();
        assert!(
            matches!(err, AuditError::UnknownFormat { ref found, .. } if found == "99"),
            "{err}"
        );
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
}
