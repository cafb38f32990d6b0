//! The nginx configuration (and the njs module for nginx < 1.23).

use super::options::HttpdOptions;
use super::table::*;
use super::*;
use crate::error::Result;
use crate::manifest::ManifestKind;

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
    p.push(if r.any_accept { 'A' } else { '.' });
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
    any_accept: bool,
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
    k.push(if any_accept { 'A' } else { '-' });
    k.push(if folder { 'D' } else { '-' });
    k
}

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
         # T|D (tag or digest) : accepted L I O 2 : files present L I O 2 1, A = served to any\n\
         # Accept (an index stored without mediaType), D = folder exists.\n\
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
    out.push_str(NOT_MODIFIED_MAPS);
    out.push_str(REALPATH_ONCE_MAPS);
    out.push_str(&format!(
        "map \"$request_method $uri\" $rfs_get_only {{\n\
         \x20   default \"\";\n\
         \x20   \"~^HEAD /v2/(?:_catalog|{NAME_RE}/tags/list)$\" 1;\n\
         }}\n"
    ));
    out
}

/// registry 2.8.2's 400 for an `n` over 1000 (`{n}`: the number), as an nginx string.
const PAGINATION_INVALID_BODY: &str = "{\"errors\":[{\"code\":\"PAGINATION_NUMBER_INVALID\",\"message\":\"invalid number of results requested\",\"detail\":{\"n\":{n}}}]}\\n";

/// `/v2/_catalog`: the mount's `_catalog/page.<query>` links to the answer
/// (`namespace::catalog`); its real path gives the `Link` header or the 400. A query
/// that cannot be a file name (a literal `/`, over 250 bytes) gets the router's 404.
fn nginx_catalog(opts: &HttpdOptions) -> String {
    let api = nginx_api_header();
    let page = opts.under_root(&format!("{CATALOG_FOLDER}/page.$args"));
    format!(
        "    location = /v2/_catalog {{\n\
         \x20       default_type \"\";\n\
         \x20       root {page};\n\
         \x20       set $rfs_real \"\";\n\
         \x20       set $rfs_link_header \"\";\n\
         \x20       if (-e {page}) {{ set $rfs_real $rfs_real_page; }}\n\
         \x20       if ($rfs_real ~ \"/{CATALOG_FOLDER}/invalid-n\\.([0-9]+)$\") {{\n\
         \x20           set $rfs_ref $1;\n\
         \x20           rewrite ^ /_rfs/catalog-invalid last;\n\
         \x20       }}\n\
         \x20       if ($rfs_real ~ \"/{CATALOG_FOLDER}/more\\.([^/]+)$\") {{\n\
         \x20           set $rfs_link_header \"</v2/_catalog?$1>; rel=\\\"next\\\"\";\n\
         \x20       }}\n\
         \x20       if ($rfs_real ~ \"/{CATALOG_FOLDER}/([^/]+)$\") {{\n\
         \x20           set $rfs_file /{CATALOG_FOLDER}/$1;\n\
         \x20           rewrite ^ /_rfs/catalog last;\n\
         \x20       }}\n\
         \x20       rewrite ^ /_rfs/unroutable last;\n\
         \x20   }}\n\n\
         \x20   location = /_rfs/catalog {{\n\
         \x20       internal;\n\
         \x20       default_type \"{JSON_UTF8}\";\n\
         \x20       {api}\n\
         \x20       add_header Link $rfs_link_header;\n\
         \x20       try_files $rfs_file /_rfs/unroutable;\n\
         \x20   }}\n\n\
         \x20   location = /_rfs/catalog-invalid {{\n\
         \x20       internal;\n\
         \x20       default_type \"{JSON_UTF8}\";\n\
         \x20       {api}\n\
         \x20       return 400 '{invalid}';\n\
         \x20   }}\n\n\
         \x20   location = /_rfs/get-only {{\n\
         \x20       internal;\n\
         \x20       default_type \"text/plain; charset=utf-8\";\n\
         \x20       {api}\n\
         \x20       add_header Allow GET always;\n\
         \x20       add_header X-Content-Type-Options nosniff always;\n\
         \x20       return 405 '{METHOD_NOT_ALLOWED}\\n';\n\
         \x20   }}\n\n",
        invalid = PAGINATION_INVALID_BODY.replace("{n}", "$rfs_ref"),
    )
}

