//! distribution's layout in S3-compatible object storage (the registry's `s3` driver):
//! the filesystem layout under `<root>/docker/registry/v2/`, read as registry 2.8.2 on
//! S3 reads it. S3 has no folders: a folder exists while an object's key is below it,
//! listings are the `<name>/` prefixes of a delimited listing, and times are the
//! objects' `LastModified` (whole seconds, [`client`]).
//!
//! Folder times ([`Store::folder_mtime`]) are the newest `LastModified` of the objects
//! below the folder (tag links for `Tags`, revision links for `Revisions`, layer links
//! for `Layers`). What deletions cannot show: removing an entry deletes its objects, so
//! the time stays (or goes back to the newest object left) instead of growing as a
//! folder's would. Repository-name folders (`Names`) have the epoch as their time: the
//! objects they show are every object of every repository below, too many to list on a
//! lookup; a new repository appears in the listing, not in the time.
//!
//! Blobs are downloaded whole into the local cache folder before they are handed out,
//! checked against their digest on the way ([`S3Store::open_blob`]), once however many
//! readers wait, and kept there within a byte bound ([`blob_cache`]); manifests and
//! configs are kept in memory, bounded by bytes, keyed by their data object (content
//! addressed, so never stale). The links that lead to them, object HEADs and listings
//! are kept for the mount's tag lifetime at most ([`answers`]).

mod answers;
mod blob_cache;
mod client;
pub mod config;
mod refresher;

use super::distribution::{check_tag_target, is_name_part, repo_dir};
use super::fsutil::{check_digest, parse_link, FileMeta};
use super::links::{data_rel_digest, LinkedObjects};
use super::{BlobFile, BlobReader, Document, Folder, Store, TagLink, MAX_DOCUMENT_BYTES};
use crate::cache::WeighedLru;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::{child_path, is_repository_name, is_tag};
pub use answers::ANSWER_CACHE_BYTES as S3_ANSWER_CACHE_BYTES;
use answers::{Answers, Question};
pub use blob_cache::DEFAULT_MAX_BYTES as DEFAULT_CACHE_MAX_BYTES;
pub use blob_cache::PART_BUDGET_BYTES as S3_PART_BUDGET_BYTES;
use blob_cache::{BlobCache, FetchPart, Opened};
use client::{Client, Listing, ObjectInfo};
use config::{Location, Settings};
pub use refresher::DEFAULT_KEEP_WARM;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Largest link object read: a digest is at most 7 + 128 bytes.
const MAX_LINK_BYTES: u64 = 1024;
/// Bytes of manifests and configs kept in memory.
pub const DOCUMENT_CACHE_BYTES: u64 = 64 << 20;

pub struct S3Store {
    client: Arc<Client>,
    /// `<root>/docker/registry/v2/`: the prefix of every key read.
    v2: String,
    /// Verified blobs: `blobs/sha256/<hex>`.
    cache_dir: PathBuf,
    blobs: Arc<BlobCache>,
    /// Manifests and configs by data key (content addressed: never stale).
    documents: Mutex<Documents>,
    /// Links and listings, for a short time.
    answers: Answers,
    /// When [`Store::changed`] was last called (or the store opened).
    polled: Mutex<std::time::Instant>,
}

type Documents = WeighedLru<String, (Arc<[u8]>, SystemTime)>;

/// What an S3 store keeps, and for how long.
#[derive(Clone, Debug)]
pub struct Caching {
    /// Verified blobs.
    pub dir: PathBuf,
    /// Bound of the blobs in `dir`.
    pub max_bytes: u64,
    /// How long link and listing answers are kept in memory (the mount's tag
    /// lifetime); zero: asked every time.
    pub answer_ttl: Duration,
    /// How long answers in use are kept young after their last use (zero: not at all).
    pub keep_warm: Duration,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.client.url(&self.v2))
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// The default cache folder of a store: per bucket and root directory, below
/// /var/cache/registryfs/s3 for root, else `$XDG_CACHE_HOME` or `~/.cache`.
pub fn default_cache_dir(location: &Location) -> Result<PathBuf> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let base = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/cache/registryfs/s3")
    } else {
        let user_cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| {
                Error::Usage(
                    "no cache folder for the S3 store: set --cache-dir, XDG_CACHE_HOME or HOME"
                        .to_string(),
                )
            })?;
        user_cache.join("registryfs/s3")
    };
    // The root directory has no empty, '.' or '..' components (config::Location).
    Ok(base.join(&location.bucket).join(&location.root))
}

