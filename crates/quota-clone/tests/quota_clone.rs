//! quota-clone: the exact bytes on the wire (compared with what Dovecot's plugin sends,
//! byte for byte), the unset order, coalescing, and the CLI's sync summary.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dict_backend::MemoryDict;
use dict_client::{Client, ClientOptions, Protocol};
use dict_server::testing::InProcessServer;
use dict_server::{Registry, ServerSettings};
use quota_clone::{Coalescer, FlushEvent, QuotaClone, Usage, UsageWriter, WriteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// A fake dict server: reads each connection until it has seen `C<id>\n`, records the bytes,
/// and answers the commit as `reply(user)` says (`None`: close without answering).
struct Capture {
    path: PathBuf,
    bytes: Arc<Mutex<Vec<Vec<u8>>>>,
    _dir: tempfile::TempDir,
}

fn capture(reply: fn(&str) -> Option<&'static str>) -> Capture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let log = bytes.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut async_id = 0;
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // Answer each complete commit in the buffer not answered yet.
                    let text = String::from_utf8_lossy(&seen).into_owned();
                    let commits: Vec<&str> = text.lines().filter(|l| l.starts_with('C')).collect();
                    while async_id < commits.len() && text.ends_with('\n') {
                        let id = &commits[async_id][1..];
                        let user = text
                            .lines()
                            .find_map(|l| l.strip_prefix(&format!("B{id}\t")))
                            .unwrap_or("")
                            .split('\t')
                            .next()
                            .unwrap_or("");
                        async_id += 1;
                        match reply(user) {
                            Some(letter) => {
                                let line =
                                    format!("*{async_id}\n+{async_id}\t{letter}{id}\t1\t2\t3\t4\n");
                                stream.write_all(line.as_bytes()).await.unwrap();
                            }
                            None => {
                                log.lock().unwrap().push(seen.clone());
                                return;
                            }
                        }
                    }
                }
                log.lock().unwrap().push(seen);
            });
        }
    });
    Capture {
        path,
        bytes,
        _dir: dir,
    }
}

fn ok(_: &str) -> Option<&'static str> {
    Some("O")
}

