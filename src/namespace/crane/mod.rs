//! The Crane layout (`--layout crane`): the tree Pulp 2's docker web distributor
//! publishes for pulp/crane (`published/docker/v2/{app,web}`), mapped onto the registry
//! namespace.
//!
//! ```text
//! app/<repo_id>.json                      Crane app file, metadata version 4
//! web/<repo_id>/manifests/1/<ref>         <repo>/manifests/<ref>/schema1
//! web/<repo_id>/manifests/2/<ref>         <repo>/manifests/<ref>/schema2 (tags: stored schema2 only)
//! web/<repo_id>/manifests/list/<ref>      <repo>/manifests/<ref>/list
//! web/<repo_id>/blobs/<digest>            <repo>/blobs/<digest>
//! web/<repo_id>/tags/list                 <repo>/tags/list
//! ```
//!
//! Facts this follows (pulp_docker `plugins/distributors/publish_steps.py` and
//! `configuration.py`, crane `crane/data.py` and `crane/views/v2.py`):
//! - Crane loads every `*.json` below its `data_dir` (walked recursively, links
//!   followed); a file needs `version` 1–4, `repo-registry-id` (the name clients use,
//!   slashes allowed), `url` and `repository`; version 4 adds `schema2_data` and
//!   `manifest_list_data` (lists of tags and digests), `manifest_list_amd64_tags`
//!   (`{tag: [amd64 digest, schema version 1|2]}`) and optionally `protected`. So
//!   `data_dir` is `app/`, which holds our app files and nothing a store can name: a tag
//!   called `hijack.json` is a file below `web/`, which Crane never reads.
//! - Crane reloads every app file when the newest `st_mtime` among the folders it walks
//!   grows (or a folder vanishes): `app/`'s time is the newest time of everything any app
//!   file is made of ([`times`]).
//! - Crane redirects `/v2/<repo-registry-id>/<rest>` to `url` + `manifests/<1|2|list>/<ref>`
//!   for manifests (list if the client accepts lists and the ref is in
//!   `manifest_list_data`; for a tag in `manifest_list_amd64_tags`, its amd64 manifest
//!   `manifests/<v>/<digest>` to schema2 clients, else `manifests/1/<tag>`; schema2 if
//!   accepted and in `schema2_data`; else `manifests/1/<ref>`), and to `url` + `<rest>`
//!   for blobs and tags/list.
//! - Pulp publishes each repository under `web/<repo_id>/` (one path component: its
//!   httpd config matches `web/*/manifests/2`), with `url` defaulting to
//!   `https://<server>/pulp/docker/v2/<repo_id>/`, and writes `app/<repo_id>.json` with
//!   `type: "pulp-docker-redirect"`.
//!
//! Repository names become one path component: `/` is written `___`, which no
//! repository name contains (separators are `.`, `_`, `__` or dashes between letters
//! and digits), so the mapping is reversible. OCI manifests and indexes have no place in
//! the Crane tree and are left out.

mod app;
mod path;
pub mod times;

pub use app::{app_json, AppData};
pub use path::{parse, repo_id, repo_name, CraneNode, CranePath, Section, APP, SLASH, WEB};

use super::path::{Location, Reference};
use super::{Content, DirEntry, Namespace, Place, TimedNode};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, ManifestKind};
use crate::store::Folder;
use std::sync::Arc;
use std::time::SystemTime;

/// Options of the Crane layout.
#[derive(Clone, Debug)]
pub struct CraneOptions {
    /// Base URL the web server publishes the tree at; each repository's `url` is
    /// `<base>/<repo_id>/`.
    pub url: String,
}

/// Pulp's default publishing path, relative to the host Crane redirects from.
pub const DEFAULT_CRANE_URL: &str = "/pulp/docker/v2";

/// What a namespace in the Crane layout keeps.
pub struct CraneState {
    options: CraneOptions,
    times: times::TreeTimesCache,
}

impl CraneState {
    pub(in crate::namespace) fn new(options: CraneOptions) -> CraneState {
        CraneState {
            options,
            times: times::TreeTimesCache::default(),
        }
    }
}

