//! Blobs in the local cache folder (`blobs/sha256/<hex>`), bounded by bytes
//! (`--cache-max-bytes`), least recently used evicted first, and the downloads that
//! fill it: one per blob however many readers ask for it, served while it runs.
//!
//! A download fetches the blob's parts in order (ranged GETs of 1 MiB, doubling up to
//! 8 MiB: the first bytes come soon, the rest in few requests; two requests at a time)
//! on a thread of its own, ahead of its readers, into a file next to its final name, hashing as it goes.
//! Readers wait for the bytes they ask for; the read that ends at the blob's end waits
//! for the hash, and fails if the blob does not hash to its digest, as does every read
//! after a failure. Only a download that hashed to its digest is renamed into the
//! folder, so what is there is good; an evicted file is unlinked, and readers that hold
//! it open keep reading it. A blob larger than the whole bound is still served (from
//! its download, unlinked when it completes).
//!
//! Memory: at most four parts per running download (two being fetched, and the two last
//! written, which the readers right behind copy from), and all downloads together hold at most
//! [`PART_BUDGET_BYTES`] of parts (a download waits for room before it asks for the
//! next part), however many readers there are. A reader waits at most a stall bound
//! (a few request timeouts) for the download to make progress, then fails.
//!
//! The order of use is kept in memory; at start the files already there are taken
//! oldest access first. Several mounts may share a folder (each keeps its own bound).

