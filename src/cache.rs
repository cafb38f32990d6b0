//! Least-recently-used maps bounded by the bytes their entries hold: every cache of
//! registryfs is one of these, so that no store content (a 4 MiB config, a folder of
//! 100k names) can make memory or a cache folder grow past a known figure
//! (`registryfs mount --help` lists them).

use lru::LruCache;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// The map itself, for one owner: entries weigh what their owner says they do, the
/// total never exceeds the bound, and what leaves is handed back (the S3 blob cache
/// deletes those files).
pub struct WeighedLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, u64)>,
    bytes: u64,
    max_bytes: u64,
}

impl<K: Hash + Eq, V> WeighedLru<K, V> {
    pub fn new(max_bytes: u64) -> Self {
        WeighedLru {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The entry, now the most recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Adds or replaces an entry weighing `bytes`, then evicts the least recently used
    /// until the total fits; returns what left (a replaced entry, evicted ones, or the
    /// new one itself if it alone is over the bound), for the caller to release.
    pub fn put(&mut self, key: K, value: V, bytes: u64) -> Vec<(K, V)> {
        let mut gone = Vec::new();
        if bytes > self.max_bytes {
            gone.push((key, value));
            return gone;
        }
        if let Some((old_key, (old, old_bytes))) = self.entries.push(key, (value, bytes)) {
            self.bytes -= old_bytes;
            gone.push((old_key, old));
        }
        self.bytes += bytes;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((k, (v, b))) => {
                    self.bytes -= b;
                    gone.push((k, v));
                }
                None => break,
            }
        }
        gone
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, bytes) = self.entries.pop(key)?;
        self.bytes -= bytes;
        Some(value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// A [`WeighedLru`] shared between threads, handing out clones.
pub struct ByteLru<K: Hash + Eq, V>(Mutex<WeighedLru<K, V>>);

impl<K: Hash + Eq, V: Clone> ByteLru<K, V> {
    pub fn new(max_bytes: usize) -> ByteLru<K, V> {
        ByteLru(Mutex::new(WeighedLru::new(max_bytes as u64)))
    }

    fn lock(&self) -> MutexGuard<'_, WeighedLru<K, V>> {
        // Nothing in here is left half-changed by a panic elsewhere.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    /// Keeps `value`, said to hold `bytes` with its key (not at all if that alone is
    /// over the bound), dropping the least recently used entries to make room.
    pub fn put(&self, key: K, value: V, bytes: usize) {
        // What leaves is dropped after the lock is let go.
        let gone = self.lock().put(key, value, bytes as u64);
        drop(gone);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.lock().max_bytes()).unwrap_or(usize::MAX)
    }

    /// The bytes held now.
    pub fn bytes(&self) -> usize {
        usize::try_from(self.lock().bytes()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes_least_recent_first() {
        let mut cache = WeighedLru::new(10);
        assert!(cache.put("a", 1, 4).is_empty());
        assert!(cache.put("b", 2, 4).is_empty());
        assert_eq!(cache.get("a"), Some(&1), "a is now the most recent");
        assert_eq!(
            cache.put("c", 3, 4),
            vec![("b", 2)],
            "the least recent went"
        );
        assert_eq!(cache.bytes(), 8);
        assert_eq!(cache.put("big", 9, 11), vec![("big", 9)], "over the bound");
        assert_eq!(cache.get("big"), None);
        assert_eq!(cache.put("a", 5, 2), vec![("a", 1)], "replaced");
        assert_eq!(cache.bytes(), 6);
        assert_eq!(cache.remove("c"), Some(3));
        assert_eq!(cache.bytes(), 2);
        cache.clear();
        assert_eq!((cache.bytes(), cache.get("a")), (0, None));
    }

    #[test]
    fn shared_stays_within_its_bytes() {
        let cache = ByteLru::new(100);
        for i in 0..10 {
            cache.put(i, i, 30);
            assert!(cache.bytes() <= 100, "{}", cache.bytes());
        }
        assert_eq!(cache.get(&9), Some(9));
        assert_eq!(cache.get(&0), None, "the oldest went first");
        cache.get(&7);
        cache.put(10, 10, 30);
        assert_eq!((cache.get(&7), cache.get(&8)), (Some(7), None));
        cache.put(11, 11, 101);
        assert_eq!(cache.get(&11), None, "over the bound alone: not kept");
        cache.clear();
        assert_eq!((cache.bytes(), cache.get(&7)), (0, None));
    }
}
