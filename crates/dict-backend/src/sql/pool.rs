//! The pools of a dict and failover between hosts.
//!
//! SQLite gets one writing connection on a thread of its own for dict commits (so writers
//! never fight over the database lock, see [`sqlite_write`](super::sqlite_write)), a pool
//! of one for the other writes (expiry), read-only connections for lookups, and a pool of
//! readers for iterations (WAL mode lets them read while a commit runs).
//! MySQL and PostgreSQL get one lazily connecting pool per configured host, used in order:
//! when a host cannot be reached (or, with `target_session_attrs`, is the wrong kind) the
//! next one is tried (failover), and the dict stays on it until it fails in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dict_config::{SqliteJournalMode, SqliteOptions, SqliteSynchronous};
use futures::future::BoxFuture;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, Postgres};
use sqlx::sqlite::{self, Sqlite, SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Database, Pool};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connect::{PoolSettings, Target};
use super::db::Conn;
use super::dialect::Dialect;
use super::session::SessionAttrs;
use super::sqlite_read::SqliteReaders;
use super::sqlite_write::SqliteWriter;
use super::types::DbError;

/// One connection attempt to a host, without sqlx's retries; `Ok` if it may be used.
type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), sqlx::Error>> + Send + Sync>;

/// The pools of one server, one per configured host, tried in order.
pub(crate) struct Hosts<DB: Database> {
    pools: Vec<Pool<DB>>,
    /// Run before a pool connects: sqlx's own connect retries a refused connection until
    /// the deadline, which would spend the request's time on a dead host.
    probes: Vec<Probe>,
    /// Woken when a probe finds the host down: requests queued in its pool move on.
    down: Vec<Notify>,
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

impl<DB: Database> std::fmt::Debug for Hosts<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosts")
            .field("names", &self.names)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
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

    /// A connection of host `idx` (or, with one host, one kept meanwhile); when the pool
    /// would have to connect (nothing idle, room for more), the host is probed first, and a
    /// failed probe sends every request waiting in that pool on to the next host (with one
    /// host there is nothing to fail over to: sqlx's retries are what we want).
    async fn acquire_from(&self, idx: usize) -> Result<PoolConnection<DB>, sqlx::Error> {
        let pool = &self.pools[idx];
        if self.pools.len() == 1 {
            let mut acquire = std::pin::pin!(pool.acquire());
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
        let would_connect =
            pool.num_idle() == 0 && pool.size() < pool.options().get_max_connections();
        let down = self.down[idx].notified();
        if would_connect {
            if let Err(e) = (self.probes[idx])().await {
                self.down[idx].notify_waiters();
                return Err(e);
            }
        }
        tokio::select! {
            conn = pool.acquire() => conn,
            () = down => Err(sqlx::Error::Io(std::io::Error::other("database host is down"))),
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
        /// Writes other than dict commits (expiry), and the file's creation.
        writer: Pool<Sqlite>,
        /// The connection dict commits use, several to a transaction.
        commits: SqliteWriter,
        /// Lookups go through here, without sqlx's thread hop.
        lookups: Arc<SqliteReaders>,
        /// `sqlite_synchronous` and `sqlite_journal_mode` as configured.
        options: SqliteOptions,
    },
    Mysql(Hosts<MySql>),
    Postgres(Hosts<Postgres>),
}

/// `sqlite_journal_mode` (default WAL, as Dovecot 2.4) and `sqlite_synchronous` (default:
/// no pragma, SQLite's own default) as connect options.
fn sqlite_options(options: &SqliteOptions) -> SqliteConnectOptions {
    let journal = match options.journal_mode {
        None | Some(SqliteJournalMode::Wal) => sqlite::SqliteJournalMode::Wal,
        Some(SqliteJournalMode::Delete) => sqlite::SqliteJournalMode::Delete,
    };
    let connect = SqliteConnectOptions::new().journal_mode(journal);
    match options.synchronous {
        None | Some(SqliteSynchronous::Default) => connect,
        Some(SqliteSynchronous::Off) => connect.synchronous(sqlite::SqliteSynchronous::Off),
        Some(SqliteSynchronous::Normal) => connect.synchronous(sqlite::SqliteSynchronous::Normal),
        Some(SqliteSynchronous::Full) => connect.synchronous(sqlite::SqliteSynchronous::Full),
        Some(SqliteSynchronous::Extra) => connect.synchronous(sqlite::SqliteSynchronous::Extra),
    }
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
            Target::Sqlite { path, options } => {
                let connect = sqlite_options(options)
                    .filename(path)
                    .create_if_missing(sqlite.create)
                    .busy_timeout(timeout);
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(connect.clone())
                    .await?;
                let readers = SqlitePoolOptions::new()
                    .max_connections(sqlite.readers.max(1))
                    .acquire_timeout(timeout)
                    .connect_lazy_with(connect.create_if_missing(false));
                let lookups = Arc::new(SqliteReaders::new(path.clone(), timeout));
                // After the pool: the file exists and has its journal mode.
                let synchronous = match options.synchronous {
                    None | Some(SqliteSynchronous::Default) => None,
                    Some(level) => Some(level.as_str()),
                };
                let commits = SqliteWriter::open(path, synchronous, timeout)?;
                Ok(Db::Sqlite {
                    readers,
                    writer,
                    commits,
                    lookups,
                    options: *options,
                })
            }
            Target::Mysql { hosts, pool } => Ok(Db::Mysql(hosts_of(
                hosts,
                pool,
                timeout,
                Server {
                    pool: mysql_pool,
                    probe: mysql_probe,
                    name: mysql_name,
                },
            ))),
            Target::Postgres { hosts, pool } => Ok(Db::Postgres(hosts_of(
                hosts,
                pool,
                timeout,
                Server {
                    pool: pg_pool,
                    probe: pg_probe,
                    name: pg_name,
                },
            ))),
        }
    }

