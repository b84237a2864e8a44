//! SQLite commits on a thread of their own, without sqlx's thread hops. Through sqlx every
//! statement of a group commit (BEGIN, each commit's SAVEPOINT, statements and RELEASE,
//! COMMIT) was a round trip to sqlx's worker thread and back: two thread wake-ups each,
//! more than SQLite needs to run the statement. Here the group's caller hands the whole
//! group to one thread that owns a rusqlite connection (the same SQLite library), which
//! runs it and sends every outcome back at once: two wake-ups per group.
//!
//! The thread can't be cancelled mid-statement, so the hand-over settles who decides:
//! the thread moves a group from [`RUNNING`] to [`COMMITTING`] just before COMMIT, the
//! caller at its deadline from [`RUNNING`] to [`CANCELLED`]. Whoever is first wins: a
//! cancelled group is rolled back (certainly not applied), one past the COMMIT is only
//! uncertain to a caller that stopped waiting. Lock waits are bounded by the group's
//! remaining time (busy timeout), so a stuck group does not hold the thread much longer.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::sqlite_read::bind;
use super::types::{DbError, Exec, Phase};

/// Statements kept prepared (one per statement shape of the dict's maps).
const STATEMENT_CACHE: usize = 64;

const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const CANCELLED: u8 = 2;

/// Each commit's outcome (`true`: a counted statement touched no row), or the group's
/// failure with how far it got.
pub(crate) type GroupResult = Result<Vec<Result<bool, DbError>>, (DbError, Phase)>;

/// A group handed to the writer thread.
struct Group {
    commits: Vec<Vec<Exec>>,
    deadline: Instant,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<GroupResult>,
}

enum Request {
    Group(Group),
    /// `PRAGMA journal_mode` and `PRAGMA synchronous` of the writing connection.
    Pragmas(oneshot::Sender<Result<(String, i64), DbError>>),
}

/// The writing connection of a SQLite dict, on its thread.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    /// `None` once closed: the thread ends when its queue does.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
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
        })
    }

    fn send(&self, request: Request) -> Result<(), DbError> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        match requests.as_ref().map(|r| r.send(request)) {
            Some(Ok(())) => Ok(()),
            _ => Err(DbError::Sqlx(sqlx::Error::PoolClosed)),
        }
    }

    /// Runs the commits of a group (each `Vec<Exec>` one dict commit) in one transaction,
    /// each in a savepoint of its own when there are several, by `deadline`.
    pub async fn apply(&self, commits: Vec<Vec<Exec>>, deadline: Instant) -> GroupResult {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (reply, outcome) = oneshot::channel();
        let group = Group {
            commits,
            deadline,
            state: state.clone(),
            reply,
        };
        self.send(Request::Group(group))
            .map_err(|e| (e, Phase::Begin))?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err((
                DbError::Invalid("the SQLite writer stopped".into()),
                Phase::Committing,
            )),
            Err(_) => {
                let phase = match state.compare_exchange(
                    RUNNING,
                    CANCELLED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Phase::Statements,
                    Err(_) => Phase::Committing,
                };
                Err((DbError::Timeout(timeout), phase))
            }
        }
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

/// The writer thread: one request at a time, until the dict closes.
fn serve(conn: Connection, queue: mpsc::Receiver<Request>, busy: Duration) {
    while let Ok(request) = queue.recv() {
        match request {
            Request::Group(group) => {
                let result = run_group(&conn, &group, busy);
                let _ = group.reply.send(result);
            }
            Request::Pragmas(reply) => {
                let _ = reply.send(pragmas(&conn));
            }
        }
    }
}

fn pragmas(conn: &Connection) -> Result<(String, i64), DbError> {
    let journal = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0));
    let synchronous = conn.query_row("PRAGMA synchronous", [], |r| r.get(0));
    journal
        .and_then(|j| Ok((j, synchronous?)))
        .map_err(DbError::Sqlite)
}

/// Runs one group; a transaction left open by a failure is rolled back.
fn run_group(conn: &Connection, group: &Group, busy: Duration) -> GroupResult {
    if group.state.load(Ordering::Acquire) != RUNNING {
        return Err((DbError::Timeout(Duration::ZERO), Phase::Begin));
    }
    let left = group.deadline.saturating_duration_since(Instant::now());
    let result = conn
        .busy_timeout(left.min(busy))
        .map_err(|e| (DbError::Sqlite(e), Phase::Begin))
        .and_then(|()| transaction(conn, group));
    if result.is_err() && !conn.is_autocommit() {
        // Nothing of the group stays; a connection that can't even roll back is broken,
        // and its next BEGIN says so.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn transaction(conn: &Connection, group: &Group) -> GroupResult {
    let sqlite = |phase| move |e| (DbError::Sqlite(e), phase);
    // Take the write lock at once: no deadlock with other processes' readers.
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(sqlite(Phase::Begin))?;
    let results = if let [alone] = group.commits.as_slice() {
        // Alone: no savepoint; its failure is the group's.
        vec![Ok(
            run_steps(conn, alone).map_err(|e| (e, Phase::Statements))?
        )]
    } else {
        let mut results = Vec::with_capacity(group.commits.len());
        for steps in &group.commits {
            conn.execute_batch("SAVEPOINT dict_commit")
                .map_err(sqlite(Phase::Statements))?;
            match run_steps(conn, steps) {
                Ok(missing) => {
                    conn.execute_batch("RELEASE dict_commit")
                        .map_err(sqlite(Phase::Statements))?;
                    results.push(Ok(missing));
                }
                // This commit alone is rolled back and gets its error; the others stay.
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO dict_commit; RELEASE dict_commit")
                        .map_err(sqlite(Phase::Statements))?;
                    results.push(Err(e));
                }
            }
        }
        results
    };
    if group
        .state
        .compare_exchange(RUNNING, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // The caller stopped waiting and was told the group failed: it must not apply.
        return Err((DbError::Timeout(Duration::ZERO), Phase::Statements));
    }
    conn.execute_batch("COMMIT")
        .map_err(sqlite(Phase::Committing))?;
    Ok(results)
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
