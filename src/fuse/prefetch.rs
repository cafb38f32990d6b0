//! Folders answered ahead of a walk.
//!
//! A walk (`find`, `ls -R`, `rsync`, `du`) reads a folder, then each of its subfolders
//! in listing order, and waits for every answer: while the daemon makes one, the
//! walker and the kernel wait, and while they work the daemon waits. So when the
//! adapter has to make a folder's listing itself (a miss here), a worker thread makes
//! the listings of the folders below it, with their names' lookups, depth first in
//! listing order (the order a walk goes), on the CPU the walk leaves idle. The adapter
//! takes a made folder instead of making it again; while the worker is making the
//! folder asked for, the adapter waits for it rather than making it twice.
//!
//! A made folder is only taken while nothing changed in the store since the worker
//! began it (the change epoch) and while it is young: it is an answer the adapter would
//! have given a moment earlier. It is taken once; what is not taken in time goes.

use super::changes::ChangeEpoch;
use crate::namespace::{child_path, DirEntry, Node, TimedNode};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Folders with more names are not made ahead: a folder of 100k repositories is listed
/// once, and its names' lookups would be a walk of their own.
pub const MAX_ENTRIES: usize = 64;
/// Folders made for one folder the adapter made (a repository has about eight).
const MAX_FOLDERS_PER_JOB: usize = 32;
/// Made folders not yet taken.
const MAX_READY: usize = 256;
/// How old a made folder may be when it is taken.
const MAX_AGE: Duration = Duration::from_millis(200);
/// How long the adapter waits for a folder the worker is making.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Jobs waiting for the worker; more are dropped (the walk is ahead of it anyway).
const MAX_JOBS: usize = 4;

/// A folder's listing and what each name's lookup found: `None` where it found nothing
/// or failed (the adapter looks that name up itself, and reports the error).
pub struct Made {
    pub entries: Vec<DirEntry>,
    pub found: Vec<Option<(TimedNode, bool)>>,
}

/// Makes a folder at a path, or None (gone, too big, or an error the adapter will meet
/// itself).
pub type MakeFolder = dyn Fn(&str) -> Option<Made> + Send + Sync;

struct Kept {
    made: Made,
    epoch: u64,
    at: Instant,
}

#[derive(Default)]
struct State {
    ready: HashMap<String, Kept>,
    /// Paths in the order they were made, to drop the oldest past [`MAX_READY`].
    order: VecDeque<String>,
    /// The folder the worker is making now.
    making: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    made: Condvar,
    epoch: Arc<ChangeEpoch>,
    make: Box<MakeFolder>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Prefetch {
    shared: Arc<Shared>,
    /// Started by the first job, on a FUSE thread: it inherits their blocked signals.
    jobs: OnceLock<SyncSender<Vec<String>>>,
}

impl Prefetch {
    pub fn new(epoch: Arc<ChangeEpoch>, make: Box<MakeFolder>) -> Prefetch {
        Prefetch {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                made: Condvar::new(),
                epoch,
                make,
            }),
            jobs: OnceLock::new(),
        }
    }

    /// The made folder at `path`, if one is ready (or being made) and still current.
    pub fn take(&self, path: &str) -> Option<Made> {
        let deadline = Instant::now() + MAX_WAIT;
        let mut state = self.shared.lock();
        while state.making.as_deref() == Some(path) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = match self.shared.made.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
        let kept = state.ready.remove(path)?;
        drop(state);
        (kept.epoch == self.shared.epoch.now() && kept.at.elapsed() <= MAX_AGE).then_some(kept.made)
    }

    /// The adapter made a folder itself: make the folders below it (`subfolders`, in
    /// listing order) ahead of the walk.
    pub fn below(&self, subfolders: Vec<String>) {
        if subfolders.is_empty() {
            return;
        }
        let jobs = self.jobs.get_or_init(|| self.start());
        match jobs.try_send(subfolders) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => log::debug!("the prefetch worker is gone"),
        }
    }

    fn start(&self) -> SyncSender<Vec<String>> {
        let (jobs, receiver) = sync_channel(MAX_JOBS);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || work(&shared, &receiver));
        if let Err(e) = spawned {
            // Without it every folder is made when asked for, as without prefetching.
            log::warn!("no prefetch worker: {e}");
        }
        jobs
    }
}

/// The worker: each job's folders and the folders below them, depth first in listing
/// order, until the job's budget is spent. It ends when the adapter is gone.
fn work(shared: &Shared, jobs: &Receiver<Vec<String>>) {
    while let Ok(subfolders) = jobs.recv() {
        let mut stack: Vec<String> = subfolders.into_iter().rev().collect();
        let mut budget = MAX_FOLDERS_PER_JOB;
        while let Some(path) = stack.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            {
                let mut state = shared.lock();
                if state.ready.contains_key(&path) {
                    continue;
                }
                state.making = Some(path.clone());
            }
            let epoch = shared.epoch.now();
            let mut unwinding = Unwinding(Some(shared));
            let made = (shared.make)(&path);
            unwinding.0 = None;
            let mut state = shared.lock();
            state.making = None;
            if let Some(made) = made {
                let below = made.entries.iter().zip(&made.found).rev();
                for (entry, found) in below {
                    if let Some((node, _)) = found {
                        if matches!(node.node, Node::Dir) {
                            stack.push(child_path(&path, &entry.name));
                        }
                    }
                }
                keep(&mut state, path, made, epoch);
            }
            drop(state);
            shared.made.notify_all();
        }
    }
}

