//! The SQL dict against real databases: the same semantic tests on SQLite (always, in a
//! temporary file), MariaDB/MySQL (when `DICT_TEST_MYSQL_*` is set) and PostgreSQL (when
//! `DICT_TEST_PGSQL_*` is set; `eval "$(tests/scripts/services.sh env)"`). With
//! `DICT_TEST_REQUIRE_SERVICES=1` a missing server fails the test instead of skipping it.
//!
//! Every test creates its own tables (unique prefix) and drops them at the end, so tests
//! run in parallel and next to other users of the same database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dict_backend::sql::{SqlDict, SqlOptions};
use dict_backend::{Change, CommitResult, Dict, ErrorKind, IterRow, IterateOptions, Transaction};
use dict_config::{SqlDriver, SqlMapFile};
use futures::{StreamExt, TryStreamExt};
use sqlx::{MySqlPool, PgPool, Row, SqlitePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Mysql,
    Pgsql,
}

enum Raw {
    Sqlite(SqlitePool),
    Mysql(MySqlPool),
    Pgsql(PgPool),
}

struct Env {
    kind: Kind,
    dict: SqlDict,
    /// The same database through Dovecot 2.4 maps ([`maps24`]).
    dict24: SqlDict,
    raw: Raw,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

#[path = "sql_suite/lookup_batches.rs"]
mod lookup_batches;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `host=… port=… user=… password=… dbname=…` from `DICT_TEST_<DB>_*`, or None.
fn server_connect(db: &str) -> Option<String> {
    let get = |k: &str| env_var(&format!("DICT_TEST_{db}_{k}"));
    Some(format!(
        "host={} port={} user={} password={} dbname={}",
        get("HOST")?,
        get("PORT")?,
        get("USER")?,
        get("PASSWORD")?,
        get("DB")?
    ))
}

/// A sqlx URL for the test's own connection.
fn server_url(db: &str, scheme: &str) -> String {
    let g = |k: &str| env_var(&format!("DICT_TEST_{db}_{k}")).unwrap();
    format!(
        "{scheme}://{}:{}@{}:{}/{}",
        g("USER"),
        g("PASSWORD"),
        g("HOST"),
        g("PORT"),
        g("DB")
    )
}

/// The connect string for `kind`, or None to skip (panics when services are required).
fn available(kind: Kind) -> Option<String> {
    let name = match kind {
        Kind::Sqlite => return Some(String::new()),
        Kind::Mysql => "MYSQL",
        Kind::Pgsql => "PGSQL",
    };
    let connect = server_connect(name);
    if connect.is_none() {
        if env_var("DICT_TEST_REQUIRE_SERVICES").as_deref() == Some("1") {
            panic!("DICT_TEST_REQUIRE_SERVICES=1 but DICT_TEST_{name}_HOST/PORT/USER/PASSWORD/DB are not all set");
        }
        eprintln!("skipped: DICT_TEST_{name}_* not set");
    }
    connect
}

fn maps(p: &str) -> String {
    format!(
        r#"
# the reference harness's maps (dovecot-dict-sql-sqlite.conf.ext.in), tables prefixed
map {{
  pattern = priv/quota/storage
  table = {p}quota
  username_field = username
  value_field = bytes
  value_type = uint
}}
map {{
  pattern = priv/quota/messages
  table = {p}quota
  username_field = username
  value_field = messages
  value_type = uint
}}
map {{
  pattern = shared/kv/$scope/$name
  table = {p}kv
  value_field = value
  fields {{
    scope = $scope
    name = $name
  }}
}}
map {{
  pattern = priv/kv/$name
  table = {p}userkv
  username_field = username
  value_field = value
  fields {{
    name = $name
  }}
}}
map {{
  pattern = priv/quota/both
  table = {p}quota
  username_field = username
  value_field = bytes,messages
  value_type = uint,uint
}}
map {{
  pattern = shared/bench/$name
  table = {p}bench
  value_field = value
  fields {{
    name = $name
  }}
}}
# several variables, one of them an integer
map {{
  pattern = shared/multi/$a/$b/$c
  table = {p}multi
  value_field = v1
  fields {{
    a = $a
    b = ${{int:b}}
    c = $c
  }}
}}
map {{
  pattern = shared/multiv/$a/$b/$c
  table = {p}multi
  value_field = v1,v2
  value_type = string,int
  fields {{
    a = $a
    b = ${{int:b}}
    c = $c
  }}
}}
# binary key and value
map {{
  pattern = priv/blob/$id
  table = {p}blob
  username_field = username
  value_field = data
  value_type = hexblob
  fields {{
    id = ${{hexblob:id}}
  }}
}}
# shared map without variables
map {{
  pattern = shared/single
  table = {p}single
  value_field = v
}}
# priv/ map without username_field: never matches
map {{
  pattern = priv/nouser/$name
  table = {p}kv
  value_field = value
  fields {{
    name = $name
  }}
}}
"#
    )
}

fn schema(kind: Kind, p: &str) -> Vec<String> {
    let (blob, key_blob) = match kind {
        Kind::Sqlite => ("BLOB", "BLOB"),
        Kind::Mysql => ("BLOB", "VARBINARY(64)"),
        Kind::Pgsql => ("BYTEA", "BYTEA"),
    };
    let (uuid, double) = match kind {
        Kind::Sqlite => ("TEXT", "REAL"),
        Kind::Mysql => ("CHAR(36)", "DOUBLE"),
        Kind::Pgsql => ("UUID", "DOUBLE PRECISION"),
    };
    vec![
        format!("CREATE TABLE {p}quota (username VARCHAR(255) NOT NULL, bytes BIGINT NOT NULL DEFAULT 0, messages INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (username))"),
        format!("CREATE TABLE {p}kv (scope VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL, value TEXT, PRIMARY KEY (scope, name))"),
        format!("CREATE TABLE {p}userkv (username VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, value TEXT, PRIMARY KEY (username, name))"),
        format!("CREATE TABLE {p}bench (name VARCHAR(255) NOT NULL, value TEXT, PRIMARY KEY (name))"),
        format!("CREATE TABLE {p}multi (a VARCHAR(64) NOT NULL, b INTEGER NOT NULL, c VARCHAR(64) NOT NULL, v1 TEXT, v2 BIGINT, PRIMARY KEY (a, b, c))"),
        format!("CREATE TABLE {p}blob (username VARCHAR(255) NOT NULL, id {key_blob} NOT NULL, data {blob}, PRIMARY KEY (username, id))"),
        format!("CREATE TABLE {p}single (v TEXT)"),
        format!("CREATE TABLE {p}exp (name VARCHAR(255) NOT NULL, value TEXT, expires BIGINT, PRIMARY KEY (name))"),
        format!("CREATE TABLE {p}expq (username VARCHAR(255) NOT NULL, bytes BIGINT, messages BIGINT, expires BIGINT, PRIMARY KEY (username))"),
        format!("CREATE TABLE {p}exp1 (value TEXT, expires BIGINT)"),
        format!("CREATE TABLE {p}typed (id {uuid} NOT NULL, d {double}, u {uuid}, PRIMARY KEY (id))"),
    ]
}

const TABLES: [&str; 11] = [
    "quota", "kv", "userkv", "bench", "multi", "blob", "single", "exp", "expq", "exp1", "typed",
];

/// Dovecot 2.4 maps (`expire_field`, `double`, `uuid`), in 2.4 syntax.
fn maps24(p: &str, connect: &str, kind: Kind) -> String {
    let sql = match kind {
        Kind::Sqlite => format!("sql_driver = sqlite\nsqlite_path = {connect}"),
        // the connect string is replaced by the test server's
        Kind::Mysql => "sql_driver = mysql\n    mysql localhost {\n    }".to_string(),
        Kind::Pgsql => "sql_driver = pgsql\n    pgsql localhost {\n    }".to_string(),
    };
    format!(
        r#"dovecot_config_version = 2.4.1
dict_server {{
  dict d24 {{
    driver = sql
    {sql}
    dict_map shared/exp/$name {{
      sql_table = {p}exp
      expire_field = expires
      value_field value {{
      }}
      key_field name {{
        value = $name
      }}
    }}
    dict_map priv/exp/storage {{
      sql_table = {p}expq
      username_field = username
      expire_field = expires
      value_field bytes {{
        type = int
      }}
    }}
    dict_map priv/exp/messages {{
      sql_table = {p}expq
      username_field = username
      expire_field = expires
      value_field messages {{
        type = int
      }}
    }}
    dict_map shared/exp1 {{
      sql_table = {p}exp1
      expire_field = expires
      value_field value {{
      }}
    }}
    dict_map shared/double/$id {{
      sql_table = {p}typed
      value_field d {{
        type = double
      }}
      key_field id {{
        value = $id
        type = uuid
      }}
    }}
    dict_map shared/uuid/$id {{
      sql_table = {p}typed
      value_field u {{
        type = uuid
      }}
      key_field id {{
        value = $id
        type = uuid
      }}
    }}
  }}
}}
"#
    )
}

impl Env {
    async fn new(kind: Kind) -> Option<Env> {
        let connect = available(kind)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 10000;
        let prefix = format!("t{}_{nanos}_{n}_", std::process::id());
        let (driver, connect, raw, dir) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("dict.db");
                let raw = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await
                    .unwrap();
                (
                    SqlDriver::Sqlite,
                    path.display().to_string(),
                    Raw::Sqlite(raw),
                    Some(dir),
                )
            }
            Kind::Mysql => {
                let raw = MySqlPool::connect(&server_url("MYSQL", "mysql"))
                    .await
                    .unwrap();
                (SqlDriver::Mysql, connect, Raw::Mysql(raw), None)
            }
            Kind::Pgsql => {
                let raw = PgPool::connect(&server_url("PGSQL", "postgres"))
                    .await
                    .unwrap();
                (SqlDriver::Pgsql, connect, Raw::Pgsql(raw), None)
            }
        };
        for stmt in schema(kind, &prefix) {
            exec_raw(&raw, &stmt).await;
        }
        let text = format!("connect = {connect}\n{}", maps(&prefix));
        let file = SqlMapFile::parse_str(driver, &text, "/test/dict-sql.conf.ext").unwrap();
        let options = SqlOptions {
            create_sqlite: true,
            ..SqlOptions::default()
        };
        let dict = SqlDict::connect(driver, file.clone(), options.clone())
            .await
            .unwrap();
        let conf = dict_config::DovecotConfig::parse_str(
            &maps24(&prefix, &connect, kind),
            "/test/dovecot.conf",
        )
        .unwrap();
        let mut file24 = match conf.dicts[0].spec() {
            Ok(dict_config::DictSpec::Sql { map_file, .. }) => map_file,
            other => panic!("{other:?}"),
        };
        // MySQL/PostgreSQL: the same server as the 2.3 maps
        file24.connect = file.connect.clone();
        let dict24 = SqlDict::connect(driver, file24, options).await.unwrap();
        Some(Env {
            kind,
            dict,
            dict24,
            raw,
            prefix,
            _dir: dir,
        })
    }

    /// SQLite: the directory of the database file.
    fn dir(&self) -> &std::path::Path {
        self._dir.as_ref().expect("an SQLite test").path()
    }

    fn t(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }

    async fn exec(&self, sql: &str) {
        exec_raw(&self.raw, sql).await;
    }

    /// Rows of `sql`; every selected column must be text (see `txt`, `hex`).
    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        macro_rules! fetch {
            ($pool:expr) => {
                sqlx::query(sql)
                    .fetch_all($pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                            .collect()
                    })
                    .collect()
            };
        }
        match &self.raw {
            Raw::Sqlite(p) => fetch!(p),
            Raw::Mysql(p) => fetch!(p),
            Raw::Pgsql(p) => fetch!(p),
        }
    }

    /// `column` as text.
    fn txt(&self, column: &str) -> String {
        match self.kind {
            Kind::Mysql => format!("CAST({column} AS CHAR)"),
            _ => format!("CAST({column} AS TEXT)"),
        }
    }

    /// A binary `column` as hex (any case).
    fn hex(&self, column: &str) -> String {
        match self.kind {
            Kind::Pgsql => format!("encode({column}, 'hex')"),
            _ => format!("hex({column})"),
        }
    }

    async fn cleanup(self) {
        self.dict.close().await;
        self.dict24.close().await;
        for t in TABLES {
            self.exec(&format!("DROP TABLE IF EXISTS {}", self.t(t)))
                .await;
        }
    }

    async fn commit(&self, user: &str, changes: Vec<Change>) -> CommitResult {
        self.dict
            .commit(Transaction {
                username: user.into(),
                changes,
                ..Default::default()
            })
            .await
    }

    async fn get(&self, key: &str, user: &str) -> Option<Vec<String>> {
        self.dict
            .lookup(key.as_bytes(), user.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("lookup {key}: {e}"))
            .map(|vs| {
                vs.into_iter()
                    .map(|v| String::from_utf8(v).unwrap())
                    .collect()
            })
    }

    async fn get1(&self, key: &str, user: &str) -> Option<String> {
        self.get(key, user).await.map(|mut v| v.remove(0))
    }

    async fn iter(
        &self,
        path: &str,
        user: &str,
        opts: IterateOptions,
    ) -> Result<Vec<(String, Vec<String>)>, String> {
        let rows: Vec<_> = self
            .dict
            .iterate(path.as_bytes(), user.as_bytes(), opts)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in rows {
            match r {
                Ok(IterRow { key, values }) => out.push((
                    String::from_utf8(key).unwrap(),
                    values
                        .into_iter()
                        .map(|v| String::from_utf8(v).unwrap())
                        .collect(),
                )),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    }

    /// Keys of an iteration, sorted (iteration order is the database's).
    async fn keys(&self, path: &str, user: &str, opts: IterateOptions) -> Vec<String> {
        let mut keys: Vec<String> = self
            .iter(path, user, opts)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    }
}

/// A write lock held by the test's own connection, so that the dict's commits queue up
/// behind one that needs it: SQLite's database lock, or (MySQL, PostgreSQL) the lock on
/// the not yet committed quota row of `user`.
enum Lock {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Mysql(sqlx::Transaction<'static, sqlx::MySql>),
    Pgsql(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Lock {
    async fn take(env: &Env, user: &str) -> Lock {
        // PostgreSQL reads the column types on first use: done here, commits queue at once.
        assert_eq!(env.get1("priv/quota/storage", "nobody").await, None);
        let insert = format!(
            "INSERT INTO {} (username, bytes, messages) VALUES ('{user}', 0, 0)",
            env.t("quota")
        );
        match &env.raw {
            Raw::Sqlite(pool) => {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                Lock::Sqlite(c)
            }
            Raw::Mysql(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(&insert).execute(&mut *tx).await.unwrap();
                Lock::Mysql(tx)
            }
            Raw::Pgsql(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(&insert).execute(&mut *tx).await.unwrap();
                Lock::Pgsql(tx)
            }
        }
    }

    /// Rolls back: the row was never there.
    async fn release(self) {
        match self {
            Lock::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut *c).await.unwrap();
            }
            Lock::Mysql(tx) => tx.rollback().await.unwrap(),
            Lock::Pgsql(tx) => tx.rollback().await.unwrap(),
        }
    }
}

async fn exec_raw(raw: &Raw, sql: &str) {
    let r = match raw {
        Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Raw::Mysql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Raw::Pgsql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn set(k: &str, v: &str) -> Change {
    Change::Set {
        key: k.into(),
        value: v.into(),
    }
}
fn unset(k: &str) -> Change {
    Change::Unset { key: k.into() }
}
fn inc(k: &str, d: i64) -> Change {
    Change::Inc {
        key: k.into(),
        diff: d,
    }
}
fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}
fn opts() -> IterateOptions {
    IterateOptions::default()
}
fn recurse() -> IterateOptions {
    IterateOptions {
        recurse: true,
        ..Default::default()
    }
}
fn failed(r: CommitResult) -> String {
    match r {
        CommitResult::Failed(e) => e,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// One test function per database for each case.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(env) = super::Env::new(super::Kind::Sqlite).await {
                    super::cases::$case(&env).await;
                    env.cleanup().await;
                }
            }
        )* }
        mod mysql { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(env) = super::Env::new(super::Kind::Mysql).await {
                    super::cases::$case(&env).await;
                    env.cleanup().await;
                }
            }
        )* }
        mod pgsql { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(env) = super::Env::new(super::Kind::Pgsql).await {
                    super::cases::$case(&env).await;
                    env.cleanup().await;
                }
            }
        )* }
    };
}

