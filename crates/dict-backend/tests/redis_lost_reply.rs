//! A commit whose `EXEC` reached Redis but whose reply never came back: the connection
//! closed in between (`CLIENT KILL`, a sentinel reconfiguring the server, a network cut).
//! Whether it was applied is unknown to the dict. A commit of sets and unsets is sent again
//! on a new connection (twice leaves what once does); one with an increment is not (it
//! would count twice) and is `WriteUncertain`, as is any commit whose second send fails.
//!
//! A TCP proxy in front of the test Redis (`DICT_TEST_REDIS_HOST`/`_PORT`, see
//! `redis_suite.rs`) forwards everything, except that at the first `EXEC` it stops passing
//! replies back, lets Redis apply the transaction, and closes the client's connection.
//! For Redis Cluster, the proxy stands in front of a one-node cluster of our own that
//! names the proxy as its address, so the cluster client's node connections go through it.

mod changes;
mod private_redis;
mod redis_env;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changes::{inc, set, txn};
use dict_backend::redis::RedisDict;
use dict_backend::{Change, CommitResult, Dict};
use dict_config::RedisParams;
use private_redis::PrivateRedis;
use redis_env::{env, unique_prefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the proxy does after it has cut the connection of the first `EXEC`.
#[derive(Clone, Copy, PartialEq)]
enum AfterCut {
    /// New connections reach Redis as before.
    PassThrough,
    /// New connections are refused (the master is gone, as after a failover).
    Refuse,
}

/// Starts the proxy in front of the test Redis; returns its port.
async fn lossy_proxy(after: AfterCut) -> u16 {
    let env = env();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    serve(listener, (env.host, env.port), after);
    port
}

/// Runs the proxy on `listener`, to `upstream`.
fn serve(listener: TcpListener, upstream: (String, u16), after: AfterCut) {
    let cut = Arc::new(AtomicBool::new(false));
    let was_cut = Arc::new(Notify::new());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((client, _)) = accepted else { return };
                    let server = TcpStream::connect(upstream.clone()).await.unwrap();
                    tokio::spawn(relay(client, server, cut.clone(), was_cut.clone()));
                }
                // closing the listener: connecting is refused from now on
                _ = was_cut.notified(), if after == AfterCut::Refuse => return,
            }
        }
    });
}

