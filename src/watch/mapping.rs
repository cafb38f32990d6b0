//! Which [`StoreChange`]s a changed entry of a store stands for: pure, no system calls.
//!
//! An event names a folder (relative to the watched store folder, "" for the folder
//! itself) and an entry in it. The changes returned for an entry also cover every path
//! below it: when a whole subtree is gone before its events are read, only the event
//! for its top-most folder (in a folder that still exists) can be mapped, and that one
//! must be enough. The watcher relies on this (see `fanotify.rs`).

use super::{Layout, StoreChange};

/// The changes that a created, removed, moved or written entry `name` of the folder
/// `rel_dir` stands for; empty when it changes nothing a consumer can see.
pub(super) fn changes_for(layout: Layout, rel_dir: &str, name: &str) -> Vec<StoreChange> {
    match layout {
        Layout::Distribution => distribution(rel_dir, name),
        Layout::OciLayout => oci_layout(rel_dir, name),
        // Never watched with fanotify; an event would be about the cache folder.
        Layout::Remote => Vec::new(),
    }
}

/// `repositories/<name…>/{_manifests,_layers}/…` belongs to repository `name`; a folder
/// directly below `repositories/<prefix>` is a repository or namespace folder.
/// `blobs/` is ignored (blob data never changes what a name points to on its own), and
/// so is `_uploads/` (in-progress uploads).
fn distribution(rel_dir: &str, name: &str) -> Vec<StoreChange> {
    let mut dir = rel_dir.split('/').filter(|c| !c.is_empty());
    match dir.next() {
        None if name == "repositories" => return vec![StoreChange::Children(String::new())],
        Some("repositories") => {}
        _ => return Vec::new(),
    }
    // The repository-name components, up to the first `_` folder (if any).
    let mut repo: Vec<&str> = Vec::new();
    let mut below = None;
    for component in dir {
        if component.starts_with('_') {
            below = Some(component);
            break;
        }
        repo.push(component);
    }
    let repo = repo.join("/");
    match below {
        // Inside a repository's own folders: only these two are read.
        Some("_manifests" | "_layers") if !repo.is_empty() => vec![StoreChange::Repository(repo)],
        Some(_) => Vec::new(),
        // A repository's own folder appeared or vanished.
        None if name == "_manifests" || name == "_layers" => {
            if repo.is_empty() {
                Vec::new()
            } else {
                vec![StoreChange::Repository(repo)]
            }
        }
        None if name.starts_with('_') => Vec::new(),
        // A repository or namespace folder appeared, vanished or was replaced: its parent's
        // list changes, and whatever a consumer holds for the folder itself (as a
        // repository, and its own list of folders) is stale, because a folder removed and
        // created again between two reads looks unchanged from the parent.
        None => {
            let child = if repo.is_empty() {
                name.to_string()
            } else {
                format!("{repo}/{name}")
            };
            vec![
                StoreChange::Children(repo),
                StoreChange::Children(child.clone()),
                StoreChange::Repository(child),
            ]
        }
    }
}

