//! The Apache 2.4 configuration: mod_rewrite rules generated from the same table.

use super::options::HttpdOptions;
use super::table::*;
use super::*;
use crate::error::Result;

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
    use crate::httpd::options::test_options as opts;

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
}
