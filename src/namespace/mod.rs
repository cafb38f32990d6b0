//! The virtual namespace: path → folder or file content, with no FUSE in sight.
//!
//! ```text
//! <repo>/tags/list
//! <repo>/manifests/<tag>/{schema1,schema2,list,oci,oci-index}
//! <repo>/manifests/sha256:<hex>/<kind>      stored bytes only
//! <repo>/blobs/sha256:<hex>
//! ```
//! Repository names nest as folders. Both the CLI (`ls`, `cat`) and the FUSE adapter
//! answer from here, so they always agree.

pub mod catalog;
mod changes;
pub mod crane;
pub mod digests;
mod path;
mod representations;

use crate::cache::ByteLru;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ManifestKind, PlatformChoice};
use crate::metrics::{CacheResult, METRICS};
use crate::schema1::jws::Unsigned;
use crate::schema1::{SigningKey, EMPTY_LAYER_DIGEST, EMPTY_LAYER_TAR};
use crate::store::{BlobFile, BlobReader, FileIdentity, Folder, Store};
use std::sync::Arc;
use std::time::SystemTime;

pub use crate::grammar::child_path;
pub use changes::Stale;
pub use path::{Location, Reference, REPOSITORY_SECTIONS};
use representations::Schema1Key;

/// How schema1 documents are produced.
#[derive(Clone, Debug)]
pub struct Settings {
    pub key: SigningKey,
    /// Which manifest-list entry a tag's `schema2`/`schema1` come from.
    pub platform: PlatformChoice,
    /// Also convert OCI image manifests (registry 2.8 never does).
    pub convert_oci: bool,
    /// Convert images with foreign layers, dropping their URLs as registry 2.8 does.
    pub allow_foreign_layers: bool,
    /// Generated schema1 documents kept in memory.
    /// Bytes of generated schema1 documents kept.
    pub schema1_cache_bytes: usize,
}

