//! Parsing namespace paths. Pure: the store is only asked which repository folders exist.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar::is_tag;
use crate::manifest::ManifestKind;
use crate::store::Store;

/// What a manifest folder is named after.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A folder name below `manifests/`: a tag, or a lower-case `sha256:<hex>`.
    pub fn parse(name: &str) -> Option<Reference> {
        if is_tag(name) {
            return Some(Reference::Tag(name.to_string()));
        }
        Digest::parse(name)
            .ok()
            .filter(|d| d.sha256_hex().is_some())
            .map(Reference::Digest)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t,
            Reference::Digest(d) => d.as_str(),
        }
    }
}

/// A path of the namespace, resolved to what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The root ("") or a folder on the way to, or of, a repository.
    RepoDir(String),
    Manifests(String),
    ManifestDir(String, Reference),
    ManifestFile(String, Reference, ManifestKind),
    Blobs(String),
    Blob(String, Digest),
    Tags(String),
    TagList(String),
    /// A path of `_catalog` ([`super::catalog`]).
    Catalog(super::catalog::CatalogNode),
    /// A path of a tag's `digest` folder ([`super::digests`]).
    TagDigest(super::digests::DigestPath),
}

/// Folder names a repository shows; a nested repository with one of these names is
/// hidden behind them.
pub const REPOSITORY_SECTIONS: [&str; 3] = ["blobs", "manifests", "tags"];

impl Location {
    pub fn is_dir(&self) -> bool {
        match self {
            Location::TagDigest(p) => p.is_dir(),
            Location::Catalog(node) => node.is_dir(),
            _ => !matches!(
                self,
                Location::ManifestFile(..) | Location::Blob(..) | Location::TagList(..)
            ),
        }
    }

    /// Whether the content can never change: it is named by a digest.
    pub fn is_immutable(&self) -> bool {
        if let Location::TagDigest(p) = self {
            return p.is_immutable();
        }
        matches!(
            self,
            Location::ManifestDir(_, Reference::Digest(_))
                | Location::ManifestFile(_, Reference::Digest(_), _)
                | Location::Blob(..)
        )
    }

    /// Resolves `path` ("a/b/manifests/latest/schema1"; leading and trailing '/' and
    /// empty components are ignored). Checks the repository folders exist; whether a
    /// tag, digest or kind exists is left to the namespace.
    pub fn parse(store: &dyn Store, path: &str) -> Result<Location> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let not_found = || Error::NotFound(path.to_string());
        if parts.first() == Some(&super::catalog::FOLDER) {
            return super::catalog::CatalogNode::parse(&parts[1..])
                .map(Location::Catalog)
                .ok_or_else(not_found);
        }
        // Most paths are inside a repository: find its section first, with one store
        // check instead of one per component. The walk below decides the same way: it
        // stops at the first section whose prefix is a repository, and the folders on
        // the way to a repository exist.
        for (i, part) in parts.iter().enumerate().skip(1) {
            if REPOSITORY_SECTIONS.contains(part) {
                let repo = parts[..i].join("/");
                if store.is_repository(&repo)? {
                    return Location::in_repository(repo, part, &parts[i + 1..])
                        .ok_or_else(not_found);
                }
            }
        }
        // Not inside a repository: every folder on the way must exist.
        let mut repo = String::new();
        for part in &parts {
            if !store.has_child(&repo, part)? {
                return Err(not_found());
            }
            if !repo.is_empty() {
                repo.push('/');
            }
            repo.push_str(part);
        }
        Ok(Location::RepoDir(repo))
    }

    fn in_repository(repo: String, section: &str, rest: &[&str]) -> Option<Location> {
        match (section, rest) {
            ("manifests", []) => Some(Location::Manifests(repo)),
            ("manifests", [r, super::digests::FOLDER, rest @ ..]) => {
                super::digests::DigestPath::parse(&repo, r, rest).map(Location::TagDigest)
            }
            ("manifests", [r]) => Some(Location::ManifestDir(repo, Reference::parse(r)?)),
            ("manifests", [r, kind]) => Some(Location::ManifestFile(
                repo,
                Reference::parse(r)?,
                ManifestKind::from_file_name(kind)?,
            )),
            ("blobs", []) => Some(Location::Blobs(repo)),
            ("blobs", [d]) => {
                let digest = Digest::parse(d).ok().filter(|d| d.sha256_hex().is_some())?;
                Some(Location::Blob(repo, digest))
            }
            ("tags", []) => Some(Location::Tags(repo)),
            ("tags", ["list"]) => Some(Location::TagList(repo)),
            _ => None,
        }
    }
}
