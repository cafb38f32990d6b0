//! Read-only access to a registry store: distribution's filesystem layout or an OCI
//! image layout. Everything that reaches the namespace goes through [`Store`].

mod distribution;
mod fsutil;
pub use fsutil::FileIdentity;
mod links;
mod memo;
mod oci_layout;
mod s3;

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use distribution::DistributionStore;
pub use memo::STORE_READ_CACHE_BYTES;
pub use oci_layout::OciLayoutStore;
pub use s3::config::Overrides as S3Overrides;
pub use s3::{S3Store, DEFAULT_CACHE_MAX_BYTES, DOCUMENT_CACHE_BYTES as S3_DOCUMENT_CACHE_BYTES};
pub use s3::{S3_ANSWER_CACHE_BYTES, S3_PART_BUDGET_BYTES};

/// Largest manifest or config registry 2.8.2 reads (`4<<20`; exactly 4 MiB is allowed).
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// A blob's bytes on disk. Not yet checked against its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobFile {
    /// For messages; the file is opened again through the store ([`Store::open_blob`]).
    pub path: PathBuf,
    /// The path below the store root.
    pub rel: String,
    pub len: u64,
    /// When the data file was written: content-addressed, so once.
    pub mtime: SystemTime,
}

impl BlobFile {
    /// The blob data file at `rel` below the store root, as `meta` describes it.
    pub fn at(rel: String, meta: fsutil::FileMeta) -> BlobFile {
        BlobFile {
            path: meta.path,
            rel,
            len: meta.len,
            mtime: meta.mtime,
        }
    }
}

/// An opened blob, as a store hands it out.
pub enum BlobReader {
    /// A file whose bytes are all there, not yet checked against the digest (the
    /// namespace hashes it before serving it). A mount may let the kernel read it.
    File(std::fs::File),
    /// Bytes that arrive while they are read (a remote store's download), checked
    /// against the digest by the store as they stream.
    Streaming(Arc<dyn BlobStream>),
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobReader::File(file) => f.debug_tuple("File").field(file).finish(),
            BlobReader::Streaming(_) => f.write_str("Streaming"),
        }
    }
}

/// A blob being downloaded: reads wait for the bytes they ask for; the read that
/// completes the blob waits for its hash, and fails if the blob does not hash to its
/// digest, as does every read after that. A read never waits long for a download that
/// makes no progress. The stream logs its own failures; its errors name the object.
pub trait BlobStream: Send + Sync {
    /// Fills `buf` with the bytes at `offset` (fewer only at the end of the blob); how
    /// many. The caller's buffer, so that a reader reuses one instead of allocating per
    /// read.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;

    /// Waits until the whole blob is there and checked: Ok if it hashed to its digest.
    fn verified(&self) -> std::io::Result<()>;
}

/// A small stored document (manifest) and the file it was read from.
#[derive(Clone, Debug)]
pub struct Document {
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
    /// When the data file was written.
    pub mtime: SystemTime,
}

/// Where a tag points, and since when (the time its link was last written: the push).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagLink {
    pub digest: Digest,
    pub mtime: SystemTime,
}

