//! The SQL dict (dict-protocol.md §6.3): Dovecot's dict-sql over SQLite, MySQL/MariaDB and
//! PostgreSQL, with every key part and value bound as a parameter.
//!
//! * [`pattern`]: matching keys and iteration paths against map patterns.
//! * [`query`]: the SQL of each statement shape, built once and cached.
//! * [`commit`]: a dict transaction as the statements of one SQL transaction.
//! * [`dialect`]: placeholders, upserts and PostgreSQL's typed parameters.
//! * [`types`]: the leaf types the others share ([`types::Cell`], [`types::DbError`], ...).
//! * [`db`]: a connection to any database: rows as cells, transactions; one file per
//!   database for binding and decoding.
//! * [`pool`]: the pools of a dict, failover between hosts.
//! * [`schema`]: reading table definitions.
//! * [`group`]: SQLite's group commit (commits queued together share one transaction).
//! * [`sqlite_read`]: SQLite lookups on the calling thread (no sqlx worker-thread hop).
//! * [`connect`]: the map file's `connect` string.
//!
//! Where this differs from Dovecot 2.3.19 (all deliberate):
//! * `priv/` keys never match a map without `username_field` (Dovecot compared a string
//!   literal there and never found a row): such keys are unmapped.
//! * Iteration of a `priv/` path binding no variable has its `AND` (Dovecot built broken
//!   SQL); the one-level filter also applies to `shared/` paths binding no variable.
//! * Iterating maps without variables lists their one row (Dovecot asserted): `I1
//!   priv/quota/` lists `priv/quota/storage`, `priv/quota/messages`, ... when the user's row
//!   exists.
//! * EXACT_KEY returns only rows whose key is the path: a path naming a prefix returns
//!   nothing (Dovecot returned its children).
//! * Unset-then-set of a key in one transaction keeps the set's value (see [`commit`]).
//!
//! Dovecot 2.4 additions (maps from a 2.4 `dict_map`; protocol-spec/README.md "SQL dict
//! notes" has the details):
//! * `expire_field`: reads skip rows whose time is `<=` now (filtered in SQL, so `max_rows`
//!   counts only live rows); sets write now + the `B` command's expire_secs, or NULL (never
//!   expires) without one; [`SqlDict::expire_scan`] deletes expired rows every 30 s, with now
//!   in seconds (Dovecot 2.4.0–2.4.4's dict-expire binds microseconds and so deletes every
//!   row that has an expiry at all).
//! * Value types `double` (bound as a float) and `uuid` (checked, stored as lowercase dashed
//!   text; PostgreSQL casts it to a `uuid` column). Dovecot pastes UUIDs unquoted into the
//!   SQL of its SQLite/MySQL/PostgreSQL drivers, which fails.

mod commit;
mod connect;
mod db;
mod dialect;
mod group;
mod outcome;
mod pattern;
mod pool;
mod query;
mod scan;
mod schema;
mod sqlite_read;
mod types;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dict_config::{SqlDriver, SqlMap, SqlMapFile, ValueType};
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};
use futures::SinkExt;
use tokio::time::{timeout_at, Instant};

use crate::{CommitResult, Dict, DictError, IterRow, IterateOptions, Transaction, UserValues};

use dialect::{ident_name, Catalog, Dialect};
use outcome::Next;
use pattern::{match_path, rebuild_key, MatchKind};
use pool::{Db, SqliteSettings};
use query::{
    find_map, has_non_utf8, is_private, key_params, IterMode, Limit, Param, Queries, Shape, Sort,
};
use types::{Cell, DbError, Exec, Phase};

/// Tuning of an SQL dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// Bound for every operation, connecting included: a down or stuck database gives an
    /// error this quickly. A smaller MySQL `read_timeout`/`write_timeout` wins.
    pub timeout: Duration,
    /// Create a missing SQLite database file (otherwise a missing file is an error).
    pub create_sqlite: bool,
    /// SQLite reader connections (writes always use one connection of their own).
    pub sqlite_readers: u32,
    /// How often rows past their `expire_field` time are deleted (Dovecot 2.4's
    /// dict-expire service: every 30 s); `None`: never. Only for dicts that have such a map.
    pub expire_scan_interval: Option<Duration>,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            timeout: Duration::from_secs(5),
            create_sqlite: false,
            sqlite_readers: 4,
            expire_scan_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// How often an operation is retried on a fresh connection when a pooled one turns out
