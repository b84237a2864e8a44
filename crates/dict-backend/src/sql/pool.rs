//! The pools of a dict and failover between hosts.
//!
//! SQLite gets two pools: one connection for all writes (so writers never fight over the
//! database lock) and several readers (WAL mode lets them read while a commit runs).
//! MySQL and PostgreSQL get one lazily connecting pool per configured host, used in order:
//! when a host cannot be reached the next one is tried (failover).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Database, Pool};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connect::{PoolSettings, Target};
use super::db::Conn;
use super::dialect::Dialect;
use super::sqlite_read::SqliteReaders;
use super::types::DbError;

/// The pools of one server, one per configured host, tried in order.
#[derive(Debug)]
pub(crate) struct Hosts<DB: Database> {
    pools: Vec<Pool<DB>>,
    names: Vec<String>,
    current: AtomicUsize,
    connect_timeout: Option<Duration>,
    /// Connections whose last operation finished cleanly, newest last. sqlx pings every
    /// connection given back to its pool, one more round trip to the database per
    /// operation; these skip that (see [`Db::release`]).
    kept: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
    /// At most this many are kept.
    keep_max: usize,
    /// Told when a connection is kept: a caller waiting for the pool (whose connections
    /// may all be kept) takes it instead.
    kept_one: Notify,
}

impl<DB: Database> Hosts<DB> {
    async fn acquire(&self, deadline: Instant) -> Result<PoolConnection<DB>, DbError> {
        while let Some((mut conn, since)) = self.pop_kept() {
            // As the pool does (`PING_IDLE_AFTER`): a connection idle for long may be dead.
            if since.elapsed() <= PING_IDLE_AFTER {
                return Ok(conn);
            }
            match tokio::time::timeout_at(deadline, conn.ping()).await {
                Ok(Ok(())) => return Ok(conn),
                _ => conn.close_on_drop(),
            }
        }
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
            match tokio::time::timeout(budget, self.acquire_from(idx)).await {
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

    /// A connection of host `idx` from its pool, or one kept meanwhile.
    async fn acquire_from(&self, idx: usize) -> Result<PoolConnection<DB>, sqlx::Error> {
        let mut acquire = std::pin::pin!(self.pools[idx].acquire());
        loop {
            tokio::select! {
                conn = &mut acquire => return conn,
                () = self.kept_one.notified() => {
                    if let Some((conn, _)) = self.pop_kept() {
                        return Ok(conn);
                    }
                }
            }
        }
    }

    fn pop_kept(&self) -> Option<(PoolConnection<DB>, Instant)> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `conn` for the next operation. Only with one host: with several, a kept
    /// connection could outlive a switch to another host.
    fn keep(&self, conn: PoolConnection<DB>) {
        if self.pools.len() != 1 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < self.keep_max {
            kept.push((conn, Instant::now()));
            drop(kept);
            self.kept_one.notify_one();
        }
    }

    /// Gives the kept connections back (the pools wait for them when closing).
    fn drop_kept(&self) {
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner));
        drop(kept);
    }
}

/// The pools of a dict.
#[derive(Debug)]
pub(crate) enum Db {
    Sqlite {
        readers: Pool<Sqlite>,
        /// The one connection dict commits use, several to a transaction.
        writer: Pool<Sqlite>,
        /// Lookups go through here, without sqlx's thread hop.
        lookups: Arc<SqliteReaders>,
    },
    Mysql(Hosts<MySql>),
    Postgres(Hosts<Postgres>),
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
                let lookups = Arc::new(SqliteReaders::new(path.clone(), timeout));
                Ok(Db::Sqlite {
                    readers,
                    writer,
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
    pub fn sqlite_lookups(&self) -> Option<&SqliteReaders> {
        match self {
            Db::Sqlite { lookups, .. } => Some(lookups),
            _ => None,
        }
    }

    /// SQLite's writer connection.
    pub fn sqlite_writer(&self) -> Option<&Pool<Sqlite>> {
        match self {
            Db::Sqlite { writer, .. } => Some(writer),
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

    /// Gives back a MySQL or PostgreSQL connection whose operation finished cleanly (no
    /// error, not cancelled), for the next operation to use without sqlx's ping. Any
    /// other connection is dropped as usual.
    pub fn release(&self, conn: Conn) {
        match (self, conn) {
            (Db::Mysql(h), Conn::Mysql(c)) => h.keep(c),
            (Db::Postgres(h), Conn::Postgres(c)) => h.keep(c),
            _ => {}
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
                h.drop_kept();
                for p in &h.pools {
                    p.close().await;
                }
            }
            Db::Postgres(h) => {
                h.drop_kept();
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
        kept: Mutex::new(Vec::new()),
        keep_max: usize::try_from(settings.maxconns).unwrap_or(usize::MAX),
        kept_one: Notify::new(),
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