/// One variable per place a link is resolved, each worth one `realpath(3)`.
/// `set $x $realpath_root` would resolve the path twice (nginx computes a `set` value's
/// length, then its bytes, and `$realpath_root` is not cached), and realpath costs a
/// `readlink` per path component: on the mount, 20 of them per request by tag, the
/// worker's main cost in kernel time. A `map` is computed once per request.
const REALPATH_ONCE_MAPS: &str =
    "\n# $realpath_root resolved once per use (`set $x $realpath_root` resolves it twice).\n\
map $realpath_root $rfs_real_pick { \"~^(.*)$\" $1; }\n\
map $realpath_root $rfs_real_page { \"~^(.*)$\" $1; }\n";

/// `If-None-Match` as registry 2.8.2 reads it. Manifests: the revision (a tag's link,
/// or the digest in the URL, whether or not it is stored) equals a header line, bare or
/// in quotes; for a tag, the digest the line names is looked up as the tag's
/// `digest/revision=<digest>`, which exists while that is its revision (one cached
/// `stat`, where resolving the `revision` link costs a readlink per path component).
/// Blobs (Go's `ServeContent`): a stored blob whose quoted digest, or `*`,
/// is in the list, `W/` allowed, scanning stopping at the first malformed entry. nginx
/// reads the first `If-None-Match` line (Go's ServeContent too; the manifest handler
/// reads every line).
const NOT_MODIFIED_MAPS: &str = "\n# 304s where registry 2.8.2 answers them.\n\
map $http_if_none_match $rfs_inm_revision {\n\
\x20   default -;\n\
\x20   \"~^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$\" $1;\n\
\x20   \"~^\\\"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})\\\"$\" $1;\n\
}\n\
map \"$rfs_revision|$http_if_none_match\" $rfs_not_modified {\n\
\x20   default \"\";\n\
\x20   \"~^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})\\|(?:\\1|\\\"\\1\\\")$\" 1;\n\
}\n\
map \"$rfs_blob|$rfs_ref|$http_if_none_match\" $rfs_blob_not_modified {\n\
\x20   default \"\";\n\
\x20   \"~^1\\|(sha256:[0-9a-f]{64})\\|(?:[ \\t\\r\\n,]|(?:W/)?\\\"[\\x21\\x23-\\x7e\\x80-\\xff]*\\\")*?(?:\\*|(?:W/)?\\\"\\1\\\")\" 1;\n\
}\n";

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
         \x20   # The registry routes tags/list and _catalog for GET only.\n\
         \x20   if ($rfs_get_only) {{\n\
         \x20       rewrite ^ /_rfs/get-only last;\n\
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
        let digests = match reftype {
            RefType::Tag => format!(
                "        # 304: the tag's digest folder has `revision=<digest>` while that is\n\
                 \x20       # its revision (`-`: no digest in If-None-Match, no such name).\n\
                 \x20       if (-e $rfs_dir/{folder}/revision=$rfs_inm_revision) {{ return 304; }}\n\
                 \x20       # The picked file's digest, from its link in the tag's digest folder\n\
                 \x20       # (`root` is only used for $realpath_root, which $rfs_real_pick reads).\n\
                 \x20       root $rfs_link;\n\
                 \x20       set $rfs_link $rfs_dir/{folder}/-;\n\
                 \x20       if ($rfs_pick ~ \"^m/(.+)$\") {{ set $rfs_link $rfs_dir/{folder}/$1; }}\n\
                 \x20       set $rfs_real \"\";\n\
                 \x20       if (-e $rfs_link) {{ set $rfs_real $rfs_real_pick; }}\n\
                 \x20       # Stored bytes are served from their digest folder, so the body is\n\
                 \x20       # always the one the header names (a converted schema1 has none).\n\
                 \x20       if ($rfs_real ~ \"/(?:schema2|list|oci|oci-index)@(sha256:[0-9a-f]{{64}})$\") {{\n\
                 \x20           set $rfs_file /$rfs_repo/manifests/$1;\n\
                 \x20       }}\n\
                 \x20       if ($rfs_real ~ \"@(sha256:[0-9a-f]{{64}})$\") {{\n\
                 \x20           set $rfs_digest $1;\n\
                 \x20           set $rfs_etag \"\\\"$1\\\"\";\n\
                 \x20       }}\n",
                folder = DIGEST_FOLDER
            ),
            RefType::Digest => "        set $rfs_revision $rfs_ref;\n\
                 \x20       if ($rfs_not_modified) { return 304; }\n\
                 \x20       set $rfs_digest $rfs_ref;\n\
                 \x20       set $rfs_etag \"\\\"$rfs_ref\\\"\";\n"
                .to_string(),
        };
        s.push_str(&format!(
            "    location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/manifests/(?<rfs_ref>{re})$\" {{\n\
             \x20       # (A 304 has no Content-Type.)\n\
             \x20       default_type \"\";\n\
             \x20       set $rfs_reftype {letter};\n\
             \x20       set $rfs_digest \"\";\n\
             \x20       set $rfs_etag \"\";\n\
             \x20       set $rfs_file /$rfs_repo/manifests/$rfs_ref;\n\
             \x20       set $rfs_dir {root_slash}$rfs_repo/manifests/$rfs_ref;\n\
             \x20       set $rfs_l -;\n\
             \x20       set $rfs_i -;\n\
             \x20       set $rfs_o -;\n\
             \x20       set $rfs_2 -;\n\
             \x20       set $rfs_1 -;\n\
             \x20       set $rfs_a -;\n\
             \x20       set $rfs_d -;\n\
             \x20       if (-f $rfs_dir/list) {{ set $rfs_l L; }}\n\
             \x20       if (-f $rfs_dir/oci-index) {{ set $rfs_i I; }}\n\
             \x20       if (-f $rfs_dir/oci) {{ set $rfs_o O; }}\n\
             \x20       if (-f $rfs_dir/schema2) {{ set $rfs_2 2; }}\n\
             \x20       if (-f $rfs_dir/schema1) {{ set $rfs_1 1; }}\n\
             \x20       # The marker is looked up only next to an index (`-`: no such name).\n\
             \x20       set $rfs_any -;\n\
             \x20       if ($rfs_i = I) {{ set $rfs_any {ANY_ACCEPT}; }}\n\
             \x20       if (-f $rfs_dir/{DIGEST_FOLDER}/$rfs_any) {{ set $rfs_a A; }}\n\
             \x20       if (-d $rfs_dir) {{ set $rfs_d D; }}\n\
             \x20       set $rfs_have $rfs_l$rfs_i$rfs_o$rfs_2$rfs_1$rfs_a$rfs_d;\n\
             {digests}\
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
             \x20       try_files $rfs_file/{file} /_rfs/error/manifest-unknown;\n\
             \x20   }}\n\n",
            file = kind.file_name(),
            mt = kind.media_type(),
        ));
    }

    // Blobs: 304 as Go's ServeContent answers it (the registry's blob handler), then
    // the file. `if` and `try_files` cannot share a location: the file is served from
    // an internal one.
    let blob_headers = [
        api.clone(),
        "add_header Docker-Content-Digest $rfs_ref;".to_string(),
        "add_header Etag \"\\\"$rfs_ref\\\"\";".to_string(),
        format!("add_header Cache-Control {BLOB_CACHE_CONTROL};"),
        "# Blobs never change under their digest: keep them open longer, and do".to_string(),
        "# not remember a missing one (it may be pushed any moment).".to_string(),
        "open_file_cache max=4096 inactive=60s;".to_string(),
        "open_file_cache_valid 60s;".to_string(),
        "open_file_cache_errors off;".to_string(),
    ]
    .join("\n        ")
        + "\n";
    s.push_str(&format!(
        "    location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/blobs/(?<rfs_ref>{DIGEST_RE})$\" {{\n\
         \x20       default_type \"\";\n\
         \x20       {blob_headers}\
         \x20       set $rfs_blob -;\n\
         \x20       if (-f {root_slash}$rfs_repo/blobs/$rfs_ref) {{ set $rfs_blob 1; }}\n\
         \x20       if ($rfs_blob_not_modified) {{ return 304; }}\n\
         \x20       rewrite ^ /_rfs/blob last;\n\
         \x20   }}\n\n\
         \x20   location = /_rfs/blob {{\n\
         \x20       internal;\n\
         \x20       default_type {BLOB_TYPE};\n\
         \x20       {blob_headers}\
         \x20       try_files /$rfs_repo/blobs/$rfs_ref /_rfs/error/blob-unknown;\n\
         \x20   }}\n\n\
         \x20   location ~ \"^/v2/(?<rfs_repo>{NAME_RE})/tags/list$\" {{\n\
         \x20       default_type \"{JSON_UTF8}\";\n\
         \x20       {api}\n\
         \x20       try_files /$rfs_repo/tags/list /_rfs/error/name-unknown;\n\
         \x20   }}\n\n",
        root_slash = opts.under_root(""),
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

    s.push_str(&nginx_catalog(opts));

    s.push_str(&format!(
        "    # Anything else: what the registry's router answers.\n\
         \x20   location / {{\n\
         \x20       default_type \"text/plain; charset=utf-8\";\n\
         \x20       {api}\n\
         \x20       return 404 '{NOT_ROUTED}\\n';\n\
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpd::options::test_options as opts;
    use Outcome::Error as E;

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
                    for (folder, any) in [(false, false), (true, false), (true, true)] {
                        let key = nginx_key(reference, &accepts, &files, folder, any);
                        let via_map = RULES
                            .iter()
                            .find(|r| matches(&nginx_pattern(r), &key))
                            .map(|r| r.outcome)
                            .unwrap_or(E(ErrorKind::ManifestUnknown));
                        assert_eq!(
                            via_map,
                            pick(reference, &accepts, &files, folder, any),
                            "{key}"
                        );
                    }
                }
            }
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
        // Digests by tag from the links' real paths; 304s from the maps.
        assert!(c.contains("if (-e $rfs_dir/digest/revision=$rfs_inm_revision) { return 304; }"));
        assert!(c.contains("if (-e $rfs_link) { set $rfs_real $rfs_real_pick; }"));
        // Never `set` straight from $realpath_root: that resolves the path twice.
        assert!(!c.contains("set $rfs_real $realpath_root"));
        assert!(c.contains("try_files $rfs_file/schema2 /_rfs/error/manifest-unknown;"));
        assert!(c.contains("map \"$rfs_revision|$http_if_none_match\" $rfs_not_modified {"));
        assert!(c.contains("if ($rfs_blob_not_modified) { return 304; }"));

        let full = nginx(&opts(true, Some("/etc/nginx/registryfs.js"))).unwrap();
        assert!(full.contains("load_module /usr/lib/nginx/modules/ngx_http_js_module.so;"));
        assert!(full.contains("js_import rfs_accept from /etc/nginx/registryfs.js;"));
        assert!(full.contains("map $rfs_accept $rfs_accept_list"));
        assert!(full.contains("events {"));
        assert_eq!(full.matches('{').count(), full.matches('}').count());
    }
}
