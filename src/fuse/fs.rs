//! The fuser `Filesystem`: a thin adapter. Paths and content come from the namespace,
//! inode numbers from `inodes`, attributes and lifetimes from `attr`, handles and the
//! passthrough rule from `handles`; this file only translates between them and fuser's
//! requests and replies.

use super::attr::{self, Owner, TtlPolicy};
use super::handles::{BackingShare, Handles, OpenMode};
use super::inodes::{child_path, parent_path, Inode, InodeKind, InodeTable, ROOT_INO};
use crate::error::Error;
use crate::namespace::{Content, DirEntry, Namespace};
use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock,
    ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use log::{debug, info, warn};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// readdir's d_ino for a name not looked up yet (libfuse's FUSE_UNKNOWN_INO): the real
/// number is only known once the content version is.
const UNKNOWN_INO: u64 = 0xffff_ffff;

/// The kernel's passthrough needs the backing file's filesystem to be stacked less deep
/// than this; 1 also lets this mount sit below an overlayfs.
const MAX_STACK_DEPTH: u32 = 1;

enum FileData {
    Bytes(Arc<[u8]>),
    /// A verified blob, opened at `open` (reads are preads on it).
    Blob {
        file: File,
        len: u64,
        path: PathBuf,
    },
}

struct OpenFile {
    ino: u64,
    data: FileData,
    /// Set for blobs opened while passthrough is on; taken back at release.
    mode: Mutex<Option<OpenMode<BackingId>>>,
}

struct OpenDir {
    /// The listing as of opendir, so that paging through it is consistent.
    entries: Vec<DirEntry>,
    parent_ino: u64,
}

pub struct RegistryFs {
    ns: Arc<Namespace>,
    inodes: InodeTable,
    files: Handles<OpenFile>,
    dirs: Handles<OpenDir>,
    backing: BackingShare<BackingId>,
    ttl: TtlPolicy,
    owner: Owner,
    want_passthrough: bool,
    /// Negotiated at init.
    passthrough: bool,
    passthrough_failure_logged: AtomicBool,
}

