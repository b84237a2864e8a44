//! Lookups across connections: concurrent lookups of one map sent as one statement
//! (MySQL, PostgreSQL) answer exactly what each lookup alone answers.

use std::time::Duration;

use dict_backend::sql::{LookupCounts, SqlDict, SqlOptions};
use dict_backend::{Change, CommitResult, Dict, Transaction};
use dict_config::{SqlDriver, SqlMapFile};

use super::{available, Env, Kind, Raw};

/// Tables locked by the test's own connection so that the dict's reads of them wait:
/// the first lookup of each map blocks in the database, the next ones queue behind it.
enum ReadLock {
    None,
    Mysql(sqlx::pool::PoolConnection<sqlx::MySql>),
    Pgsql(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl ReadLock {
    async fn take(env: &Env, tables: &[&str]) -> ReadLock {
        let tables: Vec<String> = tables.iter().map(|t| env.t(t)).collect();
        match &env.raw {
            // SQLite's lookups don't queue (readers of their own).
            Raw::Sqlite(_) => ReadLock::None,
            Raw::Mysql(pool) => {
                let mut c = pool.acquire().await.unwrap();
                let list: Vec<String> = tables.iter().map(|t| format!("{t} WRITE")).collect();
                sqlx::query(&format!("LOCK TABLES {}", list.join(", ")))
                    .execute(&mut *c)
                    .await
                    .unwrap();
                ReadLock::Mysql(c)
            }
            Raw::Pgsql(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let sql = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", tables.join(", "));
                sqlx::query(&sql).execute(&mut *tx).await.unwrap();
                ReadLock::Pgsql(tx)
            }
        }
    }

    async fn release(self) {
        match self {
            ReadLock::None => {}
            ReadLock::Mysql(mut c) => {
                sqlx::query("UNLOCK TABLES").execute(&mut *c).await.unwrap();
            }
            ReadLock::Pgsql(tx) => tx.rollback().await.unwrap(),
        }
    }
}

/// A dict on the test's database with `maps` (map blocks, tables already prefixed).
async fn dict_with(env: &Env, maps: &str) -> SqlDict {
    dict_timing_out(env, maps, SqlOptions::default().timeout).await
}

async fn dict_timing_out(env: &Env, maps: &str, timeout: Duration) -> SqlDict {
    let (driver, connect) = match env.kind {
        Kind::Sqlite => (
            SqlDriver::Sqlite,
            env.dir().join("dict.db").display().to_string(),
        ),
        Kind::Mysql => (SqlDriver::Mysql, available(Kind::Mysql).unwrap()),
        Kind::Pgsql => (SqlDriver::Pgsql, available(Kind::Pgsql).unwrap()),
    };
    let text = format!("connect = {connect}\n{maps}");
    let file = SqlMapFile::parse_str(driver, &text, "/test/lookups.conf.ext").unwrap();
    let options = SqlOptions {
        timeout,
        ..SqlOptions::default()
    };
    SqlDict::connect(driver, file, options).await.unwrap()
}

type Answer = Result<Option<Vec<Vec<u8>>>, String>;

async fn lookup(dict: &SqlDict, key: &[u8], user: &[u8]) -> Answer {
    dict.lookup(key, user).await.map_err(|e| e.to_string())
}

/// Runs `lookups` concurrently while their tables are locked, then releases the lock:
/// the answers in order, and the dict's lookup counts since before.
async fn locked_together(
    env: &Env,
    dict: &SqlDict,
    tables: &[&str],
    lookups: &[(Vec<u8>, Vec<u8>)],
) -> (Vec<Answer>, LookupCounts) {
    let before = dict.lookup_counts();
    let lock = ReadLock::take(env, tables).await;
    let mut tasks = Vec::new();
    for (key, user) in lookups {
        let (dict, key, user) = (dict.clone(), key.clone(), user.clone());
        tasks.push(tokio::spawn(
            async move { lookup(&dict, &key, &user).await },
        ));
        // Arrival in this order (time enough for a loaded machine).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release().await;
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let after = dict.lookup_counts();
    let counts = LookupCounts {
        statements: after.statements - before.statements,
        batched: after.batched - before.batched,
    };
    (answers, counts)
}

fn set(k: &[u8], v: &[u8]) -> Change {
    Change::Set {
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

fn found(v: &str) -> Answer {
    Ok(Some(vec![v.as_bytes().to_vec()]))
}

/// Many concurrent lookups of several maps (missing keys, NULL values, text that isn't
/// UTF-8, a case- and accent-insensitive collation, trailing spaces, a binary key
/// column, several rows for one key, a map without variables): each answers what it
/// answers alone, and (MySQL, PostgreSQL) those of one map went out together.
pub async fn concurrent_lookups_answer_as_alone(env: &Env) {
    let p = &env.prefix;
    // MariaDB: case- and accent-insensitive, PAD SPACE ('pad ' = 'pad').
    let collate = match env.kind {
        Kind::Mysql => " COLLATE utf8mb4_general_ci",
        _ => "",
    };
    env.exec(&format!(
        "CREATE TABLE {p}ci (name VARCHAR(64){collate} NOT NULL, value TEXT, PRIMARY KEY (name))"
    ))
    .await;
    env.exec(&format!(
        "CREATE TABLE {p}dups (name VARCHAR(64) NOT NULL, value TEXT)"
    ))
    .await;
    for sql in [
        format!("INSERT INTO {p}ci (name, value) VALUES ('foo', 'ci-foo'), ('pad', 'ci-pad'), ('e', 'ci-e')"),
        format!("INSERT INTO {p}dups (name, value) VALUES ('d', 'first')"),
        format!("INSERT INTO {p}dups (name, value) VALUES ('d', 'second')"),
        format!("INSERT INTO {p}kv (scope, name, value) VALUES ('s', 'nul', NULL)"),
        format!("INSERT INTO {p}single (v) VALUES ('one')"),
    ] {
        env.exec(&sql).await;
    }
    let maps = format!(
        "map {{\n pattern = shared/kv/$scope/$name\n table = {p}kv\n value_field = value\n fields {{\n  scope = $scope\n  name = $name\n }}\n}}\n\
         map {{\n pattern = shared/ci/$name\n table = {p}ci\n value_field = value\n fields {{\n  name = $name\n }}\n}}\n\
         map {{\n pattern = shared/dups/$name\n table = {p}dups\n value_field = value\n fields {{\n  name = $name\n }}\n}}\n\
         map {{\n pattern = priv/quota/storage\n table = {p}quota\n username_field = username\n value_field = bytes\n value_type = uint\n}}\n\
         map {{\n pattern = priv/blob/$id\n table = {p}blob\n username_field = username\n value_field = data\n value_type = hexblob\n fields {{\n  id = ${{hexblob:id}}\n }}\n}}\n\
         map {{\n pattern = shared/single\n table = {p}single\n value_field = v\n}}\n"
    );
    let dict = dict_with(env, &maps).await;
    let commit = |user: &str, changes| {
        dict.commit(Transaction {
            username: user.into(),
            changes,
            ..Default::default()
        })
    };
    let r = commit(
        "",
        vec![
            set(b"shared/kv/s/foo", b"v-foo"),
            set(b"shared/kv/s/pad", b"v-pad"),
        ],
    )
    .await;
    assert_eq!(r, CommitResult::Ok);
    assert_eq!(
        commit("a", vec![set(b"priv/quota/storage", b"5")]).await,
        CommitResult::Ok
    );
    assert_eq!(
        commit("a", vec![set(b"priv/blob/61ff", b"00ff10")]).await,
        CommitResult::Ok
    );
    let keys: &[(&[u8], &[u8])] = &[
        (b"shared/kv/s/foo", b""),
        (b"shared/kv/s/FOO", b""),
        (b"shared/kv/s/nul", b""),
        (b"shared/kv/s/missing", b""),
        (b"shared/kv/s/\xff\xfe", b""),
        (b"shared/kv/s/pad ", b""),
        (b"shared/kv/t/foo", b""),
        (b"shared/ci/foo", b""),
        (b"shared/ci/FOO", b""),
        (b"shared/ci/F\xc3\xb3o", b""),
        (b"shared/ci/pad ", b""),
        (b"shared/ci/pad", b""),
        (b"shared/ci/\xc3\xa9", b""),
        (b"shared/ci/none", b""),
        (b"shared/ci/fo\xff", b""),
        (b"shared/dups/d", b""),
        (b"shared/dups/x", b""),
        (b"shared/dups/d", b""),
        (b"priv/quota/storage", b"a"),
        (b"priv/quota/storage", b"b"),
        (b"priv/quota/storage", b"A"),
        (b"priv/quota/storage", b"a"),
        (b"priv/blob/61ff", b"a"),
        (b"priv/blob/61FF", b"a"),
        (b"priv/blob/41ff", b"a"),
        (b"priv/blob/61ff", b"b"),
        (b"shared/single", b""),
        (b"shared/single", b""),
        (b"shared/single", b""),
    ];
    let lookups: Vec<(Vec<u8>, Vec<u8>)> =
        keys.iter().map(|(k, u)| (k.to_vec(), u.to_vec())).collect();
    // Alone, one after the other: nothing in flight, so no batch.
    let mut alone = Vec::new();
    for (key, user) in &lookups {
        alone.push(lookup(&dict, key, user).await);
    }
    let counts = dict.lookup_counts();
    assert_eq!(counts.batched, 0);
    // The cases are what they claim to be.
    let at = |key: &[u8], user: &[u8]| {
        let i = keys.iter().position(|k| *k == (key, user)).unwrap();
        alone[i].clone()
    };
    assert_eq!(at(b"shared/kv/s/foo", b""), found("v-foo"));
    assert_eq!(at(b"shared/kv/s/nul", b""), found(""));
    assert_eq!(at(b"shared/kv/s/missing", b""), Ok(None));
    assert_eq!(at(b"shared/dups/d", b""), found("first"));
    assert_eq!(at(b"priv/quota/storage", b"a"), found("5"));
    assert_eq!(at(b"priv/blob/61ff", b"a"), found("00ff10"));
    // A binary column compares bytes.
    assert_eq!(at(b"priv/blob/41ff", b"a"), Ok(None));
    assert_eq!(at(b"shared/single", b""), found("one"));
    match env.kind {
        Kind::Mysql => {
            assert_eq!(at(b"shared/ci/FOO", b""), found("ci-foo"));
            assert_eq!(at(b"shared/ci/F\xc3\xb3o", b""), found("ci-foo"));
            assert_eq!(at(b"shared/ci/pad ", b""), found("ci-pad"));
            assert_eq!(at(b"shared/ci/\xc3\xa9", b""), found("ci-e"));
            assert_eq!(at(b"shared/kv/s/\xff\xfe", b""), Ok(None));
        }
        Kind::Pgsql => {
            assert_eq!(at(b"shared/ci/FOO", b""), Ok(None));
            assert_eq!(
                at(b"shared/kv/s/\xff\xfe", b""),
                Err("invalid multibyte character".into())
            );
        }
        Kind::Sqlite => assert_eq!(at(b"shared/ci/FOO", b""), Ok(None)),
    }
    let tables = ["kv", "ci", "dups", "quota", "blob", "single"];
    let (together, counts) = locked_together(env, &dict, &tables, &lookups).await;
    for (i, (got, want)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(keys[i].0));
    }
    match env.kind {
        Kind::Sqlite => assert_eq!(counts, LookupCounts::default()),
        _ => {
            // Per map one lookup alone (blocked), then the rest queued behind it as one
            // statement. PostgreSQL refuses non-UTF-8 keys before anything is sent.
            let refused = lookups
                .iter()
                .filter(|(k, _)| std::str::from_utf8(k).is_err())
                .count();
            let sent = lookups.len() - if env.kind == Kind::Pgsql { refused } else { 0 };
            assert!(
                counts.statements <= 2 * tables.len() as u64,
                "{counts:?} for {sent} lookups"
            );
            assert_eq!(counts.batched, (sent - tables.len()) as u64, "{counts:?}");
        }
    }
    dict.close().await;
    for t in ["ci", "dups"] {
        env.exec(&format!("DROP TABLE {p}{t}")).await;
    }
}

/// A lookup the database refuses, in a batch: the batch runs again one lookup at a time,
/// so only that lookup fails.
pub async fn a_refused_lookup_fails_alone_in_its_batch(env: &Env) {
    let p = &env.prefix;
    // MySQL: a DATE value the dict can't read; PostgreSQL: a key that isn't a number
    // compared with a BIGINT column. Either only for the row or key concerned.
    let (table, bad, other) = match env.kind {
        Kind::Mysql => (
            format!("CREATE TABLE {p}odd (k VARCHAR(64) NOT NULL, v DATE, PRIMARY KEY (k))"),
            &b"shared/odd/dated"[..],
            format!("INSERT INTO {p}odd (k, v) VALUES ('dated', '2020-01-02')"),
        ),
        _ => (
            format!("CREATE TABLE {p}odd (k BIGINT NOT NULL, v TEXT, PRIMARY KEY (k))"),
            &b"shared/odd/x1"[..],
            format!("INSERT INTO {p}odd (k, v) VALUES (7, 'seven')"),
        ),
    };
    env.exec(&table).await;
    env.exec(&other).await;
    let maps = format!(
        "map {{\n pattern = shared/odd/$k\n table = {p}odd\n value_field = v\n fields {{\n  k = $k\n }}\n}}\n"
    );
    let dict = dict_with(env, &maps).await;
    let keys: [&[u8]; 6] = [
        b"shared/odd/1",
        b"shared/odd/2",
        b"shared/odd/7",
        bad,
        b"shared/odd/3",
        b"shared/odd/4",
    ];
    let lookups: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().map(|k| (k.to_vec(), Vec::new())).collect();
    let mut alone = Vec::new();
    for (key, user) in &lookups {
        alone.push(lookup(&dict, key, user).await);
    }
    match env.kind {
        Kind::Sqlite => {}
        Kind::Mysql => {
            assert!(alone[3].as_ref().unwrap_err().contains("DATE"), "{alone:?}")
        }
        Kind::Pgsql => {
            assert!(
                alone[3].as_ref().unwrap_err().contains("bigint"),
                "{alone:?}"
            );
            assert_eq!(alone[2], found("seven"));
        }
    }
    let (together, counts) = locked_together(env, &dict, &["odd"], &lookups).await;
    assert_eq!(together, alone);
    if env.kind != Kind::Sqlite {
        // One alone (blocked), five as one refused statement, then each of them alone.
        assert_eq!(
            counts,
            LookupCounts {
                statements: 7,
                batched: 5
            }
        );
    }
    dict.close().await;
    env.exec(&format!("DROP TABLE {p}odd")).await;
}

/// Lookups queued behind one that the database holds past the dict's timeout each
/// answer with a timeout by their own deadline; the next ones are answered again.
pub async fn queued_lookups_time_out_by_their_deadline(env: &Env) {
    let p = &env.prefix;
    let maps = format!(
        "map {{\n pattern = shared/kv/$scope/$name\n table = {p}kv\n value_field = value\n fields {{\n  scope = $scope\n  name = $name\n }}\n}}\n"
    );
    let timeout = Duration::from_millis(1000);
    let dict = dict_timing_out(env, &maps, timeout).await;
    assert_eq!(lookup(&dict, b"shared/kv/s/k0", b"").await, Ok(None));
    let lock = ReadLock::take(env, &["kv"]).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let dict = dict.clone();
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let key = format!("shared/kv/s/k{i}");
            let answer = lookup(&dict, key.as_bytes(), b"").await;
            (answer, started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        let (answer, took) = t.await.unwrap();
        match env.kind {
            Kind::Sqlite => assert_eq!(answer, Ok(None)),
            _ => {
                // Timed out in the database, or waiting for a connection there.
                let e = answer.unwrap_err();
                assert!(e.starts_with("dict sql lookup failed: timed out "), "{e}");
                // By its deadline (a loaded machine may wake the task late).
                assert!(took < timeout + Duration::from_millis(700), "{took:?}");
            }
        }
    }
    lock.release().await;
    assert_eq!(lookup(&dict, b"shared/kv/s/k1", b"").await, Ok(None));
    dict.close().await;
}
