//! Group commit on MySQL and PostgreSQL: commits that arrive while a dict's writer is busy
//! are applied together. Every commit is queued; the caller that gets the writer (the
//! leader) takes every queued commit and applies them as one group, through the function
//! its dict passes in: one batch of folded statements (see [`batch`](super::batch)).
//! (SQLite's writer thread keeps a queue of its own, of the same [`Job`]s, see
//! [`sqlite_write`](super::sqlite_write).) The others wait for their outcome, or for their turn to
//! lead. Alone, a commit is its own leader and runs at once, with no hand-off to another
//! task. A commit is acknowledged only after the COMMIT that contains it, so durability is
//! the same as one transaction each.
//!
//! A group is bounded by the earliest deadline among its commits, so every caller learns
//! its commit's real outcome in time: Failed if the group failed or timed out before its
//! COMMIT, WriteUncertain if the COMMIT itself failed or timed out. A commit still queued
//! at its deadline is taken back and fails. Only a leader whose own caller drops it while
//! applying leaves the others of its group uncertain.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::types::{DbError, Exec};

/// Commits applied in one transaction at most.
pub(crate) const MAX_GROUP: usize = 64;

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

/// What became of one commit.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed; `true` when a counted statement touched no row (NOTFOUND).
    Applied(bool),
    /// Certainly not applied; why.
    Failed(String),
    /// Maybe applied; why.
    Uncertain(String),
}

/// One queued commit, for the function that applies a group.
pub(crate) struct Job {
    steps: Vec<Exec>,
    deadline: Instant,
    state: Arc<AtomicU8>,
    done: oneshot::Sender<Outcome>,
}

/// The queue in front of a dict's writer.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    queue: Mutex<VecDeque<Job>>,
    /// Held by the caller applying a group.
    leader: tokio::sync::Mutex<()>,
    timeout: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Job {
    /// A commit to queue, and its caller's side.
    pub fn new(steps: Vec<Exec>, deadline: Instant) -> (Job, Ticket) {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (done, result) = oneshot::channel();
        let job = Job {
            steps,
            deadline,
            state: state.clone(),
            done,
        };
        (job, Ticket { state, result })
    }

    /// Takes this commit into a group; `false` when its caller already took it back.
    pub fn take(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The statements of this commit.
    pub fn steps(&self) -> &[Exec] {
        &self.steps
    }

    /// When its caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Tells the caller what became of its commit.
    pub fn finish(self, outcome: Outcome) {
        let _ = self.done.send(outcome);
    }
}

/// The caller's side of a queued commit.
pub(crate) struct Ticket {
    state: Arc<AtomicU8>,
    result: oneshot::Receiver<Outcome>,
}

impl Ticket {
    /// Takes the commit back if it is still queued: it will never be applied.
    pub fn take_back(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The commit's outcome. At `deadline` a commit still queued is taken back and fails
    /// with a timeout of `timeout`; one already taken is waited for, since its group ends
    /// by its earliest deadline, which is not later than ours. `abandoned` says why when
    /// the commit was dropped without an outcome.
    pub async fn outcome(
        mut self,
        deadline: Instant,
        timeout: Duration,
        abandoned: &str,
    ) -> Outcome {
        let abandoned = |_| Outcome::Uncertain(abandoned.into());
        tokio::select! {
            biased;
            result = &mut self.result => return result.unwrap_or_else(abandoned),
            () = tokio::time::sleep_until(deadline) => {}
        }
        if self.take_back() {
            return Outcome::Failed(DbError::Timeout(timeout).to_string());
        }
        self.result.await.unwrap_or_else(abandoned)
    }
}

impl GroupCommit {
    /// `timeout`: the dict's, for the text of a commit that timed out in the queue.
    pub fn new(timeout: Duration) -> GroupCommit {
        GroupCommit {
            queue: Mutex::new(VecDeque::new()),
            leader: tokio::sync::Mutex::new(()),
            timeout,
        }
    }

    /// Applies `steps` as one dict commit, with the commits queued alongside: `apply`
    /// applies a group (oldest first, never empty) and finishes each of its jobs.
    pub async fn commit<F, Fut>(&self, steps: Vec<Exec>, deadline: Instant, apply: F) -> Outcome
    where
        F: Fn(Vec<Job>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (job, mut ticket) = Job::new(steps, deadline);
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        let abandoned = || Outcome::Uncertain("the commit's group was abandoned".into());
        let mut expired = false;
        loop {
            tokio::select! {
                biased;
                outcome = &mut ticket.result => return outcome.unwrap_or_else(|_| abandoned()),
                guard = self.leader.lock(), if !expired => {
                    let group = self.take_group();
                    if group.is_empty() {
                        // An earlier leader took ours and has finished with it.
                        drop(guard);
                        return (&mut ticket.result).await.unwrap_or_else(|_| abandoned());
                    }
                    tracing::trace!(commits = group.len(), "group commit");
                    // Bounded by the earliest deadline in the group: ours, or an older one.
                    apply(group).await;
                }
                () = tokio::time::sleep_until(deadline), if !expired => {
                    expired = true;
                    if ticket.take_back() {
                        return Outcome::Failed(DbError::Timeout(self.timeout).to_string());
                    }
                    // Taken: its group ends by its earliest deadline, which is not later
                    // than ours, and says whether it was applied.
                }
            }
        }
    }

    /// The queued commits, oldest first, at most [`MAX_GROUP`]; those whose caller gave up
    /// are dropped.
    fn take_group(&self) -> Vec<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut group = Vec::new();
        while group.len() < MAX_GROUP {
            let Some(job) = queue.pop_front() else { break };
            if job.take() {
                group.push(job);
            }
        }
        group
    }
}

/// The earliest deadline of `group`: every caller in it gets its outcome by its own.
pub(crate) fn group_deadline(group: &[Job]) -> Instant {
    group
        .iter()
        .map(|j| j.deadline)
        .min()
        .unwrap_or_else(Instant::now)
}

/// Tells every caller of `group` that it failed (or, `uncertain`, may have been applied).
pub(crate) fn fail_all(group: Vec<Job>, e: &DbError, uncertain: bool) {
    let text = e.to_string();
    for job in group {
        let _ = job.done.send(if uncertain {
            Outcome::Uncertain(text.clone())
        } else {
            Outcome::Failed(text.clone())
        });
    }
}
