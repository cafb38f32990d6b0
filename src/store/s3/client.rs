//! The one place where the asynchronous S3 client meets the synchronous [`Store`] trait:
//! the client owns a small tokio runtime and every call blocks on it. Callers (FUSE
//! worker threads, the CLI) are never runtime threads themselves.
//!
//! Listings go through `PaginatedListStore`, which keeps the server's key order:
//! `ObjectStore::list_with_delimiter` collects prefixes into a sorted set, and sorting
//! `year-0000` before `year-0000-offset` loses S3's order (`year-0000-offset/` first,
//! since `-` sorts before `/`) that registry 2.8.2 answers tags/list in.
//!
//! [`Store`]: crate::store::Store

use super::config::{Location, Settings};
use crate::error::{Error, Result};
use crate::metrics::{S3Request, METRICS};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as KeyPath;
use object_store::{
    Certificate, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Retries of a request that failed quickly (connection refused, 5xx, 429): a few,
/// with object_store's backoff (100 ms, doubling, jittered), all begun within half the
/// request timeout. A request that timed out is past that window and is not retried,
/// so one call to the server gives up within about 1.5 request timeouts
/// ([`config::DEFAULT_REQUEST_TIMEOUT`]; object_store's own default would retry for 3
/// minutes, long enough for a web server's client to give up on a FUSE read first).
///
/// [`config::DEFAULT_REQUEST_TIMEOUT`]: super::config::DEFAULT_REQUEST_TIMEOUT
const MAX_RETRIES: usize = 3;
/// Connecting gives up sooner: a refused or unroutable server is not slow, it is gone.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Runtime threads: the work is waiting on sockets, not computing.
const RUNTIME_THREADS: usize = 2;

/// An object as a listing or a HEAD shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub mtime: SystemTime,
}

/// One delimited listing: the `<name>/` prefixes (as names, without the listed prefix
/// and the trailing slash) and the objects directly below, each in the server's order.
#[derive(Debug, Default)]
pub struct Listing {
    pub prefixes: Vec<String>,
    pub objects: Vec<ObjectInfo>,
}

impl Listing {
    /// About how much memory it holds (strings and their bookkeeping).
    pub fn bytes(&self) -> u64 {
        let prefixes: usize = self.prefixes.iter().map(|p| p.len() + 24).sum();
        let objects: usize = self.objects.iter().map(|o| o.key.len() + 64).sum();
        (prefixes + objects) as u64
    }
}

pub struct Client {
    s3: AmazonS3,
    runtime: tokio::runtime::Runtime,
    bucket: String,
}

impl Client {
    pub fn new(location: &Location, settings: &Settings) -> Result<Client> {
        let url = PathBuf::from(format!("s3://{}", location.bucket));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style)
            .with_allow_http(settings.allow_http)
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: settings.request_timeout / 2,
                ..RetryConfig::default()
            })
            .with_client_options(client_options(&url, settings)?);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(c) = &settings.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(token) = &c.session_token {
                builder = builder.with_token(token);
            }
        }
        let s3 = builder
            .build()
            .map_err(|e| Error::invalid(&url, format!("S3 client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("registryfs-s3")
            .on_thread_start(block_stop_signals)
            .enable_all()
            .build()
            .map_err(|e| Error::io(&url, e))?;
        Ok(Client {
            s3,
            runtime,
            bucket: location.bucket.clone(),
        })
    }

    /// `s3://bucket/key`, for messages and [`crate::store::BlobFile::path`].
    pub fn url(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("s3://{}/{key}", self.bucket))
    }

    fn error(&self, key: &str, e: &object_store::Error) -> Error {
        Error::io(self.url(key), std::io::Error::other(describe(e)))
    }

    fn key_path(&self, key: &str) -> Result<KeyPath> {
        KeyPath::parse(key).map_err(|e| Error::invalid(self.url(key), e.to_string()))
    }

    /// Lists `prefix` (ending in '/') with the '/' delimiter, all pages, or only the
    /// first `max_keys` entries.
    pub fn list(&self, prefix: &str, max_keys: Option<usize>) -> Result<Listing> {
        self.list_pages(prefix, Some("/"), max_keys)
    }

    /// Every object below `prefix`, at any depth.
    pub fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self.list_pages(prefix, None, None)?.objects)
    }

    fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&'static str>,
        max_keys: Option<usize>,
    ) -> Result<Listing> {
        let mut listing = Listing::default();
        let mut page_token = None;
        loop {
            let options = PaginatedListOptions {
                delimiter: delimiter.map(Into::into),
                max_keys,
                page_token: page_token.take(),
                ..PaginatedListOptions::default()
            };
            METRICS.s3_requests.inc(S3Request::List);
            let page = self
                .runtime
                .block_on(self.s3.list_paginated(Some(prefix), options))
                .map_err(|e| self.error(prefix, &e))?;
            for p in page.result.common_prefixes {
                // object_store drops the trailing delimiter.
                if let Some(name) = p.as_ref().strip_prefix(prefix) {
                    listing.prefixes.push(name.to_string());
                }
            }
            listing
                .objects
                .extend(page.result.objects.into_iter().map(|meta| ObjectInfo {
                    key: meta.location.to_string(),
                    size: meta.size,
                    mtime: whole_seconds(meta.last_modified.timestamp()),
                }));
            match page.page_token {
                Some(token) if max_keys.is_none() => page_token = Some(token),
                _ => return Ok(listing),
            }
        }
    }

    /// Whether any object's key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> Result<bool> {
        let page = self.list_pages(prefix, Some("/"), Some(1))?;
        Ok(!page.prefixes.is_empty() || !page.objects.is_empty())
    }

    /// HEAD: the object's size and time, or None if it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.key_path(key)?;
        METRICS.s3_requests.inc(S3Request::Head);
        match self.runtime.block_on(self.s3.head(&path)) {
            Ok(meta) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: meta.size,
                mtime: whole_seconds(meta.last_modified.timestamp()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(key, &e)),
        }
    }

    /// GETs a small object whole, refusing more than `limit` bytes; None if missing.
    pub fn get_small(&self, key: &str, limit: u64) -> Result<Option<(Vec<u8>, SystemTime)>> {
        let path = self.key_path(key)?;
        METRICS.s3_requests.inc(S3Request::Get);
        let fetched = self.runtime.block_on(async {
            let result = self.s3.get_opts(&path, GetOptions::default()).await?;
            if result.meta.size > limit {
                return Ok(Err(result.meta.size));
            }
            let mtime = whole_seconds(result.meta.last_modified.timestamp());
            Ok(Ok((result.bytes().await?, mtime)))
        });
        match fetched {
            Ok(Ok((bytes, mtime))) if bytes.len() as u64 <= limit => {
                Ok(Some((bytes.to_vec(), mtime)))
            }
            Ok(Ok((bytes, _))) => Err(self.too_big(key, bytes.len() as u64, limit)),
            Ok(Err(size)) => Err(self.too_big(key, size, limit)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(key, &e)),
        }
    }

    fn too_big(&self, key: &str, size: u64, limit: u64) -> Error {
        Error::invalid(
            self.url(key),
            format!("{size} bytes is more than the {limit}-byte limit"),
        )
    }

    /// GETs `range` of an object (one ranged GET); None if the object is gone. The body
    /// comes as the chunks it arrived in: joining them would copy every byte once more
    /// into a fresh allocation as big as the part (page faults on every page of it).
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Vec<bytes::Bytes>>> {
        use futures_util::TryStreamExt;
        let path = self.key_path(key)?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        METRICS.s3_requests.inc(S3Request::Get);
        match self.runtime.block_on(async {
            let body = self.s3.get_opts(&path, options).await?.into_stream();
            body.try_collect::<Vec<_>>().await
        }) {
            Ok(chunks) => Ok(Some(chunks)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(key, &e)),
        }
    }
}

