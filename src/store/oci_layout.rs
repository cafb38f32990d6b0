//! The OCI image layout: `oci-layout`, `index.json` and `blobs/<alg>/<hex>`.
//!
//! Tags come from `org.opencontainers.image.ref.name` on `index.json` entries. A plain
//! tag belongs to the layout's default repository; a full reference (`name:tag`, as some
//! tools write) names its own repository. Every manifest reachable from `index.json`
//! (nested indexes included) and every blob is shared by all repositories of the layout.

use super::fsutil::{read_verified, Root};
use super::{BlobFile, Document, Store, MAX_DOCUMENT_BYTES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::{is_repository_name, is_tag};
use crate::manifest::{self, Manifest};
use std::collections::BTreeSet;
use std::path::Path;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How deep nested indexes are followed; deeper ones are logged and skipped.
const MAX_INDEX_DEPTH: usize = 8;

#[derive(Debug)]
pub struct OciLayoutStore {
    root: Root,
    default_repository: String,
}

/// What index.json says, read fresh on each call so that a rewritten index shows up.
struct Index {
    /// (repository, tag, digest) in index order; later duplicates of a name are dropped.
    tags: Vec<(String, String, Digest)>,
    manifests: BTreeSet<Digest>,
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
        })
    }

    fn read_manifest_blob(&self, digest: &Digest) -> Result<Option<Document>> {
        let Some(hex) = digest.sha256_hex() else {
            return Ok(None);
        };
        let Some((path, _)) = self.root.regular_file(&format!("blobs/sha256/{hex}"))? else {
            return Ok(None);
        };
        let bytes = read_verified(&path, digest, MAX_DOCUMENT_BYTES)?.into();
        Ok(Some(Document { path, bytes }))
    }

    fn index(&self) -> Result<Index> {
        let path = self.root.dir.join("index.json");
        let bytes = self
            .root
            .read_limited("index.json", MAX_DOCUMENT_BYTES)?
            .ok_or_else(|| Error::invalid(&path, "missing"))?;
        let parsed = manifest::parse(&bytes).map_err(|e| Error::invalid(&path, e))?;
        let Manifest::Index { manifests } = parsed.manifest else {
            return Err(Error::invalid(&path, "index.json is not an image index"));
        };
        let mut index = Index {
            tags: Vec::new(),
            manifests: BTreeSet::new(),
        };
        let mut seen_names = BTreeSet::new();
        for d in &manifests {
            let Ok(digest) = Digest::parse(&d.digest) else {
                log::warn!(
                    "{}: skipping entry with bad digest {:?}",
                    path.display(),
                    d.digest
                );
                continue;
            };
            if let Some((_, name)) = d.annotations.iter().find(|(k, _)| k == REF_NAME) {
                match self.split_ref_name(name) {
                    Some((repo, tag)) if seen_names.insert((repo.clone(), tag.clone())) => {
                        index.tags.push((repo, tag, digest.clone()))
                    }
                    Some(_) => log::warn!(
                        "{}: duplicate ref.name {name:?}; keeping the first",
                        path.display()
                    ),
                    None => log::warn!(
                        "{}: ref.name {name:?} is not a tag or name:tag; skipped",
                        path.display()
                    ),
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
            log::warn!(
                "{}: nested indexes deeper than {MAX_INDEX_DEPTH}; not followed",
                self.root.dir.display()
            );
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
            Err(e) => log::warn!("{e}"),
        }
    }

    fn repositories(&self) -> Result<BTreeSet<String>> {
        let mut repos: BTreeSet<String> =
            self.index()?.tags.into_iter().map(|(r, _, _)| r).collect();
        repos.insert(self.default_repository.clone());
        Ok(repos)
    }
}

impl Store for OciLayoutStore {
    fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = BTreeSet::new();
        for repo in self.repositories()? {
            let rest = if prefix.is_empty() {
                Some(repo.as_str())
            } else {
                repo.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(first) = rest.and_then(|r| r.split('/').next()) {
                names.insert(first.to_string());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn has_child(&self, prefix: &str, child: &str) -> Result<bool> {
        Ok(self.child_names(prefix)?.iter().any(|c| c == child))
    }

    fn is_repository(&self, name: &str) -> Result<bool> {
        Ok(self.repositories()?.contains(name))
    }

    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        if !self.is_repository(repo)? {
            return Ok(None);
        }
        Ok(Some(
            self.index()?
                .tags
                .into_iter()
                .filter(|(r, _, _)| r == repo)
                .map(|(_, t, _)| t)
                .collect(),
        ))
    }

    fn tag_digest(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        Ok(self
            .index()?
            .tags
            .into_iter()
            .find(|(r, t, _)| r == repo && t == tag)
            .map(|(_, _, d)| d))
    }

    fn manifest_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        if !self.is_repository(repo)? {
            return Ok(Vec::new());
        }
        let index = self.index()?;
        let mut out = Vec::new();
        for d in index.manifests {
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
        if !self.is_repository(repo)? || !self.index()?.manifests.contains(digest) {
            return Ok(None);
        }
        self.read_manifest_blob(digest)
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

    fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<BlobFile>> {
        let Some(hex) = digest.sha256_hex() else {
            return Ok(None);
        };
        if !self.is_repository(repo)? {
            return Ok(None);
        }
        Ok(self
            .root
            .regular_file(&format!("blobs/sha256/{hex}"))?
            .map(|(path, len)| BlobFile { path, len }))
    }
}
