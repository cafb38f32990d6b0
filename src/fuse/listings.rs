//! Folder listings kept between the pages of one `readdir` pass.
//!
//! The kernel reads a folder in pages (a few KiB each) and then once more to see its
//! end. With `FUSE_NO_OPENDIR_SUPPORT` there is no open folder handle to hold the
//! listing between those requests (and no `opendir`/`releasedir` round trips, a third
//! of a walk's), so the listing made for a folder's first page is kept here, by inode
//! number, for the pages after it. A pass that starts again (offset 0) lists afresh.

use crate::cache::ByteLru;
use crate::error::Result;
use crate::namespace::DirEntry;
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of listings kept (names and entries).
pub const LISTING_CACHE_BYTES: usize = 2 << 20;

/// Listings by folder inode number. One listing larger than the whole bound (a folder
/// of 100k repositories) is kept in a slot of its own while it is paged through:
/// listing it again for every page would be quadratic.
pub struct Listings {
    kept: ByteLru<u64, Arc<[DirEntry]>>,
    oversized: Mutex<Option<(u64, Arc<[DirEntry]>)>>,
}

fn cost(entries: &[DirEntry]) -> usize {
    entries
        .iter()
        .map(|e| size_of::<DirEntry>() + e.name.len())
        .sum::<usize>()
        + size_of::<u64>()
}

impl Listings {
    pub fn new(max_bytes: usize) -> Listings {
        Listings {
            kept: ByteLru::new(max_bytes),
            oversized: Mutex::new(None),
        }
    }

    fn oversized(&self) -> MutexGuard<'_, Option<(u64, Arc<[DirEntry]>)>> {
        self.oversized.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listing of folder `ino` for a page starting at `offset`: made by `list` for
    /// the first page (or when it is no longer kept), the kept one after that.
    pub fn for_page(
        &self,
        ino: u64,
        offset: u64,
        list: impl FnOnce() -> Result<Vec<DirEntry>>,
    ) -> Result<Arc<[DirEntry]>> {
        if offset > 0 {
            if let Some(kept) = self.kept.get(&ino) {
                return Ok(kept);
            }
            if let Some((_, kept)) = self.oversized().as_ref().filter(|(i, _)| *i == ino) {
                return Ok(kept.clone());
            }
        }
        let entries: Arc<[DirEntry]> = list()?.into();
        let bytes = cost(&entries);
        if bytes > self.kept.max_bytes() {
            *self.oversized() = Some((ino, entries.clone()));
        } else {
            self.kept.put(ino, entries.clone(), bytes);
        }
        Ok(entries)
    }

    /// The kernel read folder `ino` to its end: its listing is let go, as the next pass
    /// lists afresh (a walk would otherwise fill the bound with listings never read
    /// again; an oversized one, a folder of 100k names, is 5 MiB).
    pub fn done(&self, ino: u64) {
        self.kept.remove(&ino);
        let mut oversized = self.oversized();
        if oversized.as_ref().is_some_and(|(i, _)| *i == ino) {
            let gone = oversized.take();
            drop(oversized);
            drop(gone);
            super::memory::release_free_pages();
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.kept.bytes() + self.oversized().as_ref().map_or(0, |(_, e)| cost(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn names(n: usize, prefix: &str) -> Vec<DirEntry> {
        (0..n)
            .map(|i| DirEntry {
                name: format!("{prefix}{i}"),
                is_dir: false,
            })
            .collect()
    }

    #[test]
    fn later_pages_use_the_first_pages_listing() {
        let listings = Listings::new(1 << 20);
        let calls = Cell::new(0);
        let list = |prefix: &'static str| {
            let calls = &calls;
            move || {
                calls.set(calls.get() + 1);
                Ok(names(3, prefix))
            }
        };
        let first = listings.for_page(7, 0, list("a")).unwrap();
        let later = listings.for_page(7, 2, list("b")).unwrap();
        assert_eq!(calls.get(), 1, "the later page is not listed again");
        assert_eq!(later[0].name, first[0].name);
        // A new pass lists afresh.
        let again = listings.for_page(7, 0, list("c")).unwrap();
        assert_eq!((calls.get(), again[0].name.as_str()), (2, "c0"));
        // A folder never listed (or no longer kept) is listed for any page.
        assert_eq!(listings.for_page(8, 5, list("d")).unwrap()[0].name, "d0");
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn bounded_by_bytes_but_keeps_the_listing_in_use() {
        let one = cost(&names(100, "x"));
        let listings = Listings::new(one * 2);
        for ino in 0..10 {
            listings.for_page(ino, 0, || Ok(names(100, "x"))).unwrap();
            assert!(listings.bytes() <= one * 2, "{} bytes", listings.bytes());
        }
        // Too big alone: kept in its own slot for its pages (one such listing at a time).
        let before = listings.bytes();
        listings.for_page(99, 0, || Ok(names(1000, "x"))).unwrap();
        assert_eq!(listings.bytes(), before + cost(&names(1000, "x")));
        let kept = listings
            .for_page(99, 500, || panic!("listed again"))
            .unwrap();
        assert_eq!(kept.len(), 1000);
        listings.for_page(98, 0, || Ok(names(2000, "y"))).unwrap();
        assert_eq!(listings.bytes(), before + cost(&names(2000, "y")));
        listings.done(97);
        assert_eq!(
            listings.bytes(),
            before + cost(&names(2000, "y")),
            "another folder"
        );
        listings.done(98);
        assert_eq!(listings.bytes(), before, "read to its end: let go");
    }

    #[test]
    fn a_folder_read_to_its_end_is_let_go() {
        let listings = Listings::new(1 << 20);
        listings.for_page(5, 0, || Ok(names(3, "a"))).unwrap();
        listings.for_page(6, 0, || Ok(names(3, "b"))).unwrap();
        listings.done(5);
        assert_eq!(listings.bytes(), cost(&names(3, "b")), "only 6 is kept");
        let again = listings.for_page(5, 4, || Ok(names(3, "c"))).unwrap();
        assert_eq!(
            again[0].name, "c0",
            "a later page after the end lists afresh"
        );
    }
}
