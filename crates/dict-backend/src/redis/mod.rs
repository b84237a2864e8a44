//! The Redis dict (protocol-spec §9 for where it differs), key-compatible with Dovecot's `dict-redis`: the
//! same Redis keys ([`keys`]), `GET` for lookups, one `MULTI … EXEC` per commit
//! ([`commit`]), `AUTH` and `SELECT` on every connect ([`conn`]).
//!
//! Where this differs from Dovecot 2.3.19 (all deliberate):
//! * Iteration works (Dovecot: "Unsupported operation"); see [`RedisDict`].
//! * `host=` may be a host name; `user=` (ACL user) and `tls=yes` are extensions.
//! * Extensions for several hosts: Redis Sentinel ([`sentinel`]), Redis Cluster ([`cluster`];
//!   `user_hash_tag=yes` in [`keys`]) and `wait_replicas=` (`WAIT` after each `EXEC`).
//! * A commit whose increment Redis would refuse fails without writing anything (see
//!   [`commit`]); Dovecot applied the rest of the `EXEC`.
//! * Any number of transactions may be open at once (Dovecot asserted), and lookups never
//!   block other connections of the dict.

mod cluster;
mod commit;
mod conn;
mod keys;
mod sentinel;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use redis::{RedisError, Value};
use tokio::time::{timeout_at, Instant};

use dict_config::RedisParams;

use self::commit::CommitPlan;
use self::conn::{is_connection_error, is_not_master, Conn, ConnectError, Connector, Resends};
use self::keys::{KeyLayout, Scope};
use crate::{CommitResult, Dict, DictError, IterRow, IterateOptions, Transaction, UserValues};

/// Keys asked for per `SCAN` call, and values per `MGET` during iteration.
const SCAN_COUNT: usize = 1000;
const MGET_BATCH: usize = 500;

/// How often a commit is sent again on a new connection (see [`Inner::commit`]).
const MAX_RESENDS: u32 = 2;

/// A `redis:` dict. One multiplexed connection serves every operation; it is made on first
/// use and made again after a failure, so creating the dict never fails because Redis is
/// down, and service resumes by itself when Redis is back.
///
/// `timeout_msecs` bounds a whole lookup or commit (connecting included), and each round
/// trip of an iteration. A commit that fails before its `MULTI … EXEC` was handed to the
/// connection is `Failed`; one that fails or times out after is `WriteUncertain`, unless it
/// only sets and unsets keys and its connection closed: then it is sent again on a new one.
/// Every future may also be dropped at any point (the server's own, shorter timeouts): that
/// is safe, but a dropped commit may or may not have reached Redis.
///
/// **Extension: iteration.** Dovecot's Redis dict cannot iterate; this one can. A path
/// becomes a `SCAN … MATCH <redis key of the path>*` (glob characters of the key escaped),
/// filtered to one level unless RECURSE; EXACT_KEY is one `GET` (`EXISTS` with NO_VALUE);
/// NO_VALUE reads no values; otherwise values come from `MGET` in batches of 500, so a key
/// deleted meanwhile (or holding a list, hash, …) is left out. Rows come sorted by key
/// unless SORT_BY_VALUE; max_rows applies after sorting. All matching keys (and, for
/// SORT_BY_VALUE, their values) are held in memory, and a `SCAN` walks the whole database
/// whatever the path. Because `shared/<user>/…` and `priv/…` of `<user>` are the same Redis
/// key in Dovecot's layout, iterating `shared/<user>/` (or `shared/` recursively) lists
/// that user's private keys as `shared/` keys.
pub struct RedisDict {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Connector>,
    /// For commits that must not run twice (increments): `conn` itself, except in a
    /// cluster, where it is a second connection on which redis-rs sends nothing again.
    once: Arc<Connector>,
    keys: KeyLayout,
    expire_secs: Option<u32>,
    timeout: Duration,
    /// `wait_replicas=`, `wait_timeout_msecs=`: `WAIT` after each `EXEC`.
    wait: Option<(u32, u32)>,
}

