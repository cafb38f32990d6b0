//! Web server configs that serve the Registry v2 pull API from a registryfs mount
//! (`registryfs httpd-config nginx|apache|njs`). Pure: text in, text out.
//!
//! Both servers answer `GET`/`HEAD` for
//! - `/v2/` (200 `{}`),
//! - `/v2/<name>/manifests/<ref>`: one file of the manifest folder, picked from the
//!   `Accept` header by [`RULES`], which reproduces registry 2.8.2's choice
//!   (schema1-conversion.md §1) with the files the namespace offers,
//! - `/v2/<name>/blobs/<digest>` (Range works: the servers' static file handlers),
//! - `/v2/<name>/tags/list`,
//!
//! with the registry's headers, status codes and error bodies where static files allow.
//! What cannot be reproduced is listed in docs/httpd.md.

use crate::error::{Error, Result};
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
    fn letter(self) -> char {
        match self {
            Accepts::List => 'L',
            Accepts::OciIndex => 'I',
            Accepts::Oci => 'O',
            Accepts::Schema2 => '2',
        }
    }

    fn var(self) -> &'static str {
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
/// folder exists or not as `folder` says (if it matters), the answer is `outcome`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub reference: RefType,
    pub accept: Option<Accepts>,
    pub files: &'static [ManifestKind],
    pub folder: Option<bool>,
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
        outcome,
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
        outcome: E(ErrorKind::TagUnknown),
    },
    rule(
        RefType::Tag,
        None,
        &[K::List],
        E(ErrorKind::ManifestUnknown),
    ),
    rule(RefType::Tag, None, &[K::Oci], E(ErrorKind::OciGate)),
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
) -> Outcome {
    RULES
        .iter()
        .find(|r| {
            r.reference == reference
                && r.accept.is_none_or(|a| accepts.contains(&a))
                && r.files.iter().all(|f| files.contains(f))
                && r.folder.is_none_or(|d| d == folder)
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

// ---------------------------------------------------------------------------
// options

/// What to generate.
#[derive(Clone, Debug)]
pub struct HttpdOptions {
    /// The mount point (absolute).
    pub root: String,
    /// `ADDRESS:PORT` (or a port) to listen on.
    pub listen: String,
    /// A whole nginx.conf / apache2.conf instead of the server part.
    pub full: bool,
    /// nginx: the njs module file (`registryfs httpd-config njs`) that joins repeated
    /// `Accept` lines; without it nginx < 1.23 sees only the first line.
    pub njs: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Where Debian's libnginx-mod-http-js puts the module.
pub const NJS_MODULE_SO: &str = "/usr/lib/nginx/modules/ngx_http_js_module.so";
/// Where Debian's apache2-bin puts the modules.
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

impl HttpdOptions {
    fn validate(&self) -> Result<()> {
        let usage = |m: String| Err(Error::Usage(m));
        if !self.root.starts_with('/') {
            return usage(format!("--root {}: must be an absolute path", self.root));
        }
        // Characters that would need quoting or mean something to nginx or Apache
        // (variables, expressions, regex back-references) are refused outright.
        let unsafe_char = |c: char| !(c.is_ascii_alphanumeric() || "/._-+@=,".contains(c));
        if let Some(c) = self.root.chars().find(|&c| unsafe_char(c)) {
            return usage(format!(
                "--root {}: {c:?} is not allowed in the path (use a symlink)",
                self.root
            ));
        }
        if let Some(njs) = &self.njs {
            if !njs.starts_with('/') || njs.chars().any(unsafe_char) {
                return usage(format!(
                    "--njs {njs}: must be an absolute path of plain characters"
                ));
            }
        }
        let listen_ok = !self.listen.is_empty()
            && self
                .listen
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c))
            && self
                .listen
                .rsplit(':')
                .next()
                .is_some_and(|p| p.parse::<u16>().is_ok());
        if !listen_ok {
            return usage(format!(
                "--listen {}: want ADDRESS:PORT or PORT, e.g. 127.0.0.1:5000",
                self.listen
            ));
        }
        Ok(())
    }

    fn root(&self) -> &str {
        let r = self.root.trim_end_matches('/');
        if r.is_empty() {
            "/"
        } else {
            r
        }
    }

    /// The path of a mount file: root + "/" + rest (rest starts without '/').
    fn under_root(&self, rest: &str) -> String {
        let root = self.root();
        if root == "/" {
            format!("/{rest}")
        } else {
            format!("{root}/{rest}")
        }
    }
}

/// A repository name: components of letters, digits and `._-`, starting with a letter
/// or digit (so no `..`, no `_manifests`), separated by `/`.
const NAME_RE: &str = "[a-zA-Z0-9][a-zA-Z0-9._-]*(?:/[a-zA-Z0-9][a-zA-Z0-9._-]*)*";
/// A tag (distribution's grammar).
const TAG_RE: &str = "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}";
/// A digest as the registry's route takes it; the namespace has lower-case sha256 only,
/// so anything else is an unknown manifest or blob.
const DIGEST_RE: &str = "[a-zA-Z0-9_+.-]+:[a-fA-F0-9]+";
const API_VERSION_HEADER: &str = "Docker-Distribution-Api-Version";
const API_VERSION: &str = "registry/2.0";
const JSON_UTF8: &str = "application/json; charset=utf-8";
const BLOB_TYPE: &str = "application/octet-stream";
const BLOB_CACHE_CONTROL: &str = "max-age=31536000";

fn letter_of(kind: ManifestKind) -> char {
    match kind {
        ManifestKind::List => 'L',
        ManifestKind::OciIndex => 'I',
        ManifestKind::Oci => 'O',
        ManifestKind::Schema2 => '2',
        ManifestKind::Schema1 => '1',
    }
}

/// The file kinds in the order of the nginx map key's "have" part.
const HAVE_ORDER: [ManifestKind; 5] = [
    ManifestKind::List,
    ManifestKind::OciIndex,
    ManifestKind::Oci,
    ManifestKind::Schema2,
    ManifestKind::Schema1,
];

fn outcome_slug(o: Outcome) -> String {
    match o {
        Outcome::Serve(k) => format!("m/{}", k.file_name()),
        Outcome::Error(e) => format!("error/{}", e.slug()),
    }
}

/// The nginx map key pattern of a rule: `^T:<accept>:<have>` with `.` for "any".
pub fn nginx_pattern(r: &Rule) -> String {
    let mut p = String::from("^");
    p.push(match r.reference {
        RefType::Tag => 'T',
        RefType::Digest => 'D',
    });
    p.push(':');
    for a in Accepts::ALL {
        p.push(if r.accept == Some(a) { a.letter() } else { '.' });
    }
    p.push(':');
    for k in HAVE_ORDER {
        p.push(if r.files.contains(&k) {
            letter_of(k)
        } else {
            '.'
        });
    }
    p.push(match r.folder {
        Some(true) => 'D',
        Some(false) => '-',
        None => '.',
    });
    p.push('$');
    p
}

/// The key the nginx config builds for a request (what [`nginx_pattern`]s match).
pub fn nginx_key(
    reference: RefType,
    accepts: &[Accepts],
    files: &[ManifestKind],
    folder: bool,
) -> String {
    let mut k = String::new();
    k.push(match reference {
        RefType::Tag => 'T',
        RefType::Digest => 'D',
    });
    k.push(':');
    for a in Accepts::ALL {
        k.push(if accepts.contains(&a) {
            a.letter()
        } else {
            '-'
        });
    }
    k.push(':');
    for kind in HAVE_ORDER {
        k.push(if files.contains(&kind) {
            letter_of(kind)
        } else {
            '-'
        });
    }
    k.push(if folder { 'D' } else { '-' });
    k
}

/// The regex (PCRE, both servers) matching an `Accept` value that lists `media_type`
/// as one of its comma-separated entries, parameters ignored.
fn accept_regex(media_type: &str) -> String {
    let mut escaped = String::new();
    for c in media_type.chars() {
        if ".+*?()[]{}|^$\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("(^|,)[ \\t]*{escaped}[ \\t]*(;|,|$)")
}

// ---------------------------------------------------------------------------
// nginx

/// The njs module for nginx < 1.23: `$http_accept` holds only the first `Accept` line
/// there, while Docker and containers/image send one line per media type.
pub fn njs_module() -> String {
    "// registryfs: every Accept header line of the request, joined with \", \" as\n\
     // nginx >= 1.23 does for $http_accept (1.22 keeps only the first line).\n\
     // Used by `registryfs httpd-config nginx --njs THIS_FILE` (js_set $rfs_accept).\n\
     function accept(r) {\n\
     \x20   var lines = [];\n\
     \x20   var raw = r.rawHeadersIn;\n\
     \x20   for (var i = 0; i < raw.length; i++) {\n\
     \x20       if (raw[i][0].toLowerCase() === 'accept') {\n\
     \x20           lines.push(raw[i][1]);\n\
     \x20       }\n\
     \x20   }\n\
     \x20   return lines.join(', ');\n\
     }\n\
     \n\
     export default { accept };\n"
        .to_string()
}

/// The http{}-level part for nginx: the Accept flags and the negotiation map.
fn nginx_http_level(opts: &HttpdOptions) -> String {
    let mut out = String::new();
    let accept_var = match &opts.njs {
        Some(path) => {
            out.push_str(&format!(
                "# Every Accept line (nginx < 1.23 keeps only the first in $http_accept).\n\
                 js_import rfs_accept from {path};\n\
                 js_set $rfs_accept rfs_accept.accept;\n\n"
            ));
            "$rfs_accept"
        }
        None => {
            out.push_str(
                "# Accept flags come from $http_accept: nginx >= 1.23 joins repeated Accept\n\
                 # lines there, nginx 1.22 (Debian 12) keeps only the FIRST line, so clients\n\
                 # that send one line per media type (Docker, containers/image) are judged by\n\
                 # their first line. Generate with --njs FILE to read every line.\n\n",
            );
            "$http_accept"
        }
    };
    out.push_str(
        "# registry 2.8.2's Accept flags: each comma-separated entry, parameters dropped,\n\
         # compared exactly (case-sensitive; q=0 still counts).\n",
    );
    for a in Accepts::ALL {
        out.push_str(&format!(
            "map {accept_var} $rfs_accept_{} {{\n    default -;\n    \"~{}\" {};\n}}\n",
            a.var(),
            accept_regex(a.kind().media_type()),
            a.letter()
        ));
    }
    out.push_str(
        "\n# Which file of the manifest folder answers (first match wins). Key:\n\
         # T|D (tag or digest) : accepted L I O 2 : files present L I O 2 1, D = folder exists.\n\
         map \"$rfs_reftype:$rfs_accept_list$rfs_accept_ocii$rfs_accept_oci$rfs_accept_s2:$rfs_have\" $rfs_pick {\n",
    );
    out.push_str("    default error/manifest-unknown;\n");
    for r in RULES {
        out.push_str(&format!(
            "    \"~{}\" {};\n",
            nginx_pattern(r),
            outcome_slug(r.outcome)
        ));
    }
    out.push_str("}\n");
    out
}

fn nginx_api_header() -> String {
    format!("add_header {API_VERSION_HEADER} {API_VERSION} always;")
}

fn nginx_server(opts: &HttpdOptions) -> String {
    let root = opts.root();
    let api = nginx_api_header();
    let mut s = String::new();
    s.push_str(&format!(
        "server {{\n\
         \x20   listen {listen};\n\
         \x20   server_name _;\n\
         \x20   # The mount: files only, exact types, nothing compressed or guessed.\n\
         \x20   root {root};\n\
         \x20   gzip off;\n\
         \x20   charset off;\n\
         \x20   server_tokens off;\n\
         \x20   types {{ }}\n\
         \x20   default_type {BLOB_TYPE};\n\
         \x20   # Tags move: no validators from file times (the registry's are digests).\n\
         \x20   etag off;\n\
         \x20   if_modified_since off;\n\
         \x20   # Keep the files open and remember which are missing, for as long as the\n\
         \x20   # mount caches a tag path (--tag-ttl, 1 s by default): without this every\n\
         \x20   # manifest request costs six lookups and an open through FUSE. nginx re-checks\n\
         \x20   # a name after open_file_cache_valid and reopens it when its inode changed,\n\
         \x20   # and a moved tag is a new inode on the mount.\n\
         \x20   open_file_cache max=8192 inactive=60s;\n\
         \x20   open_file_cache_valid 1s;\n\
         \x20   open_file_cache_errors on;\n\
         \x20   {api}\n\
         \n\
         \x20   # Read-only.\n\
         \x20   if ($request_method !~ ^(GET|HEAD)$) {{\n\
         \x20       rewrite ^ /_rfs/error/unsupported last;\n\
         \x20   }}\n\
         \n\
         \x20   location = /v2/ {{\n\
         \x20       default_type \"{JSON_UTF8}\";\n\
         \x20       {api}\n\
         \x20       return 200 '{{}}';\n\
         \x20   }}\n\
         \n",
        listen = opts.listen,
    ));

    // Manifests: tag and digest references.
    for (reftype, letter, re) in [
        (RefType::Tag, 'T', TAG_RE),
        (RefType::Digest, 'D', DIGEST_RE),
    ] {
        let digest_vars = if reftype == RefType::Digest {
            "        set $rfs_digest $rfs_ref;\n        set $rfs_etag \"\\\"$rfs_ref\\\"\";\n"
        } else {
            "        set $rfs_digest \"\";\n        set $rfs_etag \"\";\n"
        };
        s.push_str(&format!(
            "    location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/manifests/(?<rfs_ref>{re})$\" {{\n\
             \x20       set $rfs_reftype {letter};\n\
             {digest_vars}\
             \x20       set $rfs_dir {root_slash}$rfs_repo/manifests/$rfs_ref;\n\
             \x20       set $rfs_l -;\n\
             \x20       set $rfs_i -;\n\
             \x20       set $rfs_o -;\n\
             \x20       set $rfs_2 -;\n\
             \x20       set $rfs_1 -;\n\
             \x20       set $rfs_d -;\n\
             \x20       if (-f $rfs_dir/list) {{ set $rfs_l L; }}\n\
             \x20       if (-f $rfs_dir/oci-index) {{ set $rfs_i I; }}\n\
             \x20       if (-f $rfs_dir/oci) {{ set $rfs_o O; }}\n\
             \x20       if (-f $rfs_dir/schema2) {{ set $rfs_2 2; }}\n\
             \x20       if (-f $rfs_dir/schema1) {{ set $rfs_1 1; }}\n\
             \x20       if (-d $rfs_dir) {{ set $rfs_d D; }}\n\
             \x20       set $rfs_have $rfs_l$rfs_i$rfs_o$rfs_2$rfs_1$rfs_d;\n\
             \x20       rewrite ^ /_rfs/$rfs_pick last;\n\
             \x20   }}\n\n",
            root_slash = opts.under_root(""),
        ));
    }

    // One internal location per manifest kind: exact Content-Type, Vary, digest headers.
    for kind in ManifestKind::ALL {
        s.push_str(&format!(
            "    location = /_rfs/m/{file} {{\n\
             \x20       internal;\n\
             \x20       default_type {mt};\n\
             \x20       {api}\n\
             \x20       add_header Vary Accept;\n\
             \x20       add_header Docker-Content-Digest $rfs_digest;\n\
             \x20       add_header Etag $rfs_etag;\n\
             \x20       try_files /$rfs_repo/manifests/$rfs_ref/{file} /_rfs/error/manifest-unknown;\n\
             \x20   }}\n\n",
            file = kind.file_name(),
            mt = kind.media_type(),
        ));
    }

    s.push_str(&format!(
        "    location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/blobs/(?<rfs_ref>{DIGEST_RE})$\" {{\n\
         \x20       default_type {BLOB_TYPE};\n\
         \x20       {api}\n\
         \x20       add_header Docker-Content-Digest $rfs_ref;\n\
         \x20       add_header Etag \"\\\"$rfs_ref\\\"\";\n\
         \x20       add_header Cache-Control {BLOB_CACHE_CONTROL};\n\
         \x20       # Blobs never change under their digest: keep them open longer, and do\n\
         \x20       # not remember a missing one (it may be pushed any moment).\n\
         \x20       open_file_cache max=4096 inactive=60s;\n\
         \x20       open_file_cache_valid 60s;\n\
         \x20       open_file_cache_errors off;\n\
         \x20       try_files /$rfs_repo/blobs/$rfs_ref /_rfs/error/blob-unknown;\n\
         \x20   }}\n\n\
         \x20   location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/tags/list$\" {{\n\
         \x20       default_type \"{JSON_UTF8}\";\n\
         \x20       {api}\n\
         \x20       try_files /$rfs_repo/tags/list /_rfs/error/name-unknown;\n\
         \x20   }}\n\n"
    ));

    for e in ErrorKind::ALL {
        s.push_str(&format!(
            "    location = /_rfs/error/{slug} {{\n\
             \x20       internal;\n\
             \x20       default_type \"{JSON_UTF8}\";\n\
             \x20       {api}\n\
             \x20       return {status} '{body}';\n\
             \x20   }}\n\n",
            slug = e.slug(),
            status = e.status(),
            body = e.body("$rfs_repo", "$rfs_ref").replace('\n', "\\n"),
        ));
    }

    s.push_str(&format!(
        "    # Anything else: what the registry's router answers.\n\
         \x20   location / {{\n\
         \x20       default_type \"text/plain; charset=utf-8\";\n\
         \x20       {api}\n\
         \x20       return 404 '404 page not found\\n';\n\
         \x20   }}\n\
         }}\n"
    ));
    s
}

/// The nginx configuration: the http{}-level maps and the server{} block, or with
/// `full` a whole nginx.conf whose relative paths resolve against `nginx -p PREFIX`.
pub fn nginx(opts: &HttpdOptions) -> Result<String> {
    opts.validate()?;
    let header = format!(
        "# registryfs: the Registry v2 pull API (GET/HEAD) from the mount at {root}\n\
         # generated by `registryfs httpd-config nginx`; see docs/httpd.md.\n",
        root = opts.root()
    );
    if !opts.full {
        return Ok(format!(
            "{header}\
             # Put the maps in the http{{}} block once (they are shared by every such server),\n\
             # and the server{{}} block after them.\n\n\
             # ---- http{{}} level ----\n{maps}\n# ---- server ----\n{server}",
            maps = nginx_http_level(opts),
            server = nginx_server(opts)
        ));
    }
    let load_njs = if opts.njs.is_some() {
        format!("load_module {NJS_MODULE_SO};\n")
    } else {
        String::new()
    };
    let indent = |text: String| -> String {
        text.lines()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(format!(
        "{header}\
         # Run: nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log [-g 'daemon off;']\n\
         # (relative paths below are under PREFIX). The worker user must be able to read\n\
         # the mount: mount it with --allow-other.\n\
         {load_njs}\
         worker_processes auto;\n\
         pid nginx.pid;\n\
         error_log error.log warn;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_timeout 65;\n\
         \x20   client_body_temp_path tmp/client_body;\n\
         \x20   proxy_temp_path tmp/proxy;\n\
         \x20   fastcgi_temp_path tmp/fastcgi;\n\
         \x20   uwsgi_temp_path tmp/uwsgi;\n\
         \x20   scgi_temp_path tmp/scgi;\n\n\
         {maps}\n\n\
         {server}\n\
         }}\n",
        maps = indent(nginx_http_level(opts)),
        server = indent(nginx_server(opts)),
    ))
}

// ---------------------------------------------------------------------------
// Apache

fn apache_vhost(opts: &HttpdOptions) -> String {
    let root = opts.root();
    let mut s = String::new();
    s.push_str(&format!(
        "<VirtualHost {listen}>\n\
         \x20   ServerName localhost\n\
         \x20   # A guessed Content-Type confuses Docker clients: no magic, no compression.\n\
         \x20   <IfModule mod_mime_magic.c>\n\
         \x20       MimeMagicFile /dev/null\n\
         \x20   </IfModule>\n\
         \x20   <Directory {root}>\n\
         \x20       Require all granted\n\
         \x20       Options None\n\
         \x20       AllowOverride None\n\
         \x20   </Directory>\n\
         \x20   # Tags move: no validators from file times (the registry's are digests).\n\
         \x20   # (Not FileETag None: it also drops the Etag set below.)\n\
         \x20   RequestHeader unset If-Modified-Since\n\
         \x20   RequestHeader unset If-None-Match\n\
         \x20   Header always set {API_VERSION_HEADER} \"{API_VERSION}\"\n\
         \x20   Header set Vary Accept env=RFS_KIND\n\
         \x20   Header set Docker-Content-Digest \"%{{RFS_DIGEST}}e\" env=RFS_DIGEST\n\
         \x20   Header set Etag \"\\\"%{{RFS_DIGEST}}e\\\"\" env=RFS_DIGEST\n\
         \x20   Header unset Etag env=!RFS_DIGEST\n\
         \x20   Header set Cache-Control \"{BLOB_CACHE_CONTROL}\" env=RFS_BLOB\n\
         \x20   Header always set Content-Range \"expr=bytes */%{{filesize:%{{REQUEST_FILENAME}}}}\" \"expr=%{{REQUEST_STATUS}} == 416\"\n\
         \x20   # What the registry's router answers for anything it does not route.\n\
         \x20   ErrorDocument 404 \"404 page not found\\n\"\n\
         \x20   Header always set Content-Type \"text/plain; charset=utf-8\" \"expr=%{{REQUEST_STATUS}} == 404\"\n\
         \x20   ErrorDocument 200 \"{{}}\"\n\
         \x20   Header always set Content-Type \"{JSON_UTF8}\" \"expr=%{{REQUEST_URI}} == '/v2/'\"\n\
         \x20   Header always set Content-Length 2 \"expr=%{{REQUEST_URI}} == '/v2/'\"\n\
         \n\
         \x20   RewriteEngine On\n\
         \x20   RewriteRule ^ - [E=no-gzip:1,E=no-brotli:1]\n\
         \x20   RewriteCond %{{REQUEST_METHOD}} !^(GET|HEAD)$\n\
         \x20   RewriteRule ^ /_rfs/error/unsupported [PT]\n\
         \x20   RewriteRule ^/v2/$ - [R=200,L]\n\
         \n\
         \x20   # Manifests. Apache joins repeated Accept lines with \", \", so every line counts.\n",
        listen = opts.listen,
    ));
    for a in Accepts::ALL {
        s.push_str(&format!(
            "    RewriteCond %{{HTTP:Accept}} \"{}\" [NV]\n\
             \x20   RewriteRule ^/v2/.+/manifests/ - [E=RFS_ACCEPT_{}:{}]\n",
            accept_regex(a.kind().media_type()),
            a.var().to_ascii_uppercase(),
            a.letter()
        ));
    }
    let root_slash = opts.under_root("");
    for (re_name, re) in [("tag", TAG_RE), ("digest", DIGEST_RE)] {
        s.push_str(&format!(
            "    RewriteRule \"^/v2/({NAME_RE})/manifests/({re})$\" - [E=RFS_REPO:$1,E=RFS_REF:$2,E=RFS_DIR:{root_slash}$1/manifests/$2,E=RFS_REFTYPE:{re_name}]\n"
        ));
    }
    s.push_str(
        "    # Which file of the manifest folder answers (first match wins, as registry 2.8.2).\n",
    );
    for r in RULES {
        let re = match r.reference {
            RefType::Tag => TAG_RE,
            RefType::Digest => DIGEST_RE,
        };
        if let Some(a) = r.accept {
            s.push_str(&format!(
                "    RewriteCond %{{ENV:RFS_ACCEPT_{}}} ={}\n",
                a.var().to_ascii_uppercase(),
                a.letter()
            ));
        }
        for f in r.files {
            s.push_str(&format!(
                "    RewriteCond %{{ENV:RFS_DIR}}/{} -f\n",
                f.file_name()
            ));
        }
        match r.folder {
            Some(true) => s.push_str("    RewriteCond %{ENV:RFS_DIR} -d\n"),
            Some(false) => s.push_str("    RewriteCond %{ENV:RFS_DIR} !-d\n"),
            None => {}
        }
        let pattern = format!("\"^/v2/({NAME_RE})/manifests/({re})$\"");
        match r.outcome {
            Outcome::Serve(kind) => {
                let digest = if r.reference == RefType::Digest {
                    ",E=RFS_DIGEST:$2"
                } else {
                    ""
                };
                // A literal path: Apache >= 2.4.60 takes a substitution that starts
                // with a variable for a URL path (CVE-2024-38475).
                s.push_str(&format!(
                    "    RewriteRule {pattern} {root_slash}$1/manifests/$2/{file} \"[L,T={mt},E=RFS_KIND:{file}{digest}]\"\n",
                    file = kind.file_name(),
                    mt = kind.media_type()
                ));
            }
            Outcome::Error(e) => {
                s.push_str(&format!(
                    "    RewriteRule {pattern} /_rfs/error/{} [PT]\n",
                    e.slug()
                ));
            }
        }
    }
    s.push_str(&format!(
        "\n\
         \x20   # Blobs (Range requests: Apache's file handler) and tag lists.\n\
         \x20   RewriteCond {root_slash}$1/blobs/$2 -f\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/blobs/({DIGEST_RE})$\" {root_slash}$1/blobs/$2 \"[L,T={BLOB_TYPE},E=RFS_DIGEST:$2,E=RFS_BLOB:1]\"\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/blobs/({DIGEST_RE})$\" /_rfs/error/blob-unknown [PT,E=RFS_REPO:$1,E=RFS_REF:$2]\n\
         \x20   RewriteCond {root_slash}$1/tags/list -f\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/tags/list$\" {root_slash}$1/tags/list \"[L,T={JSON_UTF8}]\"\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/tags/list$\" /_rfs/error/name-unknown [PT,E=RFS_REPO:$1]\n\
         \x20   RewriteRule ^/_rfs/ - [R=404,L]\n\
         \x20   RewriteRule ^ - [R=404,L]\n\
         \n\
         \x20   # The registry's error answers (JSON, application/json; charset=utf-8).\n\
         \x20   <Location /_rfs/error/>\n\
         \x20       Require all granted\n\
         \x20       Options FollowSymLinks\n\
         \x20       RewriteEngine On\n\
         \x20       Header always set Content-Type \"{JSON_UTF8}\"\n\
         \x20   </Location>\n"
    ));
    for e in ErrorKind::ALL {
        let body = e
            .body("%{reqenv:RFS_REPO}", "%{reqenv:RFS_REF}")
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        s.push_str(&format!(
            "    <Location /_rfs/error/{slug}>\n\
             \x20       RewriteRule ^ - [R={status}]\n\
             \x20       ErrorDocument {status} \"{body}\"\n\
             \x20   </Location>\n",
            slug = e.slug(),
            status = e.status(),
        ));
    }
    s.push_str("</VirtualHost>\n");
    s
}

/// The Apache configuration: a VirtualHost, or with `full` a whole apache2.conf for
/// Debian's module paths, relative paths resolving against `apache2 -d PREFIX`.
pub fn apache(opts: &HttpdOptions) -> Result<String> {
    opts.validate()?;
    let header = format!(
        "# registryfs: the Registry v2 pull API (GET/HEAD) from the mount at {root}\n\
         # generated by `registryfs httpd-config apache`; see docs/httpd.md.\n",
        root = opts.root()
    );
    let vhost = apache_vhost(opts);
    if !opts.full {
        return Ok(format!(
            "{header}\
             # Needs mod_rewrite and mod_headers (a2enmod rewrite headers), `Listen {listen}`,\n\
             # and a mount readable by the server's user (--allow-other).\n\n{vhost}",
            listen = opts.listen
        ));
    }
    let modules = ["mpm_event", "authz_core", "rewrite", "headers"]
        .iter()
        .map(|m| format!("LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"))
        .collect::<String>();
    Ok(format!(
        "{header}\
         # Run: apache2 -d PREFIX -f PREFIX/apache2.conf -DFOREGROUND (relative paths below\n\
         # are under PREFIX). Started as root, it serves as www-data: mount with --allow-other.\n\
         ServerName localhost\n\
         Listen {listen}\n\
         {modules}\
         User www-data\n\
         Group www-data\n\
         PidFile apache2.pid\n\
         DefaultRuntimeDir .\n\
         ErrorLog error.log\n\
         LogLevel warn\n\
         <Directory />\n\
         \x20   Require all denied\n\
         \x20   Options None\n\
         \x20   AllowOverride None\n\
         </Directory>\n\n\
         {vhost}",
        listen = opts.listen
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ManifestKind::*;

    fn tag(accepts: &[Accepts], files: &[ManifestKind]) -> Outcome {
        pick(RefType::Tag, accepts, files, !files.is_empty())
    }

    fn digest(accepts: &[Accepts], files: &[ManifestKind]) -> Outcome {
        pick(RefType::Digest, accepts, files, !files.is_empty())
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

    /// A matcher for the generated map patterns: `^`, literal letters, `.`, `$`.
    fn matches(pattern: &str, key: &str) -> bool {
        let p = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap();
        p.len() == key.len()
            && p.chars()
                .zip(key.chars())
                .all(|(pc, kc)| pc == '.' || pc == kc)
    }

    fn subsets<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
        (0..1u32 << items.len())
            .map(|mask| {
                items
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, x)| *x)
                    .collect()
            })
            .collect()
    }

    /// The nginx map (first matching pattern, default manifest-unknown) agrees with
    /// `pick` for every combination of flags, files and folder.
    #[test]
    fn nginx_map_equals_the_table() {
        for reference in [RefType::Tag, RefType::Digest] {
            for accepts in subsets(&Accepts::ALL) {
                for files in subsets(&HAVE_ORDER) {
                    for folder in [false, true] {
                        let key = nginx_key(reference, &accepts, &files, folder);
                        let via_map = RULES
                            .iter()
                            .find(|r| matches(&nginx_pattern(r), &key))
                            .map(|r| r.outcome)
                            .unwrap_or(E(ErrorKind::ManifestUnknown));
                        assert_eq!(via_map, pick(reference, &accepts, &files, folder), "{key}");
                    }
                }
            }
        }
    }

    fn opts(full: bool, njs: Option<&str>) -> HttpdOptions {
        HttpdOptions {
            root: "/mnt/registry".into(),
            listen: "127.0.0.1:5000".into(),
            full,
            njs: njs.map(Into::into),
        }
    }

    #[test]
    fn nginx_config_has_every_part() {
        let c = nginx(&opts(false, None)).unwrap();
        assert!(c.contains("map $http_accept $rfs_accept_s2"));
        assert!(c.contains("listen 127.0.0.1:5000;"));
        assert!(c.contains("root /mnt/registry;"));
        assert!(c.contains("open_file_cache_valid 1s;"));
        assert!(c.contains("set $rfs_dir /mnt/registry/$rfs_repo/manifests/$rfs_ref;"));
        for kind in ManifestKind::ALL {
            assert!(c.contains(&format!("location = /_rfs/m/{}", kind.file_name())));
            assert!(c.contains(&format!("default_type {};", kind.media_type())));
        }
        for e in ErrorKind::ALL {
            assert!(c.contains(&format!("location = /_rfs/error/{}", e.slug())));
        }
        assert!(c.contains(
            r#"return 404 '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"$rfs_ref"}}]}\n';"#
        ));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        assert!(!c.contains("js_import"));

        let full = nginx(&opts(true, Some("/etc/nginx/registryfs.js"))).unwrap();
        assert!(full.contains("load_module /usr/lib/nginx/modules/ngx_http_js_module.so;"));
        assert!(full.contains("js_import rfs_accept from /etc/nginx/registryfs.js;"));
        assert!(full.contains("map $rfs_accept $rfs_accept_list"));
        assert!(full.contains("events {"));
        assert_eq!(full.matches('{').count(), full.matches('}').count());
    }

    #[test]
    fn apache_config_has_every_part() {
        let c = apache(&opts(false, None)).unwrap();
        assert!(c.starts_with("# registryfs"));
        assert!(c.contains("<VirtualHost 127.0.0.1:5000>"));
        assert!(c.contains("MimeMagicFile /dev/null"));
        assert!(c.contains(
            "RewriteRule \"^/v2/([a-zA-Z0-9][a-zA-Z0-9._-]*(?:/[a-zA-Z0-9][a-zA-Z0-9._-]*)*)/manifests/([a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})$\" /mnt/registry/$1/manifests/$2/schema1 \"[L,T=application/vnd.docker.distribution.manifest.v1+prettyjws,E=RFS_KIND:schema1]\""
        ));
        assert!(c.contains("RewriteCond %{ENV:RFS_DIR}/list -f"));
        assert!(c.contains(
            r#"ErrorDocument 404 "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\",\"detail\":\"%{reqenv:RFS_REF}\"}]}\n""#
        ));
        assert_eq!(
            c.matches("<Location").count(),
            c.matches("</Location>").count()
        );
        let full = apache(&opts(true, None)).unwrap();
        assert!(full.contains("LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so"));
        assert!(full.contains("Listen 127.0.0.1:5000"));
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

    #[test]
    fn unsafe_options_are_refused() {
        for root in [
            "relative",
            "/mnt/a b",
            "/mnt/$x",
            "/mnt/a;b",
            "/mnt/\"x",
            "/mnt/%{x}",
        ] {
            let mut o = opts(false, None);
            o.root = root.into();
            assert!(nginx(&o).is_err(), "{root}");
            assert!(apache(&o).is_err(), "{root}");
        }
        for listen in ["", "127.0.0.1", "127.0.0.1:x", "1.2.3.4:5; x"] {
            let mut o = opts(false, None);
            o.listen = listen.into();
            assert!(nginx(&o).is_err(), "{listen}");
        }
        let mut o = opts(false, None);
        o.listen = "8080".into();
        assert!(nginx(&o).is_ok());
        o.root = "/".into();
        assert!(nginx(&o)
            .unwrap()
            .contains("set $rfs_dir /$rfs_repo/manifests/$rfs_ref;"));
    }
}

// ---------------------------------------------------------------------------
// command line

/// Which configuration `registryfs httpd-config` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// nginx: http{}-level maps and a server{} block (--full: a whole nginx.conf)
    Nginx,
    /// Apache 2.4: a VirtualHost (--full: a whole apache2.conf)
    Apache,
    /// The njs module that `nginx --njs FILE` loads (nginx < 1.23: repeated Accept lines)
    Njs,
}

/// `registryfs httpd-config`: print a web server configuration serving the Registry v2
/// pull API from a mount.
#[derive(Clone, Debug, clap::Args)]
pub struct HttpdConfigArgs {
    /// The server to configure
    #[arg(value_enum)]
    pub server: Server,
    /// The mount point to serve (absolute; not for njs)
    #[arg(long, value_name = "MOUNTPOINT")]
    pub root: Option<String>,
    /// Address and port to listen on
    #[arg(long, value_name = "ADDRESS:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Print a whole configuration file, not only the server part
    #[arg(long)]
    pub full: bool,
    /// nginx: read every Accept line through this njs module file (see `httpd-config njs`)
    #[arg(long, value_name = "FILE")]
    pub njs: Option<String>,
}

impl HttpdConfigArgs {
    /// The configuration text.
    pub fn render(&self) -> Result<String> {
        if self.server == Server::Njs {
            return Ok(njs_module());
        }
        let opts = HttpdOptions {
            root: self
                .root
                .clone()
                .ok_or_else(|| Error::Usage("--root MOUNTPOINT is required".into()))?,
            listen: self.listen.clone(),
            full: self.full,
            njs: self.njs.clone(),
        };
        match self.server {
            Server::Nginx => nginx(&opts),
            Server::Apache => {
                if opts.njs.is_some() {
                    return Err(Error::Usage(
                        "--njs is for nginx (Apache joins repeated Accept lines itself)".into(),
                    ));
                }
                apache(&opts)
            }
            Server::Njs => Ok(njs_module()),
        }
    }
}
