//! Promises that hold whatever clients and backends do: every request answered within the
//! request timeout of being read, reads not overtaken by later commits, silent and idle
//! clients closed, too many connections refused at once, and a cap on the bytes held in
//! open transactions. The server runs in-process over the in-memory backend; a wrapper
//! slows it down or stalls it where a test needs that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dict_backend::{
    CommitResult, Dict, DictError, IterRow, IterateOptions, MemoryDict, Transaction,
};
use dict_server::budget::ServerBudget;
use dict_server::testing::InProcessServer;
use dict_server::{ConnectionSettings, Registry, ServerSettings};
use futures::stream::BoxStream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The memory dict, with every lookup taking `lookup_delay`, and every call hanging while
/// `stalled` is set (a backend that stopped answering).
struct SlowDict {
    inner: MemoryDict,
    lookup_delay: Duration,
    stalled: Arc<AtomicBool>,
}

impl SlowDict {
    async fn wait(&self) {
        while self.stalled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl Dict for SlowDict {
    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        self.wait().await;
        // Slow on the way to the data (a busy pool, a slow network): a commit that does
        // not wait for this lookup would get there first.
        tokio::time::sleep(self.lookup_delay).await;
        self.inner.lookup(key, username).await
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        self.inner.iterate(path, username, options)
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        self.wait().await;
        self.inner.commit(txn).await
    }
}

struct TestServer {
    server: InProcessServer,
    stalled: Arc<AtomicBool>,
}

impl std::ops::Deref for TestServer {
    type Target = InProcessServer;
    fn deref(&self) -> &InProcessServer {
        &self.server
    }
}

async fn start(settings: ServerSettings, lookup_delay: Duration) -> TestServer {
    let stalled = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    registry.insert(
        "mem",
        Arc::new(SlowDict {
            inner: MemoryDict::new(),
            lookup_delay,
            stalled: stalled.clone(),
        }),
    );
    TestServer {
        server: InProcessServer::start(registry, settings).await,
        stalled,
    }
}

fn settings(f: impl FnOnce(&mut ConnectionSettings)) -> ServerSettings {
    let mut s = ServerSettings::default();
    f(&mut s.connection);
    s
}

/// Reads lines until `n` final replies (lines starting with `+`, or any line in the
/// ordered style) have come; returns them with the time each arrived.
async fn replies(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    n: usize,
    async_style: bool,
) -> Vec<(String, Duration)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a reply within 30 s")
            .unwrap()
            .expect("a reply before EOF");
        if !async_style || line.starts_with('+') {
            out.push((line, start.elapsed()));
        }
    }
    out
}

async fn connect(
    server: &TestServer,
) -> (
    tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let (rd, wr) = UnixStream::connect(&server.path)
        .await
        .unwrap()
        .into_split();
    (BufReader::new(rd).lines(), wr)
}

fn field(line: &str, n: usize) -> &str {
    line.split('\t').nth(n).unwrap_or("")
}

/// Issue reproduction: with the backend stalled, three pipelined commits and a lookup all
/// get their answer within the request timeout of being read, not one timeout after the
/// other.
#[tokio::test]
async fn queued_requests_are_answered_within_the_timeout_of_being_read() {
    let timeout = Duration::from_millis(500);
    let server = start(settings(|c| c.request_timeout = timeout), Duration::ZERO).await;
    server.stalled.store(true, Ordering::Relaxed);
    let (mut lines, mut wr) = connect(&server).await;
    wr.write_all(
        b"H3\t2\t0\t\tmem\nB1\t\nS1\tshared/k/a\t1\nC1\nB2\t\nS2\tshared/k/a\t2\nC2\n\
          B3\t\nS3\tshared/k/a\t3\nC3\nLshared/k/a\t\n",
    )
    .await
    .unwrap();
    let got = replies(&mut lines, 4, true).await;
    for (line, at) in &got {
        assert!(
            *at < timeout + Duration::from_millis(300),
            "{line:?} came {at:?} after the requests were sent"
        );
    }
    // Async replies come as they are ready (all at the deadline here): by async id.
    let mut by_id: Vec<&(String, Duration)> = got.iter().collect();
    by_id.sort_by_key(|(l, _)| field(l, 0).to_owned());
    let results: Vec<&str> = by_id.iter().map(|(l, _)| &field(l, 1)[..1]).collect();
    // The first commit may have reached the backend: W. The later ones never started: F
    // (they are never applied), and so did the lookup.
    assert_eq!(results, ["W", "F", "F", "F"], "{got:?}");
    server.stalled.store(false, Ordering::Relaxed);
    // The backend is back: the next request succeeds at once.
    wr.write_all(b"Lshared/k/a\t\n").await.unwrap();
    let got = replies(&mut lines, 1, true).await;
    assert!(got[0].1 < Duration::from_millis(200), "{got:?}");
    // Only the first commit may have been applied (the wrapper let it through at the end).
    assert!(matches!(field(&got[0].0, 1), "O1" | "N"), "{got:?}");
}