use crate::cache::WeighedLru;
use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Default `--cache-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
/// Parts of all downloads in memory at once.
pub const PART_BUDGET_BYTES: u64 = 128 << 20;
const FIRST_PART_BYTES: u64 = 1 << 20;
const MAX_PART_BYTES: u64 = 8 << 20;
/// Requests of one download at once: the next part is asked for while one arrives,
/// so a request's latency does not add up part after part.
const PARTS_IN_FLIGHT: usize = 2;
/// Parts of one download kept in memory once written, for the readers right behind it.
const RECENT_PARTS: usize = 2;

/// Fetches one part of a blob's data object, as the chunks it arrived in: None if the
/// object is gone.
pub type FetchPart = Box<dyn Fn(Range<u64>) -> Result<Option<Vec<bytes::Bytes>>> + Send + Sync>;

pub struct BlobCache {
    /// `<cache>/blobs/sha256`.
    dir: PathBuf,
    /// The files in `dir` by last use (the value is nothing; the weight is the size).
    kept: Mutex<WeighedLru<String, ()>>,
    /// Downloads running, by hex digest.
    downloads: Mutex<HashMap<String, Arc<Download>>>,
    budget: Budget,
    /// How long a reader waits for a download to make progress.
    stall: Duration,
}

/// A blob, opened.
pub enum Opened {
    /// From the folder: verified when it was downloaded.
    Kept(std::fs::File),
    /// Still downloading.
    Downloading(Arc<Download>),
}

/// One blob's download, shared by its readers.
pub struct Download {
    /// The blob's data object, for messages.
    url: PathBuf,
    len: u64,
    /// The file being written (read by position; it stays readable when renamed or
    /// unlinked).
    file: std::fs::File,
    progress: Mutex<Progress>,
    changed: Condvar,
    stall: Duration,
    /// The last parts written, oldest first: a reader right behind the download copies
    /// from here instead of reading the file back (a copy less per byte: daemon and
    /// reader took 1.00 CPU seconds per cold 256 MiB, 0.93 with this).
    recent: Mutex<VecDeque<RecentPart>>,
}

/// A written part still in memory.
struct RecentPart {
    start: u64,
    chunks: Vec<bytes::Bytes>,
}

impl RecentPart {
    /// Copies `buf.len()` bytes from `offset` if this part holds them all.
    fn copy_to(&self, offset: u64, buf: &mut [u8]) -> bool {
        let len: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        if offset < self.start || offset + buf.len() as u64 > self.start + len {
            return false;
        }
        let (mut skip, mut filled) = ((offset - self.start) as usize, 0);
        for chunk in &self.chunks {
            if filled == buf.len() {
                break;
            }
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            let n = (chunk.len() - skip).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk[skip..skip + n]);
            filled += n;
            skip = 0;
        }
        true
    }
}

struct Progress {
    /// Bytes written from the start.
    written: u64,
    state: State,
}

#[derive(Clone, PartialEq, Eq)]
enum State {
    Running,
    Verified,
    Gone,
    Failed(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of parts in memory, across downloads.
struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    /// Waits for room (always given when nothing is taken, whatever the size).
    fn take(&self, bytes: u64) -> BudgetShare<'_> {
        let mut used = lock(&self.used);
        while *used > 0 && *used + bytes > PART_BUDGET_BYTES {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        BudgetShare {
            budget: self,
            bytes,
        }
    }

    /// Room if there is some now. A download asks for more than one part this way
    /// only: downloads that each hold a part and wait for another would wait forever.
    fn try_take(&self, bytes: u64) -> Option<BudgetShare<'_>> {
        let mut used = lock(&self.used);
        if *used + bytes > PART_BUDGET_BYTES {
            return None;
        }
        *used += bytes;
        Some(BudgetShare {
            budget: self,
            bytes,
        })
    }
}

struct BudgetShare<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for BudgetShare<'_> {
    fn drop(&mut self) {
        *lock(&self.budget.used) -= self.bytes;
        self.budget.freed.notify_all();
    }
}

impl Download {
    fn advance(&self, written: u64) {
        lock(&self.progress).written = written;
        self.changed.notify_all();
    }

    fn finish(&self, state: State) {
        lock(&self.progress).state = state;
        self.changed.notify_all();
    }

    /// Waits until `done` says the progress is enough, or the download failed, or it
    /// made no progress for the stall bound.
    fn wait_until(&self, done: impl Fn(&Progress) -> bool) -> std::io::Result<()> {
        let mut progress = lock(&self.progress);
        loop {
            match &progress.state {
                State::Failed(reason) => return Err(std::io::Error::other(reason.clone())),
                State::Gone => {
                    return Err(std::io::Error::other(format!(
                        "{}: the blob's data went away while it was downloaded",
                        self.url.display()
                    )))
                }
                _ if done(&progress) => return Ok(()),
                _ => {}
            }
            let before = progress.written;
            let (next, timeout) = self
                .changed
                .wait_timeout(progress, self.stall)
                .unwrap_or_else(|e| e.into_inner());
            progress = next;
            if timeout.timed_out() && progress.written == before && progress.state == State::Running
            {
                let e = format!(
                    "{}: the download made no progress in {:?} (at byte {before})",
                    self.url.display(),
                    self.stall
                );
                log::warn!("{e}");
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, e));
            }
        }
    }
}

impl crate::store::BlobStream for Download {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64).min(self.len);
        if offset >= end {
            return Ok(0);
        }
        let completes = end == self.len;
        self.wait_until(|p| p.written >= end && (!completes || p.state == State::Verified))?;
        let got = &mut buf[..(end - offset) as usize];
        let in_memory = lock(&self.recent)
            .iter()
            .any(|part| part.copy_to(offset, got));
        if !in_memory {
            self.file.read_exact_at(got, offset)?;
        }
        Ok(got.len())
    }

    fn verified(&self) -> std::io::Result<()> {
        self.wait_until(|p| p.state == State::Verified)
    }
}

impl BlobCache {
    /// The cache below `root`, with the files already there.
    /// `stall`: how long a reader waits for a download to make progress.
    pub fn open(root: &Path, max_bytes: u64, stall: Duration) -> Result<BlobCache> {
        let dir = root.join("blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let cache = BlobCache {
            kept: Mutex::new(WeighedLru::new(max_bytes)),
            downloads: Mutex::new(HashMap::new()),
            budget: Budget {
                used: Mutex::new(0),
                freed: Condvar::new(),
            },
            stall,
            dir,
        };
        cache.take_stock()?;
        Ok(cache)
    }

    /// Adds the files in the folder, least recently read first (their access times),
    /// evicting what is over the bound; removes downloads left by processes that are
    /// gone.
    fn take_stock(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if is_hex_digest(&name) && meta.is_file() {
                let used = meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, name, meta.len()));
            } else if partial_of_gone_process(&name) {
                self.remove(&name);
            }
        }
        found.sort();
        let mut kept = lock(&self.kept);
        for (_, name, len) in found {
            for (gone, ()) in kept.put(name, (), len) {
                self.remove(&gone);
            }
        }
        Ok(())
    }

    fn remove(&self, name: &str) {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => log::debug!("{}: evicted from the cache", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{}: cannot remove: {e}", path.display()),
        }
    }

    /// The blob `hex` of `len` bytes (`url` in messages): the kept file, open at
    /// offset 0, or its download, started with `fetch` unless one is running.
    pub fn open_blob(
        self: &Arc<Self>,
        hex: &str,
        len: u64,
        url: &Path,
        fetch: FetchPart,
    ) -> Result<Opened> {
        let dest = self.dir.join(hex);
        if let Some(file) = self.kept_file(hex, len, &dest)? {
            return Ok(Opened::Kept(file));
        }
        let mut downloads = lock(&self.downloads);
        if let Some(download) = downloads.get(hex) {
            return Ok(Opened::Downloading(download.clone()));
        }
        // A download may have finished since the look above.
        if let Some(file) = self.kept_file(hex, len, &dest)? {
            return Ok(Opened::Kept(file));
        }
        let partial = PartialFile::create(&dest)?;
        let file = partial
            .file
            .try_clone()
            .map_err(|e| Error::io(&partial.path, e))?;
        let download = Arc::new(Download {
            url: url.to_path_buf(),
            len,
            file,
            progress: Mutex::new(Progress {
                written: 0,
                state: State::Running,
            }),
            changed: Condvar::new(),
            stall: self.stall,
            recent: Mutex::new(VecDeque::new()),
        });
        let run = {
            let (cache, download, hex) = (self.clone(), download.clone(), hex.to_string());
            move || cache.run(&hex, &download, partial, fetch)
        };
        std::thread::Builder::new()
            .name("registryfs-blob".into())
            .spawn(run)
            .map_err(|e| Error::io(url, e))?;
        downloads.insert(hex.to_string(), download.clone());
        Ok(Opened::Downloading(download))
    }

    /// A download's thread: fetches, hashes and writes the parts in order, then keeps
    /// the file if it hashed to `hex`; tells the readers at every step.
    fn run(&self, hex: &str, download: &Download, partial: PartialFile, fetch: FetchPart) {
        // A request that panicked (the client's code) fails this download, not the
        // mount: the readers are told and the next open starts again.
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|scope| self.fetch_all(scope, hex, download, &partial, &fetch))
        }))
        .unwrap_or_else(|_| {
            Err(Error::invalid(
                &download.url,
                "the download ended abnormally (a panic in the S3 client)",
            ))
        });
        // Their budget was given back when `fetch_all` returned.
        lock(&download.recent).clear();
        let state = match fetched.and_then(|found| match found {
            true => self
                .keep(hex, download.len, partial)
                .map(|()| State::Verified),
            false => Ok(State::Gone),
        }) {
            Ok(state) => state,
            Err(e) => {
                // Once here; its readers' failures are only debug lines.
                log::warn!("{e}");
                State::Failed(e.to_string())
            }
        };
        // Kept (or not) before the download is forgotten: a later open finds the file.
        download.finish(state);
        lock(&self.downloads).remove(hex);
    }

    /// false if the object went away.
    fn fetch_all<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        hex: &str,
        download: &Download,
        partial: &PartialFile,
        fetch: &'scope FetchPart,
    ) -> Result<bool> {
        let mut parts = part_ranges(download.len);
        let mut in_flight = VecDeque::new();
        // The budget of the parts in `download.recent`, in the same order.
        let mut recent_shares = VecDeque::new();
        let mut hasher = Sha256::new();
        loop {
            while in_flight.len() < PARTS_IN_FLIGHT {
                let Some(range) = parts.peek().cloned() else {
                    break;
                };
                let bytes = range.end - range.start;
                let share = match in_flight.is_empty() {
                    true => {
                        // Nothing held while waiting for room: downloads that each
                        // kept parts and waited for more would wait forever.
                        lock(&download.recent).clear();
                        recent_shares.clear();
                        self.budget.take(bytes)
                    }
                    false => match self.budget.try_take(bytes) {
                        Some(share) => share,
                        None => break,
                    },
                };
                let asked = range.clone();
                let request = std::thread::Builder::new()
                    .name("registryfs-part".into())
                    .spawn_scoped(scope, move || fetch(asked))
                    .map_err(|e| Error::io(&download.url, e))?;
                parts.next();
                in_flight.push_back((range, share, request));
            }
            let Some((range, share, request)) = in_flight.pop_front() else {
                break;
            };
            let fetched = request.join().map_err(|_| {
                Error::invalid(&download.url, "the request for a part ended abnormally")
            })?;
            let Some(chunks) = fetched? else {
                return Ok(false);
            };
            let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            if got != range.end - range.start {
                return Err(Error::invalid(
                    &download.url,
                    format!(
                        "asked for bytes {}..{}, got {got} (the object changed?)",
                        range.start, range.end,
                    ),
                ));
            }
            let mut at = range.start;
            for chunk in &chunks {
                hasher.update(chunk);
                partial
                    .file
                    .write_all_at(chunk, at)
                    .map_err(|e| Error::io(&partial.path, e))?;
                at += chunk.len() as u64;
            }
            {
                let mut recent = lock(&download.recent);
                recent.push_back(RecentPart {
                    start: range.start,
                    chunks,
                });
                recent_shares.push_back(share);
                if recent.len() > RECENT_PARTS {
                    recent.pop_front();
                    recent_shares.pop_front();
                }
            }
            download.advance(range.end);
        }
        let actual = crate::digest::hex(&hasher.finalize());
        if actual != hex {
            return Err(Error::invalid(
                &download.url,
                format!("blob data does not hash to sha256:{hex} (found sha256:{actual})"),
            ));
        }
        Ok(true)
    }

    /// Renames a verified download into the folder, evicting what is over the bound
    /// (possibly this very blob, larger than the bound: its readers keep their file).
    fn keep(&self, hex: &str, len: u64, partial: PartialFile) -> Result<()> {
        partial.persist(&self.dir.join(hex))?;
        let evicted = lock(&self.kept).put(hex.to_string(), (), len);
        for (gone, ()) in evicted {
            self.remove(&gone);
        }
        Ok(())
    }

    /// The kept file if it is there with the right length (a wrong one is removed).
    fn kept_file(&self, hex: &str, len: u64, dest: &Path) -> Result<Option<std::fs::File>> {
        let file = match std::fs::File::open(dest) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(dest, e)),
        };
        let found = file.metadata().map_err(|e| Error::io(dest, e))?.len();
        let mut kept = lock(&self.kept);
        if found != len {
            log::warn!(
                "{}: {found} bytes, but the blob has {len}; downloading again",
                dest.display()
            );
            kept.remove(hex);
            self.remove(hex);
            return Ok(None);
        }
        if kept.get(hex).is_none() {
            // Put there by another mount sharing the folder.
            for (gone, ()) in kept.put(hex.to_string(), (), len) {
                self.remove(&gone);
            }
        }
        Ok(Some(file))
    }
}

/// The parts a blob of `len` bytes is fetched in: 1 MiB, doubling up to 8 MiB.
fn part_ranges(len: u64) -> std::iter::Peekable<impl Iterator<Item = Range<u64>>> {
    let mut next = (0, FIRST_PART_BYTES);
    std::iter::from_fn(move || {
        let (offset, size) = next;
        if offset >= len {
            return None;
        }
        let end = offset.saturating_add(size).min(len);
        next = (end, (size * 2).min(MAX_PART_BYTES));
        Some(offset..end)
    })
    .peekable()
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<hex>.partial.<pid>.<n>` of a process that no longer runs.
fn partial_of_gone_process(name: &str) -> bool {
    let Some((_, rest)) = name.split_once(".partial.") else {
        return false;
    };
    let pid = rest.split('.').next().unwrap_or("");
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !Path::new("/proc").join(pid).exists()
}

