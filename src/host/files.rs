//! Files under a root directory: reading with metadata, atomic writes that
//! keep mode, owner and SELinux label, backups, and owner/group names
//! resolved from the root's own /etc/passwd and /etc/group.
//!
//! Every path given here is an absolute path as seen on the managed host
//! (`/etc/chrony.conf`); it is joined under the root (`/` when live).

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::HostError;

/// What a file is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Files under one root.
#[derive(Clone, Debug)]
pub struct Files {
    root: PathBuf,
}

const SELINUX_XATTR: &str = "security.selinux";

impl Files {
    pub fn new(root: &Path) -> Files {
        Files {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real path of a host path under the root. Rejects relative paths
    /// and `..`, so nothing outside the root can be named.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, HostError> {
        if !path.is_absolute() {
            return Err(HostError::msg(format!(
                "{}: expected an absolute path",
                path.display()
            )));
        }
        let mut out = self.root.clone();
        for component in path.components() {
            match component {
                Component::RootDir => {}
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(HostError::msg(format!(
                        "{}: '..' is not allowed in a managed path",
                        path.display()
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The file's content and metadata, or None when it does not exist.
    pub fn read(&self, path: &Path) -> Result<Option<FileState>, HostError> {
        let real = self.resolve(path)?;
        let meta = match std::fs::metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HostError::io(&real, "cannot inspect", e)),
        };
        if !meta.is_file() {
            return Err(HostError::msg(format!(
                "{}: exists but is not a regular file",
                real.display()
            )));
        }
        let content = std::fs::read(&real).map_err(|e| HostError::io(&real, "cannot read", e))?;
        Ok(Some(FileState {
            content,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }))
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.resolve(path)
            .map(|p| p.symlink_metadata().is_ok())
            .unwrap_or(false)
    }

    /// Write a file atomically: a temporary file in the same directory is
    /// written, synced, given mode and owner (and the SELinux label of the
    /// file it replaces), renamed over the target, and the directory synced.
    /// A reader never sees a half-written file; a failure leaves the old one.
    pub fn write_atomic(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), HostError> {
        let real = self.resolve(path)?;
        let dir = real
            .parent()
            .ok_or_else(|| HostError::msg(format!("{}: no parent directory", real.display())))?;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HostError::io(dir, "cannot create directory", e))?;
        }
        let label = xattr::get(&real, SELINUX_XATTR).ok().flatten();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(
                ".{}.timectl-",
                real.file_name().and_then(OsStr::to_str).unwrap_or("file")
            ))
            .tempfile_in(dir)
            .map_err(|e| HostError::io(dir, "cannot create a temporary file in", e))?;
        tmp.write_all(content)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| HostError::io(tmp.path(), "cannot write", e))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(tmp.path(), "cannot set mode on", e))?;
        if let Err(e) = std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid)) {
            // Unprivileged runs (tests, image builds as a user) cannot give
            // files away; that is only an error when the owner differs.
            let meta = tmp.as_file().metadata().ok();
            if meta.is_none_or(|m| m.uid() != uid || m.gid() != gid) {
                return Err(HostError::io(tmp.path(), "cannot set owner of", e));
            }
        }
        if let Some(label) = label {
            // Labels are kept where the filesystem has them; overlayfs and
            // tmpfs without SELinux simply do not.
            let _ = xattr::set(tmp.path(), SELINUX_XATTR, &label);
        }
        tmp.persist(&real)
            .map_err(|e| HostError::io(&real, "cannot replace", e.error))?;
        sync_dir(dir);
        Ok(())
    }

    /// Change only mode and owner.
    pub fn set_meta(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), HostError> {
        let real = self.resolve(path)?;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(&real, "cannot set mode on", e))?;
        let meta =
            std::fs::metadata(&real).map_err(|e| HostError::io(&real, "cannot inspect", e))?;
        if (meta.uid() != uid || meta.gid() != gid)
            && let Err(e) = std::os::unix::fs::chown(&real, Some(uid), Some(gid))
        {
            return Err(HostError::io(&real, "cannot set owner of", e));
        }
        Ok(())
    }

    pub fn remove(&self, path: &Path) -> Result<(), HostError> {
        let real = self.resolve(path)?;
        match std::fs::remove_file(&real) {
            Ok(()) => {
                if let Some(dir) = real.parent() {
                    sync_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HostError::io(&real, "cannot remove", e)),
        }
    }

    /// Numeric id of a user name, from the root's /etc/passwd.
    pub fn uid_of(&self, user: &str) -> Result<u32, HostError> {
        self.id_of(Path::new("/etc/passwd"), user, "user")
    }

    /// Numeric id of a group name, from the root's /etc/group.
    pub fn gid_of(&self, group: &str) -> Result<u32, HostError> {
        self.id_of(Path::new("/etc/group"), group, "group")
    }

    /// The name of a numeric id, for messages and diffs.
    pub fn user_name(&self, uid: u32) -> String {
        self.name_of(Path::new("/etc/passwd"), uid)
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.name_of(Path::new("/etc/group"), gid)
    }

    fn id_of(&self, db: &Path, name: &str, what: &str) -> Result<u32, HostError> {
        if name == "root" {
            return Ok(0);
        }
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let real = self.resolve(db)?;
        let text = std::fs::read_to_string(&real).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                Some((f.next()?, f.nth(1)?))
            })
            .find(|(n, _)| *n == name)
            .and_then(|(_, id)| id.parse().ok())
            .ok_or_else(|| HostError::msg(format!("no {what} {name:?} in {}", real.display())))
    }

    fn name_of(&self, db: &Path, id: u32) -> String {
        let text = self
            .resolve(db)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                Some((f.next()?, f.nth(1)?))
            })
            .find(|(_, i)| i.parse() == Ok(id))
            .map_or_else(|| id.to_string(), |(n, _)| n.to_string())
    }
}

