//! The Crane layout (`--layout crane`): the tree Pulp 2's docker web distributor
//! publishes for pulp/crane, mapped onto the registry namespace.
//!
//! ```text
//! <repo_id>.json                      Crane app file, metadata version 4
//! <repo_id>/manifests/1/<ref>         <repo>/manifests/<ref>/schema1
//! <repo_id>/manifests/2/<ref>         <repo>/manifests/<ref>/schema2 (tags: stored schema2 only)
//! <repo_id>/manifests/list/<ref>      <repo>/manifests/<ref>/list
//! <repo_id>/blobs/<digest>            <repo>/blobs/<digest>
//! <repo_id>/tags/list                 <repo>/tags/list
//! ```
//!
//! Facts this follows (pulp_docker `plugins/distributors/publish_steps.py` and
//! `configuration.py`, crane `crane/data.py` and `crane/views/v2.py`):
//! - Crane loads every `*.json` below its `data_dir` (walked recursively, links
//!   followed); a file needs `version` 1–4, `repo-registry-id` (the name clients use,
//!   slashes allowed), `url` and `repository`; version 4 adds `schema2_data` and
//!   `manifest_list_data` (lists of tags and digests), `manifest_list_amd64_tags`
//!   (`{tag: [amd64 digest, schema version 1|2]}`) and optionally `protected`.
//! - Crane redirects `/v2/<repo-registry-id>/<rest>` to `url` + `manifests/<1|2|list>/<ref>`
//!   for manifests (list if the client accepts lists and the ref is in
//!   `manifest_list_data`; for a tag in `manifest_list_amd64_tags`, its amd64 manifest
//!   `manifests/<v>/<digest>` to schema2 clients, else `manifests/1/<tag>`; schema2 if
//!   accepted and in `schema2_data`; else `manifests/1/<ref>`), and to `url` + `<rest>`
//!   for blobs and tags/list.
//! - Pulp publishes each repository under `<web>/<repo_id>/` (one path component: its
//!   httpd config matches `web/*/manifests/2`), with `url` defaulting to
//!   `https://<server>/pulp/docker/v2/<repo_id>/`, and writes `<repo_id>.json` with
//!   `type: "pulp-docker-redirect"`.
//!
//! Repository names become one path component: `/` is written `___`, which no
//! repository name contains (separators are `.`, `_`, `__` or dashes between letters
//! and digits), so the mapping is reversible. OCI manifests and indexes have no place in
//! the Crane tree and are left out.

use super::path::{Location, Reference};
use super::{Content, DirEntry, Namespace, Node};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, ManifestKind};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Options of the Crane layout.
#[derive(Clone, Debug)]
pub struct CraneOptions {
    /// Base URL the web server publishes the tree at; each repository's `url` is
    /// `<base>/<repo_id>/`.
    pub url: String,
}

/// Pulp's default publishing path, relative to the host Crane redirects from.
pub const DEFAULT_CRANE_URL: &str = "/pulp/docker/v2";

/// Where `/` goes in a repository id.
pub const SLASH: &str = "___";

/// The Crane repository id of a repository name.
pub fn repo_id(name: &str) -> String {
    name.replace('/', SLASH)
}

/// The repository name of a Crane repository id, if `id` is one we would write.
pub fn repo_name(id: &str) -> Option<String> {
    let name = id.replace(SLASH, "/");
    let canonical = !id.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name
            .split('/')
            .any(|c| c.starts_with('_') || c == "." || c == "..")
        && repo_id(&name) == id;
    canonical.then_some(name)
}

/// The three manifest folders of a Crane repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `manifests/1`: schema1.
    One,
    /// `manifests/2`: schema2.
    Two,
    /// `manifests/list`: manifest lists.
    List,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::One, Section::Two, Section::List];

    pub fn name(self) -> &'static str {
        match self {
            Section::One => "1",
            Section::Two => "2",
            Section::List => "list",
        }
    }

    fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The file of a registry manifest folder this section serves.
    pub fn kind(self) -> ManifestKind {
        match self {
            Section::One => ManifestKind::Schema1,
            Section::Two => ManifestKind::Schema2,
            Section::List => ManifestKind::List,
        }
    }
}

