//! Repository links as distribution's layout has them, on whatever storage holds it: a
//! link names a digest, and the digest's data object holds the bytes. The rules are the
//! same on disk and in S3; each storage supplies the few reads they need, and the
//! provided methods are the rules.

use super::distribution::{check_link_target, data_rel, repo_dir};
use super::fsutil::FileMeta;
use super::{BlobFile, Document};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::SystemTime;

pub(super) trait LinkedObjects {
    /// How `rel` (below the layout's `v2` folder) is named in messages.
    fn describe(&self, rel: &str) -> PathBuf;

    /// A link's digest and the time it was written, or None if there is no link.
    fn read_link(&self, rel: &str) -> Result<Option<(Digest, SystemTime)>>;

    /// A data object's size and time, or None if it is missing.
    fn data(&self, rel: &str) -> Result<Option<FileMeta>>;

    /// A data object read whole (at most [`super::MAX_DOCUMENT_BYTES`]) and checked
    /// against `digest`, or None if it is missing.
    fn document(&self, rel: &str, digest: &Digest) -> Result<Option<Document>>;

    /// The digests named by the `sha256/<hex>` link folders below `rel` (lower-case
    /// sha256 only: the names that can be served), sorted.
    fn linked_digests(&self, rel: &str) -> Result<Vec<Digest>>;

    /// Follows a repository link to the data object it names. The link must name the
    /// digest asked for: an alias link would serve other bytes under this digest.
    fn linked_data_rel(&self, link_rel: &str, digest: &Digest) -> Result<Option<String>> {
        let Some((target, _)) = self.read_link(link_rel)? else {
            return Ok(None);
        };
        check_link_target(&self.describe(link_rel), &target, digest)?;
        Ok(digest.sha256_hex().map(data_rel))
    }

    /// Still "not found" (registry 2.8.2 answers 404 too), but saying which link leads
    /// nowhere: garbage collection leaves layer links behind, and a broken revision or
    /// tag is otherwise hard to tell from an unknown one.
    fn dangling(&self, link_rel: &str, digest: &Digest, data_rel: &str) -> Error {
        Error::NotFound(format!(
            "{}: names {digest}, whose data {} is missing",
            self.describe(link_rel).display(),
            self.describe(data_rel).display()
        ))
    }

    /// The blob data a repository link leads to.
    fn linked_data(&self, link_rel: &str, digest: &Digest) -> Result<Option<BlobFile>> {
        let Some(data) = self.linked_data_rel(link_rel, digest)? else {
            return Ok(None);
        };
        match self.data(&data)? {
            Some(meta) => Ok(Some(BlobFile::at(data, meta))),
            None => Err(self.dangling(link_rel, digest, &data)),
        }
    }

    /// A linked document (manifest, config), checked against its digest.
    fn linked_document(&self, link_rel: &str, digest: &Digest) -> Result<Option<Document>> {
        let Some(data) = self.linked_data_rel(link_rel, digest)? else {
            return Ok(None);
        };
        match self.document(&data, digest)? {
            Some(doc) => Ok(Some(doc)),
            None => Err(self.dangling(link_rel, digest, &data)),
        }
    }

    /// What `follow` finds through the link of `repo`'s manifest revision `digest`: its
    /// revision link, or where there is none, registry 2.1.0's link under `_layers`
    /// (2.8.2 still tries it next). One read when the revision link is there.
    fn via_manifest_link<T>(
        &self,
        repo: &str,
        digest: &Digest,
        follow: impl Fn(&str) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let Some(hex) = digest.sha256_hex() else {
            return Ok(None);
        };
        let revision = format!("{}/_manifests/revisions/sha256/{hex}/link", repo_dir(repo));
        match follow(&revision)? {
            Some(found) => Ok(Some(found)),
            None => follow(&layer_link(repo, hex)),
        }
    }

    /// [`super::Store::manifest_digests`]: listed only if a lookup would find it, like
    /// tags and blobs; a revision whose data is gone or whose link names another digest
    /// is logged instead.
    fn revision_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for digest in self.revision_links(repo)? {
            match self.revision_mtime(repo, &digest) {
                Ok(Some(_)) => out.push(digest),
                Ok(None) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(out)
    }

    /// [`super::Store::linked_manifests`].
    fn revision_links(&self, repo: &str) -> Result<Vec<Digest>> {
        self.linked_digests(&format!("{}/_manifests/revisions", repo_dir(repo)))
    }

    /// [`super::Store::linked_blobs`].
    fn layer_links(&self, repo: &str) -> Result<Vec<Digest>> {
        self.linked_digests(&format!("{}/_layers", repo_dir(repo)))
    }

    /// [`super::Store::manifest`].
    fn revision(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        self.via_manifest_link(repo, digest, |link| self.linked_document(link, digest))
    }

    /// [`super::Store::manifest_mtime`].
    fn revision_mtime(&self, repo: &str, digest: &Digest) -> Result<Option<SystemTime>> {
        self.via_manifest_link(repo, digest, |link| {
            Ok(self.linked_data(link, digest)?.map(|data| data.mtime))
        })
    }

    /// [`super::Store::document_blob`].
    fn layer_document(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        match digest.sha256_hex() {
            Some(hex) => self.linked_document(&layer_link(repo, hex), digest),
            None => Ok(None),
        }
    }

    /// [`super::Store::blob_digests`]: only blobs whose data is there, since garbage
    /// collection leaves links behind.
    fn layer_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for digest in self.layer_links(repo)? {
            match self.layer(repo, &digest) {
                Ok(Some(_)) => out.push(digest),
                Ok(None) => {}
                Err(e) if e.is_not_found() => log::debug!("{e}"),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(out)
    }

    /// [`super::Store::blob`].
    fn layer(&self, repo: &str, digest: &Digest) -> Result<Option<BlobFile>> {
        match digest.sha256_hex() {
            Some(hex) => self.linked_data(&layer_link(repo, hex), digest),
            None => Ok(None),
        }
    }
}

/// The digest a blob data object's place names (`blobs/sha256/<xx>/<hex>/data`, below the
/// `v2` folder), or None for any other object.
pub(super) fn data_rel_digest(rel: &str) -> Option<Digest> {
    let rest = rel.strip_prefix("blobs/sha256/")?;
    let (fan_out, rest) = rest.split_once('/')?;
    let hex = rest.strip_suffix("/data")?;
    let digest = Digest::parse(&format!("sha256:{hex}")).ok()?;
    (digest.sha256_hex().is_some() && hex.starts_with(fan_out) && fan_out.len() == 2)
        .then_some(digest)
}

fn layer_link(repo: &str, hex: &str) -> String {
    format!("{}/_layers/sha256/{hex}/link", repo_dir(repo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blob_data_objects_name_a_digest() {
        let hex = "ab".repeat(32);
        let d = data_rel_digest(&format!("blobs/sha256/ab/{hex}/data")).expect("data");
        assert_eq!(d.encoded(), hex);
        for rel in [
            format!("blobs/sha256/cd/{hex}/data"),
            format!("blobs/sha256/ab/{hex}/data.tmp"),
            format!("blobs/sha256/ab/{hex}"),
            format!("blobs/sha256/a/{hex}/data"),
            format!("blobs/sha256/AB/{}/data", hex.to_uppercase()),
            "blobs/sha256/ab/abc/data".to_string(),
            format!("repositories/x/_layers/sha256/{hex}/link"),
        ] {
            assert_eq!(data_rel_digest(&rel), None, "{rel}");
        }
    }
}
