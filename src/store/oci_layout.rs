//! The OCI image layout: `oci-layout`, `index.json` and `blobs/<alg>/<hex>`.
//!
//! Tags come from `org.opencontainers.image.ref.name` on `index.json` entries. A plain
//! tag belongs to the layout's default repository; a full reference (`name:tag`, as some
//! tools write) names its own repository. Every manifest reachable from `index.json`
//! (nested indexes included) and every blob is shared by all repositories of the layout.

use super::fsutil::{FileIdentity, FileMeta, IfChanged, Root};
use super::{BlobFile, BlobReader, Document, Folder, Store, TagLink, MAX_DOCUMENT_BYTES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::{is_repository_name, is_tag};
use crate::manifest::{self, Manifest};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How deep nested indexes are followed; deeper ones are logged and skipped.
const MAX_INDEX_DEPTH: usize = 8;

#[derive(Debug)]
pub struct OciLayoutStore {
    root: Root,
    default_repository: String,
    /// Warnings already logged: a bad entry would otherwise be logged every time
    /// index.json is read again.
    warned: Mutex<HashSet<String>>,
    /// index.json as last read, with the file identity it was read at: every call
    /// checks the identity (one `open` and `fstat`) and reads the file again only when
    /// it changed, so a rewritten index shows up at once.
    index: Mutex<Option<(FileIdentity, Arc<Index>)>>,
}

/// What index.json says (with every manifest it reaches: nested indexes are
/// content-addressed, so they cannot change under the same index.json).
#[derive(Debug)]
struct Index {
    /// Each repository's (tag, digest)s in index order; later duplicates of a name are
    /// dropped. By repository, so that a lookup does not go through every tag of a
    /// layout with 10k repositories.
    tags: BTreeMap<String, Vec<(String, Digest)>>,
    manifests: BTreeSet<Digest>,
    /// index.json's: every tag, repository and manifest listing derives from it.
    mtime: SystemTime,
}

impl OciLayoutStore {
    pub fn open(dir: &Path, repository: Option<&str>) -> Result<OciLayoutStore> {
        let root = Root::new(dir)?;
        let layout = root
            .read_limited("oci-layout", 4096)?
            .ok_or_else(|| Error::invalid(dir, "no oci-layout file"))?;
        let tape = crate::gojson::parse(&layout)
            .map_err(|e| Error::invalid(dir.join("oci-layout"), e.to_string()))?;
        if !tape
            .root()
            .members()
            .any(|(k, _)| k == "imageLayoutVersion")
        {
            return Err(Error::invalid(
                dir.join("oci-layout"),
                "no imageLayoutVersion",
            ));
        }
        let default_repository = match repository {
            Some(name) => name.to_string(),
            None => root
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        if !is_repository_name(&default_repository) {
            return Err(Error::Usage(format!(
                "{default_repository:?} is not a repository name; name the OCI layout's repository with --oci-repo"
            )));
        }
        Ok(OciLayoutStore {
            root,
            default_repository,
            warned: Mutex::new(HashSet::new()),
            index: Mutex::new(None),
        })
    }

    /// Logs `msg` the first time it comes up.
    fn warn_once(&self, msg: String) {
        if let Ok(mut warned) = self.warned.lock() {
            if warned.len() > 4096 {
                warned.clear();
            }
            if warned.insert(msg.clone()) {
                log::warn!("{msg}");
            }
        }
    }

    /// The blob of a manifest that index.json (or an index it names) lists for a
    /// repository: None if it lists no such manifest, not found (with the reason) if it
    /// does but the blob is missing.
    fn manifest_blob(&self, repo: &str, digest: &Digest) -> Result<Option<FileMeta>> {
        if !self.is_repository(repo)? || !self.index()?.manifests.contains(digest) {
            return Ok(None);
        }
        let index = self.root.dir.join("index.json");
        let Some(hex) = digest.sha256_hex() else {
            return Err(Error::invalid(
                index,
                format!("{digest} cannot name a blob of the layout (only lower-case sha256 does)"),
            ));
        };
        let rel = format!("blobs/sha256/{hex}");
        match self.root.regular_file(&rel)? {
            Some(meta) => Ok(Some(meta)),
            None => Err(Error::NotFound(format!(
                "{}: names {digest}, whose blob {} is missing",
                index.display(),
                self.root.dir.join(rel).display()
            ))),
        }
    }

    fn read_manifest_blob(&self, digest: &Digest) -> Result<Option<Document>> {
        let Some(hex) = digest.sha256_hex() else {
            return Ok(None);
        };
        let rel = format!("blobs/sha256/{hex}");
        Ok(self
            .root
            .read_verified(&rel, digest, MAX_DOCUMENT_BYTES)?
            .map(|(meta, bytes)| Document {
                path: meta.path,
                bytes: bytes.into(),
                mtime: meta.mtime,
            }))
    }

    fn index(&self) -> Result<Arc<Index>> {
        let path = self.root.dir.join("index.json");
        let mut kept = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let known = kept.as_ref().map(|(identity, _)| identity);
        let read = self
            .root
            .read_if_changed("index.json", MAX_DOCUMENT_BYTES, known)?
            .ok_or_else(|| Error::invalid(&path, "missing"))?;
        match read {
            IfChanged::Unchanged => match kept.as_ref() {
                Some((_, index)) => Ok(index.clone()),
                None => Err(Error::invalid(
                    &path,
                    "read as unchanged before it was read",
                )),
            },
            IfChanged::Changed {
                bytes,
                mtime,
                identity,
            } => {
                let index = Arc::new(self.parse_index(&path, &bytes, mtime)?);
                *kept = Some((identity, index.clone()));
                Ok(index)
            }
        }
    }

    fn parse_index(&self, path: &Path, bytes: &[u8], mtime: SystemTime) -> Result<Index> {
        let parsed = manifest::parse(bytes).map_err(|e| Error::invalid(path, e))?;
        let Manifest::Index { manifests } = parsed.manifest else {
            return Err(Error::invalid(path, "index.json is not an image index"));
        };
        let mut index = Index {
            tags: BTreeMap::new(),
            manifests: BTreeSet::new(),
            mtime,
        };
        let mut seen_names = BTreeSet::new();
        for d in &manifests {
            let Ok(digest) = Digest::parse(&d.digest) else {
                self.warn_once(format!(
                    "{}: skipping entry with bad digest {:?}",
                    path.display(),
                    d.digest
                ));
                continue;
            };
            if let Some((_, name)) = d.annotations.iter().find(|(k, _)| k == REF_NAME) {
                match self.split_ref_name(name) {
                    Some((repo, tag)) if seen_names.insert((repo.clone(), tag.clone())) => index
                        .tags
                        .entry(repo)
                        .or_default()
                        .push((tag, digest.clone())),
                    Some(_) => self.warn_once(format!(
                        "{}: duplicate ref.name {name:?}; keeping the first",
                        path.display()
                    )),
                    None => self.warn_once(format!(
                        "{}: ref.name {name:?} is not a tag or name:tag; skipped",
                        path.display()
                    )),
                }
            }
            self.collect_manifests(&digest, 0, &mut index.manifests);
        }
        Ok(index)
    }

    /// A ref.name as (repository, tag): a bare tag goes to the default repository.
    fn split_ref_name(&self, name: &str) -> Option<(String, String)> {
        if is_tag(name) {
            return Some((self.default_repository.clone(), name.to_string()));
        }
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let colon = slash + name[slash..].rfind(':')?;
        let (repo, tag) = (&name[..colon], &name[colon + 1..]);
        (is_repository_name(repo) && is_tag(tag)).then(|| (repo.to_string(), tag.to_string()))
    }

    fn collect_manifests(&self, digest: &Digest, depth: usize, out: &mut BTreeSet<Digest>) {
        if !out.insert(digest.clone()) {
            return;
        }
        if depth >= MAX_INDEX_DEPTH {
            self.warn_once(format!(
                "{}: nested indexes deeper than {MAX_INDEX_DEPTH}; not followed",
                self.root.dir.display()
            ));
            return;
        }
        match self.read_manifest_blob(digest) {
            Ok(Some(doc)) => {
                if let Ok(manifest::ParsedManifest {
                    manifest: Manifest::Index { manifests },
                    ..
                }) = manifest::parse(&doc.bytes)
                {
                    for child in manifests
                        .iter()
                        .filter_map(|d| Digest::parse(&d.digest).ok())
                    {
                        self.collect_manifests(&child, depth + 1, out);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => self.warn_once(e.to_string()),
        }
    }

    /// The repositories' index (None: index.json is broken). A broken index.json loses
    /// the tags, not the layout: the default repository and its blobs keep serving, and
    /// what needs the index fails naming it.
    fn index_if_sound(&self) -> Option<Arc<Index>> {
        match self.index() {
            Ok(index) => Some(index),
            Err(e) => {
                self.warn_once(e.to_string());
                None
            }
        }
    }

    /// Repository names below `prefix/` (all of them for ""), in byte order.
    fn repositories_below(&self, prefix: &str) -> Vec<String> {
        let start = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut names: BTreeSet<String> = self
            .index_if_sound()
            .map(|index| {
                index
                    .tags
                    .range(start.clone()..)
                    .map(|(repo, _)| repo)
                    .take_while(|repo| repo.starts_with(&start))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if self.default_repository.starts_with(&start) {
            names.insert(self.default_repository.clone());
        }
        names.into_iter().collect()
    }
}

impl Store for OciLayoutStore {
    fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let skip = if prefix.is_empty() {
            0
        } else {
            prefix.len() + 1
        };
        let names: BTreeSet<String> = self
            .repositories_below(prefix)
            .iter()
            .filter_map(|repo| repo[skip..].split('/').next().map(str::to_string))
            .collect();
        Ok(names.into_iter().collect())
    }

    fn has_child(&self, prefix: &str, child: &str) -> Result<bool> {
        let full = if prefix.is_empty() {
            child.to_string()
        } else {
            format!("{prefix}/{child}")
        };
        // One step into the ordered names, not a list of all of them: this is asked
        // for every folder above every lookup.
        let below = format!("{full}/");
        Ok(self.is_repository(&full)?
            || self.default_repository.starts_with(&below)
            || self.index_if_sound().is_some_and(|index| {
                index
                    .tags
                    .range(below.clone()..)
                    .next()
                    .is_some_and(|(repo, _)| repo.starts_with(&below))
            }))
    }

    fn is_repository(&self, name: &str) -> Result<bool> {
        Ok(name == self.default_repository
            || self
                .index_if_sound()
                .is_some_and(|index| index.tags.contains_key(name)))
    }

    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        if !self.is_repository(repo)? {
            return Ok(None);
        }
        Ok(Some(
            self.index()?
                .tags
                .get(repo)
                .map(|tags| tags.iter().map(|(t, _)| t.clone()).collect())
                .unwrap_or_default(),
        ))
    }

    fn tag_link(&self, repo: &str, tag: &str) -> Result<Option<TagLink>> {
        let index = self.index()?;
        let mtime = index.mtime;
        Ok(index
            .tags
            .get(repo)
            .and_then(|tags| tags.iter().find(|(t, _)| t == tag))
            .map(|(_, digest)| TagLink {
                digest: digest.clone(),
                mtime,
            }))
    }

    fn folder_mtime(&self, folder: Folder<'_>) -> Result<Option<SystemTime>> {
        match folder {
            // Every repository shares the layout's blobs.
            Folder::Layers(_) => self.root.dir_mtime("blobs/sha256"),
            Folder::Names(_) | Folder::Tags(_) | Folder::Revisions(_) => {
                let rel = "index.json";
                Ok(self.root.regular_file(rel)?.map(|meta| meta.mtime))
            }
        }
    }

    fn manifest_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        if !self.is_repository(repo)? {
            return Ok(Vec::new());
        }
        let index = self.index()?;
        let mut out = Vec::new();
        for d in index.manifests.iter().cloned() {
            if d.sha256_hex().is_some()
                && self
                    .root
                    .regular_file(&format!("blobs/sha256/{}", d.encoded()))?
                    .is_some()
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        if self.manifest_blob(repo, digest)?.is_none() {
            return Ok(None);
        }
        self.read_manifest_blob(digest)
    }

    fn manifest_mtime(&self, repo: &str, digest: &Digest) -> Result<Option<SystemTime>> {
        Ok(self.manifest_blob(repo, digest)?.map(|meta| meta.mtime))
    }

    fn blob_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        if !self.is_repository(repo)? {
            return Ok(Vec::new());
        }
        let mut out: Vec<Digest> = self
            .root
            .read_dir("blobs/sha256")?
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, is_dir)| !is_dir)
            .filter_map(|(hex, _)| Digest::parse(&format!("sha256:{hex}")).ok())
            .filter(|d| d.sha256_hex().is_some())
            .collect();
        out.sort();
        Ok(out)
    }

    fn document_blob(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        if !self.is_repository(repo)? {
            return Ok(None);
        }
        self.read_manifest_blob(digest)
    }

    fn remember_reads(&self, lifetime: std::time::Duration) {
        self.root.remember_reads(lifetime);
    }

    fn changed(&self) {
        self.root.forget_reads();
    }

    fn watch_target(&self) -> (std::path::PathBuf, crate::watch::Layout) {
        (self.root.dir.clone(), crate::watch::Layout::OciLayout)
    }

    fn open_blob(&self, blob: &BlobFile) -> Result<Option<BlobReader>> {
        Ok(self.root.open_read(&blob.rel)?.map(BlobReader::File))
    }

    /// The manifests index.json reaches, present or not: it is the layout's only link.
    fn linked_manifests(&self, repo: &str) -> Result<Vec<Digest>> {
        if !self.is_repository(repo)? {
            return Ok(Vec::new());
        }
        Ok(self.index()?.manifests.iter().cloned().collect())
    }

    /// A layout links no blobs: every repository of it has every blob.
    fn linked_blobs(&self, repo: &str) -> Result<Vec<Digest>> {
        self.blob_digests(repo)
    }

    fn stored_blobs(&self) -> Result<Vec<(Digest, BlobFile)>> {
        let mut out = Vec::new();
        for (hex, is_dir) in self.root.read_dir("blobs/sha256")?.unwrap_or_default() {
            let rel = format!("blobs/sha256/{hex}");
            let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            if is_dir || digest.sha256_hex().is_none() {
                continue;
            }
            if let Some(meta) = self.root.regular_file(&rel)? {
                out.push((digest, BlobFile::at(rel, meta)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<BlobFile>> {
        let Some(hex) = digest.sha256_hex() else {
            return Ok(None);
        };
        if !self.is_repository(repo)? {
            return Ok(None);
        }
        let rel = format!("blobs/sha256/{hex}");
        Ok(self
            .root
            .regular_file(&rel)?
            .map(|meta| BlobFile::at(rel, meta)))
    }
}
