//! The memory a mount may use, as `registryfs mount --help` states it: every cache is
//! a [`crate::cache::ByteLru`] with one of these bounds.

use super::fs::CONTENT_CACHE_BYTES;
use super::listings::LISTING_CACHE_BYTES;

fn mib(bytes: impl TryInto<u64>) -> String {
    format!("{} MiB", bytes.try_into().unwrap_or(u64::MAX) >> 20)
}

/// Hands the allocator's free pages back to the system. A folder of 100k names is
/// listed in 100k small allocations; once such a listing is let go its pages stay
/// resident (freed inside the heap, not at its top) until this: 6 MB after listing the
/// bench store's `bench/`. Called only then, as it walks the whole heap.
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The text after `registryfs mount --help`.
pub fn bounds_help() -> String {
    let rows = [
        (
            "schema1 documents".to_string(),
            "--schema1-cache-mib (default 2 MiB)".to_string(),
        ),
        (
            "generated files, between lookup and open".into(),
            mib(CONTENT_CACHE_BYTES),
        ),
        (
            "folder listings, between readdir pages".into(),
            mib(LISTING_CACHE_BYTES),
        ),
        (
            "store reads (local stores), for the tag lifetime".into(),
            mib(crate::store::STORE_READ_CACHE_BYTES),
        ),
        (
            "blobs already hashed (by file identity)".into(),
            mib(crate::namespace::VERIFIED_BLOBS_BYTES),
        ),
        (
            "store folder paths (fanotify)".into(),
            mib(crate::watch::FOLDER_PATH_CACHE_BYTES),
        ),
        (
            "S3 documents (blobs go to --cache-dir)".into(),
            mib(crate::store::S3_DOCUMENT_CACHE_BYTES),
        ),
        (
            "S3 links and listings, for the tag lifetime".into(),
            mib(crate::store::S3_ANSWER_CACHE_BYTES),
        ),
        (
            "S3 blob parts being downloaded".into(),
            mib(crate::store::S3_PART_BUDGET_BYTES),
        ),
    ];
    let mut text = String::from("Memory (each cache is bounded by bytes):\n");
    for (what, bound) in rows {
        text.push_str(&format!("  {what:<50} {bound}\n"));
    }
    text.push_str(
        "  and the inode table, which grows with the names the kernel holds (the kernel \
         forgets names it no longer needs; docs/performance.md)\n",
    );
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_bound_is_stated() {
        let help = super::bounds_help();
        for needle in ["--schema1-cache-mib", "2 MiB", "4 MiB", "16 MiB", "128 MiB"] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
