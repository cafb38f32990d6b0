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
use std::sync::Arc;

/// Bytes of listings kept (names and entries). The listing being paged through is kept
/// even when it alone is larger: listing it again for every page would be quadratic.
pub const LISTING_CACHE_BYTES: usize = 2 << 20;

pub struct Listings(ByteLru<u64, Arc<[DirEntry]>>);

fn cost(entries: &[DirEntry]) -> usize {
    entries
        .iter()
        .map(|e| size_of::<DirEntry>() + e.name.len())
        .sum::<usize>()
        + size_of::<u64>()
}

impl Listings {
    pub fn new(max_bytes: usize) -> Listings {
        Listings(ByteLru::new(max_bytes))
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
            if let Some(kept) = self.0.get(&ino) {
                return Ok(kept);
            }
        }
        let entries: Arc<[DirEntry]> = list()?.into();
        self.0.put(ino, entries.clone(), cost(&entries));
        Ok(entries)
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.0.bytes()
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
        // Too big alone: still kept for its pages, everything else dropped.
        listings.for_page(99, 0, || Ok(names(1000, "x"))).unwrap();
        assert_eq!(listings.bytes(), cost(&names(1000, "x")));
        let kept = listings
            .for_page(99, 500, || panic!("listed again"))
            .unwrap();
        assert_eq!(kept.len(), 1000);
    }
}
