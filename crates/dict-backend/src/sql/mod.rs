//! The SQL dict (protocol-spec, SQL dict notes): Dovecot's dict-sql over SQLite, MySQL/MariaDB and
//! PostgreSQL, with every key part and value bound as a parameter.
//!
//! One file per idea; each depends only on those listed before it (no cycles):
//! * [`pattern`]: matching keys and iteration paths against map patterns.
//! * [`dialect`]: placeholders, upserts and PostgreSQL's typed parameters.
//! * [`param`]: key parts and values as typed bound values; the map a key belongs to.
//! * [`types`]: the leaf types the others share ([`types::Cell`], [`types::DbError`],
//!   [`types::Phase`], [`types::Exec`]) and how a cell reads as dict text.
//! * [`query`]: the SQL of each statement shape, built once and cached.
//! * [`session`]: PostgreSQL's `target_session_attrs`, checked on each new connection.
//! * [`connect`]: the dict's connection settings as sqlx options.
//! * [`db`]: a connection to any database: rows as cells, transactions; one file per
//!   database (`db/{sqlite,mysql,postgres}.rs`) for binding values and decoding cells.
//! * [`schema`]: reading table definitions from each database's catalog.
//! * [`sqlite_read`]: SQLite lookups on the calling thread (no sqlx worker-thread hop).
//! * [`lookup_queue`]: the queues of lookups waiting to go out together.
//! * [`group`]: a queued commit and its outcome; MySQL's and PostgreSQL's group commit
//!   (commits queued together go out as one batch).
//! * [`sqlite_write`]: SQLite commits on a writer thread holding their queue (group commit:
//!   commits queued together share one transaction).
//! * [`pool`]: the pools of a dict, failover between hosts.
//! * [`state`]: what one dict's operations share (maps, pools, statements, timeout).
//! * [`read`]: reads retried on a fresh connection; rows streamed into a channel.
//! * [`lookup`]: lookups of one map arriving together sent as one statement.
//! * [`expire`]: `expire_field` time and the scan deleting expired rows.
//! * [`iterate`]: iteration planning (one query per matching map) and its rows.
//! * [`scan`]: every user's values of one `priv/` key, for exports.
//! * [`commit`]: a dict transaction as the statements of one SQL transaction.
//! * [`outcome`]: what a failed commit attempt means (retry, `F` or `W`).
//! * [`apply`]: a planned commit run: on SQLite's writer, in a batch, or retried attempts.
//! * [`check`]: the start-up check of tables against maps.
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

mod apply;
mod batch;
mod check;
mod commit;
mod connect;
mod db;
mod dialect;
mod expire;
mod group;
mod iterate;
mod lookup;
mod lookup_queue;
mod outcome;
mod param;
mod pattern;
mod pool;
mod query;
mod read;
mod scan;
mod schema;
mod session;
mod sqlite_read;
mod sqlite_write;
mod state;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dict_config::{SqlDriver, SqlMapFile};
use futures::stream::BoxStream;

use crate::{CommitResult, Dict, DictError, IterRow, IterateOptions, Transaction, UserValues};

use dialect::{Catalog, Dialect};
pub use lookup_queue::LookupCounts;
use param::{find_map, has_non_utf8, is_private, key_params, Param};
use pool::{Db, SqliteSettings};
use query::Queries;
use read::spawn_rows;
use state::DictState;
use types::row_values;

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

/// A dict-sql dict: one per configured dict name, shared by all connections.
#[derive(Debug, Clone)]
pub struct SqlDict {
    state: Arc<DictState>,
}

