//! The Redis dict's Sentinel, Cluster and `WAIT` parameters against real engines: the
//! Redis of `tests/scripts/services.sh` (no replicas) and its service `redis-ha`
//! (tests/scripts/redis-ha.sh: a Sentinel-monitored master with one replica, and a Redis
//! Cluster of three masters with a replica each). Needs `DICT_TEST_REDIS_HOST`/`_PORT`,
//! `DICT_TEST_REDIS_SENTINELS`, `DICT_TEST_REDIS_MASTER_NAME` and `DICT_TEST_REDIS_CLUSTER`
//! from `eval "$(tests/scripts/services.sh env)"`; without them every test fails. Failover
//! under load is tests/tests/redis_ha.rs, TLS redis_ha_tls.rs.

mod changes;

use std::time::{Duration, Instant};

use changes::{inc, set, txn};
use dict_backend::redis::RedisDict;
use dict_backend::{CommitResult, Dict, DictError, IterRow, IterateOptions};
use dict_config::RedisParams;
use futures::StreamExt;

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: start the services with `bash tests/scripts/services.sh \
                 start` and run the tests under `eval \"$(bash tests/scripts/services.sh env)\"`"
            )
        })
}

/// `host/port,…` as the URI takes it.
fn nodes(var: &str) -> Vec<(String, u16)> {
    env(var)
        .split(',')
        .map(|n| {
            let (h, p) = n.split_once('/').expect("host/port");
            (h.to_string(), p.parse().expect("port"))
        })
        .collect()
}

fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}{}-{nanos}/", std::process::id())
}

fn sentinel_params() -> RedisParams {
    RedisParams {
        sentinels: nodes("DICT_TEST_REDIS_SENTINELS"),
        master_name: Some(env("DICT_TEST_REDIS_MASTER_NAME")),
        prefix: unique_prefix("s"),
        timeout_msecs: 3000,
        ..RedisParams::default()
    }
}

fn cluster_params() -> RedisParams {
    RedisParams {
        cluster: nodes("DICT_TEST_REDIS_CLUSTER"),
        user_hash_tag: true,
        prefix: unique_prefix("c"),
        timeout_msecs: 3000,
        ..RedisParams::default()
    }
}

async fn lookup(d: &RedisDict, key: &str, user: &str) -> Option<String> {
    d.lookup(key.as_bytes(), user.as_bytes())
        .await
        .expect("lookup works")
        .map(|v| String::from_utf8(v[0].clone()).unwrap())
}

async fn iterate(d: &RedisDict, path: &str, user: &str, options: IterateOptions) -> Vec<String> {
    let rows: Vec<Result<IterRow, DictError>> = d
        .iterate(path.as_bytes(), user.as_bytes(), options)
        .collect()
        .await;
    rows.into_iter()
        .map(|r| {
            let r = r.expect("iteration works");
            format!(
                "{}={}",
                String::from_utf8(r.key).unwrap(),
                String::from_utf8(r.values[0].clone()).unwrap()
            )
        })
        .collect()
}

