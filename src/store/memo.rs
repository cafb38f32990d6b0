//! What a mount read from a local store recently, kept for as long as the kernel keeps
//! the names made from it (the tag lifetime).
//!
//! A walk or a web server asks for the same repository from many paths: one tag folder
//! read its revision link 19 times and the repository's `_manifests` folder 18 times
//! (160 store system calls for one repository of the benchmark store). The mount keeps
//! those answers here; every batch of store changes forgets all of them
//! ([`ReadMemo::forget`]) before the kernel's caches are invalidated, and a read that
//! started before a forget is not kept ([`FreshLru`]), so nothing read before a
//! change outlives it. Errors are never kept. Off (lifetime zero) for `ls`/`cat`.

use crate::cache::FreshLru;
use crate::digest::Digest;
use crate::error::Result;
use crate::store::fsutil::FileMeta;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bytes of store reads kept.
pub const STORE_READ_CACHE_BYTES: u64 = 2 << 20;

/// Which read of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreRead {
    IsDir,
    Dir,
    RegularFile,
    DirTime,
    /// A whole small file, refused above this many bytes.
    Stamped(u64),
    Link,
}

#[derive(Clone)]
pub enum Remembered {
    IsDir(bool),
    Dir(Option<Arc<[(String, bool)]>>),
    RegularFile(Option<FileMeta>),
    DirTime(Option<SystemTime>),
    Stamped(Option<(Arc<[u8]>, SystemTime)>),
    Link(Option<(Digest, SystemTime)>),
}

impl Remembered {
    fn heap_bytes(&self) -> usize {
        match self {
            Remembered::Dir(Some(names)) => names.iter().map(|(n, _)| n.len() + 32).sum(),
            Remembered::RegularFile(Some(meta)) => meta.path.as_os_str().len(),
            Remembered::Stamped(Some((bytes, _))) => bytes.len(),
            _ => 0,
        }
    }
}

impl std::fmt::Debug for ReadMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadMemo")
            .field("bytes", &self.entries.bytes())
            .finish()
    }
}

pub struct ReadMemo {
    entries: FreshLru<(StoreRead, String), Remembered>,
}

impl Default for ReadMemo {
    fn default() -> Self {
        ReadMemo {
            entries: FreshLru::new(STORE_READ_CACHE_BYTES, Duration::ZERO),
        }
    }
}

impl ReadMemo {
    /// Keeps reads for `lifetime` from now on (zero: not at all).
    pub fn keep_for(&self, lifetime: Duration) {
        self.entries.set_lifetime(lifetime);
    }

    /// Forgets every read (the store changed).
    pub fn forget(&self) {
        self.entries.forget();
    }

    /// The kept answer of `read` of `rel`, or `make`'s (kept if it is not an error).
    pub fn get_or<T>(
        &self,
        read: StoreRead,
        rel: &str,
        unwrap: impl Fn(Remembered) -> Option<T>,
        wrap: impl Fn(&T) -> Remembered,
        make: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if self.entries.is_off() {
            return make();
        }
        let key = (read, rel.to_string());
        if let Some(value) = self.entries.young(&key).and_then(&unwrap) {
            return Ok(value);
        }
        let start = self.entries.start_read();
        let value = make()?;
        let kept = wrap(&value);
        // With the map's own entry and the allocator's rounding.
        let bytes = 192 + key.1.len() + kept.heap_bytes();
        self.entries.keep(start, key, kept, bytes as u64);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn read_dir_twice(memo: &ReadMemo, calls: &Cell<u32>) -> bool {
        let get = || {
            memo.get_or(
                StoreRead::IsDir,
                "a",
                |r| match r {
                    Remembered::IsDir(b) => Some(b),
                    _ => None,
                },
                |b| Remembered::IsDir(*b),
                || {
                    calls.set(calls.get() + 1);
                    Ok(true)
                },
            )
            .unwrap()
        };
        get() && get()
    }

    #[test]
    fn off_until_given_a_lifetime_then_kept_until_forgotten() {
        let memo = ReadMemo::default();
        let calls = Cell::new(0);
        assert!(read_dir_twice(&memo, &calls));
        assert_eq!(calls.get(), 2, "off: every read goes to the store");
        memo.keep_for(Duration::from_secs(60));
        read_dir_twice(&memo, &calls);
        assert_eq!(calls.get(), 3, "the second read was kept");
        memo.forget();
        read_dir_twice(&memo, &calls);
        assert_eq!(calls.get(), 4, "read again after a change");
        memo.keep_for(Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(2));
        read_dir_twice(&memo, &calls);
        assert_eq!(calls.get(), 6, "expired");
    }

    #[test]
    fn a_read_across_a_forget_is_not_kept_and_errors_never_are() {
        let memo = ReadMemo::default();
        memo.keep_for(Duration::from_secs(60));
        let unwrap = |r| match r {
            Remembered::DirTime(t) => Some(t),
            _ => None,
        };
        let wrap = |t: &Option<SystemTime>| Remembered::DirTime(*t);
        let old = memo
            .get_or(StoreRead::DirTime, "x", unwrap, wrap, || {
                memo.forget(); // the store changed while this read ran
                Ok(Some(SystemTime::UNIX_EPOCH))
            })
            .unwrap();
        assert_eq!(old, Some(SystemTime::UNIX_EPOCH));
        let new = memo
            .get_or(StoreRead::DirTime, "x", unwrap, wrap, || Ok(None))
            .unwrap();
        assert_eq!(new, None, "the read from before the change was not kept");
        let failed = memo.get_or(StoreRead::DirTime, "y", unwrap, wrap, || {
            Err(crate::error::Error::invalid(
                std::path::Path::new("y"),
                "bad",
            ))
        });
        assert!(failed.is_err());
        let after = memo
            .get_or(StoreRead::DirTime, "y", unwrap, wrap, || Ok(None))
            .unwrap();
        assert_eq!(after, None);
    }
}
