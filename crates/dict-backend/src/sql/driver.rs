//! The three sqlx pools behind one enum: running a query as a stream of rows of [`Cell`]s,
//! running a list of statements in one transaction, and reading table definitions.
//!
//! SQLite gets two pools: one connection for all writes (so writers never fight over the
//! database lock) and several readers (WAL mode lets them read while a commit runs).
//! MySQL and PostgreSQL get one lazily connecting pool per configured host, used in order:
//! when a host cannot be reached the next one is tried (failover).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Connection, Database, Pool, Row, TypeInfo, ValueRef};
use tokio::time::Instant;

use super::connect::{PoolSettings, Target};
use super::dialect::{ColumnType, Dialect};
use super::query::Param;
use super::text_param::MysqlText;

/// What PostgreSQL's client library says of text that isn't valid in the database's
/// encoding (UTF-8), which Dovecot's pgsql dict answers.
pub(crate) const NOT_UTF8: &str = "invalid multibyte character";

/// One value as the database returned it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bytes(Vec<u8>),
}

/// A database-level failure.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlx(sqlx::Error),
    /// The operation did not finish within the dict's timeout.
    Timeout(Duration),
    /// Refused before reaching the database.
    Invalid(String),
}

impl DbError {
    /// The connection (or the way to it) failed, rather than the statement: worth
    /// retrying on another connection when nothing can have been applied.
    pub fn is_connection(&self) -> bool {
        match self {
            DbError::Sqlx(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            DbError::Timeout(_) => true,
            DbError::Invalid(_) => false,
        }
    }

    /// Refused here, before anything was sent: the connection is fine.
    pub fn is_refused(&self) -> bool {
        matches!(self, DbError::Invalid(_))
    }

    /// An error reported by the database server about a statement.
    pub fn is_database(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(_)))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => f.write_str(e.message()),
            DbError::Sqlx(sqlx::Error::PoolTimedOut) => {
                f.write_str("timed out connecting to the database")
            }
            DbError::Sqlx(e) => write!(f, "{e}"),
            DbError::Timeout(t) => write!(f, "timed out after {} ms", t.as_millis()),
            DbError::Invalid(s) => f.write_str(s),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError::Sqlx(e)
    }
}

/// How far a transaction got, to tell a failed commit from an uncertain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Acquiring a connection or sending BEGIN: nothing can have been applied.
    Begin,
    /// Running the statements: the database rolls them back if we go away.
    Statements,
    /// COMMIT sent: it may or may not have been applied.
    Committing,
    /// One idempotent statement sent on its own (autocommit): it may have been applied,
    /// but running it again on a fresh connection gives the same rows either way.
    Repeatable,
}

/// One step of a transaction.
#[derive(Debug, Clone)]
pub(crate) enum Exec {
    /// Run `sql`; with `count`, a statement that touched no row makes the commit NOTFOUND.
    /// Only increments count; every other statement (an upsert or a delete) is idempotent.
    Run {
        sql: Arc<str>,
        params: Vec<Param>,
        count: bool,
    },
    /// Run `update`; if it touched no row, run `insert`.
    UpdateElseInsert {
        update: Arc<str>,
        update_params: Vec<Param>,
        insert: Arc<str>,
        insert_params: Vec<Param>,
    },
    /// An increment that can't change its row (its diffs add up to 0) where the database
    /// counts changed rows, not matched ones (MySQL, as Dovecot uses it): NOTFOUND.
    Unchanged,
}

impl Exec {
    /// The values this step binds.
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        let (a, b): (&[Param], &[Param]) = match self {
            Exec::Run { params, .. } => (params, &[]),
            Exec::UpdateElseInsert {
                update_params,
                insert_params,
                ..
            } => (update_params, insert_params),
            Exec::Unchanged => (&[], &[]),
        };
        a.iter().chain(b)
    }
}

/// Columns and unique keys of a table, for `check()` and PostgreSQL's parameter types.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableInfo {
    /// Column names as stored, with their type (type only known on PostgreSQL).
    pub columns: HashMap<String, Option<ColumnType>>,
    /// Each unique index or primary key, as its column names.
    pub unique_keys: Vec<Vec<String>>,
}

