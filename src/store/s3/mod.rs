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
//! checked against their digest on the way ([`S3Store::open_blob`]); manifests and
//! configs are kept in memory, bounded by bytes, keyed by their data object (content
//! addressed, so never stale; the links that lead to them are read every time).

mod client;
pub mod config;

use super::distribution::{check_tag_target, is_name_part, repo_dir};
use super::fsutil::{check_digest, parse_link, FileMeta};
use super::links::{data_rel_digest, LinkedObjects};
use super::{BlobFile, Document, Folder, Store, TagLink, MAX_DOCUMENT_BYTES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::{child_path, is_repository_name, is_tag};
use client::{Client, Listing, ObjectInfo};
use config::{Location, Settings};
use lru::LruCache;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Largest link object read: a digest is at most 7 + 128 bytes.
const MAX_LINK_BYTES: u64 = 1024;
/// Bytes of manifests and configs kept in memory.
const DOCUMENT_CACHE_BYTES: usize = 64 << 20;
/// One ranged GET of a blob download.
const BLOB_PART_BYTES: u64 = 8 << 20;

pub struct S3Store {
    client: Client,
    /// `<root>/docker/registry/v2/`: the prefix of every key read.
    v2: String,
    /// Verified blobs: `blobs/sha256/<hex>`.
    cache_dir: PathBuf,
    documents: Mutex<DocumentCache>,
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
    pub fn open(location: &Location, settings: &Settings, cache_dir: PathBuf) -> Result<S3Store> {
        let client = Client::new(location, settings)?;
        std::fs::create_dir_all(cache_dir.join("blobs/sha256"))
            .map_err(|e| Error::io(&cache_dir, e))?;
        let store = S3Store {
            client,
            v2: location.v2_prefix(),
            cache_dir,
            documents: Mutex::new(DocumentCache::new(DOCUMENT_CACHE_BYTES)),
        };
        // Fail here, naming the bucket and the server's answer, rather than on the
        // first lookup (credentials, region, a missing bucket).
        store.client.has_prefix(&store.v2)?;
        Ok(store)
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.v2)
    }
}

impl LinkedObjects for S3Store {
    fn describe(&self, rel: &str) -> PathBuf {
        self.client.url(&self.key(rel))
    }

    /// S3 writes an object whole, so there is no half-written link to read again.
    fn read_link(&self, rel: &str) -> Result<Option<(Digest, SystemTime)>> {
        let key = self.key(rel);
        let Some((bytes, mtime)) = self.client.get_small(&key, MAX_LINK_BYTES)? else {
            return Ok(None);
        };
        Ok(Some((parse_link(&self.client.url(&key), &bytes)?, mtime)))
    }

    fn exists(&self, rel: &str) -> Result<bool> {
        Ok(self.client.head(&self.key(rel))?.is_some())
    }