/// A file's bytes: in memory (manifests, tag lists), a schema1 signed when first read,
/// or a blob file on disk.
#[derive(Clone, Debug)]
pub enum Content {
    Bytes(Arc<[u8]>),
    Jws(Arc<Unsigned>),
    Blob { file: BlobFile, digest: Digest },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Jws(doc) => doc.len() as u64,
            Content::Blob { file, .. } => file.len,
        }
    }

    /// The bytes of a file held in memory (signing a schema1 now if need be); None for a
    /// blob, which is read from its file.
    pub fn in_memory(&self) -> Option<Arc<[u8]>> {
        match self {
            Content::Bytes(b) => Some(b.clone()),
            Content::Jws(doc) => Some(doc.signed()),
            Content::Blob { .. } => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a path names.
#[derive(Clone, Debug)]
pub enum Node {
    Dir,
    File(Content),
    /// A symbolic link, with its (relative) target ([`digests`]).
    Link(Arc<str>),
}

/// What a path names, and its modification time. Times come from the store, never from
/// the clock of the process that answers: every mount of one store shows the same ones.
/// - a file's time is when what it is made of was last written: a tag's files, when the
///   tag was last pushed (its link); a digest's files and blobs, when the data was
///   stored; derived files (tag lists, Crane app files), the newest of their sources;
/// - a folder's time is that of the store folders whose entries it lists, so it grows
///   whenever its listing changes.
#[derive(Clone, Debug)]
pub struct TimedNode {
    pub node: Node,
    pub mtime: SystemTime,
}

impl TimedNode {
    fn dir(mtime: SystemTime) -> TimedNode {
        TimedNode {
            node: Node::Dir,
            mtime,
        }
    }

    fn file(content: Content, mtime: SystemTime) -> TimedNode {
        TimedNode {
            node: Node::File(content),
            mtime,
        }
    }

    fn link(target: Arc<str>, mtime: SystemTime) -> TimedNode {
        TimedNode {
            node: Node::Link(target),
            mtime,
        }
    }
}

/// A parsed path of either layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Registry(Location),
    /// A node of the Crane layout with no registry counterpart ([`crane`]).
    Crane(crane::CraneNode),
}

impl Place {
    pub fn is_dir(&self) -> bool {
        match self {
            Place::Registry(location) => location.is_dir(),
            Place::Crane(node) => node.is_dir(),
        }
    }

    /// Whether the content can never change: it is named by a digest.
    pub fn is_immutable(&self) -> bool {
        match self {
            Place::Registry(location) => location.is_immutable(),
            Place::Crane(_) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// A generated schema1 document, or why there is none (cached either way).
type Schema1Result = std::result::Result<representations::Schema1Doc, representations::Refused>;

/// The empty-layer tar is served from memory where the store has no data for it; its
/// bytes never change, so its time is fixed too.
const EMPTY_LAYER_MTIME: SystemTime = SystemTime::UNIX_EPOCH;

pub struct Namespace {
    store: Arc<dyn Store>,
    config: Settings,
    /// `config.key`, shared with the documents it will sign.
    signing_key: Arc<SigningKey>,
    schema1_cache: ByteLru<Schema1Key, Schema1Result>,
    verified_blobs: ByteLru<FileIdentity, Digest>,
    /// `Some`: paths are those of the Crane layout ([`crane`]).
    crane: Option<crane::CraneState>,
}

/// Bytes of "this file (by identity) hashed to that digest" kept: about 16k blobs.
pub const VERIFIED_BLOBS_BYTES: usize = 4 << 20;

impl Namespace {
    pub fn new(store: Arc<dyn Store>, config: Settings) -> Namespace {
        Namespace {
            store,
            signing_key: Arc::new(config.key.clone()),
            schema1_cache: ByteLru::new(config.schema1_cache_bytes),
            config,
            verified_blobs: ByteLru::new(VERIFIED_BLOBS_BYTES),
            crane: None,
        }
    }

    /// Serves the Crane layout ([`crane`]) instead of the registry layout.
    pub fn with_crane_layout(mut self, options: crane::CraneOptions) -> Namespace {
        self.crane = Some(crane::CraneState::new(options));
        self
    }

    /// Keep what is read from the store for `lifetime` (see `store::memo`).
    pub fn remember_store_reads(&self, lifetime: std::time::Duration) {
        self.store.remember_reads(lifetime);
    }

    /// Forget what the store keeps of what it read: it changed.
    pub fn forget_store_reads(&self) {
        self.store.changed();
    }

    /// Bytes held by the generated schema1 documents kept.
    pub fn schema1_cache_bytes(&self) -> usize {
        self.schema1_cache.bytes()
    }

    /// The store it serves, for a walk of the store itself (`verify`).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.config
    }

    /// The store's folder to watch for changes ([`Namespace::store_changed`]).
    pub fn watch_target(&self) -> (std::path::PathBuf, crate::watch::Layout) {
        self.store.watch_target()
    }

    /// What `path` names. Files come with their content (generated if need be), so the
    /// size is exact and stays tied to these bytes.
    pub fn lookup(&self, path: &str) -> Result<Node> {
        Ok(self.lookup_timed(path)?.node)
    }

    /// [`Namespace::lookup`], with the node's time.
    pub fn lookup_timed(&self, path: &str) -> Result<TimedNode> {
        let place = self.locate(path)?;
        self.lookup_place(&place, path)
    }

    /// Resolves `path` without reading content: with [`Namespace::lookup_place`] a
    /// caller parses once and also learns [`Place::is_immutable`] (the FUSE adapter's
    /// cache lifetimes).
    pub fn locate(&self, path: &str) -> Result<Place> {
        if self.crane.is_some() {
            return self.crane_locate(path);
        }
        Location::parse(self.store.as_ref(), path).map(Place::Registry)
    }

    pub fn lookup_place(&self, place: &Place, path: &str) -> Result<TimedNode> {
        match place {
            Place::Registry(location) => self.lookup_location(location, path),
            Place::Crane(node) => self.crane_lookup(node),
        }
    }

    fn lookup_location(&self, location: &Location, path: &str) -> Result<TimedNode> {
        let not_found = || Error::NotFound(path.to_string());
        match location {
            Location::RepoDir(prefix) => {
                Ok(TimedNode::dir(self.folder_time(Folder::Names(prefix))?))
            }
            Location::Manifests(repo) => Ok(TimedNode::dir(self.manifests_time(repo)?)),
            Location::Blobs(repo) => Ok(TimedNode::dir(self.folder_time(Folder::Layers(repo))?)),
            Location::Tags(repo) => Ok(TimedNode::dir(self.folder_time(Folder::Tags(repo))?)),
            Location::ManifestDir(repo, reference) => self
                .manifest_time(repo, reference)?
                .map(TimedNode::dir)
                .ok_or_else(not_found),
            Location::ManifestFile(repo, reference, kind) => {
                let reps = self
                    .representations(repo, reference)?
                    .ok_or_else(not_found)?;
                if let Some(content) = reps.files.get(kind) {
                    return Ok(TimedNode::file(content.clone(), reps.mtime));
                }
                match (&reps.no_schema1_because, kind) {
                    (Some(reason), ManifestKind::Schema1) => {
                        Err(Error::NotFound(format!("{path} ({reason})")))
                    }
                    _ => Err(not_found()),
                }
            }
            Location::Blob(repo, digest) => {
                let content = self.blob(repo, digest)?.ok_or_else(not_found)?;
                let mtime = match &content {
                    Content::Blob { file, .. } => file.mtime,
                    Content::Bytes(_) | Content::Jws(_) => EMPTY_LAYER_MTIME,
                };
                Ok(TimedNode::file(content, mtime))
            }
            Location::TagList(repo) => {
                let bytes = self.tag_list(repo)?.ok_or_else(not_found)?;
                let mtime = self.folder_time(Folder::Tags(repo))?;
                Ok(TimedNode::file(Content::Bytes(bytes), mtime))
            }
            Location::TagDigest(p) => self.digest_lookup(p, path),
            Location::Catalog(node) => self.catalog_lookup(node, path),
        }
    }

    /// Walks the repository-name folders below `from` (itself included), calling `visit`
    /// with each name and whether it is a repository.
    fn walk_repository_folders(
        &self,
        from: &str,
        mut visit: impl FnMut(&str, bool) -> Result<()>,
    ) -> Result<()> {
        let mut pending = vec![from.to_string()];
        while let Some(prefix) = pending.pop() {
            let is_repository = !prefix.is_empty() && self.store.is_repository(&prefix)?;
            visit(&prefix, is_repository)?;
            for child in self.store.child_names(&prefix)? {
                pending.push(child_path(&prefix, &child));
            }
        }
        Ok(())
    }

    /// Every repository, and the newest time of the repository-name folders (the time of
    /// a listing of every repository, which grows when one is added or removed).
    fn repositories_with_time(&self) -> Result<(Vec<String>, SystemTime)> {
        let mut names = Vec::new();
        let mut newest = SystemTime::UNIX_EPOCH;
        self.walk_repository_folders("", |name, is_repository| {
            newest = newest.max(self.folder_time(Folder::Names(name))?);
            if is_repository {
                names.push(name.to_string());
            }
            Ok(())
        })?;
        Ok((names, newest))
    }

    /// When `folder`'s listing last changed; the epoch for a folder the store lacks (an
    /// empty store has no `repositories` folder yet).
    fn folder_time(&self, folder: Folder<'_>) -> Result<SystemTime> {
        Ok(self
            .store
            .folder_mtime(folder)?
            .unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// `<repo>/manifests/` lists tags and revisions.
    fn manifests_time(&self, repo: &str) -> Result<SystemTime> {
        Ok(self
            .folder_time(Folder::Tags(repo))?
            .max(self.folder_time(Folder::Revisions(repo))?))
    }

    /// The entries of the folder at `path`, sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        if self.crane.is_some() {
            return self.crane_list(path);
        }
        self.list_registry(path)
    }

    /// [`Namespace::list`] in the registry layout.
    fn list_registry(&self, path: &str) -> Result<Vec<DirEntry>> {
        let location = Location::parse(self.store.as_ref(), path)?;
        let dir = |name: &str| DirEntry {
            name: name.to_string(),
            is_dir: true,
        };
        let file = |name: &str| DirEntry {
            name: name.to_string(),
            is_dir: false,
        };
        let mut entries = match &location {
            Location::RepoDir(prefix) => {
                let is_repo = !prefix.is_empty() && self.store.is_repository(prefix)?;
                let mut out: Vec<DirEntry> = self
                    .store
                    .child_names(prefix)?
                    .into_iter()
                    .filter(|n| !(is_repo && REPOSITORY_SECTIONS.contains(&n.as_str())))
                    .map(|n| dir(&n))
                    .collect();
                if is_repo {
                    out.extend(REPOSITORY_SECTIONS.iter().map(|s| dir(s)));
                }
                out
            }
            Location::Manifests(repo) => {
                let mut out = Vec::new();
                for tag in self.store.tags(repo)?.unwrap_or_default() {
                    // Listed only if a lookup would find it; a broken tag is logged.
                    let reference = Reference::Tag(tag.clone());
                    match self.manifest_time(repo, &reference) {
                        Ok(Some(_)) => out.push(dir(&tag)),
                        Ok(None) => {}
                        Err(e) => log::warn!("{e}"),
                    }
                }
                out.extend(
                    self.store
                        .manifest_digests(repo)?
                        .iter()
                        .map(|d| dir(d.as_str())),
                );
                out
            }
            Location::ManifestDir(repo, reference) => {
                let reps = self
                    .representations(repo, reference)?
                    .ok_or_else(|| Error::NotFound(path.to_string()))?;
                reps.files.keys().map(|k| file(k.file_name())).collect()
            }
            Location::Blobs(repo) => {
                let mut out: Vec<DirEntry> = self
                    .store
                    .blob_digests(repo)?
                    .iter()
                    .map(|d| file(d.as_str()))
                    .collect();
                out.push(file(EMPTY_LAYER_DIGEST));
                out
            }
            Location::Tags(repo) => match self.store.tags(repo)? {
                Some(_) => vec![file("list")],
                None => Vec::new(),
            },
            // Found by lookup only (see `digests`).
            Location::TagDigest(p) if p.is_dir() => Vec::new(),
            Location::Catalog(node) if node.is_dir() => Vec::new(),
            Location::ManifestFile(..)
            | Location::Blob(..)
            | Location::TagList(..)
            | Location::TagDigest(_)
            | Location::Catalog(_) => {
                return Err(Error::Usage(format!("{path}: not a folder")));
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries)
    }

    /// The time of a manifest folder, or None if it does not exist: by tag, when the
    /// tag was pushed; by digest, when the manifest was stored.
    fn manifest_time(&self, repo: &str, reference: &Reference) -> Result<Option<SystemTime>> {
        match reference {
            Reference::Tag(tag) => {
                let Some(link) = self.store.tag_link(repo, tag)? else {
                    return Ok(None);
                };
                // A tag whose revision is gone is unknown to the registry too (404).
                let stored = self.store.manifest_mtime(repo, &link.digest)?;
                Ok(stored.map(|_| link.mtime))
            }
            Reference::Digest(digest) => self.store.manifest_mtime(repo, digest),
        }
    }

    /// A blob of the repository. The empty-layer tar is in every repository because
    /// converted schema1 manifests point at it (registry 2.8 writes it on conversion).
    fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<Content>> {
        let is_empty_layer = digest.as_str() == EMPTY_LAYER_DIGEST;
        match self.store.blob(repo, digest) {
            Ok(Some(file)) => {
                return Ok(Some(Content::Blob {
                    file,
                    digest: digest.clone(),
                }))
            }
            Ok(None) => {}
            // A link to the empty layer whose data is gone: serve it from memory.
            Err(e) if e.is_not_found() && is_empty_layer => {}
            Err(e) => return Err(e),
        }
        Ok(is_empty_layer.then(|| Content::Bytes(Arc::from(&EMPTY_LAYER_TAR[..]))))
    }

    /// `GET /v2/<repo>/tags/list` as registry 2.8.2 answers it: Go's JSON encoder output
    /// with a trailing newline, tags in store order, `null` when there are none.
    fn tag_list(&self, repo: &str) -> Result<Option<Arc<[u8]>>> {
        let Some(tags) = self.store.tags(repo)? else {
            return Ok(None);
        };
        let mut out = b"{\"name\":".to_vec();
        crate::gojson::write_string(&mut out, repo.as_bytes());
        out.extend_from_slice(b",\"tags\":");
        if tags.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            out.push(b'[');
            for (i, tag) in tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::gojson::write_string(&mut out, tag.as_bytes());
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}\n");
        Ok(Some(out.into()))
    }

    /// Opens a blob to serve it, confined to the store. A file is served only after
    /// checking that the bytes of this very descriptor hash to its digest (so no swap
    /// between check and open can change what is served); the verdict is remembered
    /// while the file's inode, size and times stay the same, and the file is returned
    /// at offset 0. A stream (a remote store's download) is checked by the store as
    /// it arrives.
    pub fn open_blob(&self, file: &BlobFile, digest: &Digest) -> Result<BlobReader> {
        let opened = self.store.open_blob(file)?.ok_or_else(|| {
            Error::NotFound(format!("{}: blob data is gone", file.path.display()))
        })?;
        match opened {
            BlobReader::File(opened) => self
                .checked_file(opened, file, digest)
                .map(BlobReader::File),
            streaming @ BlobReader::Streaming(_) => Ok(streaming),
        }
    }

    fn checked_file(
        &self,
        opened: std::fs::File,
        file: &BlobFile,
        digest: &Digest,
    ) -> Result<std::fs::File> {
        let meta = opened.metadata().map_err(|e| Error::io(&file.path, e))?;
        // A verified hash stays valid while the file's identity is unchanged.
        let identity = FileIdentity::of(&meta);
        if !meta.is_file() || meta.len() != file.len {
            return Err(Error::invalid(
                &file.path,
                "blob changed since it was looked up",
            ));
        }
        if self.verified_blobs.get(&identity).as_ref() == Some(digest) {
            METRICS.blob_check_cache.inc(CacheResult::Hit);
            return Ok(opened);
        }
        METRICS.blob_check_cache.inc(CacheResult::Miss);
        METRICS.blob_hashed_bytes.add(meta.len());
        let actual = crate::digest::sha256_of_file(&opened, &file.path)?;
        if actual != *digest {
            return Err(Error::invalid(
                &file.path,
                format!("blob data does not hash to {digest} (found {actual})"),
            ));
        }
        let bytes = std::mem::size_of::<(FileIdentity, Digest)>() + digest.to_string().len();
        self.verified_blobs.put(identity, digest.clone(), bytes);
        Ok(opened)
    }

    /// Checks a blob as [`Namespace::open_blob`] does, without keeping it open.
    pub fn verify_blob(&self, file: &BlobFile, digest: &Digest) -> Result<()> {
        match self.open_blob(file, digest)? {
            BlobReader::File(_) => Ok(()),
            BlobReader::Streaming(stream) => {
                stream.verified().map_err(|e| Error::io(&file.path, e))
            }
        }
    }
}
