//! Repository-name and tag grammar of distribution's `reference` package (2.8.2).
//!
//! Only names and tags that the registry itself would route are exposed, so a store
//! directory such as `..`, `_uploads` or `Foo` never becomes a path in the namespace.

/// Longest repository name the registry accepts (`NameTotalLengthMax`).
pub const NAME_MAX_LEN: usize = 255;

/// `parent/name`, names joined as repository names and namespace paths are ("" is the
/// top).
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`: one path component of a repository name.
pub fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// The optional first component of a name: a domain with an optional port.
fn is_domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// Whether `name` is a repository name the 2.8.2 registry routes and accepts.
pub fn is_repository_name(name: &str) -> bool {
    if name.is_empty() || name.len() > NAME_MAX_LEN {
        return false;
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().all(|p| is_path_component(p)) {
        return true;
    }
    parts.len() >= 2 && is_domain(parts[0]) && parts[1..].iter().all(|p| is_path_component(p))
}

/// `[\w][\w.-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_paths() {
        assert_eq!(child_path("", "demo"), "demo");
        assert_eq!(child_path("demo", "hello"), "demo/hello");
    }

    #[test]
    fn path_components() {
        for ok in [
            "a", "library", "a.b", "a_b", "a__b", "a---b", "a-b.c_d", "0x",
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "_a", "a_", "a___b", "a..b", "a._b", "a-_b", "-a", "a-", "..",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn repository_names() {
        for ok in [
            "library/test",
            "a/b/c",
            "Library/test",
            "localhost:5000/x",
            "my-reg.io/a/b",
        ] {
            assert!(is_repository_name(ok), "{ok}");
        }
        let long = format!("a/{}", "b".repeat(254));
        for bad in ["Foo", "a//b", "/a", "a/", "a/B", "../x", long.as_str(), ""] {
            assert!(!is_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(is_tag("latest"));
        assert!(is_tag("_x.Y-1"));
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(".x"));
        assert!(!is_tag("-x"));
        assert!(!is_tag("a:b"));
        assert!(!is_tag(""));
    }
}
