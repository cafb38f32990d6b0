//! The mount's life cycle: clear a stale mount, mount, serve on several threads, and
//! unmount cleanly on SIGINT/SIGTERM. This is the only part that needs a kernel; it is
//! exercised by tests/mount.rs.
//!
//! As root we call mount(2) ourselves and hand the /dev/fuse descriptor to fuser
//! (`Session::from_fd`), rather than letting fuser mount:
//! - stopping is a detach-unmount (MNT_DETACH): a plain unmount fails with EBUSY while a
//!   web server holds files open, and fuser's own unmount is a plain one, retried when
//!   its session ends, which could then hit a newer mount at the same place;
//! - the mount shows as `fuse.registryfs` with the store as source, so mount(8), fstab
//!   and `umount -t` recognize it.
//!
//! Without root (/dev/fuse not accessible, or mount(2) refused) fuser mounts through the
//! setuid fusermount3; its unmount is then `fusermount3 -u -z`, also a detach.

use super::attr::{Owner, TtlPolicy};
use super::changes::{self, ChangeEpoch, Follower};
use super::daemon::Ready;
use super::fs::RegistryFs;
use super::inodes::InodeTable;
use super::options::{Access, MountSettings};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use log::{debug, error, info, warn};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The filesystem type's subtype: `fuse.registryfs` in /proc/mounts and fstab.
pub const SUBTYPE: &str = "registryfs";

/// After a stop signal the mount is detached at once; files still open (a web server's)
/// keep the connection alive, and they are served this long before the daemon exits.
/// A second signal exits at once.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Mounts `ns` at `mountpoint` and serves it until it is unmounted or a stop signal
/// comes. `ready` is told once the mount answers (or why it could not be made).
pub fn serve(
    ns: Namespace,
    store: &Path,
    mountpoint: &Path,
    settings: &MountSettings,
    ready: Ready,
) -> Result<()> {
    // Signals are taken by one thread (see `stop_on_signal`); block them before any
    // thread of the mount starts (the metrics listener, the store watcher, fuser's),
    // so that all inherit the mask: a thread that did not would take SIGTERM's default
    // action and end the process with the mount left behind.
    let mounted = StopSignals::block()
        .map_err(|e| Error::io(mountpoint, e))
        .and_then(|signals| {
            serve_metrics(settings)?;
            mount(ns, store, mountpoint, settings, signals)
        });
    match mounted {
        Ok(mounted) => {
            ready.ok();
            run(mounted)
        }
        Err(e) => {
            ready.fail(&e.to_string());
            Err(e)
        }
    }
}

/// `--metrics-listen`: bound before mounting, so a taken port fails the mount.
fn serve_metrics(settings: &MountSettings) -> Result<()> {
    if let Some(addr) = settings.metrics_listen {
        let bound = crate::metrics::http::serve(addr)
            .map_err(|e| Error::Usage(format!("--metrics-listen {addr}: {e}")))?;
        info!("serving metrics at http://{bound}/metrics");
    }
    Ok(())
}

struct Mounted {
    session: Session<RegistryFs>,
    mountpoint: PathBuf,
    /// Mounted with mount(2) by us (not through fusermount3).
    own_mount: bool,
    /// Watches the store while the session runs.
    follower: Follower,
}

