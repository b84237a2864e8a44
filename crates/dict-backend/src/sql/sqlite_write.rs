//! SQLite commits on a thread of their own, without sqlx's thread hops. Through sqlx every
//! statement of a commit (BEGIN, the statements, COMMIT) was a round trip to sqlx's worker
//! thread and back: two thread wake-ups each, more than SQLite needs to run the statement.
//! Here one thread owns the writing connection (rusqlite, on the same SQLite library) and
//! the queue of commits: it takes every commit queued (at most [`MAX_GROUP`]) and applies
//! them as one transaction, each in a savepoint of its own when it has several statements,
//! so they share one fsync (group commit); then it takes the next group at once. A commit
//! is acknowledged only after the COMMIT that contains it, so durability is the same as one
//! transaction each.
//!
//! A caller whose deadline comes while its commit is still queued takes it back: it fails
//! and is never applied. Once the thread has taken it, the caller waits for its outcome:
//! lock waits are bounded by the group's earliest deadline (busy timeout), so that comes
//! soon after (and the server answers "uncertain" if its own request deadline passes).

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::group::{fail_all, group_deadline, Job, Outcome, MAX_GROUP};
use super::sqlite_read::bind;
use super::types::{DbError, Exec};

/// Statements kept prepared (one per statement shape of the dict's maps).
const STATEMENT_CACHE: usize = 64;

/// Each commit's outcome (`true`: a counted statement touched no row), or the group's
/// failure.
type GroupResult = Result<Vec<Result<bool, DbError>>, DbError>;

enum Request {
    Commit(Job),
    /// `PRAGMA journal_mode` and `PRAGMA synchronous` of the writing connection.
    Pragmas(oneshot::Sender<Result<(String, i64), DbError>>),
}

/// The writing connection of a SQLite dict, on its thread.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    /// `None` once closed: the thread ends when its queue does.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// The dict's timeout, for the text of a commit that timed out in the queue.
    timeout: Duration,
}

impl SqliteWriter {
    /// Opens `path` (which must exist) for writing, with `synchronous` (a value of
    /// `PRAGMA synchronous`, or `None` for SQLite's default) and a busy timeout of at most
    /// `busy`, and starts its thread.
    pub fn open(
        path: &Path,
        synchronous: Option<&str>,
        busy: Duration,
    ) -> Result<SqliteWriter, DbError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(DbError::Sqlite)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // sqlx's defaults, which the other connections of the dict have.
        conn.execute_batch("PRAGMA foreign_keys = ON")
            .map_err(DbError::Sqlite)?;
        if let Some(level) = synchronous {
            conn.execute_batch(&format!("PRAGMA synchronous = {level}"))
                .map_err(DbError::Sqlite)?;
        }
        let (requests, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(conn, queue, busy))
            .map_err(|e| DbError::Invalid(format!("starting the SQLite writer: {e}")))?;
        Ok(SqliteWriter {
            requests: Mutex::new(Some(requests)),
            timeout: busy,
        })
    }

    fn send(&self, request: Request) -> Result<(), DbError> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        match requests.as_ref().map(|r| r.send(request)) {
            Some(Ok(())) => Ok(()),
            _ => Err(DbError::Sqlx(sqlx::Error::PoolClosed)),
        }
    }

    /// Applies `steps` as one dict commit, with the others queued alongside it.
    pub async fn commit(&self, steps: Vec<Exec>, deadline: Instant) -> Outcome {
        let (job, ticket) = Job::new(steps, deadline);
        if let Err(e) = self.send(Request::Commit(job)) {
            return Outcome::Failed(e.to_string());
        }
        ticket
            .outcome(deadline, self.timeout, "the SQLite writer stopped")
            .await
    }

    /// What the writing connection reports for `PRAGMA journal_mode` and `synchronous`.
    pub async fn pragmas(&self) -> Result<(String, i64), DbError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Pragmas(reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err(DbError::Invalid("the SQLite writer stopped".into())))
    }

    /// Stops the thread once the requests already sent are done; later ones fail.
    pub fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// The writer thread: every commit queued is applied in one group, until the dict closes.
fn serve(conn: Connection, queue: mpsc::Receiver<Request>, busy: Duration) {
    while let Ok(first) = queue.recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                // A commit its caller took back is dropped here.
                Request::Commit(job) => {
                    if job.take() {
                        group.push(job);
                    }
                }
                Request::Pragmas(reply) => {
                    let _ = reply.send(pragmas(&conn));
                }
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if !group.is_empty() {
            apply(&conn, group, busy);
        }
    }
}