/// A node of the Crane tree that has no counterpart in the registry namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CraneNode {
    Root,
    /// `<repo_id>.json` of the named repository.
    AppFile(String),
    /// `<repo_id>/`.
    RepoDir(String),
    /// `<repo_id>/manifests/`.
    Manifests(String),
    /// `<repo_id>/manifests/<1|2|list>/`.
    Section(String, Section),
}

impl CraneNode {
    pub fn is_dir(&self) -> bool {
        !matches!(self, CraneNode::AppFile(_))
    }
}

/// A Crane path, parsed without the store: what it names if the repository exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CranePath {
    Node(CraneNode),
    /// A registry-namespace location (files and the blobs/tags folders).
    Mapped(Location),
}

/// Parses a Crane path ("a___b/manifests/2/latest"). Pure; None if it can name nothing.
pub fn parse(path: &str) -> Option<CranePath> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let node = |n| Some(CranePath::Node(n));
    let mapped = |l| Some(CranePath::Mapped(l));
    match parts.as_slice() {
        [] => node(CraneNode::Root),
        [file] if file.ends_with(".json") => {
            let name = repo_name(file.strip_suffix(".json")?)?;
            node(CraneNode::AppFile(name))
        }
        [id, rest @ ..] => {
            let name = repo_name(id)?;
            match rest {
                [] => node(CraneNode::RepoDir(name)),
                ["manifests"] => node(CraneNode::Manifests(name)),
                ["manifests", s] => node(CraneNode::Section(name, Section::from_name(s)?)),
                ["manifests", s, r] => {
                    let section = Section::from_name(s)?;
                    mapped(Location::ManifestFile(
                        name,
                        Reference::parse(r)?,
                        section.kind(),
                    ))
                }
                ["blobs"] => mapped(Location::Blobs(name)),
                ["blobs", d] => {
                    let digest = Digest::parse(d).ok().filter(|d| d.sha256_hex().is_some())?;
                    mapped(Location::Blob(name, digest))
                }
                ["tags"] => mapped(Location::Tags(name)),
                ["tags", "list"] => mapped(Location::TagList(name)),
                _ => None,
            }
        }
    }
}

/// What the app file of a repository says (besides names and URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppData {
    /// Tags and digests of stored schema2 manifests.
    pub schema2: Vec<String>,
    /// Tags and digests of stored manifest lists.
    pub lists: Vec<String>,
    /// List tags → (their platform entry's digest, 1 or 2).
    pub amd64: BTreeMap<String, (String, u8)>,
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn json_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// The Crane metadata file (version 4), in the shape pulp_docker writes it (Python's
/// `json.dumps`), lists sorted.
pub fn app_json(name: &str, base_url: &str, data: &AppData) -> String {
    let id = repo_id(name);
    let url = format!("{}/{id}/", base_url.trim_end_matches('/'));
    let mut schema2 = data.schema2.clone();
    schema2.sort();
    schema2.dedup();
    let mut lists = data.lists.clone();
    lists.sort();
    lists.dedup();
    let amd64: Vec<String> = data
        .amd64
        .iter()
        .map(|(tag, (digest, v))| format!("{}: [{}, {v}]", json_string(tag), json_string(digest)))
        .collect();
    format!(
        "{{\"type\": \"pulp-docker-redirect\", \"version\": 4, \"repository\": {}, \
         \"repo-registry-id\": {}, \"url\": {}, \"protected\": false, \
         \"schema2_data\": {}, \"manifest_list_data\": {}, \"manifest_list_amd64_tags\": {{{}}}}}\n",
        json_string(&id),
        json_string(name),
        json_string(&url),
        json_list(&schema2),
        json_list(&lists),
        amd64.join(", ")
    )
}

