//! Group commit for SQLite. SQLite has one writer and syncs the file at every COMMIT, so
//! commits arriving together wait for each other's fsync. A writer task takes every
//! commit that is queued when it becomes free and applies them in one transaction, each in
//! a savepoint of its own ([`Conn::group_transaction`]): one fsync for the lot, and a
//! commit whose statement fails still fails alone. A commit is acknowledged only after the
//! COMMIT that contains it, so durability is the same as one transaction each.
//!
//! A caller that gives up (its deadline passed) while its commit is still queued takes
//! it back, and gets `Failed`; once the writer has taken it, the outcome is unknown to the
//! caller (`WriteUncertain`), as for a COMMIT sent to a server.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Pool, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use super::driver::{Conn, DbError, Exec, Phase};

/// Commits applied in one transaction at most.
const MAX_GROUP: usize = 64;
/// Commits waiting for the writer before callers wait to queue.
const QUEUE: usize = 1024;

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
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl GroupCommit {
    /// Starts the writer task on `writer` (a pool of one connection) in the current tokio
    /// runtime; it ends when the last `GroupCommit` is dropped.
    pub fn spawn(writer: Pool<Sqlite>, timeout: Duration) -> Result<GroupCommit, DbError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| DbError::Invalid("SQLite dicts need a tokio runtime".into()))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        runtime.spawn(write_loop(writer, queue));
        Ok(GroupCommit { jobs, timeout })
    }

    /// Applies `steps` as one dict commit, with the commits queued alongside.
    pub async fn commit(&self, steps: Vec<Exec>, deadline: Instant) -> Outcome {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (done, result) = oneshot::channel();
        let job = Job {
            steps,
            deadline,
            state: state.clone(),
            done,
        };
        let queued = match timeout_at(deadline, self.jobs.send(job)).await {
            Ok(r) => r,
            Err(_) => return Outcome::Failed(DbError::Timeout(self.timeout).to_string()),
        };
        if queued.is_err() {
            return Outcome::Failed("the SQLite writer has stopped".into());
        }
        match timeout_at(deadline, result).await {
            Ok(Ok(outcome)) => outcome,
            // The writer task went away with the commit (it panicked or the runtime ends).
            Ok(Err(_)) => Outcome::Uncertain("the SQLite writer stopped".into()),
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
}

async fn write_loop(writer: Pool<Sqlite>, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Callers that gave up have taken theirs back.
        group.retain(|job| {
            job.state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if !group.is_empty() {
            tracing::trace!(commits = group.len(), "sqlite group commit");
            apply(&writer, group).await;
        }
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
