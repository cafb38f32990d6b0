//! Store changes from fanotify: one group, one mark on the store's whole filesystem, so
//! the cost does not grow with the number of repositories (an inotify watch per folder
//! would need hundreds of thousands of watches and a walk to set them up).
//!
//! Each event names the folder it happened in by file handle, plus the entry's name.
//! The handle is turned into a path with `open_by_handle_at` and `/proc/self/fd`
//! (remembered in a bounded cache), events outside the store are dropped, and the rest
//! go through [`mapping::changes_for`].
//!
//! Events are read some time after they happen, so a folder may be gone by then and its
//! handle stale (ESTALE). Those events are dropped, which loses nothing: a folder can
//! only go away through an unlink or a rename, which is itself an event in the folder's
//! parent. Follow the parents up from any lost event: the first folder still there holds
//! the event that removed (or moved) the top of the lost subtree, and what that event
//! maps to covers every path below it (see `mapping.rs`). If that chain leaves the store,
//! the store folder itself went away, which is handled below as [`StoreChange::Everything`].
//! The same goes for a folder renamed before its events are read: they resolve to the new
//! path, but the rename's own MOVED_FROM event maps the old place.

use super::mapping::changes_for;
use super::{doing, syscall_error, wait_readable, Batch, Layout, StoreChange};
use crate::cache::ByteLru;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long after the first change of a batch the batch is handed to the sink.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Folder handle -> path entries remembered; enough for the folders being written to.
/// Bytes of folder paths remembered by file handle (about 16k folders).
pub const FOLDER_PATH_CACHE_BYTES: usize = 4 << 20;
/// Reads per wake-up before a due batch is delivered, so a busy filesystem (the mark
/// sees all of it) cannot hold a batch back.
const READS_PER_WAKE: usize = 16;
/// `FANOTIFY_METADATA_VERSION` of linux/fanotify.h (not in the libc crate).
const METADATA_VERSION: u8 = 3;
/// What a folder's change looks like: entries created, removed, renamed in or out,
/// written (links are rewritten in place) or with new attributes or times. Self events
/// (`FAN_DELETE_SELF`, `FAN_MOVE_SELF`) add nothing: under a filesystem mark every
/// removal or rename is also reported in the parent folder, with a name.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

/// Filesystems where other machines' writes raise no local events.
const NETWORK_FILESYSTEMS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x517b, "SMB"),
    (0xff53_4d42, "CIFS"),
    (0xfe53_4d42, "SMB2"),
    (0x6573_5546, "FUSE"),
    (0x00c3_6400, "Ceph"),
    (0x0102_1997, "9p"),
    (0x5346_414f, "AFS"),
    (0x6b41_4653, "kAFS"),
    (0x7375_7245, "Coda"),
    (0x0116_1970, "GFS2"),
    (0x7461_636f, "OCFS2"),
    (0x0bd0_0bd0, "Lustre"),
    (0x4750_4653, "GPFS"),
];

/// Why fanotify cannot see every change of the store in `dir`, if it cannot.
pub(super) fn why_not(dir: &Path, layout: Layout) -> Option<String> {
    if layout == Layout::Remote {
        return Some(
            "the store is remote (S3): nothing on this machine changes with it".to_string(),
        );
    }
    match filesystem_magic(dir) {
        Ok(magic) => {
            if let Some(name) = network_filesystem(magic) {
                return Some(format!(
                    "{} is on {name}, where changes made on other machines raise no events",
                    dir.display()
                ));
            }
        }
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    }
    // A filesystem mark covers one filesystem; repositories mounted from another one
    // would go unseen.
    if layout == Layout::Distribution {
        let repositories = dir.join("repositories");
        if let (Ok(top), Ok(repos)) = (std::fs::metadata(dir), std::fs::metadata(&repositories)) {
            if top.dev() != repos.dev() {
                return Some(format!(
                    "{} is another filesystem than {}",
                    repositories.display(),
                    dir.display()
                ));
            }
        }
    }
    None
}