/// Store folders whose listings the namespace's folders show; their modification times
/// are what the namespace's folder times derive from (a folder's time changes when an
/// entry is added or removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder<'a> {
    /// The folder of a repository-name prefix ("" for the top): its child folders, and
    /// for a repository also whether it is one.
    Names(&'a str),
    /// A repository's tags.
    Tags(&'a str),
    /// A repository's manifest revisions.
    Revisions(&'a str),
    /// A repository's linked blobs.
    Layers(&'a str),
}

pub trait Store: Send + Sync {
    /// Names of the folders directly below the repository-name prefix `prefix` ("" for the
    /// top), in byte order: each may be a repository, hold repositories, or both.
    fn child_names(&self, prefix: &str) -> Result<Vec<String>>;

    /// Whether `prefix/child` is such a folder.
    fn has_child(&self, prefix: &str, child: &str) -> Result<bool>;

    /// Whether `name` is a repository (has manifests or blobs).
    fn is_repository(&self, name: &str) -> Result<bool>;

    /// The repository's tags in the registry's order, or None if it has no tag folder.
    fn tags(&self, repo: &str) -> Result<Option<Vec<String>>>;

    /// The manifest digest a tag points at, or None for an unknown tag.
    fn tag_digest(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        Ok(self.tag_link(repo, tag)?.map(|link| link.digest))
    }

    /// [`Store::tag_digest`], with the time the tag was last pushed.
    fn tag_link(&self, repo: &str, tag: &str) -> Result<Option<TagLink>>;

    /// When `folder`'s listing last changed, or None if it does not exist.
    fn folder_mtime(&self, folder: Folder<'_>) -> Result<Option<SystemTime>>;

    /// Digests of the repository's manifests.
    fn manifest_digests(&self, repo: &str) -> Result<Vec<Digest>>;

    /// A manifest's stored bytes, checked against `digest`, or None if the repository
    /// does not have it.
    fn manifest(&self, repo: &str, digest: &Digest) -> Result<Option<Document>>;

    /// When the repository's manifest was stored, without reading it (link and data
    /// exist), or None if the repository does not have it.
    fn manifest_mtime(&self, repo: &str, digest: &Digest) -> Result<Option<SystemTime>> {
        Ok(self.manifest(repo, digest)?.map(|doc| doc.mtime))
    }

    /// A small blob linked into the repository (a config), read whole (at most
    /// [`MAX_DOCUMENT_BYTES`]) and checked against `digest`, or None.
    fn document_blob(&self, repo: &str, digest: &Digest) -> Result<Option<Document>>;

    /// Opens a blob found by [`Store::blob`] again, confined to the store like every other
    /// access (a symlink swapped in since the lookup cannot lead out of it); None if it
    /// is gone.
    fn open_blob(&self, blob: &BlobFile) -> Result<Option<BlobReader>>;

    /// Digests of the blobs linked into the repository.
    fn blob_digests(&self, repo: &str) -> Result<Vec<Digest>>;

    /// Where a blob linked into the repository lives, or None.
    fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<BlobFile>>;

    /// Every digest the repository links as a manifest revision, links whose data is
    /// gone included: what garbage collection marks from (`verify`).
    fn linked_manifests(&self, repo: &str) -> Result<Vec<Digest>>;

    /// Every digest the repository links as a blob, links whose data is gone included.
    fn linked_blobs(&self, repo: &str) -> Result<Vec<Digest>>;

    /// Every blob the store holds data for, with the digest its place names (not checked
    /// against the data): what garbage collection sweeps.
    fn stored_blobs(&self) -> Result<Vec<(Digest, BlobFile)>>;

    /// The folder to watch for changes, and how its paths map to repositories.
    fn watch_target(&self) -> (PathBuf, crate::watch::Layout);

    /// Keep what is read for `lifetime` (a mount: its tag lifetime) until
    /// [`Store::changed`]; zero: not at all. Local stores (`memo`); an S3 store is given
    /// its lifetime when it is opened.
    fn remember_reads(&self, _lifetime: Duration) {}

    /// The store may have changed (a change notification, or the poll came round):
    /// whatever it keeps about links, listings and files must be read again.
    fn changed(&self) {}

    /// The size of the largest blocks the store's reading allocates and frees over and
    /// over (an HTTP client's receive buffers): a mount keeps blocks up to this size in
    /// the heap for reuse. Zero: local stores read into buffers they are given.
    fn reused_block_bytes(&self) -> usize {
        0
    }
}

/// Options that only apply to some layouts.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Repository name for an OCI layout's plain tags (default: the folder's name).
    pub oci_repository: Option<String>,
    /// Where an S3 store keeps downloaded blobs (default: [`s3::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Bound of the blobs an S3 store keeps there (default: [`DEFAULT_CACHE_MAX_BYTES`]).
    pub cache_max_bytes: Option<u64>,
    /// How long an S3 store keeps answers in use young after their last use (default:
    /// [`s3::DEFAULT_KEEP_WARM`]; zero: not at all).
    pub s3_keep_warm: Option<std::time::Duration>,
    /// An S3 store's client settings given on the command line.
    pub s3: S3Overrides,
    /// How long an S3 store may answer link and listing questions from memory: a
    /// mount's tag lifetime. Zero (`ls`, `cat`): asked every time.
    pub remote_ttl: std::time::Duration,
}

/// Whether `store` names an S3 store (`s3://BUCKET[/ROOT]`) rather than a local folder.
pub fn is_remote(store: &Path) -> bool {
    store.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// Opens `root` as whichever layout it holds.
pub fn open(root: &Path, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    if let Some(location) = root.to_str().and_then(s3::config::Location::parse) {
        return open_s3(root, location.map_err(Error::Usage)?, options);
    }
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(root, "a store must be a directory"));
    }
    let v2 = root.join("docker/registry/v2");
    if v2.is_dir() {
        return Ok(Arc::new(DistributionStore::open(&v2)?));
    }
    if root.join("repositories").is_dir()
        || root.join("blobs").is_dir() && !root.join("oci-layout").exists()
    {
        return Ok(Arc::new(DistributionStore::open(root)?));
    }
    if root.join("oci-layout").is_file() {
        return Ok(Arc::new(OciLayoutStore::open(
            root,
            options.oci_repository.as_deref(),
        )?));
    }
    Err(Error::invalid(
        root,
        "not a registry store: expected docker/registry/v2 (distribution) or an oci-layout file (OCI image layout)",
    ))
}

/// `s3://BUCKET[/ROOT]`, configured from the standard AWS variables and profile files.
fn open_s3(
    url: &Path,
    location: s3::config::Location,
    options: &OpenOptions,
) -> Result<Arc<dyn Store>> {
    let env = |name: &str| std::env::var(name).ok();
    let read_file = |path: &Path| std::fs::read_to_string(path).ok();
    let settings = s3::config::resolve(&s3::config::Sources {
        env: &env,
        read_file: &read_file,
    })
    .map_err(|reason| Error::invalid(url, reason))?
    .with_overrides(&options.s3);
    let cache_dir = match &options.cache_dir {
        Some(dir) => dir.clone(),
        None => s3::default_cache_dir(&location)?,
    };
    let caching = s3::Caching {
        dir: cache_dir,
        max_bytes: options.cache_max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES),
        answer_ttl: options.remote_ttl,
        keep_warm: options.s3_keep_warm.unwrap_or(s3::DEFAULT_KEEP_WARM),
    };
    Ok(Arc::new(S3Store::open(&location, &settings, caching)?))
}
