//! A least-recently-used map bounded by the bytes its entries hold: every cache of
//! registryfs is one of these, so that no store content (a 4 MiB config, a folder of
//! 100k names) can make memory grow past a known figure (`registryfs mount --help`
//! lists them).

use lru::LruCache;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

pub struct ByteLru<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    max_bytes: usize,
}

struct Inner<K: Hash + Eq, V> {
    lru: LruCache<K, (V, usize)>,
    bytes: usize,
}

impl<K: Hash + Eq, V: Clone> ByteLru<K, V> {
    pub fn new(max_bytes: usize) -> ByteLru<K, V> {
        ByteLru {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // Nothing in here is left half-changed by a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().lru.get(key).map(|(v, _)| v.clone())
    }

    /// Keeps `value`, said to hold `bytes` (with its key), dropping the least recently
    /// used entries while the total is over the bound. The newest entry stays even when
    /// it alone is over it (until the next one comes); callers that must not keep such
    /// an entry check [`ByteLru::max_bytes`] first.
    pub fn put(&self, key: K, value: V, bytes: usize) {
        let mut inner = self.lock();
        if let Some((_, (_, old))) = inner.lru.push(key, (value, bytes)) {
            inner.bytes -= old;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes && inner.lru.len() > 1 {
            match inner.lru.pop_lru() {
                Some((_, (_, old))) => inner.bytes -= old,
                None => break,
            }
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bytes_dropping_the_least_recently_used() {
        let cache = ByteLru::new(100);
        for i in 0..10 {
            cache.put(i, i, 30);
            assert!(cache.bytes() <= 100, "{}", cache.bytes());
        }
        assert_eq!(cache.get(&9), Some(9));
        assert_eq!(cache.get(&0), None, "the oldest went first");
        // Used recently: kept over newer ones.
        cache.get(&7);
        cache.put(10, 10, 30);
        assert_eq!(cache.get(&7), Some(7));
        assert_eq!(cache.get(&8), None);
        // Replacing an entry counts its bytes once.
        cache.put(10, 11, 40);
        assert_eq!(cache.get(&10), Some(11));
        assert!(cache.bytes() <= 100);
    }

    #[test]
    fn an_entry_over_the_bound_stays_alone_until_the_next() {
        let cache = ByteLru::new(100);
        cache.put("a", 1, 10);
        cache.put("big", 2, 500);
        assert_eq!((cache.get(&"a"), cache.get(&"big")), (None, Some(2)));
        assert_eq!(cache.bytes(), 500);
        cache.put("b", 3, 10);
        assert_eq!((cache.get(&"big"), cache.get(&"b")), (None, Some(3)));
        cache.clear();
        assert_eq!((cache.bytes(), cache.get(&"b")), (0, None));
    }
}