    /// What the writing SQLite connection reports for `PRAGMA journal_mode` and `PRAGMA
    /// synchronous` (0 off … 3 extra), with what was configured; `None` for other databases.
    pub async fn sqlite_pragmas(&self) -> Result<Option<(SqliteOptions, String, i64)>, DbError> {
        let Db::Sqlite {
            commits, options, ..
        } = self
        else {
            return Ok(None);
        };
        let (journal, synchronous) = commits.pragmas().await?;
        Ok(Some((*options, journal, synchronous)))
    }

    /// SQLite's lookup connections.
    pub fn sqlite_lookups(&self) -> Option<&SqliteReaders> {
        match self {
            Db::Sqlite { lookups, .. } => Some(lookups),
            _ => None,
        }
    }

    /// SQLite's connection for dict commits.
    pub fn sqlite_writer(&self) -> Option<&SqliteWriter> {
        match self {
            Db::Sqlite { commits, .. } => Some(commits),
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
                commits,
                lookups,
                ..
            } => {
                commits.close();
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

/// How pools of one kind of server are made, probed and named.
struct Server<DB: Database, O> {
    pool: fn(&O, &PoolSettings, Duration) -> Pool<DB>,
    probe: fn(O, Option<SessionAttrs>) -> BoxFuture<'static, Result<(), sqlx::Error>>,
    name: fn(&O) -> String,
}

fn hosts_of<DB: Database, O: Clone + Send + Sync + 'static>(
    hosts: &[O],
    settings: &PoolSettings,
    timeout: Duration,
    server: Server<DB, O>,
) -> Hosts<DB> {
    let probes = hosts
        .iter()
        .map(|o| {
            let (o, session, probe) = (o.clone(), settings.session, server.probe);
            Box::new(move || probe(o.clone(), session)) as Probe
        })
        .collect();
    Hosts {
        pools: hosts
            .iter()
            .map(|o| (server.pool)(o, settings, timeout))
            .collect(),
        probes,
        down: hosts.iter().map(|_| Notify::new()).collect(),
        names: hosts.iter().map(server.name).collect(),
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
    let session = s.session;
    server_pool!(PgPoolOptions)
        .max_connections(s.maxconns)
        .acquire_timeout(timeout)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match session {
                    Some(attrs) => attrs.check(conn).await,
                    None => Ok(()),
                }
            })
        })
        .connect_lazy_with(o.clone())
}

fn mysql_probe(
    o: MySqlConnectOptions,
    _: Option<SessionAttrs>,
) -> BoxFuture<'static, Result<(), sqlx::Error>> {
    Box::pin(async move { o.connect().await?.close().await })
}

fn pg_probe(
    o: PgConnectOptions,
    session: Option<SessionAttrs>,
) -> BoxFuture<'static, Result<(), sqlx::Error>> {
    Box::pin(async move {
        let mut conn: PgConnection = o.connect().await?;
        if let Some(attrs) = session {
            attrs.check(&mut conn).await?;
        }
        conn.close().await
    })
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
