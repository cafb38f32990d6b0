//! The digests a web server sends with a manifest requested by tag, as symlinks it can
//! resolve without reading anything (nginx: `$realpath_root`; Apache: its `file`
//! function reads the link's target).
//!
//! ```text
//! <repo>/manifests/<tag>/digest/<kind>        -> <kind>@sha256:<hex>
//! <repo>/manifests/<tag>/digest/revision      -> revision@sha256:<hex>
//! <repo>/manifests/<tag>/digest/<name>@sha256:<hex>   file: the text "sha256:<hex>"
//! <repo>/manifests/<tag>/digest/revision=<digest>    empty file, there only while the
//!                                                    tag's revision is <digest>
//! <repo>/manifests/<ref>/digest/any-accept   empty file: served whatever Accept says
//! ```
//!
//! `<kind>` is each file of the tag folder, and the digest is the one registry 2.8.2
//! sends with it in `Docker-Content-Digest` and `Etag`: the stored manifest's, a list's
//! platform child's, or for a converted schema1 the digest of its payload (without the
//! signatures). `revision` is the manifest the tag links to, which the registry compares
//! `If-None-Match` with before it looks at `Accept`. `any-accept` (also in digest
//! folders) marks an OCI index stored without `mediaType`, which registry 2.8.2 serves
//! to every client: its OCI gate tests the declared type. `revision=<digest>` answers
//! `If-None-Match` by its existence: nginx tests a name made from the header with one
//! cached `stat` instead of resolving the `revision` link. The `@` file only carries the
//! digest of its name, as text, so it exists for any such name: a server resolving a
//! link just as the tag moves still finds the target it read (the link is the state).
//! Its name is not a digest, and a converted schema1 never appears under a digest path (`<repo>/manifests/sha256:<hex>/...` holds
//! stored bytes only, as the registry answers 404 there). The folder is found by lookup
//! only (not listed in the tag folder, nor lists anything), so tree walkers (Crane,
//! `find`) do not see it. Tag names are the only names that come from the store here,
//! and they stay path components under `manifests/`.

use super::path::Reference;
use super::{Content, Namespace, TimedNode};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ManifestKind;
use std::sync::Arc;
use std::time::SystemTime;

/// The name of the folder in a tag folder.
pub const FOLDER: &str = "digest";
/// The link to the tag's revision.
const REVISION: &str = "revision";
/// `revision=<digest>`: exists while the tag's revision is that digest.
const REVISION_IS: &str = "revision=";
/// The marker of a manifest served whatever the client accepts.
pub const ANY_ACCEPT: &str = "any-accept";

/// What a link names: a file of the tag folder, or the tag's revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linked {
    Kind(ManifestKind),
    Revision,
}

impl Linked {
    fn parse(name: &str) -> Option<Linked> {
        if name == REVISION {
            return Some(Linked::Revision);
        }
        ManifestKind::from_file_name(name).map(Linked::Kind)
    }

    fn name(self) -> &'static str {
        match self {
            Linked::Kind(kind) => kind.file_name(),
            Linked::Revision => REVISION,
        }
    }
}

/// A node of a tag's `digest` folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestNode {
    Folder,
    Link(Linked),
    /// `<name>@<digest>`: the link target.
    Target(Linked, Digest),
    /// `revision=<digest>`.
    RevisionIs(Digest),
    AnyAccept,
}

/// A path below `<repo>/manifests/<reference>/digest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestPath {
    pub repo: String,
    pub reference: Reference,
    pub node: DigestNode,
}

impl DigestPath {
    /// `rest` is what follows `<repo>/manifests/<reference>/digest`. A digest folder's
    /// has `any-accept` only: its digest is its name.
    pub fn parse(repo: &str, reference: &str, rest: &[&str]) -> Option<DigestPath> {
        let reference = Reference::parse(reference)?;
        let node = match rest {
            [] => DigestNode::Folder,
            [ANY_ACCEPT] => DigestNode::AnyAccept,
            _ if matches!(reference, Reference::Digest(_)) => return None,
            [name] if name.starts_with(REVISION_IS) => {
                DigestNode::RevisionIs(Digest::parse(&name[REVISION_IS.len()..]).ok()?)
            }
            [name] => match name.split_once('@') {
                None => DigestNode::Link(Linked::parse(name)?),
                Some((linked, digest)) => {
                    let digest = Digest::parse(digest)
                        .ok()
                        .filter(|d| d.sha256_hex().is_some())?;
                    DigestNode::Target(Linked::parse(linked)?, digest)
                }
            },
            _ => return None,
        };
        Some(DigestPath {
            repo: repo.to_string(),
            reference,
            node,
        })
    }

