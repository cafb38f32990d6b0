//! distribution's (registry:2) filesystem layout, read as registry 2.8.2 reads it.
//!
//! ```text
//! blobs/sha256/<xx>/<hex>/data
//! repositories/<name…>/_layers/sha256/<hex>/link
//! repositories/<name…>/_manifests/revisions/sha256/<hex>/link
//! repositories/<name…>/_manifests/tags/<tag>/current/link
//! ```

use super::fsutil::{FileMeta, Root};
use super::links::{data_rel_digest, LinkedObjects};
use super::{BlobFile, BlobReader, Document, Folder, Store, TagLink, MAX_DOCUMENT_BYTES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::{child_path, is_path_component, is_repository_name, is_tag};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug)]
pub struct DistributionStore {
    root: Root,
}

/// A folder name that can be part of a repository name: a path component, or (first
/// position only) a domain such as `Library` that the name grammar also allows.
pub(super) fn is_name_part(prefix: &str, child: &str) -> bool {
    let name = child_path(prefix, child);
    !child.starts_with('_')
        && (is_path_component(child)
            || prefix.is_empty() && is_repository_name(&format!("{child}/x")))
        && name.len() <= crate::grammar::NAME_MAX_LEN
}

pub(super) fn repo_dir(repo: &str) -> String {
    format!("repositories/{repo}")
}

/// Where the data of the blob with lower-case sha256 `hex` lives.
pub(super) fn data_rel(hex: &str) -> String {
    format!("blobs/sha256/{}/{hex}/data", &hex[..2])
}

/// A repository link must name the digest we were asked for: an alias link would
/// serve other bytes under this digest.
pub(super) fn check_link_target(link: &Path, target: &Digest, digest: &Digest) -> Result<()> {
    if target == digest {
        return Ok(());
    }
    Err(Error::invalid(
        link,
        format!("link names {target}, not {digest}; registryfs serves content only under its own digest"),
    ))
}

/// A tag link must name content in the store: only lower-case sha256 does (go-digest
/// 1.0.0, which Debian's 2.8.2 uses, refuses upper-case hex in links too).
pub(super) fn check_tag_target(link: &Path, target: &Digest) -> Result<()> {
    if target.sha256_hex().is_some() {
        return Ok(());
    }
    Err(Error::invalid(
        link,
        format!(
            "bad link: {target} cannot name content in the store (only lower-case sha256 does)"
        ),
    ))
}

impl DistributionStore {
    /// `v2` is the `docker/registry/v2` folder.
    pub fn open(v2: &Path) -> Result<DistributionStore> {
        let root = Root::new(v2)?;
        Ok(DistributionStore { root })
    }
}

impl LinkedObjects for DistributionStore {
    fn describe(&self, rel: &str) -> PathBuf {
        self.root.dir.join(rel)
    }

    fn read_link(&self, rel: &str) -> Result<Option<(Digest, SystemTime)>> {
        self.root.read_link(rel)
    }

    fn data(&self, rel: &str) -> Result<Option<FileMeta>> {
        self.root.regular_file(rel)
    }

    /// Read whole through the root, so the bytes checked against the digest are the
    /// bytes returned.
    fn document(&self, rel: &str, digest: &Digest) -> Result<Option<Document>> {
        Ok(self
            .root
            .read_verified(rel, digest, MAX_DOCUMENT_BYTES)?
            .map(|(meta, bytes)| Document {
                path: meta.path,
                bytes: bytes.into(),
                mtime: meta.mtime,
            }))
    }

