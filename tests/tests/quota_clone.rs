//! The real Dovecot 2.3 quota_clone plugin (`quota_clone_dict = proxy:<socket>:<name>`) saving
//! and expunging mail through `doveadm`, with our server storing the quota in SQL or Redis:
//! after each step the row holds exactly the bytes (vsize) and message count Dovecot reports.
//!
//! Then our `quota-clone` on the same mail store: `sync --from-doveadm` rewrites the wiped
//! rows with exactly what the plugin had written, and `export` reads them back from the
//! backend named in the server's dovecot.conf.

use std::process::Command;

use dict_tests::mail_env::{message, MailEnv};
use dict_tests::{
    doveadm, quota_clone, redis_cli, run_ok, service_env, unique, Backend, DictServer,
};

const ALICE: &str = "qc-alice@example.test";
const BOB: &str = "qc-bob@example.test";

/// The Redis behind the server, read directly with `redis-cli`: services.sh's server, or
/// a node of tests/scripts/redis-ha.sh (the Sentinel master, or a Cluster node with the
/// user_hash_tag layout).
struct RedisView {
    /// host and port of the node to ask; `None`: services.sh's server.
    node: Option<(String, String)>,
    /// A cluster: `redis-cli -c`, and `{<user>}` in the keys (user_hash_tag=yes).
    cluster: bool,
}

impl RedisView {
    fn cli(&self) -> Command {
        match &self.node {
            None => redis_cli(),
            Some((host, port)) => {
                let mut cmd = Command::new("redis-cli");
                if self.cluster {
                    cmd.arg("-c");
                }
                cmd.args(["-h", host, "-p", port]);
                cmd
            }
        }
    }

    /// The Redis key of `priv/<rest>` of `user`.
    fn key(&self, server: &DictServer, user: &str, rest: &str) -> String {
        let p = &server.redis_prefix;
        if self.cluster {
            format!("{p}{{{user}}}/{rest}")
        } else {
            format!("{p}{user}/{rest}")
        }
    }