/// Bind parameters and decode rows, per database.
trait Backend: Database + Sized {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError>;
    fn cells(row: &Self::Row) -> Result<Vec<Cell>, DbError>;

    fn query<'q>(
        sql: &'q str,
        params: &'q [Param],
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        params
            .iter()
            .try_fold(sqlx::query::<Self>(sql), |q, p| Self::bind(q, p))
    }
}

impl Backend for Sqlite {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        Ok(match p {
            // Text that is not UTF-8 goes as a BLOB that the statement casts back to TEXT
            // (`SqlText::param`): stored and compared as text with the bytes unchanged.
            Param::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => q.bind(s),
                Err(_) => q.bind(t.as_slice()),
            },
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    }

    fn cells(row: &SqliteRow) -> Result<Vec<Cell>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Cell::Null);
                }
                // Matched in place: no String per cell on the lookup path.
                let info = raw.type_info();
                Ok(match info.name() {
                    "INTEGER" => Cell::Int(row.try_get_unchecked::<i64, _>(i)?),
                    "REAL" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
                    _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
                })
            })
            .collect()
    }
}

impl Backend for MySql {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        Ok(match p {
            // Always as a string, also when not UTF-8: the column decides, as for Dovecot.
            Param::Text(t) => q.bind(MysqlText(t)),
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    }

    fn cells(row: &MySqlRow) -> Result<Vec<Cell>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Cell::Null);
                }
                // Matched in place: no String per cell on the lookup path.
                let info = raw.type_info();
                Ok(match info.name() {
                    "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                        Cell::Int(row.try_get_unchecked::<i64, _>(i)?)
                    }
                    t if t.ends_with("UNSIGNED") || t == "BIT" => Cell::UInt(row.try_get_unchecked::<u64, _>(i)?),
                    "FLOAT" => Cell::Float(f64::from(row.try_get_unchecked::<f32, _>(i)?)),
                    "DOUBLE" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
                    t @ ("DATE" | "TIME" | "DATETIME" | "TIMESTAMP") => {
                        return Err(DbError::Invalid(format!(
                            "column {} has type {t}, which the dict can't read (cast it to a string in a view)",
                            row.column(i).name()
                        )))
                    }
                    _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
                })
            })
            .collect()
    }
}

impl Backend for Postgres {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        Ok(match p {
            Param::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => q.bind(s),
                // Callers refuse such text before anything is sent (`refuse_non_utf8`).
                Err(_) => return Err(DbError::Invalid(NOT_UTF8.into())),
            },
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    }

    /// Every selected column is text or bytea (see `SqlText::select`).
    fn cells(row: &PgRow) -> Result<Vec<Cell>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Cell::Null);
                }
                // Matched in place: no String per cell on the lookup path.
                let info = raw.type_info();
                Ok(match info.name() {
                    "INT2" => Cell::Int(i64::from(row.try_get::<i16, _>(i)?)),
                    "INT4" => Cell::Int(i64::from(row.try_get::<i32, _>(i)?)),
                    "INT8" => Cell::Int(row.try_get::<i64, _>(i)?),
                    _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
                })
            })
            .collect()
    }
}

/// The pools of one server, one per configured host, tried in order.
#[derive(Debug)]
pub(crate) struct Hosts<DB: Database> {
    pools: Vec<Pool<DB>>,
    names: Vec<String>,
    current: AtomicUsize,
    connect_timeout: Option<Duration>,
}

