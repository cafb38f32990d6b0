//! `GET /v2/_catalog?n=&last=` as registry 2.8.2 answers it, as files a web server can
//! serve: it looks up the request's raw query string and gets a link whose target
//! names the answer.
//!
//! ```text
//! _catalog/page.<raw query>   -> more.last=<last>&n=<n>   a page with more after it
//!                             -> end.<escaped last>        the last page
//!                             -> none                      n=0
//!                             -> invalid-n.<n>             n over 1000: 400
//! _catalog/next.<raw query>   file: the Link header value, when there are more
//! _catalog/invalid.<raw query> file: the 400 body, when n is over 1000
//! ```
//!
//! The targets are files holding the body (for `invalid-n`, the error body). A `more`
//! name after its `more.` is exactly the query of the registry's `Link` header (the n
//! repositories ending at `last` are the page), so nginx builds the header from the
//! link's real path and Apache reads `next.<query>` (and `invalid.<query>`: it cannot
//! read a link's target name). `_catalog` is at the root, where no
//! repository can be: name components start with a letter or digit. Found by lookup
//! only (the root does not list it).
//!
//! The registry's rules: the query is Go's `url.ParseQuery` (first value of each key);
//! `n` is `strconv.Atoi`, with 100 when absent, malformed or negative, and over 1000 a
//! 400 `PAGINATION_NUMBER_INVALID`; repositories (folders holding `_manifests`, as its
//! walk finds them) are ordered with `/` below every other character and listed after
//! `last`; `Link: </v2/_catalog?last=<last>&n=<n>>; rel="next"` when more remain.

use super::{Content, Namespace, TimedNode};
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::SystemTime;

/// The time of what the query alone decides: it never changes.
const FIXED_MTIME: SystemTime = SystemTime::UNIX_EPOCH;

pub const FOLDER: &str = "_catalog";
const DEFAULT_ENTRIES: u64 = 100;
const MAX_ENTRIES: u64 = 1000;

/// A node of `_catalog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogNode {
    Folder,
    /// `page.<raw query>`: the link to the answer.
    Page(String),
    /// `next.<raw query>`: the `Link` header value.
    Next(String),
    /// `invalid.<raw query>`: the error body when `n` is over the maximum.
    Invalid(String),
    /// `more.<link query>`.
    More(String),
    /// `end.<escaped last>`.
    End(String),
    None,
    InvalidN(String),
}

impl CatalogNode {
    /// `rest` is what follows `_catalog`.
    pub fn parse(rest: &[&str]) -> Option<CatalogNode> {
        let name = match rest {
            [] => return Some(CatalogNode::Folder),
            [name] => *name,
            _ => return None,
        };
        if name == "none" {
            return Some(CatalogNode::None);
        }
        let (kind, arg) = name.split_once('.')?;
        let arg = arg.to_string();
        Some(match kind {
            "page" => CatalogNode::Page(arg),
            "next" => CatalogNode::Next(arg),
            "invalid" => CatalogNode::Invalid(arg),
            "more" => CatalogNode::More(arg),
            "end" => CatalogNode::End(arg),
            "invalid-n" => CatalogNode::InvalidN(arg),
            _ => return None,
        })
    }

    pub fn is_dir(&self) -> bool {
        *self == CatalogNode::Folder
    }
}

/// What a query asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Page { n: u64, last: String },
    InvalidN(i64),
}

fn request(raw_query: &str) -> Request {
    let (n, last) = (query_get(raw_query, "n"), query_get(raw_query, "last"));
    let n = match n.as_deref().map(go_atoi) {
        Some(Some(n)) if n > MAX_ENTRIES as i64 => return Request::InvalidN(n),
        Some(Some(n)) if n >= 0 => n as u64,
        _ => DEFAULT_ENTRIES,
    };
    Request::Page {
        n,
        last: last.unwrap_or_default(),
    }
}