fn network_filesystem(magic: u32) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

fn filesystem_magic(dir: &Path) -> io::Result<u32> {
    let c_dir = c_path(dir)?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and a live statfs buffer.
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut stat) } < 0 {
        return Err(syscall_error("statfs"));
    }
    // The magic numbers are 32-bit; `f_type` is a signed word on some platforms.
    Ok(stat.f_type as u32)
}

/// The fanotify group of one store, and what turns its events into changes.
pub(super) struct Listener {
    fanotify: OwnedFd,
    /// The store folder, opened: the mount `open_by_handle_at` resolves handles in.
    mount: OwnedFd,
    /// Where the store is now (it follows the store folder if an ancestor is renamed).
    store: PathBuf,
    /// The store folder's own file handle, to find it again after such a rename.
    store_handle: Vec<u8>,
    layout: Layout,
    /// Folder handle -> its path, or None if the folder is gone.
    paths: ByteLru<Vec<u8>, Option<PathBuf>>,
}

/// One event read from the group.
#[derive(Debug, PartialEq, Eq)]
struct Event<'a> {
    mask: u64,
    /// Always FAN_NOFD for groups that report file handles.
    fd: i32,
    /// The folder's `struct file_handle` (type and bytes), if the event has one.
    dir: Option<&'a [u8]>,
    /// The entry's name; empty for an event on the folder itself.
    name: &'a [u8],
}

impl Listener {
    /// Creates the group and marks the filesystem holding `store` (a canonical path), then
    /// checks that the store folder's own handle leads back to it: if it does not (no
    /// CAP_DAC_READ_SEARCH, a filesystem without file handles), no event could be placed.
    pub(super) fn new(store: &Path, layout: Layout) -> io::Result<Listener> {
        // SAFETY: plain system call; the descriptor is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_REPORT_DFID_NAME
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK,
                libc::O_RDONLY as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(syscall_error("fanotify_init"));
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        let fanotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_store = c_path(store)?;
        // SAFETY: valid group descriptor and NUL-terminated path.
        let marked = unsafe {
            libc::fanotify_mark(
                fanotify.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                MASK,
                libc::AT_FDCWD,
                c_store.as_ptr(),
            )
        };
        if marked < 0 {
            return Err(syscall_error("fanotify_mark"));
        }
        let mount: OwnedFd = std::fs::File::open(store)
            .map_err(|e| doing("open", e))?
            .into();
        let store_handle = own_handle(&c_store)?;
        match open_handle(&mount, &store_handle)? {
            Some(path) if path == store => {}
            other => {
                return Err(io::Error::other(format!(
                    "the folder's file handle leads to {other:?}, not to the folder"
                )))
            }
        }
        Ok(Listener {
            fanotify,
            mount,
            store: store.to_path_buf(),
            store_handle,
            layout,
            paths: ByteLru::new(FOLDER_PATH_CACHE_BYTES),
        })
    }

    /// Delivers batches of changes until `wake` becomes readable. If the group stops
    /// working, says [`StoreChange::Everything`] and polls every `fallback` instead.
    pub(super) fn run(
        mut self,
        wake: &OwnedFd,
        fallback: Duration,
        sink: &dyn Fn(Vec<StoreChange>),
    ) {
        match self.listen(wake, sink) {
            Ok(()) => {}
            Err(e) => {
                let then = if fallback.is_zero() {
                    "no more changes will be reported (polling is disabled)".to_string()
                } else {
                    format!("polling every {fallback:?} instead")
                };
                log::error!("watching {}: {e}; {then}", self.store.display());
                sink(vec![StoreChange::Everything]);
                super::poll_loop(wake, fallback, sink);
            }
        }
    }

