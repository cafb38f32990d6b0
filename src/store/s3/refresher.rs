//! Keeps the answers in use young ([`super::answers`]): every answer given out is
//! asked again in the background three quarters of a lifetime later, and again after
//! that for as long as readers still ask for it within `--s3-keep-warm`
//! ([`DEFAULT_KEEP_WARM`]), one request per question at a time.
//!
//! The kernel asks about a name once per lifetime, just as the answer it got would
//! expire; without this every such lookup would wait for the bucket, and a web server
//! reads files synchronously: a worker waiting for the bucket holds up all its
//! connections, and with a remote bucket (tens of milliseconds a request) the names of
//! other tags expire meanwhile and the server never catches up. An answer nobody asks
//! for any more is left to expire.

use super::answers::{keep, Kept, Question};
use crate::cache::FreshLru;
use crate::error::Result;
use crate::metrics::{Answer, METRICS};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Threads that ask questions again when they come due. A
/// refresh that fails or runs late leaves the answer to expire, and the next reader
/// asks, as without a refresher.
pub struct Refresher {
    shared: Arc<Schedule>,
}

struct Schedule {
    entries: Arc<FreshLru<Question, Kept>>,
    /// When an answer is asked again: three quarters of a lifetime after it was given
    /// out, counted from then, not from its fetch (the kernel keeps what it is given for
    /// a lifetime from then), so that the new answer is there before the kernel asks.
    period: Duration,
    /// Since an answer's last use.
    keep_warm: Duration,
    state: Mutex<Due>,
    changed: Condvar,
}

#[derive(Default)]
struct Due {
    /// Earliest first.
    heap: BinaryHeap<Reverse<Timed>>,
    /// The questions kept young (scheduled or being asked), with when their answer
    /// was last given out.
    warm: HashMap<Question, Instant>,
    /// Ties in `heap` by order of scheduling.
    next_seq: u64,
    closed: bool,
}

/// Asks a question (the one it was made for) again and keeps the answer.
type Job = Arc<dyn Fn(&Question) + Send + Sync>;

struct Timed {
    at: Instant,
    seq: u64,
    question: Question,
    job: Job,
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

/// Background requests at once: each mostly waits for the server (tens of
/// milliseconds for a remote bucket), and a busy mount keeps hundreds of answers young.
const REFRESH_THREADS: usize = 16;
/// Questions kept young: thousands of tags in use.
const MAX_WARM: usize = 16 * 1024;
/// How long after its answer was last given out a question is still kept young
/// (`--s3-keep-warm`). The kernel asks about a name in use once a lifetime, so two
/// lifetimes would do while readers keep up; the slack is for readers held up a while
/// (cold tags on a slow bucket), who must not come back to find every other tag expired
/// and wait for it in turn (measured: 4,190 req/s with 30 s against 1,035 with 5 s and
/// 11 with none, over a bucket 20 ms away, scripts/bench/s3.py --only remote). It costs
/// a request per question every three quarters of a lifetime after a tag's last use
/// (about 6 questions per tag: some 240 requests with the 1 s default lifetime).
pub const DEFAULT_KEEP_WARM: Duration = Duration::from_secs(30);

impl Due {
    fn push(&mut self, at: Instant, question: Question, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Timed {
            at,
            seq,
            question,
            job,
        }));
    }
}

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
            (timed.job)(&timed.question);
            due = self.lock();
            let still_used = due
                .warm
                .get(&timed.question)
                .is_some_and(|given| given.elapsed() < self.keep_warm);
            if still_used {
                due.push(Instant::now() + self.period, timed.question, timed.job);
            } else {
                due.warm.remove(&timed.question);
            }
        }
    }
}

impl Refresher {
    pub fn start(entries: Arc<FreshLru<Question, Kept>>, keep_warm: Duration) -> Refresher {
        let shared = Arc::new(Schedule {
            period: entries.lifetime() * 3 / 4,
            keep_warm,
            entries,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        for i in 0..REFRESH_THREADS {
            let schedule = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("registryfs-s3-refresh-{i}"))
                .spawn(move || {
                    super::client::block_stop_signals();
                    schedule.work()
                });
            if let Err(e) = spawned {
                log::warn!("no S3 refresher thread ({e}); answers expire under their readers");
            }
        }
        Refresher { shared }
    }

    /// `question`'s answer was given out: it is asked again a period from now, unless it
    /// is kept young already.
    pub fn given<T, F>(&self, question: Question, fetch: F, weigh: fn(&T) -> u64)
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&str) -> Result<T> + Send + Sync + 'static,
    {
        let now = Instant::now();
        let mut due = self.shared.lock();
        if let Some(given) = due.warm.get_mut(&question) {
            *given = now;
            return;
        }
        if due.warm.len() >= MAX_WARM {
            return;
        }
        due.warm.insert(question.clone(), now);
        let entries = self.shared.entries.clone();
        let job: Job = Arc::new(move |asked: &Question| {
            let start = entries.start_read();
            match fetch(asked.key()) {
                Ok(answer) => {
                    METRICS.s3_answers.inc(Answer::Refreshed);
                    keep(&entries, start, asked.clone(), &answer, weigh);
                }
                // The kept answer expires; the next reader asks and sees the error.
                Err(e) => log::debug!("asking {asked:?} again: {e}"),
            }
        });
        due.push(now + self.shared.period, question, job);
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
