//! Web server configs that serve the Registry v2 pull API from a registryfs mount
//! (`registryfs httpd-config nginx|apache|njs`). Pure: text in, text out.
//!
//! Both servers answer `GET`/`HEAD` for
//! - `/v2/` (200 `{}`),
//! - `/v2/<name>/manifests/<ref>`: one file of the manifest folder, picked from the
//!   `Accept` header by [`table::RULES`], which reproduces registry 2.8.2's choice
//!   (schema1-conversion.md §1) with the files the namespace offers,
//! - `/v2/<name>/blobs/<digest>` (Range works: the servers' static file handlers),
//! - `/v2/<name>/tags/list`,
//!
//! with the registry's headers, status codes and error bodies where static files allow.
//! What cannot be reproduced is listed in docs/httpd.md.

mod apache;
mod cli;
mod nginx;
mod options;
mod table;

pub use apache::apache;
pub use cli::{HttpdConfigArgs, Server};
pub use nginx::{nginx, nginx_key, nginx_pattern, njs_module};
pub use options::{HttpdOptions, APACHE_MODULES, DEFAULT_LISTEN, NJS_MODULE_SO};
pub use table::{accept_flags, pick, Accepts, ErrorKind, Outcome, RefType, Rule, RULES};

/// A repository name: components of letters, digits and `._-`, starting with a letter
/// or digit (so no `..`, no `_manifests`), separated by `/`.
pub(crate) const NAME_RE: &str = "[a-zA-Z0-9][a-zA-Z0-9._-]*(?:/[a-zA-Z0-9][a-zA-Z0-9._-]*)*";
/// A tag (distribution's grammar).
pub(crate) const TAG_RE: &str = "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}";
/// A digest as the registry's route takes it; the namespace has lower-case sha256 only,
/// so anything else is an unknown manifest or blob.
pub(crate) const DIGEST_RE: &str = "[a-zA-Z0-9_+.-]+:[a-fA-F0-9]+";
pub(crate) const API_VERSION_HEADER: &str = "Docker-Distribution-Api-Version";
pub(crate) const API_VERSION: &str = "registry/2.0";
pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";
pub(crate) const BLOB_TYPE: &str = "application/octet-stream";
pub(crate) const BLOB_CACHE_CONTROL: &str = "max-age=31536000";
/// The folder of a tag folder whose links name the digests (`namespace::digests`).
pub(crate) const DIGEST_FOLDER: &str = crate::namespace::digests::FOLDER;
/// The marker of a manifest served whatever the client accepts (`namespace::digests`).
pub(crate) const ANY_ACCEPT: &str = crate::namespace::digests::ANY_ACCEPT;
/// The root folder of the catalog's pages (`namespace::catalog`).
pub(crate) const CATALOG_FOLDER: &str = crate::namespace::catalog::FOLDER;
/// The body Go's router sends with a 405 (`http.Error`, without its newline).
pub(crate) const METHOD_NOT_ALLOWED: &str = "Method Not Allowed";
/// The registry's router's answer to a path it does not route (with its newline).
pub(crate) const NOT_ROUTED: &str = "404 page not found";