    fn data(&self, rel: &str) -> Result<Option<FileMeta>> {
        let key = self.key(rel);
        Ok(self
            .client
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
        if let Some((bytes, mtime)) = self.documents.lock().ok().and_then(|mut c| c.get(&key)) {
            return Ok(Some(Document { path, bytes, mtime }));
        }
        let Some((bytes, mtime)) = self.client.get_small(&key, MAX_DOCUMENT_BYTES)? else {
            return Ok(None);
        };
        check_digest(&path, digest, &bytes)?;
        let bytes: Arc<[u8]> = bytes.into();
        if let Ok(mut cache) = self.documents.lock() {
            cache.put(key, bytes.clone(), mtime);
        }
        Ok(Some(Document { path, bytes, mtime }))
    }

    /// Whether each has its link is for the lookup that follows to find out.
    fn linked_digests(&self, rel: &str) -> Result<Vec<Digest>> {
        let listing = self
            .client
            .list(&self.key(&format!("{rel}/sha256/")), None)?;
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
        let objects = self.client.list_recursive(&self.key(&format!("{rel}/")))?;
        Ok(objects.iter().map(|o| o.mtime).max())
    }

    /// Downloads a blob's data object into `dest` with sequential ranged GETs, hashing
    /// on the way; renamed into place only when complete and matching `hex`. None if
    /// the object is gone.
    fn download(&self, blob: &BlobFile, hex: &str, dest: &Path) -> Result<Option<std::fs::File>> {
        let key = self.key(&blob.rel);
        let partial = PartialFile::create(dest)?;
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < blob.len {
            let end = (offset + BLOB_PART_BYTES).min(blob.len);
            let Some(part) = self.client.get_range(&key, offset..end)? else {
                return Ok(None);
            };
            if part.len() as u64 != end - offset {
                return Err(Error::invalid(
                    &blob.path,
                    format!(
                        "asked for bytes {offset}..{end}, got {} (the object changed?)",
                        part.len()
                    ),
                ));
            }
            hasher.update(&part);
            (&partial.file)
                .write_all(&part)
                .map_err(|e| Error::io(&partial.path, e))?;
            offset = end;
        }
        let actual = crate::digest::hex(&hasher.finalize());
        if actual != hex {
            return Err(Error::invalid(
                &blob.path,
                format!("blob data does not hash to sha256:{hex} (found sha256:{actual})"),
            ));
        }
        partial.persist(dest).map(Some)
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
            .client
            .list(&self.key(&rel), None)?
            .prefixes
            .into_iter()
            .filter(|name| is_name_part(prefix, name))
            .collect();
        names.sort();
        Ok(names)
    }

    fn has_child(&self, prefix: &str, child: &str) -> Result<bool> {
        if !is_name_part(prefix, child) {
            return Ok(false);
        }
        let name = child_path(prefix, child);
        self.client
            .has_prefix(&self.key(&format!("{}/", repo_dir(&name))))
    }

    fn is_repository(&self, name: &str) -> Result<bool> {
        if !is_repository_name(name) {
            return Ok(false);
        }
        let listing = self
            .client
            .list(&self.key(&format!("{}/", repo_dir(name))), None)?;
        Ok(listing
            .prefixes
            .iter()
            .any(|p| p == "_manifests" || p == "_layers"))
    }

    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        let prefix = self.key(&format!("{}/_manifests/tags/", repo_dir(repo)));
        Ok(tag_names(&prefix, self.client.list(&prefix, None)?))
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
            None if self.client.has_prefix(&self.key(&format!("{tag_dir}/")))? => {
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
                    .client
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

    /// The blob from the cache folder, downloaded first if it is not there yet. The
    /// cache holds only complete downloads that hashed to their digest; the namespace
    /// checks the file it gets again, as for every store.
    fn open_blob(&self, blob: &BlobFile) -> Result<Option<std::fs::File>> {
        let hex = blob
            .rel
            .strip_prefix("blobs/sha256/")
            .and_then(|rest| rest.split('/').nth(1))
            .filter(|hex| Digest::parse(&format!("sha256:{hex}")).is_ok())
            .ok_or_else(|| Error::invalid(&blob.path, "not a blob data object"))?;
        let dest = self.cache_dir.join("blobs/sha256").join(hex);
        match std::fs::File::open(&dest) {
            Ok(file) => {
                let len = file.metadata().map_err(|e| Error::io(&dest, e))?.len();
                if len == blob.len {
                    return Ok(Some(file));
                }
                log::warn!(
                    "{}: {len} bytes, but {} has {}; downloading again",
                    dest.display(),
                    blob.path.display(),
                    blob.len
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dest, e)),
        }
        self.download(blob, hex, &dest)
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
}

/// A tags folder's entries as registry 2.8.2's s3 driver lists them: the objects
/// directly in it, then the `<tag>/` prefixes, each in the server's key order (across
/// all pages); None when there is neither, since an S3 folder without objects does not
/// exist (the registry answers NAME_UNKNOWN).
fn tag_names(prefix: &str, listing: Listing) -> Option<Vec<String>> {
    if listing.prefixes.is_empty() && listing.objects.is_empty() {
        return None;
    }
    let objects = listing
        .objects
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(prefix).map(str::to_string));
    Some(objects.chain(listing.prefixes).collect())
}

/// A download in progress, next to its final name; removed unless persisted.
struct PartialFile {
    path: PathBuf,
    file: std::fs::File,
    persisted: bool,
}

impl PartialFile {
    fn create(dest: &Path) -> Result<PartialFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}.partial.{}.{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dest.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(PartialFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Renames the complete file to `dest` and hands out its descriptor, at offset 0
    /// like a freshly opened file (readers copy from the current offset).
    fn persist(mut self, dest: &Path) -> Result<std::fs::File> {
        use std::io::Seek;
        std::fs::rename(&self.path, dest).map_err(|e| Error::io(dest, e))?;
        self.persisted = true;
        let mut file = self.file.try_clone().map_err(|e| Error::io(dest, e))?;
        file.rewind().map_err(|e| Error::io(dest, e))?;
        Ok(file)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("{}: cannot remove: {e}", self.path.display());
            }
        }
    }
}

/// Documents by data key, bounded by their total bytes.
struct DocumentCache {
    entries: LruCache<String, (Arc<[u8]>, SystemTime)>,
    bytes: usize,
    max_bytes: usize,
}

impl DocumentCache {
    fn new(max_bytes: usize) -> DocumentCache {
        DocumentCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    fn get(&mut self, key: &str) -> Option<(Arc<[u8]>, SystemTime)> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: String, bytes: Arc<[u8]>, mtime: SystemTime) {
        if bytes.len() > self.max_bytes {
            return;
        }
        self.bytes += bytes.len();
        if let Some((old, _)) = self.entries.put(key, (bytes, mtime)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, (old, _))) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_cache_is_bounded_by_bytes() {
        let mut cache = DocumentCache::new(10);
        let t = SystemTime::UNIX_EPOCH;
        cache.put("a".into(), Arc::from(&b"aaaa"[..]), t);
        cache.put("b".into(), Arc::from(&b"bbbb"[..]), t);
        assert!(cache.get("a").is_some(), "a is now the most recent");
        cache.put("c".into(), Arc::from(&b"cccc"[..]), t);
        assert!(cache.get("b").is_none(), "the least recent went");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes, 8);
        cache.put("big".into(), Arc::from(&[0u8; 11][..]), t);
        assert!(cache.get("big").is_none(), "larger than the whole cache");
        cache.put("a".into(), Arc::from(&b"aa"[..]), t);
        assert_eq!(cache.bytes, 6, "a replaced entry's bytes are released");
    }

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
            tag_names("r/tags/", listing),
            Some(vec![
                "zz".into(),
                "year-0000-offset".into(),
                "year-0000".into()
            ]),
            "objects first, then prefixes, none re-sorted"
        );
        assert_eq!(tag_names("r/tags/", Listing::default()), None);
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

    #[test]
    fn a_partial_download_is_removed_unless_persisted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("abc");
        let partial = PartialFile::create(&dest).expect("create");
        let path = partial.path.clone();
        assert!(path.exists());
        drop(partial);
        assert!(!path.exists(), "an abandoned download leaves nothing");
        let partial = PartialFile::create(&dest).expect("create");
        (&partial.file).write_all(b"data").expect("write");
        let mut file = partial.persist(&dest).expect("persist");
        assert_eq!(std::fs::read(&dest).expect("read"), b"data");
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut read).expect("read the descriptor");
        assert_eq!(read, b"data", "handed out at offset 0");
    }
}