impl Namespace {
    /// [`Namespace::locate`] in the Crane layout.
    pub(in crate::namespace) fn crane_locate(&self, path: &str) -> Result<Place> {
        let not_found = || Error::NotFound(path.to_string());
        let parsed = parse(path).ok_or_else(not_found)?;
        let repo = match &parsed {
            CranePath::Node(node) => node.repository(),
            CranePath::Mapped(
                Location::ManifestFile(r, ..)
                | Location::Blobs(r)
                | Location::Blob(r, _)
                | Location::Tags(r)
                | Location::TagList(r),
            ) => Some(r.as_str()),
            CranePath::Mapped(_) => return Err(not_found()),
        };
        if let Some(repo) = repo {
            if !self.store.is_repository(repo)? {
                return Err(not_found());
            }
        }
        match parsed {
            CranePath::Node(node) => Ok(Place::Crane(node)),
            CranePath::Mapped(Location::ManifestFile(repo, Reference::Tag(tag), kind))
                if kind == ManifestKind::Schema2 =>
            {
                // manifests/2/<tag>: tags of stored schema2 manifests only (a list's
                // amd64 entry is reached by its digest, as Pulp publishes it).
                let reference = Reference::Tag(tag);
                match self.tag_kind(&repo, &reference)? {
                    Some(ManifestKind::Schema2) => Ok(Place::Registry(Location::ManifestFile(
                        repo, reference, kind,
                    ))),
                    _ => Err(not_found()),
                }
            }
            CranePath::Mapped(location) => Ok(Place::Registry(location)),
        }
    }

    /// [`Namespace::lookup_place`] of a Crane-only node.
    pub(in crate::namespace) fn crane_lookup(&self, node: &CraneNode) -> Result<TimedNode> {
        Ok(match node {
            CraneNode::AppFile(repo) => {
                let url = self
                    .crane
                    .as_ref()
                    .map(|c| c.options.url.as_str())
                    .unwrap_or(DEFAULT_CRANE_URL);
                // The time first: a push between the two reads then shows as a newer
                // time at the next look, never as new content under an old time.
                let mtime = self.crane_repository_time(repo)?;
                let data = self.crane_app_data(repo)?;
                let bytes: Arc<[u8]> = app_json(repo, url, &data).into_bytes().into();
                TimedNode::file(Content::Bytes(bytes), mtime)
            }
            CraneNode::Section(repo, _) => TimedNode::dir(self.crane_repository_time(repo)?),
            CraneNode::App => TimedNode::dir(self.crane_tree_times()?.app),
            CraneNode::Web => TimedNode::dir(self.crane_tree_times()?.web),
            // Fixed listings: the time of the folder they stand for.
            CraneNode::Root => TimedNode::dir(self.folder_time(Folder::Names(""))?),
            CraneNode::RepoDir(repo) | CraneNode::Manifests(repo) => {
                TimedNode::dir(self.folder_time(Folder::Names(repo))?)
            }
        })
    }

    /// The time of everything `repo`'s app file and section folders are made of: its
    /// tags (which exist, and where each points) and its revisions. A list's platform
    /// entry is fixed by the list's digest, so the tag's time covers it.
    pub(in crate::namespace) fn crane_repository_time(&self, repo: &str) -> Result<SystemTime> {
        let mut newest = self
            .folder_time(Folder::Tags(repo))?
            .max(self.folder_time(Folder::Revisions(repo))?);
        for tag in self.store.tags(repo)?.unwrap_or_default() {
            match self.store.tag_link(repo, &tag) {
                Ok(Some(link)) => newest = newest.max(link.mtime),
                Ok(None) => {}
                // Left out of the app file too (crane_app_data).
                Err(e) => log::debug!("{e}"),
            }
        }
        Ok(newest)
    }

