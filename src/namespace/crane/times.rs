//! The times of the two Crane folders that list the whole store: `app/`, whose time
//! Crane's reload rule watches, and `web/`.
//!
//! - `app/`'s time is the newest time of anything an app file is made of (every
//!   repository's tags, where they point, its revisions) and of every repository-name
//!   folder of the store (so that removing a repository, which leaves no app file to be
//!   newer, still makes it grow);
//! - `web/`'s time is the newest time of the repository-name folders (it lists every
//!   repository).
//!
//! Both come from store times only, so every mount of a store shows the same ones. They
//! need every repository's times: a process that answers once (`registryfs ls`) scans
//! the store each time it is asked; a mount that reports every store change through
//! [`Namespace::crane_store_changed`] keeps the scan and updates the parts that changed,
//! so that Crane's polls never walk the store.

use crate::error::Result;
use crate::namespace::{child_path, Namespace};
use crate::store::Folder;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// The times of `app/` and `web/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeFolderTimes {
    pub app: SystemTime,
    pub web: SystemTime,
}

/// The store times the two folders derive from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TreeTimes {
    /// Per repository, its app file's time.
    repositories: BTreeMap<String, SystemTime>,
    /// Per repository-name prefix ("" and every repository included), its store folder's.
    names: BTreeMap<String, SystemTime>,
}

