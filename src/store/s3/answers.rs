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
//! An answer asked for in the second half of its lifetime is given as it is and asked
//! again in the background ([`Refresher`]), so a tag in use never expires under its
//! readers: a web server reads files synchronously, and a worker waiting for the bucket
//! holds up all its connections. No answer is ever given older than the lifetime.

use crate::cache::{FreshLru, ReadStart};
use crate::error::Result;
use std::any::Any;
use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        self.get_or_weighed(question, fetch, |_| 0)
    }

    /// [`Answers::get_or`], with `weigh` saying how many bytes an answer holds.
    /// `fetch` may run later on a refresher thread (see the module's text).
    pub fn get_or_weighed<T, F>(
        &self,
        question: Question,
        fetch: F,
        weigh: fn(&T) -> u64,
    ) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        if self.entries.is_off() {
            return fetch();
        }
        // (Never of another type: each question's variant has one answer type.)
        if let Some((kept, age)) = self.entries.young_aged(&question) {
            if let Some(answer) = kept.downcast_ref::<T>().cloned() {
                if age >= self.entries.lifetime() / 2 {
                    if let Some(refresher) = &self.refresher {
                        refresher.ask_again(question, fetch, weigh);
                    }
                }
                return Ok(answer);
            }
        }
        let start = self.entries.start_read();
        let answer = fetch()?;
        keep(&self.entries, start, question, &answer, weigh);
        Ok(answer)
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

/// Threads that ask questions again before their answers expire, one request per
/// question at a time. When they are all busy a question is not queued: its answer
/// then expires and the next reader asks, as without a refresher.
struct Refresher {
    jobs: SyncSender<Job>,
    asking: Arc<Mutex<HashSet<Question>>>,
    entries: Arc<FreshLru<Question, Kept>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Concurrent background questions: a few round trips at a time is what keeps a busy
/// mount's tags young; more would compete with the readers' own requests.
const REFRESH_THREADS: usize = 2;
const REFRESH_QUEUE: usize = 64;

impl Refresher {
    fn start(entries: Arc<FreshLru<Question, Kept>>) -> Refresher {
        let (jobs, queue) = sync_channel::<Job>(REFRESH_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..REFRESH_THREADS {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("registryfs-s3-refresh-{i}"))
                .spawn(move || loop {
                    // The channel closes when the store is dropped.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                log::warn!("no S3 refresher thread ({e}); answers expire under their readers");
            }
        }
        Refresher {
            jobs,
            asking: Arc::default(),
            entries,
        }
    }

    fn ask_again<T, F>(&self, question: Question, fetch: F, weigh: fn(&T) -> u64)
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let Ok(mut asking) = self.asking.lock() else {
            return;
        };
        if !asking.insert(question.clone()) {
            return;
        }
        drop(asking);
        let (entries, asking) = (self.entries.clone(), self.asking.clone());
        let asked = question.clone();
        let job: Job = Box::new(move || {
            let start = entries.start_read();
            match fetch() {
                Ok(answer) => keep(&entries, start, asked.clone(), &answer, weigh),
                // The kept answer expires; the next reader asks and sees the error.
                Err(e) => log::debug!("asking {asked:?} again: {e}"),
            }
            if let Ok(mut asking) = asking.lock() {
                asking.remove(&asked);
            }
        });
        // Full (all threads busy) or closed: the answer just expires.
        if self.jobs.try_send(job).is_err() {
            if let Ok(mut asking) = self.asking.lock() {
                asking.remove(&question);
            }
        }
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
        fn count(&self) -> impl FnOnce() -> Result<u32> + Send + 'static {
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
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            ask(&short, &server, "a/"),
            4,
            "expired: asked, not given the old one"
        );
    }

    #[test]
    fn an_answer_in_use_is_asked_again_before_it_expires() {
        let lifetime = Duration::from_millis(400);
        let answers = Answers::new(lifetime);
        let server = Server::default();
        let first = Instant::now();
        assert_eq!(ask(&answers, &server, "a/"), 1);
        std::thread::sleep(lifetime / 2);
        // Old but young enough: given at once, and asked again in the background.
        assert_eq!(ask(&answers, &server, "a/"), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.asked() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.asked(), 2, "one refresh");
        let refreshed = ask(&answers, &server, "a/");
        if first.elapsed() < lifetime {
            assert_eq!(refreshed, 2, "the refreshed answer, from memory");
            assert_eq!(server.asked(), 2);
        }
        // Never given older than the lifetime: unused, it expires.
        std::thread::sleep(lifetime);
        assert_eq!(ask(&answers, &server, "a/"), server.asked());
    }
}
