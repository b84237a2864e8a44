//! The Redis dict against a real redis-server. Needs `DICT_TEST_REDIS_HOST`,
//! `DICT_TEST_REDIS_PORT` and `DICT_TEST_REDIS_SOCKET`:
//!
//! ```text
//! DICT_TEST_SERVICES=redis bash tests/scripts/services.sh start
//! eval "$(bash tests/scripts/services.sh env)"
//! ```
//!
//! Without them every test fails. Each test uses its own key prefix (and its own db where
//! it selects one), so tests run in parallel and next to other users of the server. The
//! outage tests start private redis-server processes on free ports.

mod changes;
mod private_redis;
mod redis_env;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use changes::{inc, set, txn};
use dict_backend::redis::RedisDict;
use dict_backend::{
    Change, CommitResult, Dict, DictError, ErrorKind, IterRow, IterateOptions, Transaction,
};
use dict_config::RedisParams;
use futures::StreamExt;
use private_redis::PrivateRedis;
use redis::aio::MultiplexedConnection;
use redis_env::{env, free_port, unique_prefix, COUNTER};

fn params(prefix: &str) -> RedisParams {
    let env = env();
    RedisParams {
        host: env.host,
        port: env.port,
        prefix: prefix.into(),
        timeout_msecs: 5000,
        ..RedisParams::default()
    }
}

fn dict(p: &RedisParams) -> RedisDict {
    RedisDict::connect(p).expect("valid parameters")
}

/// A plain client of the test server, on `db`.
async fn raw_db(db: u32) -> MultiplexedConnection {
    let env = env();
    redis::Client::open(format!("redis://{}:{}/{db}", env.host, env.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test redis answers")
}

async fn raw() -> MultiplexedConnection {
    raw_db(0).await
}

async fn raw_get(conn: &mut MultiplexedConnection, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

async fn raw_set(conn: &mut MultiplexedConnection, key: &[u8], value: &[u8]) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

async fn ttl(conn: &mut MultiplexedConnection, key: &[u8]) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

/// Deletes every key under `prefix` (db of `conn`).
async fn cleanup(conn: &mut MultiplexedConnection, prefix: &str) {
    let mut pattern = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
    }
}

fn unset(key: &str) -> Change {
    Change::Unset { key: key.into() }
}

async fn lookup(d: &RedisDict, key: &str, user: &str) -> Option<String> {
    d.lookup(key.as_bytes(), user.as_bytes())
        .await
        .expect("lookup works")
        .map(|values| {
            assert_eq!(values.len(), 1);
            String::from_utf8(values[0].clone()).unwrap()
        })
}

async fn commit_ok(d: &RedisDict, t: Transaction) {
    assert_eq!(d.commit(t).await, CommitResult::Ok);
}

/// Rows as `key=value` strings.
async fn iterate(d: &RedisDict, path: &str, user: &str, options: IterateOptions) -> Vec<String> {
    let rows: Vec<Result<IterRow, DictError>> = d
        .iterate(path.as_bytes(), user.as_bytes(), options)
        .collect()
        .await;
    rows.into_iter()
        .map(|r| {
            let r = r.expect("iteration works");
            assert_eq!(r.values.len(), 1);
            format!(
                "{}={}",
                String::from_utf8(r.key).unwrap(),
                String::from_utf8(r.values[0].clone()).unwrap()
            )
        })
        .collect()
}

fn opts() -> IterateOptions {
    IterateOptions::default()
}

#[tokio::test]
async fn key_layout_is_dovecots() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    let mut r = raw().await;
    commit_ok(
        &d,
        txn(
            r"user/a\b",
            vec![set("priv/quota/storage", "100"), set("shared/x/y", "v\tal")],
        ),
    )
    .await;
    commit_ok(&d, txn(r"us\er", vec![set("priv/k", "1")])).await;
    commit_ok(&d, txn("plain", vec![set("priv/quota/messages", "7")])).await;

    let expect = [
        (format!(r"{prefix}user\-a\\b/quota/storage"), "100"),
        (format!("{prefix}x/y"), "v\tal"),
        (format!(r"{prefix}us\er/k"), "1"),
        (format!("{prefix}plain/quota/messages"), "7"),
    ];
    for (key, value) in &expect {
        assert_eq!(
            raw_get(&mut r, key.as_bytes()).await.as_deref(),
            Some(value.as_bytes()),
            "Redis key {key}"
        );
    }
    let mut all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut r)
        .await
        .unwrap();
    all.sort();
    let mut want: Vec<String> = expect.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(all, want, "no other keys were written");

    // and the other way round: keys Dovecot wrote are found
    raw_set(
        &mut r,
        format!("{prefix}bob/quota/storage").as_bytes(),
        b"42",
    )
    .await;
    assert_eq!(
        lookup(&d, "priv/quota/storage", "bob").await.as_deref(),
        Some("42")
    );
    assert_eq!(
        lookup(&d, "priv/quota/storage", r"user/a\b")
            .await
            .as_deref(),
        Some("100")
    );
    // shared/ ignores the username
    assert_eq!(
        lookup(&d, "shared/x/y", "bob").await.as_deref(),
        Some("v\tal")
    );
    cleanup(&mut r, &prefix).await;
}

