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

use crate::cache::FreshLru;
use crate::error::Result;
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
    entries: FreshLru<Question, Kept>,
}

impl Answers {
    /// Answers kept for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Answers {
        Answers {
            entries: FreshLru::new(ANSWER_CACHE_BYTES, ttl),
        }
    }

    /// The kept answer to `question` if it is young enough, else `fetch`'s (kept if it
    /// is not an error). For answers that are small whatever they say.
    pub fn get_or<T>(&self, question: Question, fetch: impl FnOnce() -> Result<T>) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.get_or_weighed(question, fetch, |_| 0)
    }

    /// [`Answers::get_or`], with `weigh` saying how many bytes an answer holds.
    pub fn get_or_weighed<T>(
        &self,
        question: Question,
        fetch: impl FnOnce() -> Result<T>,
        weigh: impl FnOnce(&T) -> u64,
    ) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        if self.entries.is_off() {
            return fetch();
        }
        // (Never of another type: each question's variant has one answer type.)
        if let Some(answer) = self
            .entries
            .young(&question)
            .and_then(|kept| kept.downcast_ref::<T>().cloned())
        {
            return Ok(answer);
        }
        let start = self.entries.start_read();
        let answer = fetch()?;
        let bytes = ENTRY_OVERHEAD + question.bytes() + weigh(&answer);
        let kept: Kept = Arc::new(answer.clone());
        self.entries.keep(start, question, kept, bytes);
        Ok(answer)
    }

    /// Forgets every answer (the store may have changed).
    pub fn clear(&self) {
        self.entries.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::Cell;

    fn ask(answers: &Answers, calls: &Cell<u32>, q: &str) -> Result<bool> {
        answers.get_or(Question::HasPrefix(q.into()), || {
            calls.set(calls.get() + 1);
            Ok(true)
        })
    }

    #[test]
    fn kept_for_the_lifetime_until_cleared() {
        let answers = Answers::new(Duration::from_secs(60));
        let calls = Cell::new(0);
        assert!(ask(&answers, &calls, "a/").expect("answer"));
        assert!(ask(&answers, &calls, "a/").expect("answer"));
        assert_eq!(calls.get(), 1, "the second from memory");
        ask(&answers, &calls, "b/").expect("answer");
        assert_eq!(calls.get(), 2, "another prefix is another question");
        answers.clear();
        ask(&answers, &calls, "a/").expect("answer");
        assert_eq!(calls.get(), 3, "asked again after a clear");
    }

    #[test]
    fn errors_and_answers_across_a_clear_are_not_kept() {
        let answers = Answers::new(Duration::from_secs(60));
        let q = || Question::Link("k".into());
        let failed = answers.get_or(q(), || Err::<Option<u8>, _>(Error::NotFound("down".into())));
        assert!(failed.is_err());
        let calls = Cell::new(0);
        let fetch = || {
            calls.set(calls.get() + 1);
            Ok(None::<u8>)
        };
        answers.get_or(q(), fetch).expect("answer");
        assert_eq!(calls.get(), 1, "the error was not kept");
        let across = answers.get_or(Question::Head("h".into()), || {
            answers.clear();
            Ok(None::<u8>)
        });
        assert!(across.is_ok());
        answers
            .get_or(Question::Head("h".into()), fetch)
            .expect("answer");
        assert_eq!(calls.get(), 2, "fetched across a clear: not kept");
    }

    #[test]
    fn zero_lifetime_keeps_nothing_and_old_answers_expire() {
        let calls = Cell::new(0);
        let none = Answers::new(Duration::ZERO);
        ask(&none, &calls, "a/").expect("answer");
        ask(&none, &calls, "a/").expect("answer");
        assert_eq!(calls.get(), 2);
        let short = Answers::new(Duration::from_millis(20));
        ask(&short, &calls, "a/").expect("answer");
        std::thread::sleep(Duration::from_millis(30));
        ask(&short, &calls, "a/").expect("answer");
        assert_eq!(calls.get(), 4, "expired");
    }
}