/// to be dead (the database restarted) and nothing can have been applied.
const MAX_RETRIES: usize = 8;

/// Rows an iteration may have produced but the client not yet read.
const ITER_BUFFER: usize = 16;

/// A dict-sql dict: one per configured dict name, shared by all connections.
#[derive(Debug, Clone)]
pub struct SqlDict {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    driver: SqlDriver,
    map_file: PathBuf,
    maps: Arc<[SqlMap]>,
    db: Db,
    /// Built on first use: PostgreSQL's statements depend on the column types.
    queries: tokio::sync::OnceCell<Arc<Queries>>,
    timeout: Duration,
}

impl SqlDict {
    /// Opens the database of `map_file` with `driver`. SQLite opens its file now; MySQL and
    /// PostgreSQL connect on first use, so this succeeds while their server is down.
    pub async fn connect(
        driver: SqlDriver,
        map_file: SqlMapFile,
        options: SqlOptions,
    ) -> Result<SqlDict, DictError> {
        let target = connect::parse(driver, &map_file.connect)
            .map_err(|e| DictError::new(format!("{}: {e}", map_file.connect_origin)))?;
        let mut timeout = options.timeout;
        if let connect::Target::Mysql { pool, .. } = &target {
            if let Some(io) = pool.io_timeout {
                timeout = timeout.min(io);
            }
        }
        let sqlite = SqliteSettings {
            create: options.create_sqlite,
            readers: options.sqlite_readers,
        };
        let db = Db::open(&target, timeout, sqlite)
            .await
            .map_err(|e| match &target {
                connect::Target::Sqlite { path } => {
                    DictError::new(format!("sqlite: can't open {}: {e}", path.display()))
                }
                _ => DictError::new(format!("{}: {e}", map_file.connect_origin)),
            })?;
        let inner = Inner {
            driver,
            map_file: map_file.path,
            maps: Arc::from(map_file.maps),
            db,
            queries: tokio::sync::OnceCell::new(),
            timeout,
        };
        if inner.db.dialect() != Dialect::Postgres {
            let queries = Queries::new(inner.db.dialect(), inner.maps.clone(), Catalog::default());
            inner.queries.set(Arc::new(queries)).expect("fresh cell");
        }
        let dict = SqlDict {
            inner: Arc::new(inner),
        };
        if let Some(every) = options.expire_scan_interval {
            dict.spawn_expire_scans(every);
        }
        Ok(dict)
    }

    /// Deletes the rows whose `expire_field` time has passed, in every map that has one:
    /// `DELETE FROM T WHERE E <= <now>`, now in Unix seconds like the values sets write.
    /// (Dovecot 2.4.0–2.4.4's dict-expire binds now in *microseconds* here, so it deletes
    /// every row that has an expiry time at all, expired or not; we don't copy that.)
    pub async fn expire_scan(&self) -> Result<(), DictError> {
        let inner = &self.inner;
        let mut steps = Vec::new();
        let mut seen = BTreeSet::new();
        let catalog = Catalog::default();
        for map in inner.maps.iter() {
            let Some(expire) = &map.expire_field else {
                continue;
            };
            if !seen.insert((map.table.as_str(), expire.as_str())) {
                continue;
            }
            let mut sql = dialect::SqlText::new(inner.db.dialect(), &catalog, &map.table);
            sql.push("DELETE FROM ")
                .push(&map.table)
                .push(" WHERE ")
                .push(expire)
                .push(" <= ")
                .param(dialect::ParamKind::Int, None);
            steps.push(Exec::Run {
                sql: sql.finish().into(),
                params: vec![Param::Int(unix_now())],
                count: false,
            });
        }
        if steps.is_empty() {
            return Ok(());
        }
        let deadline = inner.deadline();
        let fail = |e: DbError| DictError::new(format!("sql dict: expire scan failed: {e}"));
        let mut conn = inner.db.acquire(true, deadline).await.map_err(fail)?;
        let mut phase = Phase::Begin;
        match timeout_at(deadline, conn.transaction(&steps, &mut phase)).await {
            Ok(r) => r.map(|_| ()).map_err(fail),
            Err(_) => Err(fail(DbError::Timeout(inner.timeout))),
        }
    }