/// Commands the test server receives from the dict's connection, as `MONITOR` prints them
/// (without timestamp and client), until the dict looks up `shared/END`.
struct Monitor {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl Monitor {
    async fn start() -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let env = env();
        let mut sock = tokio::net::TcpStream::connect((env.host.as_str(), env.port))
            .await
            .unwrap();
        sock.write_all(b"*1\r\n$7\r\nMONITOR\r\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(sock).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
        Monitor { lines }
    }

    /// The commands of the one client that used `prefix`, up to the `GET` of `END`.
    async fn commands(mut self, prefix: &str) -> Vec<String> {
        let end = format!("\"GET\" \"{prefix}END\"");
        let mut seen = Vec::new();
        let read_all = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let done = line.ends_with(&end);
                seen.push(line);
                if done {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("MONITOR shows the END lookup");
        // `+1795900865.690280 [0 127.0.0.1:44730] "GET" "key"`
        let split = |line: &str| {
            let (client, command) = line.split_once("] ").unwrap();
            (
                client.split_once(" [").unwrap().1.to_string(),
                command.to_string(),
            )
        };
        let ours = seen
            .iter()
            .map(|l| split(l))
            .find(|(_, command)| command.contains(prefix))
            .expect("the dict's commands")
            .0;
        seen.iter()
            .map(|l| split(l))
            .filter(|(client, _)| *client == ours)
            .map(|(_, command)| command)
            .collect()
    }
}

/// The commands Dovecot's dict-redis sends (as MONITOR shows them), and what a connect sends.
#[tokio::test]
async fn commands_match_dovecots_monitor_transcript() {
    let prefix = format!("{}pfx/", unique_prefix());
    let p = |s: &str| s.replace("P/", &prefix);
    let monitor = Monitor::start().await;
    let d = dict(&RedisParams {
        expire_secs: Some(100),
        ..params(&prefix)
    });
    commit_ok(
        &d,
        txn(
            r"user/a\b",
            vec![set("priv/quota/storage", "100"), set("shared/x/y", "v\tal")],
        ),
    )
    .await;
    commit_ok(
        &d,
        txn(
            "dave",
            vec![inc("priv/quota/storage", 10), unset("shared/x/y")],
        ),
    )
    .await;
    assert_eq!(lookup(&d, "shared/END", "").await, None);
    // MONITOR escapes `\` as `\\`; the key itself is `P/user\-a\\b/quota/storage`
    let want = [
        r#""MULTI""#,
        r#""SET" "P/user\\-a\\\\b/quota/storage" "100""#,
        r#""EXPIRE" "P/user\\-a\\\\b/quota/storage" "100""#,
        r#""SET" "P/x/y" "v\tal""#,
        r#""EXPIRE" "P/x/y" "100""#,
        r#""EXEC""#,
        // ours only: the check before a transaction with increments
        r#""TYPE" "P/dave/quota/storage""#,
        r#""MGET" "P/dave/quota/storage""#,
        r#""MULTI""#,
        r#""INCRBY" "P/dave/quota/storage" "10""#,
        r#""EXPIRE" "P/dave/quota/storage" "100""#,
        r#""DEL" "P/x/y""#,
        r#""EXEC""#,
        r#""GET" "P/END""#,
    ];
    assert_eq!(
        monitor.commands(&prefix).await,
        want.iter().map(|s| p(s)).collect::<Vec<_>>()
    );

    // a connect sends AUTH and SELECT, nothing else
    let user = format!("mon-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut r = raw().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("+@all")
        .query_async(&mut r)
        .await
        .unwrap();
    let monitor = Monitor::start().await;
    let d = dict(&RedisParams {
        db: 3,
        user: Some(user.clone()),
        password: Some("pw".into()),
        ..params(&prefix)
    });
    assert_eq!(lookup(&d, "shared/END", "").await, None);
    // MONITOR does not show AUTH (acl_user_and_aborted_exec shows it is sent)
    assert_eq!(
        monitor.commands(&prefix).await,
        [r#""SELECT" "3""#.to_string(), p(r#""GET" "P/END""#)]
    );
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut r)
        .await
        .unwrap();
    cleanup(&mut r, &prefix).await;
}

#[tokio::test]
async fn lookup_found_missing_and_per_user() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    commit_ok(&d, txn("alice", vec![set("priv/quota/storage", "1000")])).await;
    assert_eq!(
        lookup(&d, "priv/quota/storage", "alice").await.as_deref(),
        Some("1000")
    );
    assert_eq!(lookup(&d, "priv/quota/storage", "bob").await, None);
    assert_eq!(lookup(&d, "shared/nothing/here", "").await, None);
    // an empty value is a value, not "not found"
    commit_ok(&d, txn("", vec![set("shared/empty", "")])).await;
    assert_eq!(lookup(&d, "shared/empty", "").await.as_deref(), Some(""));
    // binary-safe
    commit_ok(&d, txn("", vec![set("shared/bin", "a\u{1}\r\n\0z")])).await;
    assert_eq!(
        lookup(&d, "shared/bin", "").await.as_deref(),
        Some("a\u{1}\r\n\0z")
    );
    // a key holding a list is an error, as for Dovecot
    let mut r = raw().await;
    let _: i64 = redis::cmd("RPUSH")
        .arg(format!("{prefix}list"))
        .arg("x")
        .query_async(&mut r)
        .await
        .unwrap();
    let err = d.lookup(b"shared/list", b"").await.unwrap_err();
    assert!(err.message().contains("WRONGTYPE"), "{err}");
    cleanup(&mut r, &prefix).await;
}

/// A lookup that started connecting and is then left unpolled (or dropped, timed out by
/// its caller) holds up no other operation: the connect runs in a task of its own.
#[tokio::test]
async fn a_lookup_left_unpolled_while_connecting_holds_up_no_one() {
    let prefix = unique_prefix();
    let d = dict(&RedisParams {
        timeout_msecs: 1000,
        ..params(&prefix)
    });
    let mut first = Box::pin(d.lookup(b"shared/first", b""));
    assert!(
        futures::poll!(first.as_mut()).is_pending(),
        "the first lookup waits for its connection"
    );
    let started = Instant::now();
    let second = d.lookup(b"shared/second", b"").await;
    assert_eq!(second.expect("the second lookup is answered"), None);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the second lookup waited {:?}",
        started.elapsed()
    );
    // The first one, polled again, finishes too.
    assert_eq!(first.await.expect("the first lookup is answered"), None);
}

#[tokio::test]
async fn set_unset_and_inc() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    commit_ok(
        &d,
        txn("u", vec![set("priv/n", "10"), set("shared/s", "x")]),
    )
    .await;
    commit_ok(&d, txn("u", vec![inc("priv/n", 24), inc("priv/n", -4)])).await;
    assert_eq!(lookup(&d, "priv/n", "u").await.as_deref(), Some("30"));
    // INCRBY creates a missing key: OK, never NOTFOUND
    assert_eq!(
        d.commit(txn("carol", vec![inc("priv/quota/messages", 5)]))
            .await,
        CommitResult::Ok
    );
    assert_eq!(
        lookup(&d, "priv/quota/messages", "carol").await.as_deref(),
        Some("5")
    );
    // an increment by 0 writes nothing (dict.c drops it)
    commit_ok(&d, txn("", vec![inc("shared/zero", 0)])).await;
    assert_eq!(lookup(&d, "shared/zero", "").await, None);
    // changes apply in order
    commit_ok(
        &d,
        txn(
            "",
            vec![
                set("shared/o", "1"),
                unset("shared/o"),
                set("shared/p", "5"),
                inc("shared/p", 1),
                unset("shared/s"),
                unset("shared/never"),
            ],
        ),
    )
    .await;
    assert_eq!(lookup(&d, "shared/o", "").await, None);
    assert_eq!(lookup(&d, "shared/p", "").await.as_deref(), Some("6"));
    assert_eq!(lookup(&d, "shared/s", "").await, None);
    // a lookup right after the commit sees it (gotcha 27)
    commit_ok(&d, txn("", vec![set("shared/seen", "yes")])).await;
    assert_eq!(lookup(&d, "shared/seen", "").await.as_deref(), Some("yes"));
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations() {
    let prefix = unique_prefix();
    let d = std::sync::Arc::new(dict(&params(&prefix)));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move {
                let t = txn(
                    "u",
                    vec![inc("priv/count", 1), set(&format!("shared/k/{i}"), "x")],
                );
                assert_eq!(d.commit(t).await, CommitResult::Ok);
                lookup(&d, &format!("shared/k/{i}"), "").await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().as_deref(), Some("x"));
    }
    assert_eq!(lookup(&d, "priv/count", "u").await.as_deref(), Some("200"));
    assert_eq!(iterate(&d, "shared/k/", "", opts()).await.len(), 200);
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn expire_from_uri_and_from_transaction() {
    let prefix = unique_prefix();
    let mut r = raw().await;
    let plain = dict(&params(&prefix));
    let expiring = dict(&RedisParams {
        expire_secs: Some(100),
        ..params(&prefix)
    });
    commit_ok(&plain, txn("", vec![set("shared/forever", "1")])).await;
    assert_eq!(ttl(&mut r, format!("{prefix}forever").as_bytes()).await, -1);

    commit_ok(
        &expiring,
        txn("u", vec![set("priv/s", "1"), inc("shared/i", 3)]),
    )
    .await;
    for key in [format!("{prefix}u/s"), format!("{prefix}i")] {
        let t = ttl(&mut r, key.as_bytes()).await;
        assert!((90..=100).contains(&t), "{key}: TTL {t}");
    }
    // 2.4: the transaction's expiry replaces the dict's, also where the dict has none
    for d in [&expiring, &plain] {
        let mut t = txn("", vec![set("shared/short", "1")]);
        t.expire_secs = Some(20);
        commit_ok(d, t).await;
        let left = ttl(&mut r, format!("{prefix}short").as_bytes()).await;
        assert!((10..=20).contains(&left), "TTL {left}");
    }
    // 0 means none: the dict's applies
    let mut t = txn("", vec![set("shared/zero", "1")]);
    t.expire_secs = Some(0);
    commit_ok(&expiring, t).await;
    assert!(ttl(&mut r, format!("{prefix}zero").as_bytes()).await > 20);
    cleanup(&mut r, &prefix).await;
}

#[tokio::test]
async fn empty_transaction_sends_nothing() {
    // nothing listens there: an empty commit must not even try to connect
    let d = dict(&RedisParams {
        host: "127.0.0.1".into(),
        port: free_port(),
        timeout_msecs: 1000,
        ..RedisParams::default()
    });
    assert_eq!(d.commit(txn("u", vec![])).await, CommitResult::Ok);
    assert_eq!(
        d.commit(txn("u", vec![inc("priv/x", 0)])).await,
        CommitResult::Ok
    );
    assert!(d.lookup(b"shared/x", b"").await.is_err());
}

#[tokio::test]
async fn refused_increment_fails_and_writes_nothing() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    let mut r = raw().await;
    raw_set(&mut r, format!("{prefix}text").as_bytes(), b"abc").await;
    raw_set(
        &mut r,
        format!("{prefix}big").as_bytes(),
        b"9223372036854775800",
    )
    .await;
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{prefix}hash"))
        .arg("f")
        .arg("1")
        .query_async(&mut r)
        .await
        .unwrap();
    for (bad, why) in [
        (inc("shared/text", 1), "not an integer"),
        (inc("shared/big", 100), "overflow"),
        (inc("shared/hash", 1), "hash"),
    ] {
        let result = d
            .commit(txn(
                "",
                vec![set("shared/a", "1"), bad, set("shared/b", "2")],
            ))
            .await;
        let CommitResult::Failed(msg) = result else {
            panic!("{why}: {result:?}")
        };
        assert!(msg.contains(why), "{msg}");
        assert_eq!(lookup(&d, "shared/a", "").await, None, "{why}");
        assert_eq!(lookup(&d, "shared/b", "").await, None, "{why}");
    }
    assert_eq!(lookup(&d, "shared/text", "").await.as_deref(), Some("abc"));
    // a value set earlier in the same transaction counts, not the stored one
    commit_ok(
        &d,
        txn("", vec![set("shared/text", "4"), inc("shared/text", 1)]),
    )
    .await;
    assert_eq!(lookup(&d, "shared/text", "").await.as_deref(), Some("5"));
    assert!(matches!(
        d.commit(txn(
            "",
            vec![set("shared/text", "x1"), inc("shared/text", 1)]
        ))
        .await,
        CommitResult::Failed(_)
    ));
    // ... and nothing of that transaction was written
    assert_eq!(lookup(&d, "shared/text", "").await.as_deref(), Some("5"));
    cleanup(&mut r, &prefix).await;
}