impl RedisDict {
    /// Checks `params` and prepares the connection; does not connect (see [`Dict::check`]).
    /// Fails on parameters that cannot work: `tls=yes` with `path=` or without any CA
    /// certificate on the system, `user=` without `password=`.
    pub fn connect(params: &RedisParams) -> Result<RedisDict, DictError> {
        let conn = Arc::new(Connector::new(params, Resends::Allowed).map_err(DictError::new)?);
        let once = match conn.is_cluster() {
            true => Arc::new(Connector::new(params, Resends::Never).map_err(DictError::new)?),
            false => conn.clone(),
        };
        let mut keys = KeyLayout::new(&params.prefix);
        if params.user_hash_tag {
            if params.prefix.contains(['{', '}']) {
                return Err(DictError::new(
                    "redis: user_hash_tag=yes needs a prefix= without { and }",
                ));
            }
            keys = keys.with_user_hash_tag();
        }
        Ok(RedisDict {
            inner: Arc::new(Inner {
                conn,
                once,
                keys,
                expire_secs: params.expire_secs.filter(|&s| s > 0),
                timeout: Duration::from_millis(u64::from(params.timeout_msecs.max(1))),
                wait: (params.wait_replicas > 0)
                    .then_some((params.wait_replicas, params.wait_timeout_msecs)),
            }),
        })
    }
}

impl std::fmt::Debug for RedisDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDict")
            .field("target", &self.inner.conn.target())
            .finish_non_exhaustive()
    }
}

fn no_namespace(key: &[u8]) -> DictError {
    DictError::refused(format!(
        "redis: key must begin with priv/ or shared/: {}",
        String::from_utf8_lossy(key)
    ))
}

impl Inner {
    fn timed_out(&self, what: &str) -> String {
        format!(
            "redis: {what} timed out after {} ms ({})",
            self.timeout.as_millis(),
            self.conn.target()
        )
    }

    fn connect_failed(&self, what: &str, e: ConnectError) -> DictError {
        match e {
            ConnectError::TimedOut => DictError::timeout(self.timed_out(what)),
            ConnectError::Failed(e) => DictError::connection(format!(
                "redis: {what} failed: connecting to {}: {e}",
                self.conn.target()
            )),
        }
    }

