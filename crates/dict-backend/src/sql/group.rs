//! Group commit for SQLite. SQLite has one writer and syncs the file at every COMMIT, so
//! commits arriving together wait for each other's fsync. Every commit is queued; the
//! caller that gets the writer (the leader) takes every queued commit and applies them in
//! one transaction, each in a savepoint of its own ([`Conn::group_transaction`]): one
//! fsync for the lot, and a commit whose statement fails still fails alone. The others
//! wait for their outcome, or for their turn to lead. Alone, a commit is its own leader and
//! runs at once, with no hand-off to another task. A commit is acknowledged only after
//! the COMMIT that contains it, so durability is the same as one transaction each.
//!
//! A caller that gives up (its deadline passed) while its commit is still queued takes
//! it back, and gets `Failed`; once a leader has taken it, the outcome is unknown to the
//! caller (`WriteUncertain`), as for a COMMIT sent to a server. So is the outcome of the
//! commits of a leader whose caller went away while applying them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Pool, Sqlite};
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use super::driver::{Conn, DbError, Exec, Phase};

/// Commits applied in one transaction at most.
const MAX_GROUP: usize = 64;

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

struct Job {
    steps: Vec<Exec>,
    deadline: Instant,
    state: Arc<AtomicU8>,
    done: oneshot::Sender<Outcome>,
}

/// The queue in front of a SQLite dict's writer connection.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    writer: Pool<Sqlite>,
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

impl GroupCommit {
    /// Commits on `writer` (a pool of one connection).
    pub fn new(writer: Pool<Sqlite>, timeout: Duration) -> GroupCommit {
        GroupCommit {
            writer,
            queue: Mutex::new(VecDeque::new()),
            leader: tokio::sync::Mutex::new(()),
            timeout,
        }
    }

    /// Applies `steps` as one dict commit, with the commits queued alongside.
    pub async fn commit(&self, steps: Vec<Exec>, deadline: Instant) -> Outcome {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (done, mut result) = oneshot::channel();
        self.queue.lock().expect("group queue lock").push_back(Job {
            steps,
            deadline,
            state: state.clone(),
            done,
        });
        let abandoned = || Outcome::Uncertain("the commit's group was abandoned".into());
        let work = async {
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut result => return outcome.unwrap_or_else(|_| abandoned()),
                    guard = self.leader.lock() => {
                        let group = self.take_group();
                        if group.is_empty() {
                            // An earlier leader took ours and has finished with it.
                            drop(guard);
                            return (&mut result).await.unwrap_or_else(|_| abandoned());
                        }
                        tracing::trace!(commits = group.len(), "sqlite group commit");
                        apply(&self.writer, group).await;
                    }
                }
            }
        };
        match timeout_at(deadline, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let took_back = state
                    .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                let e = DbError::Timeout(self.timeout).to_string();
                if took_back {
                    Outcome::Failed(e)
                } else {
                    Outcome::Uncertain(e)
                }
            }
        }
    }

    /// The queued commits, oldest first, at most [`MAX_GROUP`]; those whose caller gave up
    /// are dropped.
    fn take_group(&self) -> Vec<Job> {
        let mut queue = self.queue.lock().expect("group queue lock");
        let mut group = Vec::new();
        while group.len() < MAX_GROUP {
            let Some(job) = queue.pop_front() else { break };
            if job
                .state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                group.push(job);
            }
        }
        group
    }
}

/// Applies one group and tells every caller its outcome.
async fn apply(writer: &Pool<Sqlite>, group: Vec<Job>) {
    let deadline = group
        .iter()
        .map(|j| j.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut conn = match timeout_at(deadline, writer.acquire()).await {
        Ok(Ok(c)) => Conn::Sqlite(c),
        Ok(Err(e)) => return fail_all(group, &DbError::from(e), false),
        Err(_) => return fail_all(group, &DbError::Timeout(timeout), false),
    };
    let mut phase = Phase::Begin;
    let steps: Vec<&[Exec]> = group.iter().map(|j| j.steps.as_slice()).collect();
    let run = async {
        if let [alone] = steps.as_slice() {
            // Alone: no savepoints needed.
            conn.transaction(alone, &mut phase)
                .await
                .map(|missing| vec![Ok(missing)])
        } else {
            conn.group_transaction(&steps, &mut phase).await
        }
    };
    let result = match timeout_at(deadline, run).await {
        Ok(r) => r,
        Err(_) => Err(DbError::Timeout(timeout)),
    };
    match result {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                let _ = job.done.send(match outcome {
                    Ok(missing) => Outcome::Applied(missing),
                    Err(e) => Outcome::Failed(e.to_string()),
                });
            }
        }
        Err(e) => {
            if !e.is_database() {
                conn.discard();
            }
            let uncertain = phase == Phase::Committing && !e.is_database();
            fail_all(group, &e, uncertain);
        }
    }
}

/// Tells every caller of `group` that it failed (or, `uncertain`, may have been applied).
fn fail_all(group: Vec<Job>, e: &DbError, uncertain: bool) {
    let text = e.to_string();
    for job in group {
        let _ = job.done.send(if uncertain {
            Outcome::Uncertain(text.clone())
        } else {
            Outcome::Failed(text.clone())
        });
    }
}