fn mount(
    ns: Namespace,
    store: &Path,
    mountpoint: &Path,
    settings: &MountSettings,
    signals: StopSignals,
) -> Result<Mounted> {
    let mp_err = |e: io::Error| Error::io(mountpoint, e);
    clear_stale_mount(mountpoint).map_err(mp_err)?;
    let mountpoint = mountpoint.canonicalize().map_err(mp_err)?;
    if !mountpoint.is_dir() {
        return Err(Error::Usage(format!(
            "{}: the mount point must be a folder",
            mountpoint.display()
        )));
    }
    let owner = store_owner(store)?;
    let ns = Arc::new(ns);
    let inodes = Arc::new(InodeTable::new());
    let epoch = Arc::new(ChangeEpoch::default());
    let follower = changes::follow(
        ns.clone(),
        inodes.clone(),
        epoch.clone(),
        settings.change_poll,
    )?;
    let tag_ttl = settings
        .tag_ttl
        .unwrap_or_else(|| changes::default_tag_ttl(follower.mode()));
    info!("tag paths and folders are cached for {tag_ttl:?}");
    // Store reads live as long as the names made from them (forgotten on each change).
    ns.remember_store_reads(tag_ttl);
    let fs = RegistryFs::new(
        ns,
        inodes,
        epoch,
        TtlPolicy {
            tag: tag_ttl,
            immutable: settings.immutable_ttl,
        },
        owner,
        settings.passthrough,
    );
    let acl = match settings.access {
        Access::Owner => SessionACL::Owner,
        Access::RootAndOwner => SessionACL::RootAndOwner,
        Access::Everyone => SessionACL::All,
    };
    let mut config = Config::default();
    config.acl = acl;
    config.n_threads = Some(settings.threads);
    // One /dev/fuse descriptor per thread (FUSE_DEV_IOC_CLONE): requests are spread
    // over the threads by the kernel instead of contending on one descriptor.
    config.clone_fd = settings.threads > 1;
    let source = store.to_string_lossy().into_owned();

    let (session, unmounter) = match kernel_mount(&source, &mountpoint, acl) {
        Ok(fd) => {
            // From mountinfo: a stat here would wait for the handshake below.
            let dev = mounted_dev(&mountpoint);
            if let Some(dev) = dev {
                raise_read_ahead(mountpoint.clone(), dev);
            }
            let unmounter = Unmounter::Detach {
                mountpoint: mountpoint.clone(),
                dev,
            };
            match Session::from_fd(fs, fd, acl, config) {
                Ok(session) => (session, unmounter),
                Err(e) => {
                    let _ = detach(&mountpoint);
                    return Err(mp_err(e));
                }
            }
        }
        // Not root: /dev/fuse is root-only (EACCES) or mount(2) needs CAP_SYS_ADMIN.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            info!("cannot mount directly ({e}); mounting through fusermount3");
            config.mount_options = vec![
                MountOption::RO,
                MountOption::NoSuid,
                MountOption::NoDev,
                MountOption::NoAtime,
                MountOption::FSName(source),
                MountOption::Subtype(SUBTYPE.to_string()),
            ];
            let mut session = Session::new(fs, &mountpoint, &config).map_err(mp_err)?;
            let unmounter = Unmounter::Fuser(session.unmount_callable());
            (session, unmounter)
        }
        Err(e) => return Err(mp_err(e)),
    };
    let own_mount = matches!(unmounter, Unmounter::Detach { .. });
    follower.attach(session.notifier());
    stop_on_signal(signals, unmounter, mountpoint.clone());
    info!(
        "mounted {} at {} ({} threads)",
        store.display(),
        mountpoint.display(),
        settings.threads
    );
    Ok(Mounted {
        session,
        mountpoint,
        own_mount,
        follower,
    })
}

fn run(mounted: Mounted) -> Result<()> {
    let Mounted {
        session,
        mountpoint,
        own_mount,
        follower,
    } = mounted;
    let result = session.run();
    drop(follower);
    // The session ends when the kernel drops the connection: after an unmount (ours or
    // anyone's), or an abort, which leaves a dead mount behind: clear that one.
    if own_mount && is_stale(&mountpoint) {
        let _ = detach(&mountpoint);
    }
    match result {
        Ok(()) => {
            info!("{} unmounted", mountpoint.display());
            Ok(())
        }
        Err(e) => {
            error!("{}: FUSE session failed: {e}", mountpoint.display());
            Err(Error::io(&mountpoint, e))
        }
    }
}

