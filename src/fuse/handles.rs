//! Open file and folder handles, and the passthrough rule "one backing id per inode while
//! any handle is open". Generic over the backing type so it is unit-tested without a
//! kernel (the mount uses fuser's `BackingId`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// fh → handle state. Numbers are never reused within a mount.
pub struct Handles<T> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<T>>>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            next: AtomicU64::new(1),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Handles<T> {
    pub fn insert(&self, value: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.map).insert(fh, Arc::new(value));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<T>> {
        lock(&self.map).get(&fh).cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        lock(&self.map).remove(&fh)
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How one open of a blob is served.
#[derive(Debug)]
pub enum OpenMode<B> {
    /// The kernel reads the backing file itself; the handle keeps the id alive.
    Passthrough(Arc<B>),
    /// Reads come to the daemon (pread on the blob file).
    Cached,
}

#[derive(Default)]
struct PerInode<B> {
    backing: Weak<B>,
    cached_opens: usize,
}

/// The kernel requires all handles open on an inode to use the same backing file, and
/// refuses to mix passthrough and cached handles on one inode (the open fails with EIO).
/// So: reuse the live backing id; if cached handles are open, stay cached; otherwise
/// register a new id, and fall back to cached reads if that fails (not root, kernel
/// without passthrough, backing file on a stacked filesystem...).
pub struct BackingShare<B> {
    by_ino: Mutex<HashMap<u64, PerInode<B>>>,
}

impl<B> Default for BackingShare<B> {
    fn default() -> Self {
        BackingShare {
            by_ino: Mutex::new(HashMap::new()),
        }
    }
}

impl<B> BackingShare<B> {
    /// Decides how to open `ino`. `register` is only called when no handle is open on
    /// it; its error comes back so the caller can log why passthrough was not used.
    pub fn open<E>(
        &self,
        ino: u64,
        register: impl FnOnce() -> Result<B, E>,
    ) -> (OpenMode<B>, Option<E>) {
        let mut map = lock(&self.by_ino);
        let state = map.entry(ino).or_insert_with(|| PerInode {
            backing: Weak::new(),
            cached_opens: 0,
        });
        if let Some(backing) = state.backing.upgrade() {
            return (OpenMode::Passthrough(backing), None);
        }
        if state.cached_opens == 0 {
            match register() {
                Ok(backing) => {
                    let backing = Arc::new(backing);
                    state.backing = Arc::downgrade(&backing);
                    return (OpenMode::Passthrough(backing), None);
                }
                Err(e) => {
                    state.cached_opens += 1;
                    return (OpenMode::Cached, Some(e));
                }
            }
        }
        state.cached_opens += 1;
        (OpenMode::Cached, None)
    }

    /// A handle opened by [`open`](Self::open) was released. Dropping the last strong
    /// reference closes the backing id (fuser's `BackingId` does so on drop).
    pub fn release(&self, ino: u64, mode: OpenMode<B>) {
        let mut map = lock(&self.by_ino);
        let Some(state) = map.get_mut(&ino) else {
            return;
        };
        match mode {
            OpenMode::Passthrough(backing) => drop(backing),
            OpenMode::Cached => state.cached_opens = state.cached_opens.saturating_sub(1),
        }
        if state.cached_opens == 0 && state.backing.strong_count() == 0 {
            map.remove(&ino);
        }
    }

    /// Inodes with open handles (for tests and debugging).
    pub fn tracked(&self) -> usize {
        lock(&self.by_ino).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn handle_numbers_are_unique() {
        let h = Handles::default();
        let a = h.insert("a");
        let b = h.insert("b");
        assert_ne!(a, b);
        assert_eq!(*h.get(a).unwrap(), "a");
        assert_eq!(*h.remove(a).unwrap(), "a");
        assert!(h.get(a).is_none());
        assert!(h.remove(a).is_none());
        assert!(h.insert("c") > b);
        assert_eq!(h.len(), 2);
    }

    /// A fake backing id that counts how many are open.
    struct Fake(Arc<AtomicUsize>);
    impl Drop for Fake {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn register(open: &Arc<AtomicUsize>) -> impl FnOnce() -> Result<Fake, String> + '_ {
        move || {
            open.fetch_add(1, Ordering::SeqCst);
            Ok(Fake(open.clone()))
        }
    }

    #[test]
    fn one_backing_id_per_inode_until_the_last_release() {
        let share = BackingShare::default();
        let open = Arc::new(AtomicUsize::new(0));
        let (a, _) = share.open(5, register(&open));
        let (b, _) = share.open(5, || -> Result<Fake, String> { panic!("must reuse") });
        assert_eq!(open.load(Ordering::SeqCst), 1);
        match (&a, &b) {
            (OpenMode::Passthrough(x), OpenMode::Passthrough(y)) => assert!(Arc::ptr_eq(x, y)),
            _ => panic!("both passthrough"),
        }
        // Another inode gets its own.
        let (c, _) = share.open(6, register(&open));
        assert_eq!(open.load(Ordering::SeqCst), 2);
        share.release(5, a);
        assert_eq!(open.load(Ordering::SeqCst), 2, "still open through b");
        share.release(5, b);
        assert_eq!(
            open.load(Ordering::SeqCst),
            1,
            "closed with the last handle"
        );
        share.release(6, c);
        assert_eq!(open.load(Ordering::SeqCst), 0);
        assert_eq!(share.tracked(), 0);
        // Reopening registers afresh.
        let (d, _) = share.open(5, register(&open));
        assert!(matches!(d, OpenMode::Passthrough(_)));
        assert_eq!(open.load(Ordering::SeqCst), 1);
        share.release(5, d);
    }

    #[test]
    fn failed_registration_falls_back_and_the_inode_stays_cached_while_open() {
        let share: BackingShare<Fake> = BackingShare::default();
        let open = Arc::new(AtomicUsize::new(0));
        let (a, err) = share.open(5, || Err("EPERM"));
        assert!(matches!(a, OpenMode::Cached));
        assert_eq!(err, Some("EPERM"));
        // While a cached handle is open, passthrough is not even tried: the kernel
        // would refuse to mix the two on one inode.
        let (b, err) = share.open(5, || -> Result<Fake, &str> { panic!("must not register") });
        assert!(matches!(b, OpenMode::Cached));
        assert_eq!(err, None);
        share.release(5, a);
        share.release(5, b);
        assert_eq!(share.tracked(), 0);
        let (c, _) = share.open(5, || -> Result<Fake, &str> { Ok(Fake(open.clone())) });
        assert!(matches!(c, OpenMode::Passthrough(_)));
        open.fetch_add(1, Ordering::SeqCst);
        share.release(5, c);
        assert_eq!(open.load(Ordering::SeqCst), 0);
    }
}