    /// Runs a read-only request within one timeout (see [`Inner::read_until`]).
    async fn read<T, F, Fut>(&self, what: &str, f: F) -> Result<T, DictError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.read_until(Instant::now() + self.timeout, what, f)
            .await
    }

    /// Runs a read-only request until `deadline`. A connection found broken when it is
    /// used is replaced and the request sent once more, so the first request after Redis
    /// came back does not fail.
    async fn read_until<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        f: F,
    ) -> Result<T, DictError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut retried = false;
        loop {
            let live = self
                .conn
                .get(deadline)
                .await
                .map_err(|e| self.connect_failed(what, e))?;
            match timeout_at(deadline, f(live.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_connection_error(&e) => {
                    live.discard();
                    if !live.fresh && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(DictError::connection(format!("redis: {what} failed: {e}")));
                }
                Ok(Err(e)) => {
                    return Err(DictError::database(format!("redis: {what} failed: {e}")))
                }
                Err(_) => {
                    live.discard();
                    return Err(DictError::timeout(self.timed_out(what)));
                }
            }
        }
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DictError> {
        self.read("lookup", |mut conn| async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        // 2.4 sends an expiry with `B`; it replaces the dict's own.
        let expire = txn.expire_secs.filter(|&s| s > 0).or(self.expire_secs);
        let plan = match CommitPlan::new(&self.keys, &txn, expire) {
            Ok(plan) => plan,
            Err(e) => return CommitResult::Failed(e),
        };
        if plan.is_empty() {
            return CommitResult::Ok;
        }
        if self.conn.is_cluster() {
            if let Some(e) = cluster::cross_slot(plan.keys()) {
                return CommitResult::Failed(e);
            }
        }
        let deadline = Instant::now() + self.timeout;
        if let Some(check) = plan.check_pipeline() {
            let replies = self
                .read_until(deadline, "commit", |mut conn| {
                    let check = &check;
                    async move { check.query_async::<Vec<Value>>(&mut conn).await }
                })
                .await;
            match replies
                .map_err(DictError::into_message)
                .and_then(|r| plan.parse_check(r))
            {
                Ok(before) => {
                    if let Err(e) = plan.verify(before) {
                        return CommitResult::Failed(e);
                    }
                }
                Err(e) => return CommitResult::Failed(e),
            }
        } else if let Err(e) = plan.verify(Vec::new()) {
            // Only keys the transaction sets itself are incremented: still replayed, so
            // an increment of a value it set to text fails before anything is sent.
            return CommitResult::Failed(e);
        }
        // Each send may go to a new connection (the master moved, the connection closed).
        let mut resends = 0;
        // An earlier send may have run: no later failure can be `F`.
        let mut maybe_applied = false;
        let failed = |maybe_applied: bool, e: String| match maybe_applied {
            true => CommitResult::WriteUncertain(e),
            false => CommitResult::Failed(e),
        };
        // Sets and unsets leave the same keys when run twice; increments do not.
        let repeatable = plan.is_repeatable();
        let connector = match repeatable {
            true => &self.conn,
            false => &self.once,
        };
        loop {
            let live = match connector.get(deadline).await {
                Ok(live) => live,
                Err(e) => {
                    return failed(
                        maybe_applied,
                        self.connect_failed("commit", e).into_message(),
                    )
                }
            };
            let mut conn = live.conn.clone();
            // From here on the EXEC may have reached Redis.
            return match timeout_at(deadline, plan.pipeline().query_async::<Value>(&mut conn)).await
            {
                Ok(Ok(_)) => match self.wait {
                    Some(wait) => self.wait_replicas(conn, &plan, wait, deadline).await,
                    None => CommitResult::Ok,
                },
                // a replica (an old master after a failover) refused the writes, or a
                // cluster node could not be reached (a cluster connection connects to its
                // nodes on demand): nothing was applied, a new connection finds the master
                Ok(Err(e)) if is_not_master(&e) || e.is_connection_refusal() => {
                    live.discard();
                    if resends < MAX_RESENDS {
                        resends += 1;
                        tracing::info!("redis: commit sent again on a new connection: {e}");
                        continue;
                    }
                    failed(maybe_applied, format!("redis: commit failed: {e}"))
                }
                // The EXEC may have run: redis-rs reports a connection that closed ("broken
                // pipe") to the oldest request in flight, sent or not. It is sent again only
                // when running it twice leaves the same keys (no INCRBY); it then counts as
                // happening at the second send, still before its reply.
                Ok(Err(e)) if is_connection_error(&e) => {
                    live.discard();
                    if repeatable && resends < MAX_RESENDS {
                        resends += 1;
                        maybe_applied = true;
                        tracing::info!(
                            "redis: commit (sets and unsets only) sent again on a new \
                             connection, its reply lost: {e}"
                        );
                        continue;
                    }
                    CommitResult::WriteUncertain(format!("redis: commit failed: {e}"))
                }
                Ok(Err(e)) => failed(maybe_applied, format!("redis: commit failed: {e}")),
                Err(_) => {
                    live.discard();
                    CommitResult::WriteUncertain(self.timed_out("commit"))
                }
            };
        }
    }

    /// `WAIT <replicas> <msecs>` after an applied `EXEC`, on the connection (for a cluster:
    /// the node) that ran it. Too few replicas: the write is on the master but may be lost
    /// if it fails now, so the commit is `WriteUncertain`.
    async fn wait_replicas(
        &self,
        mut conn: Conn,
        plan: &CommitPlan,
        (replicas, msecs): (u32, u32),
        deadline: Instant,
    ) -> CommitResult {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(msecs);
        let acked = match &mut conn {
            Conn::Server(c) => timeout_at(deadline, wait.query_async::<i64>(c)).await,
            Conn::Cluster(c) => {
                let key = plan.keys().next().unwrap_or_default();
                timeout_at(deadline, cluster::wait_on_master_of(c, &wait, key)).await
            }
        };
        match acked {
            Ok(Ok(n)) if n >= i64::from(replicas) => CommitResult::Ok,
            Ok(Ok(n)) => CommitResult::WriteUncertain(format!(
                "redis: commit applied on the master, but only {n} of {replicas} replicas \
                 acknowledged it within {msecs} ms: a failover now may lose it"
            )),
            Ok(Err(e)) => CommitResult::WriteUncertain(format!(
                "redis: commit applied on the master, but WAIT failed: {e}"
            )),
            Err(_) => CommitResult::WriteUncertain(self.timed_out("commit (WAIT for replicas)")),
        }
    }

    /// Every Redis key matching `pattern`, deduplicated (SCAN may repeat keys) and sorted;
    /// in a cluster, of every master.
    async fn scan(&self, pattern: &[u8]) -> Result<BTreeSet<Vec<u8>>, DictError> {
        if !self.conn.is_cluster() {
            return self.scan_node(None, pattern).await;
        }
        let masters = self
            .read("iterate", |conn| async move {
                cluster::masters(&mut conn.cluster()?).await
            })
            .await?;
        let mut found = BTreeSet::new();
        for master in &masters {
            found.extend(self.scan_node(Some(master), pattern).await?);
        }
        Ok(found)
    }

    /// The keys matching `pattern` of the server, or of one cluster master.
    async fn scan_node(
        &self,
        master: Option<&(String, u16)>,
        pattern: &[u8],
    ) -> Result<BTreeSet<Vec<u8>>, DictError> {
        let mut found = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .read("iterate", |mut conn| async move {
                    if let Some(master) = master {
                        let mut conn = conn.cluster()?;
                        return cluster::scan_node(&mut conn, master, cursor, pattern, SCAN_COUNT)
                            .await;
                    }
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    async fn mget(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, DictError> {
        self.read("iterate", |mut conn| async move {
            redis::cmd("MGET").arg(keys).query_async(&mut conn).await
        })
        .await
    }
}

/// What an iteration still has to do.
enum IterState {
    Start {
        inner: Arc<Inner>,
        scope: Scope,
        rest: Vec<u8>,
        options: IterateOptions,
    },
    /// Redis keys whose values are fetched and returned batch by batch.
    Values {
        inner: Arc<Inner>,
        scope: Scope,
        keys: std::vec::IntoIter<Vec<u8>>,
        left: u64,
    },
    Done,
}

impl IterState {
    async fn step(self) -> Result<Option<(Vec<IterRow>, IterState)>, DictError> {
        match self {
            IterState::Start {
                inner,
                scope,
                rest,
                options,
            } => start(inner, scope, rest, options).await,
            IterState::Values {
                inner,
                scope,
                mut keys,
                left,
            } => {
                let batch: Vec<Vec<u8>> = keys.by_ref().take(MGET_BATCH).collect();
                if batch.is_empty() || left == 0 {
                    return Ok(None);
                }
                let values = inner.mget(&batch).await?;
                let mut rows = rows_with_values(&scope, batch, values);
                rows.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - rows.len() as u64;
                Ok(Some((
                    rows,
                    IterState::Values {
                        inner,
                        scope,
                        keys,
                        left,
                    },
                )))
            }
            IterState::Done => Ok(None),
        }
    }
}

async fn start(
    inner: Arc<Inner>,
    scope: Scope,
    rest: Vec<u8>,
    options: IterateOptions,
) -> Result<Option<(Vec<IterRow>, IterState)>, DictError> {
    let left = match options.max_rows {
        0 => u64::MAX,
        n => n,
    };
    let base = scope.redis_key(&rest);
    if options.exact_key {
        let row = if options.no_value {
            let n: i64 = inner
                .read("iterate", |mut conn| {
                    let base = &base;
                    async move { redis::cmd("EXISTS").arg(base).query_async(&mut conn).await }
                })
                .await?;
            (n > 0).then(Vec::new)
        } else {
            inner.get(&base).await?
        };
        let rows = row
            .into_iter()
            .filter_map(|value| {
                Some(IterRow {
                    key: scope.dict_key(&base)?,
                    values: vec![value],
                })
            })
            .collect();
        return Ok(Some((rows, IterState::Done)));
    }
    let keys: Vec<Vec<u8>> = inner
        .scan(&scope.scan_pattern(&rest))
        .await?
        .into_iter()
        .filter(|k| {
            k.strip_prefix(base.as_slice())
                .is_some_and(|below| options.recurse || !below.contains(&b'/'))
        })
        .collect();
    if options.no_value {
        let rows = keys
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
            .filter_map(|k| {
                Some(IterRow {
                    key: scope.dict_key(k)?,
                    values: vec![Vec::new()],
                })
            })
            .collect();
        return Ok(Some((rows, IterState::Done)));
    }
    if options.sort_by_value && !options.sort_by_key {
        let mut rows = Vec::with_capacity(keys.len());
        for batch in keys.chunks(MGET_BATCH) {
            let values = inner.mget(batch).await?;
            rows.extend(rows_with_values(&scope, batch.to_vec(), values));
        }
        // stable: equal values stay in key order
        rows.sort_by(|a, b| a.values.cmp(&b.values));
        rows.truncate(usize::try_from(left).unwrap_or(usize::MAX));
        return Ok(Some((rows, IterState::Done)));
    }
    Ok(Some((
        Vec::new(),
        IterState::Values {
            inner,
            scope,
            keys: keys.into_iter(),
            left,
        },
    )))
}

/// Every user's value of `priv/<rest>`: one SCAN, then MGET in batches. Keys deleted
/// meanwhile are left out.
async fn scan_users(inner: Arc<Inner>, rest: Vec<u8>) -> Result<Vec<UserValues>, DictError> {
    let (names, keys): (Vec<Vec<u8>>, Vec<Vec<u8>>) = inner
        .scan(&inner.keys.users_pattern(&rest))
        .await?
        .into_iter()
        .filter_map(|k| Some((inner.keys.user_of(&k, &rest)?, k)))
        .unzip();
    let mut names = names.into_iter();
    let mut users = Vec::with_capacity(keys.len());
    for batch in keys.chunks(MGET_BATCH) {
        let values = inner.mget(batch).await?;
        // The values first: zip stops on them without taking a name too many.
        users.extend(
            values
                .into_iter()
                .zip(names.by_ref())
                .filter_map(|(v, username)| {
                    Some(UserValues {
                        username,
                        values: vec![v?],
                    })
                }),
        );
    }
    Ok(users)
}

/// Rows of the keys whose value is still there (and a string).
fn rows_with_values(
    scope: &Scope,
    keys: Vec<Vec<u8>>,
    values: Vec<Option<Vec<u8>>>,
) -> Vec<IterRow> {
    keys.into_iter()
        .zip(values)
        .filter_map(|(k, v)| {
            Some(IterRow {
                key: scope.dict_key(&k)?,
                values: vec![v?],
            })
        })
        .collect()
}

#[async_trait]
impl Dict for RedisDict {
    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let rkey = self
            .inner
            .keys
            .redis_key(key, username)
            .ok_or_else(|| no_namespace(key))?;
        Ok(self.inner.get(&rkey).await?.map(|v| vec![v]))
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let Some((scope, rest)) = self.inner.keys.split(path, username) else {
            return stream::once(futures::future::ready(Err(no_namespace(path)))).boxed();
        };
        let state = IterState::Start {
            inner: self.inner.clone(),
            scope,
            rest: rest.to_vec(),
            options,
        };
        stream::try_unfold(state, IterState::step)
            .map_ok(|rows| stream::iter(rows.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// `SCAN … MATCH <prefix>*/<rest>` and `MGET`: all keys are held in memory first.
    fn scan_users(&self, key: &[u8]) -> BoxStream<'static, Result<UserValues, DictError>> {
        let Some(rest) = key.strip_prefix(crate::PRIV_PREFIX) else {
            let e = DictError::refused(format!(
                "redis: reading every user's key needs a priv/ key: {}",
                String::from_utf8_lossy(key)
            ));
            return stream::once(futures::future::ready(Err(e))).boxed();
        };
        stream::once(scan_users(self.inner.clone(), rest.to_vec()))
            .map_ok(|users| stream::iter(users.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        self.inner.commit(txn).await
    }

    /// `PING`.
    async fn check(&self) -> Result<(), DictError> {
        let reply: String = self
            .inner
            .read("check", |mut conn| async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(DictError::database(format!(
                "redis: PING answered {reply:?}"
            )))
        }
    }
}
