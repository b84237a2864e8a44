//! SQLite lookups without a thread hop. sqlx runs every SQLite connection on a worker
//! thread of its own, so each query costs two thread wake-ups, more than the few
//! microseconds SQLite needs to find a row by its key. Lookups therefore run on
//! connections of their own (rusqlite, on the same SQLite library), read-only, called
//! synchronously on the tokio worker that asks, as Dovecot's dict process does. In WAL
//! mode readers never wait for the writer; their busy timeout (at most [`MAX_BUSY`]) only
//! covers WAL recovery.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Statement};

use super::param::Param;
use super::types::{Cell, DbError};

/// Idle connections kept.
const MAX_IDLE: usize = 4;
/// The longest a lookup waits for a lock (WAL recovery by another process): it holds a
/// tokio worker meanwhile, so it fails after this rather than after the dict's timeout.
const MAX_BUSY: Duration = Duration::from_secs(1);
/// Prepared statements kept per connection (one per lookup shape).
const STATEMENT_CACHE: usize = 64;

/// Read-only connections for lookups.
#[derive(Debug)]
pub(crate) struct SqliteReaders {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl SqliteReaders {
    pub fn new(path: PathBuf, busy_timeout: Duration) -> SqliteReaders {
        SqliteReaders {
            path,
            busy_timeout: busy_timeout.min(MAX_BUSY),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections; later lookups fail, as on a closed sqlx pool.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn take(&self) -> Result<Connection, DbError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DbError::Sqlx(sqlx::Error::PoolClosed));
        }
        self.open().map_err(to_db_error)
    }

    fn open(&self) -> Result<Connection, rusqlite::Error> {
        if let Some(c) = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(self.busy_timeout)?;
        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::Acquire) {
            idle.push(c);
        }
    }

    /// The first row of `sql`, if any.
    pub fn first_row(&self, sql: &str, params: &[Param]) -> Result<Option<Vec<Cell>>, DbError> {
        let conn = self.take()?;
        let row = first_row(&conn, sql, params);
        // A connection whose statement failed is not kept: its state is unknown.
        if row.is_ok() {
            self.give_back(conn);
        }
        row.map_err(to_db_error)
    }
}

fn first_row(
    conn: &Connection,
    sql: &str,
    params: &[Param],
) -> Result<Option<Vec<Cell>>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    (0..columns)
        .map(|i| {
            Ok(match row.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Float(v),
                ValueRef::Text(b) | ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
            })
        })
        .collect::<Result<Vec<_>, rusqlite::Error>>()
        .map(Some)
}

/// Binds `params` to `stmt`, in order. Text is bound as TEXT with its bytes unchanged,
/// UTF-8 or not: what sqlx's writes stored (db/sqlite.rs) and what Dovecot stores.
pub(super) fn bind(stmt: &mut Statement<'_>, params: &[Param]) -> Result<(), rusqlite::Error> {
    for (i, p) in params.iter().enumerate() {
        let at = i + 1;
        match p {
            Param::Text(t) => {
                stmt.raw_bind_parameter(at, ToSqlOutput::Borrowed(ValueRef::Text(t)))?
            }
            Param::Int(v) => stmt.raw_bind_parameter(at, v)?,
            Param::Double(v) => stmt.raw_bind_parameter(at, v)?,
            Param::NullInt => stmt.raw_bind_parameter(at, None::<i64>)?,
            Param::Blob(b) => stmt.raw_bind_parameter(at, b.as_slice())?,
        }
    }
    Ok(())
}

/// rusqlite's errors as the dict reports them: SQLite's message, as sqlx gives it.
fn to_db_error(e: rusqlite::Error) -> DbError {
    DbError::Sqlite(e)
}