/// Copies both ways until the first `EXEC` of the whole proxy: that one is forwarded with
/// its replies muted, and the client's connection closed once Redis has run it.
async fn relay(client: TcpStream, server: TcpStream, cut: Arc<AtomicBool>, was_cut: Arc<Notify>) {
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let muted = Arc::new(AtomicBool::new(false));
    let replies = {
        let muted = muted.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = server_rd.read(&mut buf).await {
                if !muted.load(Ordering::SeqCst) && client_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut buf = vec![0u8; 65536];
    while let Ok(n @ 1..) = client_rd.read(&mut buf).await {
        let chunk = &buf[..n];
        let exec = chunk.windows(6).any(|w| w == b"EXEC\r\n");
        if exec && !cut.swap(true, Ordering::SeqCst) {
            muted.store(true, Ordering::SeqCst);
            server_wr.write_all(chunk).await.unwrap();
            was_cut.notify_one();
            // Redis runs the transaction and answers into the void.
            tokio::time::sleep(Duration::from_millis(200)).await;
            replies.abort();
            return; // dropping both halves closes the client's connection
        }
        if server_wr.write_all(chunk).await.is_err() {
            break;
        }
    }
    replies.abort();
}

fn dict(host: &str, port: u16, prefix: &str) -> RedisDict {
    RedisDict::connect(&RedisParams {
        host: host.into(),
        port,
        prefix: prefix.into(),
        timeout_msecs: 3000,
        ..RedisParams::default()
    })
    .expect("valid parameters")
}

/// The value of `priv/n` of user `u`.
async fn value(d: &RedisDict) -> Option<String> {
    d.lookup(b"priv/n", b"u")
        .await
        .expect("lookup works")
        .map(|v| String::from_utf8(v[0].clone()).unwrap())
}

/// Commits `change` (of `priv/n`) through a proxy that loses the EXEC's reply; returns the
/// answer, and the value Redis holds afterwards.
async fn lost_reply(change: Change, after: AfterCut) -> (CommitResult, Option<String>) {
    let prefix = unique_prefix();
    let d = dict("127.0.0.1", lossy_proxy(after).await, &prefix);
    // A connection already in use, as on a busy server.
    assert_eq!(value(&d).await, None);
    let result = d.commit(txn("u", vec![change])).await;
    // Read directly, not through the proxy.
    let env = env();
    let direct = dict(&env.host, env.port, &prefix);
    let stored = value(&direct).await;
    let clean = txn(
        "u",
        vec![Change::Unset {
            key: "priv/n".into(),
        }],
    );
    assert_eq!(direct.commit(clean).await, CommitResult::Ok);
    (result, stored)
}

fn is_uncertain(result: &CommitResult) -> bool {
    matches!(result, CommitResult::WriteUncertain(_))
}

/// An increment is never sent twice: it would count twice.
#[tokio::test]
async fn an_increment_whose_reply_is_lost_is_uncertain_and_not_sent_again() {
    let (result, stored) = lost_reply(inc("priv/n", 1), AfterCut::PassThrough).await;
    assert!(is_uncertain(&result), "{result:?}");
    assert_eq!(stored.as_deref(), Some("1"), "applied once");
}

#[tokio::test]
async fn an_increment_whose_reply_is_lost_is_uncertain_when_reconnecting_fails() {
    let (result, stored) = lost_reply(inc("priv/n", 1), AfterCut::Refuse).await;
    assert!(is_uncertain(&result), "{result:?}");
    assert_eq!(stored.as_deref(), Some("1"), "applied once");
}

/// Sets leave the same keys when run twice: sent again on a new connection, and `O`.
#[tokio::test]
async fn a_set_whose_reply_is_lost_is_sent_again() {
    let (result, stored) = lost_reply(set("priv/n", "7"), AfterCut::PassThrough).await;
    assert_eq!(result, CommitResult::Ok);
    assert_eq!(stored.as_deref(), Some("7"));
}

/// The reconnect fails, so the second send never happens; the first did run, so the
/// answer is `W`, never `F` (a clean CI run of the Sentinel kill test saw `F` here).
#[tokio::test]
async fn a_set_whose_reply_is_lost_is_uncertain_when_reconnecting_fails() {
    let (result, stored) = lost_reply(set("priv/n", "7"), AfterCut::Refuse).await;
    assert!(is_uncertain(&result), "{result:?}");
    assert_eq!(stored.as_deref(), Some("7"));
}

/// A one-node Redis Cluster (every slot on one master) that tells clients to reach it at
/// `announced`.
async fn one_node_cluster(announced: u16) -> PrivateRedis {
    let node = PrivateRedis::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-announce-ip",
        "127.0.0.1",
        "--cluster-announce-port",
        &announced.to_string(),
    ]);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", node.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the private cluster node answers");
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "cluster not ok: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

/// redis-rs' cluster client sends a request again by itself after a connection error;
/// for an increment it must not.
#[tokio::test]
async fn a_cluster_increment_whose_reply_is_lost_is_uncertain_and_not_sent_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().port();
    let node = one_node_cluster(proxy).await;
    serve(
        listener,
        ("127.0.0.1".into(), node.port),
        AfterCut::PassThrough,
    );
    let params = |port| RedisParams {
        cluster: vec![("127.0.0.1".into(), port)],
        prefix: "p/".into(),
        timeout_msecs: 3000,
        ..RedisParams::default()
    };
    let d = RedisDict::connect(&params(proxy)).unwrap();
    // A connection already in use, as on a busy server.
    assert_eq!(value(&d).await, None);
    let result = d.commit(txn("u", vec![inc("priv/n", 1)])).await;
    assert!(is_uncertain(&result), "{result:?}");
    // Read from the node itself: redis-rs would follow its announced address (the proxy).
    let mut direct = redis::Client::open(format!("redis://127.0.0.1:{}/", node.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg("p/u/n")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("1"), "applied once");
    // The dict goes on working (the proxy now passes everything).
    let result = d.commit(txn("u", vec![set("priv/n", "7")])).await;
    assert_eq!(result, CommitResult::Ok);
    assert_eq!(value(&d).await.as_deref(), Some("7"));
}
