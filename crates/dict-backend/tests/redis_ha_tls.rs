//! `tls=yes` with `sentinels=` and with `cluster=`: private TLS-only Redis processes (a
//! master, its replica and a sentinel; a cluster of three masters) with a throwaway CA
//! made by the `openssl` command. A test binary of its own: it points `SSL_CERT_FILE` at
//! that CA for the whole process.

mod redis_env;
mod tls_certs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dict_backend::redis::RedisDict;
use dict_backend::{Change, CommitResult, Dict, IterRow, IterateOptions, Transaction};
use dict_config::RedisParams;
use futures::StreamExt;
use redis_env::free_port;
use tls_certs::make_certs;

/// The processes of one test; killed when it ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// TLS-only on `port` (no plain port), clients unauthenticated, replication and cluster
/// bus over TLS too.
fn tls_args(dir: &Path, port: u16) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
        "--tls-replication",
        "yes",
        "--tls-cluster",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(procs: &mut Processes, dir: &Path, args: &[String], port: u16) {
    let child = Command::new("redis-server")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (install redis-server)");
    procs.0.push(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS redis on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-cli` over TLS to `port`; its stdout.
fn cli(dir: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set(user: &str, key: &str, value: &str) -> Transaction {
    Transaction {
        username: user.into(),
        changes: vec![Change::Set {
            key: key.into(),
            value: value.into(),
        }],
        ..Transaction::default()
    }
}

async fn commit_ok_within(d: &RedisDict, t: Transaction, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match d.commit(t.clone()).await {
            CommitResult::Ok => return,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sentinel_over_tls(dir: &Path, procs: &mut Processes) {
    let (master, replica, sentinel) = (free_port(), free_port(), free_port());
    spawn(procs, dir, &tls_args(dir, master), master);
    let mut args = tls_args(dir, replica);
    args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
    spawn(procs, dir, &args, replica);
    let file = |name: &str| dir.join(name).display().to_string();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {sentinel}\nbind 127.0.0.1\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n\
             sentinel monitor tlsm 127.0.0.1 {master} 1\n",
            file("server.crt"),
            file("server.key"),
            file("ca.crt")
        ),
    )
    .unwrap();
    spawn(
        procs,
        dir,
        &[conf.display().to_string(), "--sentinel".into()],
        sentinel,
    );
    let d = RedisDict::connect(&RedisParams {
        sentinels: vec![("127.0.0.1".into(), sentinel)],
        master_name: Some("tlsm".into()),
        tls: true,
        wait_replicas: 1,
        wait_timeout_msecs: 1000,
        timeout_msecs: 3000,
        ..RedisParams::default()
    })
    .unwrap();
    // Ok once the replica is in sync over TLS: WAIT counts it
    commit_ok_within(
        &d,
        set("u", "priv/quota/storage", "42"),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        d.lookup(b"priv/quota/storage", b"u").await.unwrap(),
        Some(vec![b"42".to_vec()])
    );
    assert!(cli(dir, master, &["GET", "u/quota/storage"]).contains("42"));
}

async fn cluster_over_tls(dir: &Path, procs: &mut Processes) {
    // the cluster bus listens on port + 10000
    let bus_fits = |p: &u16| *p < 55000;
    let ports: Vec<u16> = (0..3)
        .map(|_| std::iter::repeat_with(free_port).find(bus_fits).unwrap())
        .collect();
    for &port in &ports {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir(&node_dir).unwrap();
        let mut args = tls_args(dir, port);
        args.extend(
            ["--cluster-enabled", "yes", "--dir"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(node_dir.display().to_string());
        spawn(procs, dir, &args, port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // `timeout`: redis-cli waits for ever when the nodes cannot meet
    let out = Command::new("timeout")
        .args(["30", "redis-cli", "--tls", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ports
        .iter()
        .all(|&p| cli(dir, p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        assert!(Instant::now() < deadline, "TLS cluster not ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = RedisDict::connect(&RedisParams {
        cluster: vec![("127.0.0.1".into(), ports[0])],
        tls: true,
        user_hash_tag: true,
        timeout_msecs: 3000,
        ..RedisParams::default()
    })
    .unwrap();
    for i in 0..20 {
        let t = set("", &format!("shared/t/k{i:02}"), &i.to_string());
        commit_ok_within(&d, t, Duration::from_secs(10)).await;
    }
    let rows: Vec<IterRow> = d
        .iterate(b"shared/t/", b"", IterateOptions::default())
        .map(|r| r.expect("iteration over TLS"))
        .collect()
        .await;
    assert_eq!(rows.len(), 20, "keys of all three masters");
    assert!(
        ports
            .iter()
            .filter(|&&p| cli(dir, p, &["DBSIZE"]).trim() != "0")
            .count()
            > 1,
        "the keys are spread over the masters"
    );
}

#[tokio::test]
async fn sentinel_and_cluster_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    // the only test in this process: nothing else reads the variable
    std::env::set_var("SSL_CERT_FILE", dir.path().join("ca.crt"));
    let mut procs = Processes(Vec::new());
    sentinel_over_tls(dir.path(), &mut procs).await;
    cluster_over_tls(dir.path(), &mut procs).await;
}
