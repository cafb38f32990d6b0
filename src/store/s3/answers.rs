//! The bucket's answers about links and listings, held for a short time: a mount asks
//! the same few keys again and again (every request for a tag reads its link, every
//! folder lookup lists), and each question is a round trip to the server.
//!
//! An answer is kept for the lifetime the mount gives tag paths (`--tag-ttl`; the
//! kernel keeps its own answers as long), so a push shows through the mount within
//! about two lifetimes, and when the mount's change poll comes round the answers
//! fetched before the previous poll go ([`Answers::forget_older_than`]: with lifetimes
//! shorter than the poll's interval, as by default, none; dropping all would make every
//! reader wait for the bucket at once, every poll). Errors are never kept: once the
//! server answers again, so does the mount. An answer whose fetch started before such a
//! cutoff is not kept either. Bounded by bytes, least recently used first.
//!
//! An answer in use is kept young in the background ([`super::refresher`]), so the
//! kernel's questions, once a lifetime, do not wait for the bucket; no answer is ever
//! given older than the lifetime.

use super::refresher::Refresher;
use crate::cache::{FreshLru, ReadStart};
use crate::error::Result;
use crate::metrics::{Answer, METRICS};
use std::any::Any;
use std::sync::Arc;
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
    /// The key or prefix asked about.
    pub fn key(&self) -> &str {
        let (Question::Link(k)
        | Question::Head(k)
        | Question::List(k)
        | Question::HasPrefix(k)
        | Question::Newest(k)) = self;
        k
    }

    fn bytes(&self) -> u64 {
        self.key().len() as u64
    }
}

/// A kept answer: of the type its question's variant is answered with.
pub(super) type Kept = Arc<dyn Any + Send + Sync>;

pub struct Answers {
    entries: Arc<FreshLru<Question, Kept>>,
    /// None with a zero lifetime (nothing is kept, so nothing is refreshed) or
    /// keep-warm time.
    refresher: Option<Refresher>,
}

impl Answers {
    /// Answers kept for `ttl` (zero keeps none), and young while in use and for
    /// `keep_warm` after (zero: they expire).
    pub fn new(ttl: Duration, keep_warm: Duration) -> Answers {
        let entries = Arc::new(FreshLru::new(ANSWER_CACHE_BYTES, ttl));
        let refresher = (!ttl.is_zero() && !keep_warm.is_zero())
            .then(|| Refresher::start(entries.clone(), keep_warm));
        Answers { entries, refresher }
    }

    /// The kept answer to `question` if it is young enough, else what `fetch` answers
    /// for the question's key (kept if it is not an error). For answers that are small
    /// whatever they say.
    pub fn get_or<T, F>(&self, question: Question, fetch: F) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&str) -> Result<T> + Send + Sync + 'static,
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
        F: Fn(&str) -> Result<T> + Send + Sync + 'static,
    {
        if self.entries.is_off() {
            return fetch(question.key());
        }
        // (Never of another type: each question's variant has one answer type.)
        if let Some(kept) = self.entries.young(&question) {
            if let Some(answer) = kept.downcast_ref::<T>().cloned() {
                METRICS.s3_answers.inc(Answer::Hit);
                self.refresh(question, fetch, weigh);
                return Ok(answer);
            }
        }
        METRICS.s3_answers.inc(Answer::Miss);
        log::debug!("asking {question:?}");
        let start = self.entries.start_read();
        let answer = fetch(question.key())?;
        keep(&self.entries, start, question.clone(), &answer, weigh);
        self.refresh(question, fetch, weigh);
        Ok(answer)
    }

    fn refresh<T, F>(&self, question: Question, fetch: F, weigh: fn(&T) -> u64)
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&str) -> Result<T> + Send + Sync + 'static,
    {
        if let Some(refresher) = &self.refresher {
            refresher.given(question, fetch, weigh);
        }
    }

    /// Forgets the answers fetched more than `age` ago (the store may have changed
    /// since); zero: all of them.
    pub fn forget_older_than(&self, age: Duration) {
        self.entries.forget_older_than(age);
    }
}

/// Keeps `answer`, read since `start`, with its weight.
pub(super) fn keep<T: Clone + Send + Sync + 'static>(
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