impl RegistryFs {
    pub fn new(
        ns: Arc<Namespace>,
        ttl: TtlPolicy,
        owner: Owner,
        want_passthrough: bool,
        started: SystemTime,
    ) -> RegistryFs {
        RegistryFs {
            ns,
            inodes: InodeTable::new(started),
            files: Handles::default(),
            dirs: Handles::default(),
            backing: BackingShare::default(),
            ttl,
            owner,
            want_passthrough,
            passthrough: false,
            passthrough_failure_logged: AtomicBool::new(false),
        }
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        // The kernel only uses numbers it has not forgotten; a miss is a stale handle.
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    fn reply_not_found(&self, reply: ReplyEntry) {
        match self.ttl.negative() {
            Some(ttl) => {
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &attr::negative_attr(), Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open_blob(
        &self,
        inode: &Inode,
        file: &crate::store::BlobFile,
        digest: &crate::digest::Digest,
        reply: ReplyOpen,
    ) {
        // Open first, then verify: the handle reads what was checked (blob files are
        // content-addressed and never rewritten in place by a registry).
        let opened = match File::open(&file.path) {
            Ok(f) => f,
            // Deleted since the lookup (a registry garbage collection): the path is gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info!("{}: {}: {e}", inode.path, file.path.display());
                return reply.error(Errno::ENOENT);
            }
            Err(e) => {
                warn!("{}: {}: {e}", inode.path, file.path.display());
                return reply.error(Errno::EIO);
            }
        };
        if let Err(e) = self.ns.verify_blob(file, digest) {
            warn!("{}: {e}", inode.path);
            return reply.error(Errno::EIO);
        }
        let mut flags = FopenFlags::FOPEN_NOFLUSH;
        let mode = if self.passthrough {
            let (mode, err) = self.backing.open(inode.ino, || reply.open_backing(&opened));
            if let Some(e) = err {
                self.log_passthrough_failure(&file.path, &e);
            }
            Some(mode)
        } else {
            None
        };
        let backing = match &mode {
            Some(OpenMode::Passthrough(b)) => Some(b.clone()),
            _ => None,
        };
        if backing.is_none() {
            // The inode's bytes never change (see inodes), so its page cache stays valid.
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        let fh = self.files.insert(OpenFile {
            ino: inode.ino,
            data: FileData::Blob {
                file: opened,
                len: file.len,
                path: file.path.clone(),
            },
            mode: Mutex::new(mode),
        });
        match backing {
            Some(b) => {
                debug!("open {} fh={fh}: passthrough", inode.path);
                reply.opened_passthrough(FileHandle(fh), flags, &b)
            }
            None => {
                debug!("open {} fh={fh}: daemon reads", inode.path);
                reply.opened(FileHandle(fh), flags)
            }
        }
    }

    fn log_passthrough_failure(&self, path: &Path, e: &std::io::Error) {
        // Once at warn (it usually holds for the whole mount), then at debug.
        if !self
            .passthrough_failure_logged
            .swap(true, Ordering::Relaxed)
        {
            warn!(
                "passthrough unavailable for {} ({e}); serving blob reads from the daemon",
                path.display()
            );
        } else {
            debug!("passthrough unavailable for {}: {e}", path.display());
        }
    }
}

/// Reads `size` bytes at `offset` of a file of verified length `len`.
fn read_file_at(file: &File, len: u64, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    if offset >= len {
        return Ok(Vec::new());
    }
    let want = (len - offset).min(u64::from(size)) as usize;
    let mut buf = vec![0u8; want];
    let mut done = 0;
    while done < want {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than when it was verified",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    &bytes[start..end]
}

/// ENOENT for "not there"; anything else is the store's fault: EIO, logged with the
/// message (it names the bad file).
fn errno_for(e: &Error, what: &str) -> Errno {
    if e.is_not_found() {
        Errno::ENOENT
    } else {
        warn!("{what}: {e}");
        Errno::EIO
    }
}

impl Filesystem for RegistryFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        // Lookups in one folder (a web server hitting blobs/) need not be serialized.
        if caps.contains(InitFlags::FUSE_PARALLEL_DIROPS) {
            let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        }
        self.passthrough = false;
        if !self.want_passthrough {
            info!("passthrough off (--no-passthrough): blob reads go through the daemon");
        } else if !caps.contains(InitFlags::FUSE_PASSTHROUGH) {
            info!("the kernel offers no FUSE passthrough (Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH); blob reads go through the daemon");
        } else if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(MAX_STACK_DEPTH).is_ok()
        {
            self.passthrough = true;
            info!("FUSE passthrough negotiated: blobs are read by the kernel");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = match self.inode(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if !parent.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        // Every namespace name is UTF-8.
        let Some(name) = name.to_str() else {
            return self.reply_not_found(reply);
        };
        let path = child_path(&parent.path, name);
        let found = self.ns.locate(&path).and_then(|location| {
            let node = self.ns.lookup_location(&location, &path)?;
            Ok((node, location.is_immutable()))
        });
        match found {
            Ok((node, immutable)) => {
                let inode = self.inodes.remember(&path, node, immutable, file_mtime);
                let ttl = self.ttl.for_inode(&inode);
                reply.entry_with_ttls(
                    &ttl.attr,
                    &ttl.entry,
                    &attr::attr(&inode, self.owner),
                    Generation(0),
                );
            }
            Err(e) if e.is_not_found() => self.reply_not_found(reply),
            Err(e) => reply.error(errno_for(&e, &path)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(inode) => reply.attr(
                &self.ttl.for_inode(&inode).attr,
                &attr::attr(&inode, self.owner),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match &inode.kind {
            InodeKind::Dir => reply.error(Errno::EISDIR),
            InodeKind::File(Content::Bytes(bytes)) => {
                let fh = self.files.insert(OpenFile {
                    ino: inode.ino,
                    data: FileData::Bytes(bytes.clone()),
                    mode: Mutex::new(None),
                });
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            InodeKind::File(Content::Blob { file, digest }) => {
                self.open_blob(&inode, file, digest, reply)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(handle) = self.files.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match &handle.data {
            FileData::Bytes(bytes) => reply.data(slice_at(bytes, offset, size)),
            FileData::Blob { file, len, path } => {
                debug!(
                    "daemon read ino={} fh={} offset={offset} size={size}",
                    handle.ino, fh.0
                );
                match read_file_at(file, *len, offset, size) {
                    Ok(buf) => reply.data(&buf),
                    Err(e) => {
                        warn!("{}: {e}", path.display());
                        reply.error(Errno::EIO)
                    }
                }
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(handle) = self.files.remove(fh.0) {
            let mode = handle.mode.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mode) = mode {
                self.backing.release(ino.0, mode);
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if !inode.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = match self.ns.list(&inode.path) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno_for(&e, &inode.path)),
        };
        let parent_ino = if inode.ino == ROOT_INO {
            ROOT_INO
        } else {
            self.inodes
                .ino_of_path(parent_path(&inode.path))
                .unwrap_or(UNKNOWN_INO)
        };
        let fh = self.dirs.insert(OpenDir {
            entries,
            parent_ino,
        });
        // A digest folder's listing can never change: let the kernel cache it.
        let flags = if inode.immutable {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.dirs.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let dots = [(".", ino.0), ("..", dir.parent_ino)];
        let total = dots.len() + dir.entries.len();
        for i in usize::try_from(offset).unwrap_or(usize::MAX)..total {
            let full = match i.checked_sub(dots.len()) {
                None => {
                    let (name, ino) = dots[i];
                    reply.add(INodeNo(ino), (i + 1) as u64, FileType::Directory, name)
                }
                Some(j) => {
                    let entry = &dir.entries[j];
                    let child = self
                        .inodes
                        .ino_of_path(&child_path(&inode.path, &entry.name))
                        .unwrap_or(UNKNOWN_INO);
                    let kind = if entry.is_dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    reply.add(INodeNo(child), (i + 1) as u64, kind, &entry.name)
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only asked without default_permissions; modes are 0444/0555 anyway.
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }

    // Extended attributes: ENOSYS, not ENODATA. After one ENOSYS the kernel stops asking
    // and answers "not supported" itself; ENODATA costs a round trip per call (made
    // `ls -l` 6x slower, see docs/fuse-performance.md).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    // Nothing is buffered: closing and syncing have nothing to do (FOPEN_NOFLUSH also
    // spares the round trip on close).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // No symlinks, locks are the kernel's, and the rest has no meaning here. Answered
    // explicitly so fuser's defaults do not log "not implemented" for each call.
    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in: &[u8],
        _out: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _ev: PollEvents,
        _fl: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        _s: u64,
        _e: u64,
        _t: i32,
        _p: u32,
        reply: ReplyLock,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        _s: u64,
        _e: u64,
        _t: i32,
        _p: u32,
        _sl: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    // Read-only: every change is EROFS. (The mount is MS_RDONLY too, so the VFS refuses
    // most of these before they get here.)
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _d: &[u8],
        _wf: WriteFlags,
        _f: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _i: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _l: u64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _io: INodeNo,
        _fo: FileHandle,
        _oo: u64,
        _l: u64,
        _f: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

/// A new file inode's time: the blob file's, or now for generated bytes (see
/// `InodeTable::remember`).
fn file_mtime(content: &Content) -> SystemTime {
    match content {
        Content::Blob { file, .. } => std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now()),
        Content::Bytes(_) => SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn slices() {
        let b = b"0123456789";
        assert_eq!(slice_at(b, 0, 4), b"0123");
        assert_eq!(slice_at(b, 8, 4), b"89");
        assert_eq!(slice_at(b, 10, 4), b"");
        assert_eq!(slice_at(b, u64::MAX, 4), b"");
        assert_eq!(slice_at(b, 3, u32::MAX), b"3456789");
    }

    #[test]
    fn file_reads() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello world").unwrap();
        assert_eq!(read_file_at(&f, 11, 6, 100).unwrap(), b"world");
        assert_eq!(read_file_at(&f, 11, 0, 5).unwrap(), b"hello");
        assert!(read_file_at(&f, 11, 11, 5).unwrap().is_empty());
        // The verified length bounds reads even if the file grew.
        f.write_all(b"!!!").unwrap();
        assert_eq!(read_file_at(&f, 11, 6, 100).unwrap(), b"world");
        // A file that shrank below its verified length is an error, not short data.
        f.set_len(4).unwrap();
        assert!(read_file_at(&f, 11, 0, 100).is_err());
    }
}