impl Namespace {
    /// [`Namespace::locate`] in the Crane layout.
    pub(super) fn crane_locate(&self, path: &str) -> Result<Location> {
        let not_found = || Error::NotFound(path.to_string());
        let parsed = parse(path).ok_or_else(not_found)?;
        let repo = match &parsed {
            CranePath::Node(CraneNode::Root) => None,
            CranePath::Node(
                CraneNode::AppFile(r)
                | CraneNode::RepoDir(r)
                | CraneNode::Manifests(r)
                | CraneNode::Section(r, _),
            ) => Some(r.as_str()),
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
            CranePath::Node(node) => Ok(Location::Crane(node)),
            CranePath::Mapped(Location::ManifestFile(repo, Reference::Tag(tag), kind))
                if kind == ManifestKind::Schema2 =>
            {
                // manifests/2/<tag>: tags of stored schema2 manifests only (a list's
                // amd64 entry is reached by its digest, as Pulp publishes it).
                let reference = Reference::Tag(tag);
                match self.tag_kind(&repo, &reference)? {
                    Some(ManifestKind::Schema2) => {
                        Ok(Location::ManifestFile(repo, reference, kind))
                    }
                    _ => Err(not_found()),
                }
            }
            CranePath::Mapped(location) => Ok(location),
        }
    }

    /// [`Namespace::lookup_location`] of a Crane-only node.
    pub(super) fn crane_lookup(&self, node: &CraneNode) -> Result<Node> {
        match node {
            CraneNode::AppFile(repo) => {
                let url = self
                    .crane
                    .as_ref()
                    .map(|c| c.url.as_str())
                    .unwrap_or(DEFAULT_CRANE_URL);
                let data = self.crane_app_data(repo)?;
                let bytes: Arc<[u8]> = app_json(repo, url, &data).into_bytes().into();
                Ok(Node::File(Content::Bytes(bytes)))
            }
            _ => Ok(Node::Dir),
        }
    }

