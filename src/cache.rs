//! Least-recently-used maps bounded by the bytes their entries hold: every cache of
//! registryfs is one of these, so that no store content (a 4 MiB config, a folder of
//! 100k names) can make memory or a cache folder grow past a known figure
//! (`registryfs mount --help` lists them).

use lru::LruCache;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

    /// Drops the entries whose value `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool)
    where
        K: Clone,
    {
        let gone: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, (value, _))| !keep(value))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
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

    pub fn remove(&self, key: &K) -> Option<V> {
        self.lock().remove(key)
    }

    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.lock().max_bytes()).unwrap_or(usize::MAX)
    }

    /// The bytes held now.
    pub fn bytes(&self) -> usize {
        usize::try_from(self.lock().bytes()).unwrap_or(usize::MAX)
    }
}

/// Answers about something that changes (a store's links, listings and small files):
/// each kept for a lifetime, and forgotten when a change is seen (all of them, or
/// those read before some time).
///
/// An answer read before a change and kept after its forget would outlive the change
/// (for a whole lifetime, a minute on a watched mount), so a read notes when it
/// started ([`FreshLru::start_read`]) and [`FreshLru::keep`] checks, under the lock a
/// forget also takes, that it started after every forget's cutoff.
pub struct FreshLru<K: Hash + Eq, V> {
    /// Nanoseconds; 0: nothing is kept.
    lifetime_ns: AtomicU64,
    state: Mutex<Kept<K, V>>,
}

struct Kept<K: Hash + Eq, V> {
    /// By the time their read started.
    entries: WeighedLru<K, (Instant, V)>,
    /// Reads started before this are not kept (the latest forget's).
    cutoff: Option<Instant>,
}

/// When a read of a [`FreshLru`]'s answer started.
#[derive(Clone, Copy, Debug)]
pub struct ReadStart(Instant);

impl<K: Hash + Eq + Clone, V: Clone> FreshLru<K, V> {
    pub fn new(max_bytes: u64, lifetime: Duration) -> Self {
        FreshLru {
            lifetime_ns: AtomicU64::new(nanos(lifetime)),
            state: Mutex::new(Kept {
                entries: WeighedLru::new(max_bytes),
                cutoff: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept<K, V>> {
        // Nothing in here is left half-changed by a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps answers for `lifetime` from now on (zero: none), forgetting those kept.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ns.store(nanos(lifetime), Ordering::Release);
        self.forget();
    }

    pub fn is_off(&self) -> bool {
        self.lifetime_ns.load(Ordering::Acquire) == 0
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_nanos(self.lifetime_ns.load(Ordering::Acquire))
    }

    /// The answer kept for `key` if it is younger than the lifetime.
    pub fn young(&self, key: &K) -> Option<V> {
        let lifetime = self.lifetime();
        let mut kept = self.lock();
        match kept.entries.get(key) {
            Some((at, value)) if at.elapsed() < lifetime => Some(value.clone()),
            Some(_) => {
                kept.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// To be called before the store is read for an answer to [`FreshLru::keep`].
    pub fn start_read(&self) -> ReadStart {
        ReadStart(Instant::now())
    }

    /// Keeps an answer read since `start`, weighing `bytes`, unless a forget since
    /// covers it; its age counts from `start`.
    pub fn keep(&self, start: ReadStart, key: K, value: V, bytes: u64) {
        if self.is_off() {
            return;
        }
        let gone = {
            let mut kept = self.lock();
            if kept.cutoff.is_some_and(|cutoff| start.0 < cutoff) {
                return;
            }
            kept.entries.put(key, (start.0, value), bytes)
        };
        // What leaves is dropped after the lock is let go.
        drop(gone);
    }

    /// Forgets every answer (the store changed).
    pub fn forget(&self) {
        self.forget_older_than(Duration::ZERO);
    }

    /// Forgets the answers whose read started more than `age` ago, and keeps none such
    /// from reads still running.
    pub fn forget_older_than(&self, age: Duration) {
        let now = Instant::now();
        let cutoff = now.checked_sub(age).unwrap_or(now);
        let mut kept = self.lock();
        kept.cutoff = Some(kept.cutoff.map_or(cutoff, |c| c.max(cutoff)));
        if age.is_zero() {
            kept.entries.clear();
        } else {
            kept.entries.retain(|(at, _)| *at >= cutoff);
        }
    }

    /// The bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().entries.bytes()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

    #[test]
    fn fresh_answers_are_kept_for_their_lifetime_until_a_forget() {
        let cache = FreshLru::new(100, Duration::from_secs(60));
        let start = cache.start_read();
        cache.keep(start, "a", 1, 10);
        assert_eq!(cache.young(&"a"), Some(1));
        cache.forget();
        assert_eq!((cache.young(&"a"), cache.bytes()), (None, 0));
        cache.set_lifetime(Duration::from_nanos(1));
        cache.keep(cache.start_read(), "b", 2, 10);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.young(&"b"), None, "expired");
        assert_eq!(cache.bytes(), 0, "and dropped");
        cache.set_lifetime(Duration::ZERO);
        cache.keep(cache.start_read(), "c", 3, 10);
        assert_eq!(cache.young(&"c"), None, "off: nothing kept");
    }

    #[test]
    fn an_answer_read_across_a_forget_is_never_kept() {
        let cache = FreshLru::new(100, Duration::from_secs(60));
        // The interleaving that once kept a tag's old link for a minute: the read
        // started, the store changed and the cache was forgotten, then the old answer
        // came back to be kept.
        let start = cache.start_read();
        cache.forget();
        cache.keep(start, "link", "old", 10);
        assert_eq!(cache.young(&"link"), None);
        // The same race from many threads: a keep that overlaps a forget never leaves
        // an answer from before it.
        let cache = std::sync::Arc::new(FreshLru::new(1 << 20, Duration::from_secs(60)));
        for round in 0..200u32 {
            let start = cache.start_read();
            let keeper = {
                let cache = cache.clone();
                std::thread::spawn(move || cache.keep(start, "link", round, 10))
            };
            cache.forget();
            keeper.join().expect("keeper thread");
            let after = cache.start_read();
            cache.keep(after, "other", round, 10);
            // Either the keep came first (and the forget cleared it) or it saw the forget.
            assert_eq!(cache.young(&"link"), None, "round {round}");
        }
    }

    #[test]
    fn a_partial_forget_drops_only_what_was_read_before_its_cutoff() {
        let cache = FreshLru::new(100, Duration::from_secs(60));
        let early = cache.start_read();
        cache.keep(early, "old", 1, 10);
        std::thread::sleep(Duration::from_millis(40));
        let late = cache.start_read();
        cache.keep(late, "new", 2, 10);
        cache.forget_older_than(Duration::from_millis(20));
        assert_eq!((cache.young(&"old"), cache.young(&"new")), (None, Some(2)));
        assert_eq!(cache.bytes(), 10);
        // A read still running that started before the cutoff is not kept either.
        cache.keep(early, "slow", 3, 10);
        assert_eq!(cache.young(&"slow"), None);
        cache.keep(late, "quick", 4, 10);
        assert_eq!(cache.young(&"quick"), Some(4));
        // A later, shorter cutoff never moves it back.
        cache.forget_older_than(Duration::from_secs(3600));
        cache.keep(early, "slow", 3, 10);
        assert_eq!(cache.young(&"slow"), None);
    }
}
