//! What `registryfs httpd-config` generates for, checked before any text is written.

use crate::error::{Error, Result};

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
    pub(crate) fn validate(&self) -> Result<()> {
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

    pub(crate) fn root(&self) -> &str {
        let r = self.root.trim_end_matches('/');
        if r.is_empty() {
            "/"
        } else {
            r
        }
    }

    /// The path of a mount file: root + "/" + rest (rest starts without '/').
    pub(crate) fn under_root(&self, rest: &str) -> String {
        let root = self.root();
        if root == "/" {
            format!("/{rest}")
        } else {
            format!("{root}/{rest}")
        }
    }
}

#[cfg(test)]
pub(crate) fn test_options(full: bool, njs: Option<&str>) -> HttpdOptions {
    HttpdOptions {
        root: "/mnt/registry".into(),
        listen: "127.0.0.1:5000".into(),
        full,
        njs: njs.map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpd::{apache, nginx};

    fn opts(full: bool, njs: Option<&str>) -> HttpdOptions {
        test_options(full, njs)
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