    /// [`Namespace::list`] in the Crane layout.
    pub(in crate::namespace) fn crane_list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = |name: String| DirEntry { name, is_dir: true };
        let file = |name: String| DirEntry {
            name,
            is_dir: false,
        };
        let mut out = match self.crane_locate(path)? {
            Place::Crane(CraneNode::Root) => vec![dir(APP.into()), dir(WEB.into())],
            Place::Crane(CraneNode::App) => self
                .repositories()?
                .iter()
                .map(|repo| file(format!("{}.json", repo_id(repo))))
                .collect(),
            Place::Crane(CraneNode::Web) => self
                .repositories()?
                .iter()
                .map(|repo| dir(repo_id(repo)))
                .collect(),
            Place::Crane(CraneNode::RepoDir(_)) => ["blobs", "manifests", "tags"]
                .iter()
                .map(|s| dir(s.to_string()))
                .collect(),
            Place::Crane(CraneNode::Manifests(_)) => {
                Section::ALL.iter().map(|s| dir(s.name().into())).collect()
            }
            Place::Crane(CraneNode::Section(repo, section)) => self
                .crane_section(&repo, section)?
                .into_iter()
                .map(file)
                .collect(),
            Place::Registry(Location::Blobs(repo)) => {
                self.list_registry(&format!("{repo}/blobs"))?
            }
            Place::Registry(Location::Tags(repo)) => self.list_registry(&format!("{repo}/tags"))?,
            _ => return Err(Error::Usage(format!("{path}: not a folder"))),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// Every repository of the store, by name.
    pub fn repositories(&self) -> Result<Vec<String>> {
        if let Some(kept) = self.kept_repositories() {
            return Ok(kept);
        }
        let mut out = Vec::new();
        self.walk_repository_folders("", |name, is_repository| {
            if is_repository {
                out.push(name.to_string());
            }
            Ok(())
        })?;
        out.sort();
        Ok(out)
    }

    /// The stored kind of a manifest, None if it is not there.
    fn stored_kind(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestKind>> {
        let Some(doc) = self.store.manifest(repo, digest)? else {
            return Ok(None);
        };
        manifest::parse(&doc.bytes)
            .map(|p| Some(p.kind))
            .map_err(|e| Error::invalid(&doc.path, format!("manifest {digest}: {e}")))
    }

    fn tag_kind(&self, repo: &str, reference: &Reference) -> Result<Option<ManifestKind>> {
        let digest = match reference {
            Reference::Tag(t) => match self.store.tag_digest(repo, t)? {
                Some(d) => d,
                None => return Ok(None),
            },
            Reference::Digest(d) => d.clone(),
        };
        self.stored_kind(repo, &digest)
    }

    /// The tags and digests a section lists. Unreadable manifests are logged and left out.
    fn crane_section(&self, repo: &str, section: Section) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for tag in self.store.tags(repo)?.unwrap_or_default() {
            let reference = Reference::Tag(tag.clone());
            let present = match section {
                Section::Two => self
                    .tag_kind(repo, &reference)
                    .map(|k| k == Some(ManifestKind::Schema2)),
                Section::One | Section::List => self
                    .representations(repo, &reference)
                    .map(|r| r.is_some_and(|r| r.files.contains_key(&section.kind()))),
            };
            match present {
                Ok(true) => out.push(tag),
                Ok(false) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        for digest in self.store.manifest_digests(repo)? {
            match self.stored_kind(repo, &digest) {
                Ok(Some(kind)) if kind == section.kind() => out.push(digest.as_str().to_string()),
                Ok(_) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(out)
    }

    /// What the app file of `repo` lists.
    fn crane_app_data(&self, repo: &str) -> Result<AppData> {
        let mut data = AppData::default();
        for digest in self.store.manifest_digests(repo)? {
            match self.stored_kind(repo, &digest) {
                Ok(Some(ManifestKind::Schema2)) => data.schema2.push(digest.as_str().into()),
                Ok(Some(ManifestKind::List)) => data.lists.push(digest.as_str().into()),
                Ok(_) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        for tag in self.store.tags(repo)?.unwrap_or_default() {
            let Some(digest) = self.store.tag_digest(repo, &tag)? else {
                continue;
            };
            let Some(doc) = self.store.manifest(repo, &digest)? else {
                continue;
            };
            let parsed = match manifest::parse(&doc.bytes) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("{}: manifest {digest}: {e}", doc.path.display());
                    continue;
                }
            };
            match (parsed.kind, &parsed.manifest) {
                (ManifestKind::Schema2, _) => data.schema2.push(tag),
                (ManifestKind::List, Manifest::Index { manifests }) => {
                    data.lists.push(tag.clone());
                    let Some(entry) = self.config.platform.pick(manifests) else {
                        continue;
                    };
                    let Ok(child) = Digest::parse(&entry.digest) else {
                        continue;
                    };
                    let version = match self.stored_kind(repo, &child) {
                        Ok(Some(ManifestKind::Schema2)) => 2,
                        Ok(Some(ManifestKind::Schema1)) => 1,
                        _ => continue,
                    };
                    data.amd64
                        .insert(tag, (child.as_str().to_string(), version));
                }
                _ => {}
            }
        }
        Ok(data)
    }
}
