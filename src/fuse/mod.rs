//! The FUSE adapter: serves a [`Namespace`] read-only with fuser, so that `ls`, `stat`,
//! `cat`, `find` and a web server see exactly what `registryfs cat` prints.
//!
//! Modelled on mountpoint-s3: a thin layer over logic that is tested without a kernel.
//! - [`options`]: flags and `-o` mount options → settings (pure);
//! - [`inodes`]: inode numbers; a file inode is tied to one content version (pure);
//! - [`attr`]: attributes and cache lifetimes (pure);
//! - [`handles`]: open handles and the one-backing-id-per-inode passthrough rule (pure);
//! - `changes`: store changes → the namespace's kept times and the kernel's caches;
//! - `prefetch`: folders made ahead of a walk, on a worker thread;
//! - `fs`: the fuser `Filesystem`, translating requests to the above;
//! - `session`, `daemon`: mounting, unmounting, signals, stale mounts, `--daemon`.

pub mod attr;
mod changes;
mod daemon;
mod fs;
pub mod handles;
pub mod inodes;
mod listings;
pub mod memory;
pub mod options;
mod prefetch;
mod session;

pub use changes::default_tag_ttl;
pub use options::{MountArgs, MountSettings, NamespaceOverrides};
pub use session::SUBTYPE;

use crate::error::{Error, Result};
use crate::namespace::Namespace;
use std::path::Path;

/// Mounts `ns` (opened from `store`, an absolute path) at `mountpoint` and serves it
/// until it is unmounted or SIGINT/SIGTERM. With `settings.daemon` this returns in a
/// background process and the calling process exits once the mount is ready.
pub fn mount(
    ns: Namespace,
    store: &Path,
    mountpoint: &Path,
    settings: &MountSettings,
) -> Result<()> {
    // Absolute before a daemon moves to "/"; not canonical yet: a stale mount there
    // would fail to resolve.
    let mountpoint = std::path::absolute(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
    let ready = if settings.daemon {
        daemon::daemonize().map_err(|e| Error::io(&mountpoint, e))?
    } else {
        daemon::Ready::foreground()
    };
    abort_on_panic();
    tune_allocator(ns.store().reused_block_bytes());
    session::serve(ns, store, &mountpoint, settings, ready)
}

/// The daemon's memory follows what the kernel keeps (inodes), which grows and shrinks
/// over a long life: let glibc hand big blocks (the inode table's chunks and index, a
/// large folder's listing) back to the system when they are freed. By default it raises
/// its mmap threshold each time such a block is freed, after which the next ones come
/// from the heap and stay resident when freed. Blocks the store allocates and frees all
/// the time (`reused_block_bytes`) stay below the threshold, in the heap.
fn tune_allocator(reused_block_bytes: usize) {
    let threshold = mmap_threshold(reused_block_bytes);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; no pointers involved.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
}

/// The mmap threshold: glibc's initial one, or just above the blocks the store reuses.
fn mmap_threshold(reused_block_bytes: usize) -> libc::c_int {
    const DEFAULT_MMAP_THRESHOLD: usize = 128 * 1024;
    let threshold = DEFAULT_MMAP_THRESHOLD.max(reused_block_bytes.saturating_add(1));
    libc::c_int::try_from(threshold).unwrap_or(libc::c_int::MAX)
}

/// A panic in a request handler would leave its request unanswered and the calling
/// process hung forever; aborting turns that into a dead mount (ENOTCONN), which the
/// next mount clears.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error!("registryfs: panic, aborting: {info}");
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_a_store_reuses_stay_below_the_mmap_threshold() {
        assert_eq!(
            mmap_threshold(0),
            128 * 1024,
            "local stores: glibc's default"
        );
        assert!(mmap_threshold(1 << 20) > 1 << 20);
        assert_eq!(mmap_threshold(usize::MAX), libc::c_int::MAX);
    }
}
