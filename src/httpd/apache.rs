//! The Apache 2.4 configuration: mod_rewrite rules generated from the same table.

use super::options::HttpdOptions;
use super::table::*;
use super::*;
use crate::error::Result;
use crate::manifest::ManifestKind;

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
         \x20       # The only links are a tag's digest links (to a file beside them).\n\
         \x20       Options FollowSymLinks\n\
         \x20       AllowOverride None\n\
         \x20   </Directory>\n\
         \x20   # Validators are the registry's (digests), never file times: the rules below\n\
         \x20   # answer If-None-Match as registry 2.8.2 does, Apache itself sees none.\n\
         \x20   RequestHeader unset If-Modified-Since\n\
         \x20   RequestHeader unset If-None-Match\n\
         \x20   RequestHeader set If-None-Match * env=RFS_304\n\
         \x20   Header unset Etag\n\
         \x20   Header always set {API_VERSION_HEADER} \"{API_VERSION}\"\n\
         \x20   Header set Vary Accept env=RFS_KIND\n\
         \x20   # By digest (manifests and blobs, also on a blob's 304): the URL's digest.\n\
         \x20   Header always set Docker-Content-Digest \"%{{RFS_DIGEST}}e\" env=RFS_DIGEST\n\
         \x20   Header always set Etag \"\\\"%{{RFS_DIGEST}}e\\\"\" env=RFS_DIGEST\n\
         \x20   # By tag: the digest the link of the tag's digest folder names.\n\
         \x20   Header always set Docker-Content-Digest \"expr=%{{file:%{{env:RFS_LINK}}}}\" env=RFS_LINK\n\
         \x20   Header always set Etag \"expr=\\\"%{{file:%{{env:RFS_LINK}}}}\\\"\" env=RFS_LINK\n\
         \x20   Header always set Cache-Control \"{BLOB_CACHE_CONTROL}\" env=RFS_BLOB\n\
         \x20   Header always set Link \"expr=%{{file:%{{env:RFS_CATALOG_NEXT}}}}\" env=RFS_CATALOG_NEXT\n\
         \x20   Header always set Content-Range \"expr=bytes */%{{filesize:%{{REQUEST_FILENAME}}}}\" \"expr=%{{REQUEST_STATUS}} == 416\"\n\
         \x20   # What the registry's router answers for anything it does not route.\n\
         \x20   ErrorDocument 404 \"{NOT_ROUTED}\\n\"\n\
         \x20   Header always set Content-Type \"text/plain; charset=utf-8\" \"expr=%{{REQUEST_STATUS}} == 404\"\n\
         \x20   ErrorDocument 200 \"{{}}\"\n\
         \x20   Header always set Content-Type \"{JSON_UTF8}\" \"expr=%{{REQUEST_URI}} == '/v2/'\"\n\
         \x20   # (No Content-Length here: Apache counts an ErrorDocument's body for a GET and\n\
         \x20   # sends none for a HEAD; one set here for a HEAD keeps Apache's own `0`, which\n\
         \x20   # it otherwise drops, as a second one. docs/httpd.md)\n\
         \n\
         \x20   RewriteEngine On\n\
         \x20   RewriteRule ^ - [E=no-gzip:1,E=no-brotli:1]\n\
         \x20   RewriteCond %{{REQUEST_METHOD}} !^(GET|HEAD)$\n\
         \x20   RewriteRule ^ {unsupported}\n\
         \x20   RewriteRule ^/v2/$ - [R=200,L]\n\
         \n\
         \x20   # Manifests. Apache joins repeated Accept lines with \", \", so every line counts.\n",
        listen = opts.listen,
        unsupported = error_rule(ErrorKind::Unsupported, "", ""),
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
    s.push_str(&not_modified_rules(&root_slash));
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
        if r.any_accept {
            s.push_str(&format!(
                "    RewriteCond %{{ENV:RFS_DIR}}/{DIGEST_FOLDER}/{ANY_ACCEPT} -f\n"
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
                let digest = match r.reference {
                    RefType::Digest => ",E=RFS_DIGEST:$2".to_string(),
                    RefType::Tag => format!(
                        ",E=RFS_LINK:{root_slash}$1/manifests/$2/{DIGEST_FOLDER}/{}",
                        kind.file_name()
                    ),
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
                    "    RewriteRule {pattern} {}\n",
                    error_rule(e, "$1", "$2")
                ));
            }
        }
    }
    s.push_str(&format!(
        "\n\
         {catalog}\
         \x20   # Blobs (Range requests: Apache's file handler) and tag lists.\n\
         \x20   RewriteCond {root_slash}$1/blobs/$2 -f\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/blobs/({DIGEST_RE})$\" {root_slash}$1/blobs/$2 \"[L,T={BLOB_TYPE},E=RFS_DIGEST:$2,E=RFS_BLOB:1]\"\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/blobs/({DIGEST_RE})$\" {blob_unknown}\n\
         \x20   RewriteCond {root_slash}$1/tags/list -f\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/tags/list$\" {root_slash}$1/tags/list \"[L,T={JSON_UTF8}]\"\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/tags/list$\" {name_unknown}\n\
         \x20   RewriteRule ^/_rfs/ - [R=404,L]\n\
         \x20   RewriteRule ^ - [R=404,L]\n\
         \n\
         \x20   # The registry's error answers (JSON, application/json; charset=utf-8).\n\
         \x20   <Location /_rfs/error/>\n\
         \x20       Require all granted\n\
         \x20       Options FollowSymLinks\n\
         \x20       RewriteEngine On\n\
         \x20       Header always set Content-Type \"{JSON_UTF8}\"\n\
         \x20   </Location>\n",
        blob_unknown = error_rule(ErrorKind::BlobUnknown, "$1", "$2"),
        catalog = apache_catalog(&root_slash),
        name_unknown = error_rule(ErrorKind::NameUnknown, "$1", ""),
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
    s.push_str(&format!(
        "    <Location /_rfs/catalog-invalid>\n\
         \x20       Require all granted\n\
         \x20       Options FollowSymLinks\n\
         \x20       RewriteEngine On\n\
         \x20       RewriteRule ^ - [R=400]\n\
         \x20       Header always set Content-Type \"{JSON_UTF8}\"\n\
         \x20       ErrorDocument 400 \"%{{file:%{{reqenv:RFS_CATALOG}}}}\"\n\
         \x20   </Location>\n\
         \x20   <Location /_rfs/get-only>\n\
         \x20       Require all granted\n\
         \x20       Options FollowSymLinks\n\
         \x20       RewriteEngine On\n\
         \x20       RewriteRule ^ - [R=405]\n\
         \x20       ErrorDocument 405 \"{METHOD_NOT_ALLOWED}\\n\"\n\
         \x20       Header always set Allow GET\n\
         \x20       Header always set X-Content-Type-Options nosniff\n\
         \x20       Header always set Content-Type \"text/plain; charset=utf-8\"\n\
         \x20   </Location>\n"
    ));
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

/// The rewrite to the internal location answering `e`, with the request's repository
/// and reference for its body (`$1`, `$2`, or "").
fn error_rule(e: ErrorKind, repo: &str, reference: &str) -> String {
    format!(
        "/_rfs/error/{slug} [PT,E=RFS_REPO:{repo},E=RFS_REF:{reference}]",
        slug = e.slug()
    )
}

/// `If-None-Match` as registry 2.8.2 answers it, before a file is picked: for a tag,
/// the revision its link names (read from the tag's digest folder), for a digest the
/// digest itself, equal to the header bare or quoted; for a stored blob, Go's
/// `ServeContent` list matching (quoted digest or `*`, `W/` allowed, stopping at the
/// first malformed entry). Apache joins repeated header lines with ", ".
fn not_modified_rules(root_slash: &str) -> String {
    // mod_rewrite's arguments have no escapes: a pattern with `"` is in single quotes.
    // [NV]: reading If-None-Match must not add it to Vary.
    let revision = format!("file(%{{env:RFS_DIR}} . \"/{DIGEST_FOLDER}/revision\")");
    let mut s = format!(
        "    # 304s where registry 2.8.2 answers them (before Accept is looked at): the\n\
         \x20   # request goes to an existing file with `If-None-Match: *` (RFS_304), which\n\
         \x20   # Apache answers with a 304.\n\
         \x20   RewriteCond %{{HTTP:If-None-Match}} . [NV]\n\
         \x20   RewriteCond %{{ENV:RFS_DIR}}/{DIGEST_FOLDER}/revision -f\n\
         \x20   RewriteCond expr '%{{HTTP:If-None-Match}} == {revision} || %{{HTTP:If-None-Match}} == \"\\\"\" . {revision} . \"\\\"\"' [NV]\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/manifests/({TAG_RE})$\" {root_slash}$1/manifests/$2/{DIGEST_FOLDER}/revision [L,E=RFS_304:1]\n"
    );
    // By digest: the stored file (the registry answers 304 for a digest it does not
    // hold too; the servers need a file to answer from).
    for kind in ManifestKind::ALL {
        s.push_str(&format!(
            "    RewriteCond \"$2|%{{HTTP:If-None-Match}}\" '^(sha256:[0-9a-f]{{64}}|sha384:[0-9a-f]{{96}}|sha512:[0-9a-f]{{128}})\\|(?:\\1|\"\\1\")$' [NV]\n\
             \x20   RewriteCond %{{ENV:RFS_DIR}}/{file} -f\n\
             \x20   RewriteRule \"^/v2/({NAME_RE})/manifests/({DIGEST_RE})$\" {root_slash}$1/manifests/$2/{file} [L,E=RFS_304:1]\n",
            file = kind.file_name()
        ));
    }
    s.push_str(&format!(
        "    RewriteCond \"$2|%{{HTTP:If-None-Match}}\" '^(sha256:[0-9a-f]{{64}})\\|(?:[ \\t\\r\\n,]|(?:W/)?\"[\\x21\\x23-\\x7e\\x80-\\xff]*\")*?(?:\\*|(?:W/)?\"\\1\")' [NV]\n\
         \x20   RewriteCond {root_slash}$1/blobs/$2 -f\n\
         \x20   RewriteRule \"^/v2/({NAME_RE})/blobs/({DIGEST_RE})$\" {root_slash}$1/blobs/$2 [L,E=RFS_304:1,E=RFS_DIGEST:$2,E=RFS_BLOB:1]\n"
    ));
    s
}

/// `/v2/_catalog` from the mount's `_catalog` files (`namespace::catalog`): the page,
/// the `Link` header from `next.<query>`, the 400 from `invalid.<query>`. Apache cannot
/// read a link's target name, so it tests the files named after the raw query.
fn apache_catalog(root_slash: &str) -> String {
    let file = |kind: &str| format!("{root_slash}{CATALOG_FOLDER}/{kind}.%{{QUERY_STRING}}");
    format!(
        "    # The registry routes tags/list and _catalog for GET only.\n\
         \x20   RewriteCond %{{REQUEST_METHOD}} =HEAD\n\
         \x20   RewriteRule \"^/v2/(?:_catalog|{NAME_RE}/tags/list)$\" /_rfs/get-only [PT]\n\
         \x20   RewriteCond {invalid} -f\n\
         \x20   RewriteRule ^/v2/_catalog$ /_rfs/catalog-invalid [PT,E=RFS_CATALOG:{invalid}]\n\
         \x20   RewriteCond {next} -f\n\
         \x20   RewriteRule ^/v2/_catalog$ - [E=RFS_CATALOG_NEXT:{next}]\n\
         \x20   RewriteCond {page} -f\n\
         \x20   RewriteRule ^/v2/_catalog$ {page} \"[L,T={JSON_UTF8}]\"\n",
        invalid = file("invalid"),
        next = file("next"),
        page = file("page"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpd::options::test_options as opts;

    #[test]
    fn apache_config_has_every_part() {
        let c = apache(&opts(false, None)).unwrap();
        assert!(c.starts_with("# registryfs"));
        assert!(c.contains("<VirtualHost 127.0.0.1:5000>"));
        assert!(c.contains("MimeMagicFile /dev/null"));
        assert!(c.contains(
            "RewriteRule \"^/v2/([a-zA-Z0-9][a-zA-Z0-9._-]*(?:/[a-zA-Z0-9][a-zA-Z0-9._-]*)*)/manifests/([a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})$\" /mnt/registry/$1/manifests/$2/schema1 \"[L,T=application/vnd.docker.distribution.manifest.v1+prettyjws,E=RFS_KIND:schema1,E=RFS_LINK:/mnt/registry/$1/manifests/$2/digest/schema1]\""
        ));
        // Digest headers by tag, from the link; 304s through `If-None-Match: *`.
        assert!(c.contains(
            "Header always set Docker-Content-Digest \"expr=%{file:%{env:RFS_LINK}}\" env=RFS_LINK"
        ));
        assert!(c.contains("RequestHeader set If-None-Match * env=RFS_304"));
        assert!(c.contains("/mnt/registry/$1/manifests/$2/digest/revision [L,E=RFS_304:1]"));
        // One Content-Length: Apache's own.
        assert!(!c.contains("Header always set Content-Length"));
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
}
