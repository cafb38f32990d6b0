//! `--daemon`: return once the mount is ready, keep serving in the background. This is
//! what mount(8) needs from `mount.fuse.registryfs`: it waits for the helper to exit and
//! then expects the mount to be there.
//!
//! The process forks before any thread exists; the parent waits on a pipe until the
//! child reports "ready" (the FUSE handshake is done) or an error, and exits with that
//! status. The child starts a new session (no controlling terminal, so no SIGHUP or
//! terminal Ctrl-C), moves to "/" so it pins no folder, and points stdin/stdout at
//! /dev/null; stderr stays, as the log (the journal, when systemd runs mount).
//!
//! Under systemd (`registryfs@.service`, `Type=notify`) the mount runs in the
//! foreground and readiness is the same moment, reported with sd_notify.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where to report readiness: nowhere in the foreground, a pipe to the waiting parent
/// for a daemon.
pub struct Ready(Option<File>);

impl Ready {
    pub fn foreground() -> Ready {
        Ready(None)
    }

    /// The mount is up: tell systemd (a `Type=notify` unit: `READY=1` to
    /// `$NOTIFY_SOCKET`, when set) and release the parent.
    pub fn ok(self) {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            log::warn!("cannot tell systemd the mount is ready ($NOTIFY_SOCKET): {e}");
        }
        if let Some(mut pipe) = self.0 {
            let _ = pipe.write_all(b"ok");
            drop(pipe);
            detach_stdio();
        }
    }

    /// The mount failed. A daemon hands `message` to the waiting parent, which prints
    /// it and exits 1, and exits at once itself (so the message is printed once, before
    /// mount(8) returns); in the foreground the caller reports the error.
    pub fn fail(self, message: &str) {
        if let Some(mut pipe) = self.0 {
            let _ = pipe.write_all(message.as_bytes());
            drop(pipe);
            std::process::exit(1);
        }
    }
}

/// Forks. Returns in the child (with its `Ready`); the parent never returns: it exits
/// 0 once the child reports ready, 1 if it reports an error or dies first.
pub fn daemonize() -> std::io::Result<Ready> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just created these descriptors and nothing else owns them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the caller forks first thing), so the child
    // inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: we are a fresh child; setsid cannot fail for a non-group-leader.
            unsafe { libc::setsid() };
            let _ = std::env::set_current_dir("/");
            Ok(Ready(Some(File::from(write_end))))
        }
        _child => {
            drop(write_end);
            let mut message = String::new();
            let _ = File::from(read_end).read_to_string(&mut message);
            if message == "ok" {
                std::process::exit(0);
            }
            if message.is_empty() {
                message = "the daemon exited before the mount was ready".into();
            }
            eprintln!("registryfs: {message}");
            std::process::exit(1);
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto the standard descriptors; `null` stays valid meanwhile.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}