/// Everything an OCI layout says is in `index.json` (written in place or renamed into
/// place); blobs are addressed by digest and never change meaning.
fn oci_layout(rel_dir: &str, name: &str) -> Vec<StoreChange> {
    if rel_dir.is_empty() && name == "index.json" {
        vec![StoreChange::Everything]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StoreChange::{Children, Everything, Repository};

    fn dist(rel_dir: &str, name: &str) -> Vec<StoreChange> {
        changes_for(Layout::Distribution, rel_dir, name)
    }

    fn repo(name: &str) -> StoreChange {
        Repository(name.to_string())
    }

    fn children(prefix: &str) -> StoreChange {
        Children(prefix.to_string())
    }

    #[test]
    fn repository_content_maps_to_its_repository() {
        for (dir, name) in [
            ("repositories/a/b/_manifests/tags/v1/current", "link"),
            ("repositories/a/b/_manifests/tags", "v1"),
            ("repositories/a/b/_manifests/revisions/sha256/ab", "link"),
            ("repositories/a/b/_manifests/tags/v1/index/sha256", "cd"),
            ("repositories/a/b/_layers/sha256/ef", "link"),
            ("repositories/a/b/_layers", "sha256"),
            ("repositories/a/b", "_manifests"),
            ("repositories/a/b", "_layers"),
        ] {
            assert_eq!(dist(dir, name), [repo("a/b")], "{dir} {name}");
        }
    }

    #[test]
    fn name_folders_map_to_their_parent_and_themselves() {
        assert_eq!(
            dist("repositories/ns", "newrepo"),
            [children("ns"), children("ns/newrepo"), repo("ns/newrepo")]
        );
        assert_eq!(
            dist("repositories", "ns"),
            [children(""), children("ns"), repo("ns")]
        );
        assert_eq!(dist("", "repositories"), [children("")]);
    }

    #[test]
    fn uploads_blobs_and_unknown_folders_change_nothing() {
        for (dir, name) in [
            ("repositories/a/_uploads/0f3c/hashstates/sha256", "0"),
            ("repositories/a/_uploads/0f3c", "data"),
            ("repositories/a/_uploads", "0f3c"),
            ("repositories/a", "_uploads"),
            ("repositories/a", "_other"),
            ("repositories/a/_other", "x"),
            ("repositories", "_manifests"),
            ("repositories/_manifests/tags", "v1"),
            ("blobs/sha256/ab/ab12", "data"),
            ("blobs", "sha256"),
            ("", "blobs"),
            ("", "stray-file"),
            ("elsewhere/a", "b"),
        ] {
            assert_eq!(dist(dir, name), [], "{dir} {name}");
        }
    }

    #[test]
    fn oci_layout_changes_only_with_its_index() {
        assert_eq!(
            changes_for(Layout::OciLayout, "", "index.json"),
            [Everything]
        );
        for (dir, name) in [
            ("", "index.json.tmp"),
            ("", "blobs"),
            ("blobs/sha256", "ab12"),
            ("blobs", "index.json"),
        ] {
            assert_eq!(
                changes_for(Layout::OciLayout, dir, name),
                [],
                "{dir} {name}"
            );
        }
    }

    /// What an event for a path deep inside a subtree maps to is covered by what the
    /// event for the subtree's top folder maps to: the reasoning that lets the watcher
    /// drop events of folders that are already gone.
    #[test]
    fn a_subtree_top_covers_everything_below_it() {
        let covered = |top: &[StoreChange], deep: &[StoreChange]| {
            deep.iter().all(|d| match d {
                Repository(name) | Children(name) => top.iter().any(|t| match t {
                    Everything => true,
                    Children(p) => {
                        let prefix = if p.is_empty() {
                            String::new()
                        } else {
                            format!("{p}/")
                        };
                        name.starts_with(&prefix) && name.len() > prefix.len()
                    }
                    Repository(r) => r == name,
                }),
                Everything => top.contains(&Everything),
            })
        };
        let deep = [
            ("repositories/ns/app/_manifests/tags/v1/current", "link"),
            ("repositories/ns/app/sub", "_layers"),
            ("repositories/ns/app/sub/x", "y"),
            ("repositories/ns/app", "_manifests"),
        ];
        for (top_dir, top_name) in [
            ("", "repositories"),
            ("repositories", "ns"),
            ("repositories/ns", "app"),
        ] {
            let top = dist(top_dir, top_name);
            let top_path = format!("{top_dir}/{top_name}");
            for (dir, name) in deep {
                if format!("{dir}/").starts_with(&format!("{}/", top_path.trim_start_matches('/')))
                {
                    assert!(
                        covered(&top, &dist(dir, name)),
                        "{top_path} covers {dir}/{name}"
                    );
                }
            }
        }
        let top = dist("repositories/ns/app/_manifests", "tags");
        assert!(covered(
            &top,
            &dist("repositories/ns/app/_manifests/tags/v1/current", "link")
        ));
    }
}