suite!(
    lookups,
    unmapped_keys_and_bad_types,
    sets_merge_into_one_row,
    unset_deletes_the_whole_row,
    inc_notfound_commits_the_rest,
    quota_clone_unset_sequence,
    values_are_bound_parameters,
    iterate_levels_and_flags,
    iterate_several_maps_and_max_rows,
    iterate_without_variables_and_priv,
    hexblob_keys_and_values,
    shared_map_without_variables,
    check_schema,
    iteration_streams_and_can_be_dropped,
    concurrent_writers_and_readers,
    expire_field_hides_and_sweeps_expired_rows,
    double_and_uuid_types,
    scan_users_reads_every_user,
    concurrent_commits_fail_alone,
    batches_keep_arrival_order,
    many_connections_write_the_same_rows,
    more_callers_than_connections,
    text_is_stored_as_sent_or_refused,
    exact_key_with_recurse_reads_the_first_map,
    increments_of_null_columns,
    concurrent_lookups_answer_as_alone,
    a_refused_lookup_fails_alone_in_its_batch,
    queued_lookups_time_out_by_their_deadline,
);

mod cases {
    pub use super::lookup_batches::{
        a_refused_lookup_fails_alone_in_its_batch, concurrent_lookups_answer_as_alone,
        queued_lookups_time_out_by_their_deadline,
    };
    use super::*;