    pub fn is_dir(&self) -> bool {
        self.node == DigestNode::Folder
    }

    /// A link target is named by its digest: once it exists its bytes never change (a
    /// moved tag links to another name), so the kernel may cache it as long as a digest
    /// path. The links themselves follow the tag.
    pub fn is_immutable(&self) -> bool {
        matches!(self.node, DigestNode::Target(..))
    }
}

/// A carrier file's time: its bytes never change.
const CARRIER_MTIME: SystemTime = SystemTime::UNIX_EPOCH;

/// The link text for `linked` at `digest`.
fn target(linked: Linked, digest: &Digest) -> String {
    format!("{}@{}", linked.name(), digest.as_str())
}

impl Namespace {
    /// What a path of a tag's `digest` folder names.
    /// Times: the tag's (what it links to is where the tag points); a carrier's bytes
    /// come from its name alone, so its time is fixed.
    pub(super) fn digest_lookup(&self, p: &DigestPath, path: &str) -> Result<TimedNode> {
        let not_found = || Error::NotFound(path.to_string());
        let linked = match &p.node {
            // A carrier: its bytes come from its name, whatever the tag says now.
            DigestNode::Target(_, digest) => {
                let text: Arc<[u8]> = Arc::from(digest.as_str().as_bytes());
                return Ok(TimedNode::file(Content::Bytes(text), CARRIER_MTIME));
            }
            DigestNode::Link(linked) => Some(*linked),
            DigestNode::Folder | DigestNode::AnyAccept | DigestNode::RevisionIs(_) => None,
        };
        let reps = self
            .representations(&p.repo, &p.reference)?
            .ok_or_else(not_found)?;
        match (linked, &p.node) {
            (Some(linked), _) => match linked {
                Linked::Kind(kind) => reps.digests.get(&kind),
                Linked::Revision => Some(&reps.revision),
            }
            .map(|d| TimedNode::link(target(linked, d).into(), reps.mtime))
            .ok_or_else(not_found),
            (None, DigestNode::RevisionIs(digest)) if *digest != reps.revision => Err(not_found()),
            (None, DigestNode::AnyAccept) if !reps.any_accept => Err(not_found()),
            (None, DigestNode::AnyAccept | DigestNode::RevisionIs(_)) => Ok(TimedNode::file(
                Content::Bytes(Arc::from(&b""[..])),
                reps.mtime,
            )),
            (None, _) => Ok(TimedNode::dir(reps.mtime)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(reference: &str, rest: &[&str]) -> Option<DigestNode> {
        DigestPath::parse("a/b", reference, rest).map(|p| p.node)
    }

    #[test]
    fn paths() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse("latest", &[]), Some(DigestNode::Folder));
        assert_eq!(
            parse("latest", &["schema1"]),
            Some(DigestNode::Link(Linked::Kind(ManifestKind::Schema1)))
        );
        assert_eq!(
            parse("latest", &["revision"]),
            Some(DigestNode::Link(Linked::Revision))
        );
        assert_eq!(
            parse("latest", &[&format!("oci-index@{d}")]),
            Some(DigestNode::Target(
                Linked::Kind(ManifestKind::OciIndex),
                Digest::parse(&d).unwrap()
            ))
        );
        // Digest folders have the marker only; no other names, no deeper paths.
        assert_eq!(parse(&d, &[]), Some(DigestNode::Folder));
        assert_eq!(parse(&d, &["any-accept"]), Some(DigestNode::AnyAccept));
        assert_eq!(parse(&d, &["list"]), None);
        assert_eq!(
            parse("latest", &[&format!("revision={d}")]),
            Some(DigestNode::RevisionIs(Digest::parse(&d).unwrap()))
        );
        assert_eq!(parse(&d, &[&format!("revision={d}")]), None);
        assert_eq!(parse("latest", &["revision=-"]), None);
        assert_eq!(parse("latest", &["revision="]), None);
        assert_eq!(parse("latest", &["other"]), None);
        assert_eq!(parse("latest", &["schema1@sha256:AB"]), None);
        assert_eq!(parse("latest", &[&format!("x@{d}")]), None);
        assert_eq!(parse("latest", &["schema1", "x"]), None);
    }
}