impl SqlDict {
    /// Opens the database of `map_file` with `driver`. SQLite opens its file now; MySQL and
    /// PostgreSQL connect on first use, so this succeeds while their server is down.
    pub async fn connect(
        driver: SqlDriver,
        map_file: SqlMapFile,
        options: SqlOptions,
    ) -> Result<SqlDict, DictError> {
        let target = connect::target(&map_file.connect)
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
                connect::Target::Sqlite { path, .. } => {
                    e.context(format_args!("sqlite: can't open {}: ", path.display()))
                }
                _ => e.context(format_args!("{}: ", map_file.connect_origin)),
            })?;
        let map_count = map_file.maps.len();
        let state = DictState {
            driver,
            map_file: map_file.path,
            maps: Arc::from(map_file.maps),
            db,
            group: group::GroupCommit::new(timeout),
            lookups: lookup_queue::LookupBatcher::new(map_count),
            queries: tokio::sync::OnceCell::new(),
            timeout,
        };
        if state.db.dialect() != Dialect::Postgres {
            let queries = Queries::new(state.db.dialect(), state.maps.clone(), Catalog::default());
            state.queries.set(Arc::new(queries)).expect("fresh cell");
        }
        let dict = SqlDict {
            state: Arc::new(state),
        };
        if let Some(every) = options.expire_scan_interval {
            expire::spawn_expire_scans(&dict.state, every);
        }
        Ok(dict)
    }

    /// Deletes the rows whose `expire_field` time has passed, in every map that has one:
    /// `DELETE FROM T WHERE E <= <now>`, now in Unix seconds like the values sets write.
    /// (Dovecot 2.4.0–2.4.4's dict-expire binds now in *microseconds* here, so it deletes
    /// every row that has an expiry time at all, expired or not; we don't copy that.)
    pub async fn expire_scan(&self) -> Result<(), DictError> {
        self.state.expire_scan().await
    }

    /// The SQL driver this dict uses.
    pub fn driver(&self) -> SqlDriver {
        self.state.driver
    }

    /// Lookup statements this dict sent to MySQL/PostgreSQL, and the lookups that
    /// shared one (for tests and diagnostics).
    pub fn lookup_counts(&self) -> LookupCounts {
        self.state.lookups.counts()
    }

    /// Closes the pools; later operations fail.
    pub async fn close(&self) {
        self.state.db.close().await;
    }
}

#[async_trait]
impl Dict for SqlDict {
    /// SQLite's lookups run synchronously on their own connections once the statements are
    /// built (building them waits for a pooled connection); MySQL's and PostgreSQL's may
    /// carry other connections' lookups in their statement.
    fn lookups_stand_alone(&self) -> bool {
        self.state.db.dialect() == Dialect::Sqlite && self.state.queries_ready()
    }

    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let state = &self.state;
        let lossy = || String::from_utf8_lossy(key);
        let Some((m, vars)) = find_map(&state.maps, key) else {
            return Err(DictError::refused(format!(
                "sql dict lookup: Invalid/unmapped key: {}",
                lossy()
            )));
        };
        let map = &state.maps[m];
        let private = is_private(key);
        let mut params = key_params(map, &vars).map_err(|e| {
            DictError::refused(format!(
                "sql dict lookup: Failed to lookup key {}: {e}",
                lossy()
            ))
        })?;
        if private {
            params.push(Param::Text(username.to_vec()));
        }
        if map.expire_field.is_some() {
            params.push(Param::Int(expire::unix_now()));
        }
        if state.db.dialect() == Dialect::Postgres && has_non_utf8(params.iter()) {
            // As Dovecot's pgsql dict answers it: no prefix.
            return Err(DictError::refused(types::NOT_UTF8));
        }
        let deadline = state.deadline();
        let queries = state
            .queries(deadline)
            .await
            .map_err(|e| e.context("dict sql lookup failed: "))?;
        let row = state
            .lookup_row(&queries, m, private, params, deadline)
            .await?;
        Ok(row.map(|cells| row_values(map, &mut cells.into_iter())))
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let state = self.state.clone();
        let (path, username) = (path.to_vec(), username.to_vec());
        spawn_rows("iterate", |tx| {
            state.iterate_into(path, username, options, tx)
        })
    }

    fn scan_users(&self, key: &[u8]) -> BoxStream<'static, Result<UserValues, DictError>> {
        let state = self.state.clone();
        let key = key.to_vec();
        spawn_rows("scan", |tx| state.scan_users_into(key, tx))
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        self.state.commit(txn).await
    }

    /// Connects and checks that every map's table has its columns and a unique key (or
    /// primary key) on exactly the key columns (and the username column for `priv/`), so
    /// that sets can update rows in place.
    async fn check(&self) -> Result<(), DictError> {
        self.state.check().await
    }
}
