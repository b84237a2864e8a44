//! A commit whose `EXEC` reached Redis but whose reply never came back: the connection
//! closed in between (`CLIENT KILL`, a sentinel reconfiguring the server, a network cut).
//! Whether it was applied is unknown to the dict, so the answer is `WriteUncertain`, and it
//! is never sent a second time: an increment applied twice counts twice, and a set sent
//! again can overwrite a later commit of another connection.
//!
//! A TCP proxy in front of the test Redis (`DICT_TEST_REDIS_HOST`/`_PORT`, see
//! `redis_suite.rs`) forwards everything, except that at the first `EXEC` it stops passing
//! replies back, lets Redis apply the transaction, and closes the client's connection.

mod changes;
mod redis_env;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use changes::{inc, txn};
use dict_backend::redis::RedisDict;
use dict_backend::{Change, CommitResult, Dict};
use dict_config::RedisParams;
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

/// Starts the proxy; returns its port.
async fn lossy_proxy(after: AfterCut) -> u16 {
    let env = env();
    let upstream = (env.host, env.port);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
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
    port
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

/// The value of `priv/n` of user `u`, as a number.
async fn counter(d: &RedisDict) -> Option<String> {
    d.lookup(b"priv/n", b"u")
        .await
        .expect("lookup works")
        .map(|v| String::from_utf8(v[0].clone()).unwrap())
}

async fn lost_reply(after: AfterCut) {
    let prefix = unique_prefix();
    let d = dict("127.0.0.1", lossy_proxy(after).await, &prefix);
    // A connection already in use, as on a busy server.
    assert_eq!(counter(&d).await, None);
    let result = d.commit(txn("u", vec![inc("priv/n", 1)])).await;
    assert!(
        matches!(result, CommitResult::WriteUncertain(_)),
        "the EXEC reached Redis and its reply was lost: {result:?}"
    );
    // Redis applied it, once. Read directly, not through the proxy.
    let env = env();
    let direct = dict(&env.host, env.port, &prefix);
    assert_eq!(counter(&direct).await.as_deref(), Some("1"));
    let clean = txn(
        "u",
        vec![Change::Unset {
            key: "priv/n".into(),
        }],
    );
    assert_eq!(direct.commit(clean).await, CommitResult::Ok);
}

#[tokio::test]
async fn a_lost_reply_is_uncertain_and_the_commit_is_not_sent_again() {
    lost_reply(AfterCut::PassThrough).await;
}

#[tokio::test]
async fn a_lost_reply_is_uncertain_also_when_reconnecting_fails() {
    lost_reply(AfterCut::Refuse).await;
}
