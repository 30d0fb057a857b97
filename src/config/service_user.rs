//! Whether the user the unit runs the service as can use what the configuration names.
//! `configtest` is run as root (it must read the credential store, as systemd does), and
//! root reads every file: a key left `0600 root`, or a certificate in a `0700`
//! directory, passed the check and then stopped the service at its start. Run as root,
//! `configtest` therefore also checks each file as the service user would open it: the
//! file's mode bits for that user, and the search bit of every directory on the way.
//! POSIX ACLs are not read: a file only an ACL opens to the user is reported (the mode
//! bits are what `ls -l` shows the engineer who fixes it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Config;
use crate::problem::ConfigProblem;

/// The user the unit runs the service as (systemd/samu-gateway.sysusers).
pub(crate) const SERVICE_USER: &str = "samu-gateway";

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

    /// The first directory above `path` this user cannot pass through.
    fn blocked_at(&self, path: &Path) -> Option<PathBuf> {
        path.ancestors().skip(1).find_map(|dir| {
            let meta = std::fs::metadata(dir).ok()?;
            (!self.may(&meta, Want::Search)).then(|| dir.to_owned())
        })
    }

    /// Why this user cannot `want` `path`, if it cannot.
    fn refusal(&self, path: &Path, want: Want) -> Option<String> {
        // Links resolved: what the service opens is where the link leads, through the
        // directories of that place.
        let real = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&real).ok()?;
        if let Some(dir) = self.blocked_at(&real) {
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

/// What `user` could not use of what `config`, read from `source`, names: the
/// configuration file itself, every file read by the service (those of the credential
/// store are read by systemd, as root), and the state directory, where it writes.
pub(crate) fn problems(config: &Config, source: &Path, user: &ServiceUser) -> Vec<ConfigProblem> {
    let store = PathBuf::from(crate::secret::credential_store());
    let systemd = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let mut out = Vec::new();
    let files = std::iter::once(("configuration file".to_owned(), source.to_owned()))
        .chain(super::validate::files_named(config));
    for (key, path) in files {
        if path.starts_with(&store) || systemd.as_ref().is_some_and(|d| path.starts_with(d)) {
            continue;
        }
        if let Some(reason) = user.refusal(&path, Want::Read) {
            out.push(ConfigProblem::new(key, reason));
        }
    }
    let state = &config.storage.state_dir;
    if let Some(reason) = user.refusal(state, Want::ReadWriteSearch) {
        out.push(ConfigProblem::new("storage.state_dir", reason));
    }
    out
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