/// The first value of `key` in a query, as Go's `url.ParseQuery` + `Values.Get`
/// (pairs with `;` or a bad escape are skipped).
fn query_get(raw: &str, key: &str) -> Option<String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(k)?, query_unescape(v)?))
        })
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte. Bytes that are not UTF-8
/// become U+FFFD here; they cannot match a repository name either way.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

/// Go's `strconv.Atoi` on 64-bit: optional sign, decimal digits, no overflow.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The registry's order: `/` below every other character.
fn order_key(name: &str) -> Vec<u8> {
    name.bytes()
        .map(|c| if c == b'/' { 0 } else { c })
        .collect()
}

fn body(repos: &[String]) -> Arc<[u8]> {
    let mut out = b"{\"repositories\":[".to_vec();
    for (i, r) in repos.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::gojson::write_string(&mut out, r.as_bytes());
    }
    out.extend_from_slice(b"]}\n");
    out.into()
}

/// registry 2.8.2's answer to an `n` over the maximum (400).
fn invalid_n_body(n: i64) -> Arc<[u8]> {
    format!(
        "{{\"errors\":[{{\"code\":\"PAGINATION_NUMBER_INVALID\",\"message\":\"invalid number of results requested\",\"detail\":{{\"n\":{n}}}}}]}}\n"
    )
    .into_bytes()
    .into()
}

fn link_query(last: &str, n: u64) -> String {
    format!("last={}&n={n}", query_escape(last))
}

impl Namespace {
    /// Every repository, in the registry's catalog order, and the time of that listing.
    fn catalog_repositories(&self) -> Result<(Vec<String>, SystemTime)> {
        let (mut all, newest) = self.repositories_with_time()?;
        all.sort_by_key(|a| order_key(a));
        Ok((all, newest))
    }

    /// The repositories after `last` in `all`, at most `n`, and whether more follow.
    fn catalog_page(all: Vec<String>, n: u64, last: &str) -> (Vec<String>, bool) {
        let after: Vec<String> = all
            .into_iter()
            .filter(|r| order_key(r) > order_key(last))
            .collect();
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let more = after.len() > n;
        (after.into_iter().take(n).collect(), more)
    }