/// Issue reproduction: a lookup read before a commit answers the value from before it,
/// even when the lookup is slow and the commit fast (Dovecot: `N`, `Oalpha`, `O1`).
#[tokio::test]
async fn a_read_is_not_overtaken_by_a_commit_sent_after_it() {
    let server = start(ServerSettings::default(), Duration::from_millis(100)).await;
    for minor in ["0", "2"] {
        let (mut lines, mut wr) = connect(&server).await;
        wr.write_all(
            format!(
                "H3\t{minor}\t0\t\tmem\nB1\t\nS1\tshared/kv/x/a\talpha\nC1\n\
                 Lshared/kv/x/none\t\nLshared/kv/x/a\t\nB2\t\nS2\tshared/kv/x/a\tnew\nC2\n\
                 Lshared/kv/x/a\t\nB3\t\nS3\tshared/kv/x/a\talpha\nC3\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let async_style = minor == "2";
        let got = replies(&mut lines, 6, async_style).await;
        let mut got: Vec<String> = got
            .into_iter()
            .map(|(l, _)| {
                let l = if async_style {
                    l.split_once('\t').unwrap().1.to_string()
                } else {
                    l
                };
                l.split('\t').next().unwrap().to_string()
            })
            .collect();
        if async_style {
            // Commit replies may come before or after the lookups: compare each kind.
            got.sort();
            assert_eq!(
                got,
                ["N", "O1", "O2", "O3", "Oalpha", "Onew"],
                "minor {minor}"
            );
        } else {
            assert_eq!(
                got,
                ["O1", "N", "Oalpha", "O2", "Onew", "O3"],
                "minor {minor}"
            );
        }
    }
}

/// A connection that never sends its hello is closed after the hello timeout.
#[tokio::test]
async fn a_silent_client_is_closed_after_the_hello_timeout() {
    let server = start(
        settings(|c| c.hello_timeout = Duration::from_millis(200)),
        Duration::ZERO,
    )
    .await;
    let mut s = UnixStream::connect(&server.path).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap();
    assert!(buf.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

/// A connection idle past the idle timeout is closed; one with a request pending is not.
#[tokio::test]
async fn an_idle_client_is_closed_after_the_idle_timeout() {
    let server = start(
        settings(|c| c.idle_timeout = Some(Duration::from_millis(300))),
        Duration::from_millis(600),
    )
    .await;
    let (mut lines, mut wr) = connect(&server).await;
    // The lookup takes longer than the idle timeout: pending, so not idle.
    wr.write_all(b"H3\t2\t0\t\tmem\nLshared/k/a\t\n")
        .await
        .unwrap();
    let got = replies(&mut lines, 1, true).await;
    assert_eq!(field(&got[0].0, 1), "N");
    let started = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("closed within 5 s")
        .unwrap();
    assert_eq!(eof, None);
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(200) && idle < Duration::from_secs(2),
        "{idle:?}"
    );
}

/// Past max_connections a new client is closed at once instead of waiting in the backlog,
/// and is served again once a slot is free.
#[tokio::test]
async fn connections_past_the_limit_are_refused_at_once() {
    let mut s = settings(|c| c.hello_timeout = Duration::from_secs(60));
    s.max_connections = 2;
    let server = start(s, Duration::ZERO).await;
    let silent1 = UnixStream::connect(&server.path).await.unwrap();
    let silent2 = UnixStream::connect(&server.path).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut lines, mut wr) = connect(&server).await;
    let _ = wr.write_all(b"H3\t2\t0\t\tmem\nLshared/k/a\t\n").await;
    let eof = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
        .await
        .expect("refused promptly, not left hanging");
    assert!(matches!(eof, Ok(None) | Err(_)), "{eof:?}");
    drop((silent1, silent2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut lines, mut wr) = connect(&server).await;
    wr.write_all(b"H3\t2\t0\t\tmem\nLshared/k/a\t\n")
        .await
        .unwrap();
    assert_eq!(field(&replies(&mut lines, 1, true).await[0].0, 1), "N");
}

/// A connection buffering more than its cap in open transactions is closed; another
/// connection goes on, and the server-wide cap holds across connections.
#[tokio::test]
async fn open_transactions_are_capped_in_bytes() {
    let budget = ServerBudget::new(3 << 20);
    let server = start(
        settings(|c| {
            c.max_transaction_bytes = 2 << 20;
            c.server_budget = budget.clone();
        }),
        Duration::ZERO,
    )
    .await;
    let value = "v".repeat(60_000);
    let (mut lines, mut wr) = connect(&server).await;
    let mut input = String::from("H3\t2\t0\t\tmem\nB1\t\n");
    for i in 0..100 {
        input.push_str(&format!("S1\tshared/k/{i}\t{value}\n"));
    }
    // The write may fail once the server has closed its end.
    let _ = wr.write_all(input.as_bytes()).await;
    let eof = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("closed within 5 s");
    assert!(matches!(eof, Ok(None) | Err(_)), "{eof:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(budget.used(), 0, "a closed connection gives its bytes back");

    // Two connections of 1.6 MB each stay under their own cap but not under the server's.
    let (mut a_lines, mut a) = connect(&server).await;
    let (mut b_lines, mut b) = connect(&server).await;
    let mut input = String::from("H3\t2\t0\t\tmem\nB1\t\n");
    for i in 0..27 {
        input.push_str(&format!("S1\tshared/k/{i}\t{value}\n"));
    }
    a.write_all(input.as_bytes()).await.unwrap();
    a.write_all(b"Lshared/k/none\t\n").await.unwrap();
    assert_eq!(field(&replies(&mut a_lines, 1, true).await[0].0, 1), "N");
    let _ = b.write_all(input.as_bytes()).await;
    let eof = tokio::time::timeout(Duration::from_secs(5), b_lines.next_line())
        .await
        .expect("closed within 5 s");
    assert!(matches!(eof, Ok(None) | Err(_)), "{eof:?}");
    // The first connection commits what it buffered.
    a.write_all(b"C1\n").await.unwrap();
    assert_eq!(field(&replies(&mut a_lines, 1, true).await[0].0, 1), "O1");
    assert_eq!(budget.used(), 0);
}