/// Keys under `shared/it/` and some around it.
async fn iteration_fixture(d: &RedisDict) {
    commit_ok(
        d,
        txn(
            "",
            vec![
                set("shared/it/a", "3"),
                set("shared/it/b", "1"),
                set("shared/it/c/d", "2"),
                set("shared/it/c/e", "0"),
                set("shared/itx", "9"),
                set("shared/i/t", "8"),
            ],
        ),
    )
    .await;
}

#[tokio::test]
async fn iterate_levels_exact_and_no_value() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    iteration_fixture(&d).await;
    assert_eq!(
        iterate(&d, "shared/it/", "", opts()).await,
        ["shared/it/a=3", "shared/it/b=1"]
    );
    let recurse = IterateOptions {
        recurse: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/", "", recurse).await,
        [
            "shared/it/a=3",
            "shared/it/b=1",
            "shared/it/c/d=2",
            "shared/it/c/e=0"
        ]
    );
    // a string prefix, not a path segment, as dict-file
    assert_eq!(iterate(&d, "shared/it", "", opts()).await, ["shared/itx=9"]);
    let exact = IterateOptions {
        exact_key: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/a", "", exact).await,
        ["shared/it/a=3"]
    );
    assert!(iterate(&d, "shared/it/", "", exact).await.is_empty());
    assert!(iterate(&d, "shared/it/zz", "", exact).await.is_empty());
    let no_value = IterateOptions {
        no_value: true,
        recurse: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/c/", "", no_value).await,
        ["shared/it/c/d=", "shared/it/c/e="]
    );
    let exact_no_value = IterateOptions {
        exact_key: true,
        no_value: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/b", "", exact_no_value).await,
        ["shared/it/b="]
    );
    assert!(iterate(&d, "shared/it/q", "", exact_no_value)
        .await
        .is_empty());
    assert!(iterate(&d, "shared/none/", "", recurse).await.is_empty());
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn iterate_sorting_and_max_rows() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    iteration_fixture(&d).await;
    let by_value = IterateOptions {
        recurse: true,
        sort_by_value: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/", "", by_value).await,
        [
            "shared/it/c/e=0",
            "shared/it/b=1",
            "shared/it/c/d=2",
            "shared/it/a=3"
        ]
    );
    let by_key = IterateOptions {
        recurse: true,
        sort_by_key: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/it/", "", by_key).await,
        [
            "shared/it/a=3",
            "shared/it/b=1",
            "shared/it/c/d=2",
            "shared/it/c/e=0"
        ]
    );
    assert_eq!(
        iterate(
            &d,
            "shared/it/",
            "",
            IterateOptions {
                max_rows: 2,
                ..by_value
            }
        )
        .await,
        ["shared/it/c/e=0", "shared/it/b=1"]
    );
    assert_eq!(
        iterate(
            &d,
            "shared/it/",
            "",
            IterateOptions {
                max_rows: 3,
                ..by_key
            }
        )
        .await,
        ["shared/it/a=3", "shared/it/b=1", "shared/it/c/d=2"]
    );
    assert_eq!(
        iterate(
            &d,
            "shared/it/",
            "",
            IterateOptions {
                max_rows: 1,
                no_value: true,
                recurse: true,
                ..opts()
            }
        )
        .await,
        ["shared/it/a="]
    );
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn iterate_many_keys_across_scan_and_mget_batches() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    let changes = (0..1500)
        .map(|i| set(&format!("shared/many/{i:05}"), &i.to_string()))
        .collect();
    commit_ok(&d, txn("", changes)).await;
    let all = iterate(&d, "shared/many/", "", opts()).await;
    assert_eq!(all.len(), 1500);
    assert_eq!(all[0], "shared/many/00000=0");
    assert_eq!(all[1499], "shared/many/01499=1499");
    let limited = iterate(
        &d,
        "shared/many/",
        "",
        IterateOptions {
            max_rows: 700,
            ..opts()
        },
    )
    .await;
    assert_eq!(limited[..], all[..700]);
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn iterate_escapes_glob_characters() {
    // the prefix itself has glob characters too
    let base = unique_prefix();
    let prefix = format!("{base}[g]*?\\/");
    let d = dict(&params(&prefix));
    let mut r = raw().await;
    commit_ok(
        &d,
        txn(
            "",
            vec![
                set("shared/g*/1", "star"),
                set("shared/gx/2", "x"),
                set("shared/q?/1", "qm"),
                set("shared/qq/2", "q"),
                set("shared/[ab]/1", "br"),
                set("shared/a/2", "a"),
                set(r"shared/b\s/1", "bs"),
                set("shared/bs/2", "b"),
            ],
        ),
    )
    .await;
    // a key that the prefix would match as an unescaped glob
    raw_set(&mut r, format!("{base}gxyz/g*/3").as_bytes(), b"no").await;
    let recurse = IterateOptions {
        recurse: true,
        ..opts()
    };
    assert_eq!(
        iterate(&d, "shared/g*/", "", recurse).await,
        ["shared/g*/1=star"]
    );
    assert_eq!(
        iterate(&d, "shared/q?/", "", recurse).await,
        ["shared/q?/1=qm"]
    );
    assert_eq!(
        iterate(&d, "shared/[ab]/", "", recurse).await,
        ["shared/[ab]/1=br"]
    );
    assert_eq!(
        iterate(&d, r"shared/b\s/", "", recurse).await,
        [r"shared/b\s/1=bs"]
    );
    assert_eq!(iterate(&d, "shared/", "", recurse).await.len(), 8);
    cleanup(&mut r, &base).await;
}