    /// Text that isn't UTF-8: SQLite stores it as TEXT with the same bytes (as Dovecot
    /// does), MariaDB's utf8mb4 columns and PostgreSQL refuse it with `F` (nothing sent
    /// to PostgreSQL), never a changed value.
    pub async fn text_is_stored_as_sent_or_refused(env: &Env) {
        let commit = |key: &[u8], value: &[u8], user: &[u8]| {
            env.dict.commit(Transaction {
                username: user.to_vec(),
                changes: vec![Change::Set {
                    key: key.to_vec(),
                    value: value.to_vec(),
                }],
                ..Default::default()
            })
        };
        let lookup = |key: &'static [u8], user: &'static [u8]| env.dict.lookup(key, user);
        let kv = env.t("kv");
        let cases: [(&[u8], &[u8], &[u8]); 3] = [
            (b"shared/kv/x/y", b"\xff\xfe", b""),
            (b"shared/kv/x/z\xff", b"v", b""),
            (b"priv/quota/storage", b"5", b"\xffu"),
        ];
        for (key, value, user) in cases {
            let r = commit(key, value, user).await;
            match env.kind {
                Kind::Sqlite => assert_eq!(r, CommitResult::Ok),
                Kind::Mysql => {
                    assert!(failed(r)
                        .starts_with("sql dict: commit failed: Incorrect string value: '\\x"),)
                }
                Kind::Pgsql => assert_eq!(
                    failed(r),
                    "sql dict: commit failed: invalid multibyte character"
                ),
            }
        }
        let found = lookup(b"shared/kv/x/y", b"").await.unwrap();
        let by_key = lookup(b"shared/kv/x/z\xff", b"").await;
        match env.kind {
            Kind::Sqlite => {
                assert_eq!(found, Some(vec![b"\xff\xfe".to_vec()]));
                assert_eq!(by_key.unwrap(), Some(vec![b"v".to_vec()]));
                // The latin1-looking UTF-8 of those bytes is another value.
                assert_eq!(lookup(b"shared/kv/x/\xc3\xbf", b"").await.unwrap(), None);
                assert_eq!(
                    env.rows(&format!(
                        "SELECT typeof(name), typeof(value), hex(name), hex(value) FROM {kv} ORDER BY name"
                    ))
                    .await,
                    vec![
                        vec![s("text"), s("text"), s("79"), s("FFFE")],
                        vec![s("text"), s("text"), s("7AFF"), s("76")],
                    ]
                );
                // A row as Dovecot writes it is found and updated in place.
                env.exec(&format!(
                    "INSERT INTO {kv} (scope, name, value) VALUES ('d', CAST(X'FFFE' AS TEXT), 'old')"
                ))
                .await;
                assert_eq!(
                    lookup(b"shared/kv/d/\xff\xfe", b"").await.unwrap(),
                    Some(vec![b"old".to_vec()])
                );
                let r = commit(b"shared/kv/d/\xff\xfe", b"new", b"").await;
                assert_eq!(r, CommitResult::Ok);
                assert_eq!(
                    env.rows(&format!("SELECT value FROM {kv} WHERE scope = 'd'"))
                        .await,
                    vec![vec![s("new")]]
                );
            }
            Kind::Mysql => {
                assert_eq!(found, None);
                // As Dovecot: no utf8mb4 row can have that key.
                assert_eq!(by_key.unwrap(), None);
                let rows = env.rows(&format!("SELECT name FROM {kv}")).await;
                assert!(rows.is_empty(), "{rows:?}");
            }
            Kind::Pgsql => {
                assert_eq!(found, None);
                let e = by_key.unwrap_err();
                assert_eq!(e.to_string(), "invalid multibyte character");
                // Refused before anything was sent.
                assert_eq!(e.kind(), ErrorKind::Refused);
                let rows: Vec<_> = env
                    .dict
                    .iterate(b"shared/kv/x\xff/", b"", opts())
                    .collect()
                    .await;
                assert_eq!(
                    rows.into_iter()
                        .map(|r| r.unwrap_err().to_string())
                        .collect::<Vec<_>>(),
                    vec!["dict sql iterate failed: invalid multibyte character"]
                );
            }
        }
    }

    /// EXACT_KEY with RECURSE lists the rows of the first map that matches the path only,
    /// as Dovecot does.
    pub async fn exact_key_with_recurse_reads_the_first_map(env: &Env) {
        let changes = vec![set("shared/kv/a/b", "1"), set("shared/bench/zz", "2")];
        assert_eq!(env.commit("", changes).await, CommitResult::Ok);
        let both = IterateOptions {
            exact_key: true,
            ..recurse()
        };
        assert_eq!(
            env.iter("shared/", "", both).await.unwrap(),
            vec![("shared/kv/a/b".into(), vec!["1".into()])]
        );
        assert_eq!(
            env.keys("shared/", "", recurse()).await,
            vec!["shared/bench/zz", "shared/kv/a/b"]
        );
    }

    /// An increment of a NULL column: MariaDB counts the row as unchanged, so the commit
    /// is NOTFOUND there (as Dovecot answers); the other databases count it as found.
    /// Increments that cancel out are likewise NOTFOUND on MariaDB.
    pub async fn increments_of_null_columns(env: &Env) {
        let expq = env.t("expq");
        env.exec(&format!(
            "INSERT INTO {expq} (username, bytes, messages) VALUES ('u', NULL, 3)"
        ))
        .await;
        let inc = |changes: Vec<Change>| {
            env.dict24.commit(Transaction {
                username: b"u".to_vec(),
                changes,
                ..Default::default()
            })
        };
        let mysql = env.kind == Kind::Mysql;
        let found = |mysql_notfound: bool| {
            if mysql && mysql_notfound {
                CommitResult::NotFound
            } else {
                CommitResult::Ok
            }
        };
        assert_eq!(
            inc(vec![super::inc("priv/exp/storage", 5)]).await,
            found(true)
        );
        // One column that changes is enough.
        let both = vec![
            super::inc("priv/exp/storage", 5),
            super::inc("priv/exp/messages", 1),
        ];
        assert_eq!(inc(both).await, found(false));
        let cancel = vec![
            super::inc("priv/exp/messages", 2),
            super::inc("priv/exp/messages", -2),
        ];
        assert_eq!(inc(cancel).await, found(true));
        assert_eq!(
            env.rows(&format!(
                "SELECT {}, {} FROM {expq}",
                env.txt("bytes"),
                env.txt("messages")
            ))
            .await,
            vec![vec![None, s("4")]]
        );
    }