/// The store's own threads (the runtime's, the answer refreshers) never take SIGINT
/// or SIGTERM: a mount waits for them on one thread and unmounts (fuse::session).
/// Started before the mount blocks them for its own threads, such a thread would
/// otherwise take the signal's default action and end the process with the mount left
/// behind.
pub(super) fn block_stop_signals() {
    // SAFETY: plain libc signal-set manipulation on a local set, for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn client_options(url: &std::path::Path, settings: &Settings) -> Result<ClientOptions> {
    let mut options = ClientOptions::new()
        .with_allow_http(settings.allow_http)
        .with_timeout(settings.request_timeout)
        .with_connect_timeout(settings.request_timeout.min(MAX_CONNECT_TIMEOUT));
    if let Some(bundle) = &settings.ca_bundle {
        let pem = std::fs::read(bundle).map_err(|e| Error::io(bundle, e))?;
        let certificates = Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::invalid(bundle, format!("CA bundle for {}: {e}", url.display())))?;
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    Ok(options)
}

/// S3 times: a listing has milliseconds, a HEAD or GET only seconds. Whole seconds
/// everywhere, so a time is the same whichever request showed it (and on every mount).
fn whole_seconds(unix: i64) -> SystemTime {
    u64::try_from(unix).map_or(SystemTime::UNIX_EPOCH, |secs| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    })
}

/// A failed request as "STATUS CODE" (`403 AccessDenied`), from the server's XML error
/// body when there is one; otherwise what went wrong on the way (connection refused...).
fn describe(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    // The innermost cause says what went wrong on the way (each level above repeats
    // the request and the retries).
    let mut innermost = text.clone();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        innermost = s.to_string();
        text.push_str(": ");
        text.push_str(&innermost);
        source = s.source();
    }
    let status = match e {
        object_store::Error::NotFound { .. } => Some("404".to_string()),
        object_store::Error::PermissionDenied { .. } => Some("403".to_string()),
        object_store::Error::Unauthenticated { .. } => Some("401".to_string()),
        object_store::Error::Precondition { .. } => Some("412".to_string()),
        _ => status_in(&text),
    };
    let code = between(&text, "<Code>", "</Code>");
    match (status, code) {
        (Some(status), Some(code)) => format!("{status} {code}"),
        (Some(status), None) => format!("{status} ({innermost})"),
        (None, _) => format!("no answer: {innermost}"),
    }
}

/// The three-digit status in object_store's "status code: 503 Service Unavailable".
fn status_in(text: &str) -> Option<String> {
    let after = text.split_once("status code: ")?.1;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 3).then_some(digits)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.split_once(start)?.1;
    Some(rest.split_once(end)?.0).filter(|code| !code.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_codes() {
        let text = "Generic S3 error: Server returned non-2xx status code: 503 Service \
                    Unavailable: <?xml version=\"1.0\"?><Error><Code>SlowDown</Code></Error>";
        assert_eq!(status_in(text).as_deref(), Some("503"));
        assert_eq!(between(text, "<Code>", "</Code>"), Some("SlowDown"));
        assert_eq!(status_in("connection refused"), None);
        assert_eq!(between("<Code></Code>", "<Code>", "</Code>"), None);
    }

    #[test]
    fn times_are_whole_seconds() {
        assert_eq!(
            whole_seconds(1_700_000_000),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(whole_seconds(-5), SystemTime::UNIX_EPOCH);
    }
}