    /// Runs [`SqlDict::expire_scan`] every `every` while the dict exists, when one of its
    /// maps has an `expire_field` and a tokio runtime is running.
    fn spawn_expire_scans(&self, every: Duration) {
        if !self.inner.maps.iter().any(|m| m.expire_field.is_some()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let dict = SqlDict { inner };
                if let Err(e) = dict.expire_scan().await {
                    tracing::warn!(map_file = %dict.inner.map_file.display(), "{e}");
                }
            }
        });
    }

    /// The SQL driver this dict uses.
    pub fn driver(&self) -> SqlDriver {
        self.inner.driver
    }

    /// Closes the pools; later operations fail.
    pub async fn close(&self) {
        self.inner.db.close().await;
    }
}

impl Inner {
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The statements of this dict. PostgreSQL's depend on the column types, read from
    /// the database on first use; they are kept once every mapped table was found (until
    /// then each operation reads them again, so tables created later are picked up).
    async fn queries(&self, deadline: Instant) -> Result<Arc<Queries>, DbError> {
        if let Some(q) = self.queries.get() {
            return Ok(q.clone());
        }
        let load = async {
            let mut conn = self.db.acquire(false, deadline).await?;
            let mut catalog = Catalog::default();
            let mut complete = true;
            let tables: BTreeSet<&str> = self.maps.iter().map(|m| m.table.as_str()).collect();
            for table in tables {
                let info = conn.table_info(table).await?;
                complete &= !info.columns.is_empty();
                catalog.insert(
                    table,
                    info.columns
                        .into_iter()
                        .filter_map(|(c, t)| Some((c, t?)))
                        .collect(),
                );
            }
            Ok::<_, DbError>((
                Arc::new(Queries::new(self.db.dialect(), self.maps.clone(), catalog)),
                complete,
            ))
        };
        let (queries, complete) = match timeout_at(deadline, load).await {
            Ok(r) => r?,
            Err(_) => return Err(DbError::Timeout(self.timeout)),
        };
        if complete {
            let _ = self.queries.set(queries.clone());
        }
        Ok(queries)
    }

    /// The first row of a read, retried on a fresh connection when the connection (not
    /// the statement) failed.
    async fn read_first(
        &self,
        sql: &str,
        params: &[Param],
        deadline: Instant,
    ) -> Result<Option<Vec<Cell>>, DbError> {
        if let Some(lookups) = self.db.sqlite_lookups() {
            return lookups.first_row(sql, params);
        }
        let mut retries = 0;
        loop {
            let mut conn = self.db.acquire(false, deadline).await?;
            let result = match timeout_at(deadline, conn.fetch_first(sql, params)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout(self.timeout)),
            };
            match result {
                Err(e) if e.is_connection() => {
                    conn.discard();
                    if retries == MAX_RETRIES || matches!(e, DbError::Timeout(_)) {
                        return Err(e);
                    }
                    retries += 1;
                }
                r => return r,
            }
        }
    }
}

/// The current Unix time in seconds, what `expire_field` values are compared with.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A cell as dict text (§6.3.4 "Result handling"): numbers in decimal, hexblob columns as
/// lowercase hex; `None` for NULL.
fn cell_text(cell: Cell, ty: ValueType) -> Option<Vec<u8>> {
    let bytes = match cell {
        Cell::Null => return None,
        Cell::Int(i) => i.to_string().into_bytes(),
        Cell::UInt(u) => u.to_string().into_bytes(),
        Cell::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{f:.1}").into_bytes()
        }
        Cell::Float(f) => f.to_string().into_bytes(),
        Cell::Bytes(b) => b,
    };
    Some(match ty {
        ValueType::Hexblob => hex::encode(bytes).into_bytes(),
        // As Dovecot 2.4 prints a uuid column: lowercase, with dashes.
        ValueType::Uuid => query::canonical_uuid(&bytes)
            .map(String::into_bytes)
            .unwrap_or(bytes),
        _ => bytes,
    })
}