/// A download in progress, next to its final name; removed unless persisted.
struct PartialFile {
    path: PathBuf,
    file: std::fs::File,
    persisted: bool,
}

impl PartialFile {
    fn create(dest: &Path) -> Result<PartialFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}.partial.{}.{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dest.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(PartialFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Renames the complete file to `dest`.
    fn persist(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|e| Error::io(dest, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("{}: cannot remove: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobStream;
    use sha2::Sha256;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hex_of(bytes: &[u8]) -> String {
        crate::digest::hex(&Sha256::digest(bytes))
    }

    /// Serves `bytes` by range, counting the calls.
    fn serve(bytes: Vec<u8>, calls: Arc<AtomicUsize>) -> FetchPart {
        Box::new(move |range: Range<u64>| {
            calls.fetch_add(1, Ordering::SeqCst);
            // In two chunks, as a body arrives in several.
            let part = &bytes[range.start as usize..range.end as usize];
            let (a, b) = part.split_at(part.len() / 2);
            Ok(Some(vec![
                bytes::Bytes::copy_from_slice(a),
                bytes::Bytes::copy_from_slice(b),
            ]))
        })
    }

    fn cache(dir: &Path, max: u64) -> Arc<BlobCache> {
        Arc::new(BlobCache::open(dir, max, Duration::from_secs(5)).expect("open"))
    }

    /// The blob's bytes through whatever `open_blob` gave.
    fn read_all(opened: Opened, len: u64) -> std::io::Result<Vec<u8>> {
        match opened {
            Opened::Kept(mut file) => {
                let mut out = Vec::new();
                file.read_to_end(&mut out)?;
                Ok(out)
            }
            Opened::Downloading(d) => {
                let mut out = Vec::new();
                let mut buf = vec![0u8; 300_000];
                while (out.len() as u64) < len {
                    let n = d.read_at(out.len() as u64, &mut buf)?;
                    out.extend_from_slice(&buf[..n]);
                }
                Ok(out)
            }
        }
    }

    fn kept_path(dir: &Path, hex: &str) -> PathBuf {
        dir.join("blobs/sha256").join(hex)
    }

    #[test]
    fn streamed_then_kept_within_the_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = cache(tmp.path(), 4 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n; 3 << 20]).collect();
        for blob in &blobs {
            let hex = hex_of(blob);
            let fetch = serve(blob.clone(), calls.clone());
            let opened = cache.open_blob(&hex, 3 << 20, Path::new("s3://b/k"), fetch);
            let got = read_all(opened.expect("open"), 3 << 20).expect("read");
            assert!(got == *blob, "the blob's bytes");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 6, "1 + 2 MiB parts each");
        // Each 3 MiB: only the last fits in 4 MiB.
        let kept: Vec<bool> = blobs
            .iter()
            .map(|b| kept_path(tmp.path(), &hex_of(b)).exists())
            .collect();
        assert_eq!(kept, [false, false, true]);
        let last = &blobs[2];
        let fetch: FetchPart = Box::new(|_| panic!("kept: no download"));
        let opened = cache.open_blob(&hex_of(last), 3 << 20, Path::new("s3://b/k"), fetch);
        assert!(matches!(opened, Ok(Opened::Kept(_))));
        let reopened = BlobCache::open(tmp.path(), 1 << 20, Duration::from_secs(5));
        assert!(
            !kept_path(tmp.path(), &hex_of(last)).exists(),
            "a smaller bound at start evicts"
        );
        drop(reopened);
    }

    #[test]
    fn a_wrong_blob_fails_the_completing_read_and_is_not_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = cache(tmp.path(), 100 << 20);
        let good = vec![1u8; 3 << 20];
        let mut bad = good.clone();
        bad[(3 << 20) - 1] = 2;
        let hex = hex_of(&good);
        let calls = Arc::new(AtomicUsize::new(0));
        let opened = cache
            .open_blob(&hex, 3 << 20, Path::new("s3://b/k"), serve(bad, calls))
            .expect("open");
        let Opened::Downloading(download) = opened else {
            panic!("not kept yet")
        };
        let mut ten = [0u8; 10];
        assert_eq!(download.read_at(0, &mut ten).expect("early bytes"), 10);
        let end = download
            .read_at((3 << 20) - 10, &mut ten)
            .expect_err("completes a wrong blob");
        assert!(end.to_string().contains("does not hash"), "{end}");
        assert!(
            download.read_at(0, &mut ten).is_err(),
            "every read after it fails"
        );
        assert!(download.verified().is_err());
        let left = std::fs::read_dir(tmp.path().join("blobs/sha256")).expect("dir");
        assert_eq!(left.count(), 0, "no partial or bad file");
        let gone: FetchPart = Box::new(|_| Ok(None));
        let opened = cache.open_blob(&hex, 3 << 20, Path::new("s3://b/k"), gone);
        let Ok(Opened::Downloading(download)) = opened else {
            panic!("downloaded again")
        };
        assert!(download.verified().is_err(), "gone");
    }

    #[test]
    fn readers_at_the_same_time_share_one_download() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = cache(tmp.path(), 100 << 20);
        let blob = vec![9u8; 2 << 20];
        let hex = hex_of(&blob);
        let calls = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls, blob, hex) =
                    (cache.clone(), calls.clone(), blob.clone(), hex.clone());
                std::thread::spawn(move || {
                    let fetch = serve(blob, calls);
                    let opened = cache.open_blob(&hex, 2 << 20, Path::new("s3://b/k"), fetch);
                    read_all(opened.expect("open"), 2 << 20).expect("read")
                })
            })
            .collect();
        for reader in readers {
            assert!(reader.join().expect("join") == blob);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one download: 1 + 1 MiB");
    }

    #[test]
    fn a_written_part_serves_reads_across_its_chunks() {
        let part = RecentPart {
            start: 1000,
            chunks: vec![
                bytes::Bytes::from_static(b"abc"),
                bytes::Bytes::from_static(b""),
                bytes::Bytes::from_static(b"defg"),
            ],
        };
        let mut buf = [0u8; 5];
        assert!(part.copy_to(1001, &mut buf));
        assert_eq!(&buf, b"bcdef");
        let mut two = [0u8; 2];
        assert!(part.copy_to(1005, &mut two));
        assert_eq!(&two, b"fg");
        assert!(!part.copy_to(999, &mut two), "starts before the part");
        assert!(!part.copy_to(1006, &mut two), "ends after it");
    }

    #[test]
    fn parts_grow_to_8_mib() {
        let sizes: Vec<u64> = part_ranges(20 << 20).map(|r| r.end - r.start).collect();
        assert_eq!(sizes, [1 << 20, 2 << 20, 4 << 20, 8 << 20, 5 << 20]);
        assert_eq!(part_ranges(0).count(), 0);
        let budget = Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
        };
        let all = budget.take(PART_BUDGET_BYTES);
        assert!(budget.try_take(1).is_none(), "full");
        drop(all);
        assert!(budget.try_take(1).is_some());
    }

    #[test]
    fn partials_of_gone_processes_are_recognized() {
        let hex = "ab".repeat(32);
        let mine = format!("{hex}.partial.{}.0", std::process::id());
        assert!(!partial_of_gone_process(&mine));
        assert!(partial_of_gone_process(&format!(
            "{hex}.partial.999999999.3"
        )));
        assert!(!partial_of_gone_process(&hex));
    }
}
