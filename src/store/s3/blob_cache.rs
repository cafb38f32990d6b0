//! Verified blobs in the local cache folder (`blobs/sha256/<hex>`), bounded by bytes
//! (`--cache-max-bytes`), least recently used evicted first, and one download per blob
//! however many readers ask for it at once.
//!
//! Only a download that completed and hashed to its digest is renamed into the folder,
//! so what is there is good; an evicted file is unlinked, and readers that hold it
//! open keep reading it. A blob larger than the whole bound is still served: it is
//! downloaded, handed out open, and unlinked at once. The order of use is kept in
//! memory; at start the files already there are taken oldest access first. Several
//! mounts may share a folder (each keeps its own bound).

use super::bounded::BytesLru;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Seek;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

/// Default `--cache-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

pub struct BlobCache {
    /// `<cache>/blobs/sha256`.
    dir: PathBuf,
    /// The files in `dir` by last use (the value is nothing; the weight is the size).
    kept: Mutex<BytesLru<String, ()>>,
    /// Downloads in progress, by hex digest.
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

/// A download others wait for.
#[derive(Default)]
struct Flight {
    outcome: Mutex<Outcome>,
    done: Condvar,
}

#[derive(Default)]
enum Outcome {
    #[default]
    Pending,
    /// The verified blob, open (kept in the folder or not).
    Ready(Arc<std::fs::File>),
    /// The object is gone from the bucket.
    Gone,
    Failed(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlobCache {
    /// The cache below `root`, with the files already there.
    pub fn open(root: &Path, max_bytes: u64) -> Result<BlobCache> {
        let dir = root.join("blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let cache = BlobCache {
            kept: Mutex::new(BytesLru::new(max_bytes)),
            flights: Mutex::new(HashMap::new()),
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

    /// The verified blob `hex` of `len` bytes, open at offset 0: from the folder, or
    /// written by `download` into a new file (which must check the digest), once for
    /// all who ask meanwhile. None if `download` finds the object gone.
    pub fn get(
        &self,
        hex: &str,
        len: u64,
        download: impl FnOnce(&std::fs::File, &Path) -> Result<Option<()>>,
    ) -> Result<Option<std::fs::File>> {
        let dest = self.dir.join(hex);
        if let Some(file) = self.kept_file(hex, len, &dest)? {
            return Ok(Some(file));
        }
        let (flight, leading) = {
            let mut flights = lock(&self.flights);
            match flights.get(hex) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(hex.to_string(), flight.clone());
                    (flight, true)
                }
            }
        };
        if !leading {
            return wait_for(&flight, &dest);
        }
        // A download may have finished between the look above and taking the lead.
        let result = match self.kept_file(hex, len, &dest) {
            Ok(Some(file)) => Ok(Some(file)),
            Ok(None) => self.fetch(hex, len, &dest, download),
            Err(e) => Err(e),
        };
        *lock(&flight.outcome) = match &result {
            Ok(Some(file)) => match file.try_clone() {
                Ok(shared) => Outcome::Ready(Arc::new(shared)),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Ok(None) => Outcome::Gone,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        flight.done.notify_all();
        lock(&self.flights).remove(hex);
        result
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

    fn fetch(
        &self,
        hex: &str,
        len: u64,
        dest: &Path,
        download: impl FnOnce(&std::fs::File, &Path) -> Result<Option<()>>,
    ) -> Result<Option<std::fs::File>> {
        let partial = PartialFile::create(dest)?;
        if download(&partial.file, &partial.path)?.is_none() {
            return Ok(None);
        }
        let file = partial.persist(dest)?;
        let evicted = lock(&self.kept).put(hex.to_string(), (), len);
        for (gone, ()) in evicted {
            // Possibly this very blob, larger than the bound: served from `file`.
            self.remove(&gone);
        }
        Ok(Some(file))
    }
}

/// A reader that waited for another's download: its own descriptor of the same file
/// (its own offset, at 0), even if the file was unlinked meanwhile.
fn wait_for(flight: &Flight, dest: &Path) -> Result<Option<std::fs::File>> {
    let mut outcome = lock(&flight.outcome);
    while matches!(*outcome, Outcome::Pending) {
        outcome = flight.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
    }
    match &*outcome {
        Outcome::Ready(file) => {
            let own = format!("/proc/self/fd/{}", file.as_raw_fd());
            std::fs::File::open(own)
                .map(Some)
                .map_err(|e| Error::io(dest, e))
        }
        Outcome::Gone => Ok(None),
        Outcome::Failed(reason) => Err(Error::io(
            dest,
            std::io::Error::other(format!(
                "the download this read waited for failed: {reason}"
            )),
        )),
        Outcome::Pending => Ok(None),
    }
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

    /// Renames the complete file to `dest` and hands out its descriptor, at offset 0
    /// like a freshly opened file (readers copy from the current offset).
    fn persist(mut self, dest: &Path) -> Result<std::fs::File> {
        std::fs::rename(&self.path, dest).map_err(|e| Error::io(dest, e))?;
        self.persisted = true;
        let mut file = self.file.try_clone().map_err(|e| Error::io(dest, e))?;
        file.rewind().map_err(|e| Error::io(dest, e))?;
        Ok(file)
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
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hex(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn write(bytes: &'static [u8]) -> impl FnOnce(&std::fs::File, &Path) -> Result<Option<()>> {
        move |mut file, path| {
            file.write_all(bytes).map_err(|e| Error::io(path, e))?;
            Ok(Some(()))
        }
    }

    fn read_all(mut file: std::fs::File) -> Vec<u8> {
        let mut out = Vec::new();
        file.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn kept_within_the_bound_least_recent_evicted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(tmp.path(), 10).expect("open");
        let path = |n| tmp.path().join("blobs/sha256").join(hex(n));
        let got = cache.get(&hex(1), 4, write(b"aaaa")).expect("get");
        assert_eq!(got.map(read_all), Some(b"aaaa".to_vec()), "at offset 0");
        cache.get(&hex(2), 4, write(b"bbbb")).expect("get");
        let again = cache.get(&hex(1), 4, |_, _| panic!("kept: no download"));
        assert!(again.expect("get").is_some());
        cache.get(&hex(3), 4, write(b"cccc")).expect("get");
        assert!(path(1).exists() && path(3).exists());
        assert!(!path(2).exists(), "the least recently used went");
        let big = cache.get(&hex(4), 11, |mut f, p| {
            f.write_all(&[7; 11]).map_err(|e| Error::io(p, e))?;
            Ok(Some(()))
        });
        assert_eq!(big.expect("get").map(read_all), Some(vec![7; 11]), "served");
        assert!(!path(4).exists(), "but not kept: larger than the bound");
        let reopened = BlobCache::open(tmp.path(), 5).expect("reopen");
        let left = [1, 3].iter().filter(|n| path(**n).exists()).count();
        assert_eq!(left, 1, "a smaller bound at start evicts");
        drop(reopened);
    }

    #[test]
    fn failed_or_gone_downloads_leave_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(tmp.path(), 100).expect("open");
        let failed = cache.get(&hex(1), 4, |mut f, p| {
            f.write_all(b"ba").map_err(|e| Error::io(p, e))?;
            Err(Error::invalid(p, "does not hash"))
        });
        assert!(failed.is_err());
        assert!(cache
            .get(&hex(2), 4, |_, _| Ok(None))
            .expect("get")
            .is_none());
        let left = std::fs::read_dir(tmp.path().join("blobs/sha256")).expect("dir");
        assert_eq!(left.count(), 0, "no partial or bad file");
    }

    #[test]
    fn readers_at_the_same_time_share_one_download() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(BlobCache::open(tmp.path(), 100).expect("open"));
        let downloads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (cache, downloads) = (cache.clone(), downloads.clone());
                std::thread::spawn(move || {
                    let got = cache.get(&hex(9), 4, |mut f, p| {
                        downloads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        f.write_all(b"dddd").map_err(|e| Error::io(p, e))?;
                        Ok(Some(()))
                    });
                    got.expect("get").map(read_all)
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.join().expect("join"), Some(b"dddd".to_vec()));
        }
        assert_eq!(downloads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn partials_of_gone_processes_are_recognized() {
        assert!(!partial_of_gone_process(&format!(
            "{}.partial.{}.0",
            hex(1),
            std::process::id()
        )));
        assert!(partial_of_gone_process(&format!(
            "{}.partial.999999999.3",
            hex(1)
        )));
        assert!(!partial_of_gone_process(&hex(1)));
    }
}