impl TreeTimes {
    fn folder_times(&self) -> TreeFolderTimes {
        let newest = |times: &BTreeMap<String, SystemTime>| {
            times
                .values()
                .copied()
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let web = newest(&self.names);
        TreeFolderTimes {
            app: web.max(newest(&self.repositories)),
            web,
        }
    }

    /// Forgets `prefix` and everything below it.
    fn remove_subtree(&mut self, prefix: &str) {
        for map in [&mut self.repositories, &mut self.names] {
            map.retain(|name, _| !is_at_or_below(name, prefix));
        }
    }

    /// The prefixes known directly below `prefix`.
    fn children_of(&self, prefix: &str) -> BTreeSet<String> {
        self.names
            .keys()
            .filter(|name| parent_of(name) == Some(prefix))
            .cloned()
            .collect()
    }
}

fn is_at_or_below(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The prefix a repository-name folder is in ("" for a top-level one); None for "".
fn parent_of(name: &str) -> Option<&str> {
    if name.is_empty() {
        return None;
    }
    Some(name.rsplit_once('/').map_or("", |(parent, _)| parent))
}

/// A scan kept while store changes are reported.
#[derive(Default)]
pub(in crate::namespace) struct TreeTimesCache {
    tracked: AtomicBool,
    scan: Mutex<Option<TreeTimes>>,
}

impl TreeTimesCache {
    fn lock(&self) -> MutexGuard<'_, Option<TreeTimes>> {
        self.scan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What changed in the store, as [`Namespace::crane_store_changed`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeChange<'a> {
    /// Below a repository's own folder (tags, revisions, layers).
    Repository(&'a str),
    /// Which folders are directly below a repository-name prefix.
    Children(&'a str),
    /// Unknown: scan again.
    Everything,
}

impl Namespace {
    /// A repository's time as kept: one whose times cannot be read is still listed (its
    /// app file then says why it fails), with its folder's time.
    fn kept_repository_time(&self, name: &str) -> Result<SystemTime> {
        match self.crane_repository_time(name) {
            Ok(t) => Ok(t),
            Err(e) => {
                log::warn!("{name}: {e}");
                self.folder_time(Folder::Names(name))
            }
        }
    }

    /// Adds the times of everything at and below `from` to `times`.
    fn scan_tree_times(&self, from: &str, times: &mut TreeTimes) -> Result<()> {
        self.walk_repository_folders(from, |name, is_repository| {
            times
                .names
                .insert(name.to_string(), self.folder_time(Folder::Names(name))?);
            if is_repository {
                let t = self.kept_repository_time(name)?;
                times.repositories.insert(name.to_string(), t);
            }
            Ok(())
        })
    }

    /// The times of `app/` and `web/`.
    pub(in crate::namespace) fn crane_tree_times(&self) -> Result<TreeFolderTimes> {
        let Some(state) = &self.crane else {
            return Ok(TreeFolderTimes {
                app: SystemTime::UNIX_EPOCH,
                web: SystemTime::UNIX_EPOCH,
            });
        };
        if !state.times.tracked.load(Ordering::Acquire) {
            let mut times = TreeTimes::default();
            self.scan_tree_times("", &mut times)?;
            return Ok(times.folder_times());
        }
        let mut scan = state.times.lock();
        if let Some(times) = scan.as_ref() {
            return Ok(times.folder_times());
        }
        let mut times = TreeTimes::default();
        self.scan_tree_times("", &mut times)?;
        let folder_times = times.folder_times();
        *scan = Some(times);
        Ok(folder_times)
    }

    /// Every repository, from the kept scan when there is one (Crane's every poll lists
    /// `app/`, which must not walk the store); None when there is no kept scan.
    pub(in crate::namespace) fn kept_repositories(&self) -> Option<Vec<String>> {
        let state = self.crane.as_ref()?;
        if !state.times.tracked.load(Ordering::Acquire) {
            return None;
        }
        if state.times.lock().is_none() {
            // Scanned (and kept) by the first look at the folders' times.
            if let Err(e) = self.crane_tree_times() {
                log::warn!("scanning the store: {e}");
                return None;
            }
        }
        let scan = state.times.lock();
        scan.as_ref()
            .map(|times| times.repositories.keys().cloned().collect())
    }

    /// From now on every store change is reported through
    /// [`Namespace::crane_store_changed`], so a scan of the store's times may be kept.
    /// Returns whether there is a scan to make ([`Namespace::scan_kept_times`]).
    pub fn track_store_changes(&self) -> bool {
        match &self.crane {
            Some(state) => {
                state.times.tracked.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Makes the scan that [`Namespace::track_store_changes`] keeps, so that Crane's
    /// first look (a whole-store scan: seconds at 100k repositories) does not wait for
    /// it. A mount runs this on a thread of its own once mounted.
    pub fn scan_kept_times(&self) {
        if let Err(e) = self.crane_tree_times() {
            log::warn!("scanning the store's times: {e}");
        }
    }

    /// Updates the kept times after a store change (nothing to do for the registry
    /// layout, whose times are read from the store on each look).
    pub fn crane_store_changed(&self, change: TreeChange<'_>) -> Result<()> {
        let Some(state) = &self.crane else {
            return Ok(());
        };
        // Scanned outside the lock where it is long, so that Crane's stats do not wait.
        if change == TreeChange::Everything {
            let mut times = TreeTimes::default();
            self.scan_tree_times("", &mut times)?;
            *state.times.lock() = Some(times);
            return Ok(());
        }
        let mut scan = state.times.lock();
        let Some(times) = scan.as_mut() else {
            return Ok(());
        };
        match change {
            TreeChange::Repository(name) => {
                match self.store.folder_mtime(Folder::Names(name))? {
                    Some(t) => times.names.insert(name.to_string(), t),
                    None => times.names.remove(name),
                };
                if self.store.is_repository(name)? {
                    let t = self.kept_repository_time(name)?;
                    times.repositories.insert(name.to_string(), t);
                } else {
                    times.repositories.remove(name);
                }
            }
            TreeChange::Children(prefix) => {
                let now: BTreeSet<String> = self
                    .store
                    .child_names(prefix)?
                    .iter()
                    .map(|child| child_path(prefix, child))
                    .collect();
                let before = times.children_of(prefix);
                for gone in before.difference(&now) {
                    times.remove_subtree(gone);
                }
                for new in now.difference(&before) {
                    self.scan_tree_times(new, times)?;
                }
                let t = self.folder_time(Folder::Names(prefix))?;
                times.names.insert(prefix.to_string(), t);
            }
            TreeChange::Everything => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn app_is_the_newest_of_everything_and_web_of_the_folders() {
        let mut t = TreeTimes::default();
        assert_eq!(t.folder_times().app, SystemTime::UNIX_EPOCH);
        t.names.insert("".into(), at(10));
        t.names.insert("a".into(), at(20));
        t.repositories.insert("a".into(), at(30));
        assert_eq!(
            t.folder_times(),
            TreeFolderTimes {
                app: at(30),
                web: at(20)
            }
        );
    }

    #[test]
    fn subtrees_and_children() {
        let mut t = TreeTimes::default();
        for name in ["", "a", "a/b", "a/b/c", "ab", "x"] {
            t.names.insert(name.into(), at(1));
        }
        t.repositories.insert("a/b".into(), at(1));
        t.repositories.insert("ab".into(), at(1));
        assert_eq!(
            t.children_of("").into_iter().collect::<Vec<_>>(),
            ["a", "ab", "x"]
        );
        assert_eq!(t.children_of("a").into_iter().collect::<Vec<_>>(), ["a/b"]);
        t.remove_subtree("a");
        assert_eq!(t.names.keys().collect::<Vec<_>>(), ["", "ab", "x"]);
        assert_eq!(t.repositories.keys().collect::<Vec<_>>(), ["ab"]);
        t.remove_subtree("");
        assert!(t.names.is_empty() && t.repositories.is_empty());
    }
}
