//! File access confined to the store root.
//!
//! Names come from the store and from users; both are validated against the registry
//! grammar before they are joined into paths. Every path is then opened with Linux's
//! `openat2(RESOLVE_BENEATH)` relative to the root, so the kernel follows symlinks only
//! while they stay inside the store, in one system call (`canonicalize` costs one
//! `lstat` per path component, which dominated cold lookups).

use super::memo::{ReadMemo, Remembered, StoreRead};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `struct open_how` of linux/openat2.h (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A store root, canonicalised so that error messages show real paths.
#[derive(Debug)]
pub struct Root {
    pub dir: PathBuf,
    fd: OwnedFd,
    memo: ReadMemo,
}

impl Root {
    pub fn new(dir: &Path) -> Result<Root> {
        let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Root {
            dir,
            fd: file.into(),
            memo: ReadMemo::default(),
        })
    }

    /// Keeps what is read for `lifetime` (see [`super::memo`]); zero: not at all.
    pub fn remember_reads(&self, lifetime: Duration) {
        self.memo.keep_for(lifetime);
    }

    /// Forgets what was read (the store changed).
    pub fn forget_reads(&self) {
        self.memo.forget();
    }

    /// Opens `rel` below the root: None if it does not exist, an error if a symlink
    /// leads out of the store.
    fn open(&self, rel: &str, flags: libc::c_int) -> Result<Option<File>> {
        let path = self.dir.join(rel);
        let c_rel =
            CString::new(rel).map_err(|_| Error::invalid(&path, "name contains a NUL byte"))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        loop {
            // SAFETY: valid fd, NUL-terminated path, and a correctly sized open_how.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c_rel.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                // SAFETY: the kernel just returned this descriptor to us alone.
                return Ok(Some(File::from(unsafe {
                    OwnedFd::from_raw_fd(fd as libc::c_int)
                })));
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) => continue,
                Some(libc::ENOENT | libc::ENOTDIR) => return Ok(None),
                Some(libc::EXDEV) => {
                    return Err(Error::invalid(&path, "symlink leads outside the store"))
                }
                Some(libc::ELOOP) => {
                    return Err(Error::invalid(&path, "too many levels of symlinks"))
                }
                _ => return Err(Error::io(&path, err)),
            }
        }
    }

    /// Opens a file below the root for reading; None if it does not exist.
    pub fn open_read(&self, rel: &str) -> Result<Option<File>> {
        self.open(rel, libc::O_RDONLY | libc::O_NONBLOCK)
    }

    pub fn is_dir(&self, rel: &str) -> Result<bool> {
        self.memo.get_or(
            StoreRead::IsDir,
            rel,
            |r| match r {
                Remembered::IsDir(b) => Some(b),
                _ => None,
            },
            |b| Remembered::IsDir(*b),
            || Ok(self.open(rel, libc::O_PATH | libc::O_DIRECTORY)?.is_some()),
        )
    }

    /// The names in a folder (raw readdir order) and whether each is a folder, or None if
    /// it does not exist. Symlinked entries count only if they stay inside the store.
    pub fn read_dir(&self, rel: &str) -> Result<Option<Vec<(String, bool)>>> {
        let names = self.memo.get_or(
            StoreRead::Dir,
            rel,
            |r| match r {
                Remembered::Dir(names) => Some(names),
                _ => None,
            },
            |names| Remembered::Dir(names.clone()),
            || Ok(self.read_dir_now(rel)?.map(Arc::from)),
        )?;
        Ok(names.map(|names| names.to_vec()))
    }

    fn read_dir_now(&self, rel: &str) -> Result<Option<Vec<(String, bool)>>> {
        if !self.is_dir(rel)? {
            return Ok(None);
        }
        // Listed through a descriptor opened beneath the root: a folder swapped for a
        // symlink after the check could otherwise list names outside the store.
        let Some(folder) = self.open(rel, libc::O_RDONLY | libc::O_DIRECTORY)? else {
            return Ok(None);
        };
        let dir = self.dir.join(rel);
        let mut out = Vec::new();
        for (raw, d_type) in folder_entries(&folder, &dir)? {
            // Names that are not UTF-8 cannot be registry names; skip them.
            let Ok(name) = String::from_utf8(raw) else {
                log::warn!("{}: skipping a name that is not UTF-8", dir.display());
                continue;
            };
            let is_dir = match d_type {
                libc::DT_DIR => true,
                // A symlink counts as what it leads to, if that is inside the store; so
                // does a name whose type the filesystem does not report.
                libc::DT_LNK | libc::DT_UNKNOWN => match self.is_dir(&format!("{rel}/{name}")) {
                    Ok(is_dir) => is_dir,
                    Err(e) => {
                        log::warn!("{e}");
                        continue;
                    }
                },
                _ => false,
            };
            out.push((name, is_dir));
        }
        Ok(Some(out))
    }

    /// A regular file's path, length and modification time, or None if missing (or not
    /// a regular file).
    pub fn regular_file(&self, rel: &str) -> Result<Option<FileMeta>> {
        self.memo.get_or(
            StoreRead::RegularFile,
            rel,
            |r| match r {
                Remembered::RegularFile(meta) => Some(meta),
                _ => None,
            },
            |meta| Remembered::RegularFile(meta.clone()),
            || self.regular_file_now(rel),
        )
    }

    fn regular_file_now(&self, rel: &str) -> Result<Option<FileMeta>> {
        let Some(file) = self.open(rel, libc::O_PATH)? else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        Ok(meta.is_file().then(|| FileMeta {
            len: meta.len(),
            mtime: mtime_of(&meta),
            path,
        }))
    }

    /// A folder's modification time, or None if it is not there (or not a folder).
    pub fn dir_mtime(&self, rel: &str) -> Result<Option<SystemTime>> {
        self.memo.get_or(
            StoreRead::DirTime,
            rel,
            |r| match r {
                Remembered::DirTime(t) => Some(t),
                _ => None,
            },
            |t| Remembered::DirTime(*t),
            || self.dir_mtime_now(rel),
        )
    }

    fn dir_mtime_now(&self, rel: &str) -> Result<Option<SystemTime>> {
        let Some(dir) = self.open(rel, libc::O_PATH | libc::O_DIRECTORY)? else {
            return Ok(None);
        };
        let meta = dir
            .metadata()
            .map_err(|e| Error::io(self.dir.join(rel), e))?;
        Ok(Some(mtime_of(&meta)))
    }

    /// Reads a small regular file whole, refusing more than `limit` bytes.
    pub fn read_limited(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.read_stamped(rel, limit)?.map(|(bytes, _)| bytes))
    }

    /// [`Root::read_limited`], with the file's modification time from the same
    /// descriptor.
    pub fn read_stamped(&self, rel: &str, limit: u64) -> Result<Option<(Vec<u8>, SystemTime)>> {
        let kept = self.memo.get_or(
            StoreRead::Stamped(limit),
            rel,
            |r| match r {
                Remembered::Stamped(read) => Some(read),
                _ => None,
            },
            |read| Remembered::Stamped(read.clone()),
            || {
                let read = self.read_stamped_now(rel, limit)?;
                Ok(read.map(|(bytes, mtime)| (Arc::<[u8]>::from(bytes), mtime)))
            },
        )?;
        Ok(kept.map(|(bytes, mtime)| (bytes.to_vec(), mtime)))
    }

    fn read_stamped_now(&self, rel: &str, limit: u64) -> Result<Option<(Vec<u8>, SystemTime)>> {
        Ok(match self.read_if_changed(rel, limit, None)? {
            Some(IfChanged::Changed { bytes, mtime, .. }) => Some((bytes, mtime)),
            // Nothing is known, so nothing is unchanged.
            Some(IfChanged::Unchanged) | None => None,
        })
    }

    /// Reads a small regular file whole unless its identity is still `known` (one
    /// `open` and `fstat` then); None if it does not exist. Identity and bytes come
    /// from the same descriptor. Never kept by the read memo: this is how a cache
    /// above it stays fresh.
    pub fn read_if_changed(
        &self,
        rel: &str,
        limit: u64,
        known: Option<&FileIdentity>,
    ) -> Result<Option<IfChanged>> {
        let path = self.dir.join(rel);
        let Some(file) = self.open_read(rel)? else {
            return Ok(None);
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let identity = FileIdentity::of(&meta);
        if known == Some(&identity) {
            return Ok(Some(IfChanged::Unchanged));
        }
        if meta.len() > limit {
            return Err(Error::invalid(
                &path,
                format!("{} bytes is more than the {limit}-byte limit", meta.len()),
            ));
        }
        let bytes = read_limited_from(file, &path, limit, meta.len())?;
        Ok(Some(IfChanged::Changed {
            bytes,
            mtime: mtime_of(&meta),
            identity,
        }))
    }

    /// Reads a document (manifest, config) whole through the root and checks that it
    /// hashes to `digest`: the bytes checked are the bytes returned.
    pub fn read_verified(
        &self,
        rel: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<(FileMeta, Vec<u8>)>> {
        let Some((bytes, mtime)) = self.read_stamped(rel, limit)? else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        check_digest(&path, digest, &bytes)?;
        let meta = FileMeta {
            path,
            len: bytes.len() as u64,
            mtime,
        };
        Ok(Some((meta, bytes)))
    }

    /// Reads a link file and parses its content as a digest, exactly (no trimming).
    ///
    /// registry 2.8.2 rewrites link files in place on every push (truncate, then write),
    /// so a reader can see an empty or half-written link for a moment. Content that is
    /// empty or the start of a digest is read again after short pauses (127 ms in all,
    /// enough for a writer descheduled on a busy machine)
    /// before it counts as bad; anything else is bad at once. The link's modification
    /// time comes with it (when it was last written: a push).
    pub fn read_link(&self, rel: &str) -> Result<Option<(Digest, SystemTime)>> {
        self.memo.get_or(
            StoreRead::Link,
            rel,
            |r| match r {
                Remembered::Link(link) => Some(link),
                _ => None,
            },
            |link| Remembered::Link(link.clone()),
            || self.read_link_with_pauses(rel, &[1, 2, 4, 8, 16, 32, 64]),
        )
    }

    fn read_link_with_pauses(
        &self,
        rel: &str,
        pauses_ms: &[u64],
    ) -> Result<Option<(Digest, SystemTime)>> {
        let path = self.dir.join(rel);
        let mut attempt = 0;
        loop {
            let Some((bytes, mtime)) = self.read_stamped_now(rel, 1024)? else {
                return Ok(None);
            };
            match parse_link(&path, &bytes) {
                Ok(digest) => return Ok(Some((digest, mtime))),
                Err(e)
                    if attempt < pauses_ms.len()
                        && std::str::from_utf8(&bytes).is_ok_and(may_be_partial_digest) =>
                {
                    log::debug!("{e}; reading again (a push may be rewriting it)");
                    std::thread::sleep(std::time::Duration::from_millis(pauses_ms[attempt]));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A link file's content (read from `path`) as a digest, exactly (no trimming).
pub fn parse_link(path: &Path, bytes: &[u8]) -> Result<Digest> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::invalid(path, "link is not UTF-8"))?;
    Digest::parse(text).map_err(|e| Error::invalid(path, format!("bad link: {e}")))
}

/// A file's identity on disk: while it is unchanged, so is the content (a rewrite in
/// place changes the times, a replacement the inode).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileIdentity {
    pub fn of(meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// [`Root::read_if_changed`]'s answer.
pub enum IfChanged {
    Unchanged,
    Changed {
        bytes: Vec<u8>,
        mtime: SystemTime,
        identity: FileIdentity,
    },
}

/// A regular file of the store, as seen when it was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub path: PathBuf,
    pub len: u64,
    pub mtime: SystemTime,
}

/// A file's modification time with nanoseconds (the epoch if the filesystem has none).
fn mtime_of(meta: &std::fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whether `text` could be a digest caught mid-write: empty, or a prefix of
/// `sha256:<64 lower-case hex>` (what distribution writes).
fn may_be_partial_digest(text: &str) -> bool {
    const PREFIX: &str = "sha256:";
    let n = text.len().min(PREFIX.len());
    text.len() < PREFIX.len() + 64
        && text[..n] == PREFIX[..n]
        && text
            .bytes()
            .skip(PREFIX.len())
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads at most `limit` bytes from an open file (it can grow after the size check).
/// `size` is the length `fstat` gave. The buffer has room for one byte more, so a
/// first `read` that returns exactly `size` bytes stopped short of that room: the
/// file ended there, and no second `read` is needed to see the end. Anything else (a
/// file that grew or shrank since `fstat`) is read on to its end.
fn read_limited_from(mut file: File, path: &Path, limit: u64, size: u64) -> Result<Vec<u8>> {
    let room = usize::try_from(size.min(limit) + 1).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; room];
    let first = loop {
        match file.read(&mut bytes) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    };
    bytes.truncate(first);
    if first as u64 != size || first == room {
        let rest = (limit + 1).saturating_sub(first as u64);
        file.take(rest)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
    }
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            path,
            format!("more than the {limit}-byte limit"),
        ));
    }
    Ok(bytes)
}

/// The names in the open folder `folder` (read from `dir`) and their `d_type`, but `.`
/// and `..`, read with `getdents64`: a `DIR` stream (fdopendir) would add an `fstat`,
/// two `fcntl`s and a rewind to every folder a walk lists.
fn folder_entries(folder: &File, dir: &Path) -> Result<Vec<(Vec<u8>, u8)>> {
    // linux_dirent64: d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1), d_name.
    const NAME_AT: usize = 19;
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: valid fd; the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                folder.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io(dir, err));
        }
        if n == 0 {
            return Ok(out);
        }
        let mut records = &buf[..usize::try_from(n).unwrap_or(0)];
        while records.len() > NAME_AT {
            let len = usize::from(u16::from_ne_bytes([records[16], records[17]]));
            if len <= NAME_AT || len > records.len() {
                return Err(Error::invalid(
                    dir,
                    "the kernel's folder listing is malformed",
                ));
            }
            let name = &records[NAME_AT..len];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                out.push((name.to_vec(), records[18]));
            }
            records = &records[len..];
        }
    }
}

