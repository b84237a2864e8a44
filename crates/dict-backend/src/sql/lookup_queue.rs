//! The lookup queues of a MySQL/PostgreSQL dict (see [`lookup`](super::lookup)): per map
//! (and `priv/` or not) one runner, and the lookups that arrived while it was busy.
//! Whoever gets the runner next takes the queued lookups, oldest first, as one batch. A
//! lookup still queued when its caller gives up is taken back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::param::Param;
use super::types::Cell;
use crate::DictError;

/// Lookups in one statement at most.
const MAX_BATCH: usize = 64;
/// Bound values in one statement at most (PostgreSQL and MySQL allow 65535).
const MAX_PARAMS: usize = 16_384;

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

/// A lookup's answer: its first row, or the dict's error.
pub(crate) type Answer = Result<Option<Vec<Cell>>, DictError>;

/// What a queued lookup is told.
pub(crate) enum Reply {
    Done(Answer),
    /// Its batch failed in a way that one lookup alone may not: run it alone.
    Alone,
}

/// A queued lookup, as its batch's runner sees it.
pub(crate) struct Waiting {
    pub params: Arc<Vec<Param>>,
    pub deadline: Instant,
    state: Arc<AtomicU8>,
    done: oneshot::Sender<Reply>,
}

impl Waiting {
    /// Tells the lookup's caller.
    pub fn reply(self, reply: Reply) {
        let _ = self.done.send(reply);
    }
}

/// A lookup in the queue, as its caller holds it.
pub(crate) struct Queued {
    state: Arc<AtomicU8>,
    pub reply: oneshot::Receiver<Reply>,
}

impl Queued {
    /// Takes the lookup out of the queue; false when a runner took it already.
    pub fn take_back(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The lookups of one statement shape: the queue and the one runner.
#[derive(Debug)]
pub(crate) struct Lane {
    queue: Mutex<VecDeque<Waiting>>,
    /// Held by the lookup or batch in flight.
    runner: Semaphore,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("params", &self.params.len())
            .finish()
    }
}

/// Statements and lookups counted by a dict's batcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupCounts {
    /// Lookup statements sent (a batch counts once; SQLite is not counted).
    pub statements: u64,
    /// Lookups sent in a statement of several lookups.
    pub batched: u64,
}

/// The lookup queues of a dict: one lane per map, `shared/` and `priv/`.
#[derive(Debug)]
pub(crate) struct LookupBatcher {
    lanes: Vec<[Lane; 2]>,
    statements: AtomicU64,
    batched: AtomicU64,
}

impl LookupBatcher {
    pub fn new(maps: usize) -> LookupBatcher {
        let lane = || Lane {
            queue: Mutex::new(VecDeque::new()),
            runner: Semaphore::new(1),
        };
        LookupBatcher {
            lanes: (0..maps).map(|_| [lane(), lane()]).collect(),
            statements: AtomicU64::new(0),
            batched: AtomicU64::new(0),
        }
    }

    /// The lane of lookups of map `map` (`private`: of `priv/` keys).
    pub fn lane(&self, map: usize, private: bool) -> &Lane {
        &self.lanes[map][usize::from(private)]
    }

    /// Counts a statement sent for `lookups` lookups.
    pub fn sent(&self, lookups: usize) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        if lookups > 1 {
            self.batched.fetch_add(lookups as u64, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> LookupCounts {
        LookupCounts {
            statements: self.statements.load(Ordering::Relaxed),
            batched: self.batched.load(Ordering::Relaxed),
        }
    }
}

impl Lane {
    /// The runner, if nothing of this lane is in flight.
    pub fn try_run(&self) -> Option<SemaphorePermit<'_>> {
        self.runner.try_acquire().ok()
    }

    /// The runner, once free.
    pub async fn run(&self) -> SemaphorePermit<'_> {
        self.runner
            .acquire()
            .await
            .expect("the runner is never closed")
    }

    /// Queues a lookup of `params`.
    pub fn enqueue(&self, params: Arc<Vec<Param>>, deadline: Instant) -> Queued {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (done, reply) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Waiting {
                params,
                deadline,
                state: state.clone(),
                done,
            });
        Queued { state, reply }
    }

    /// The queued lookups, oldest first, as many as one statement takes (`params_each`
    /// values each); those whose caller gave up are dropped.
    pub fn take(&self, params_each: usize) -> Vec<Waiting> {
        let most = (MAX_PARAMS / params_each.max(1)).clamp(1, MAX_BATCH);
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::new();
        while batch.len() < most {
            let Some(w) = queue.pop_front() else { break };
            if w.state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                batch.push(w);
            }
        }
        batch
    }
}