#[cfg(test)]
mod tests {
    use super::super::refresher::DEFAULT_KEEP_WARM;
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
        fn count(&self) -> impl Fn(&str) -> Result<u32> + Send + Sync + 'static {
            let calls = self.0.clone();
            move |_: &str| Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    fn ask(answers: &Answers, server: &Server, q: &str) -> u32 {
        answers
            .get_or(Question::HasPrefix(q.into()), server.count())
            .expect("answer")
    }

    #[test]
    fn kept_for_the_lifetime_until_cleared() {
        let answers = Answers::new(Duration::from_secs(60), DEFAULT_KEEP_WARM);
        let server = Server::default();
        assert_eq!(ask(&answers, &server, "a/"), 1);
        assert_eq!(ask(&answers, &server, "a/"), 1, "the second from memory");
        ask(&answers, &server, "b/");
        assert_eq!(server.asked(), 2, "another prefix is another question");
        answers.forget_older_than(Duration::ZERO);
        ask(&answers, &server, "a/");
        assert_eq!(server.asked(), 3, "asked again after a clear");
    }

    #[test]
    fn errors_and_answers_across_a_clear_are_not_kept() {
        let answers = Arc::new(Answers::new(Duration::from_secs(60), DEFAULT_KEEP_WARM));
        let q = || Question::Link("k".into());
        let failed = answers.get_or(q(), |_: &str| Err::<u32, _>(Error::NotFound("down".into())));
        assert!(failed.is_err());
        let server = Server::default();
        answers.get_or(q(), server.count()).expect("answer");
        assert_eq!(server.asked(), 1, "the error was not kept");
        let clearing = answers.clone();
        let across = answers.get_or(Question::Head("h".into()), move |_: &str| {
            clearing.forget_older_than(Duration::ZERO);
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
        let none = Answers::new(Duration::ZERO, DEFAULT_KEEP_WARM);
        ask(&none, &server, "a/");
        ask(&none, &server, "a/");
        assert_eq!(server.asked(), 2);
        // Without keeping answers young: they expire.
        let short = Answers::new(Duration::from_millis(20), Duration::ZERO);
        ask(&short, &server, "a/");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            ask(&short, &server, "a/"),
            4,
            "expired: asked, not given the old one"
        );
    }

    #[test]
    fn the_kernels_questions_once_a_lifetime_never_wait_for_the_bucket() {
        let lifetime = Duration::from_millis(400);
        let keep_warm = lifetime * 2;
        let answers = Answers::new(lifetime, keep_warm);
        let server = Server::default();
        let waited = Arc::new(AtomicU32::new(0));
        let ask_as_kernel = || {
            let (calls, waited) = (server.0.clone(), waited.clone());
            let fetch = move |_: &str| {
                let refreshing = std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with("registryfs-s3-refresh"));
                if !refreshing {
                    waited.fetch_add(1, Ordering::SeqCst);
                }
                Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
            };
            answers
                .get_or(Question::Link("tag".into()), fetch)
                .expect("answer")
        };
        let start = Instant::now();
        let mut given = vec![ask_as_kernel()];
        // The kernel keeps each answer for a lifetime, then asks again.
        for cycle in 1..5u32 {
            let next = start + lifetime * cycle;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            given.push(ask_as_kernel());
        }
        if start.elapsed() < lifetime * 5 {
            assert_eq!(
                waited.load(Ordering::SeqCst),
                1,
                "only the first question waited: {given:?}"
            );
            assert!(
                given.windows(2).all(|w| w[0] < w[1]),
                "each a refreshed answer: {given:?}"
            );
        }
        // Left alone: kept young for `keep_warm`, then left to expire; no answer is
        // given old.
        let last_use = Instant::now();
        std::thread::sleep(keep_warm + lifetime * 2);
        let asked = server.asked();
        assert!(asked > given[4], "refreshed after the last use");
        std::thread::sleep(lifetime);
        assert_eq!(
            server.asked(),
            asked,
            "then no more: {:?}",
            last_use.elapsed()
        );
        assert_eq!(
            ask_as_kernel(),
            asked + 1,
            "expired: asked while the reader waited"
        );
    }
}