impl<DB: Database> Hosts<DB> {
    async fn acquire(&self, deadline: Instant) -> Result<PoolConnection<DB>, DbError> {
        let n = self.pools.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = DbError::Sqlx(sqlx::Error::PoolTimedOut);
        for i in 0..n {
            let idx = (start + i) % n;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Leave the hosts still to try their share of the time.
            let mut budget = remaining / u32::try_from(n - i).unwrap_or(u32::MAX);
            if let Some(t) = self.connect_timeout {
                budget = budget.min(t);
            }
            match tokio::time::timeout(budget, self.pools[idx].acquire()).await {
                Ok(Ok(conn)) => {
                    if idx != start {
                        tracing::warn!("sql dict: switched to database host {}", self.names[idx]);
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok(conn);
                }
                Ok(Err(e)) => last = DbError::Sqlx(e),
                Err(_) => last = DbError::Sqlx(sqlx::Error::PoolTimedOut),
            }
            if n > 1 {
                tracing::warn!(
                    "sql dict: database host {} unavailable: {last}",
                    self.names[idx]
                );
            }
        }
        Err(last)
    }
}

/// The pools of a dict.
#[derive(Debug)]
pub(crate) enum Db {
    Sqlite {
        readers: Pool<Sqlite>,
        writer: Pool<Sqlite>,
        /// Dict commits go through here, several to a transaction.
        group: Arc<super::group::GroupCommit>,
        /// Lookups go through here, without sqlx's thread hop.
        lookups: Arc<super::sqlite_read::SqliteReaders>,
    },
    Mysql(Hosts<MySql>),
    Postgres(Hosts<Postgres>),
}

/// A pooled connection.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Mysql(PoolConnection<MySql>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs `$body` with `$c` bound to the concrete connection and `$db` to its database type.
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Mysql($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
    ($conn:expr, $db:ident, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => {
                type $db = Sqlite;
                $body
            }
            Conn::Mysql($c) => {
                type $db = MySql;
                $body
            }
            Conn::Postgres($c) => {
                type $db = Postgres;
                $body
            }
        }
    };
}

/// Runs the steps of one dict commit on `$exec` (a transaction or savepoint of database
/// `$db`); the future's output says whether a counted statement touched no row.
macro_rules! run_steps {
    ($db:ty, $exec:expr, $steps:expr) => {
        async {
            let mut missing = false;
            for step in $steps {
                match step {
                    Exec::Run { sql, params, count } => {
                        let done = <$db as Backend>::query(sql, params)?
                            .execute(&mut *$exec)
                            .await?;
                        if *count && done.rows_affected() == 0 {
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
                        let done = <$db as Backend>::query(update, update_params)?
                            .execute(&mut *$exec)
                            .await?;
                        if done.rows_affected() == 0 {
                            <$db as Backend>::query(insert, insert_params)?
                                .execute(&mut *$exec)
                                .await?;
                        }
                    }
                }
            }
            Ok::<bool, DbError>(missing)
        }
    };
}

/// Options shared by all SQLite connections of a dict.
pub(crate) struct SqliteSettings {
    pub create: bool,
    pub readers: u32,
}

impl Db {
    /// Creates the pools. SQLite opens its writer at once (a missing or unreadable file is
    /// a start-up error); MySQL and PostgreSQL connect lazily, so the dict starts while
    /// the database is down and works once it is back.
    pub async fn open(
        target: &Target,
        timeout: Duration,
        sqlite: SqliteSettings,
    ) -> Result<Db, DbError> {
        match target {
            Target::Sqlite { path } => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(sqlite.create)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(timeout);
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options.clone())
                    .await?;
                let readers = SqlitePoolOptions::new()
                    .max_connections(sqlite.readers.max(1))
                    .acquire_timeout(timeout)
                    .connect_lazy_with(options.create_if_missing(false));
                let group = Arc::new(super::group::GroupCommit::new(writer.clone(), timeout));
                let lookups = Arc::new(super::sqlite_read::SqliteReaders::new(
                    path.clone(),
                    timeout,
                ));
                Ok(Db::Sqlite {
                    readers,
                    writer,
                    group,
                    lookups,
                })
            }
            Target::Mysql { hosts, pool } => Ok(Db::Mysql(hosts_of(
                hosts, pool, timeout, mysql_pool, mysql_name,
            ))),
            Target::Postgres { hosts, pool } => Ok(Db::Postgres(hosts_of(
                hosts, pool, timeout, pg_pool, pg_name,
            ))),
        }
    }

    /// SQLite's lookup connections.
    pub fn sqlite_lookups(&self) -> Option<&super::sqlite_read::SqliteReaders> {
        match self {
            Db::Sqlite { lookups, .. } => Some(lookups),
            _ => None,
        }
    }

    /// SQLite's group commit queue.
    pub fn group(&self) -> Option<&super::group::GroupCommit> {
        match self {
            Db::Sqlite { group, .. } => Some(group),
            _ => None,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Mysql(_) => Dialect::Mysql,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A connection for reading, or (`write`) the one used for transactions.
    pub async fn acquire(&self, write: bool, deadline: Instant) -> Result<Conn, DbError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self {
            Db::Sqlite {
                readers, writer, ..
            } => {
                let pool = if write { writer } else { readers };
                match tokio::time::timeout(remaining, pool.acquire()).await {
                    Ok(conn) => Ok(Conn::Sqlite(conn?)),
                    Err(_) => Err(DbError::Sqlx(sqlx::Error::PoolTimedOut)),
                }
            }
            Db::Mysql(h) => Ok(Conn::Mysql(h.acquire(deadline).await?)),
            Db::Postgres(h) => Ok(Conn::Postgres(h.acquire(deadline).await?)),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite {
                readers,
                writer,
                lookups,
                ..
            } => {
                lookups.close();
                readers.close().await;
                writer.close().await;
            }
            Db::Mysql(h) => {
                for p in &h.pools {
                    p.close().await;
                }
            }
            Db::Postgres(h) => {
                for p in &h.pools {
                    p.close().await;
                }
            }
        }
    }
}

