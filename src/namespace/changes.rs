//! What a store change means for the namespace: the times kept for the Crane layout are
//! brought up to date, and the paths whose cached answers the change makes stale are
//! named, so that a mount can drop them from the kernel's caches at once instead of
//! waiting for their lifetimes to run out.

use super::catalog;
use super::crane::{repo_id, times::TreeChange, APP, WEB};
use super::Namespace;
use crate::watch::StoreChange;
use std::collections::BTreeSet;

/// A cached answer a store change makes stale.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stale {
    /// The name `name` in folder `parent` ("" is the root): what it stands for, or that
    /// it does not exist; for a folder, everything cached below it too.
    Entry { parent: String, name: String },
    /// A folder's attributes (its time).
    Folder(String),
}

/// `a/b/c` as (`a/b`, `c`); (``, `a`) for a top-level name.
fn split_name(name: &str) -> (&str, &str) {
    name.rsplit_once('/').unwrap_or(("", name))
}

fn entry(parent: &str, name: &str) -> Stale {
    Stale::Entry {
        parent: parent.to_string(),
        name: name.to_string(),
    }
}

impl Namespace {
    /// Takes a batch of store changes: updates what the namespace keeps, and returns the
    /// cached answers they make stale, each once.
    pub fn store_changed(&self, changes: &[StoreChange]) -> Vec<Stale> {
        if !changes.is_empty() {
            self.store.changed();
        }
        let mut stale = BTreeSet::new();
        for change in changes {
            if self.crane.is_some() {
                let tree_change = match change {
                    StoreChange::Repository(name) => TreeChange::Repository(name),
                    StoreChange::Children(prefix) => TreeChange::Children(prefix),
                    StoreChange::Everything => TreeChange::Everything,
                };
                if let Err(e) = self.crane_store_changed(tree_change) {
                    log::warn!("updating the Crane folder times after {change:?}: {e}");
                }
            }
            stale.extend(self.stale_after(change));
        }
        stale.into_iter().collect()
    }

    fn stale_after(&self, change: &StoreChange) -> Vec<Stale> {
        let crane = self.crane.is_some();
        match change {
            // Everything below a repository's folder (its tags, manifests, blobs, and
            // names not found there before) goes with the folder's own entry.
            StoreChange::Repository(name) if crane => vec![
                entry(WEB, &repo_id(name)),
                entry(APP, &format!("{}.json", repo_id(name))),
                Stale::Folder(APP.into()),
                Stale::Folder(WEB.into()),
            ],
            // The catalog lists repositories: whether a folder is one may have changed.
            StoreChange::Repository(name) => {
                let (parent, leaf) = split_name(name);
                vec![
                    entry(parent, leaf),
                    Stale::Folder(parent.into()),
                    entry("", catalog::FOLDER),
                ]
            }
            StoreChange::Children(_) if crane => {
                vec![Stale::Folder(APP.into()), Stale::Folder(WEB.into())]
            }
            StoreChange::Children(prefix) => {
                vec![Stale::Folder(prefix.clone()), entry("", catalog::FOLDER)]
            }
            StoreChange::Everything if crane => vec![entry("", APP), entry("", WEB)],
            StoreChange::Everything => {
                let mut out = vec![Stale::Folder(String::new())];
                match self.store.child_names("") {
                    Ok(names) => out.extend(names.iter().map(|n| entry("", n))),
                    Err(e) => log::warn!("after a store change: {e}"),
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_last_slash() {
        assert_eq!(split_name("a/b/c"), ("a/b", "c"));
        assert_eq!(split_name("a"), ("", "a"));
    }
}
