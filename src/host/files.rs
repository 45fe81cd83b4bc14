//! Files under a root directory: reading with metadata, atomic writes that
//! keep mode, owner and SELinux label, directories, symlinks, and
//! owner/group names resolved from the root's own /etc/passwd and /etc/group.
//!
//! Every path given here is an absolute path as seen on the managed host
//! (`/etc/chrony.conf`); it is looked up under the root (`/` when live).
//!
//! # The root is a boundary
//!
//! Offline (`--root DIR`), the root directory is opened once and every path
//! is resolved by the kernel relative to it with `openat2(RESOLVE_IN_ROOT)`,
//! as in a chroot or `systemctl --root`: an absolute symlink target starts
//! at the root, `..` never climbs above it, and no lookup, however the tree
//! changes meanwhile, reaches a file outside it. A symlink that resolves
//! inside the root is followed inside it (reads, writes and directories);
//! a symlink whose target does not resolve inside the root (it names a path
//! that exists only outside, or climbs out with `..`) is an error naming the
//! link. Every operation works on directory descriptors obtained that way
//! (`mkdirat`, `renameat`, `symlinkat`, `unlinkat`, `readlinkat`), never on
//! a joined path string.
//!
//! Live (root `/`), paths resolve as they always did on the running host.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::HostError;

/// A check run on a new file's temporary copy before it is installed.
pub type FileCheck<'a> = dyn Fn(&Path) -> Result<(), HostError> + 'a;

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
    /// The root directory (O_PATH), or why it could not be opened.
    dir: Result<Arc<OwnedFd>, String>,
    /// Resolve every path inside the root (offline roots).
    confined: bool,
}

const SELINUX_XATTR: &str = "security.selinux";
/// The infix of temporary files: `.chrony.conf.timectl-Ab12Cd`.
pub const TEMP_INFIX: &str = ".timectl-";
/// The kernel's own limit on symlinks in one lookup.
const MAX_LINKS: usize = 40;

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Whether an error means "something on the way does not exist".
fn is_missing(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV
    )
}