    fn listen(&mut self, wake: &OwnedFd, sink: &dyn Fn(Vec<StoreChange>)) -> io::Result<()> {
        // u64s: the kernel writes 8-byte aligned records (the parser copes either way).
        let mut buf = vec![0u64; 8 * 1024];
        let mut batch = Batch::default();
        let mut due: Option<Instant> = None;
        loop {
            let ready = wait_readable(&[wake.as_raw_fd(), self.fanotify.as_raw_fd()], due)?;
            if ready[0] {
                return Ok(());
            }
            if ready[1] {
                for _ in 0..READS_PER_WAKE {
                    if !self.read_events(&mut buf, &mut batch)? {
                        break;
                    }
                }
                if due.is_none() && !batch.is_empty() {
                    due = Some(Instant::now() + BATCH_WINDOW);
                }
            }
            if due.is_some_and(|due| Instant::now() >= due) {
                sink(batch.take());
                due = None;
            }
        }
    }

    /// Reads what is queued into `batch`; false once the queue is empty.
    fn read_events(&mut self, buf: &mut [u64], batch: &mut Batch) -> io::Result<bool> {
        let len = std::mem::size_of_val(buf);
        // SAFETY: reads at most `len` bytes into the live buffer.
        let n = unsafe { libc::read(self.fanotify.as_raw_fd(), buf.as_mut_ptr().cast(), len) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(false),
                _ => Err(doing("reading fanotify events", err)),
            };
        }
        // SAFETY: the kernel wrote `n` initialised bytes at the start of the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        for event in parse_events(bytes)? {
            if event.fd >= 0 {
                // Never sent to groups reporting file handles, but never leak one.
                // SAFETY: the kernel gave this descriptor to us alone.
                drop(unsafe { OwnedFd::from_raw_fd(event.fd) });
            }
            batch.extend(self.changes(&event));
        }
        Ok(n > 0)
    }

    fn changes(&mut self, event: &Event<'_>) -> Vec<StoreChange> {
        if event.mask & libc::FAN_Q_OVERFLOW != 0 {
            log::info!(
                "watching {}: fanotify queue overflowed",
                self.store.display()
            );
            return vec![StoreChange::Everything];
        }
        let Some(handle) = event.dir else {
            log::debug!("fanotify event {:#x} without a folder", event.mask);
            return vec![StoreChange::Everything];
        };
        let dir = match self.folder_path(handle) {
            Ok(Some(dir)) => dir,
            // Gone already: see the module documentation.
            Ok(None) => return Vec::new(),
            Err(e) => {
                log::warn!("watching {}: {e}", self.store.display());
                return vec![StoreChange::Everything];
            }
        };
        let renamed_or_removed_dir = event.mask & libc::FAN_ONDIR != 0
            && event.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_DELETE) != 0;
        if renamed_or_removed_dir {
            if event.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
                // Every remembered path at or below the moved folder is out of date.
                self.paths.clear();
            }
            let entry = dir.join(OsStr::from_bytes(event.name));
            if self.store.starts_with(&entry) {
                self.find_store_again();
                return vec![StoreChange::Everything];
            }
        }
        match self.relative(&dir, event.name) {
            Some((rel_dir, name)) => changes_for(self.layout, &rel_dir, &name),
            None => Vec::new(),
        }
    }

    /// The folder a handle names, remembered.
    fn folder_path(&mut self, handle: &[u8]) -> io::Result<Option<PathBuf>> {
        if let Some(path) = self.paths.get(&handle.to_vec()) {
            return Ok(path);
        }
        let path = open_handle(&self.mount, handle)?;
        let bytes = 64 + handle.len() + path.as_ref().map_or(0, |p| p.as_os_str().len());
        self.paths.put(handle.to_vec(), path.clone(), bytes);
        Ok(path)
    }

    /// After the store folder or one above it was renamed or removed.
    fn find_store_again(&mut self) {
        match open_handle(&self.mount, &self.store_handle) {
            Ok(Some(path)) if path == self.store => {}
            Ok(Some(path)) => {
                log::warn!(
                    "store folder {} is now {}; watching it there",
                    self.store.display(),
                    path.display()
                );
                self.store = path;
            }
            Ok(None) => log::warn!("store folder {} was removed", self.store.display()),
            Err(e) => log::warn!("store folder {}: {e}", self.store.display()),
        }
    }

    /// The event's folder relative to the store, and the entry's name; for an event on a
    /// folder itself (no name, or "."), that folder's parent and the folder's name.
    /// None outside the store and for names that are not UTF-8 (the store skips those).
    fn relative(&self, dir: &Path, name: &[u8]) -> Option<(String, String)> {
        let (dir, name) = if name.is_empty() || name == b"." {
            (dir.parent()?, dir.file_name()?.as_bytes())
        } else {
            (dir, name)
        };
        let rel = dir.strip_prefix(&self.store).ok()?;
        let rel = rel.to_str()?.to_string();
        let name = std::str::from_utf8(name).ok()?.to_string();
        Some((rel, name))
    }
}