    fn get(&self, key: &str) -> String {
        let out = run_ok(self.cli().arg("--no-raw").arg("GET").arg(key));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    fn del(&self, key: &str) {
        run_ok(self.cli().arg("DEL").arg(key));
    }
}

fn check(server: &DictServer, redis: &RedisView, mail: &MailEnv, user: &str, step: &str) {
    let (bytes, messages) = mail.usage(user);
    if server.backend == Backend::Redis {
        // Dovecot's layout: <prefix><user>/quota/storage, readable by any Redis client.
        let raw = redis.get(&redis.key(server, user, "quota/storage"));
        assert_eq!(
            raw,
            format!("\"{bytes}\""),
            "{step}: {user}'s raw redis key"
        );
    } else {
        let row = server.sql(&format!(
            "SELECT bytes, messages FROM quota WHERE username = '{user}'"
        ));
        assert_eq!(
            row,
            format!("{bytes}\t{messages}"),
            "{step}: {user}'s quota row\n{}",
            server.log()
        );
    }
    let uri = server.uri();
    let got = doveadm(&[
        "-f",
        "flow",
        "dict",
        "get",
        "-u",
        user,
        &uri,
        "priv/quota/storage",
    ]);
    assert_eq!(
        got.stdout.trim(),
        bytes.to_string(),
        "{step}: dict lookup of storage"
    );
    let got = doveadm(&[
        "-f",
        "flow",
        "dict",
        "get",
        "-u",
        user,
        &uri,
        "priv/quota/messages",
    ]);
    assert_eq!(
        got.stdout.trim(),
        messages.to_string(),
        "{step}: dict lookup of messages"
    );
}

/// (bytes, messages) as the backend stores them for `user`, read directly; empty when
/// absent.
fn stored(server: &DictServer, redis: &RedisView, user: &str) -> (String, String) {
    if server.backend == Backend::Redis {
        let get = |key: &str| {
            let raw = redis.get(&redis.key(server, user, key));
            // redis-cli --no-raw: "123" for a string, (nil) for no key.
            raw.strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or("")
                .to_string()
        };
        return (get("quota/storage"), get("quota/messages"));
    }
    let row = server.sql(&format!(
        "SELECT bytes, messages FROM quota WHERE username = '{user}'"
    ));
    match row.split_once('\t') {
        Some((b, m)) => (b.to_string(), m.to_string()),
        None => (row, String::new()),
    }
}

fn wipe(server: &DictServer, redis: &RedisView, user: &str) {
    if server.backend == Backend::Redis {
        // one key at a time: in a cluster they may live on different nodes
        redis.del(&redis.key(server, user, "quota/storage"));
        redis.del(&redis.key(server, user, "quota/messages"));
    } else {
        server.sql(&format!("DELETE FROM quota WHERE username = '{user}'"));
    }
    assert_eq!(stored(server, redis, user), (String::new(), String::new()));
}

/// Our `quota-clone` against the plugin's rows: `sync --from-doveadm` on the real mail
/// store writes the same values, and `export` reads them back.
fn sync_and_export(server: &DictServer, redis: &RedisView, mail: &MailEnv) {
    // A second mailbox: quota counts all of them, and the doveadm sums must too.
    mail.doveadm(&["mailbox", "create", "-u", ALICE, "Archive"], None);
    mail.doveadm(
        &["save", "-u", ALICE, "-m", "Archive"],
        Some(message(5, ALICE)),
    );
    let plugin: Vec<(String, String)> = [ALICE, BOB]
        .iter()
        .map(|u| stored(server, redis, u))
        .collect();
    let (inbox_bytes, _) = mail.usage(ALICE);
    let alice_bytes: u64 = plugin[0].0.parse().expect("alice's bytes");
    assert!(
        alice_bytes > inbox_bytes,
        "the plugin counts Archive too: {plugin:?}"
    );
    assert_eq!(plugin[1], ("0".to_string(), "0".to_string()));
    for user in [ALICE, BOB] {
        wipe(server, redis, user);
    }
    let uri = server.uri();
    let summary = quota_clone(&[
        "--dict",
        &uri,
        "sync",
        "--from-doveadm",
        "--doveadm-config",
        &mail.conf,
    ]);
    assert_eq!(summary.trim(), "written: 2, failed: 0, uncertain: 0");
    for (user, want) in [ALICE, BOB].iter().zip(&plugin) {
        assert_eq!(
            &stored(server, redis, user),
            want,
            "{user}: sync --from-doveadm vs the plugin"
        );
    }
    let conf = server.dir.path().join("dovecot.conf");
    let conf = conf.to_str().unwrap();
    let csv = quota_clone(&["export", "-c", conf, "--name", &server.name]);
    assert!(csv.starts_with("user,bytes,messages\n"), "{csv}");
    let jsonl = quota_clone(&["export", "-c", conf, "--name", &server.name, "-f", "jsonl"]);
    for (user, (bytes, messages)) in [ALICE, BOB].iter().zip(&plugin) {
        let line = format!("{user},{bytes},{messages}");
        assert!(csv.lines().any(|l| l == line), "{line} in {csv}");
        let line = format!(r#"{{"user":"{user}","bytes":{bytes},"messages":{messages}}}"#);
        assert!(jsonl.lines().any(|l| l == line), "{line} in {jsonl}");
    }
}

fn suite(backend: Backend) {
    let server = DictServer::start(backend, backend.driver());
    suite_on(
        &server,
        &RedisView {
            node: None,
            cluster: false,
        },
    );
}

fn suite_on(server: &DictServer, redis: &RedisView) {
    let backend = server.backend;
    if backend != Backend::Redis {
        for user in [ALICE, BOB] {
            server.sql(&format!("DELETE FROM quota WHERE username = '{user}'"));
        }
    }
    let mail = MailEnv::start(server);
    for n in 1..=3 {
        mail.doveadm(
            &["save", "-u", ALICE, "-m", "INBOX"],
            Some(message(n, ALICE)),
        );
    }
    check(server, redis, &mail, ALICE, "after 3 saves");
    mail.doveadm(&["save", "-u", BOB, "-m", "INBOX"], Some(message(7, BOB)));
    check(server, redis, &mail, BOB, "after 1 save");
    mail.doveadm(
        &["expunge", "-u", ALICE, "mailbox", "INBOX", "uid", "2"],
        None,
    );
    check(server, redis, &mail, ALICE, "after expunge");
    mail.doveadm(
        &["copy", "-u", ALICE, "INBOX", "mailbox", "INBOX", "uid", "1"],
        None,
    );
    check(server, redis, &mail, ALICE, "after copy");
    mail.doveadm(&["expunge", "-u", BOB, "mailbox", "INBOX", "all"], None);
    check(server, redis, &mail, BOB, "after expunge all");
    assert_eq!(mail.usage(BOB), (0, 0));
    sync_and_export(server, redis, &mail);
}

#[test]
fn quota_clone_into_sqlite() {
    suite(Backend::Sqlite);
}

#[test]
fn quota_clone_into_mariadb() {
    suite(Backend::Mysql);
}

#[test]
fn quota_clone_into_postgresql() {
    suite(Backend::Pgsql);
}

#[test]
fn quota_clone_into_redis() {
    suite(Backend::Redis);
}

/// The same on a Redis Cluster (tests/scripts/redis-ha.sh): `user_hash_tag=yes` keeps each
/// user's two quota keys in one slot, so the plugin's transaction is one `MULTI`.
#[test]
fn quota_clone_into_redis_cluster() {
    let nodes = service_env("DICT_TEST_REDIS_CLUSTER");
    let (host, port) = nodes
        .split(',')
        .next()
        .and_then(|n| n.split_once('/'))
        .expect("DICT_TEST_REDIS_CLUSTER is host/port,…");
    let prefix = unique("qcc") + "/";
    let uri = format!("redis:cluster={nodes}:user_hash_tag=yes:prefix={prefix}");
    let mut server = DictServer::start_with_dict(Backend::Redis, "rediscluster", &uri);
    server.redis_prefix = prefix;
    let redis = RedisView {
        node: Some((host.to_string(), port.to_string())),
        cluster: true,
    };
    suite_on(&server, &redis);
}

/// The same through Redis Sentinel (tests/scripts/redis-ha.sh), in Dovecot's key layout:
/// the server asks the sentinels for the master, and so does the check.
#[test]
fn quota_clone_into_redis_sentinel() {
    let sentinels = service_env("DICT_TEST_REDIS_SENTINELS");
    let master_name = service_env("DICT_TEST_REDIS_MASTER_NAME");
    let (host, port) = sentinels
        .split(',')
        .next()
        .and_then(|n| n.split_once('/'))
        .expect("DICT_TEST_REDIS_SENTINELS is host/port,…");
    let out = run_ok(Command::new("redis-cli").args([
        "-h",
        host,
        "-p",
        port,
        "SENTINEL",
        "get-master-addr-by-name",
        &master_name,
    ]));
    let addr = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut addr = addr.lines();
    let (Some(m_host), Some(m_port)) = (addr.next(), addr.next()) else {
        panic!("sentinel {host}/{port} names no master {master_name}")
    };
    let prefix = unique("qcs") + "/";
    let uri = format!("redis:sentinels={sentinels}:master_name={master_name}:prefix={prefix}");
    let mut server = DictServer::start_with_dict(Backend::Redis, "redissentinel", &uri);
    server.redis_prefix = prefix;
    let redis = RedisView {
        node: Some((m_host.to_string(), m_port.to_string())),
        cluster: false,
    };
    suite_on(&server, &redis);
}