impl Files {
    /// Files under `root`: confined to it unless it is `/`.
    pub fn new(root: &Path) -> Files {
        let dir = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(Arc::new)
        .map_err(|e| format!("cannot open the root {}: {e}", root.display()));
        Files {
            root: root.to_path_buf(),
            dir,
            confined: root != Path::new("/"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether paths are confined to the root (an offline root).
    pub fn is_confined(&self) -> bool {
        self.confined
    }

    /// The path of a host path under the root, for messages (and for tools
    /// that take a root themselves). Rejects relative paths and `..`.
    /// Joined lexically: never open it; the methods here resolve paths
    /// inside the root.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, HostError> {
        Ok(self.shown(&self.rel(path)?))
    }

    /// A host path as a path relative to the root (empty for the root).
    fn rel(&self, path: &Path) -> Result<PathBuf, HostError> {
        if !path.is_absolute() {
            return Err(HostError::msg(format!(
                "{}: expected an absolute path",
                path.display()
            )));
        }
        let mut out = PathBuf::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(part) => out.push(part),
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

    fn shown(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn root_fd(&self) -> Result<BorrowedFd<'_>, HostError> {
        match &self.dir {
            Ok(fd) => Ok(fd.as_fd()),
            Err(why) => Err(HostError::msg(why.clone())),
        }
    }

    /// Open a root-relative path: inside the root when confined.
    fn open_rel(&self, rel: &Path, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
        let dir = self.root_fd().map_err(|_| Errno::EBADF)?;
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = flags | OFlag::O_CLOEXEC;
        // openat2 refuses a mode without O_CREAT.
        let mode = if flags.contains(OFlag::O_CREAT) {
            Mode::from_bits_truncate(mode)
        } else {
            Mode::empty()
        };
        if !self.confined {
            return nix::fcntl::openat(dir, rel, flags, mode);
        }
        let how = OpenHow::new()
            .flags(flags)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // RESOLVE_IN_ROOT answers EAGAIN when a rename raced the lookup.
        let mut result = Err(Errno::EAGAIN);
        for _ in 0..64 {
            result = nix::fcntl::openat2(dir, rel, how);
            if !matches!(result, Err(Errno::EAGAIN)) {
                break;
            }
        }
        result
    }

    /// The error for a failed lookup of `rel`: a symlink on the way that
    /// does not resolve inside the root is named; otherwise the plain error.
    fn fail(&self, rel: &Path, what: &'static str, e: Errno) -> HostError {
        if e == Errno::ENOSYS && self.confined {
            return HostError::msg(format!(
                "{}: this kernel has no openat2 (Linux 5.6 or later is needed to keep --root paths inside the root)",
                self.shown(rel).display()
            ));
        }
        if let Err(why) = &self.dir {
            return HostError::msg(why.clone());
        }
        if is_missing(e)
            && let Some(escape) = self.blame(rel)
        {
            return escape;
        }
        HostError::io(&self.shown(rel), what, io(e))
    }

    /// The first symlink on the way to `rel` whose target does not resolve
    /// inside the root, as an error; None when there is none (the path
    /// simply does not exist). Each prefix is looked up by the kernel.
    fn blame(&self, rel: &Path) -> Option<HostError> {
        if !self.confined {
            return None;
        }
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            prefix.push(component);
            let fd = self
                .open_rel(&prefix, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)
                .ok()?;
            let link = File::from(fd);
            let meta = link.metadata().ok()?;
            if meta.file_type().is_symlink() && self.open_rel(&prefix, OFlag::O_PATH, 0).is_err() {
                let target = nix::fcntl::readlinkat(link.as_fd(), "")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                return Some(HostError::OutsideRoot {
                    link: Path::new("/").join(&prefix),
                    target,
                    root: self.root.clone(),
                });
            }
        }
        None
    }

    /// Metadata of the file at `path`, following symlinks (inside the root
    /// when confined); None when it does not exist.
    pub fn stat(&self, path: &Path) -> Result<Option<std::fs::Metadata>, HostError> {
        self.meta(path, OFlag::O_PATH)
    }

    /// Metadata of `path` itself (a symlink is not followed); None when it
    /// does not exist.
    pub fn lstat(&self, path: &Path) -> Result<Option<std::fs::Metadata>, HostError> {
        self.meta(path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
    }

    fn meta(&self, path: &Path, flags: OFlag) -> Result<Option<std::fs::Metadata>, HostError> {
        let rel = self.rel(path)?;
        match self.open_rel(&rel, flags, 0) {
            Ok(fd) => File::from(fd)
                .metadata()
                .map(Some)
                .map_err(|e| HostError::io(&self.shown(&rel), "cannot inspect", e)),
            Err(e) if is_missing(e) => match self.blame(&rel) {
                Some(escape) => Err(escape),
                None if e == Errno::ELOOP => {
                    Err(HostError::io(&self.shown(&rel), "cannot inspect", io(e)))
                }
                None => Ok(None),
            },
            Err(e) => Err(self.fail(&rel, "cannot inspect", e)),
        }
    }

    /// For tools that take a root directory and join paths under it
    /// themselves (`rpm --root`): an error when `path`, looked up that way,
    /// is not what it is inside the root (a symlink on the way leads out).
    pub fn check_host_view(&self, path: &Path, tool: &str) -> Result<(), HostError> {
        if !self.confined {
            return Ok(());
        }
        let inside = self.stat(path)?;
        let shown = self.resolve(path)?;
        let outside = std::fs::metadata(&shown).ok();
        let same = match (&inside, &outside) {
            (None, None) => true,
            (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(HostError::msg(format!(
                "{}: a symlink on the way leads out of the root, and {tool} would follow it there: fix the link",
                shown.display()
            )))
        }
    }

    /// Whether `path` is a directory (following symlinks inside the root).
    pub fn is_dir(&self, path: &Path) -> Result<bool, HostError> {
        Ok(self.stat(path)?.is_some_and(|m| m.is_dir()))
    }

    /// The file's content and metadata, or None when it does not exist.
    /// What is checked (a regular file) is what is read: a file replaced
    /// in between (an atomic rename by someone else) is looked up again.
    pub fn read(&self, path: &Path) -> Result<Option<FileState>, HostError> {
        let rel = self.rel(path)?;
        for _ in 0..3 {
            let Some(meta) = self.stat(path)? else {
                return Ok(None);
            };
            if !meta.is_file() {
                return Err(HostError::msg(format!(
                    "{}: exists but is not a regular file",
                    self.shown(&rel).display()
                )));
            }
            let fd = match self.open_rel(
                &rel,
                OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
                0,
            ) {
                Ok(fd) => fd,
                // Removed in between: look again.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(self.fail(&rel, "cannot read", e)),
            };
            let mut file = File::from(fd);
            let now = file
                .metadata()
                .map_err(|e| HostError::io(&self.shown(&rel), "cannot inspect", e))?;
            if now.dev() != meta.dev() || now.ino() != meta.ino() {
                continue;
            }
            let mut content = Vec::with_capacity(now.len() as usize);
            std::io::Read::read_to_end(&mut file, &mut content)
                .map_err(|e| HostError::io(&self.shown(&rel), "cannot read", e))?;
            return Ok(Some(FileState {
                content,
                mode: now.mode() & 0o7777,
                uid: now.uid(),
                gid: now.gid(),
            }));
        }
        Err(HostError::msg(format!(
            "{}: replaced again and again while it was being read; try again",
            self.shown(&rel).display()
        )))
    }

    /// Whether something (a file, directory or symlink) is at `path`.
    pub fn exists(&self, path: &Path) -> bool {
        self.lstat(path).is_ok_and(|m| m.is_some())
    }

    /// The directory `parent` (relative to the root) opened with `flags`,
    /// or None when it does not exist inside the root; a missing parent
    /// reached through a link that leaves the root is that link's error.
    fn open_parent(&self, parent: &Path, flags: OFlag) -> Result<Option<OwnedFd>, HostError> {
        match self.open_rel(parent, flags | OFlag::O_DIRECTORY, 0) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if is_missing(e) => match self.blame(parent) {
                Some(escape) => Err(escape),
                None => Ok(None),
            },
            Err(e) => Err(self.fail(parent, "cannot open directory", e)),
        }
    }

    /// The target of the symlink at `path`; None when there is no symlink
    /// there.
    pub fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, HostError> {
        let rel = self.rel(path)?;
        let Some((parent, name)) = split(&rel) else {
            return Ok(None);
        };
        let Some(dir) = self.open_parent(parent, OFlag::O_PATH)? else {
            return Ok(None);
        };
        match nix::fcntl::readlinkat(dir.as_fd(), name) {
            Ok(target) => Ok(Some(PathBuf::from(target))),
            Err(Errno::ENOENT | Errno::EINVAL) => Ok(None),
            Err(e) => Err(HostError::io(&self.shown(&rel), "cannot read link", io(e))),
        }
    }

    /// The names in a directory (without `.` and `..`); None when it does
    /// not exist.
    pub fn list_dir(&self, path: &Path) -> Result<Option<Vec<OsString>>, HostError> {
        let rel = self.rel(path)?;
        let fd = match self.open_rel(&rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e) if is_missing(e) && e != Errno::ENOTDIR => {
                return match self.blame(&rel) {
                    Some(escape) => Err(escape),
                    None => Ok(None),
                };
            }
            Err(e) => return Err(self.fail(&rel, "cannot list", e)),
        };
        let mut dir = nix::dir::Dir::from_fd(fd)
            .map_err(|e| HostError::io(&self.shown(&rel), "cannot list", io(e)))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry =
                entry.map_err(|e| HostError::io(&self.shown(&rel), "cannot list", io(e)))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        names.sort();
        Ok(Some(names))
    }

    /// Create a directory and its missing parents (mode 0777 less the
    /// umask, like `mkdir -p`), inside the root.
    pub fn create_dir_all(&self, path: &Path) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        self.make_dirs(&rel).map(drop)
    }

    /// The directory `rel` (O_PATH), created with its parents if missing.
    fn make_dirs(&self, rel: &Path) -> Result<OwnedFd, HostError> {
        match self.open_rel(rel, OFlag::O_PATH | OFlag::O_DIRECTORY, 0) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.fail(rel, "cannot open directory", e)),
        }
        if let Some(escape) = self.blame(rel) {
            return Err(escape);
        }
        let Some((parent, name)) = split(rel) else {
            return Err(HostError::msg(format!(
                "{}: cannot create this directory",
                self.shown(rel).display()
            )));
        };
        let parent_fd = self.make_dirs(parent)?;
        match nix::sys::stat::mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(HostError::io(
                    &self.shown(rel),
                    "cannot create directory",
                    io(e),
                ));
            }
        }
        self.open_rel(rel, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map_err(|e| self.fail(rel, "cannot open directory", e))
    }

    /// Set a directory's or file's mode only (following symlinks inside the
    /// root).
    pub fn chmod(&self, path: &Path, mode: u32) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let file = self.open_existing(&rel)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(&self.shown(&rel), "cannot set mode on", e))
    }

    /// An existing file or directory, opened for metadata changes.
    fn open_existing(&self, rel: &Path) -> Result<File, HostError> {
        let meta = self
            .stat(&Path::new("/").join(rel))?
            .ok_or_else(|| HostError::msg(format!("{} vanished", self.shown(rel).display())))?;
        let flags = if meta.is_dir() {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY
        } else {
            OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
        };
        self.open_rel(rel, flags, 0)
            .map(File::from)
            .map_err(|e| self.fail(rel, "cannot open", e))
    }

    /// Where a write to `rel` lands. Live: `rel` itself (a symlink there is
    /// replaced, as always). Confined: a symlink there is followed inside
    /// the root, so the file it points to is replaced.
    fn write_target(&self, rel: &Path) -> Result<PathBuf, HostError> {
        if !self.confined {
            return Ok(rel.to_path_buf());
        }
        let mut current = rel.to_path_buf();
        for hop in 0..MAX_LINKS {
            let fd = match self.open_rel(&current, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if hop == 0 => return Ok(current),
                Err(e) => return Err(self.fail(rel, "cannot inspect", e)),
            };
            let file = File::from(fd);
            let meta = file
                .metadata()
                .map_err(|e| HostError::io(&self.shown(rel), "cannot inspect", e))?;
            if !meta.file_type().is_symlink() {
                return Ok(current);
            }
            let target = PathBuf::from(
                nix::fcntl::readlinkat(file.as_fd(), "")
                    .map_err(|e| HostError::io(&self.shown(rel), "cannot read link", io(e)))?,
            );
            current = match target.strip_prefix("/") {
                Ok(inside) => inside.to_path_buf(),
                Err(_) => current.parent().unwrap_or(Path::new("")).join(target),
            };
        }
        Err(HostError::io(
            &self.shown(rel),
            "cannot follow",
            io(Errno::ELOOP),
        ))
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
        self.write_atomic_checked(path, content, mode, uid, gid, None)
    }

    /// [`Files::write_atomic`], with `check` run on the finished temporary
    /// file before it replaces the target: a check that fails leaves the
    /// old file in place.
    pub fn write_atomic_checked(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        check: Option<&FileCheck<'_>>,
    ) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let target = self.write_target(&rel)?;
        let Some((parent, name)) = split(&target) else {
            return Err(HostError::msg(format!(
                "{}: not a file name",
                self.shown(&rel).display()
            )));
        };
        self.make_dirs(parent)?;
        let dir = self
            .open_rel(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| self.fail(parent, "cannot open directory", e))?;
        let label = self.label_of(&dir, name);
        let tmp = TempFile::create(&dir, name, &self.shown(parent))?;
        let shown_tmp = self.shown(parent).join(&tmp.name);
        let mut file = &tmp.file;
        file.write_all(content)
            .and_then(|()| tmp.file.sync_all())
            .map_err(|e| HostError::io(&shown_tmp, "cannot write", e))?;
        crate::apply::crash_point_in_step("write");
        tmp.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(&shown_tmp, "cannot set mode on", e))?;
        if let Err(e) = std::os::unix::fs::fchown(&tmp.file, Some(uid), Some(gid)) {
            // Unprivileged runs (tests, image builds as a user) cannot give
            // files away; that is only an error when the owner differs.
            let meta = tmp.file.metadata().ok();
            if meta.is_none_or(|m| m.uid() != uid || m.gid() != gid) {
                return Err(HostError::io(&shown_tmp, "cannot set owner of", e));
            }
        }
        if let Some(label) = label {
            // Labels are kept where the filesystem has them; overlayfs and
            // tmpfs without SELinux simply do not.
            let _ = xattr::FileExt::set_xattr(&tmp.file, SELINUX_XATTR, &label);
        }
        if let Some(check) = check {
            // Live: the real path. Confined: the temporary file through the
            // directory descriptor, so that no symlink is followed again.
            let checked = if self.confined {
                PathBuf::from(format!(
                    "/proc/{}/fd/{}/{}",
                    std::process::id(),
                    std::os::fd::AsRawFd::as_raw_fd(&dir),
                    tmp.name.to_string_lossy()
                ))
            } else {
                shown_tmp.clone()
            };
            check(&checked)?;
        }
        nix::fcntl::renameat(dir.as_fd(), tmp.name.as_os_str(), dir.as_fd(), name)
            .map_err(|e| HostError::io(&self.shown(&target), "cannot replace", io(e)))?;
        tmp.persisted();
        let _ = nix::unistd::fsync(dir.as_fd());
        Ok(())
    }

    /// The SELinux label of `name` in `dir`, if it has one.
    fn label_of(&self, dir: &OwnedFd, name: &OsStr) -> Option<Vec<u8>> {
        let mut flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        if self.confined {
            flags |= OFlag::O_NOFOLLOW;
        }
        let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).ok()?;
        xattr::FileExt::get_xattr(&File::from(fd), SELINUX_XATTR)
            .ok()
            .flatten()
    }

    /// Change only mode and owner.
    pub fn set_meta(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let shown = self.shown(&rel);
        let file = self.open_existing(&rel)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(&shown, "cannot set mode on", e))?;
        let meta = file
            .metadata()
            .map_err(|e| HostError::io(&shown, "cannot inspect", e))?;
        if (meta.uid() != uid || meta.gid() != gid)
            && let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        {
            return Err(HostError::io(&shown, "cannot set owner of", e));
        }
        Ok(())
    }

    /// Remove a file or symlink (a symlink itself, not what it points to).
    /// Nothing there is not an error.
    pub fn remove(&self, path: &Path) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let Some((parent, name)) = split(&rel) else {
            return Err(HostError::msg(format!(
                "{}: cannot remove the root",
                self.shown(&rel).display()
            )));
        };
        let Some(dir) = self.open_parent(parent, OFlag::O_RDONLY)? else {
            return Ok(());
        };
        match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                let _ = nix::unistd::fsync(dir.as_fd());
                Ok(())
            }
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(HostError::io(&self.shown(&rel), "cannot remove", io(e))),
        }
    }

    /// Remove a directory if it is empty; a missing or non-empty one is
    /// left alone (not an error).
    pub fn remove_empty_dir(&self, path: &Path) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let Some((parent, name)) = split(&rel) else {
            return Ok(());
        };
        let Some(dir) = self.open_parent(parent, OFlag::O_RDONLY)? else {
            return Ok(());
        };
        match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir) {
            Ok(()) => {
                let _ = nix::unistd::fsync(dir.as_fd());
                Ok(())
            }
            Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOTDIR) => Ok(()),
            Err(e) => Err(HostError::io(&self.shown(&rel), "cannot remove", io(e))),
        }
    }

    /// Make `path` a symlink to `target` (the text, not resolved), creating
    /// its directory; an existing symlink there is replaced atomically, an
    /// existing file is an error.
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<(), HostError> {
        let rel = self.rel(path)?;
        let shown = self.shown(&rel);
        let Some((parent, name)) = split(&rel) else {
            return Err(HostError::msg(format!(
                "{}: not a link name",
                shown.display()
            )));
        };
        let dir = self.make_dirs(parent)?;
        match nix::fcntl::readlinkat(dir.as_fd(), name) {
            Ok(existing) if Path::new(&existing) == target => return Ok(()),
            Ok(_) => {
                // Replace the link: a new one under a temporary name, renamed
                // over it.
                let tmp = temp_name(name);
                nix::unistd::symlinkat(target, dir.as_fd(), tmp.as_os_str())
                    .map_err(|e| HostError::io(&shown, "cannot create symlink", io(e)))?;
                if let Err(e) =
                    nix::fcntl::renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name)
                {
                    let _ = nix::unistd::unlinkat(
                        dir.as_fd(),
                        tmp.as_os_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                    return Err(HostError::io(&shown, "cannot replace", io(e)));
                }
            }
            Err(Errno::ENOENT) => {
                nix::unistd::symlinkat(target, dir.as_fd(), name)
                    .map_err(|e| HostError::io(&shown, "cannot create symlink", io(e)))?;
            }
            Err(Errno::EINVAL) => {
                return Err(HostError::io(
                    &shown,
                    "cannot create symlink",
                    io(Errno::EEXIST),
                ));
            }
            Err(e) => return Err(HostError::io(&shown, "cannot read link", io(e))),
        }
        if let Ok(sync) = self.open_rel(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            let _ = nix::unistd::fsync(sync.as_fd());
        }
        Ok(())
    }

    /// Open (create if missing, mode 0644) a file for reading and writing,
    /// inside the root: the apply lock.
    pub fn open_rw(&self, path: &Path) -> Result<File, HostError> {
        let rel = self.rel(path)?;
        if let Some((parent, _)) = split(&rel) {
            self.make_dirs(parent)?;
        }
        self.open_rel(&rel, OFlag::O_RDWR | OFlag::O_CREAT, 0o644)
            .map(File::from)
            .map_err(|e| self.fail(&rel, "cannot open", e))
    }

    /// Open an existing file for reading (inside the root); None when it
    /// does not exist. Creates nothing.
    pub fn open_existing_read(&self, path: &Path) -> Result<Option<File>, HostError> {
        let rel = self.rel(path)?;
        match self.open_rel(
            &rel,
            OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            0,
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e) if is_missing(e) => match self.blame(&rel) {
                Some(escape) => Err(escape),
                None => Ok(None),
            },
            Err(e) => Err(self.fail(&rel, "cannot open", e)),
        }
    }

    /// Remove the temporary files (`.NAME.timectl-XXXXXX`) that a killed
    /// write of `path` left next to it. Returns the host paths removed.
    pub fn remove_stale_temps(&self, path: &Path) -> Result<Vec<PathBuf>, HostError> {
        let rel = self.rel(path)?;
        let target = match self.write_target(&rel) {
            Ok(target) => target,
            // A path that cannot be resolved is reported by the plan.
            Err(_) => return Ok(Vec::new()),
        };
        let Some((parent, name)) = split(&target) else {
            return Ok(Vec::new());
        };
        self.remove_temps(parent, Some(name))
    }

    /// Remove every temporary file (`.NAME.timectl-XXXXXX`) in a directory.
    pub fn remove_stale_temps_in(&self, dir: &Path) -> Result<Vec<PathBuf>, HostError> {
        let rel = self.rel(dir)?;
        self.remove_temps(&rel, None)
    }

    fn remove_temps(&self, parent: &Path, name: Option<&OsStr>) -> Result<Vec<PathBuf>, HostError> {
        let dir = match self.open_rel(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(dir) => dir,
            Err(_) => return Ok(Vec::new()),
        };
        let is_temp = |entry: &OsStr| {
            let bytes = entry.as_bytes();
            let Some(rest) = bytes.strip_prefix(b".") else {
                return false;
            };
            if rest.len() < TEMP_INFIX.len() + 6 {
                return false;
            }
            let (stem, tail) = rest.split_at(rest.len() - TEMP_INFIX.len() - 6);
            tail.starts_with(TEMP_INFIX.as_bytes())
                && tail[TEMP_INFIX.len()..]
                    .iter()
                    .all(u8::is_ascii_alphanumeric)
                && name.is_none_or(|n| stem == n.as_bytes())
        };
        let mut listing = nix::dir::Dir::openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HostError::io(&self.shown(parent), "cannot list", io(e)))?;
        let stale: Vec<OsString> = listing
            .iter()
            .flatten()
            .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string())
            .filter(|entry| is_temp(entry))
            .collect();
        let mut removed = Vec::new();
        for entry_name in stale {
            nix::unistd::unlinkat(
                dir.as_fd(),
                entry_name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| {
                HostError::io(
                    &self.shown(&parent.join(&entry_name)),
                    "cannot remove",
                    io(e),
                )
            })?;
            removed.push(Path::new("/").join(parent).join(entry_name));
        }
        Ok(removed)
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

    fn db_text(&self, db: &Path) -> Result<String, HostError> {
        Ok(self
            .read(db)?
            .map(|s| String::from_utf8_lossy(&s.content).into_owned())
            .unwrap_or_default())
    }

    fn id_of(&self, db: &Path, name: &str, what: &str) -> Result<u32, HostError> {
        if name == "root" {
            return Ok(0);
        }
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let text = self.db_text(db)?;
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                Some((f.next()?, f.nth(1)?))
            })
            .find(|(n, _)| *n == name)
            .and_then(|(_, id)| id.parse().ok())
            .ok_or_else(|| {
                HostError::msg(format!(
                    "no {what} {name:?} in {}",
                    self.shown(&self.rel(db).unwrap_or_default()).display()
                ))
            })
    }

    fn name_of(&self, db: &Path, id: u32) -> String {
        let text = self.db_text(db).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                Some((f.next()?, f.nth(1)?))
            })
            .find(|(_, i)| i.parse() == Ok(id))
            .map_or_else(|| id.to_string(), |(n, _)| n.to_string())
    }
}