    /// [`Namespace::list`] in the Crane layout.
    pub(super) fn crane_list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = |name: String| DirEntry { name, is_dir: true };
        let file = |name: String| DirEntry {
            name,
            is_dir: false,
        };
        let mut out = match self.crane_locate(path)? {
            Location::Crane(CraneNode::Root) => {
                let mut out = Vec::new();
                for repo in self.repositories()? {
                    let id = repo_id(&repo);
                    out.push(file(format!("{id}.json")));
                    out.push(dir(id));
                }
                out
            }
            Location::Crane(CraneNode::RepoDir(_)) => ["blobs", "manifests", "tags"]
                .iter()
                .map(|s| dir(s.to_string()))
                .collect(),
            Location::Crane(CraneNode::Manifests(_)) => {
                Section::ALL.iter().map(|s| dir(s.name().into())).collect()
            }
            Location::Crane(CraneNode::Section(repo, section)) => self
                .crane_section(&repo, section)?
                .into_iter()
                .map(file)
                .collect(),
            Location::Blobs(repo) => self.list_registry(&format!("{repo}/blobs"))?,
            Location::Tags(repo) => self.list_registry(&format!("{repo}/tags"))?,
            _ => return Err(Error::Usage(format!("{path}: not a folder"))),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// Every repository of the store, by name.
    fn repositories(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(prefix) = pending.pop() {
            for child in self.store.child_names(&prefix)? {
                let name = if prefix.is_empty() {
                    child
                } else {
                    format!("{prefix}/{child}")
                };
                if self.store.is_repository(&name)? {
                    out.push(name.clone());
                }
                pending.push(name);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repo_ids_are_one_component_and_reversible() {
        assert_eq!(repo_id("single"), "single");
        assert_eq!(repo_id("a/b/c"), "a___b___c");
        assert_eq!(repo_id("library/my_app__x"), "library___my_app__x");
        for name in [
            "single",
            "a/b/c",
            "library/my_app__x",
            "Registry.example/x-y",
        ] {
            assert_eq!(repo_name(&repo_id(name)).as_deref(), Some(name));
            assert!(!repo_id(name).contains('/'));
        }
        for bad in ["", "___a", "a___", "a______b", "a/b", "_x", "a_____b"] {
            assert_eq!(repo_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_map_onto_the_registry_namespace() {
        let m = |p: &str| parse(p);
        let tag = |t: &str| Reference::Tag(t.into());
        let digest = Reference::Digest(Digest::parse(D).unwrap());
        assert_eq!(m(""), Some(CranePath::Node(CraneNode::Root)));
        assert_eq!(
            m("a___b.json"),
            Some(CranePath::Node(CraneNode::AppFile("a/b".into())))
        );
        assert_eq!(
            m("a___b/"),
            Some(CranePath::Node(CraneNode::RepoDir("a/b".into())))
        );
        assert_eq!(
            m("a___b/manifests"),
            Some(CranePath::Node(CraneNode::Manifests("a/b".into())))
        );
        assert_eq!(
            m("x/manifests/list"),
            Some(CranePath::Node(CraneNode::Section(
                "x".into(),
                Section::List
            )))
        );
        assert_eq!(
            m("a___b/manifests/1/latest"),
            Some(CranePath::Mapped(Location::ManifestFile(
                "a/b".into(),
                tag("latest"),
                ManifestKind::Schema1
            )))
        );
        assert_eq!(
            m(&format!("x/manifests/2/{D}")),
            Some(CranePath::Mapped(Location::ManifestFile(
                "x".into(),
                digest.clone(),
                ManifestKind::Schema2
            )))
        );
        assert_eq!(
            m("x/manifests/list/v1.0"),
            Some(CranePath::Mapped(Location::ManifestFile(
                "x".into(),
                tag("v1.0"),
                ManifestKind::List
            )))
        );
        assert_eq!(
            m(&format!("x/blobs/{D}")),
            Some(CranePath::Mapped(Location::Blob(
                "x".into(),
                Digest::parse(D).unwrap()
            )))
        );
        assert_eq!(
            m("x/blobs"),
            Some(CranePath::Mapped(Location::Blobs("x".into())))
        );
        assert_eq!(
            m("x/tags/list"),
            Some(CranePath::Mapped(Location::TagList("x".into())))
        );
        for bad in [
            "x/manifests/3/latest",
            "x/manifests/2/latest/extra",
            "x/manifests/2/-bad",
            "x/blobs/md5:00",
            "x/tags/other",
            "x/other",
            "a/b/manifests",
            "___.json",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }

    #[test]
    fn app_file_is_crane_metadata_version_4() {
        let mut data = AppData {
            schema2: vec!["latest".into(), D.into()],
            lists: vec!["multi".into()],
            ..AppData::default()
        };
        data.amd64.insert("multi".into(), (D.into(), 2));
        let text = app_json("a/b", "https://h.example/pulp/docker/v2/", &data);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 4);
        assert_eq!(v["type"], "pulp-docker-redirect");
        assert_eq!(v["repository"], "a___b");
        assert_eq!(v["repo-registry-id"], "a/b");
        assert_eq!(v["url"], "https://h.example/pulp/docker/v2/a___b/");
        assert_eq!(v["protected"], false);
        assert_eq!(v["schema2_data"], serde_json::json!(["latest", D]));
        assert_eq!(v["manifest_list_data"], serde_json::json!(["multi"]));
        assert_eq!(
            v["manifest_list_amd64_tags"],
            serde_json::json!({"multi": [D, 2]})
        );
        assert!(text.starts_with("{\"type\": \"pulp-docker-redirect\", \"version\": 4, "));
        let empty = app_json("x", "/pulp/docker/v2", &AppData::default());
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert_eq!(v["url"], "/pulp/docker/v2/x/");
        assert_eq!(v["manifest_list_amd64_tags"], serde_json::json!({}));
    }
}