#[tokio::test]
async fn iterate_private_keys_per_user() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    for user in ["al", "alice", "bob", "a/l", r"a\l"] {
        commit_ok(
            &d,
            txn(
                user,
                vec![
                    set("priv/quota/storage", &format!("{user}-s")),
                    set("priv/quota/messages", &format!("{user}-m")),
                ],
            ),
        )
        .await;
    }
    commit_ok(&d, txn("", vec![set("shared/quota/storage", "shared")])).await;
    let recurse = IterateOptions {
        recurse: true,
        ..opts()
    };
    for user in ["al", "alice", "bob", "a/l", r"a\l"] {
        assert_eq!(
            iterate(&d, "priv/", user, recurse).await,
            [
                format!("priv/quota/messages={user}-m"),
                format!("priv/quota/storage={user}-s")
            ],
            "user {user}"
        );
        assert_eq!(
            iterate(
                &d,
                "priv/quota/storage",
                user,
                IterateOptions {
                    exact_key: true,
                    ..opts()
                }
            )
            .await,
            [format!("priv/quota/storage={user}-s")]
        );
    }
    assert!(iterate(&d, "priv/", "nobody", recurse).await.is_empty());
    assert_eq!(
        iterate(&d, "shared/quota/", "al", opts()).await,
        ["shared/quota/storage=shared"]
    );
    // Dovecot's layout puts priv/ of user U where shared/U/ is: a recursive shared/
    // iteration sees every user's keys (documented on RedisDict).
    assert_eq!(
        iterate(&d, "shared/bob/", "", recurse).await,
        [
            "shared/bob/quota/messages=bob-m",
            "shared/bob/quota/storage=bob-s"
        ]
    );
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn unix_socket() {
    let prefix = unique_prefix();
    let d = dict(&RedisParams {
        path: Some(env().socket),
        host: "192.0.2.1".into(), // ignored when path= is set
        ..params(&prefix)
    });
    d.check().await.expect("PING over the socket");
    commit_ok(&d, txn("u", vec![set("priv/k", "sock")])).await;
    assert_eq!(lookup(&d, "priv/k", "u").await.as_deref(), Some("sock"));
    let mut r = raw().await;
    assert_eq!(
        raw_get(&mut r, format!("{prefix}u/k").as_bytes())
            .await
            .as_deref(),
        Some(&b"sock"[..])
    );
    cleanup(&mut r, &prefix).await;
}