/// A relative path's directory and last name; None for the root itself or
/// a path that ends in `..`.
fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    let name = rel.file_name()?;
    if matches!(rel.components().next_back(), Some(Component::ParentDir)) {
        return None;
    }
    Some((rel.parent().unwrap_or(Path::new("")), name))
}

/// `.NAME.timectl-XXXXXX` with six random letters or digits.
fn temp_name(name: &OsStr) -> OsString {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bits = rand::random::<u64>();
    let suffix: String = (0..6)
        .map(|_| {
            let c = CHARS[(bits % CHARS.len() as u64) as usize];
            bits /= CHARS.len() as u64;
            char::from(c)
        })
        .collect();
    let mut out = OsString::from(".");
    out.push(name);
    out.push(TEMP_INFIX);
    out.push(suffix);
    out
}

/// A new temporary file in a directory, removed again unless persisted.
struct TempFile<'a> {
    dir: &'a OwnedFd,
    name: OsString,
    file: File,
    keep: std::cell::Cell<bool>,
}

impl<'a> TempFile<'a> {
    fn create(dir: &'a OwnedFd, target: &OsStr, shown_dir: &Path) -> Result<Self, HostError> {
        let mut last = Errno::EEXIST;
        for _ in 0..32 {
            let name = temp_name(target);
            match nix::fcntl::openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir,
                        name,
                        file: File::from(fd),
                        keep: std::cell::Cell::new(false),
                    });
                }
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(HostError::io(
            shown_dir,
            "cannot create a temporary file in",
            io(last),
        ))
    }

    fn persisted(&self) {
        self.keep.set(true);
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.keep.get() {
            let _ = nix::unistd::unlinkat(
                self.dir.as_fd(),
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
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

    #[test]
    fn confined_reads_follow_links_inside_and_name_links_that_leave() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/chrony")).unwrap();
        std::fs::write(root.join("etc/chrony/chrony.conf"), "inside\n").unwrap();
        // Absolute: re-rooted, like in a chroot.
        std::os::unix::fs::symlink("/etc/chrony/chrony.conf", root.join("etc/abs.conf")).unwrap();
        // `..` stops at the root: the same file.
        std::os::unix::fs::symlink(
            "../../../../etc/chrony/chrony.conf",
            root.join("etc/up.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("etc/out.conf"))
            .unwrap();
        let files = Files::new(root);
        for name in ["/etc/abs.conf", "/etc/up.conf"] {
            let state = files.read(Path::new(name)).unwrap().unwrap();
            assert_eq!(state.content, b"inside\n", "{name}");
        }
        let err = files.read(Path::new("/etc/out.conf")).unwrap_err();
        assert!(
            matches!(&err, HostError::OutsideRoot { link, .. } if link == Path::new("/etc/out.conf")),
            "{err}"
        );
        // Writing through it is refused as well, and nothing outside changes.
        let me = nix::unistd::getuid().as_raw();
        let group = nix::unistd::getgid().as_raw();
        assert!(
            files
                .write_atomic(Path::new("/etc/out.conf"), b"x", 0o644, me, group)
                .is_err()
        );
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"outside\n"
        );
        // A write through an in-root link replaces the file it points to.
        files
            .write_atomic(Path::new("/etc/abs.conf"), b"new\n", 0o644, me, group)
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("etc/chrony/chrony.conf")).unwrap(),
            b"new\n"
        );
        assert!(
            root.join("etc/abs.conf")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn confined_directories_and_links_stay_inside() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/systemd")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("etc/systemd/system")).unwrap();
        let files = Files::new(root);
        let link = Path::new("/etc/systemd/system/multi-user.target.wants/a.service");
        let err = files
            .symlink(Path::new("/usr/lib/systemd/system/a.service"), link)
            .unwrap_err();
        assert!(
            err.to_string().contains("/etc/systemd/system is a symlink"),
            "{err}"
        );
        assert!(files.list_dir(Path::new("/etc/systemd/system")).is_err());
        assert!(
            files
                .create_dir_all(Path::new("/etc/systemd/system/x"))
                .is_err()
        );
        assert!(files.remove(Path::new("/etc/systemd/system/y")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // Links are made and replaced inside the root.
        std::fs::remove_file(root.join("etc/systemd/system")).unwrap();
        files.symlink(Path::new("/one"), link).unwrap();
        files.symlink(Path::new("/two"), link).unwrap();
        assert_eq!(files.read_link(link).unwrap(), Some(PathBuf::from("/two")));
        files.remove(link).unwrap();
        assert_eq!(files.read_link(link).unwrap(), None);
    }

    #[test]
    fn live_writes_replace_a_link_as_before() {
        // Root `/`: paths resolve as on the running host, and a write
        // replaces a symlink at the path itself (today's behaviour).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), "old\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        let files = Files::new(Path::new("/"));
        assert!(!files.is_confined());
        let link = dir.path().join("link");
        assert_eq!(files.read(&link).unwrap().unwrap().content, b"old\n");
        let me = nix::unistd::getuid().as_raw();
        let group = nix::unistd::getgid().as_raw();
        files
            .write_atomic(&link, b"new\n", 0o644, me, group)
            .unwrap();
        assert!(link.symlink_metadata().unwrap().is_file());
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"old\n");
    }

    #[test]
    fn stale_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        for name in [
            ".a.conf.timectl-Ab12Cd",
            ".a.conf.timectl-zzzzzz",
            ".b.conf.timectl-Ab12Cd",
            ".a.conf.timectl-long-name",
            "a.conf",
        ] {
            std::fs::write(dir.path().join("etc").join(name), "x").unwrap();
        }
        let files = Files::new(dir.path());
        let mut removed = files.remove_stale_temps(Path::new("/etc/a.conf")).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                PathBuf::from("/etc/.a.conf.timectl-Ab12Cd"),
                PathBuf::from("/etc/.a.conf.timectl-zzzzzz")
            ]
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ".a.conf.timectl-long-name",
                ".b.conf.timectl-Ab12Cd",
                "a.conf"
            ]
        );
    }
}