/// Applies one group and tells every caller its outcome.
fn apply(conn: &Connection, group: Vec<Job>, busy: Duration) {
    let left = group_deadline(&group).saturating_duration_since(Instant::now());
    let commits: Vec<&[Exec]> = group.iter().map(Job::steps).collect();
    let result = conn
        .busy_timeout(left.min(busy))
        .map_err(DbError::Sqlite)
        .and_then(|()| transaction(conn, &commits));
    if result.is_err() && !conn.is_autocommit() {
        // Nothing of the group stays; a connection that can't even roll back is broken,
        // and its next BEGIN says so.
        let _ = conn.execute_batch("ROLLBACK");
    }
    match result {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                job.finish(match outcome {
                    Ok(missing) => Outcome::Applied(missing),
                    Err(e) => Outcome::Failed(e.to_string()),
                });
            }
        }
        // Nothing was applied: SQLite rolls back a COMMIT it refuses, and the thread is
        // never interrupted between COMMIT and its answer.
        Err(e) => fail_all(group, &e, false),
    }
}

fn pragmas(conn: &Connection) -> Result<(String, i64), DbError> {
    let journal = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0));
    let synchronous = conn.query_row("PRAGMA synchronous", [], |r| r.get(0));
    journal
        .and_then(|j| Ok((j, synchronous?)))
        .map_err(DbError::Sqlite)
}

fn transaction(conn: &Connection, commits: &[&[Exec]]) -> GroupResult {
    // Take the write lock at once: no deadlock with other processes' readers.
    run(conn, "BEGIN IMMEDIATE").map_err(DbError::Sqlite)?;
    let results = if let [alone] = commits {
        // Alone: its failure is the group's.
        vec![Ok(run_steps(conn, alone)?)]
    } else {
        let mut results = Vec::with_capacity(commits.len());
        for steps in commits {
            results.push(run_commit(conn, steps)?);
        }
        results
    };
    run(conn, "COMMIT").map_err(DbError::Sqlite)?;
    Ok(results)
}

/// One dict commit among others of its group: if it fails, it alone is undone and gets its
/// error; the others stay. A commit of one statement needs no savepoint, since SQLite
/// undoes a failed statement by itself; several statements run in a savepoint.
fn run_commit(conn: &Connection, steps: &[Exec]) -> Result<Result<bool, DbError>, DbError> {
    let sqlite = DbError::Sqlite;
    let one_statement = matches!(steps, [Exec::Run { .. }] | [Exec::Unchanged]);
    if !one_statement {
        run(conn, "SAVEPOINT dict_commit").map_err(sqlite)?;
    }
    let result = run_steps(conn, steps);
    if conn.is_autocommit() {
        // Some errors (disk full, I/O) end the whole transaction: the group's failure.
        return Err(result
            .err()
            .unwrap_or_else(|| DbError::Invalid("the SQLite transaction ended by itself".into())));
    }
    if !one_statement {
        match result {
            Ok(_) => run(conn, "RELEASE dict_commit").map_err(sqlite)?,
            Err(_) => {
                run(conn, "ROLLBACK TO dict_commit").map_err(sqlite)?;
                run(conn, "RELEASE dict_commit").map_err(sqlite)?;
            }
        }
    }
    Ok(result)
}

/// A statement without parameters, prepared once.
fn run(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.raw_execute().map(drop)
}

/// Runs the steps of one dict commit; whether a counted statement touched no row.
fn run_steps(conn: &Connection, steps: &[Exec]) -> Result<bool, DbError> {
    let mut missing = false;
    for step in steps {
        match step {
            Exec::Run {
                sql, params, count, ..
            } => {
                if execute(conn, sql, params)? == 0 && *count {
                    missing = true;
                }
            }
            Exec::Unchanged => missing = true,
            Exec::UpdateElseInsert {
                update,
                update_params,
                insert,
                insert_params,
            } => {
                if execute(conn, update, update_params)? == 0 {
                    execute(conn, insert, insert_params)?;
                }
            }
        }
    }
    Ok(missing)
}

fn execute(conn: &Connection, sql: &str, params: &[super::param::Param]) -> Result<usize, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(DbError::Sqlite)?;
    bind(&mut stmt, params).map_err(DbError::Sqlite)?;
    stmt.raw_execute().map_err(DbError::Sqlite)
}