/// The values of a row: NULL reads as an empty value.
fn row_values(map: &SqlMap, cells: &mut impl Iterator<Item = Cell>) -> Vec<Vec<u8>> {
    map.value_types
        .iter()
        .map(|ty| {
            cells
                .next()
                .and_then(|c| cell_text(c, *ty))
                .unwrap_or_default()
        })
        .collect()
}

/// One query of an iteration.
struct IterQuery {
    map: usize,
    consumed: usize,
    rest: usize,
    slash: bool,
    shape: Shape,
    params: Vec<Param>,
    limit: Limit,
}

/// The queries of an iteration over `path`, in map order; an `Err` ends the list (the
/// rows of the queries before it are still returned, as in Dovecot).
fn plan_iterate(
    maps: &[SqlMap],
    path: &[u8],
    username: &[u8],
    opts: &IterateOptions,
) -> Vec<Result<IterQuery, String>> {
    let fail = |e: &str| {
        format!(
            "sql dict iterate failed for {}: {e}",
            String::from_utf8_lossy(path)
        )
    };
    let private = is_private(path);
    let exact = opts.exact_key && !opts.recurse;
    let sort = if opts.sort_by_key {
        Sort::Key
    } else if opts.sort_by_value {
        Sort::Value
    } else {
        Sort::None
    };
    let mut plans = Vec::new();
    let mut matched = false;
    for (i, map) in maps.iter().enumerate() {
        if private && map.username_field.is_none() {
            continue;
        }
        let pattern = map.normalized_pattern.as_bytes();
        let Some(m) = match_path(pattern, path, opts.recurse) else {
            continue;
        };
        let n = map.fields.len();
        if !opts.recurse && m.values.len() + 1 < n {
            continue;
        }
        matched = true;
        let (mode, bound) = match m.kind {
            MatchKind::Full => (IterMode::Exact, n),
            MatchKind::LastVariable if exact => (IterMode::Exact, n),
            MatchKind::LastVariable => {
                plans.push(Err(fail(&format!(
                    "Key continues past the matched pattern {}",
                    map.normalized_pattern
                ))));
                return plans;
            }
            // EXACT_KEY on a prefix: no row has the path as its key.
            MatchKind::Prefix if exact => return plans,
            MatchKind::Prefix if opts.recurse => (IterMode::Recurse, m.values.len()),
            MatchKind::Prefix => (IterMode::OneLevel, m.values.len()),
        };
        let mut params = match key_params(map, &m.values[..bound]) {
            Ok(p) => p,
            Err(e) => {
                plans.push(Err(fail(&e)));
                return plans;
            }
        };
        if private {
            params.push(Param::Text(username.to_vec()));
        }
        if map.expire_field.is_some() {
            params.push(Param::Int(unix_now()));
        }
        let limit = if n == 0 {
            Limit::One
        } else if opts.max_rows > 0 {
            Limit::Bound
        } else {
            Limit::None
        };
        let shape = Shape::Iterate {
            map: i,
            private,
            bound,
            mode,
            sort,
            no_value: opts.no_value,
            limit,
        };
        plans.push(Ok(IterQuery {
            map: i,
            consumed: m.consumed,
            rest: m.rest,
            slash: m.slash,
            shape,
            params,
            limit,
        }));
        // EXACT_KEY, also with RECURSE: the first map that matches the path only.
        if opts.exact_key {
            break;
        }
    }
    if !matched {
        plans.push(Err(fail("Invalid/unmapped path")));
    }
    plans
}

type RowSender = mpsc::Sender<Result<IterRow, DictError>>;

/// The rows a task started on the current runtime sends, as a stream; the channel holds
/// [`ITER_BUFFER`] rows, so a slow reader holds the query back.
fn spawn_rows<T, F>(
    what: &str,
    produce: impl FnOnce(mpsc::Sender<Result<T, DictError>>) -> F,
) -> BoxStream<'static, Result<T, DictError>>
where
    T: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        let e = DictError::new(format!("sql dict {what}: no async runtime"));
        return futures::stream::once(async move { Err(e) }).boxed();
    };
    let (tx, rx) = mpsc::channel(ITER_BUFFER);
    runtime.spawn(produce(tx));
    rx.boxed()
}

