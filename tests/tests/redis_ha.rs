//! The Redis dict on Redis Sentinel and Redis Cluster (tests/scripts/redis-ha.sh, started by
//! services.sh as service `redis-ha`), under load through our server: a master killed, a
//! slot range migrated. With `wait_replicas=1` no acknowledged commit may be lost, and
//! every request is answered within the timeout. Prints the figures per shape: failover
//! gap (last `O` before the fault, first `O` after it) and acknowledged commits lost.
//!
//! The tests take turns (one shape changes under them); each leaves its shape whole again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dict_tests::faults::{MARGIN, REQUEST_TIMEOUT};
use dict_tests::load::{Load, LoadShape};
use dict_tests::redis_ha::{
    cli, cluster_nodes, cluster_whole, connected_replicas, failover_gap, key_names, kill, ports,
    replica_of, restart, sentinel_master, wait_until, ClusterNode,
};
use dict_tests::{service_env, unique, Backend, DictServer};

static TURN: Mutex<()> = Mutex::new(());

/// Lookup and commit timeout of the dict (below the server's request timeout), and the
/// `WAIT` for one replica inside it.
const DICT_PARAMS: &str = "timeout_msecs=900:wait_replicas=1:wait_timeout_msecs=500";

fn server(uri: &str) -> DictServer {
    let prefix = unique("ha") + "/";
    let mut server = DictServer::start_with_dict_and_toml(
        Backend::Redis,
        "redis",
        &format!("{uri}:prefix={prefix}:{DICT_PARAMS}"),
        &format!(
            "[server]\nrequest_timeout_ms = {}\n",
            REQUEST_TIMEOUT.as_millis()
        ),
    );
    server.redis_prefix = prefix;
    server
}

fn sentinel_server() -> DictServer {
    server(&format!(
        "redis:sentinels={}:master_name={}",
        service_env("DICT_TEST_REDIS_SENTINELS"),
        service_env("DICT_TEST_REDIS_MASTER_NAME")
    ))
}

fn cluster_server() -> DictServer {
    server(&format!(
        "redis:cluster={}",
        service_env("DICT_TEST_REDIS_CLUSTER")
    ))
}

fn master_ports() -> Vec<u16> {
    cluster_nodes()
        .into_iter()
        .filter(|n| n.master)
        .map(|n| n.port)
        .collect()
}

/// Load for a while, `fault` in the middle (returns when the shape is whole again), then
/// the checks of every fault test; prints and returns the failover gap.
fn failover_under_load(
    shape: &str,
    server: &DictServer,
    fault: impl FnOnce() -> (Instant, Instant),
    stored_on: impl FnOnce() -> Vec<u16>,
) {
    let scope = unique("ha");
    let load = Load::start(server, &scope, LoadShape::default());
    std::thread::sleep(Duration::from_secs(1));
    let (fault_at, whole_at) = fault();
    std::thread::sleep(Duration::from_millis(1500));
    let report = load.finish();
    std::thread::sleep(Duration::from_millis(500));
    let stored = key_names(&stored_on(), &format!("{}kv/{scope}/", server.redis_prefix));
    let gap = failover_gap(&report, fault_at);
    eprintln!(
        "[{shape}] commits not answered O after the shape was whole: {:?}",
        report.examples(|o| o.commit && o.sent > whole_at && o.reply.is_some_and(|r| r.0 != 'O'))
    );
    let figures = report.check(
        shape,
        &stored,
        REQUEST_TIMEOUT + MARGIN,
        Some((whole_at, Duration::from_secs(2))),
    );
    eprintln!(
        "failover figures [{shape}]: gap (longest without an O) {} ms; shape whole \
         again after {} ms; acknowledged {}, lost {}",
        gap.map_or("none".into(), |g| g.as_millis().to_string()),
        (whole_at - fault_at).as_millis(),
        figures.acknowledged,
        figures.lost
    );
}

/// The master the sentinels name, once its replica is connected.
fn sentinel_master_with_replica() -> u16 {
    let master = sentinel_master().expect("the sentinels name a master");
    wait_until(
        "the master has its replica",
        Duration::from_secs(20),
        || connected_replicas(master) == 1,
    );
    master
}

