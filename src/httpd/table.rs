//! The `Accept` decision table: registry 2.8.2's choice of a manifest representation,
//! in terms of the files of a mount's manifest folder, and its error answers.

use crate::manifest::ManifestKind;

/// A flag of the `Accept` header, as registry 2.8.2 computes them: every `Accept` line,
/// split on `,`, parameters dropped, trimmed, compared exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepts {
    List,
    OciIndex,
    Oci,
    Schema2,
}

impl Accepts {
    pub const ALL: [Accepts; 4] = [
        Accepts::List,
        Accepts::OciIndex,
        Accepts::Oci,
        Accepts::Schema2,
    ];

    pub fn kind(self) -> ManifestKind {
        match self {
            Accepts::List => ManifestKind::List,
            Accepts::OciIndex => ManifestKind::OciIndex,
            Accepts::Oci => ManifestKind::Oci,
            Accepts::Schema2 => ManifestKind::Schema2,
        }
    }

    /// One letter per flag in the nginx map key.
    pub(crate) fn letter(self) -> char {
        match self {
            Accepts::List => 'L',
            Accepts::OciIndex => 'I',
            Accepts::Oci => 'O',
            Accepts::Schema2 => '2',
        }
    }

    pub(crate) fn var(self) -> &'static str {
        match self {
            Accepts::List => "list",
            Accepts::OciIndex => "ocii",
            Accepts::Oci => "oci",
            Accepts::Schema2 => "s2",
        }
    }
}

/// Whether `<ref>` is a tag or a digest (a reference with a `:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefType {
    Tag,
    Digest,
}

/// The answer to a manifest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Serve(ManifestKind),
    Error(ErrorKind),
}

/// The registry's error answers that the configs reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404 MANIFEST_UNKNOWN, detail `{"Tag":…}`: no such tag.
    TagUnknown,
    /// 404 MANIFEST_UNKNOWN, detail `{"Name":…,"Revision":…}`: no such manifest.
    RevisionUnknown,
    /// 404 MANIFEST_UNKNOWN without detail: a list without a linux/amd64 entry.
    ManifestUnknown,
    /// 404: an OCI manifest to a client that does not accept OCI manifests.
    OciGate,
    /// 404: an OCI index to a client that does not accept OCI indexes.
    OciIndexGate,
    /// 400 MANIFEST_INVALID: a schema2 manifest that cannot be converted for this client.
    ManifestInvalid,
    /// 404 BLOB_UNKNOWN, detail: the digest.
    BlobUnknown,
    /// 404 NAME_UNKNOWN, detail `{"name":…}`: tags/list of an unknown repository.
    NameUnknown,
    /// 405 UNSUPPORTED: anything but GET and HEAD (the mount is read-only).
    Unsupported,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::TagUnknown,
        ErrorKind::RevisionUnknown,
        ErrorKind::ManifestUnknown,
        ErrorKind::OciGate,
        ErrorKind::OciIndexGate,
        ErrorKind::ManifestInvalid,
        ErrorKind::BlobUnknown,
        ErrorKind::NameUnknown,
        ErrorKind::Unsupported,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            ErrorKind::TagUnknown => "tag-unknown",
            ErrorKind::RevisionUnknown => "revision-unknown",
            ErrorKind::ManifestUnknown => "manifest-unknown",
            ErrorKind::OciGate => "oci-gate",
            ErrorKind::OciIndexGate => "oci-index-gate",
            ErrorKind::ManifestInvalid => "manifest-invalid",
            ErrorKind::BlobUnknown => "blob-unknown",
            ErrorKind::NameUnknown => "name-unknown",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::ManifestInvalid => 400,
            ErrorKind::Unsupported => 405,
            _ => 404,
        }
    }

    /// The registry's JSON body (with its trailing newline), `repo`/`reference` being
    /// the server's spelling of the request's repository name and reference.
    pub fn body(self, repo: &str, reference: &str) -> String {
        let (code, message, detail) = match self {
            ErrorKind::TagUnknown => (
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                Some(format!("{{\"Tag\":\"{reference}\"}}")),
            ),
            ErrorKind::RevisionUnknown => (
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                Some(format!(
                    "{{\"Name\":\"{repo}\",\"Revision\":\"{reference}\"}}"
                )),
            ),
            ErrorKind::ManifestUnknown => ("MANIFEST_UNKNOWN", "manifest unknown", None),
            ErrorKind::OciGate => (
                "MANIFEST_UNKNOWN",
                "OCI manifest found, but accept header does not support OCI manifests",
                None,
            ),
            ErrorKind::OciIndexGate => (
                "MANIFEST_UNKNOWN",
                "OCI index found, but accept header does not support OCI indexes",
                None,
            ),
            ErrorKind::ManifestInvalid => (
                "MANIFEST_INVALID",
                "manifest invalid",
                Some("{}".to_string()),
            ),
            ErrorKind::BlobUnknown => (
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                Some(format!("\"{reference}\"")),
            ),
            ErrorKind::NameUnknown => (
                "NAME_UNKNOWN",
                "repository name not known to registry",
                Some(format!("{{\"name\":\"{repo}\"}}")),
            ),
            ErrorKind::Unsupported => ("UNSUPPORTED", "The operation is unsupported.", None),
        };
        let detail = detail
            .map(|d| format!(",\"detail\":{d}"))
            .unwrap_or_default();
        format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"{message}\"{detail}}}]}}\n")
    }
}