#[tokio::test]
async fn db_is_selected() {
    let prefix = unique_prefix();
    let d = dict(&RedisParams {
        db: 7,
        ..params(&prefix)
    });
    commit_ok(&d, txn("", vec![set("shared/where", "db7")])).await;
    let key = format!("{prefix}where");
    let mut db7 = raw_db(7).await;
    assert_eq!(
        raw_get(&mut db7, key.as_bytes()).await.as_deref(),
        Some(&b"db7"[..])
    );
    assert_eq!(raw_get(&mut raw().await, key.as_bytes()).await, None);
    raw_set(&mut raw().await, key.as_bytes(), b"db0").await;
    assert_eq!(lookup(&d, "shared/where", "").await.as_deref(), Some("db7"));
    assert_eq!(
        iterate(&d, "shared/", "", opts()).await,
        ["shared/where=db7"]
    );
    cleanup(&mut db7, &prefix).await;
    cleanup(&mut raw().await, &prefix).await;
}

#[tokio::test]
async fn host_names_resolve() {
    let prefix = unique_prefix();
    let d = dict(&RedisParams {
        host: "localhost".into(),
        ..params(&prefix)
    });
    // localhost may resolve to ::1 first, where the test redis does not listen; the
    // client tries every address
    d.check().await.expect("PING via localhost");
}

