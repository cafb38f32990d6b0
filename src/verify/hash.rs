//! Hashing every blob's data on a bounded pool of threads: each takes the next file
//! (largest first, so no thread is left with a big one at the end) until none is left.

use super::report::{Finding, Problem};
use crate::digest::Digest;
use crate::store::{BlobFile, Store};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How far hashing has got, for a progress display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub files_done: u64,
    pub files: u64,
    pub bytes_done: u64,
    pub bytes: u64,
}

/// Hashes `blobs` on `threads` threads; returns a finding for each whose data does not
/// hash to its digest or cannot be read. `progress` is called now and then from the
/// calling thread while the others hash, and once at the end.
pub fn hash_blobs(
    store: &dyn Store,
    blobs: &[(Digest, BlobFile)],
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> Vec<Finding> {
    let mut order: Vec<&(Digest, BlobFile)> = blobs.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse(b.1.len));
    let next = AtomicUsize::new(0);
    let files_done = AtomicU64::new(0);
    let bytes_done = AtomicU64::new(0);
    let findings = Mutex::new(Vec::new());
    let total = Progress {
        files: order.len() as u64,
        bytes: order.iter().map(|b| b.1.len).sum(),
        ..Progress::default()
    };
    let snapshot = || Progress {
        files_done: files_done.load(Ordering::Relaxed),
        bytes_done: bytes_done.load(Ordering::Relaxed),
        ..total
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, order.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    while let Some((digest, file)) = order.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        if let Some(finding) = check(store, digest, file) {
                            if let Ok(mut found) = findings.lock() {
                                found.push(finding);
                            }
                        }
                        files_done.fetch_add(1, Ordering::Relaxed);
                        bytes_done.fetch_add(file.len, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            progress(snapshot());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    progress(snapshot());
    findings.into_inner().unwrap_or_default()
}

/// A finding if `file` does not hold `digest`'s bytes.
fn check(store: &dyn Store, digest: &Digest, file: &BlobFile) -> Option<Finding> {
    let bad = |detail: String| {
        Some(Finding {
            problem: Problem::BadBlob,
            repository: None,
            subject: format!("blob {digest}"),
            detail,
        })
    };
    let opened = match store.open_blob(file) {
        Ok(Some(opened)) => opened,
        // Deleted since it was listed (a garbage collection running meanwhile).
        Ok(None) => return None,
        Err(e) => return bad(e.to_string()),
    };
    let opened = match opened {
        crate::store::BlobReader::File(opened) => opened,
        // A remote store checks the bytes against the digest as they arrive.
        crate::store::BlobReader::Streaming(stream) => {
            return stream
                .verified()
                .err()
                .and_then(|e| bad(format!("{}: {e}", file.path.display())));
        }
    };
    match crate::digest::sha256_of_file(&opened, &file.path) {
        Ok(actual) if actual == *digest => None,
        Ok(actual) => bad(format!(
            "{}: data hashes to {actual}, not {digest}",
            file.path.display()
        )),
        Err(e) => bad(e.to_string()),
    }
}