impl S3Store {
    pub fn open(location: &Location, settings: &Settings, caching: Caching) -> Result<S3Store> {
        let client = Arc::new(Client::new(location, settings)?);
        let cache_dir = caching.dir;
        // A part is one request; a reader gives up on a download that made no
        // progress for a few of them.
        let stall = settings.request_timeout * 4;
        let blobs = Arc::new(BlobCache::open(&cache_dir, caching.max_bytes, stall)?);
        let store = S3Store {
            client,
            v2: location.v2_prefix(),
            cache_dir,
            blobs,
            documents: Mutex::new(WeighedLru::new(DOCUMENT_CACHE_BYTES)),
            answers: Answers::new(caching.answer_ttl, caching.keep_warm),
            polled: Mutex::new(std::time::Instant::now()),
        };
        // Fail here, naming the bucket and the server's answer, rather than on the
        // first lookup (credentials, region, a missing bucket).
        store.client.has_prefix(&store.v2)?;
        Ok(store)
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.v2)
    }

    /// A delimited listing of `prefix`, all pages.
    fn listing(&self, prefix: &str) -> Result<Arc<Listing>> {
        let client = self.client.clone();
        let fetch = move |prefix: &str| Ok(Arc::new(client.list(prefix, None)?));
        self.answers
            .get_or_weighed(Question::List(prefix.into()), fetch, |l| l.bytes())
    }

    fn has_prefix(&self, prefix: &str) -> Result<bool> {
        let client = self.client.clone();
        self.answers
            .get_or(Question::HasPrefix(prefix.into()), move |prefix: &str| {
                client.has_prefix(prefix)
            })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let client = self.client.clone();
        self.answers
            .get_or(Question::Head(key.into()), move |key: &str| {
                client.head(key)
            })
    }
}

impl LinkedObjects for S3Store {
    fn describe(&self, rel: &str) -> PathBuf {
        self.client.url(&self.key(rel))
    }

    /// S3 writes an object whole, so there is no half-written link to read again.
    fn read_link(&self, rel: &str) -> Result<Option<(Digest, SystemTime)>> {
        let client = self.client.clone();
        let fetch = move |key: &str| {
            let Some((bytes, mtime)) = client.get_small(key, MAX_LINK_BYTES)? else {
                return Ok(None);
            };
            Ok(Some((parse_link(&client.url(key), &bytes)?, mtime)))
        };
        self.answers.get_or(Question::Link(self.key(rel)), fetch)
    }

    fn data(&self, rel: &str) -> Result<Option<FileMeta>> {
        let key = self.key(rel);
        Ok(self
            .head(&key)?
            .map(|ObjectInfo { size, mtime, .. }| FileMeta {
                path: self.client.url(&key),
                len: size,
                mtime,
            }))
    }

    /// From memory, or read whole and checked against `digest`.
    fn document(&self, rel: &str, digest: &Digest) -> Result<Option<Document>> {
        let key = self.key(rel);
        let path = self.client.url(&key);
        let kept = self
            .documents
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned());
        if let Some((bytes, mtime)) = kept {
            return Ok(Some(Document { path, bytes, mtime }));
        }
        let Some((bytes, mtime)) = self.client.get_small(&key, MAX_DOCUMENT_BYTES)? else {
            return Ok(None);
        };
        check_digest(&path, digest, &bytes)?;
        let bytes: Arc<[u8]> = bytes.into();
        if let Ok(mut cache) = self.documents.lock() {
            let len = bytes.len() as u64;
            cache.put(key, (bytes.clone(), mtime), len);
        }
        Ok(Some(Document { path, bytes, mtime }))
    }

    /// Whether each has its link is for the lookup that follows to find out.
    fn linked_digests(&self, rel: &str) -> Result<Vec<Digest>> {
        let listing = self.listing(&self.key(&format!("{rel}/sha256/")))?;
        let mut out: Vec<Digest> = listing
            .prefixes
            .iter()
            .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .filter(|d| d.sha256_hex().is_some())
            .collect();
        out.sort();
        Ok(out)
    }
}