fn hosts_of<DB: Database, O: Clone>(
    hosts: &[O],
    settings: &PoolSettings,
    timeout: Duration,
    make: fn(&O, &PoolSettings, Duration) -> Pool<DB>,
    name: fn(&O) -> String,
) -> Hosts<DB> {
    Hosts {
        pools: hosts.iter().map(|o| make(o, settings, timeout)).collect(),
        names: hosts.iter().map(name).collect(),
        current: AtomicUsize::new(0),
        connect_timeout: settings.connect_timeout,
    }
}

/// Idle connections older than this are pinged before use, so a database restart costs
/// no failed request.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

macro_rules! server_pool {
    ($options:ty) => {
        <$options>::new()
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
    };
}

fn mysql_pool(o: &MySqlConnectOptions, s: &PoolSettings, timeout: Duration) -> Pool<MySql> {
    server_pool!(MySqlPoolOptions)
        .max_connections(s.maxconns)
        .acquire_timeout(timeout)
        .connect_lazy_with(o.clone())
}

fn pg_pool(o: &PgConnectOptions, s: &PoolSettings, timeout: Duration) -> Pool<Postgres> {
    server_pool!(PgPoolOptions)
        .max_connections(s.maxconns)
        .acquire_timeout(timeout)
        .connect_lazy_with(o.clone())
}

fn mysql_name(o: &MySqlConnectOptions) -> String {
    match o.get_socket() {
        Some(s) => s.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    }
}

fn pg_name(o: &PgConnectOptions) -> String {
    match o.get_socket() {
        Some(s) => s.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    }
}

