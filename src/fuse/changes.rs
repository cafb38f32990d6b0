//! Follows the store for a mount: each batch of store changes ([`crate::watch`]) goes to
//! the namespace first (the times it keeps), then, with change notifications, the stale
//! names and folder times are dropped from the kernel's caches, so a push shows through
//! the mount at once and the cache lifetimes can be long.
//!
//! A folder whose entry is dropped is also retired in the inode table: the kernel keeps
//! one dentry per folder inode and would attach the old one, with the names cached below
//! it, to a lookup that returns the same number, so the folder gets a new number.
//!
//! A lookup that read the store before a change and answers after its invalidation
//! would put the old answer back for a whole lifetime; every batch therefore first
//! advances a [`ChangeEpoch`], and a lookup that saw the epoch move while it ran answers
//! without letting the kernel cache the answer.
//!
//! With the polling fallback nothing is invalidated: the lifetimes bound how long an
//! answer stays (see [`default_tag_ttl`]), and the poll only rescans what the namespace
//! keeps.

use super::inodes::InodeTable;
use crate::error::Result;
use crate::metrics::{Change, METRICS};
use crate::namespace::{Namespace, Stale};
use crate::watch::{self, Mode, StoreChange, Watcher};
use fuser::{INodeNo, Notifier};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Tag lifetime when none is given: long while change notifications invalidate what
/// changes, short where only the lifetime bounds how stale an answer can be.
pub fn default_tag_ttl(mode: &Mode) -> Duration {
    match mode {
        Mode::Fanotify => Duration::from_secs(60),
        Mode::Poll(_) => Duration::from_secs(1),
    }
}

/// Counts the batches of store changes taken so far (see the module's text).
#[derive(Debug, Default)]
pub struct ChangeEpoch(AtomicU64);

impl ChangeEpoch {
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A running follower; dropping it stops watching.
pub struct Follower {
    watcher: Watcher,
    /// Set once the session exists; until then there is nothing cached to invalidate.
    notifier: Arc<OnceLock<Notifier>>,
}

impl Follower {
    pub fn mode(&self) -> &Mode {
        self.watcher.mode()
    }

    /// From now on stale entries are dropped from this session's kernel caches (with
    /// change notifications; the polling fallback invalidates nothing).
    pub fn attach(&self, notifier: Notifier) {
        if *self.mode() == Mode::Fanotify {
            let _ = self.notifier.set(notifier);
        }
    }
}

/// Starts following the store of `ns`; `fallback` is the polling interval used where
/// change notifications cannot see every change (zero: never poll).
pub fn follow(
    ns: Arc<Namespace>,
    inodes: Arc<InodeTable>,
    epoch: Arc<ChangeEpoch>,
    fallback: Duration,
) -> Result<Follower> {
    let (dir, layout) = ns.watch_target();
    let notifier: Arc<OnceLock<Notifier>> = Arc::default();
    let sink_notifier = notifier.clone();
    let sink_ns = ns.clone();
    let sink: watch::Sink = Box::new(move |changes: Vec<StoreChange>| {
        log::debug!("store changes: {changes:?}");
        for change in &changes {
            METRICS.store_changes.inc(match change {
                StoreChange::Repository(_) => Change::Repository,
                StoreChange::Children(_) => Change::Children,
                StoreChange::Everything => Change::Everything,
            });
        }
        // Forgotten before the epoch moves: a lookup that read a kept answer and ends
        // after the epoch moved is not cached by the kernel (see `store::memo`).
        sink_ns.forget_store_reads();
        epoch.advance();
        let stale = sink_ns.store_changed(&changes);
        if let Some(notifier) = sink_notifier.get() {
            invalidate_all(notifier, &inodes, &stale);
        }
    });
    let watcher = watch::watch(&dir, layout, fallback, sink)?;
    if !matches!(watcher.mode(), Mode::Poll(interval) if interval.is_zero())
        && ns.track_store_changes()
    {
        let scan_ns = ns.clone();
        let scanner = std::thread::Builder::new()
            .name("registryfs-scan".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                scan_ns.scan_kept_times();
                log::info!("scanned the store's times in {:?}", started.elapsed());
            });
        if let Err(e) = scanner {
            log::warn!("no thread to scan the store's times ahead ({e}); the first look will");
        }
    }
    Ok(Follower { watcher, notifier })
}

/// Drops `stale` from the kernel's caches, for the parts the kernel knows.
fn invalidate_all(notifier: &Notifier, inodes: &InodeTable, stale: &[Stale]) {
    for s in stale {
        let result = match s {
            Stale::Entry { parent, name } => match inodes.folder_at(parent) {
                Some(ino) => {
                    if let Some(child) = inodes.child(ino, name) {
                        inodes.retire_folder(child);
                    }
                    notifier.inval_entry(INodeNo(ino), OsStr::new(name))
                }
                None => continue,
            },
            // A negative offset: the attributes only, no page cache.
            Stale::Folder(path) => match inodes.folder_at(path) {
                Some(ino) => notifier.inval_inode(INodeNo(ino), -1, 0),
                None => continue,
            },
        };
        match result {
            Ok(()) => {}
            // Known to us but not (or no longer) cached by the kernel.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => log::debug!("invalidating {s:?}: {e}"),
        }
    }
}