    /// Times: what lists repositories has the time of that listing (it grows when a
    /// repository is added or removed); answers made from the query alone never change.
    pub(super) fn catalog_lookup(&self, node: &CatalogNode, path: &str) -> Result<TimedNode> {
        let not_found = || Error::NotFound(path.to_string());
        let fixed = |bytes: Arc<[u8]>| Ok(TimedNode::file(Content::Bytes(bytes), FIXED_MTIME));
        match node {
            CatalogNode::Folder => Ok(TimedNode::dir(FIXED_MTIME)),
            CatalogNode::Page(raw) => {
                let (target, mtime) = match request(raw) {
                    Request::InvalidN(n) => (format!("invalid-n.{n}"), FIXED_MTIME),
                    Request::Page { n: 0, .. } => ("none".to_string(), FIXED_MTIME),
                    Request::Page { n, last } => {
                        let (all, mtime) = self.catalog_repositories()?;
                        let target = match Self::catalog_page(all, n, &last) {
                            (page, true) => format!(
                                "more.{}",
                                link_query(page.last().map_or("", String::as_str), n)
                            ),
                            (_, false) => format!("end.{}", query_escape(&last)),
                        };
                        (target, mtime)
                    }
                };
                Ok(TimedNode::link(target.into(), mtime))
            }
            CatalogNode::Next(raw) => match request(raw) {
                Request::Page { n, last } if n > 0 => {
                    let (all, mtime) = self.catalog_repositories()?;
                    match Self::catalog_page(all, n, &last) {
                        (page, true) => {
                            let last = page.last().map_or("", String::as_str);
                            let value =
                                format!("</v2/_catalog?{}>; rel=\"next\"", link_query(last, n));
                            Ok(TimedNode::file(
                                Content::Bytes(value.into_bytes().into()),
                                mtime,
                            ))
                        }
                        (_, false) => Err(not_found()),
                    }
                }
                _ => Err(not_found()),
            },
            CatalogNode::More(query) => {
                // Only the names `page` links to: `last=<escaped>&n=<1..=1000>`.
                let (Some(last), Some(n)) = (query_get(query, "last"), query_get(query, "n"))
                else {
                    return Err(not_found());
                };
                let n = go_atoi(&n)
                    .filter(|n| (1..=MAX_ENTRIES as i64).contains(n))
                    .ok_or_else(not_found)? as u64;
                if *query != link_query(&last, n) {
                    return Err(not_found());
                }
                let (all, mtime) = self.catalog_repositories()?;
                let Some(end) = all.iter().position(|r| *r == last) else {
                    return Err(not_found());
                };
                if end + 1 == all.len() {
                    return Err(not_found());
                }
                let start = (end + 1).saturating_sub(n as usize);
                Ok(TimedNode::file(
                    Content::Bytes(body(&all[start..=end])),
                    mtime,
                ))
            }
            CatalogNode::End(escaped) => {
                let last = query_unescape(escaped).ok_or_else(not_found)?;
                if *escaped != query_escape(&last) {
                    return Err(not_found());
                }
                let (all, mtime) = self.catalog_repositories()?;
                let (page, _) = Self::catalog_page(all, u64::MAX, &last);
                Ok(TimedNode::file(Content::Bytes(body(&page)), mtime))
            }
            CatalogNode::None => fixed(body(&[])),
            CatalogNode::InvalidN(n) => {
                let value = n
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v > MAX_ENTRIES as i64 && v.to_string() == *n)
                    .ok_or_else(not_found)?;
                fixed(invalid_n_body(value))
            }
            CatalogNode::Invalid(raw) => match request(raw) {
                Request::InvalidN(n) => fixed(invalid_n_body(n)),
                Request::Page { .. } => Err(not_found()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_go_s() {
        assert_eq!(
            request(""),
            Request::Page {
                n: 100,
                last: String::new()
            }
        );
        assert_eq!(
            request("n=2&last=a%2Fb"),
            Request::Page {
                n: 2,
                last: "a/b".into()
            }
        );
        assert_eq!(
            request("n=%2B05&n=7&last=x+y"),
            Request::Page {
                n: 5,
                last: "x y".into()
            }
        );
        for bad in [
            "n=-1",
            "n=x",
            "n=",
            "n=99999999999999999999",
            "n;=5",
            "n=5;",
        ] {
            assert_eq!(
                request(bad),
                Request::Page {
                    n: 100,
                    last: String::new()
                },
                "{bad}"
            );
        }
        assert_eq!(request("n=1001"), Request::InvalidN(1001));
        assert_eq!(request("n=%zz&n=1000"), request("n=1000"));
    }

    #[test]
    fn order_puts_slash_first() {
        let mut names = vec!["a-b", "a/b", "a", "a.b"];
        names.sort_by_key(|a| order_key(a));
        assert_eq!(names, ["a", "a/b", "a-b", "a.b"]);
    }

    #[test]
    fn escapes_are_go_s() {
        assert_eq!(query_escape("a/b c~_.-"), "a%2Fb+c~_.-");
        assert_eq!(query_unescape("a%2fb+c").as_deref(), Some("a/b c"));
        assert_eq!(query_unescape("%4"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(CatalogNode::parse(&[]), Some(CatalogNode::Folder));
        assert_eq!(
            CatalogNode::parse(&["page."]),
            Some(CatalogNode::Page(String::new()))
        );
        assert_eq!(
            CatalogNode::parse(&["more.last=a&n=1"]),
            Some(CatalogNode::More("last=a&n=1".into()))
        );
        assert_eq!(CatalogNode::parse(&["other.x"]), None);
        assert_eq!(CatalogNode::parse(&["page.x", "y"]), None);
    }
}