#[test]
fn sentinel_master_killed_under_load_loses_no_acknowledged_commit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let old = sentinel_master_with_replica();
    let server = sentinel_server();
    failover_under_load(
        "redis sentinel: master SIGKILL",
        &server,
        || {
            let killed = kill(old);
            let promoted = wait_until(
                "sentinels promote the replica",
                Duration::from_secs(20),
                || sentinel_master().is_some_and(|p| p != old),
            );
            eprintln!(
                "failover figures [redis sentinel]: the sentinels named the new master {} ms \
                 after the kill",
                (promoted - killed).as_millis()
            );
            let new = sentinel_master().expect("a new master");
            // with wait_replicas=1 commits answer W until the new master has a replica:
            // the old one, restarted. The sentinels would turn it into one by themselves,
            // but only after up to 10 s (their INFO period for a replica) plus 8 s (how
            // long a wrong role must last before they correct it): a CI run once took over
            // 20 s. An admin who restarts a failed master points it at the new one; so does
            // the test, and the sentinels find it where they expect it.
            restart(old);
            replica_of(old, new);
            let whole = wait_until(
                "old master rejoins as replica",
                Duration::from_secs(30),
                || connected_replicas(new) == 1,
            );
            (killed, whole)
        },
        || vec![sentinel_master().expect("a master")],
    );
    assert!(
        server.log().contains("reconnected"),
        "the server followed the failover:\n{}",
        server.log()
    );
}

/// `SENTINEL FAILOVER`: the old master stays up and is demoted to a replica; connections to
/// it must not keep writing there (`READONLY`), but move to the new master.
#[test]
fn sentinel_switchover_under_load_loses_no_acknowledged_commit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let old = sentinel_master_with_replica();
    let server = sentinel_server();
    failover_under_load(
        "redis sentinel: SENTINEL FAILOVER",
        &server,
        || {
            let sentinel = ports("DICT_TEST_REDIS_SENTINELS")[0];
            let started = Instant::now();
            let reply = cli(
                sentinel,
                &[
                    "SENTINEL",
                    "FAILOVER",
                    &service_env("DICT_TEST_REDIS_MASTER_NAME"),
                ],
            );
            assert_eq!(reply, "OK", "SENTINEL FAILOVER");
            wait_until(
                "the sentinels name the new master",
                Duration::from_secs(20),
                || sentinel_master().is_some_and(|p| p != old),
            );
            let new = sentinel_master().expect("a new master");
            // the sentinels demote the old master by themselves here, about 11 s later
            // (see the kill test for why), at worst about 18 s plus the sync
            let whole = wait_until(
                "old master syncs as replica",
                Duration::from_secs(40),
                || connected_replicas(new) == 1,
            );
            (started, whole)
        },
        || vec![sentinel_master().expect("a master")],
    );
}

#[test]
fn cluster_master_killed_under_load_loses_no_acknowledged_commit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    wait_until(
        "the cluster is whole",
        Duration::from_secs(20),
        cluster_whole,
    );
    let server = cluster_server();
    let victim = master_ports()[0];
    failover_under_load(
        "redis cluster: master SIGKILL",
        &server,
        || {
            let killed = kill(victim);
            wait_until("a replica takes over", Duration::from_secs(20), || {
                let masters = master_ports();
                masters.len() == 3 && !masters.contains(&victim)
            });
            let promoted = Instant::now();
            eprintln!(
                "failover figures [redis cluster]: a replica took over {} ms after the kill",
                (promoted - killed).as_millis()
            );
            restart(victim);
            (
                killed,
                wait_until(
                    "the cluster is whole",
                    Duration::from_secs(20),
                    cluster_whole,
                ),
            )
        },
        master_ports,
    );
}

#[test]
fn cluster_slot_migration_under_load_loses_no_acknowledged_commit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    wait_until(
        "the cluster is whole",
        Duration::from_secs(20),
        cluster_whole,
    );
    let server = cluster_server();
    let masters: Vec<_> = cluster_nodes().into_iter().filter(|n| n.master).collect();
    let (a, b) = (&masters[0], &masters[1]);
    // 2000 of A's slots to B and back again: keys of those slots move with MIGRATE while
    // the load writes them (ASK, then MOVED)
    let reshard = |from: &ClusterNode, to: &ClusterNode| {
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", from.port)])
            .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
            .args(["--cluster-slots", "2000", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    failover_under_load(
        "redis cluster: 2000 slots migrated and back",
        &server,
        || {
            let start = Instant::now();
            reshard(a, b);
            wait_until("the cluster agrees", Duration::from_secs(20), cluster_whole);
            reshard(b, a);
            (start, Instant::now())
        },
        master_ports,
    );
}