#[tokio::test]
async fn acl_user_and_aborted_exec() {
    let prefix = unique_prefix();
    let user = format!("dict-{}", &prefix[..prefix.len() - 1]);
    let mut r = raw().await;
    // may do anything but INCRBY: queueing it aborts the whole EXEC
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("+@all")
        .arg("-incrby")
        .query_async(&mut r)
        .await
        .unwrap();
    let d = dict(&RedisParams {
        user: Some(user.clone()),
        password: Some("secret".into()),
        ..params(&prefix)
    });
    commit_ok(&d, txn("", vec![set("shared/acl", "1")])).await;
    let result = d
        .commit(txn(
            "",
            vec![set("shared/other", "1"), inc("shared/acl", 1)],
        ))
        .await;
    let CommitResult::Failed(msg) = result else {
        panic!("{result:?}")
    };
    assert!(msg.contains("EXECABORT") || msg.contains("NOPERM"), "{msg}");
    assert_eq!(lookup(&d, "shared/other", "").await, None);
    assert_eq!(lookup(&d, "shared/acl", "").await.as_deref(), Some("1"));

    let wrong = dict(&RedisParams {
        user: Some(user.clone()),
        password: Some("wrong".into()),
        ..params(&prefix)
    });
    let err = wrong.lookup(b"shared/acl", b"").await.unwrap_err();
    assert!(err.message().contains("connecting to"), "{err}");
    assert!(matches!(
        wrong.commit(txn("", vec![set("shared/x", "1")])).await,
        CommitResult::Failed(_)
    ));
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut r)
        .await
        .unwrap();
    cleanup(&mut r, &prefix).await;
}