/// Clears [`State::making`] and wakes the adapter if making a folder unwinds: no request
/// waits for a folder that will never come. (A folder made is published, and `making`
/// cleared, under one lock.)
struct Unwinding<'a>(Option<&'a Shared>);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.lock().making = None;
            shared.made.notify_all();
        }
    }
}

/// Keeps a made folder, dropping the oldest made past [`MAX_READY`]. The order is
/// bounded itself, not only the folders still there: in a walk every made folder is
/// taken, and an order trimmed only when `ready` is full would grow by one path per
/// folder made.
fn keep(state: &mut State, path: String, made: Made, epoch: u64) {
    while state.order.len() >= MAX_READY {
        if let Some(old) = state.order.pop_front() {
            state.ready.remove(&old);
        }
    }
    state.order.push_back(path.clone());
    state.ready.insert(
        path,
        Kept {
            made,
            epoch,
            at: Instant::now(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// A tree where every folder `p` holds folders `p/a` and `p/b` down to depth 3,
    /// counting the folders made.
    fn tree(made: Arc<AtomicUsize>) -> Box<MakeFolder> {
        Box::new(move |path: &str| {
            made.fetch_add(1, Ordering::SeqCst);
            let depth = path.split('/').count();
            let names: Vec<&str> = if depth < 3 { vec!["a", "b"] } else { vec![] };
            let entries: Vec<DirEntry> = names
                .iter()
                .map(|n| DirEntry {
                    name: n.to_string(),
                    is_dir: true,
                })
                .collect();
            let found = names
                .iter()
                .map(|_| {
                    Some((
                        TimedNode {
                            node: Node::Dir,
                            mtime: SystemTime::UNIX_EPOCH,
                        },
                        false,
                    ))
                })
                .collect();
            Some(Made { entries, found })
        })
    }

    fn wait_for(prefetch: &Prefetch, path: &str) -> Option<Made> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(made) = prefetch.take(path) {
                return Some(made);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_folders_below_are_made_depth_first_and_taken_once() {
        let count = Arc::new(AtomicUsize::new(0));
        let epoch = Arc::new(ChangeEpoch::default());
        let prefetch = Prefetch::new(epoch, tree(count.clone()));
        prefetch.below(vec!["r/a".into(), "r/b".into()]);
        let made = wait_for(&prefetch, "r/b/b").expect("the last folder is made");
        assert_eq!(made.entries.len(), 0);
        // r/a, r/a/a, r/a/b, r/b, r/b/a, r/b/b: six folders below r, each made once.
        assert!(prefetch.take("r/a").is_some());
        assert!(prefetch.take("r/a").is_none(), "taken once");
        assert_eq!(count.load(Ordering::SeqCst), 6);
        assert!(
            prefetch.take("r").is_none(),
            "the folder asked for is not made"
        );
    }

    #[test]
    fn a_change_in_the_store_since_it_was_made_discards_it() {
        let count = Arc::new(AtomicUsize::new(0));
        let epoch = Arc::new(ChangeEpoch::default());
        let prefetch = Prefetch::new(epoch.clone(), tree(count.clone()));
        prefetch.below(vec!["r/a".into()]);
        wait_for(&prefetch, "r/a/b").expect("made");
        epoch.advance();
        assert!(prefetch.take("r/a/a").is_none(), "made before the change");
    }

    #[test]
    fn a_folder_whose_making_panics_is_not_waited_for() {
        let called = Arc::new(AtomicUsize::new(0));
        let seen = called.clone();
        let prefetch = Prefetch::new(
            Arc::new(ChangeEpoch::default()),
            Box::new(move |_: &str| {
                seen.fetch_add(1, Ordering::SeqCst);
                panic!("a bug in making a folder");
            }),
        );
        prefetch.below(vec!["r/a".into()]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while called.load(Ordering::SeqCst) == 0 || prefetch.shared.lock().making.is_some() {
            assert!(Instant::now() < deadline, "still marked as being made");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(prefetch.take("r/a").is_none());
    }

    #[test]
    fn made_folders_are_bounded() {
        let mut state = State::default();
        let empty = || Made {
            entries: Vec::new(),
            found: Vec::new(),
        };
        for i in 0..MAX_READY * 2 {
            keep(&mut state, format!("f{i}"), empty(), 0);
        }
        assert_eq!(state.ready.len(), MAX_READY);
        assert!(state.ready.contains_key(&format!("f{}", MAX_READY * 2 - 1)));
        assert!(!state.ready.contains_key("f0"), "the oldest went first");
    }

    #[test]
    fn folders_taken_as_made_leave_nothing_behind() {
        let mut state = State::default();
        for i in 0..MAX_READY * 4 {
            let made = Made {
                entries: Vec::new(),
                found: Vec::new(),
            };
            keep(&mut state, format!("f{i}"), made, 0);
            state.ready.remove(&format!("f{i}"));
        }
        assert!(
            state.order.len() <= MAX_READY,
            "{} paths",
            state.order.len()
        );
    }
}