/// Who owns the mount's files: the store folder's owner, or for a remote store (which
/// has no owner here) the daemon's user.
fn store_owner(store: &Path) -> Result<Owner> {
    if crate::store::is_remote(store) {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        return Ok(Owner { uid, gid });
    }
    let meta = std::fs::metadata(store).map_err(|e| Error::io(store, e))?;
    Ok(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// mount(2) of a FUSE filesystem on a fresh /dev/fuse descriptor: read-only, nosuid,
/// nodev. No `default_permissions`: every file is readable by whoever may use the mount
/// (its owner, or everyone with allow_other), so the kernel's mode check could only say
/// yes. It cost a permission check and an ACL lookup (which FUSE keeps the kernel from
/// caching) per folder of every path walked by a user other than the owner, such as a
/// web server's workers (docs/performance.md, "nginx and the kernel's path walk"). The
/// price: chdir and access(2) ask the daemon (`RegistryFs::access`).
fn kernel_mount(source: &str, mountpoint: &Path, acl: SessionACL) -> io::Result<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        // SAFETY: getuid/getgid cannot fail.
        unsafe { libc::getuid() },
        unsafe { libc::getgid() },
    );
    if acl != SessionACL::Owner {
        // The kernel only knows allow_other; fuser narrows it for allow_root.
        data.push_str(",allow_other");
    }
    let source = cstring(source.as_bytes())?;
    let target = cstring(mountpoint.as_os_str().as_bytes())?;
    let fstype = cstring(format!("fuse.{SUBTYPE}").as_bytes())?;
    let data = cstring(data.as_bytes())?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// How to take our mount away; owned by the signal thread.
enum Unmounter {
    /// Ours (mount(2)): umount2(MNT_DETACH), only while the mount there is still ours
    /// (`dev` is its device number).
    Detach {
        mountpoint: PathBuf,
        dev: Option<u64>,
    },
    /// fuser's (fusermount3): it detaches with `fusermount3 -u -z`, and then does not
    /// unmount again when its session ends.
    Fuser(SessionUnmounter),
}

impl Unmounter {
    fn unmount(self) {
        match self {
            Unmounter::Detach { mountpoint, dev } => {
                // mountinfo, not stat: no round trip into a daemon that may be wedged.
                let ours = match (dev, mounted_dev(&mountpoint)) {
                    (Some(ours), Some(there)) => ours == there,
                    _ => true,
                };
                if !ours {
                    info!("{}: no longer our mount; leaving it", mountpoint.display());
                    return;
                }
                match detach(&mountpoint) {
                    // EINVAL: not mounted any more (someone ran umount).
                    Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                        warn!("unmount {}: {e}", mountpoint.display())
                    }
                    _ => {}
                }
            }
            Unmounter::Fuser(mut unmounter) => {
                if let Err(e) = unmounter.unmount() {
                    warn!("unmount: {e}");
                }
            }
        }
    }
}

/// Lazily unmounts `mountpoint` (the kernel drops it once the last open file closes).
pub fn detach(mountpoint: &Path) -> io::Result<()> {
    let target = cstring(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    // Not root: the setuid helper may unmount mounts of the same user.
    for helper in ["fusermount3", "fusermount"] {
        match std::process::Command::new(helper)
            .args(["-u", "-z", "--"])
            .arg(mountpoint)
            .status()
        {
            Ok(status) if status.success() => return Ok(()),
            Ok(_) => return Err(e),
            Err(_) => continue,
        }
    }
    Err(e)
}

/// The device number of the topmost mount at `path`, from /proc/self/mountinfo.
/// The mount's readahead, in KiB. Reads the daemon answers (an S3 blob while it
/// downloads, a blob without passthrough) reach it in readahead-sized requests, 128 KiB
/// by default: 1 MiB (the most one FUSE request carries) takes an eighth of the round
/// trips, and a cold S3 blob read through the mount went from 0.85x to 0.89x of a
/// direct download.
const READ_AHEAD_KB: u32 = 1024;

/// Sets the mount's readahead once the kernel has taken the daemon's handshake, whose
/// INIT reply can only lower it: a thread waits for the mount to answer a `stat` (which
/// waits for that handshake), then writes the mount's `read_ahead_kb` in sysfs. Only
/// ours (mount(2), as root): a mount through fusermount3 keeps the default.
fn raise_read_ahead(mountpoint: PathBuf, dev: u64) {
    let raise = move || {
        match std::fs::metadata(&mountpoint) {
            Ok(meta) if meta.dev() == dev => {}
            _ => return,
        }
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
            Ok(()) => debug!("{knob}: {READ_AHEAD_KB}"),
            Err(e) => info!("{knob}: {e}; the mount keeps the kernel's readahead"),
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("registryfs-readahead".into())
        .spawn(raise)
    {
        info!("the mount keeps the kernel's readahead: {e}");
    }
}

fn mounted_dev(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    topmost_dev(&text, path.as_os_str().as_bytes())
}

/// mountinfo lines: `id parent major:minor root mountpoint ...`, with spaces and the
/// like octal-escaped (`\040`). Later lines are mounted on top of earlier ones.
fn topmost_dev(mountinfo: &str, path: &[u8]) -> Option<u64> {
    mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let mut fields = line.split(' ');
            let dev = fields.nth(2)?;
            let mountpoint = fields.nth(1)?;
            (unescape_mountinfo(mountpoint) == path).then_some(dev)
        })
        .and_then(|dev| {
            let (major, minor) = dev.split_once(':')?;
            Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
        })
}

fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether `path` is a FUSE mount whose daemon is gone. statfs, not stat: statfs always
/// asks the daemon, while stat may be answered from cached attributes.
fn is_stale(path: &Path) -> bool {
    let Ok(c) = cstring(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid path; `buf` is written by the call.
    let rc = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf)
    };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// A FUSE mount whose daemon died answers ENOTCONN, and a new mount on top would leave
/// it underneath: detach it first.
fn clear_stale_mount(mountpoint: &Path) -> io::Result<()> {
    let path = std::path::absolute(mountpoint)?;
    // Mounts can be stacked; a few rounds at most.
    for _ in 0..8 {
        if !is_stale(&path) {
            return Ok(());
        }
        warn!(
            "{}: stale FUSE mount (its daemon is gone): detaching it",
            path.display()
        );
        detach(&path)?;
    }
    Ok(())
}

/// SIGINT and SIGTERM, blocked in every thread and taken by one.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> io::Result<StopSignals> {
        // SAFETY: plain libc signal-set manipulation on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(StopSignals(set))
        }
    }

    /// Waits for a signal, at most `timeout` (forever if None).
    fn wait(&self, timeout: Option<Duration>) -> Option<i32> {
        loop {
            // SAFETY: the set is initialized; sigtimedwait writes nothing we pass as null.
            let rc = unsafe {
                match timeout {
                    None => {
                        let mut sig = 0;
                        match libc::sigwait(&self.0, &mut sig) {
                            0 => sig,
                            _ => -1,
                        }
                    }
                    Some(t) => {
                        let ts = libc::timespec {
                            tv_sec: t.as_secs() as libc::time_t,
                            tv_nsec: t.subsec_nanos() as libc::c_long,
                        };
                        libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts)
                    }
                }
            };
            if rc > 0 {
                return Some(rc);
            }
            if timeout.is_some() && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
            {
                return None;
            }
        }
    }
}

/// Stop on SIGINT/SIGTERM: detach the mount (new opens fail at once), let the session
/// end by itself (at once unless files are open), and exit after `STOP_GRACE` or at a
/// second signal.
fn stop_on_signal(signals: StopSignals, unmounter: Unmounter, mountpoint: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("registryfs-signals".into())
        .spawn(move || {
            let Some(sig) = signals.wait(None) else {
                return;
            };
            info!("signal {sig}: unmounting {}", mountpoint.display());
            unmounter.unmount();
            if signals.wait(Some(STOP_GRACE)).is_some() {
                info!("second signal: exiting now");
            } else {
                warn!(
                    "{}: files still open {}s after unmounting; exiting",
                    mountpoint.display(),
                    STOP_GRACE.as_secs()
                );
            }
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        warn!("cannot watch for stop signals: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topmost_mount_from_mountinfo() {
        let info = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
42 22 0:39 / /tmp/a\\040b ro,nosuid - fuse.registryfs /store ro,user_id=0
43 42 0:40 / /tmp/a\\040b ro,nosuid - fuse.registryfs /store ro,user_id=0
44 22 0:41 / /tmp/c rw - tmpfs tmpfs rw
";
        assert_eq!(topmost_dev(info, b"/tmp/a b"), Some(libc::makedev(0, 40)));
        assert_eq!(topmost_dev(info, b"/tmp/c"), Some(libc::makedev(0, 41)));
        assert_eq!(topmost_dev(info, b"/tmp/a\\040b"), None);
        assert_eq!(topmost_dev(info, b"/nowhere"), None);
        assert_eq!(unescape_mountinfo("a\\134b\\011"), b"a\\b\t");
    }
}