/// Splits what one read returned into events.
fn parse_events(bytes: &[u8]) -> io::Result<Vec<Event<'_>>> {
    let bad = |what: &str| io::Error::other(format!("malformed fanotify event: {what}"));
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
        // metadata_len u16, mask u64, fd s32, pid s32.
        let event_len = read_u32(rest, 0).ok_or_else(|| bad("short header"))? as usize;
        let metadata_len = read_u16(rest, 6).ok_or_else(|| bad("short header"))? as usize;
        if rest[4] != METADATA_VERSION {
            return Err(bad(&format!(
                "version {} (expected {METADATA_VERSION})",
                rest[4]
            )));
        }
        if event_len > rest.len() || metadata_len < 24 || metadata_len > event_len {
            return Err(bad("lengths"));
        }
        let mask = read_u64(rest, 8).ok_or_else(|| bad("short header"))?;
        let fd = read_u32(rest, 16).ok_or_else(|| bad("short header"))? as i32;
        let mut event = Event {
            mask,
            fd,
            dir: None,
            name: &[],
        };
        let mut info = &rest[metadata_len..event_len];
        while !info.is_empty() {
            // struct fanotify_event_info_header: info_type u8, pad u8, len u16; then
            // fsid (8 bytes), struct file_handle, and for *_NAME records the name.
            let info_type = info[0];
            let info_len = read_u16(info, 2).ok_or_else(|| bad("short info"))? as usize;
            if info_len < 4 || info_len > info.len() {
                return Err(bad("info length"));
            }
            let record = &info[..info_len];
            info = &info[info_len..];
            let with_name = match info_type {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME => true,
                libc::FAN_EVENT_INFO_TYPE_DFID => false,
                _ => continue,
            };
            if event.dir.is_some() {
                continue;
            }
            let handle_bytes = read_u32(record, 12).ok_or_else(|| bad("short handle"))? as usize;
            let handle_end = 20 + handle_bytes;
            if handle_end > record.len() {
                return Err(bad("handle length"));
            }
            event.dir = Some(&record[12..handle_end]);
            if with_name {
                let name = &record[handle_end..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                event.name = &name[..end];
            }
        }
        events.push(event);
        rest = &rest[event_len..];
    }
    Ok(events)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The `struct file_handle` (type and bytes) of a path.
fn own_handle(path: &CString) -> io::Result<Vec<u8>> {
    const HEADER: usize = 8;
    let max = libc::MAX_HANDLE_SZ as usize;
    // u32s: struct file_handle is 4-byte aligned.
    let mut words = vec![0u32; (HEADER + max).div_ceil(4)];
    words[0] = max as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: the buffer holds a file_handle header announcing `max` bytes, and has room
    // for them; the path is NUL-terminated.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            path.as_ptr(),
            words.as_mut_ptr().cast(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(syscall_error("name_to_handle_at"));
    }
    let len = HEADER + (words[0] as usize).min(max);
    // SAFETY: `len` bytes lie within `words`.
    let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) };
    Ok(bytes.to_vec())
}

