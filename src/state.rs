//! The state directory: an exclusive lock so that one gateway at a time owns it, and the two
//! stores inside it (`audit.redb`, the evidence; `cache/`, disposable summaries).

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{AuditError, AuditStore};
use crate::cache::{CacheError, SummaryCache};

const LOCK_FILE: &str = "gateway.lock";
/// The audit database's file name inside the state directory.
pub(crate) const AUDIT_FILE: &str = "audit.redb";
const CACHE_DIR: &str = "cache";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory or its lock file cannot be created or opened.
    #[error("state directory {path}: {source}{}", unit_hint(source))]
    Directory {
        /// The path concerned.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Another process owns the directory.
    #[error(
        "state directory {path} is in use by another process (another samu-gateway is running on it); stop it first"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The audit store refused to open.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The cache store refused to open.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Both stores, open, with the directory lock held for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Stores {
    /// The audit trail (shared with the audit writer thread).
    pub audit: Arc<AuditStore>,
    /// The summary cache.
    pub cache: SummaryCache,
    dir: PathBuf,
    _lock: File,
}

impl Stores {
    /// Creates the directory (mode 0700) if needed, takes its lock, opens both stores.
    pub(crate) fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Directory { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let audit = Arc::new(AuditStore::open(&dir.join(AUDIT_FILE))?);
        let cache_dir = dir.join(CACHE_DIR);
        let cache = match SummaryCache::open(&cache_dir) {
            Ok(cache) => cache,
            Err(e) => {
                // Disposable by design: a cache that does not open (damaged by a power
                // loss, or left by another format) starts again empty, rather than keeping
                // the gateway down until someone removes it by hand. Its entries were
                // sealed, and the record service gives them again.
                tracing::warn!(error = %e, "the summary cache does not open: removed and started empty");
                std::fs::remove_dir_all(&cache_dir).map_err(io(&cache_dir))?;
                SummaryCache::open(&cache_dir)?
            }
        };
        // A maintenance command run as root (`cache stats`, before the first start) must
        // not leave the service a lock file, store or cache it cannot open.
        hand_to_owner(dir).map_err(io(dir))?;
        Ok(Self {
            audit,
            cache,
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// A service run begins for the cache ([`SummaryCache::start_run`]: after a run that
    /// did not stop cleanly, every copy is deleted); how many copies went. A cache that
    /// cannot even be emptied is removed and started again empty, as one that does not
    /// open: its copies were to go anyway, and the gateway must not stay down for it.
    pub(crate) fn start_cache_run(self) -> Result<(Self, u64), StateError> {
        let failure = match self.cache.start_run() {
            Ok(deleted) => return Ok((self, deleted)),
            Err(e) => e,
        };
        tracing::warn!(error = %failure, "the summary cache cannot be emptied after an unclean stop: removed and started empty");
        let Self {
            audit,
            cache,
            dir,
            _lock,
        } = self;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Directory { path, source }
        };
        let cache_dir = dir.join(CACHE_DIR);
        // Its database lets go of its files before they go.
        drop(cache);
        std::fs::remove_dir_all(&cache_dir).map_err(io(&cache_dir))?;
        let cache = SummaryCache::open(&cache_dir)?;
        let deleted = cache.start_run()?;
        hand_to_owner(&dir).map_err(io(&dir))?;
        Ok((
            Self {
                audit,
                cache,
                dir,
                _lock,
            },
            deleted,
        ))
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Both stores answer a read.
    pub(crate) fn check(&self) -> Result<(), StateError> {
        self.audit.check()?;
        self.cache.check()?;
        Ok(())
    }

    /// Flushes what is buffered (the audit store has nothing buffered: each commit is durable).
    pub(crate) fn flush(&self) -> Result<(), StateError> {
        self.cache.flush()?;
        Ok(())
    }
}

/// Run as root (a maintenance command) in a state directory another user owns (the
/// service's), gives every entry under it that root owns to that user: the service could
/// not open a lock file, store or cache root created. Not run as root, nothing to do.
///
/// The walk never follows a link: each directory is opened relative to its parent's
/// descriptor without following symlinks, and ownership changes never follow one either,
/// so a service user swapping a directory for a link to `/etc` meanwhile gains nothing.
pub(crate) fn hand_to_owner(dir: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let top = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(top) => top,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let owner = rustix::fs::fstat(&top)?;
    if owner.st_uid == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(owner.st_uid), Gid::from_raw(owner.st_gid));
    let mut pending = vec![top];
    while let Some(parent) = pending.pop() {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&parent)? {
            let name = entry?.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        for name in names {
            let stat = rustix::fs::statat(&parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            if stat.st_uid == 0 {
                rustix::fs::chownat(
                    &parent,
                    name.as_c_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                pending.push(rustix::fs::openat(
                    &parent,
                    name.as_c_str(),
                    flags,
                    Mode::empty(),
                )?);
            }
        }
    }
    Ok(())
}

/// What a read-only or forbidden state directory most often means on an appliance: the
/// unit (`ProtectSystem=strict`) lets the service write in `/var/lib/samu-gateway` only.
fn unit_hint(source: &std::io::Error) -> &'static str {
    const READ_ONLY_FILESYSTEM: i32 = 30;
    if source.raw_os_error() == Some(READ_ONLY_FILESYSTEM)
        || source.kind() == std::io::ErrorKind::PermissionDenied
    {
        " (under the systemd unit only /var/lib/samu-gateway is writable: for another \
         storage.state_dir, add it with ReadWritePaths= in a drop-in, and give it to the \
         samu-gateway user)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache that cannot be emptied after an unclean stop (here its clean-stop marker is
    /// a directory, so it can be neither removed nor told absent) is removed and started
    /// empty; the audit trail is untouched. Before, the service refused to start, and
    /// systemd restarted it into the same refusal.
    #[test]
    fn a_cache_that_cannot_be_emptied_starts_again_empty() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(dir.path()).unwrap();
        let marker = dir.path().join(CACHE_DIR).join("stopped-cleanly");
        std::fs::create_dir_all(marker.join("inside")).unwrap();
        assert!(stores.cache.start_run().is_err());
        let (stores, deleted) = stores.start_cache_run().unwrap();
        assert_eq!(deleted, 0);
        assert!(!marker.exists());
        stores.check().unwrap();
        stores.cache.mark_clean_stop().unwrap();
        let (_, deleted) = stores.start_cache_run().unwrap();
        assert_eq!(deleted, 0);
    }

    #[test]
    fn second_opener_is_refused_while_the_first_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Stores::open(dir.path()).unwrap();
        let err = Stores::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        drop(first);
        Stores::open(dir.path()).unwrap().check().unwrap();
    }

    /// Opened by root (a maintenance command) in a directory the service owns, the stores
    /// leave every file to the service. Runs as root (CI's machine), else says so.
    #[test]
    fn files_root_creates_go_to_the_directory_owner() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // `nobody` stands for the service user.
        if std::os::unix::fs::chown(&state, Some(65534), Some(65534)).is_err() {
            eprintln!("SKIPPED: needs root to create files for another owner");
            return;
        }
        let stores = Stores::open(&state).unwrap();
        drop(stores);
        let mut pending = vec![state.clone()];
        let mut seen = 0;
        while let Some(path) = pending.pop() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let path = entry.unwrap().path();
                let meta = path.symlink_metadata().unwrap();
                assert_eq!(
                    (meta.uid(), meta.gid()),
                    (65534, 65534),
                    "{}",
                    path.display()
                );
                seen += 1;
                if meta.is_dir() {
                    pending.push(path);
                }
            }
        }
        assert!(seen >= 3, "the lock, the audit store and the cache");
    }

    /// A cache that does not open is removed and started empty; the audit store is never
    /// touched that way.
    #[test]
    fn a_cache_that_does_not_open_starts_again_empty() {
        let dir = tempfile::tempdir().unwrap();
        drop(Stores::open(dir.path()).unwrap());
        let cache = dir.path().join(CACHE_DIR);
        for entry in std::fs::read_dir(&cache).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::write(entry.path(), b"not a sled file, not at all").unwrap();
            }
        }
        assert!(SummaryCache::open(&cache).is_err(), "the damage is seen");
        let stores = Stores::open(dir.path()).unwrap();
        stores.check().unwrap();
        assert_eq!(stores.cache.stats(0).unwrap().entries, 0);
    }
}