impl Conn {
    /// The rows of a query, decoded, as they arrive.
    pub fn fetch<'c>(
        &'c mut self,
        sql: &'c str,
        params: &'c [Param],
    ) -> BoxStream<'c, Result<Vec<Cell>, DbError>> {
        with_conn!(self, DB, c => match <DB as Backend>::query(sql, params) {
            Ok(q) => q.fetch(&mut **c).map(|r| r.map_err(DbError::from).and_then(|row| <DB as Backend>::cells(&row))).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
    }

    /// The first row of a query, if any.
    pub async fn fetch_first(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Option<Vec<Cell>>, DbError> {
        with_conn!(self, DB, c => {
            let row = <DB as Backend>::query(sql, params)?.fetch_optional(&mut **c).await?;
            row.map(|r| <DB as Backend>::cells(&r)).transpose()
        })
    }

    /// Runs `steps` in one transaction. Returns whether a counted statement touched no
    /// row. `phase` tells the caller how far it got when this fails or is cancelled.
    pub async fn transaction(
        &mut self,
        steps: &[Exec],
        phase: &mut Phase,
    ) -> Result<bool, DbError> {
        *phase = Phase::Begin;
        // One idempotent statement (a set or an unset, not an increment) needs no
        // BEGIN/COMMIT round trips on a database server: it commits on its own, as Dovecot
        // sends it. If the connection fails under it, it may have been applied, but the
        // caller can run it again on a fresh connection (as after a failed BEGIN) and get
        // the same rows either way. SQLite keeps BEGIN IMMEDIATE (one local writer).
        if let [Exec::Run {
            sql,
            params,
            count: false,
        }] = steps
        {
            if !matches!(self, Conn::Sqlite(_)) {
                *phase = Phase::Repeatable;
                return with_conn!(self, DB, c => {
                    <DB as Backend>::query(sql, params)?.execute(&mut **c).await?;
                    Ok(false)
                });
            }
        }
        with_conn!(self, DB, c => {
            let mut tx = if matches!(self_kind::<DB>(), Dialect::Sqlite) {
                // Take the write lock at once: no deadlock with other processes' readers.
                Connection::begin_with(&mut **c, "BEGIN IMMEDIATE").await?
            } else {
                Connection::begin(&mut **c).await?
            };
            *phase = Phase::Statements;
            let missing = run_steps!(DB, tx, steps).await?;
            *phase = Phase::Committing;
            tx.commit().await?;
            Ok(missing)
        })
    }

    /// SQLite group commit: several dict commits in one database transaction, so that
    /// they share one fsync. Each commit runs in a savepoint of its own: a commit whose
    /// statement fails is rolled back alone and gets its error; the others stay. The
    /// outer `Result` is the transaction's own (BEGIN, a savepoint, COMMIT); `phase` says
    /// how far it got.
    pub async fn group_transaction(
        &mut self,
        commits: &[&[Exec]],
        phase: &mut Phase,
    ) -> Result<Vec<Result<bool, DbError>>, DbError> {
        *phase = Phase::Begin;
        let Conn::Sqlite(c) = self else {
            return Err(DbError::Invalid("group commit is for SQLite only".into()));
        };
        let mut tx = Connection::begin_with(&mut **c, "BEGIN IMMEDIATE").await?;
        *phase = Phase::Statements;
        let mut results = Vec::with_capacity(commits.len());
        for steps in commits {
            let mut savepoint = tx.begin().await?;
            match run_steps!(Sqlite, savepoint, *steps).await {
                Ok(missing) => {
                    savepoint.commit().await?;
                    results.push(Ok(missing));
                }
                // The statement (or binding its values) failed: this commit alone.
                Err(e) if e.is_database() || matches!(e, DbError::Invalid(_)) => {
                    savepoint.rollback().await?;
                    results.push(Err(e));
                }
                // The connection itself failed: the whole transaction is gone.
                Err(e) => return Err(e),
            }
        }
        *phase = Phase::Committing;
        tx.commit().await?;
        Ok(results)
    }

    /// Don't give this connection back to the pool (its state is unknown).
    pub fn discard(&mut self) {
        with_conn!(self, c => c.close_on_drop())
    }

    /// Columns and unique keys of `table` (as written in the map file).
    pub async fn table_info(&mut self, table: &str) -> Result<TableInfo, DbError> {
        let mut info = TableInfo::default();
        let (schema, name) = match table.rsplit_once('.') {
            Some((s, t)) => (
                Some(super::dialect::ident_name(s)),
                super::dialect::ident_name(t),
            ),
            None => (None, super::dialect::ident_name(table)),
        };
        match self {
            Conn::Sqlite(c) => {
                let schema = schema.unwrap_or_else(|| "main".into());
                let rows = sqlx::query("SELECT name, pk FROM pragma_table_info(?1, ?2)")
                    .bind(&name)
                    .bind(&schema)
                    .fetch_all(&mut **c)
                    .await?;
                let mut pk = Vec::new();
                for r in &rows {
                    let col: String = r.try_get(0)?;
                    let pos: i64 = r.try_get(1)?;
                    if pos > 0 {
                        pk.push((pos, col.to_ascii_lowercase()));
                    }
                    info.columns.insert(col.to_ascii_lowercase(), None);
                }
                if !pk.is_empty() {
                    pk.sort();
                    info.unique_keys
                        .push(pk.into_iter().map(|(_, c)| c).collect());
                }
                let indexes = sqlx::query(
                    "SELECT name FROM pragma_index_list(?1, ?2) WHERE \"unique\" AND partial = 0",
                )
                .bind(&name)
                .bind(&schema)
                .fetch_all(&mut **c)
                .await?;
                for idx in &indexes {
                    let idx: String = idx.try_get(0)?;
                    let cols =
                        sqlx::query("SELECT name FROM pragma_index_info(?1, ?2) ORDER BY seqno")
                            .bind(&idx)
                            .bind(&schema)
                            .fetch_all(&mut **c)
                            .await?;
                    let cols: Result<Vec<Option<String>>, _> =
                        cols.iter().map(|r| r.try_get(0)).collect();
                    // An expression column has no name: such an index can't be a target.
                    if let Some(cols) = cols?.into_iter().collect::<Option<Vec<_>>>() {
                        info.unique_keys
                            .push(cols.into_iter().map(|c| c.to_ascii_lowercase()).collect());
                    }
                }
            }
            Conn::Mysql(c) => {
                let schema_expr = if schema.is_some() { "?" } else { "DATABASE()" };
                let sql = format!(
                    "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {schema_expr} AND TABLE_NAME = ?"
                );
                let mut q = sqlx::query(&sql);
                if let Some(s) = &schema {
                    q = q.bind(s.clone());
                }
                for r in q.bind(&name).fetch_all(&mut **c).await? {
                    let col: String = r.try_get(0)?;
                    info.columns.insert(col.to_ascii_lowercase(), None);
                }
                let sql = format!(
                    "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
                     WHERE TABLE_SCHEMA = {schema_expr} AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
                );
                let mut q = sqlx::query(&sql);
                if let Some(s) = &schema {
                    q = q.bind(s.clone());
                }
                let mut keys: Vec<(String, Vec<String>)> = Vec::new();
                for r in q.bind(&name).fetch_all(&mut **c).await? {
                    let (idx, col): (String, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
                    let col = col.unwrap_or_default().to_ascii_lowercase();
                    match keys.last_mut() {
                        Some((last, cols)) if *last == idx => cols.push(col),
                        _ => keys.push((idx, vec![col])),
                    }
                }
                info.unique_keys = keys.into_iter().map(|(_, cols)| cols).collect();
            }
            Conn::Postgres(c) => {
                let rows = sqlx::query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                )
                .bind(table)
                .fetch_all(&mut **c)
                .await?;
                for r in &rows {
                    let (col, name, category): (String, String, String) =
                        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    let category = category.chars().next().unwrap_or('X');
                    info.columns
                        .insert(col, Some(ColumnType { name, category }));
                }
                let rows = sqlx::query(
                    "SELECT array_to_string(ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o), ',') \
                     FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                     AND i.indpred IS NULL AND i.indexprs IS NULL",
                )
                .bind(table)
                .fetch_all(&mut **c)
                .await?;
                for r in &rows {
                    let cols: String = r.try_get(0)?;
                    info.unique_keys
                        .push(cols.split(',').map(str::to_string).collect());
                }
            }
        }
        Ok(info)
    }
}

/// The dialect of a backend type (lets generic code in `with_conn!` branch on it).
fn self_kind<DB: Database>() -> Dialect {
    match DB::NAME {
        "SQLite" => Dialect::Sqlite,
        "MySQL" => Dialect::Mysql,
        _ => Dialect::Postgres,
    }
}
