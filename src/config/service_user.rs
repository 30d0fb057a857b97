//! Whether the user the unit runs the service as can use what the configuration names.
//! `configtest` is run as root (it must read the credential store, as systemd does), and
//! root reads every file: a key left `0600 root`, or a certificate in a `0700`
//! directory, passed the check and then stopped the service at its start. Run as root,
//! `configtest` therefore also checks each file as the service user would open it: the
//! file's mode bits for that user, and the search bit of every directory on the way.
//! What the check cannot judge it leaves alone rather than refuse a configuration the
//! service may well run with (`configtest` decides whether an upgrade restarts it): a
//! file or directory with a POSIX ACL, groups a unit drop-in adds
//! (`SupplementaryGroups=`, not read), the unit's own state directory (systemd creates it
//! and gives it to the user at start). What the unit hides (`ProtectHome=`,
//! `PrivateTmp=`, the read-only system under `ProtectSystem=strict`) is said as a warning:
//! a drop-in may have changed it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Config;
use crate::problem::ConfigProblem;

/// The user the unit runs the service as (systemd/samu-gateway.sysusers).
pub(crate) const SERVICE_USER: &str = "samu-gateway";

/// The unit's `StateDirectory=`: systemd creates it and gives it to the user at start.
const UNIT_STATE_DIR: &str = "/var/lib/samu-gateway";

/// What the unit hides from the service (`ProtectHome=yes`, `PrivateTmp=yes`).
const HIDDEN_BY_THE_UNIT: [&str; 5] = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/// A local user, as `/etc/passwd` and `/etc/group` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceUser {
    /// Its name.
    pub name: String,
    uid: u32,
    /// Its primary group and the groups that list it as a member.
    gids: Vec<u32>,
}

/// What a check asks of a file or directory, as mode bits for "others".
#[derive(Clone, Copy)]
enum Want {
    Read = 0o4,
    Search = 0o1,
    ReadWriteSearch = 0o7,
}

impl ServiceUser {
    /// The user `name` of the system's files, or `None` when it has no entry there (a
    /// development machine where the package never installed it).
    pub(crate) fn lookup(name: &str) -> Option<Self> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Self::from_files(name, &passwd, &groups)
    }

    fn from_files(name: &str, passwd: &str, groups: &str) -> Option<Self> {
        let (uid, gid) = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [user, _, uid, gid, ..] if *user == name => {
                    Some((uid.trim().parse().ok()?, gid.trim().parse().ok()?))
                }
                _ => None,
            }
        })?;
        let mut gids = vec![gid];
        for line in groups.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [_, _, id, members] = fields.as_slice()
                && members.split(',').any(|m| m.trim() == name)
                && let Ok(id) = id.trim().parse()
            {
                gids.push(id);
            }
        }
        Some(Self {
            name: name.to_owned(),
            uid,
            gids,
        })
    }

    /// Whether the mode bits of `meta` give this user `want`.
    fn may(&self, meta: &std::fs::Metadata, want: Want) -> bool {
        if self.uid == 0 {
            return true;
        }
        let (mode, want) = (meta.mode(), want as u32);
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        granted & want == want
    }

    /// The first directory above `path` this user cannot pass through; `None` too when
    /// one on the way has an ACL (not judged).
    fn blocked_at(&self, path: &Path) -> Option<PathBuf> {
        for dir in path.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            if has_acl(dir) {
                return None;
            }
            if !self.may(&meta, Want::Search) {
                return Some(dir.to_owned());
            }
        }
        None
    }

    /// Why this user cannot `want` `path`, if it cannot (a path that does not exist is
    /// the other checks' to report).
    fn refusal(&self, path: &Path, want: Want) -> Option<String> {
        // Through the directories of the path as written, and, links resolved, of the
        // place where it leads: the service goes through both.
        let real = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&real).ok()?;
        if has_acl(&real) {
            return None;
        }
        if let Some(dir) = self.blocked_at(path).or_else(|| self.blocked_at(&real)) {
            let dir_meta = std::fs::metadata(&dir).ok()?;
            return Some(format!(
                "the service runs as {}, which cannot reach {}: the directory {} (owner uid {}, group gid {}, mode {:04o}) does not let it through",
                self.name,
                path.display(),
                dir.display(),
                dir_meta.uid(),
                dir_meta.gid(),
                dir_meta.mode() & 0o7777,
            ));
        }
        if self.may(&meta, want) {
            return None;
        }
        let (verb, fix) = match want {
            Want::ReadWriteSearch => ("write in", format!("give it to {} (chown)", self.name)),
            Want::Read | Want::Search => (
                "read",
                format!(
                    "give it to the group {} with mode 0640 for a key, 0644 for a certificate, CRL or module",
                    crate::secret::SERVICE_GROUP
                ),
            ),
        };
        Some(format!(
            "the service runs as {}, which cannot {verb} {} (owner uid {}, group gid {}, mode {:04o}): {fix}",
            self.name,
            path.display(),
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777,
        ))
    }
}

/// Whether `path` carries a POSIX access ACL (its mode bits then do not say it all).
fn has_acl(path: &Path) -> bool {
    rustix::fs::getxattr_query(path, "system.posix_acl_access").is_ok_and(|size| size > 0)
}