impl Inner {
    /// Feeds the rows of an iteration into `tx`; stops early when the receiver is gone.
    async fn iterate_into(
        self: Arc<Self>,
        path: Vec<u8>,
        username: Vec<u8>,
        opts: IterateOptions,
        mut tx: RowSender,
    ) {
        let queries = match self.queries(self.deadline()).await {
            Ok(q) => q,
            Err(e) => {
                let _ = tx
                    .send(Err(DictError::new(format!("dict sql iterate failed: {e}"))))
                    .await;
                return;
            }
        };
        let mut sent: u64 = 0;
        for plan in plan_iterate(&self.maps, &path, &username, &opts) {
            let q = match plan {
                Ok(q) => q,
                Err(e) => {
                    let _ = tx.send(Err(DictError::new(e))).await;
                    return;
                }
            };
            if opts.max_rows > 0 && sent >= opts.max_rows {
                return;
            }
            let mut params = q.params.clone();
            if q.limit == Limit::Bound {
                params.push(Param::Int(
                    i64::try_from(opts.max_rows - sent).unwrap_or(i64::MAX),
                ));
            }
            if queries.dialect == Dialect::Postgres && has_non_utf8(params.iter()) {
                let e = format!("dict sql iterate failed: {}", types::NOT_UTF8);
                let _ = tx.send(Err(DictError::new(e))).await;
                return;
            }
            let sql = queries.sql(&q.shape);
            match self
                .run_iter_query(&path, &opts, &q, &sql, &params, &mut tx)
                .await
            {
                Ok(Some(rows)) => sent += rows,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx
                        .send(Err(DictError::new(format!("dict sql iterate failed: {e}"))))
                        .await;
                    return;
                }
            }
        }
    }

    /// Runs one query of an iteration; the number of rows sent, or `None` when the
    /// receiver went away. A connection failure before the first row is retried.
    async fn run_iter_query(
        &self,
        path: &[u8],
        opts: &IterateOptions,
        q: &IterQuery,
        sql: &str,
        params: &[Param],
        tx: &mut RowSender,
    ) -> Result<Option<u64>, DbError> {
        let map = &self.maps[q.map];
        let pattern = map.normalized_pattern.as_bytes();
        let m = pattern::PathMatch {
            values: Vec::new(),
            consumed: q.consumed,
            rest: q.rest,
            slash: q.slash,
            kind: MatchKind::Prefix,
        };
        let key_fields = m.rest_vars(pattern);
        let selected_keys = match &q.shape {
            Shape::Iterate { bound, .. } if *bound == map.fields.len() => map.fields.len().min(1),
            Shape::Iterate { bound, .. } => map.fields.len() - bound,
            _ => 0,
        };
        self.send_rows(sql, params, tx, |cells| {
            let mut cells = cells.into_iter();
            let values = if opts.no_value {
                vec![Vec::new()]
            } else {
                row_values(map, &mut cells)
            };
            let first_key = map.fields.len() - selected_keys;
            let keys: Vec<Option<Vec<u8>>> = map.fields[first_key..]
                .iter()
                .map(|f| cells.next().and_then(|c| cell_text(c, f.value_type)))
                .collect();
            // The rest of the pattern names the last `key_fields` selected columns.
            let keys = &keys[keys.len().saturating_sub(key_fields)..];
            let key = rebuild_key(path, pattern, &m, keys);
            Some(IterRow { key, values })
        })
        .await
    }

    /// Runs a read and sends what `row` makes of each row (`None`: nothing) into `tx` as
    /// rows arrive; returns the number sent, or `None` when the receiver went away. Each
    /// row must come within the timeout. A connection failure before the first row is
    /// retried on a fresh connection (the database restarted and the pooled one is dead);
    /// after it, the error is returned.
    async fn send_rows<T>(
        &self,
        sql: &str,
        params: &[Param],
        tx: &mut mpsc::Sender<Result<T, DictError>>,
        mut row: impl FnMut(Vec<Cell>) -> Option<T>,
    ) -> Result<Option<u64>, DbError> {
        let mut sent = 0u64;
        let mut retries = 0;
        'attempt: loop {
            let mut conn = self.db.acquire(false, self.deadline()).await?;
            let mut rows = conn.fetch(sql, params);
            let mut first = true;
            loop {
                let next = match tokio::time::timeout(self.timeout, rows.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        drop(rows);
                        conn.discard();
                        return Err(DbError::Timeout(self.timeout));
                    }
                };
                match next {
                    None => return Ok(Some(sent)),
                    Some(Ok(cells)) => {
                        first = false;
                        if let Some(item) = row(cells) {
                            if tx.send(Ok(item)).await.is_err() {
                                return Ok(None);
                            }
                            sent += 1;
                        }
                    }
                    Some(Err(e)) => {
                        drop(rows);
                        if e.is_connection() {
                            conn.discard();
                            if first && retries < MAX_RETRIES && !matches!(e, DbError::Timeout(_)) {
                                retries += 1;
                                continue 'attempt;
                            }
                        }
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Dict for SqlDict {
    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let inner = &self.inner;
        let lossy = || String::from_utf8_lossy(key);
        let Some((m, vars)) = find_map(&inner.maps, key) else {
            return Err(DictError::new(format!(
                "sql dict lookup: Invalid/unmapped key: {}",
                lossy()
            )));
        };
        let map = &inner.maps[m];
        let private = is_private(key);
        let mut params = key_params(map, &vars).map_err(|e| {
            DictError::new(format!(
                "sql dict lookup: Failed to lookup key {}: {e}",
                lossy()
            ))
        })?;
        if private {
            params.push(Param::Text(username.to_vec()));
        }
        if map.expire_field.is_some() {
            params.push(Param::Int(unix_now()));
        }
        if inner.db.dialect() == Dialect::Postgres && has_non_utf8(params.iter()) {
            // As Dovecot's pgsql dict answers it: no prefix.
            return Err(DictError::new(types::NOT_UTF8));
        }
        let deadline = inner.deadline();
        let row = async {
            let queries = inner.queries(deadline).await?;
            let sql = queries.sql(&Shape::Lookup { map: m, private });
            inner.read_first(&sql, &params, deadline).await
        }
        .await
        .map_err(|e| DictError::new(format!("dict sql lookup failed: {e}")))?;
        Ok(row.map(|cells| row_values(map, &mut cells.into_iter())))
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let inner = self.inner.clone();
        let (path, username) = (path.to_vec(), username.to_vec());
        spawn_rows("iterate", |tx| {
            inner.iterate_into(path, username, options, tx)
        })
    }

    fn scan_users(&self, key: &[u8]) -> BoxStream<'static, Result<UserValues, DictError>> {
        let inner = self.inner.clone();
        let key = key.to_vec();
        spawn_rows("scan", |tx| inner.scan_users_into(key, tx))
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        let inner = &self.inner;
        let deadline = inner.deadline();
        let failed = |e: &dyn std::fmt::Display| format!("sql dict: commit failed: {e}");
        let queries = match inner.queries(deadline).await {
            Ok(q) => q,
            Err(e) => return CommitResult::Failed(failed(&e)),
        };
        let expire_at = txn
            .expire_secs
            .filter(|&e| e > 0)
            .map(|e| unix_now().saturating_add(i64::from(e)));
        let steps = match commit::plan_expiring(&queries, &txn.username, expire_at, &txn.changes) {
            Ok(steps) => steps,
            Err(e) => return CommitResult::Failed(e),
        };
        if queries.dialect == Dialect::Postgres && has_non_utf8(steps.iter().flat_map(Exec::params))
        {
            return CommitResult::Failed(failed(&types::NOT_UTF8));
        }
        if steps.is_empty() {
            return CommitResult::Ok;
        }
        if let Some(group) = inner.db.group() {
            return match group.commit(steps, deadline).await {
                group::Outcome::Applied(false) => CommitResult::Ok,
                group::Outcome::Applied(true) => CommitResult::NotFound,
                group::Outcome::Failed(e) => CommitResult::Failed(failed(&e)),
                group::Outcome::Uncertain(e) => CommitResult::WriteUncertain(failed(&e)),
            };
        }
        let answer = |next: Next, e: &DbError| match next {
            Next::Uncertain => CommitResult::WriteUncertain(failed(e)),
            _ => CommitResult::Failed(failed(e)),
        };
        let mut retries = 0;
        // An attempt got as far as sending its statement: it may have been applied.
        let mut maybe_applied = false;
        loop {
            let mut conn = match inner.db.acquire(true, deadline).await {
                Ok(c) => c,
                Err(e) => return answer(outcome::after_acquire_failure(maybe_applied), &e),
            };
            let mut phase = Phase::Begin;
            let result = match timeout_at(deadline, conn.transaction(&steps, &mut phase)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout(inner.timeout)),
            };
            let e = match result {
                Ok(false) => return CommitResult::Ok,
                Ok(true) => return CommitResult::NotFound,
                Err(e) => e,
            };
            if !e.is_database() && !e.is_refused() {
                conn.discard();
            }
            match outcome::after_failure(phase, &e, maybe_applied, retries < MAX_RETRIES) {
                Next::Retry => {
                    retries += 1;
                    maybe_applied |= phase == Phase::Repeatable;
                }
                next => return answer(next, &e),
            }
        }
    }

    /// Connects and checks that every map's table has its columns and a unique key (or
    /// primary key) on exactly the key columns (and the username column for `priv/`), so
    /// that sets can update rows in place.
    async fn check(&self) -> Result<(), DictError> {
        let inner = &self.inner;
        let deadline = inner.deadline();
        let cant = |e: DbError| {
            DictError::new(format!(
                "{}: can't check the database: {e}",
                inner.map_file.display()
            ))
        };
        let mut conn = inner.db.acquire(false, deadline).await.map_err(cant)?;
        let mut infos = HashMap::new();
        for map in inner.maps.iter() {
            if !infos.contains_key(&map.table) {
                let info = match timeout_at(deadline, conn.table_info(&map.table)).await {
                    Ok(r) => r.map_err(cant)?,
                    Err(_) => return Err(cant(DbError::Timeout(inner.timeout))),
                };
                infos.insert(map.table.clone(), info);
            }
        }
        let fold = |c: &str| match inner.db.dialect() {
            Dialect::Postgres => ident_name(c),
            _ => ident_name(c).to_ascii_lowercase(),
        };
        let mut problems = Vec::new();
        for map in inner.maps.iter() {
            let at = format!("{}: map {}: table {}", map.origin, map.pattern, map.table);
            let info = &infos[&map.table];
            if info.columns.is_empty() {
                problems.push(format!("{at}: no such table"));
                continue;
            }
            let private = map.pattern.starts_with("priv/");
            let mut needed: Vec<&str> = map.value_fields.iter().map(String::as_str).collect();
            needed.extend(map.fields.iter().map(|f| f.column.as_str()));
            needed.extend(map.username_field.as_deref());
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|c| !info.columns.contains_key(&fold(c)))
                .collect();
            if !missing.is_empty() {
                problems.push(format!("{at}: no column {}", missing.join(", ")));
                continue;
            }
            let mut key: Vec<String> = map.fields.iter().map(|f| fold(&f.column)).collect();
            if private {
                match &map.username_field {
                    Some(u) => key.push(fold(u)),
                    None => continue, // never matches a key; dict-config warned already
                }
            }
            if key.is_empty() {
                continue; // shared map without variables: written with UPDATE, then INSERT
            }
            key.sort();
            let covered = info.unique_keys.iter().any(|k| {
                let mut k: Vec<String> = k.iter().map(|c| fold(c)).collect();
                k.sort();
                k == key
            });
            if !covered {
                problems.push(format!(
                    "{at}: needs a primary key or unique index on exactly ({}) so that sets can update rows",
                    key.join(",")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DictError::new(problems.join("\n")))
        }
    }
}