/// The path of the folder a `struct file_handle` names, or None if it is gone.
fn open_handle(mount: &OwnedFd, handle: &[u8]) -> io::Result<Option<PathBuf>> {
    // u32s: struct file_handle is 4-byte aligned, the event buffer need not be.
    let mut words = vec![0u32; handle.len().div_ceil(4)];
    // SAFETY: `words` has room for `handle.len()` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(handle.as_ptr(), words.as_mut_ptr().cast(), handle.len())
    };
    // SAFETY: a live buffer holding a whole file_handle; the kernel checks its lengths.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            words.as_mut_ptr().cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ESTALE | libc::ENOENT) => Ok(None),
            _ => Err(doing("open_by_handle_at", err)),
        };
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let path = std::fs::read_link(&link).map_err(|e| doing(&format!("readlink {link}"), e))?;
    // Removed while still open somewhere: its events are covered by the removal's.
    if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Ok(None);
    }
    Ok(Some(path))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_recognised() {
        assert_eq!(network_filesystem(0x6969), Some("NFS"));
        assert_eq!(network_filesystem(0xff53_4d42), Some("CIFS"));
        assert_eq!(network_filesystem(0x6573_5546), Some("FUSE"));
        assert_eq!(network_filesystem(0xef53), None, "ext4");
        assert_eq!(network_filesystem(0x0102_1994), None, "tmpfs");
    }

    /// One event as the kernel lays it out: metadata, then a DFID_NAME record.
    fn event_bytes(mask: u64, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut record = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        record.extend_from_slice(&[7; 8]); // fsid
        record.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        record.extend_from_slice(&1i32.to_ne_bytes()); // handle type
        record.extend_from_slice(handle);
        record.extend_from_slice(name);
        record.push(0);
        while record.len() % 4 != 0 {
            record.push(0);
        }
        let record_len = record.len() as u16;
        record[2..4].copy_from_slice(&record_len.to_ne_bytes());
        let mut out = Vec::new();
        out.extend_from_slice(&((24 + record.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&[METADATA_VERSION, 0]);
        out.extend_from_slice(&24u16.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        out.extend_from_slice(&0i32.to_ne_bytes());
        out.extend_from_slice(&record);
        out
    }

    #[test]
    fn events_are_parsed_with_their_folder_and_name() {
        let mut bytes = event_bytes(libc::FAN_CREATE, &[1, 2, 3, 4, 5], b"link");
        bytes.extend(event_bytes(
            libc::FAN_DELETE | libc::FAN_ONDIR,
            &[9; 8],
            b"v1",
        ));
        let events = parse_events(&bytes).expect("parse");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].mask, libc::FAN_CREATE);
        assert_eq!(events[0].name, b"link");
        let dir = events[0].dir.expect("folder");
        assert_eq!(&dir[8..], &[1, 2, 3, 4, 5]);
        assert_eq!(read_u32(dir, 0), Some(5));
        assert_eq!(events[1].name, b"v1");
        assert_eq!(events[1].dir.map(|d| &d[8..]), Some(&[9u8; 8][..]));
    }

    #[test]
    fn malformed_events_are_errors() {
        let bytes = event_bytes(libc::FAN_CREATE, &[1, 2, 3, 4], b"x");
        assert!(
            parse_events(&bytes[..bytes.len() - 4]).is_err(),
            "truncated"
        );
        let mut bad_handle = bytes.clone();
        bad_handle[24 + 12..24 + 16].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(
            parse_events(&bad_handle).is_err(),
            "handle longer than its record"
        );
        let mut bad_version = bytes;
        bad_version[4] = 2;
        assert!(parse_events(&bad_version).is_err(), "version");
    }
}