/// Checks that document bytes read from `path` hash to `digest`.
pub fn check_digest(path: &Path, digest: &Digest, bytes: &[u8]) -> Result<()> {
    if digest.matches(bytes) {
        return Ok(());
    }
    Err(Error::invalid(
        path,
        format!(
            "content does not hash to {digest} (found {})",
            Digest::of(bytes)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_digests_are_recognised() {
        for partial in ["", "s", "sha256", "sha256:", "sha256:0123abc"] {
            assert!(may_be_partial_digest(partial), "{partial:?}");
        }
        let full = format!("sha256:{}", "a".repeat(64));
        for bad in [
            full.as_str(),
            "sha512:",
            "sha256:X",
            "sha256:abc\n",
            "garbage",
        ] {
            assert!(!may_be_partial_digest(bad), "{bad:?}");
        }
    }

    /// A file that grew or shrank between `fstat` and the read is read to its end (the
    /// one-`read` shortcut holds only for the size `fstat` gave), within the limit.
    #[test]
    fn a_file_whose_size_changed_since_fstat_is_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        let read = |claimed: u64, limit: u64| {
            let file = File::open(&path).expect("open");
            read_limited_from(file, &path, limit, claimed)
        };
        for claimed in [0, 5, 9, 10, 11, 20] {
            assert_eq!(read(claimed, 64).expect("read"), b"0123456789", "{claimed}");
        }
        assert!(read(5, 8).is_err(), "grew past the limit");
        assert_eq!(read(10, 10).expect("at the limit"), b"0123456789");
    }

    /// A folder is listed through the descriptor opened beneath the root; a symlink
    /// counts as what it leads to inside the store, and one leading out is skipped.
    #[test]
    fn folders_are_listed_beneath_the_root() {
        let store = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let real = store.path().join("real");
        std::fs::create_dir_all(real.join("a")).expect("mkdir");
        std::fs::write(real.join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("a", real.join("in")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), real.join("up")).expect("symlink");
        std::os::unix::fs::symlink("real", store.path().join("alias")).expect("symlink");
        let root = Root::new(store.path()).expect("root");
        let list = |rel: &str| {
            root.read_dir_now(rel).map(|names| {
                names.map(|mut names| {
                    names.sort();
                    names
                })
            })
        };
        let want = vec![
            ("a".to_string(), true),
            ("f".to_string(), false),
            ("in".to_string(), true),
        ];
        assert_eq!(list("real").expect("listed"), Some(want.clone()));
        assert_eq!(list("alias").expect("listed"), Some(want));
        assert!(list("real/up").is_err(), "a folder outside the store");
        assert_eq!(list("real/f").expect("a file"), None);
        assert_eq!(list("missing").expect("missing"), None);
    }

    #[test]
    fn a_link_rewritten_during_a_read_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link");
        std::fs::write(&link, "").expect("write");
        let root = Root::new(dir.path()).expect("root");
        let digest = format!("sha256:{}", "b".repeat(64));
        let writer = {
            let (link, digest) = (link.clone(), digest.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                std::fs::write(&link, digest).expect("write");
            })
        };
        // Generous pauses: the writer thread may be scheduled late on a busy machine.
        let read = root
            .read_link_with_pauses("link", &[100, 200, 400, 800, 1600])
            .expect("read again until whole");
        writer.join().expect("writer");
        let (read, mtime) = read.expect("a link");
        assert_eq!(read.to_string(), digest);
        let written = std::fs::metadata(&link).and_then(|m| m.modified());
        assert_eq!(
            Some(mtime),
            written.ok(),
            "the time of the write that was read"
        );
        std::fs::write(&link, "garbage").expect("write");
        assert!(root.read_link("link").is_err(), "garbage is bad at once");
    }
}