#[test]
fn bad_parameters_are_start_up_errors() {
    let err = RedisDict::connect(&RedisParams {
        path: Some("/run/redis.sock".into()),
        tls: true,
        ..RedisParams::default()
    })
    .unwrap_err();
    assert!(err.message().contains("tls=yes"), "{err}");
    let err = RedisDict::connect(&RedisParams {
        user: Some("u".into()),
        ..RedisParams::default()
    })
    .unwrap_err();
    assert!(err.message().contains("password="), "{err}");
}

// ---------------------------------------------------------------- outages --

/// Asserts `f` finished in well under `limit`.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(limit * 2, f)
        .await
        .expect("the operation must not hang");
    assert!(
        started.elapsed() <= limit,
        "took {:?}, limit {limit:?}",
        started.elapsed()
    );
    out
}

#[tokio::test]
async fn nothing_listening_fails_promptly() {
    let d = dict(&RedisParams {
        host: "127.0.0.1".into(),
        port: free_port(),
        timeout_msecs: 2000,
        ..RedisParams::default()
    });
    let err = within(Duration::from_millis(500), d.lookup(b"shared/k", b""))
        .await
        .unwrap_err();
    assert!(err.message().contains("connecting to 127.0.0.1:"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let rows: Vec<_> = within(
        Duration::from_millis(500),
        d.iterate(b"shared/", b"", opts()).collect::<Vec<_>>(),
    )
    .await;
    assert!(matches!(rows[..], [Err(_)]), "{rows:?}");
    // nothing was sent, so the commit certainly did not happen
    let result = within(
        Duration::from_millis(500),
        d.commit(txn("", vec![set("shared/k", "v")])),
    )
    .await;
    assert!(matches!(result, CommitResult::Failed(_)), "{result:?}");
    assert!(d.check().await.is_err());
}

#[tokio::test]
async fn unresolvable_host_fails_within_the_timeout() {
    let d = dict(&RedisParams {
        host: "no-such-host.invalid".into(),
        timeout_msecs: 1000,
        ..RedisParams::default()
    });
    let err = within(Duration::from_millis(1500), d.lookup(b"shared/k", b""))
        .await
        .unwrap_err();
    assert!(err.message().contains("no-such-host.invalid"), "{err}");
}

/// A TCP server that accepts connections and never answers.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (port, task)
}

#[tokio::test]
async fn unanswered_requests_time_out() {
    let (port, server) = silent_server().await;
    let p = RedisParams {
        host: "127.0.0.1".into(),
        port,
        timeout_msecs: 300,
        ..RedisParams::default()
    };
    let d = dict(&p);
    let err = within(Duration::from_millis(800), d.lookup(b"shared/k", b""))
        .await
        .unwrap_err();
    assert!(err.message().contains("timed out after 300 ms"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // connected without a handshake, so MULTI … EXEC went out: the outcome is unknown
    let result = within(
        Duration::from_millis(800),
        d.commit(txn("", vec![set("shared/k", "v")])),
    )
    .await;
    assert!(
        matches!(result, CommitResult::WriteUncertain(_)),
        "{result:?}"
    );
    // with db=3 the connect itself (SELECT) hangs: nothing of the commit was sent
    let d3 = dict(&RedisParams { db: 3, ..p });
    let result = within(
        Duration::from_millis(800),
        d3.commit(txn("", vec![set("shared/k", "v")])),
    )
    .await;
    assert!(matches!(result, CommitResult::Failed(_)), "{result:?}");
    server.abort();
}

#[tokio::test]
async fn redis_restart_fails_promptly_then_recovers() {
    let mut server = PrivateRedis::start(&[]);
    let d = dict(&server.params(3000));
    let prompt = Duration::from_millis(1000);
    commit_ok(&d, txn("u", vec![set("priv/k", "1")])).await;
    assert_eq!(lookup(&d, "priv/k", "u").await.as_deref(), Some("1"));

    server.shutdown(None).await;
    let err = within(prompt, d.lookup(b"priv/k", b"u")).await.unwrap_err();
    assert!(err.message().contains("redis: lookup failed"), "{err}");
    let result = within(prompt, d.commit(txn("u", vec![inc("priv/n", 1)]))).await;
    assert!(matches!(result, CommitResult::Failed(_)), "{result:?}");
    let result = within(prompt, d.commit(txn("u", vec![set("priv/k", "2")]))).await;
    assert!(matches!(result, CommitResult::Failed(_)), "{result:?}");
    assert!(within(prompt, d.check()).await.is_err());

    server.resume();
    // the very first request after Redis is back works (the data is gone: no persistence)
    assert_eq!(lookup(&d, "priv/k", "u").await, None);
    commit_ok(&d, txn("u", vec![set("priv/k", "3")])).await;
    assert_eq!(lookup(&d, "priv/k", "u").await.as_deref(), Some("3"));

    // a restart between two requests, with no failure in between: the connection that
    // died while idle is not used again
    server.shutdown(None).await;
    server.resume();
    commit_ok(&d, txn("u", vec![set("priv/k", "4")])).await;
    assert_eq!(lookup(&d, "priv/k", "u").await.as_deref(), Some("4"));
    d.check().await.unwrap();
}

#[tokio::test]
async fn starts_while_redis_is_down() {
    let mut server = PrivateRedis::start(&["--requirepass", "pw"]);
    server.shutdown(Some("pw")).await;
    let d = dict(&RedisParams {
        password: Some("pw".into()),
        db: 2,
        ..server.params(2000)
    });
    assert!(d.check().await.is_err());
    server.resume();
    d.check().await.expect("connects once Redis is up");
    commit_ok(&d, txn("", vec![set("shared/k", "v")])).await;
    let mut c = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/2", server.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(raw_get(&mut c, b"p/k").await.as_deref(), Some(&b"v"[..]));
    // password and db are sent again after a reconnect
    server.shutdown(Some("pw")).await;
    server.resume();
    assert_eq!(lookup(&d, "shared/k", "").await, None);
    commit_ok(&d, txn("", vec![set("shared/k", "again")])).await;
    let mut c = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/2", server.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(
        raw_get(&mut c, b"p/k").await.as_deref(),
        Some(&b"again"[..])
    );
}

/// `scan_users`: every user's value of one `priv/` key, usernames unescaped, other keys
/// (deeper paths, other users' other keys, keys outside the prefix) left out.
#[tokio::test]
async fn scan_users_reads_every_users_key() {
    let prefix = unique_prefix();
    let d = dict(&params(&prefix));
    let mut r = raw().await;
    let users = ["alice", r"us\er", r"a/b\c", "x*y?"];
    for (i, user) in users.iter().enumerate() {
        commit_ok(
            &d,
            txn(
                user,
                vec![
                    set("priv/quota/storage", &format!("{}", 100 + i)),
                    set("priv/quota/messages", &format!("{i}")),
                ],
            ),
        )
        .await;
    }
    commit_ok(&d, txn("bob", vec![set("priv/quota/storage/deeper", "1")])).await;
    commit_ok(&d, txn("", vec![set("shared/a/b/quota/storage", "2")])).await;
    // Same key names under another prefix: not ours.
    let other = unique_prefix();
    raw_set(&mut r, format!("{other}zed/quota/storage").as_bytes(), b"9").await;
    let mut found: Vec<(String, Vec<String>)> = d
        .scan_users(b"priv/quota/storage")
        .map(|u| {
            let u = u.expect("scan works");
            (
                String::from_utf8(u.username).unwrap(),
                u.values
                    .into_iter()
                    .map(|v| String::from_utf8(v).unwrap())
                    .collect(),
            )
        })
        .collect()
        .await;
    found.sort();
    let mut want: Vec<(String, Vec<String>)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.to_string(), vec![format!("{}", 100 + i)]))
        .collect();
    want.sort();
    assert_eq!(found, want);
    let err: Vec<_> = d.scan_users(b"shared/quota/storage").collect().await;
    assert!(
        matches!(&err[..], [Err(e)] if e.message().contains("priv/") && e.kind() == ErrorKind::Refused),
        "{err:?}"
    );
    cleanup(&mut r, &prefix).await;
    cleanup(&mut r, &other).await;
}