    /// Commits arriving together (on SQLite: applied as one group, one transaction with a
    /// savepoint each) keep their own outcomes: a failing statement fails only its
    /// commit, a missing row makes only its commit NOTFOUND, the rest are stored.
    pub async fn concurrent_commits_fail_alone(env: &Env) {
        env.exec(&format!("DROP TABLE {}", env.t("single"))).await;
        // Another connection holds a lock the first commit needs, so that the others
        // queue up behind it and are applied together: one batch, in which commit 7
        // fails and must fail alone.
        let lock = Lock::take(env, "g0").await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let dict = env.dict.clone();
            let (user, changes) = match i {
                7 => (String::new(), vec![set("shared/single", "x")]),
                11 => ("nobody".to_string(), vec![inc("priv/quota/storage", 5)]),
                _ => (
                    format!("g{i}"),
                    vec![
                        set("priv/quota/storage", &format!("{}", 1000 + i)),
                        set("priv/quota/messages", &format!("{i}")),
                    ],
                ),
            };
            tasks.push(tokio::spawn(async move {
                dict.commit(Transaction {
                    username: user.into_bytes(),
                    changes,
                    ..Default::default()
                })
                .await
            }));
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.release().await;
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap();
            match i {
                7 => assert!(failed(result).contains("single"), "commit {i}"),
                11 => assert_eq!(result, CommitResult::NotFound, "commit {i}"),
                _ => {
                    assert_eq!(result, CommitResult::Ok, "commit {i}");
                    assert_eq!(
                        env.get("priv/quota/both", &format!("g{i}")).await,
                        Some(vec![format!("{}", 1000 + i), format!("{i}")])
                    );
                }
            }
        }
        assert_eq!(env.get("priv/quota/storage", "nobody").await, None);
    }

    /// Commits applied together (queued behind a blocked one) give what they give one
    /// after the other, in arrival order: the same key twice keeps the later value, a
    /// delete between two sets of a key stays between them, an increment sees the row a
    /// set before it created, and each commit gets its own NOTFOUND.
    pub async fn batches_keep_arrival_order(env: &Env) {
        let lock = Lock::take(env, "blocker").await;
        let commits: Vec<(&str, Vec<Change>)> = vec![
            ("blocker", vec![set("priv/quota/storage", "1")]),
            ("", vec![set("shared/kv/s/k", "first")]),
            ("", vec![set("shared/kv/s/k", "second")]),
            ("", vec![set("shared/kv/s/d", "x")]),
            ("", vec![unset("shared/kv/s/d")]),
            ("", vec![unset("shared/kv/s/e")]),
            (
                "",
                vec![set("shared/kv/s/e", "y"), set("shared/kv/s/k", "third")],
            ),
            ("g1", vec![inc("priv/quota/storage", 5)]),
            ("g1", vec![set("priv/quota/storage", "10")]),
            ("g1", vec![inc("priv/quota/storage", 5)]),
            (
                "g2",
                vec![
                    set("priv/quota/storage", "7"),
                    set("priv/quota/messages", "1"),
                ],
            ),
            (
                "g2",
                vec![
                    set("priv/quota/storage", "8"),
                    set("priv/quota/messages", "2"),
                ],
            ),
            ("", vec![set("shared/kv/s/k", "fourth")]),
        ];
        let mut tasks = Vec::new();
        for (user, changes) in commits {
            let dict = env.dict.clone();
            tasks.push(tokio::spawn(async move {
                dict.commit(Transaction {
                    username: user.into(),
                    changes,
                    ..Default::default()
                })
                .await
            }));
            // Queued in this order (time enough for a loaded machine).
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        lock.release().await;
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let mut expected = vec![CommitResult::Ok; 13];
        expected[7] = CommitResult::NotFound;
        assert_eq!(results, expected);
        assert_eq!(env.get1("shared/kv/s/k", "").await, s("fourth"));
        assert_eq!(env.get1("shared/kv/s/d", "").await, None);
        assert_eq!(env.get1("shared/kv/s/e", "").await, s("y"));
        assert_eq!(env.get1("priv/quota/storage", "g1").await, s("15"));
        assert_eq!(
            env.get("priv/quota/both", "g2").await,
            Some(vec!["8".into(), "2".into()])
        );
        assert_eq!(env.get1("priv/quota/storage", "blocker").await, s("1"));
    }

    /// Many connections writing the same rows at once: no write is lost.
    pub async fn many_connections_write_the_same_rows(env: &Env) {
        let tasks = (0..24).map(|w| async move {
            for i in 0..15 {
                let r = env
                    .commit(
                        &format!("hot{}", w % 2),
                        vec![
                            set("priv/quota/storage", &format!("{w}")),
                            inc("priv/quota/messages", 1),
                        ],
                    )
                    .await;
                // The set creates the row, so the increment always finds it.
                assert_eq!(r, CommitResult::Ok, "{w}/{i}");
                let r = env
                    .commit(
                        "",
                        vec![set(&format!("shared/kv/hot/{}", i % 3), &format!("{w}"))],
                    )
                    .await;
                assert_eq!(r, CommitResult::Ok, "{w}/{i}");
            }
        });
        futures::future::join_all(tasks).await;
        // Every increment counted: 12 writers x 15 commits per row.
        for user in ["hot0", "hot1"] {
            assert_eq!(
                env.get1("priv/quota/messages", user).await,
                s(&(12 * 15).to_string()),
                "{user}"
            );
        }
        for k in 0..3 {
            assert!(env.get1(&format!("shared/kv/hot/{k}"), "").await.is_some());
        }
    }

    /// More callers than the pool has connections (Dovecot's default `maxconns` is 5):
    /// a caller waiting for the pool gets a connection another one just finished with,
    /// also one the dict keeps for reuse, and nobody waits until the timeout.
    pub async fn more_callers_than_connections(env: &Env) {
        assert_eq!(
            env.commit("", vec![set("shared/kv/c/k", "v")]).await,
            CommitResult::Ok
        );
        let tasks = (0..24).map(|_| async move {
            for _ in 0..20 {
                let started = Instant::now();
                assert_eq!(env.get1("shared/kv/c/k", "").await, s("v"));
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{:?}",
                    started.elapsed()
                );
            }
        });
        futures::future::join_all(tasks).await;
    }

    /// `Dict::scan_users`, sorted by user, values as text.
    async fn scan(dict: &SqlDict, key: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut rows: Vec<(String, Vec<String>)> = dict
            .scan_users(key.as_bytes())
            .map(|r| {
                r.map(|u| {
                    (
                        String::from_utf8(u.username).unwrap(),
                        u.values
                            .into_iter()
                            .map(|v| String::from_utf8(v).unwrap())
                            .collect(),
                    )
                })
            })
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        rows.sort();
        Ok(rows)
    }

    /// Every user's values of a `priv/` key, as each user's lookup would return them:
    /// plain and multi-value maps, bound key fields, hexblob, expired rows left out.
    pub async fn scan_users_reads_every_user(env: &Env) {
        for (user, bytes, messages) in [("bob", "20", "2"), ("alice", "10", "1")] {
            let changes = vec![
                set("priv/quota/storage", bytes),
                set("priv/quota/messages", messages),
            ];
            assert_eq!(env.commit(user, changes).await, CommitResult::Ok);
        }
        assert_eq!(
            env.commit(
                "carol",
                vec![set("priv/kv/x", "cx"), set("priv/kv/y", "cy")]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(
            env.commit(
                "alice",
                vec![set("priv/kv/x", "ax"), set("priv/blob/6a", "00ff")]
            )
            .await,
            CommitResult::Ok
        );
        let one = |u: &str, v: &str| (u.to_string(), vec![v.to_string()]);
        assert_eq!(
            scan(&env.dict, "priv/quota/storage").await.unwrap(),
            vec![one("alice", "10"), one("bob", "20")]
        );
        assert_eq!(
            scan(&env.dict, "priv/quota/both").await.unwrap(),
            vec![
                ("alice".into(), vec!["10".into(), "1".into()]),
                ("bob".into(), vec!["20".into(), "2".into()])
            ]
        );
        assert_eq!(
            scan(&env.dict, "priv/kv/x").await.unwrap(),
            vec![one("alice", "ax"), one("carol", "cx")]
        );
        assert_eq!(
            scan(&env.dict, "priv/blob/6A").await.unwrap(),
            vec![one("alice", "00ff")]
        );
        assert_eq!(scan(&env.dict, "priv/kv/none").await.unwrap(), vec![]);
        for bad in ["shared/kv/a/b", "priv/unmapped", "priv/nouser/x"] {
            let e = scan(&env.dict, bad).await.unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let expq = env.t("expq");
        env.exec(&format!(
            "INSERT INTO {expq} (username, bytes, messages, expires) VALUES ('gone', 1, 1, {}), ('live', 2, 2, NULL), ('later', 3, 3, {})",
            now() - 10,
            now() + 3600
        ))
        .await;
        assert_eq!(
            scan(&env.dict24, "priv/exp/storage").await.unwrap(),
            vec![one("later", "3"), one("live", "2")]
        );
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    async fn commit24(env: &Env, user: &str, expire: u32, changes: Vec<Change>) -> CommitResult {
        env.dict24
            .commit(Transaction {
                username: user.into(),
                expire_secs: Some(expire),
                changes,
                ..Default::default()
            })
            .await
    }

    async fn get24(env: &Env, key: &str, user: &str) -> Option<Vec<String>> {
        env.dict24
            .lookup(key.as_bytes(), user.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("lookup {key}: {e}"))
            .map(|vs| {
                vs.into_iter()
                    .map(|v| String::from_utf8(v).unwrap())
                    .collect()
            })
    }

    async fn keys24(env: &Env, path: &str, user: &str) -> Vec<String> {
        let rows: Vec<_> = env
            .dict24
            .iterate(path.as_bytes(), user.as_bytes(), IterateOptions::default())
            .collect()
            .await;
        let mut keys: Vec<String> = rows
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap().key).unwrap())
            .collect();
        keys.sort();
        keys
    }

    /// Dovecot 2.4's `expire_field`: sets write now + expire_secs (from `B`), reads skip
    /// rows at or past their time, NULL never expires, the sweep deletes only expired rows.
    pub async fn expire_field_hides_and_sweeps_expired_rows(env: &Env) {
        let exp = env.t("exp");
        let expires = |name: &str| {
            let sql = format!(
                "SELECT {} FROM {exp} WHERE name = '{name}'",
                env.txt("expires")
            );
            async move { env.rows(&sql).await }
        };
        assert_eq!(
            commit24(
                env,
                "",
                100,
                vec![set("shared/exp/a", "1"), set("shared/exp/b", "2")]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(
            commit24(env, "", 0, vec![set("shared/exp/c", "3")]).await,
            CommitResult::Ok
        );
        let at: i64 = expires("a").await[0][0].clone().unwrap().parse().unwrap();
        assert!(
            (now() + 99..=now() + 101).contains(&at),
            "expires {at}, now {}",
            now()
        );
        assert_eq!(expires("c").await, vec![vec![None]]);
        assert_eq!(get24(env, "shared/exp/a", "").await, Some(vec!["1".into()]));
        assert_eq!(
            keys24(env, "shared/exp/", "").await,
            ["shared/exp/a", "shared/exp/b", "shared/exp/c"]
        );

        // a is due now, b long ago: both invisible, c (never expires) stays
        env.exec(&format!(
            "UPDATE {exp} SET expires = {} WHERE name = 'a'",
            now()
        ))
        .await;
        env.exec(&format!("UPDATE {exp} SET expires = 1 WHERE name = 'b'"))
            .await;
        assert_eq!(get24(env, "shared/exp/a", "").await, None);
        assert_eq!(get24(env, "shared/exp/b", "").await, None);
        assert_eq!(keys24(env, "shared/exp/", "").await, ["shared/exp/c"]);

        // setting again without expiry makes the value permanent
        assert_eq!(
            commit24(env, "", 0, vec![set("shared/exp/b", "again")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            get24(env, "shared/exp/b", "").await,
            Some(vec!["again".into()])
        );
        assert_eq!(expires("b").await, vec![vec![None]]);

        // the sweep deletes a (expired), keeps b, c (no expiry) and d (not yet expired)
        assert_eq!(
            commit24(env, "", 3600, vec![set("shared/exp/d", "4")]).await,
            CommitResult::Ok
        );
        env.dict24.expire_scan().await.unwrap();
        let mut names: Vec<String> = env
            .rows(&format!("SELECT name FROM {exp}"))
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b", "c", "d"]);

        // a map without variables: UPDATE/INSERT carry the expiry too
        assert_eq!(
            commit24(env, "", 50, vec![set("shared/exp1", "one")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            get24(env, "shared/exp1", "").await,
            Some(vec!["one".into()])
        );
        env.exec(&format!("UPDATE {} SET expires = 2", env.t("exp1")))
            .await;
        assert_eq!(get24(env, "shared/exp1", "").await, None);

        // quota_clone_unset from a 2.4 client: both values survive, with the expiry
        let changes = vec![
            unset("priv/exp/storage"),
            set("priv/exp/storage", "72"),
            unset("priv/exp/messages"),
            set("priv/exp/messages", "1"),
        ];
        assert_eq!(commit24(env, "alice", 60, changes).await, CommitResult::Ok);
        assert_eq!(
            get24(env, "priv/exp/storage", "alice").await,
            Some(vec!["72".into()])
        );
        assert_eq!(
            get24(env, "priv/exp/messages", "alice").await,
            Some(vec!["1".into()])
        );
        // increments don't touch the expiry (as in Dovecot)
        assert_eq!(
            commit24(env, "alice", 0, vec![inc("priv/exp/storage", 8)]).await,
            CommitResult::Ok
        );
        assert_eq!(
            get24(env, "priv/exp/storage", "alice").await,
            Some(vec!["80".into()])
        );
        let e = env
            .rows(&format!(
                "SELECT {} FROM {} WHERE username = 'alice'",
                env.txt("expires"),
                env.t("expq")
            ))
            .await;
        assert!(e[0][0].is_some(), "{e:?}");
    }

    /// Dovecot 2.4's `double` and `uuid` types, on every database.
    pub async fn double_and_uuid_types(env: &Env) {
        let id = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0";
        let canonical = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let key = |m: &str| format!("shared/{m}/{id}");
        assert_eq!(
            commit24(env, "", 0, vec![set(&key("double"), "1.5")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            get24(env, &key("double"), "").await,
            Some(vec!["1.5".into()])
        );
        assert_eq!(
            commit24(
                env,
                "",
                0,
                vec![set(&key("uuid"), "00112233445566778899AABBCCDDEEFF")]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(
            get24(env, &format!("shared/uuid/{canonical}"), "").await,
            Some(vec!["00112233-4455-6677-8899-aabbccddeeff".into()])
        );
        assert_eq!(
            keys24(env, "shared/uuid/", "").await,
            [format!("shared/uuid/{canonical}")]
        );
        let bad = commit24(env, "", 0, vec![set(&key("double"), "1.5x")]).await;
        assert!(failed(bad).contains("value field's value isn't a double: 1.5x"));
        let bad = commit24(env, "", 0, vec![set("shared/double/not-a-uuid", "1")]).await;
        assert!(failed(bad).contains("id field's value isn't an uuid: not-a-uuid"));
    }

    pub async fn lookups(env: &Env) {
        let q = env.t("quota");
        env.exec(&format!(
            "INSERT INTO {q} (username, bytes, messages) VALUES ('alice', 1000, 5)"
        ))
        .await;
        env.exec(&format!(
            "INSERT INTO {} (scope, name, value) VALUES ('s', 'n', 'hello'), ('s', 'nul', NULL)",
            env.t("kv")
        ))
        .await;
        env.exec(&format!("INSERT INTO {} (a, b, c, v1, v2) VALUES ('a', 7, 'c', 'x', 42), ('a', 8, 'c', NULL, NULL)", env.t("multi")))
            .await;
        assert_eq!(
            env.get("priv/quota/storage", "alice").await,
            Some(vec!["1000".into()])
        );
        assert_eq!(
            env.get("priv/quota/messages", "alice").await,
            Some(vec!["5".into()])
        );
        assert_eq!(env.get("priv/quota/storage", "bob").await, None);
        assert_eq!(
            env.get("priv/quota/both", "alice").await,
            Some(vec!["1000".into(), "5".into()])
        );
        assert_eq!(
            env.get("shared/kv/s/n", "").await,
            Some(vec!["hello".into()])
        );
        // shared keys ignore the username
        assert_eq!(
            env.get("shared/kv/s/n", "someone").await,
            Some(vec!["hello".into()])
        );
        // NULL reads as an empty value, not as "not found"
        assert_eq!(env.get("shared/kv/s/nul", "").await, Some(vec!["".into()]));
        assert_eq!(env.get("shared/kv/s/missing", "").await, None);
        assert_eq!(
            env.get("shared/multiv/a/7/c", "").await,
            Some(vec!["x".into(), "42".into()])
        );
        assert_eq!(
            env.get("shared/multiv/a/8/c", "").await,
            Some(vec!["".into(), "".into()])
        );
        assert_eq!(
            env.get("shared/multi/a/7/c", "").await,
            Some(vec!["x".into()])
        );
        assert_eq!(env.get("shared/multi/a/9/c", "").await, None);
        // a key ending in `/` does not match a trailing `$`
        let e = env.dict.lookup(b"shared/kv/s/", b"").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "sql dict lookup: Invalid/unmapped key: shared/kv/s/"
        );
    }

    pub async fn unmapped_keys_and_bad_types(env: &Env) {
        let e = env.dict.lookup(b"shared/nomap/x", b"").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "sql dict lookup: Invalid/unmapped key: shared/nomap/x"
        );
        assert_eq!(e.kind(), ErrorKind::Refused);
        // priv/ never matches a map without username_field
        let e = env.dict.lookup(b"priv/nouser/x", b"u").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "sql dict lookup: Invalid/unmapped key: priv/nouser/x"
        );
        let e = env
            .dict
            .lookup(b"shared/multi/a/notint/c", b"")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "sql dict lookup: Failed to lookup key shared/multi/a/notint/c: b field's value isn't 64bit signed integer: notint (in pattern: shared/multi/$/$/$)"
        );
        assert_eq!(
            failed(env.commit("", vec![set("shared/nomap/x", "v")]).await),
            "sql dict set: Invalid/unmapped key: shared/nomap/x"
        );
        assert_eq!(
            failed(env.commit("", vec![unset("shared/nomap/x")]).await),
            "dict-sql: Invalid/unmapped key: shared/nomap/x"
        );
        assert_eq!(
            failed(env.commit("u", vec![inc("priv/quota/nokey", 5)]).await),
            "sql dict atomic inc: Invalid/unmapped key: priv/quota/nokey"
        );
        assert_eq!(
            failed(env.commit("u", vec![set("priv/quota/storage", "abc")]).await),
            "dict-sql: Failed to set 1 fields (first priv/quota/storage): value field's value isn't 64bit unsigned integer: abc (in pattern: priv/quota/storage)"
        );
        assert_eq!(
            failed(env.commit("u", vec![set("priv/quota/storage", "-1")]).await),
            "dict-sql: Failed to set 1 fields (first priv/quota/storage): value field's value isn't 64bit unsigned integer: -1 (in pattern: priv/quota/storage)"
        );
        // any error anywhere: nothing written
        let r = env
            .commit(
                "u",
                vec![
                    set("shared/kv/a/b", "1"),
                    set("priv/quota/storage", "5"),
                    unset("shared/nomap/x"),
                ],
            )
            .await;
        assert_eq!(failed(r), "dict-sql: Invalid/unmapped key: shared/nomap/x");
        assert_eq!(env.get("shared/kv/a/b", "").await, None);
        assert_eq!(env.get("priv/quota/storage", "u").await, None);
        let e = env.iter("shared/nomap/", "", recurse()).await.unwrap_err();
        assert_eq!(
            e,
            "sql dict iterate failed for shared/nomap/: Invalid/unmapped path"
        );
        let e = env.iter("shared/kv/", "", opts()).await.unwrap_err();
        assert_eq!(
            e,
            "sql dict iterate failed for shared/kv/: Invalid/unmapped path"
        );
    }

    pub async fn sets_merge_into_one_row(env: &Env) {
        let q = env.t("quota");
        assert_eq!(
            env.commit(
                "alice",
                vec![
                    set("priv/quota/storage", "1"),
                    set("priv/quota/messages", "2")
                ]
            )
            .await,
            CommitResult::Ok
        );
        let sql = format!(
            "SELECT username, {}, {} FROM {q}",
            env.txt("bytes"),
            env.txt("messages")
        );
        assert_eq!(env.rows(&sql).await, vec![vec![s("alice"), s("1"), s("2")]]);
        // an upsert of one column leaves the other alone
        assert_eq!(
            env.commit("alice", vec![set("priv/quota/storage", "5")])
                .await,
            CommitResult::Ok
        );
        assert_eq!(env.rows(&sql).await, vec![vec![s("alice"), s("5"), s("2")]]);
        // the same key twice in one transaction: the last value wins
        assert_eq!(
            env.commit(
                "alice",
                vec![
                    set("priv/quota/storage", "6"),
                    set("priv/quota/storage", "7")
                ]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(env.rows(&sql).await, vec![vec![s("alice"), s("7"), s("2")]]);
        // users are separate rows
        assert_eq!(
            env.commit("bob", vec![set("priv/quota/messages", "9")])
                .await,
            CommitResult::Ok
        );
        let sql = format!(
            "SELECT username, {}, {} FROM {q} ORDER BY username",
            env.txt("bytes"),
            env.txt("messages")
        );
        assert_eq!(
            env.rows(&sql).await,
            vec![
                vec![s("alice"), s("7"), s("2")],
                vec![s("bob"), s("0"), s("9")]
            ]
        );
        // a transaction with no change succeeds without touching anything
        assert_eq!(env.commit("alice", vec![]).await, CommitResult::Ok);
        assert_eq!(
            env.commit("alice", vec![inc("priv/quota/storage", 0)])
                .await,
            CommitResult::Ok
        );
        // multi-variable map: int key column
        assert_eq!(
            env.commit("", vec![set("shared/multi/x/12/y", "v")]).await,
            CommitResult::Ok
        );
        let sql = format!("SELECT a, {}, c, v1 FROM {}", env.txt("b"), env.t("multi"));
        assert_eq!(
            env.rows(&sql).await,
            vec![vec![s("x"), s("12"), s("y"), s("v")]]
        );
        assert_eq!(
            env.get("shared/multiv/x/12/y", "").await,
            Some(vec!["v".into(), "".into()])
        );
    }

    pub async fn unset_deletes_the_whole_row(env: &Env) {
        env.commit(
            "alice",
            vec![
                set("priv/quota/storage", "100"),
                set("priv/quota/messages", "3"),
            ],
        )
        .await;
        env.commit("bob", vec![set("priv/quota/storage", "1")])
            .await;
        assert_eq!(
            env.commit("alice", vec![unset("priv/quota/messages")])
                .await,
            CommitResult::Ok
        );
        // Dovecot semantics: the row is gone, storage included
        assert_eq!(env.get("priv/quota/storage", "alice").await, None);
        assert_eq!(env.get1("priv/quota/storage", "bob").await, s("1"));
        assert_eq!(
            env.commit("", vec![set("shared/kv/x/y", "z"), unset("shared/kv/x/y")])
                .await,
            CommitResult::Ok
        );
        assert_eq!(env.get("shared/kv/x/y", "").await, None);
        // unsetting what does not exist is fine
        assert_eq!(
            env.commit("", vec![unset("shared/kv/x/nothing")]).await,
            CommitResult::Ok
        );
    }

    pub async fn inc_notfound_commits_the_rest(env: &Env) {
        env.commit(
            "alice",
            vec![
                set("priv/quota/storage", "1000"),
                set("priv/quota/messages", "1"),
            ],
        )
        .await;
        assert_eq!(
            env.commit("alice", vec![inc("priv/quota/storage", 24)])
                .await,
            CommitResult::Ok
        );
        assert_eq!(env.get1("priv/quota/storage", "alice").await, s("1024"));
        assert_eq!(
            env.commit(
                "alice",
                vec![
                    inc("priv/quota/storage", -4),
                    inc("priv/quota/messages", -1)
                ]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(
            env.get("priv/quota/both", "alice").await,
            Some(vec!["1020".into(), "0".into()])
        );
        // carol has no row: NOTFOUND, but the set in the same transaction is committed
        let r = env
            .commit(
                "carol",
                vec![inc("priv/quota/messages", 5), set("shared/kv/c/d", "kept")],
            )
            .await;
        assert_eq!(r, CommitResult::NotFound);
        assert_eq!(env.get1("shared/kv/c/d", "").await, s("kept"));
        assert_eq!(env.get("priv/quota/messages", "carol").await, None);
        // increments of the same column add up
        assert_eq!(
            env.commit(
                "alice",
                vec![inc("priv/quota/storage", 5), inc("priv/quota/storage", 5)]
            )
            .await,
            CommitResult::Ok
        );
        assert_eq!(env.get1("priv/quota/storage", "alice").await, s("1030"));
    }

    pub async fn quota_clone_unset_sequence(env: &Env) {
        // Dovecot 2.4 quota_clone_unset=yes: U storage, S storage, U messages, S messages
        let seq = |b: &str, m: &str| {
            vec![
                unset("priv/quota/storage"),
                set("priv/quota/storage", b),
                unset("priv/quota/messages"),
                set("priv/quota/messages", m),
            ]
        };
        assert_eq!(env.commit("qc", seq("38", "1")).await, CommitResult::Ok);
        assert_eq!(
            env.get("priv/quota/both", "qc").await,
            Some(vec!["38".into(), "1".into()])
        );
        assert_eq!(env.commit("qc", seq("1140", "2")).await, CommitResult::Ok);
        assert_eq!(
            env.get("priv/quota/both", "qc").await,
            Some(vec!["1140".into(), "2".into()])
        );
        // the dict quota backend's recalculation: U, U, S, S
        let recalc = vec![
            unset("priv/quota/storage"),
            unset("priv/quota/messages"),
            set("priv/quota/storage", "7"),
            set("priv/quota/messages", "3"),
        ];
        assert_eq!(env.commit("qc", recalc).await, CommitResult::Ok);
        assert_eq!(
            env.get("priv/quota/both", "qc").await,
            Some(vec!["7".into(), "3".into()])
        );
        let sql = format!("SELECT {} FROM {}", env.txt("bytes"), env.t("quota"));
        assert_eq!(env.rows(&sql).await.len(), 1);
    }

    pub async fn values_are_bound_parameters(env: &Env) {
        let nasty = [
            "it's",
            "back\\slash",
            "100%",
            "under_score",
            "new\nline",
            "tab\there",
            "quote\"d",
            "x'); DROP TABLE kv; --",
            "ünï©ødé",
            "",
        ];
        let changes: Vec<Change> = nasty
            .iter()
            .enumerate()
            .map(|(i, v)| set(&format!("shared/kv/{v}/k{i}"), v))
            .collect();
        assert_eq!(env.commit("", changes).await, CommitResult::Ok);
        for (i, v) in nasty.iter().enumerate() {
            assert_eq!(
                env.get1(&format!("shared/kv/{v}/k{i}"), "")
                    .await
                    .as_deref(),
                Some(*v),
                "value {v:?}"
            );
        }
        let sql = format!("SELECT scope, value FROM {}", env.t("kv"));
        let mut got = env.rows(&sql).await;
        let mut want: Vec<Vec<Option<String>>> = nasty.iter().map(|v| vec![s(v), s(v)]).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        // LIKE wildcards in a bound scope don't widen the match
        env.commit(
            "",
            vec![
                set("shared/kv/ab/z", "1"),
                set("shared/kv/a%/z2", "2"),
                set("shared/kv/a_/z3", "3"),
            ],
        )
        .await;
        assert_eq!(
            env.keys("shared/kv/a%/", "", opts()).await,
            vec!["shared/kv/a%/z2"]
        );
        assert_eq!(
            env.keys("shared/kv/a_/", "", opts()).await,
            vec!["shared/kv/a_/z3"]
        );
        assert_eq!(
            env.keys("shared/kv/100%/", "", recurse()).await,
            vec!["shared/kv/100%/k2"]
        );
        // usernames are bound too
        let user = "o'neil\\%";
        assert_eq!(
            env.commit(user, vec![set("priv/kv/n", "v")]).await,
            CommitResult::Ok
        );
        assert_eq!(env.get1("priv/kv/n", user).await, s("v"));
        assert_eq!(env.get("priv/kv/n", "o'neil").await, None);
        if env.kind == Kind::Sqlite {
            // not UTF-8: stored and returned byte for byte
            let value = b"\xff\xfe-\x80".to_vec();
            let key = b"shared/kv/bin\xc3/n\xff".to_vec();
            let txn = Transaction {
                changes: vec![Change::Set {
                    key: key.clone(),
                    value: value.clone(),
                }],
                ..Default::default()
            };
            assert_eq!(env.dict.commit(txn).await, CommitResult::Ok);
            assert_eq!(
                env.dict.lookup(&key, b"").await.unwrap(),
                Some(vec![value.clone()])
            );
            let rows: Vec<_> = env
                .dict
                .iterate(b"shared/kv/bin\xc3/", b"", recurse())
                .collect()
                .await;
            assert_eq!(
                rows,
                vec![Ok(IterRow {
                    key,
                    values: vec![value]
                })]
            );
        }
    }

    pub async fn iterate_levels_and_flags(env: &Env) {
        env.commit(
            "",
            vec![
                set("shared/kv/s1/a", "3"),
                set("shared/kv/s1/b", "1"),
                set("shared/kv/s1/c/d", "2"),
                set("shared/kv/s2/x", "9"),
            ],
        )
        .await;
        // one level
        assert_eq!(
            env.keys("shared/kv/s1/", "", opts()).await,
            vec!["shared/kv/s1/a", "shared/kv/s1/b"]
        );
        // no trailing slash: the same
        assert_eq!(
            env.keys("shared/kv/s1", "", opts()).await,
            vec!["shared/kv/s1/a", "shared/kv/s1/b"]
        );
        // recursive
        assert_eq!(
            env.keys("shared/kv/s1/", "", recurse()).await,
            vec!["shared/kv/s1/a", "shared/kv/s1/b", "shared/kv/s1/c/d"]
        );
        assert_eq!(
            env.keys("shared/kv/", "", recurse()).await,
            vec![
                "shared/kv/s1/a",
                "shared/kv/s1/b",
                "shared/kv/s1/c/d",
                "shared/kv/s2/x"
            ]
        );
        // sorted by key, with values
        let sorted = env
            .iter(
                "shared/kv/",
                "",
                IterateOptions {
                    recurse: true,
                    sort_by_key: true,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            sorted,
            vec![
                ("shared/kv/s1/a".into(), vec!["3".into()]),
                ("shared/kv/s1/b".into(), vec!["1".into()]),
                ("shared/kv/s1/c/d".into(), vec!["2".into()]),
                ("shared/kv/s2/x".into(), vec!["9".into()]),
            ]
        );
        // sorted by value
        let by_value = env
            .iter(
                "shared/kv/s1/",
                "",
                IterateOptions {
                    recurse: true,
                    sort_by_value: true,
                    ..opts()
                },
            )
            .await
            .unwrap();
        let keys: Vec<&str> = by_value.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec!["shared/kv/s1/b", "shared/kv/s1/c/d", "shared/kv/s1/a"]
        );
        // no values
        let nv = env
            .iter(
                "shared/kv/s2/",
                "",
                IterateOptions {
                    no_value: true,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(nv, vec![("shared/kv/s2/x".into(), vec!["".into()])]);
        // exact key
        let exact = IterateOptions {
            exact_key: true,
            ..opts()
        };
        assert_eq!(
            env.iter("shared/kv/s1/a", "", exact).await.unwrap(),
            vec![("shared/kv/s1/a".into(), vec!["3".into()])]
        );
        assert_eq!(
            env.iter("shared/kv/s1/c/d", "", exact).await.unwrap(),
            vec![("shared/kv/s1/c/d".into(), vec!["2".into()])]
        );
        assert_eq!(env.iter("shared/kv/s1/", "", exact).await.unwrap(), vec![]);
        assert_eq!(
            env.iter("shared/kv/s1/zz", "", exact).await.unwrap(),
            vec![]
        );
        // max_rows
        let first2 = env
            .iter(
                "shared/kv/",
                "",
                IterateOptions {
                    recurse: true,
                    sort_by_key: true,
                    max_rows: 2,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            first2.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["shared/kv/s1/a", "shared/kv/s1/b"]
        );
        // past the last variable: Dovecot's error
        let e = env.iter("shared/kv/s1/a", "", opts()).await.unwrap_err();
        assert_eq!(e, "sql dict iterate failed for shared/kv/s1/a: Key continues past the matched pattern shared/kv/$/$");
        // several variables, one of them an integer
        env.commit(
            "",
            vec![
                set("shared/multi/m/1/p", "a"),
                set("shared/multi/m/2/q", "b"),
                set("shared/multi/n/3/r", "c"),
            ],
        )
        .await;
        assert_eq!(
            env.keys("shared/multi/m/", "", recurse()).await,
            vec!["shared/multi/m/1/p", "shared/multi/m/2/q"]
        );
        assert_eq!(
            env.keys("shared/multi/m/2/", "", opts()).await,
            vec!["shared/multi/m/2/q"]
        );
        assert_eq!(
            env.iter("shared/multiv/n/3/", "", opts()).await.unwrap(),
            vec![("shared/multiv/n/3/r".into(), vec!["c".into(), "".into()])]
        );
        let e = env.iter("shared/multi/m/x/", "", opts()).await.unwrap_err();
        assert!(
            e.contains("b field's value isn't 64bit signed integer: x"),
            "{e}"
        );
    }

    pub async fn iterate_several_maps_and_max_rows(env: &Env) {
        env.commit(
            "alice",
            vec![
                set("priv/quota/storage", "10"),
                set("priv/quota/messages", "2"),
            ],
        )
        .await;
        // maps without variables under priv/quota/: storage, messages, both
        let rows = env.iter("priv/quota/", "alice", recurse()).await.unwrap();
        assert_eq!(
            rows,
            vec![
                ("priv/quota/storage".into(), vec!["10".into()]),
                ("priv/quota/messages".into(), vec!["2".into()]),
                ("priv/quota/both".into(), vec!["10".into(), "2".into()]),
            ]
        );
        // max_rows counts across maps
        let rows = env
            .iter(
                "priv/quota/",
                "alice",
                IterateOptions {
                    recurse: true,
                    max_rows: 2,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        // no row for the user: nothing
        assert_eq!(
            env.iter("priv/quota/", "nobody", recurse()).await.unwrap(),
            vec![]
        );
        // exact key on a map without variables
        let exact = IterateOptions {
            exact_key: true,
            ..opts()
        };
        assert_eq!(
            env.iter("priv/quota/messages", "alice", exact)
                .await
                .unwrap(),
            vec![("priv/quota/messages".into(), vec!["2".into()])]
        );
        // one level: a literal pattern names its own key
        assert_eq!(
            env.iter("priv/quota/storage", "alice", opts())
                .await
                .unwrap(),
            vec![("priv/quota/storage".into(), vec!["10".into()])]
        );
        let nv = env
            .iter(
                "priv/quota/",
                "alice",
                IterateOptions {
                    recurse: true,
                    no_value: true,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(nv.len(), 3);
        assert!(nv.iter().all(|(_, v)| v == &vec![String::new()]));
    }

    pub async fn iterate_without_variables_and_priv(env: &Env) {
        env.commit(
            "alice",
            vec![set("priv/kv/a", "1"), set("priv/kv/b/c", "2")],
        )
        .await;
        env.commit("bob", vec![set("priv/kv/z", "3")]).await;
        // priv/ path binding no variable (Dovecot 2.3.19 built SQL without the AND)
        assert_eq!(
            env.keys("priv/kv/", "alice", opts()).await,
            vec!["priv/kv/a"]
        );
        assert_eq!(
            env.keys("priv/kv/", "alice", recurse()).await,
            vec!["priv/kv/a", "priv/kv/b/c"]
        );
        assert_eq!(
            env.keys("priv/kv/", "bob", recurse()).await,
            vec!["priv/kv/z"]
        );
        assert_eq!(
            env.keys("priv/kv/", "carol", recurse()).await,
            Vec::<String>::new()
        );
        let sorted = env
            .iter(
                "priv/kv/",
                "alice",
                IterateOptions {
                    recurse: true,
                    sort_by_key: true,
                    max_rows: 1,
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(sorted, vec![("priv/kv/a".into(), vec!["1".into()])]);
        // shared/ path binding no variable
        env.commit(
            "",
            vec![set("shared/bench/x", "1"), set("shared/bench/y/z", "2")],
        )
        .await;
        assert_eq!(
            env.keys("shared/bench/", "", opts()).await,
            vec!["shared/bench/x"]
        );
        assert_eq!(
            env.keys("shared/bench/", "", recurse()).await,
            vec!["shared/bench/x", "shared/bench/y/z"]
        );
    }

    pub async fn hexblob_keys_and_values(env: &Env) {
        assert_eq!(
            env.commit("alice", vec![set("priv/blob/6A6b", "00ff10")])
                .await,
            CommitResult::Ok
        );
        let sql = format!(
            "SELECT username, {}, {} FROM {}",
            env.hex("id"),
            env.hex("data"),
            env.t("blob")
        );
        let lower: Vec<Vec<Option<String>>> = env
            .rows(&sql)
            .await
            .into_iter()
            .map(|r| r.into_iter().map(|c| c.map(|s| s.to_lowercase())).collect())
            .collect();
        assert_eq!(lower, vec![vec![s("alice"), s("6a6b"), s("00ff10")]]);
        assert_eq!(env.get1("priv/blob/6a6b", "alice").await, s("00ff10"));
        assert_eq!(
            env.iter("priv/blob/", "alice", opts()).await.unwrap(),
            vec![("priv/blob/6a6b".into(), vec!["00ff10".into()])]
        );
        let e = env
            .dict
            .lookup(b"priv/blob/zz", b"alice")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "sql dict lookup: Failed to lookup key priv/blob/zz: id field's value isn't hexblob: zz (in pattern: priv/blob/$)");
        let r = failed(env.commit("alice", vec![set("priv/blob/00", "xyz")]).await);
        assert_eq!(r, "dict-sql: Failed to set 1 fields (first priv/blob/00): value field's value isn't hexblob: xyz (in pattern: priv/blob/$)");
    }

    pub async fn shared_map_without_variables(env: &Env) {
        let single = env.t("single");
        assert_eq!(env.get("shared/single", "").await, None);
        assert_eq!(
            env.commit("", vec![set("shared/single", "x")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            env.commit("", vec![set("shared/single", "y")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            env.rows(&format!("SELECT v FROM {single}")).await,
            vec![vec![s("y")]]
        );
        assert_eq!(env.get1("shared/single", "").await, s("y"));
        let exact = IterateOptions {
            exact_key: true,
            ..opts()
        };
        assert_eq!(
            env.iter("shared/single", "", exact).await.unwrap(),
            vec![("shared/single".into(), vec!["y".into()])]
        );
        // unset: Dovecot's DELETE without WHERE
        assert_eq!(
            env.commit("", vec![unset("shared/single")]).await,
            CommitResult::Ok
        );
        assert_eq!(
            env.rows(&format!("SELECT v FROM {single}")).await,
            Vec::<Vec<Option<String>>>::new()
        );
    }

    pub async fn check_schema(env: &Env) {
        // the single table has no key, but its map needs none
        env.dict.check().await.unwrap();
        env.exec(&format!("DROP TABLE {}", env.t("userkv"))).await;
        env.exec(&format!("CREATE TABLE {} (username VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, value TEXT)", env.t("userkv")))
            .await;
        env.exec(&format!("DROP TABLE {}", env.t("bench"))).await;
        env.exec(&format!(
            "CREATE TABLE {} (name VARCHAR(255) NOT NULL, val TEXT, PRIMARY KEY (name))",
            env.t("bench")
        ))
        .await;
        let e = env.dict.check().await.unwrap_err().to_string();
        let userkv = format!("map priv/kv/$name: table {}: needs a primary key or unique index on exactly (name,username)", env.t("userkv"));
        let bench = format!(
            "map shared/bench/$name: table {}: no column value",
            env.t("bench")
        );
        assert!(e.contains(&userkv), "{e}");
        assert!(e.contains(&bench), "{e}");
        assert!(e.starts_with("/test/dict-sql.conf.ext:"), "{e}");
    }

    pub async fn iteration_streams_and_can_be_dropped(env: &Env) {
        let changes: Vec<Change> = (0..600)
            .map(|i| set(&format!("shared/bench/k{i:04}"), "v"))
            .collect();
        assert_eq!(env.commit("", changes).await, CommitResult::Ok);
        assert_eq!(
            env.iter("shared/bench/", "", opts()).await.unwrap().len(),
            600
        );
        // iterations dropped after one row free their connections
        for _ in 0..8 {
            let mut stream = env.dict.iterate(b"shared/bench/", b"", opts());
            assert!(stream.next().await.unwrap().is_ok());
            drop(stream);
        }
        // unread iterations wait in the database, and writes and reads still work
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut stream = env.dict.iterate(
                b"shared/bench/",
                b"",
                IterateOptions {
                    sort_by_key: true,
                    ..opts()
                },
            );
            assert_eq!(
                stream.next().await.unwrap().unwrap().key,
                b"shared/bench/k0000"
            );
            open.push(stream);
        }
        assert_eq!(
            env.commit("", vec![set("shared/bench/new", "n")]).await,
            CommitResult::Ok
        );
        drop(open);
        assert_eq!(env.get1("shared/bench/new", "").await, s("n"));
        assert_eq!(
            env.iter("shared/bench/", "", opts()).await.unwrap().len(),
            601
        );
    }

    pub async fn concurrent_writers_and_readers(env: &Env) {
        let tasks = (0..8).map(|w| async move {
            let user = format!("u{w}");
            for i in 0..20 {
                let r = env
                    .commit(
                        &user,
                        vec![
                            set("priv/quota/storage", &i.to_string()),
                            inc("priv/quota/messages", 1),
                        ],
                    )
                    .await;
                assert!(
                    matches!(r, CommitResult::Ok | CommitResult::NotFound),
                    "{r:?}"
                );
                assert_eq!(
                    env.get1("priv/quota/storage", &user).await,
                    Some(i.to_string())
                );
            }
        });
        futures::future::join_all(tasks).await;
        for w in 0..8 {
            assert_eq!(
                env.get("priv/quota/both", &format!("u{w}")).await,
                Some(vec!["19".into(), "20".into()])
            );
        }
    }
}

/// A TCP port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server that accepts connections and never says anything.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    (port, task)
}

const DOWN_TIMEOUT: Duration = Duration::from_millis(800);

async fn unreachable_dict(driver: SqlDriver, port: u16) -> SqlDict {
    let text = format!(
        "connect = host=127.0.0.1 port={port} user=u password=p dbname=d\n{}",
        maps("x_")
    );
    let file = SqlMapFile::parse_str(driver, &text, "/test/down.conf").unwrap();
    // connecting is lazy: the dict starts while the database is down
    SqlDict::connect(
        driver,
        file,
        SqlOptions {
            timeout: DOWN_TIMEOUT,
            ..SqlOptions::default()
        },
    )
    .await
    .unwrap()
}

async fn assert_prompt_errors(dict: &SqlDict) {
    let bound = DOWN_TIMEOUT + Duration::from_millis(700);
    let start = Instant::now();
    let e = dict.lookup(b"shared/kv/a/b", b"").await.unwrap_err();
    assert!(e.to_string().starts_with("dict sql lookup failed: "), "{e}");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(start.elapsed() < bound, "lookup took {:?}", start.elapsed());
    let start = Instant::now();
    let r = dict
        .commit(Transaction {
            changes: vec![set("shared/kv/a/b", "v")],
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&r, CommitResult::Failed(e) if e.starts_with("sql dict: commit failed: ")),
        "{r:?}"
    );
    assert!(start.elapsed() < bound, "commit took {:?}", start.elapsed());
    let start = Instant::now();
    let rows: Vec<_> = dict.iterate(b"shared/kv/a/", b"", opts()).collect().await;
    assert!(matches!(rows.as_slice(), [Err(_)]), "{rows:?}");
    assert!(
        start.elapsed() < bound,
        "iterate took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn mysql_down_gives_prompt_errors() {
    assert_prompt_errors(&unreachable_dict(SqlDriver::Mysql, closed_port()).await).await;
    let (port, task) = silent_server().await;
    assert_prompt_errors(&unreachable_dict(SqlDriver::Mysql, port).await).await;
    task.abort();
}

#[tokio::test]
async fn pgsql_down_gives_prompt_errors() {
    assert_prompt_errors(&unreachable_dict(SqlDriver::Pgsql, closed_port()).await).await;
    let (port, task) = silent_server().await;
    assert_prompt_errors(&unreachable_dict(SqlDriver::Pgsql, port).await).await;
    task.abort();
}

/// A fresh SQLite file with the suite's tables (no prefix), a plain pool on it, and a
/// dict on it with `options`.
async fn sqlite_dict(options: SqlOptions) -> (tempfile::TempDir, SqlitePool, SqlDict) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.db");
    let raw = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for sql in schema(Kind::Sqlite, "") {
        sqlx::query(&sql).execute(&raw).await.unwrap();
    }
    let file = SqlMapFile::parse_str(
        SqlDriver::Sqlite,
        &format!("connect = {}\n{}", path.display(), maps("")),
        "/test/m.conf",
    )
    .unwrap();
    let dict = SqlDict::connect(SqlDriver::Sqlite, file, options)
        .await
        .unwrap();
    (dir, raw, dict)
}

/// SQLite commits stuck behind another process's write lock until their deadline all
/// fail (none is "uncertain"), and none of them is applied later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_queued_past_their_deadline_fail_and_are_not_applied() {
    let (_dir, raw, dict) = sqlite_dict(SqlOptions {
        timeout: Duration::from_millis(400),
        ..SqlOptions::default()
    })
    .await;
    let mut lock = raw.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let dict = dict.clone();
            tokio::spawn(async move {
                dict.commit(Transaction {
                    username: format!("late{i}").into_bytes(),
                    changes: vec![set("priv/quota/storage", "1")],
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        let e = failed(task.await.unwrap());
        assert!(e.contains("locked") || e.contains("timed out"), "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "prompt failure");
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    // A later commit goes through, and none of the failed ones was applied meanwhile.
    let ok = dict
        .commit(Transaction {
            username: b"after".to_vec(),
            changes: vec![set("priv/quota/storage", "2")],
            ..Default::default()
        })
        .await;
    assert_eq!(ok, CommitResult::Ok);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quota")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Lookups (on their own read-only connections) see every acknowledged commit at once,
/// and fail once the dict is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lookups_read_their_writes_and_stop_at_close() {
    let (_dir, _raw, dict) = sqlite_dict(SqlOptions::default()).await;
    for i in 0..50 {
        let value = format!("{i}");
        let txn = Transaction {
            username: b"rw".to_vec(),
            changes: vec![set("priv/quota/storage", &value)],
            ..Default::default()
        };
        assert_eq!(dict.commit(txn).await, CommitResult::Ok);
        assert_eq!(
            dict.lookup(b"priv/quota/storage", b"rw").await.unwrap(),
            Some(vec![value.into_bytes()])
        );
    }
    dict.close().await;
    assert!(dict.lookup(b"priv/quota/storage", b"rw").await.is_err());
}

#[tokio::test]
async fn sqlite_file_is_created_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let file = || {
        SqlMapFile::parse_str(
            SqlDriver::Sqlite,
            &format!("connect = {}\n{}", path.display(), maps("x_")),
            "/test/m.conf",
        )
        .unwrap()
    };
    let e = SqlDict::connect(SqlDriver::Sqlite, file(), SqlOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("sqlite: can't open {}", path.display())),
        "{e}"
    );
    assert!(!path.exists());
    let dict = SqlDict::connect(
        SqlDriver::Sqlite,
        file(),
        SqlOptions {
            create_sqlite: true,
            ..SqlOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(path.exists());
    // the tables are missing: a clear error, not a hang
    let e = dict.lookup(b"shared/kv/a/b", b"").await.unwrap_err();
    assert!(e.to_string().contains("no such table"), "{e}");
    let e = dict.check().await.unwrap_err().to_string();
    assert!(
        e.contains("map shared/kv/$scope/$name: table x_kv: no such table"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_connect_strings_fail_at_start() {
    let e = SqlMapFile::parse_str(
        SqlDriver::Mysql,
        &format!("connect = host=x bogus=1\n{}", maps("x_")),
        "/test/m.conf",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/test/m.conf:1: mysql: unknown connect string setting: bogus"
    );
}

/// A TCP proxy to the test database that can be switched off (all connections cut) and on.
struct Proxy {
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16, upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { tasks }
    }

    fn stop(self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// The database goes away and comes back: errors while it is away, and the pool
/// reconnects on its own afterwards (the dead pooled connection costs no failed request).
async fn reconnects_after_outage(kind: Kind) {
    let Some(env) = Env::new(kind).await else {
        return;
    };
    let db = if kind == Kind::Mysql {
        "MYSQL"
    } else {
        "PGSQL"
    };
    let g = |k: &str| env_var(&format!("DICT_TEST_{db}_{k}")).unwrap();
    let upstream = format!("{}:{}", g("HOST"), g("PORT"));
    let port = closed_port();
    let text = format!(
        "connect = host=127.0.0.1 port={port} user={} password={} dbname={}\n{}",
        g("USER"),
        g("PASSWORD"),
        g("DB"),
        maps(&env.prefix)
    );
    let driver = if kind == Kind::Mysql {
        SqlDriver::Mysql
    } else {
        SqlDriver::Pgsql
    };
    let file = SqlMapFile::parse_str(driver, &text, "/test/proxy.conf").unwrap();
    let dict = SqlDict::connect(
        driver,
        file,
        SqlOptions {
            timeout: Duration::from_secs(2),
            ..SqlOptions::default()
        },
    )
    .await
    .unwrap();
    let write = |v: &str| Transaction {
        changes: vec![set("shared/kv/r/k", v)],
        ..Default::default()
    };
    assert!(dict.lookup(b"shared/kv/r/k", b"").await.is_err());
    let proxy = Proxy::start(port, upstream.clone()).await;
    assert_eq!(dict.commit(write("1")).await, CommitResult::Ok);
    assert_eq!(
        dict.lookup(b"shared/kv/r/k", b"").await.unwrap(),
        Some(vec![b"1".to_vec()])
    );
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(dict.lookup(b"shared/kv/r/k", b"").await.is_err());
    let proxy = Proxy::start(port, upstream.clone()).await;
    assert_eq!(
        dict.lookup(b"shared/kv/r/k", b"").await.unwrap(),
        Some(vec![b"1".to_vec()])
    );
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let proxy = Proxy::start(port, upstream).await;
    // a commit on a pooled connection that died meanwhile
    assert_eq!(dict.commit(write("2")).await, CommitResult::Ok);
    assert_eq!(env.get1("shared/kv/r/k", "").await, s("2"));
    proxy.stop();
    dict.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_reconnects_after_outage() {
    reconnects_after_outage(Kind::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsql_reconnects_after_outage() {
    reconnects_after_outage(Kind::Pgsql).await;
}