/// What the check found: problems the service would stop on, and warnings of what
/// depends on the unit as installed.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Files the user cannot read, a state directory it cannot write in.
    pub problems: Vec<ConfigProblem>,
    /// What the unit, unless a drop-in changed it, would hide or keep read-only; a cache
    /// key the service could not read (the cache then runs disabled).
    pub warnings: Vec<ConfigProblem>,
}

/// What `user` could not use of what `config`, read from `source`, names: the
/// configuration file itself, every file the service opens (not the credentials, which
/// systemd reads for it), and the state directory, where it writes.
pub(crate) fn check(config: &Config, source: &Path, user: &ServiceUser) -> Findings {
    let mut found = Findings::default();
    let files = std::iter::once(("configuration file".to_owned(), source.to_owned()))
        .chain(super::validate::files_named(config));
    for (key, path) in files {
        if let Some(hidden) = HIDDEN_BY_THE_UNIT.iter().find(|h| path.starts_with(h)) {
            found.warnings.push(ConfigProblem::new(
                key.clone(),
                format!(
                    "{} is under {hidden}, which the unit hides from the service (ProtectHome=, PrivateTmp=): move it, e.g. under /etc/samu-gateway",
                    path.display()
                ),
            ));
        }
        if let Some(reason) = user.refusal(&path, Want::Read) {
            // Without its key the cache runs disabled, with a warning: not a refusal.
            let list = if key == "cache.master_key" {
                &mut found.warnings
            } else {
                &mut found.problems
            };
            list.push(ConfigProblem::new(key, reason));
        }
    }
    let state = &config.storage.state_dir;
    if state != Path::new(UNIT_STATE_DIR) {
        found.warnings.push(ConfigProblem::new(
            "storage.state_dir",
            format!(
                "{} is not the unit's state directory ({UNIT_STATE_DIR}): under ProtectSystem=strict the service can write there only if a drop-in adds it with ReadWritePaths=",
                state.display()
            ),
        ));
        // Where it would be made, if it is not there yet.
        let existing = state.ancestors().find(|dir| dir.exists());
        let reason = match existing {
            Some(dir) if dir == state => user.refusal(state, Want::ReadWriteSearch),
            Some(dir) => user.refusal(dir, Want::ReadWriteSearch).map(|why| {
                format!(
                    "{} does not exist and cannot be made: {why}",
                    state.display()
                )
            }),
            None => None,
        };
        if let Some(reason) = reason {
            found
                .problems
                .push(ConfigProblem::new("storage.state_dir", reason));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nsamu-gateway:x:994:994:samu-gateway service:/var/lib/samu-gateway:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str =
        "root:x:0:\nssl-cert:x:110:postgres,samu-gateway\nsamu-gateway:x:994:\nnogroup:x:65534:\n";

    #[test]
    fn a_user_is_found_with_its_groups_or_not_at_all() {
        let user = ServiceUser::from_files("samu-gateway", PASSWD, GROUP).unwrap();
        assert_eq!((user.uid, user.gids.as_slice()), (994, &[994, 110][..]));
        assert_eq!(ServiceUser::from_files("samu", PASSWD, GROUP), None);
        assert_eq!(
            ServiceUser::from_files("samu-gateway", "garbage\n", GROUP),
            None
        );
        assert_eq!(
            ServiceUser::from_files(
                "samu-gateway",
                "samu-gateway:x:abc:994::/:/bin/false",
                GROUP
            ),
            None
        );
    }

    /// The mode bits that apply are the owner's, else the group's, else the others':
    /// a file 0604 owned by the user is not readable by it, as the kernel decides.
    #[test]
    fn the_bits_that_apply_are_the_owners_then_the_groups_then_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let me = rustix::process::geteuid().as_raw();
        let my_group = rustix::process::getegid().as_raw();
        let as_owner = ServiceUser {
            name: "owner".into(),
            uid: me.max(1),
            gids: vec![],
        };
        let in_group = ServiceUser {
            name: "member".into(),
            uid: u32::MAX - 1,
            gids: vec![my_group],
        };
        let stranger = ServiceUser {
            name: "stranger".into(),
            uid: u32::MAX - 1,
            gids: vec![u32::MAX - 1],
        };
        let check = |mode: u32, user: &ServiceUser| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            user.may(&std::fs::metadata(&file).unwrap(), Want::Read)
        };
        if me != 0 {
            assert!(check(0o600, &as_owner));
            assert!(!check(0o064, &as_owner));
        }
        assert!(check(0o640, &in_group));
        assert!(!check(0o604, &in_group));
        assert!(check(0o644, &stranger));
        assert!(!check(0o640, &stranger));
    }

    /// A file the user could read behind a directory it cannot pass is named with that
    /// directory; a readable file in reachable directories is not reported.
    #[test]
    fn a_closed_directory_on_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        let file = closed.join("ca.pem");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stranger = ServiceUser {
            name: "stranger".into(),
            uid: u32::MAX - 1,
            gids: vec![u32::MAX - 1],
        };
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let why = stranger.refusal(&file, Want::Read).unwrap();
        assert!(
            why.contains("cannot reach") && why.contains("closed"),
            "{why}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
        // The temporary directory's own parents (/tmp) let everyone through.
        assert_eq!(stranger.refusal(&file, Want::Read), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let why = stranger.refusal(&file, Want::Read).unwrap();
        assert!(
            why.contains("cannot read") && why.contains("mode 0600"),
            "{why}"
        );
        assert!(stranger.refusal(&closed, Want::ReadWriteSearch).is_some());
    }
}