/// fsync a directory so a rename in it survives a crash. Best effort: some
/// filesystems refuse to sync directories.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_under_root() {
        let files = Files::new(Path::new("/tmp/r"));
        assert_eq!(
            files.resolve(Path::new("/etc/chrony.conf")).unwrap(),
            PathBuf::from("/tmp/r/etc/chrony.conf")
        );
        assert!(files.resolve(Path::new("/etc/../../x")).is_err());
        assert!(files.resolve(Path::new("etc/x")).is_err());
    }

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let me = nix::unistd::getuid().as_raw();
        let group = nix::unistd::getgid().as_raw();
        files
            .write_atomic(Path::new("/etc/a.conf"), b"one\n", 0o600, me, group)
            .unwrap();
        files
            .write_atomic(Path::new("/etc/a.conf"), b"two\n", 0o644, me, group)
            .unwrap();
        let state = files.read(Path::new("/etc/a.conf")).unwrap().unwrap();
        assert_eq!(state.content, b"two\n");
        assert_eq!(state.mode, 0o644);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.conf")]);
    }

    #[test]
    fn failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/a.conf"), "old\n").unwrap();
        let me = nix::unistd::getuid().as_raw();
        // Give the file away to a user we cannot become: only root can.
        if me != 0 {
            let err = files
                .write_atomic(Path::new("/etc/a.conf"), b"new\n", 0o644, 4242, 4242)
                .unwrap_err();
            assert!(err.to_string().contains("owner"), "{err}");
            assert_eq!(
                std::fs::read(dir.path().join("etc/a.conf")).unwrap(),
                b"old\n"
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join("etc")).unwrap().count(),
                1
            );
        }
        // A read-only directory cannot take the temporary file.
        std::fs::set_permissions(
            dir.path().join("etc"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        let result = files.write_atomic(Path::new("/etc/a.conf"), b"new\n", 0o644, me, 0);
        std::fs::set_permissions(
            dir.path().join("etc"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        if me != 0 {
            assert!(result.is_err());
        }
        if result.is_err() {
            assert_eq!(
                std::fs::read(dir.path().join("etc/a.conf")).unwrap(),
                b"old\n"
            );
        }
    }

    #[test]
    fn owner_names_come_from_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n_chrony:x:104:110::/var/lib/chrony:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\n_chrony:x:110:\n").unwrap();
        let files = Files::new(dir.path());
        assert_eq!(files.uid_of("_chrony").unwrap(), 104);
        assert_eq!(files.gid_of("_chrony").unwrap(), 110);
        assert_eq!(files.group_name(110), "_chrony");
        assert_eq!(files.user_name(9999), "9999");
        assert!(
            files
                .gid_of("chrony")
                .unwrap_err()
                .to_string()
                .contains("no group")
        );
    }
}