/// The raw value of `key` on the node at `port` (`redis-cli -c` follows MOVED).
fn raw_get(port: u16, key: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string(), "GET", key])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// With no replica to acknowledge it, `wait_replicas=1` turns an applied commit into
/// `WriteUncertain` (it is on the master only); the value is there.
#[tokio::test]
async fn wait_for_a_missing_replica_is_write_uncertain() {
    let d = RedisDict::connect(&RedisParams {
        host: env("DICT_TEST_REDIS_HOST"),
        port: env("DICT_TEST_REDIS_PORT").parse().unwrap(),
        prefix: unique_prefix("w"),
        wait_replicas: 1,
        wait_timeout_msecs: 100,
        timeout_msecs: 3000,
        ..RedisParams::default()
    })
    .unwrap();
    let started = Instant::now();
    match d.commit(txn("u", vec![set("shared/w", "1")])).await {
        CommitResult::WriteUncertain(e) => {
            assert!(e.contains("only 0 of 1 replicas"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "WAIT waited"
    );
    assert_eq!(lookup(&d, "shared/w", "u").await.as_deref(), Some("1"));
}

/// Through the sentinels: the data lands on the master they name, and with its replica
/// connected `wait_replicas=1` answers `Ok`.
#[tokio::test]
async fn sentinel_serves_the_named_master() {
    let p = RedisParams {
        wait_replicas: 1,
        wait_timeout_msecs: 2000,
        ..sentinel_params()
    };
    let d = RedisDict::connect(&p).unwrap();
    d.check().await.expect("PING through the sentinels' master");
    let t = txn(
        "u",
        vec![set("priv/quota/storage", "10"), inc("shared/n", 2)],
    );
    assert_eq!(d.commit(t).await, CommitResult::Ok);
    assert_eq!(
        lookup(&d, "priv/quota/storage", "u").await.as_deref(),
        Some("10")
    );
    assert_eq!(lookup(&d, "shared/n", "").await.as_deref(), Some("2"));
    let sentinel = nodes("DICT_TEST_REDIS_SENTINELS")[0].1;
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &sentinel.to_string(),
            "SENTINEL",
            "get-master-addr-by-name",
        ])
        .arg(env("DICT_TEST_REDIS_MASTER_NAME"))
        .output()
        .unwrap();
    let master: u16 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .expect("the sentinel names a master");
    assert_eq!(
        raw_get(master, &format!("{}u/quota/storage", p.prefix)),
        "10",
        "Dovecot's key layout on the master"
    );
}

/// No sentinel reachable: requests fail at once (`Failed`, nothing was sent), not after
/// the timeout.
#[tokio::test]
async fn no_sentinel_fails_fast() {
    let d = RedisDict::connect(&RedisParams {
        sentinels: vec![("127.0.0.1".into(), 1)],
        ..sentinel_params()
    })
    .unwrap();
    let started = Instant::now();
    match d.commit(txn("u", vec![set("shared/x", "1")])).await {
        CommitResult::Failed(e) => assert!(e.contains("sentinels 127.0.0.1:1"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(d.lookup(b"shared/x", b"u").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// The credentials reach the servers they are for: our test servers have no password, so
/// each `AUTH` is refused, and the request fails with that reason.
#[tokio::test]
async fn credentials_go_to_sentinels_and_data_nodes() {
    let cases = [
        (
            "sentinel_password",
            RedisParams {
                sentinel_password: Some("sp".into()),
                ..sentinel_params()
            },
        ),
        (
            "password (data nodes, through the sentinels)",
            RedisParams {
                user: Some("dict".into()),
                password: Some("pw".into()),
                ..sentinel_params()
            },
        ),
        (
            "password (cluster)",
            RedisParams {
                password: Some("pw".into()),
                ..cluster_params()
            },
        ),
    ];
    for (what, p) in cases {
        let d = RedisDict::connect(&p).unwrap();
        match d.commit(txn("u", vec![set("shared/auth", "1")])).await {
            CommitResult::Failed(e) => assert!(
                e.contains("AUTH") || e.contains("auth") || e.contains("password"),
                "{what}: {e}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn user_hash_tag_needs_a_prefix_without_braces() {
    let e = RedisDict::connect(&RedisParams {
        prefix: "a{b}/".into(),
        ..cluster_params()
    })
    .unwrap_err();
    assert!(e.to_string().contains("without { and }"), "{e}");
}

/// The dict on the cluster with `user_hash_tag=yes`: a user's transaction is one `MULTI`
/// in the user's slot, stored as `<prefix>{<user>}/<key>`; increments are checked; a
/// transaction over slots fails with a clear message and writes nothing.
#[tokio::test]
async fn cluster_commits_keep_to_one_slot() {
    let p = cluster_params();
    let d = RedisDict::connect(&p).unwrap();
    d.check().await.expect("PING the cluster");
    for user in ["alice", "bob", "a/b"] {
        let t = txn(
            user,
            vec![
                set("priv/quota/storage", "100"),
                set("priv/quota/messages", "1"),
                inc("priv/quota/storage", 5),
            ],
        );
        assert_eq!(d.commit(t).await, CommitResult::Ok, "{user}");
        assert_eq!(
            lookup(&d, "priv/quota/storage", user).await.as_deref(),
            Some("105")
        );
    }
    let port = p.cluster[0].1;
    assert_eq!(
        raw_get(port, &format!("{}{{bob}}/quota/storage", p.prefix)),
        "105"
    );
    assert_eq!(
        raw_get(port, &format!("{}{{a\\-b}}/quota/messages", p.prefix)),
        "1"
    );
    // an increment Redis would refuse (the check reads the user's slot): nothing is sent
    let t = txn("bob", vec![set("priv/t", "x")]);
    assert_eq!(d.commit(t).await, CommitResult::Ok);
    let t = txn(
        "bob",
        vec![set("priv/quota/messages", "7"), inc("priv/t", 1)],
    );
    match d.commit(t).await {
        CommitResult::Failed(e) => assert!(e.contains("not an integer"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        lookup(&d, "priv/quota/messages", "bob").await.as_deref(),
        Some("1")
    );
    // shared/ keys keep Dovecot's layout, so they hash apart from the user's tag
    let t = txn(
        "bob",
        vec![set("priv/quota/storage", "1"), set("shared/s", "1")],
    );
    match d.commit(t).await {
        CommitResult::Failed(e) => assert!(e.contains("must keep to one slot"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(lookup(&d, "shared/s", "").await, None);
    assert_eq!(
        lookup(&d, "priv/quota/storage", "bob").await.as_deref(),
        Some("105")
    );
}

/// Iteration and `scan_users` see the keys of every master.
#[tokio::test]
async fn cluster_iteration_scans_every_master() {
    let p = cluster_params();
    let d = RedisDict::connect(&p).unwrap();
    let mut want = Vec::new();
    for i in 0..40 {
        let key = format!("shared/it/k{i:02}");
        assert_eq!(
            d.commit(txn("", vec![set(&key, &i.to_string())])).await,
            CommitResult::Ok
        );
        want.push(format!("{key}={i}"));
    }
    want.sort();
    assert_eq!(
        iterate(&d, "shared/it/", "", IterateOptions::default()).await,
        want
    );
    let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    for (i, user) in users.iter().enumerate() {
        let t = txn(user, vec![set("priv/quota/storage", &i.to_string())]);
        assert_eq!(d.commit(t).await, CommitResult::Ok);
    }
    assert_eq!(
        iterate(&d, "priv/quota/", "user3", IterateOptions::default()).await,
        ["priv/quota/storage=3"]
    );
    let mut found: Vec<(String, String)> = d
        .scan_users(b"priv/quota/storage")
        .map(|u| {
            let u = u.expect("scan works");
            (
                String::from_utf8(u.username).unwrap(),
                String::from_utf8(u.values[0].clone()).unwrap(),
            )
        })
        .collect()
        .await;
    found.sort();
    let mut expected: Vec<(String, String)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), i.to_string()))
        .collect();
    expected.sort();
    assert_eq!(found, expected);
}
