//! A least-recently-used map bounded by the total weight (bytes) of its entries: the
//! one eviction rule of the S3 store's caches (documents and answers in memory, blobs
//! in the cache folder).

use lru::LruCache;
use std::borrow::Borrow;
use std::hash::Hash;

pub struct BytesLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, u64)>,
    bytes: u64,
    max_bytes: u64,
}

impl<K: Hash + Eq, V> BytesLru<K, V> {
    pub fn new(max_bytes: u64) -> Self {
        BytesLru {
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

    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes_least_recent_first() {
        let mut cache = BytesLru::new(10);
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
}
