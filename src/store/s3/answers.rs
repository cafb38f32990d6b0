//! The bucket's answers about links and listings, held for a short time: a mount asks
//! the same few keys again and again (every request for a tag reads its link, every
//! folder lookup lists), and each question is a round trip to the server.
//!
//! An answer is kept for the lifetime the mount gives tag paths (`--tag-ttl`; the
//! kernel keeps its own answers as long), so a push shows through the mount within
//! about two lifetimes, and all answers go when the mount's change poll comes round
//! ([`Answers::clear`]). Errors are never kept: once the server answers again, so does
//! the mount. An answer fetched while [`Answers::clear`] ran is not kept either (it
//! may predate the change the clear is for). Bounded by bytes, least recently used
//! first.
//!
//! An answer that is given out is asked again in the background half a lifetime after
//! it was fetched ([`Refresher`]), once per answer given, so a tag in use never
//! expires under its readers. The kernel asks about a name once per lifetime, just as
//! the answer it got would expire; without this every such lookup would wait for the
//! bucket, and a web server reads files synchronously: a worker waiting for the bucket
//! holds up all its connections. An answer nobody asks for is refreshed once more and
//! then left to expire, and no answer is ever given older than the lifetime.

use crate::cache::{FreshLru, ReadStart};
use crate::error::Result;
use crate::metrics::{Answer, METRICS};
use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Memory for answers: thousands of links and listings.
pub const ANSWER_CACHE_BYTES: u64 = 16 << 20;
/// What an entry costs besides its strings (the map's and the value's own fields).
const ENTRY_OVERHEAD: u64 = 128;

/// What is asked, and of which key or prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Question {
    /// A link object: its digest and time, or none.
    Link(String),
    /// HEAD of an object.
    Head(String),
    /// A delimited listing of a prefix, all pages.
    List(String),
    /// Whether any key starts with the prefix.
    HasPrefix(String),
    /// The newest time of any object below the prefix.
    Newest(String),
}

impl Question {
    fn bytes(&self) -> u64 {
        let (Question::Link(k)
        | Question::Head(k)
        | Question::List(k)
        | Question::HasPrefix(k)
        | Question::Newest(k)) = self;
        k.len() as u64
    }
}

/// A kept answer: of the type its question's variant is answered with.
type Kept = Arc<dyn Any + Send + Sync>;

pub struct Answers {
    entries: Arc<FreshLru<Question, Kept>>,
    /// None with a zero lifetime (nothing is kept, so nothing is refreshed).
    refresher: Option<Refresher>,
}

impl Answers {
    /// Answers kept for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Answers {
        let entries = Arc::new(FreshLru::new(ANSWER_CACHE_BYTES, ttl));
        let refresher = (!ttl.is_zero()).then(|| Refresher::start(entries.clone()));
        Answers { entries, refresher }
    }

    /// The kept answer to `question` if it is young enough, else `fetch`'s (kept if it
    /// is not an error). For answers that are small whatever they say.
    pub fn get_or<T, F>(&self, question: Question, fetch: F) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn() -> Result<T> + Clone + Send + 'static,
    {
        self.get_or_weighed(question, fetch, |_| 0)
    }

    /// [`Answers::get_or`], with `weigh` saying how many bytes an answer holds.
    /// `fetch` also runs later on a refresher thread (see the module's text).
    pub fn get_or_weighed<T, F>(
        &self,
        question: Question,
        fetch: F,
        weigh: fn(&T) -> u64,
    ) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn() -> Result<T> + Clone + Send + 'static,
    {
        if self.entries.is_off() {
            return fetch();
        }
        let half_life = self.entries.lifetime() / 2;
        // (Never of another type: each question's variant has one answer type.)
        if let Some((kept, age)) = self.entries.young_aged(&question) {
            if let Some(answer) = kept.downcast_ref::<T>().cloned() {
                METRICS.s3_answers.inc(Answer::Hit);
                self.refresh(question, fetch, weigh, half_life.saturating_sub(age));
                return Ok(answer);
            }
        }
        METRICS.s3_answers.inc(Answer::Miss);
        let start = self.entries.start_read();
        let answer = fetch()?;
        keep(&self.entries, start, question.clone(), &answer, weigh);
        self.refresh(question, fetch, weigh, half_life);
        Ok(answer)
    }

    fn refresh<T, F>(&self, question: Question, fetch: F, weigh: fn(&T) -> u64, after: Duration)
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        if let Some(refresher) = &self.refresher {
            refresher.schedule(question, fetch, weigh, after);
        }
    }

    /// Forgets every answer (the store may have changed).
    pub fn clear(&self) {
        self.entries.forget();
    }
}

