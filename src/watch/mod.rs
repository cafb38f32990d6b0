//! Tells the rest of registryfs which parts of a store changed, so that a mount can
//! refresh what it holds and invalidate the kernel's caches.
//!
//! On a local filesystem one fanotify group with a filesystem mark sees every change
//! without walking the store, whatever its size ([`fanotify`]). Where that cannot work
//! (not permitted, a filesystem without file handles, a network filesystem whose other
//! clients' writes raise no local events) the watcher says [`StoreChange::Everything`]
//! every `fallback` interval instead.

mod fanotify;
pub use fanotify::FOLDER_PATH_CACHE_BYTES;
mod mapping;

use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What changed in a store, in repository terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreChange {
    /// Something below this repository's own folder changed (tags, revisions, layer
    /// links): "a/b". Also sent for a name folder that appeared or vanished, which may be
    /// a namespace rather than a repository.
    Repository(String),
    /// Folders directly below this repository-name prefix were created or removed ("" =
    /// the top): a repository or namespace folder appeared or vanished. Consumers list
    /// the prefix again and forget what they hold for names no longer there.
    Children(String),
    /// Anything may have changed: queue overflow, the periodic fallback, an OCI layout's
    /// index.json, an event that cannot be mapped. Consumers rescan.
    Everything,
}

/// How paths of a store map to changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// distribution's filesystem layout; the watched folder is `docker/registry/v2`.
    Distribution,
    /// An OCI image layout; the watched folder is the layout's root.
    OciLayout,
    /// A remote store (S3): nothing local changes with it, so the watcher polls; the
    /// folder (the store's cache folder) only names the store in the log.
    Remote,
}

/// How the watcher learns about changes (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fanotify,
    /// [`StoreChange::Everything`] at this interval; zero: never.
    Poll(Duration),
}

/// Receives each batch of changes, deduplicated and sorted, on the watcher's thread.
/// A batch goes out a few milliseconds after its first change, and a change always
/// comes in a batch sent after it happened, so acting on every batch ends with what
/// the store holds last. While the sink runs, events wait in the kernel's queue (16384
/// by default); if it fills up, the next batch is [`StoreChange::Everything`].
pub type Sink = Box<dyn Fn(Vec<StoreChange>) + Send>;

/// A running watcher; dropping it stops its thread and waits for it.
pub struct Watcher {
    mode: Mode,
    /// Written once on drop to wake the thread.
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn mode(&self) -> &Mode {
        &self.mode
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let written = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if written < 0 {
            log::error!(
                "store watcher: eventfd write: {}; its thread is left running",
                std::io::Error::last_os_error()
            );
            return;
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("store watcher: its thread panicked (in the change sink?)");
            }
        }
    }
}

/// Starts watching `dir`: for [`Layout::Distribution`] the `docker/registry/v2` folder,
/// for [`Layout::OciLayout`] the layout's root. `sink` is called on the watcher's own
/// thread. Falls back to polling (`fallback`; zero disables it) when fanotify cannot
/// see every change of this store; the reason is logged.
pub fn watch(dir: &Path, layout: Layout, fallback: Duration, sink: Sink) -> Result<Watcher> {
    let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let wake = eventfd().map_err(|e| Error::io(&dir, e))?;
    let reason = match fanotify::why_not(&dir, layout) {
        None => match fanotify::Listener::new(&dir, layout) {
            Ok(listener) => {
                log::info!(
                    "watching {} with fanotify (one mark on its whole filesystem)",
                    dir.display()
                );
                let wake_fd = wake.try_clone().map_err(|e| Error::io(&dir, e))?;
                let thread = spawn(&dir, move || listener.run(&wake_fd, fallback, &*sink))?;
                return Ok(Watcher {
                    mode: Mode::Fanotify,
                    wake,
                    thread: Some(thread),
                });
            }
            Err(e) => e.to_string(),
        },
        Some(reason) => reason,
    };
    start_polling(&dir, wake, fallback, sink, &reason)
}

/// The fallback: [`StoreChange::Everything`] every `interval` (never if zero).
fn start_polling(
    dir: &Path,
    wake: OwnedFd,
    interval: Duration,
    sink: Sink,
    reason: &str,
) -> Result<Watcher> {
    let mode = Mode::Poll(interval);
    if interval.is_zero() {
        log::info!(
            "not watching {}: {reason}, and the polling fallback is disabled",
            dir.display()
        );
        return Ok(Watcher {
            mode,
            wake,
            thread: None,
        });
    }
    log::info!(
        "watching {} by polling every {interval:?}: {reason}",
        dir.display()
    );
    let wake_fd = wake.try_clone().map_err(|e| Error::io(dir, e))?;
    let thread = spawn(dir, move || poll_loop(&wake_fd, interval, &*sink))?;
    Ok(Watcher {
        mode,
        wake,
        thread: Some(thread),
    })
}

fn spawn(dir: &Path, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("registryfs-watch".to_string())
        .spawn(body)
        .map_err(|e| Error::io(dir, doing("starting the watcher thread", e)))
}

/// Calls the sink with [`StoreChange::Everything`] every `interval` (never if zero)
/// until woken.
fn poll_loop(wake: &OwnedFd, interval: Duration, sink: &dyn Fn(Vec<StoreChange>)) {
    let mut next = (!interval.is_zero()).then(|| Instant::now() + interval);
    loop {
        match wait_readable(&[wake.as_raw_fd()], next) {
            Ok(ready) if ready[0] => return,
            Ok(_) => {}
            Err(e) => {
                // Without a working poll(2) we cannot wait for shutdown either; stop.
                log::error!("store watcher: {e}; no more change notifications");
                return;
            }
        }
        if next.is_some_and(|next| Instant::now() >= next) {
            sink(vec![StoreChange::Everything]);
            next = Some(Instant::now() + interval);
        }
    }
}

/// Waits until one of `fds` is readable or `deadline` passes (None: no deadline);
/// returns which are readable. EINTR counts as a wake-up with nothing readable.
fn wait_readable(fds: &[libc::c_int], deadline: Option<Instant>) -> std::io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = match deadline {
        None => -1,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up: a 0 ms timeout before the deadline would spin.
            let ms = left.as_micros().div_ceil(1000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    // SAFETY: `polls` is a live array of `polls.len()` pollfd structures.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(doing("poll", err));
    }
    Ok(polls
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
        .collect())
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call; the descriptor is owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(syscall_error("eventfd"));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `err`, saying what was being done (a system call's name, usually).
fn doing(what: &str, err: std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// The last OS error, naming the system call.
fn syscall_error(call: &str) -> std::io::Error {
    doing(call, std::io::Error::last_os_error())
}

/// Changes gathered for one call of the sink.
#[derive(Default)]
struct Batch {
    changes: BTreeSet<StoreChange>,
}

impl Batch {
    fn extend(&mut self, changes: impl IntoIterator<Item = StoreChange>) {
        self.changes.extend(changes);
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The batch in order; [`StoreChange::Everything`] alone if present (it covers the rest).
    fn take(&mut self) -> Vec<StoreChange> {
        let changes = std::mem::take(&mut self.changes);
        if changes.contains(&StoreChange::Everything) {
            vec![StoreChange::Everything]
        } else {
            changes.into_iter().collect()
        }
    }
}

#[cfg(test)]
mod tests;