    /// Only folders that hold a `link` file count.
    fn linked_digests(&self, rel: &str) -> Result<Vec<Digest>> {
        let Some(entries) = self.root.read_dir(&format!("{rel}/sha256"))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (hex, is_dir) in entries {
            let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            if is_dir
                && digest.sha256_hex().is_some()
                && self
                    .root
                    .regular_file(&format!("{rel}/sha256/{hex}/link"))?
                    .is_some()
            {
                out.push(digest);
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Store for DistributionStore {
    fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let rel = if prefix.is_empty() {
            "repositories".to_string()
        } else {
            repo_dir(prefix)
        };
        let mut names: Vec<String> = self
            .root
            .read_dir(&rel)?
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, is_dir)| *is_dir && is_name_part(prefix, name))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    fn has_child(&self, prefix: &str, child: &str) -> Result<bool> {
        if !is_name_part(prefix, child) {
            return Ok(false);
        }
        let name = child_path(prefix, child);
        self.root.is_dir(&repo_dir(&name))
    }

    fn is_repository(&self, name: &str) -> Result<bool> {
        if !is_repository_name(name) {
            return Ok(false);
        }
        Ok(self
            .root
            .is_dir(&format!("{}/_manifests", repo_dir(name)))?
            || self.root.is_dir(&format!("{}/_layers", repo_dir(name)))?)
    }

    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        // registry 2.8.2 lists every entry of the tags folder in readdir order, unsorted.
        let entries = self
            .root
            .read_dir(&format!("{}/_manifests/tags", repo_dir(repo)))?;
        Ok(entries.map(|e| e.into_iter().map(|(name, _)| name).collect()))
    }

    fn tag_link(&self, repo: &str, tag: &str) -> Result<Option<TagLink>> {
        if !is_tag(tag) {
            return Ok(None);
        }
        let tag_dir = format!("{}/_manifests/tags/{tag}", repo_dir(repo));
        let link = format!("{tag_dir}/current/link");
        match self.root.read_link(&link)? {
            Some((digest, mtime)) => {
                check_tag_target(&self.root.dir.join(&link), &digest)?;
                Ok(Some(TagLink { digest, mtime }))
            }
            // A tag folder without current/link: unknown to the registry too, but say so.
            None if self.root.is_dir(&tag_dir)? => Err(Error::NotFound(format!(
                "{}: tag folder has no current/link",
                self.root.dir.join(&link).display()
            ))),
            None => Ok(None),
        }
    }

    fn folder_mtime(&self, folder: Folder<'_>) -> Result<Option<SystemTime>> {
        let rel = match folder {
            Folder::Names("") => "repositories".to_string(),
            Folder::Names(prefix) => repo_dir(prefix),
            Folder::Tags(repo) => format!("{}/_manifests/tags", repo_dir(repo)),
            // The `sha256` folders are the ones whose entries are the digests.
            Folder::Revisions(repo) => format!("{}/_manifests/revisions/sha256", repo_dir(repo)),
            Folder::Layers(repo) => format!("{}/_layers/sha256", repo_dir(repo)),
        };
        self.root.dir_mtime(&rel)
    }

    fn manifest_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        self.revision_digests(repo)
    }

    fn manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        self.revision(repo, digest)
    }

    fn manifest_mtime(&self, repo: &str, digest: &Digest) -> Result<Option<SystemTime>> {
        self.revision_mtime(repo, digest)
    }

    fn blob_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        self.layer_digests(repo)
    }

    fn document_blob(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        self.layer_document(repo, digest)
    }

    fn remember_reads(&self, lifetime: std::time::Duration) {
        self.root.remember_reads(lifetime);
    }

    fn changed(&self) {
        self.root.forget_reads();
    }

    fn watch_target(&self) -> (std::path::PathBuf, crate::watch::Layout) {
        (self.root.dir.clone(), crate::watch::Layout::Distribution)
    }

    fn open_blob(&self, blob: &BlobFile) -> Result<Option<BlobReader>> {
        Ok(self.root.open_read(&blob.rel)?.map(BlobReader::File))
    }

    fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<BlobFile>> {
        self.layer(repo, digest)
    }

    fn linked_manifests(&self, repo: &str) -> Result<Vec<Digest>> {
        self.revision_links(repo)
    }

    fn linked_blobs(&self, repo: &str) -> Result<Vec<Digest>> {
        self.layer_links(repo)
    }

    /// `blobs/sha256/<xx>/<hex>/data`; other entries of those folders are no blobs.
    fn stored_blobs(&self) -> Result<Vec<(Digest, BlobFile)>> {
        let mut out = Vec::new();
        let fan_outs = self.root.read_dir("blobs/sha256")?.unwrap_or_default();
        for (fan_out, is_dir) in fan_outs {
            if !is_dir {
                continue;
            }
            let folder = format!("blobs/sha256/{fan_out}");
            for (hex, is_dir) in self.root.read_dir(&folder)?.unwrap_or_default() {
                let rel = format!("{folder}/{hex}/data");
                let Some(digest) = data_rel_digest(&rel).filter(|_| is_dir) else {
                    continue;
                };
                if let Some(meta) = self.root.regular_file(&rel)? {
                    out.push((digest, BlobFile::at(rel, meta)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