impl S3Store {
    /// The newest `LastModified` below `rel/`, or None if nothing is there.
    fn newest_below(&self, rel: &str) -> Result<Option<SystemTime>> {
        let client = self.client.clone();
        let fetch = move |prefix: &str| {
            let objects = client.list_recursive(prefix)?;
            Ok(objects.iter().map(|o| o.mtime).max())
        };
        self.answers
            .get_or(Question::Newest(self.key(&format!("{rel}/"))), fetch)
    }
}

impl Store for S3Store {
    fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let rel = if prefix.is_empty() {
            "repositories/".to_string()
        } else {
            format!("{}/", repo_dir(prefix))
        };
        let mut names: Vec<String> = self
            .listing(&self.key(&rel))?
            .prefixes
            .iter()
            .filter(|name| is_name_part(prefix, name))
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    fn has_child(&self, prefix: &str, child: &str) -> Result<bool> {
        if !is_name_part(prefix, child) {
            return Ok(false);
        }
        let name = child_path(prefix, child);
        self.has_prefix(&self.key(&format!("{}/", repo_dir(&name))))
    }

    fn is_repository(&self, name: &str) -> Result<bool> {
        if !is_repository_name(name) {
            return Ok(false);
        }
        let listing = self.listing(&self.key(&format!("{}/", repo_dir(name))))?;
        Ok(listing
            .prefixes
            .iter()
            .any(|p| p == "_manifests" || p == "_layers"))
    }

    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        let prefix = self.key(&format!("{}/_manifests/tags/", repo_dir(repo)));
        Ok(tag_names(&prefix, &*self.listing(&prefix)?))
    }

    fn tag_link(&self, repo: &str, tag: &str) -> Result<Option<TagLink>> {
        if !is_tag(tag) {
            return Ok(None);
        }
        let tag_dir = format!("{}/_manifests/tags/{tag}", repo_dir(repo));
        let link = format!("{tag_dir}/current/link");
        match self.read_link(&link)? {
            Some((digest, mtime)) => {
                check_tag_target(&self.client.url(&self.key(&link)), &digest)?;
                Ok(Some(TagLink { digest, mtime }))
            }
            None if self.has_prefix(&self.key(&format!("{tag_dir}/")))? => {
                Err(Error::NotFound(format!(
                    "{}: tag has no current/link",
                    self.client.url(&self.key(&link)).display()
                )))
            }
            None => Ok(None),
        }
    }

    fn folder_mtime(&self, folder: Folder<'_>) -> Result<Option<SystemTime>> {
        match folder {
            Folder::Names(prefix) => {
                let rel = if prefix.is_empty() {
                    "repositories/".to_string()
                } else {
                    format!("{}/", repo_dir(prefix))
                };
                Ok(self
                    .has_prefix(&self.key(&rel))?
                    .then_some(SystemTime::UNIX_EPOCH))
            }
            Folder::Tags(repo) => self.newest_below(&format!("{}/_manifests/tags", repo_dir(repo))),
            Folder::Revisions(repo) => {
                self.newest_below(&format!("{}/_manifests/revisions/sha256", repo_dir(repo)))
            }
            Folder::Layers(repo) => {
                self.newest_below(&format!("{}/_layers/sha256", repo_dir(repo)))
            }
        }
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

    fn document_blob(&self, repo: &str, digest: &Digest) -> Result<Option<Document>> {
        self.layer_document(repo, digest)
    }

    /// The blob from the cache folder (verified when it was downloaded; the namespace
    /// checks the file again, as for every store), or its download, streaming.
    fn open_blob(&self, blob: &BlobFile) -> Result<Option<BlobReader>> {
        let hex = blob
            .rel
            .strip_prefix("blobs/sha256/")
            .and_then(|rest| rest.split('/').nth(1))
            .filter(|hex| Digest::parse(&format!("sha256:{hex}")).is_ok())
            .ok_or_else(|| Error::invalid(&blob.path, "not a blob data object"))?;
        let (client, key) = (self.client.clone(), self.key(&blob.rel));
        let fetch: FetchPart = Box::new(move |range| client.get_range(&key, range));
        Ok(Some(
            match self.blobs.open_blob(hex, blob.len, &blob.path, fetch)? {
                Opened::Kept(file) => BlobReader::File(file),
                Opened::Downloading(download) => BlobReader::Streaming(download),
            },
        ))
    }

    fn blob_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        self.layer_digests(repo)
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

    /// One recursive listing of `blobs/sha256/`.
    fn stored_blobs(&self) -> Result<Vec<(Digest, BlobFile)>> {
        let prefix = self.key("");
        let mut out = Vec::new();
        for object in self.client.list_recursive(&self.key("blobs/sha256/"))? {
            let Some(rel) = object.key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(digest) = data_rel_digest(rel) {
                out.push((
                    digest,
                    BlobFile {
                        path: self.client.url(&object.key),
                        rel: rel.to_string(),
                        len: object.size,
                        mtime: object.mtime,
                    },
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Nothing local changes when the bucket does: the watcher polls
    /// ([`crate::watch::Layout::Remote`]); the cache folder only names it in the log.
    fn watch_target(&self) -> (PathBuf, crate::watch::Layout) {
        (self.cache_dir.clone(), crate::watch::Layout::Remote)
    }

    /// hyper reads a response into buffers of up to 408 KiB (its adaptive read
    /// buffer's maximum). The body chunks cut from one keep it alive, so every buffer
    /// is new: allocated by mmap above the mount's threshold, each received page was
    /// faulted in and zeroed (57k page faults per cold 256 MiB read); from the heap
    /// they are reused (8k to 18k faults, from what the heap still grows).
    fn reused_block_bytes(&self) -> usize {
        1 << 20
    }

    /// Called at each change poll: the answers fetched before the previous poll go
    /// (see [`answers`]; nothing tells a mount when a bucket changes).
    fn changed(&self) {
        let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
        self.answers.forget_older_than(polled.elapsed());
        *polled = std::time::Instant::now();
    }
}

/// A tags folder's entries as registry 2.8.2's s3 driver lists them: the objects
/// directly in it, then the `<tag>/` prefixes, each in the server's key order (across
/// all pages); None when there is neither, since an S3 folder without objects does not
/// exist (the registry answers NAME_UNKNOWN).
fn tag_names(prefix: &str, listing: &Listing) -> Option<Vec<String>> {
    if listing.prefixes.is_empty() && listing.objects.is_empty() {
        return None;
    }
    let objects = listing
        .objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(prefix).map(str::to_string));
    Some(objects.chain(listing.prefixes.iter().cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_in_the_s3_drivers_order() {
        let object = |key: &str| ObjectInfo {
            key: key.to_string(),
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
        };
        let listing = Listing {
            // The server's order of `<tag>/`: '-' sorts before '/'.
            prefixes: vec!["year-0000-offset".into(), "year-0000".into()],
            objects: vec![object("r/tags/zz"), object("elsewhere/x")],
        };
        assert_eq!(
            tag_names("r/tags/", &listing),
            Some(vec![
                "zz".into(),
                "year-0000-offset".into(),
                "year-0000".into()
            ]),
            "objects first, then prefixes, none re-sorted"
        );
        assert_eq!(tag_names("r/tags/", &Listing::default()), None);
    }

    #[test]
    fn default_cache_dir_is_per_store() {
        let location = Location {
            bucket: "b12".into(),
            root: "a/b".into(),
        };
        let dir = default_cache_dir(&location).expect("a cache folder");
        assert!(dir.ends_with("registryfs/s3/b12/a/b"), "{}", dir.display());
    }
}