fn opts(protocol: Protocol) -> ClientOptions {
    ClientOptions {
        protocol,
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

async fn captured(c: &Capture) -> Vec<Vec<u8>> {
    // The client closes an idle connection at once; wait for the capture to be filed.
    for _ in 0..100 {
        if !c.bytes.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.bytes.lock().unwrap().clone()
}

#[tokio::test]
async fn wire_bytes_equal_the_dovecot_plugin() {
    let c = capture(ok);
    let qc = QuotaClone::open(
        &format!("proxy:{}:sq", c.path.display()),
        opts(Protocol::V3),
    )
    .unwrap();
    qc.write(
        "qc1",
        Usage {
            bytes: 38,
            messages: 1,
        },
    )
    .await
    .unwrap();
    // Observed from Dovecot 2.3.19.1's quota_clone.
    let plugin =
        b"H3\t2\t0\t\tsq\nB1\tqc1\nS1\tpriv/quota/storage\t38\nS1\tpriv/quota/messages\t1\nC1\n";
    assert_eq!(captured(&c).await, [plugin.to_vec()]);
}

#[tokio::test]
async fn unset_sends_both_unsets_before_the_sets() {
    let c = capture(ok);
    let qc = QuotaClone::open(
        &format!("proxy:{}:sq", c.path.display()),
        opts(Protocol::V3),
    )
    .unwrap()
    .with_unset(true);
    qc.write(
        "u",
        Usage {
            bytes: 1234,
            messages: 5,
        },
    )
    .await
    .unwrap();
    let expected = b"H3\t2\t0\t\tsq\nB1\tu\nU1\tpriv/quota/storage\nU1\tpriv/quota/messages\nS1\tpriv/quota/storage\t1234\nS1\tpriv/quota/messages\t5\nC1\n";
    assert_eq!(captured(&c).await, [expected.to_vec()]);
}

#[tokio::test]
async fn major_4_sends_one_batch() {
    let c = capture(ok);
    let qc = QuotaClone::open(
        &format!("proxy:{}:sq", c.path.display()),
        opts(Protocol::V4),
    )
    .unwrap();
    qc.write(
        "u",
        Usage {
            bytes: 0,
            messages: 0,
        },
    )
    .await
    .unwrap();
    let expected =
        b"H4\t0\t0\t\tsq\nB1\tu\t0\nS1\tpriv/quota/storage\t0\nS1\tpriv/quota/messages\t0\nC1\n";
    assert_eq!(captured(&c).await, [expected.to_vec()]);
}

#[tokio::test]
async fn results_are_typed() {
    let c = capture(|user| match user {
        "bad" => Some("F"),
        "lost" => None,
        _ => Some("O"),
    });
    let qc = QuotaClone::open(
        &format!("proxy:{}:sq", c.path.display()),
        opts(Protocol::V3),
    )
    .unwrap();
    assert_eq!(qc.write("good", Usage::default()).await, Ok(()));
    assert!(matches!(
        qc.write("bad", Usage::default()).await,
        Err(WriteError::Failed(_))
    ));
    let lost = qc.write("lost", Usage::default()).await.unwrap_err();
    assert!(lost.is_uncertain(), "{lost:?}");
    assert_eq!(
        lost.to_string(),
        "Write was unconfirmed (timeout or disconnect): Connection closed"
    );
    assert_eq!(
        qc.write("", Usage::default()).await,
        Err(WriteError::EmptyUser)
    );
    let nowhere = QuotaClone::open("proxy:/nonexistent/dict.sock:sq", opts(Protocol::V3)).unwrap();
    assert!(
        matches!(nowhere.write("u", Usage::default()).await, Err(WriteError::Failed(e)) if e.contains("net_connect_unix"))
    );
}

/// Records writes; fails the first `fail_first` of them.
#[derive(Clone, Default)]
struct Recorder {
    writes: Arc<Mutex<Vec<(String, Usage, tokio::time::Instant)>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl UsageWriter for Recorder {
    async fn write_usage(&self, user: &str, usage: Usage) -> Result<(), WriteError> {
        self.writes
            .lock()
            .unwrap()
            .push((user.to_string(), usage, tokio::time::Instant::now()));
        let mut fail = self.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(WriteError::WriteUncertain("Connection closed".into()));
        }
        Ok(())
    }
}

fn usage(n: u64) -> Usage {
    Usage {
        bytes: n * 100,
        messages: n,
    }
}

#[tokio::test(start_paused = true)]
async fn coalescer_writes_the_latest_usage_at_most_every_interval() {
    let rec = Recorder::default();
    let start = tokio::time::Instant::now();
    let co = Coalescer::new(rec.clone(), Duration::from_secs(10));
    co.update("alice", usage(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    co.update("alice", usage(2));
    co.update("bob", usage(7));
    tokio::time::sleep(Duration::from_secs(4)).await;
    co.update("alice", usage(3));
    assert!(
        rec.writes.lock().unwrap().is_empty(),
        "nothing before the timer fires"
    );
    tokio::time::sleep(Duration::from_millis(5500)).await; // t = 10.5
    {
        let writes = rec.writes.lock().unwrap();
        let alice: Vec<_> = writes.iter().filter(|w| w.0 == "alice").collect();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].1, usage(3));
        assert_eq!(alice[0].2 - start, Duration::from_secs(10));
        assert!(
            writes.iter().all(|w| w.0 != "bob"),
            "bob's timer started at 1 s"
        );
    }
    co.update("alice", usage(4)); // t = 10.5: written at the next tick, t = 20
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = rec.writes.lock().unwrap().clone();
    let times: Vec<(String, Usage, Duration)> = writes
        .into_iter()
        .map(|(u, us, t)| (u, us, t - start))
        .collect();
    assert_eq!(
        times,
        [
            ("alice".to_string(), usage(3), Duration::from_secs(10)),
            ("bob".to_string(), usage(7), Duration::from_secs(11)),
            ("alice".to_string(), usage(4), Duration::from_secs(20)),
        ]
    );
    assert_eq!(
        co.active_users(),
        0,
        "timers stop after a tick with nothing new"
    );
}

#[tokio::test(start_paused = true)]
async fn coalescer_retries_failed_writes_and_flushes_on_demand() {
    let rec = Recorder::default();
    *rec.fail_first.lock().unwrap() = 1;
    let (co, mut events) = Coalescer::with_events(rec.clone(), Duration::from_secs(10));
    co.update("alice", usage(1));
    tokio::time::sleep(Duration::from_secs(11)).await;
    let first: FlushEvent = events.recv().await.unwrap();
    assert!(first.result.unwrap_err().is_uncertain());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = events.recv().await.unwrap();
    assert_eq!((second.usage, second.result), (usage(1), Ok(())));
    // flush_all: the plugin's flush at user deinit, without waiting for the timer.
    co.update("bob", usage(2));
    co.update("carol", usage(3));
    let mut flushed = co.flush_all().await;
    flushed.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(
        flushed
            .iter()
            .map(|e| (e.user.as_str(), e.usage))
            .collect::<Vec<_>>(),
        [("bob", usage(2)), ("carol", usage(3))]
    );
    assert_eq!(co.flush_user("bob").await, None, "nothing pending any more");
    assert_eq!(rec.writes.lock().unwrap().len(), 4);
}

async fn our_server() -> InProcessServer {
    let mut registry = Registry::new();
    registry.insert("quota", Arc::new(MemoryDict::new()));
    InProcessServer::start(registry, ServerSettings::default()).await
}

async fn stored(client: &Client, user: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (
        client.lookup("priv/quota/storage", user).await.unwrap(),
        client.lookup("priv/quota/messages", user).await.unwrap(),
    )
}

#[tokio::test]
async fn coalescer_against_our_server() {
    let server = our_server().await;
    let client = Client::open(
        &format!("proxy:{}:quota", server.path.display()),
        opts(Protocol::V3),
    )
    .unwrap();
    let (co, mut events) =
        Coalescer::with_events(QuotaClone::new(client.clone()), Duration::from_millis(200));
    for n in 1..=50 {
        co.update("alice", usage(n));
        co.update("bob", usage(n + 1000));
    }
    let a = events.recv().await.unwrap();
    let b = events.recv().await.unwrap();
    assert!(a.result.is_ok() && b.result.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events.try_recv().is_err(), "one write per user");
    assert_eq!(
        stored(&client, "alice").await,
        (Some(b"5000".to_vec()), Some(b"50".to_vec()))
    );
    assert_eq!(
        stored(&client, "bob").await,
        (Some(b"105000".to_vec()), Some(b"1050".to_vec()))
    );
    server.stop().await;
}

async fn cli(args: &[&str], stdin: &str) -> (String, String, i32) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quota-clone"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_set_and_sync_write_through_our_server() {
    let server = our_server().await;
    let uri = format!("proxy:{}:quota", server.path.display());
    let client = Client::open(&uri, opts(Protocol::V3)).unwrap();
    let (out, err, code) = cli(&["--dict", &uri, "set", "alice", "1234", "5"], "").await;
    assert_eq!((out.as_str(), code), ("", 0), "{err}");
    assert_eq!(
        stored(&client, "alice").await,
        (Some(b"1234".to_vec()), Some(b"5".to_vec()))
    );

    let input: String = (0..40)
        .map(|i| format!("user{i}\t{}\t{i}\n", i * 1000))
        .collect();
    let (out, err, code) = cli(&["--dict", &uri, "sync", "--jobs", "4"], &input).await;
    assert_eq!(
        (out.as_str(), code),
        ("written: 40, failed: 0, uncertain: 0\n", 0),
        "{err}"
    );
    assert_eq!(
        stored(&client, "user39").await,
        (Some(b"39000".to_vec()), Some(b"39".to_vec()))
    );

    // --from-doveadm with a stand-in doveadm printing mailbox status rows.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("doveadm");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$*\" = \"-c /etc/x.conf -f tab mailbox status -A vsize messages *\" ] || { echo \"bad args: $*\" >&2; exit 64; }\n\
         printf 'Username\\tmailbox\\tmessages\\tvsize\\nann\\tINBOX\\t2\\t3000\\nann\\tSent\\t1\\t500\\nbo\\tINBOX\\t0\\t0\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = [
        "--dict",
        &uri,
        "sync",
        "--from-doveadm",
        "--doveadm",
        fake.to_str().unwrap(),
        "--doveadm-config",
        "/etc/x.conf",
    ];
    let (out, err, code) = cli(&args, "").await;
    assert_eq!(
        (out.as_str(), code),
        ("written: 2, failed: 0, uncertain: 0\n", 0),
        "{err}"
    );
    assert_eq!(
        stored(&client, "ann").await,
        (Some(b"3500".to_vec()), Some(b"3".to_vec()))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sync_summary_and_exit_codes() {
    let c = capture(|user| match user {
        "bad" => Some("F"),
        "lost" => None,
        _ => Some("O"),
    });
    let uri = format!("proxy:{}:sq", c.path.display());
    let input = "a\t1\t1\nbad\t2\t2\nnot a line\nlost\t3\t3\nb\t4\t4\n";
    let (out, err, code) = cli(&["--dict", &uri, "sync", "--jobs", "1"], input).await;
    assert_eq!(
        out, "written: 2, failed: 1, uncertain: 1, invalid input: 1\n",
        "{err}"
    );
    assert_eq!(code, 75);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("lost: Write was unconfirmed"), "{err}");

    let (out, _, code) = cli(&["--dict", &uri, "sync", "-"], "a\t1\t1\nbroken\n").await;
    assert_eq!(
        (out.as_str(), code),
        (
            "written: 1, failed: 0, uncertain: 0, invalid input: 1\n",
            65
        )
    );
    let (_, _, code) = cli(&["sync"], "").await;
    assert_eq!(code, 64, "--dict is required");
    let (_, _, code) = cli(&["--dict", &uri, "set", "u", "notanumber", "1"], "").await;
    assert_eq!(code, 64);
    let (_, err, code) = cli(&["--dict", &uri, "set", "bad", "1", "1"], "").await;
    assert_eq!(code, 75, "{err}");
}
