//! Redis Sentinel and Redis Cluster of `tests/scripts/redis-ha.sh` (service `redis-ha` of
//! services.sh), reached with `redis-cli`: who is master now, killing and restarting a
//! node, reading the keys a load wrote, and the failover gap of a load run.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::LoadReport;
use crate::{run_ok, service_env};

const HOST: &str = "127.0.0.1";

/// `host/port,…` of an environment variable, as ports (all on loopback).
pub fn ports(var: &str) -> Vec<u16> {
    service_env(var)
        .split(',')
        .map(|n| {
            n.rsplit('/')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{var}: bad node {n:?}"))
        })
        .collect()
}

/// `redis-cli` on the node at `port`; its stdout (empty when the node does not answer).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", HOST, "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Polls `ready` every 50 ms until it holds (the instant it did) or `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Instant {
    let end = Instant::now() + limit;
    loop {
        if ready() {
            return Instant::now();
        }
        assert!(Instant::now() < end, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of the master the sentinels name now (`None` when none of them answers).
pub fn sentinel_master() -> Option<u16> {
    let name = service_env("DICT_TEST_REDIS_MASTER_NAME");
    ports("DICT_TEST_REDIS_SENTINELS")
        .into_iter()
        .find_map(|s| {
            let out = cli(s, &["SENTINEL", "get-master-addr-by-name", &name]);
            out.lines().nth(1)?.trim().parse().ok()
        })
}

/// How many replicas of the node at `port` are in sync with it (`state=online`; one
/// still loading the master's snapshot does not acknowledge a `WAIT`).
pub fn connected_replicas(port: u16) -> usize {
    cli(port, &["INFO", "replication"])
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

/// SIGKILL to the redis-server at `port`; returns when it is gone.
pub fn kill(port: u16) -> Instant {
    let pid: i32 = cli(port, &["INFO", "server"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:")?.parse().ok())
        .unwrap_or_else(|| panic!("no process_id from redis at {port}"));
    let at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill redis-server");
    wait_until("killed redis gone", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    at
}

/// Starts the data node at `port` again (tests/scripts/redis-ha.sh restart).
pub fn restart(port: u16) {
    run_ok(
        Command::new("bash")
            .arg(service_env("DICT_TEST_REDIS_HA_SCRIPT"))
            .arg("restart")
            .arg(port.to_string()),
    );
}

/// Makes the data node at `port` a replica of the one at `master` (`REPLICAOF`).
pub fn replica_of(port: u16, master: u16) {
    let reply = cli(port, &["REPLICAOF", HOST, &master.to_string()]);
    assert_eq!(reply, "OK", "REPLICAOF {HOST} {master} on {port}");
}

/// A cluster node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
}

/// The healthy nodes of the cluster, as the first node that answers sees them.
pub fn cluster_nodes() -> Vec<ClusterNode> {
    let out = ports("DICT_TEST_REDIS_CLUSTER")
        .into_iter()
        .map(|p| cli(p, &["CLUSTER", "NODES"]))
        .find(|o| !o.is_empty())
        .expect("no cluster node answers");
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = *f.get(2)?;
            if flags.contains("fail") || flags.contains("noaddr") {
                return None;
            }
            // ip:port@cport
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            Some(ClusterNode {
                id: f[0].to_string(),
                port,
                master: flags.contains("master"),
                master_id: (f.get(3)? != &"-").then(|| f[3].to_string()),
            })
        })
        .collect()
}

/// Every node answers `cluster_state:ok`, and each master has a replica.
pub fn cluster_whole() -> bool {
    let nodes = cluster_nodes();
    let masters: Vec<&ClusterNode> = nodes.iter().filter(|n| n.master).collect();
    masters.len() == 3
        && masters
            .iter()
            .all(|m| nodes.iter().any(|r| r.master_id.as_ref() == Some(&m.id)))
        && ports("DICT_TEST_REDIS_CLUSTER")
            .into_iter()
            .all(|p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
}

/// The names (last path component) of the keys under `prefix` on the nodes at `ports`.
pub fn key_names(ports: &[u16], prefix: &str) -> HashSet<String> {
    let pattern = format!("{prefix}*");
    ports
        .iter()
        .flat_map(|&p| {
            cli(p, &["--scan", "--pattern", &pattern])
                .lines()
                .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The failover gap of a load run with a fault at `fault`: the longest time without any
/// commit answered `O` that ends after the fault (for a fault that stops all writes, from
/// the last `O` before it to the first `O` after it).
pub fn failover_gap(report: &LoadReport, fault: Instant) -> Option<Duration> {
    let mut oks: Vec<Instant> = report
        .outcomes
        .iter()
        .filter(|o| o.commit)
        .filter_map(|o| o.reply.filter(|r| r.0 == 'O').map(|r| r.1))
        .collect();
    oks.sort();
    oks.windows(2)
        .filter(|w| w[1] > fault)
        .map(|w| w[1] - w[0])
        .max()
}