fn keep<T: Clone + Send + Sync + 'static>(
    entries: &FreshLru<Question, Kept>,
    start: ReadStart,
    question: Question,
    answer: &T,
    weigh: fn(&T) -> u64,
) {
    let bytes = ENTRY_OVERHEAD + question.bytes() + weigh(answer);
    let kept: Kept = Arc::new(answer.clone());
    entries.keep(start, question, kept, bytes);
}

/// Threads that ask questions again when they come due, one request per question at
/// a time. A question is not scheduled twice, nor past [`MAX_SCHEDULED`]; a refresh
/// that fails or runs late leaves the answer to expire, and the next reader asks, as
/// without a refresher.
struct Refresher {
    shared: Arc<Schedule>,
}

struct Schedule {
    entries: Arc<FreshLru<Question, Kept>>,
    state: Mutex<Due>,
    changed: Condvar,
}

#[derive(Default)]
struct Due {
    /// Earliest first.
    heap: BinaryHeap<Reverse<Timed>>,
    /// Questions scheduled or being asked.
    asking: HashSet<Question>,
    /// Ties in `heap` by order of scheduling.
    next_seq: u64,
    closed: bool,
}

struct Timed {
    at: Instant,
    seq: u64,
    question: Question,
    job: Box<dyn FnOnce() + Send>,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Background requests at once: a few round trips at a time keep a busy mount's
/// answers young; more would compete with the readers' own requests.
const REFRESH_THREADS: usize = 4;
/// Questions waiting for their time: thousands of tags in use.
const MAX_SCHEDULED: usize = 16 * 1024;

impl Schedule {
    fn lock(&self) -> MutexGuard<'_, Due> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs due jobs until the refresher is dropped.
    fn work(&self) {
        let mut due = self.lock();
        loop {
            if due.closed {
                return;
            }
            let wait = match due.heap.peek() {
                Some(Reverse(next)) => next.at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if !wait.is_zero() {
                due = match self.changed.wait_timeout(due, wait) {
                    Ok((due, _)) => due,
                    Err(p) => p.into_inner().0,
                };
                continue;
            }
            let Some(Reverse(timed)) = due.heap.pop() else {
                continue;
            };
            drop(due);
            (timed.job)();
            due = self.lock();
            due.asking.remove(&timed.question);
        }
    }
}

impl Refresher {
    fn start(entries: Arc<FreshLru<Question, Kept>>) -> Refresher {
        let shared = Arc::new(Schedule {
            entries,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        for i in 0..REFRESH_THREADS {
            let schedule = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("registryfs-s3-refresh-{i}"))
                .spawn(move || schedule.work());
            if let Err(e) = spawned {
                log::warn!("no S3 refresher thread ({e}); answers expire under their readers");
            }
        }
        Refresher { shared }
    }

    /// Asks `question` again `after` from now, unless it is scheduled or being asked.
    fn schedule<T, F>(&self, question: Question, fetch: F, weigh: fn(&T) -> u64, after: Duration)
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let mut due = self.shared.lock();
        if due.asking.len() >= MAX_SCHEDULED || !due.asking.insert(question.clone()) {
            return;
        }
        let entries = self.shared.entries.clone();
        let asked = question.clone();
        let job = Box::new(move || {
            let start = entries.start_read();
            match fetch() {
                Ok(answer) => {
                    METRICS.s3_answers.inc(Answer::Refreshed);
                    keep(&entries, start, asked, &answer, weigh);
                }
                // The kept answer expires; the next reader asks and sees the error.
                Err(e) => log::debug!("asking {asked:?} again: {e}"),
            }
        });
        let seq = due.next_seq;
        due.next_seq += 1;
        due.heap.push(Reverse(Timed {
            at: Instant::now() + after,
            seq,
            question,
            job,
        }));
        drop(due);
        self.shared.changed.notify_one();
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// Counts the times the server was asked.
    #[derive(Clone, Default)]
    struct Server(Arc<AtomicU32>);

    impl Server {
        fn asked(&self) -> u32 {
            self.0.load(Ordering::SeqCst)
        }

        /// A fetch that answers how many times it has been asked, this time included.
        fn count(&self) -> impl Fn() -> Result<u32> + Clone + Send + 'static {
            let calls = self.0.clone();
            move || Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    fn ask(answers: &Answers, server: &Server, q: &str) -> u32 {
        answers
            .get_or(Question::HasPrefix(q.into()), server.count())
            .expect("answer")
    }

    #[test]
    fn kept_for_the_lifetime_until_cleared() {
        let answers = Answers::new(Duration::from_secs(60));
        let server = Server::default();
        assert_eq!(ask(&answers, &server, "a/"), 1);
        assert_eq!(ask(&answers, &server, "a/"), 1, "the second from memory");
        ask(&answers, &server, "b/");
        assert_eq!(server.asked(), 2, "another prefix is another question");
        answers.clear();
        ask(&answers, &server, "a/");
        assert_eq!(server.asked(), 3, "asked again after a clear");
    }

    #[test]
    fn errors_and_answers_across_a_clear_are_not_kept() {
        let answers = Arc::new(Answers::new(Duration::from_secs(60)));
        let q = || Question::Link("k".into());
        let failed = answers.get_or(q(), || Err::<u32, _>(Error::NotFound("down".into())));
        assert!(failed.is_err());
        let server = Server::default();
        answers.get_or(q(), server.count()).expect("answer");
        assert_eq!(server.asked(), 1, "the error was not kept");
        let clearing = answers.clone();
        let across = answers.get_or(Question::Head("h".into()), move || {
            clearing.clear();
            Ok(0u32)
        });
        assert!(across.is_ok());
        answers
            .get_or(Question::Head("h".into()), server.count())
            .expect("answer");
        assert_eq!(server.asked(), 2, "fetched across a clear: not kept");
    }

    #[test]
    fn zero_lifetime_keeps_nothing_and_old_answers_expire() {
        let server = Server::default();
        let none = Answers::new(Duration::ZERO);
        ask(&none, &server, "a/");
        ask(&none, &server, "a/");
        assert_eq!(server.asked(), 2);
        let short = Answers::new(Duration::from_millis(20));
        ask(&short, &server, "a/");
        // Refreshed once (after 10 ms), then left to expire.
        std::thread::sleep(Duration::from_millis(60));
        let given = ask(&short, &server, "a/");
        assert!(given > 3, "expired: asked, not given the old one");
        assert_eq!(given, server.asked(), "the newest answer");
    }

    /// Polls until the server was asked `n` times (or a few seconds passed).
    fn wait_asked(server: &Server, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.asked() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn an_answer_given_is_asked_again_before_it_expires_once() {
        let lifetime = Duration::from_millis(600);
        let answers = Answers::new(lifetime);
        let server = Server::default();
        let first = Instant::now();
        assert_eq!(ask(&answers, &server, "a/"), 1);
        // Half a lifetime later it is asked again in the background...
        wait_asked(&server, 2);
        assert_eq!(server.asked(), 2, "refreshed");
        // ...so the kernel's next question, a lifetime later, finds a young answer.
        let next = first + lifetime;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let given = ask(&answers, &server, "a/");
        if first.elapsed() < lifetime * 3 / 2 {
            assert_eq!(given, 2, "the refreshed answer, from memory");
        }
        // Given once more, refreshed once more; then, unused, it is left to expire.
        wait_asked(&server, 3);
        std::thread::sleep(lifetime * 2);
        assert_eq!(
            server.asked(),
            3,
            "no refresh of an answer nobody asked for"
        );
        assert_eq!(
            ask(&answers, &server, "a/"),
            4,
            "expired: asked, never older than the lifetime"
        );
    }
}