/// One line of the negotiation table: when the reference is of `reference` type, the
/// client accepts `accept` (if any), every file of `files` exists, and the manifest
/// folder exists or not as `folder` says (if it matters), and (if `any_accept`) the
/// folder has the `any-accept` marker (`namespace::digests`), the answer is `outcome`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub reference: RefType,
    pub accept: Option<Accepts>,
    pub files: &'static [ManifestKind],
    pub folder: Option<bool>,
    pub any_accept: bool,
    pub outcome: Outcome,
}

const fn rule(
    reference: RefType,
    accept: Option<Accepts>,
    files: &'static [ManifestKind],
    outcome: Outcome,
) -> Rule {
    Rule {
        reference,
        accept,
        files,
        folder: None,
        any_accept: false,
        outcome,
    }
}

/// An OCI index stored without `mediaType`: registry 2.8.2 serves it to every client.
const fn untyped_index(reference: RefType) -> Rule {
    Rule {
        reference,
        accept: None,
        files: &[K::OciIndex],
        folder: None,
        any_accept: true,
        outcome: S(K::OciIndex),
    }
}

use ManifestKind as K;
use Outcome::{Error as E, Serve as S};

/// Registry 2.8.2's choice (schema1-conversion.md §1), in terms of the files of a
/// manifest folder; the first rule that applies decides. A tag folder holds the stored
/// kind plus what the registry derives from it (a list's linux/amd64 child, the schema1
/// conversion); a digest folder holds the stored kind only.
pub const RULES: &[Rule] = &[
    // By tag.
    rule(RefType::Tag, Some(Accepts::List), &[K::List], S(K::List)),
    rule(
        RefType::Tag,
        Some(Accepts::OciIndex),
        &[K::OciIndex],
        S(K::OciIndex),
    ),
    rule(RefType::Tag, Some(Accepts::Oci), &[K::Oci], S(K::Oci)),
    rule(
        RefType::Tag,
        Some(Accepts::Schema2),
        &[K::Schema2],
        S(K::Schema2),
    ),
    rule(RefType::Tag, None, &[K::Schema1], S(K::Schema1)),
    // A list whose linux/amd64 child is an OCI manifest: that child, to every client.
    rule(RefType::Tag, None, &[K::List, K::Oci], S(K::Oci)),
    Rule {
        reference: RefType::Tag,
        accept: None,
        files: &[],
        folder: Some(false),
        any_accept: false,
        outcome: E(ErrorKind::TagUnknown),
    },
    rule(
        RefType::Tag,
        None,
        &[K::List],
        E(ErrorKind::ManifestUnknown),
    ),
    rule(RefType::Tag, None, &[K::Oci], E(ErrorKind::OciGate)),
    untyped_index(RefType::Tag),
    rule(
        RefType::Tag,
        None,
        &[K::OciIndex],
        E(ErrorKind::OciIndexGate),
    ),
    rule(
        RefType::Tag,
        None,
        &[K::Schema2],
        E(ErrorKind::ManifestInvalid),
    ),
    rule(RefType::Tag, None, &[], E(ErrorKind::ManifestUnknown)),
    // By digest: the stored bytes, behind the OCI gate.
    rule(RefType::Digest, None, &[K::List], S(K::List)),
    rule(
        RefType::Digest,
        Some(Accepts::OciIndex),
        &[K::OciIndex],
        S(K::OciIndex),
    ),
    rule(RefType::Digest, Some(Accepts::Oci), &[K::Oci], S(K::Oci)),
    rule(RefType::Digest, None, &[K::Schema2], S(K::Schema2)),
    rule(RefType::Digest, None, &[K::Schema1], S(K::Schema1)),
    rule(RefType::Digest, None, &[K::Oci], E(ErrorKind::OciGate)),
    untyped_index(RefType::Digest),
    rule(
        RefType::Digest,
        None,
        &[K::OciIndex],
        E(ErrorKind::OciIndexGate),
    ),
    rule(RefType::Digest, None, &[], E(ErrorKind::RevisionUnknown)),
];

/// Evaluates [`RULES`] (what both generated configs do).
pub fn pick(
    reference: RefType,
    accepts: &[Accepts],
    files: &[ManifestKind],
    folder: bool,
    any_accept: bool,
) -> Outcome {
    RULES
        .iter()
        .find(|r| {
            r.reference == reference
                && r.accept.is_none_or(|a| accepts.contains(&a))
                && r.files.iter().all(|f| files.contains(f))
                && r.folder.is_none_or(|d| d == folder)
                && (!r.any_accept || any_accept)
        })
        .map(|r| r.outcome)
        .unwrap_or(E(ErrorKind::ManifestUnknown))
}

/// The flags registry 2.8.2 derives from the `Accept` lines.
pub fn accept_flags<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Accepts> {
    let mut out = Vec::new();
    for line in lines {
        for part in line.split(',') {
            let media_type = part.split(';').next().unwrap_or("").trim();
            for a in Accepts::ALL {
                if media_type == a.kind().media_type() && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

pub(crate) fn letter_of(kind: ManifestKind) -> char {
    match kind {
        ManifestKind::List => 'L',
        ManifestKind::OciIndex => 'I',
        ManifestKind::Oci => 'O',
        ManifestKind::Schema2 => '2',
        ManifestKind::Schema1 => '1',
    }
}

/// The file kinds in the order of the nginx map key's "have" part.
pub(crate) const HAVE_ORDER: [ManifestKind; 5] = [
    ManifestKind::List,
    ManifestKind::OciIndex,
    ManifestKind::Oci,
    ManifestKind::Schema2,
    ManifestKind::Schema1,
];

pub(crate) fn outcome_slug(o: Outcome) -> String {
    match o {
        Outcome::Serve(k) => format!("m/{}", k.file_name()),
        Outcome::Error(e) => format!("error/{}", e.slug()),
    }
}

/// The regex (PCRE, both servers) matching an `Accept` value that lists `media_type`
/// as one of its comma-separated entries, parameters ignored.
pub(crate) fn accept_regex(media_type: &str) -> String {
    let mut escaped = String::new();
    for c in media_type.chars() {
        if ".+*?()[]{}|^$\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("(^|,)[ \\t]*{escaped}[ \\t]*(;|,|$)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ManifestKind::*;

    fn tag(accepts: &[Accepts], files: &[ManifestKind]) -> Outcome {
        pick(RefType::Tag, accepts, files, !files.is_empty(), false)
    }

    fn digest(accepts: &[Accepts], files: &[ManifestKind]) -> Outcome {
        pick(RefType::Digest, accepts, files, !files.is_empty(), false)
    }

    const ALL_ACCEPTS: [Accepts; 4] = Accepts::ALL;

    /// schema1-conversion.md §1's summary table, row by row.
    #[test]
    fn registry_table_by_tag() {
        use Accepts as A;
        // stored schema2: converted schema1 unless s2.
        let s2_tag = [Schema2, Schema1];
        assert_eq!(tag(&[], &s2_tag), S(Schema1));
        assert_eq!(tag(&[A::List, A::Oci, A::OciIndex], &s2_tag), S(Schema1));
        assert_eq!(tag(&[A::Schema2], &s2_tag), S(Schema2));
        // ... and when the conversion is refused: the registry's 400.
        assert_eq!(tag(&[], &[Schema2]), E(ErrorKind::ManifestInvalid));
        // Docker list with a schema2 child.
        let list_tag = [List, Schema2, Schema1];
        assert_eq!(tag(&[A::List], &list_tag), S(List));
        assert_eq!(tag(&ALL_ACCEPTS, &list_tag), S(List));
        assert_eq!(tag(&[A::Schema2], &list_tag), S(Schema2));
        assert_eq!(tag(&[A::Oci], &list_tag), S(Schema1));
        assert_eq!(tag(&[], &list_tag), S(Schema1));
        // no linux/amd64: 404 without detail, even for schema2 clients.
        assert_eq!(tag(&[A::Schema2], &[List]), E(ErrorKind::ManifestUnknown));
        assert_eq!(tag(&[A::List], &[List]), S(List));
        // OCI child: served to every client that does not take the list.
        assert_eq!(tag(&[], &[List, Oci]), S(Oci));
        assert_eq!(tag(&[A::Schema2], &[List, Oci]), S(Oci));
        assert_eq!(tag(&[A::List], &[List, Oci]), S(List));
        // schema1 child.
        assert_eq!(tag(&[A::Schema2], &[List, Schema1]), S(Schema1));
        // OCI manifest and index: the gate.
        assert_eq!(tag(&[A::Oci], &[Oci]), S(Oci));
        assert_eq!(tag(&[A::Schema2, A::List], &[Oci]), E(ErrorKind::OciGate));
        assert_eq!(tag(&[A::OciIndex], &[OciIndex]), S(OciIndex));
        assert_eq!(tag(&[A::Oci], &[OciIndex]), E(ErrorKind::OciIndexGate));
        // stored schema1: always.
        for a in [&[][..], &ALL_ACCEPTS[..]] {
            assert_eq!(tag(a, &[Schema1]), S(Schema1));
        }
        // unknown tag.
        assert_eq!(tag(&ALL_ACCEPTS, &[]), E(ErrorKind::TagUnknown));
    }

    #[test]
    fn registry_table_by_digest() {
        use Accepts as A;
        assert_eq!(digest(&[], &[Schema2]), S(Schema2));
        assert_eq!(digest(&[], &[List]), S(List));
        assert_eq!(digest(&[A::Schema2], &[Schema1]), S(Schema1));
        assert_eq!(digest(&[], &[Oci]), E(ErrorKind::OciGate));
        assert_eq!(digest(&[A::Oci], &[Oci]), S(Oci));
        assert_eq!(digest(&[A::Oci], &[OciIndex]), E(ErrorKind::OciIndexGate));
        assert_eq!(digest(&[A::OciIndex], &[OciIndex]), S(OciIndex));
        assert_eq!(digest(&ALL_ACCEPTS, &[]), E(ErrorKind::RevisionUnknown));
    }

    /// An OCI index stored without `mediaType` skips the OCI gate, by tag and digest.
    #[test]
    fn an_untyped_index_goes_to_every_client() {
        for reference in [RefType::Tag, RefType::Digest] {
            assert_eq!(pick(reference, &[], &[OciIndex], true, true), S(OciIndex));
            assert_eq!(
                pick(reference, &[Accepts::Schema2], &[OciIndex], true, false),
                E(ErrorKind::OciIndexGate)
            );
        }
    }

    #[test]
    fn accept_parsing_is_the_registry_s() {
        use Accepts as A;
        assert_eq!(accept_flags([]), vec![]);
        assert_eq!(accept_flags(["*/*"]), vec![]);
        assert_eq!(
            accept_flags([
                "application/vnd.docker.distribution.manifest.v2+json ; q=0",
                "text/html,application/vnd.oci.image.index.v1+json"
            ]),
            vec![A::Schema2, A::OciIndex]
        );
        // Case-sensitive, exact.
        assert_eq!(
            accept_flags(["Application/vnd.docker.distribution.manifest.v2+json"]),
            vec![]
        );
        assert_eq!(
            accept_flags(["application/vnd.docker.distribution.manifest.v2+jsonx"]),
            vec![]
        );
    }

    #[test]
    fn error_bodies_are_the_registry_s() {
        assert_eq!(
            ErrorKind::RevisionUnknown.body("a/b", "sha256:00"),
            "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\",\"detail\":{\"Name\":\"a/b\",\"Revision\":\"sha256:00\"}}]}\n"
        );
        assert_eq!(
            ErrorKind::OciGate.body("a", "t"),
            "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"OCI manifest found, but accept header does not support OCI manifests\"}]}\n"
        );
    }
}
