//! The client against scripted fake servers: reply styles, reply matching, failures,
//! timeouts and reconnects.

mod common;

use std::time::Duration;

use common::FakeServer;
use dict_client::{Client, ClientOptions, CommitResult, Error, IterRow, IterateFlags, Protocol};
use futures::{StreamExt, TryStreamExt};

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn row(key: &str, values: &[&str]) -> IterRow {
    IterRow {
        key: key.into(),
        values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    }
}

/// Answers every command in order with bare lines, as a 2.3 server does for hello minor 0.
async fn ordered_server(mut s: common::Session) {
    while let Some(line) = s.line().await {
        let reply = match line.as_bytes()[0] {
            b'L' if line.starts_with("Lshared/multi") => "Ma\u{1}1tb\u{1}tc\n".to_string(),
            b'L' if line.starts_with("Lshared/none") => "N\n".to_string(),
            b'L' => format!("O{}\n", &line[1..line.find('\t').unwrap()]),
            b'I' => "Oshared/d/a\t1\nOshared/d/b\tx\u{1}ty\n\n".to_string(),
            b'C' => format!("O{}\n", &line[1..]),
            _ => continue,
        };
        s.send(&reply).await;
    }
}

#[tokio::test]
async fn plain_in_order_replies_without_async_ids() {
    let server = FakeServer::start(ordered_server);
    let client = Client::open(&server.uri("plain"), opts()).unwrap();
    let mut tx = client.transaction("u1");
    tx.set("shared/k", "v").unwrap();
    let (a, none, multi, rows, commit) = tokio::join!(
        client.lookup("shared/a", ""),
        client.lookup("shared/none", ""),
        client.lookup_values("shared/multi", ""),
        client
            .iterate("shared/d/", "", IterateFlags::empty(), 0)
            .try_collect::<Vec<_>>(),
        tx.commit(),
    );
    assert_eq!(a.unwrap(), Some(b"shared/a".to_vec()));
    assert_eq!(none.unwrap(), None);
    assert_eq!(multi.unwrap(), Some(vec![b"a\tb".to_vec(), b"c".to_vec()]));
    assert_eq!(
        rows.unwrap(),
        [row("shared/d/a", &["1"]), row("shared/d/b", &["x\ty"])]
    );
    assert_eq!(commit, CommitResult::Ok);
    let lines = server.lines_of(0);
    assert_eq!(lines[0], "H3\t2\t0\t\tplain");
    for expected in [
        "Lshared/a\t",
        "Lshared/none\t",
        "Lshared/multi\t",
        "I0\t0\tshared/d/\t",
        "B1\tu1",
        "S1\tshared/k\tv",
        "C1",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:?}"
        );
    }
}

#[tokio::test]
async fn out_of_order_async_replies_are_matched_by_id() {
    let server = FakeServer::start(|mut s| async move {
        s.line().await; // hello
        s.lines(5).await; // L a, L b, B, S, C
        s.send("*1\n*2\n*3\n").await;
        // The commit first, then b, then a; timing fields on some, not on others.
        s.send("+3\tO1\t1\t2\t3\t4\n+2\tOvalue-b\n+1\tOvalue-a\t1700000000\t5\t1700000000\t9\n")
            .await;
        s.until_eof().await;
    });
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    let mut tx = client.transaction("");
    tx.set("shared/x", "1").unwrap();
    // Sent in this order: L a, L b, (B S) C.
    let a = client.lookup("shared/a", "");
    let b = client.lookup("shared/b", "");
    let (a, b, c) = tokio::join!(a, b, tx.commit());
    assert_eq!(a.unwrap().unwrap(), b"value-a");
    assert_eq!(b.unwrap().unwrap(), b"value-b");
    assert_eq!(c, CommitResult::Ok);
}

#[tokio::test]
async fn interleaved_iterations_and_iteration_failure() {
    let server = FakeServer::start(|mut s| async move {
        s.lines(3).await;
        s.send("*1\n*2\n+2\tOshared/b/1\tB1\n+1\tOshared/a/1\tA1\n+2\tOshared/b/2\tB2\n+1\tOshared/a/2\tA2\n").await;
        s.send("+2\tFiterate\tfailed\t1\t2\t3\t4\n+1\t\t1\t2\t3\t4\n")
            .await;
        s.until_eof().await;
    });
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    let mut a = client.iterate("shared/a/", "", IterateFlags::RECURSE, 0);
    let mut b = client.iterate("shared/b/", "", IterateFlags::NO_VALUE, 10);
    // Start both before reading either.
    let (first_a, first_b) = tokio::join!(a.next(), b.next());
    assert_eq!(first_a.unwrap().unwrap(), row("shared/a/1", &["A1"]));
    assert_eq!(first_b.unwrap().unwrap(), row("shared/b/1", &["B1"]));
    assert_eq!(
        a.try_collect::<Vec<_>>().await.unwrap(),
        [row("shared/a/2", &["A2"])]
    );
    assert_eq!(b.next().await.unwrap().unwrap(), row("shared/b/2", &["B2"]));
    assert_eq!(
        b.next().await.unwrap(),
        Err(Error::Server("iterate\tfailed".into()))
    );
    assert!(b.next().await.is_none());
    let lines = server.all_lines();
    assert_eq!(lines[1..], ["I1\t0\tshared/a/\t", "I8\t10\tshared/b/\t"]);
}

#[tokio::test]
async fn server_closing_mid_commit_is_write_uncertain() {
    let server = FakeServer::start(|mut s| async move {
        s.lines(5).await; // hello, L, B, S, C
        s.send("*1\n*2\n").await;
        // Close without answering either.
    });
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    let mut tx = client.transaction("alice");
    tx.set("priv/quota/storage", "1").unwrap();
    let (lookup, commit) = tokio::join!(client.lookup("shared/a", ""), async {
        tokio::task::yield_now().await;
        tx.commit().await
    });
    assert_eq!(lookup, Err(Error::Closed));
    assert_eq!(
        commit,
        CommitResult::WriteUncertain("Connection closed".into())
    );
}

#[tokio::test]
async fn transaction_broken_before_commit_fails_without_sending_it() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let server = FakeServer::start(move |mut s| {
        let done = closed_tx.lock().unwrap().take();
        async move {
            if s.index == 0 {
                s.lines(3).await; // hello, B, S
                drop(s);
                done.unwrap().send(()).unwrap();
            } else {
                s.until_eof().await;
            }
        }
    });
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    let mut tx = client.transaction("alice");
    tx.set("priv/k", "v").unwrap();
    closed_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Later changes are dropped, and the commit fails locally.
    tx.set("priv/k2", "v").unwrap();
    assert_eq!(
        tx.commit().await,
        CommitResult::Failed("Connection closed".into())
    );
    assert_eq!(
        server.all_lines(),
        ["H3\t2\t0\t\tq", "B1\talice", "S1\tpriv/k\tv"]
    );
}

#[tokio::test]
async fn request_timeout_resends_lookups_and_makes_commits_uncertain() {
    let server = FakeServer::start(|mut s| async move {
        if s.index == 0 {
            // Read everything, answer nothing.
            s.until_eof().await;
        } else {
            s.line().await;
            let l = s.line().await.unwrap();
            assert_eq!(l, "Lshared/a\t");
            s.send("*1\n+1\tOlate\t1\t2\t3\t4\n").await;
            s.until_eof().await;
        }
    });
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..opts()
    };
    let client = Client::open(&server.uri("q"), options).unwrap();
    let mut tx = client.transaction("");
    tx.inc("shared/n", 1).unwrap();
    let started = std::time::Instant::now();
    let (lookup, commit) = tokio::join!(client.lookup("shared/a", ""), tx.commit());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(lookup.unwrap().unwrap(), b"late");
    assert!(
        matches!(&commit, CommitResult::WriteUncertain(e) if e.starts_with("Dict server timeout")),
        "{commit:?}"
    );
    assert_eq!(server.connections(), 2);
    // The commit is not sent again on the new connection.
    assert_eq!(server.lines_of(1), ["H3\t2\t0\t\tq", "Lshared/a\t"]);
}

#[tokio::test]
async fn reconnects_after_the_server_closes() {
    let server = FakeServer::start(|mut s| async move {
        s.line().await;
        let l = s.line().await.unwrap();
        s.send(&format!("*1\n+1\tO{}\n", s.index)).await;
        assert!(l.starts_with('L'));
        // Close after one reply.
    });
    let options = ClientOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..opts()
    };
    let client = Client::open(&server.uri("q"), options).unwrap();
    assert_eq!(client.lookup("shared/a", "").await.unwrap().unwrap(), b"0");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.lookup("shared/a", "").await.unwrap().unwrap(), b"1");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn idle_disconnect() {
    let echo = |mut s: common::Session| async move {
        s.line().await;
        while let Some(l) = s.line().await {
            s.send(&format!("*1\n+1\tO{}\n", &l[1..l.find('\t').unwrap()]))
                .await;
        }
    };
    // Default idle_msecs=0: the connection closes as soon as nothing is pending.
    let server = FakeServer::start(echo);
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    client.lookup("shared/a", "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.lookup("shared/b", "").await.unwrap();
    assert_eq!(server.connections(), 2);

    // idle_msecs=2000 keeps it for the next command.
    let server = FakeServer::start(echo);
    let uri = format!("proxy:idle_msecs=2000:{}:q", server.path.display());
    let client = Client::open(&uri, opts()).unwrap();
    client.lookup("shared/a", "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.lookup("shared/b", "").await.unwrap();
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn lazy_begin_rollback_and_empty_commits() {
    let server = FakeServer::start(|mut s| async move {
        while let Some(l) = s.line().await {
            if let Some(id) = l.strip_prefix('C') {
                s.send(&format!("O{id}\n")).await;
            }
        }
    });
    let options = ClientOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..opts()
    };
    let client = Client::open(&server.uri("q"), options).unwrap();
    // Nothing changed: OK without a connection.
    assert_eq!(client.transaction("u").commit().await, CommitResult::Ok);
    client.transaction("u").rollback();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.connections(), 0);
    // B goes out with the first change; R only when B went out.
    let mut tx = client.transaction("u");
    tx.timestamp(1700000000, 5).unwrap();
    tx.unset("shared/x").unwrap();
    tx.inc("shared/n", -4).unwrap();
    tx.inc("shared/n", 0).unwrap();
    assert!(tx.timestamp(1, 0).is_err());
    tx.rollback();
    let mut tx = client.transaction("u");
    assert!(matches!(
        tx.hide_log_values(true),
        Err(Error::Unsupported(_))
    ));
    tx.set("shared/y", "a\tb\nc").unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);
    assert_eq!(
        server.all_lines(),
        [
            "H3\t2\t0\t\tq",
            "B3\tu",
            "T3\t1700000000\t5",
            "U3\tshared/x",
            "A3\tshared/n\t-4",
            "R3",
            "B4\tu",
            "S4\tshared/y\ta\u{1}tb\u{1}nc",
            "C4"
        ]
    );
}

#[tokio::test]
async fn major_4_batches_the_whole_transaction() {
    let server = FakeServer::start(|mut s| async move {
        while let Some(l) = s.line().await {
            if let Some(id) = l.strip_prefix('C') {
                s.send(&format!("*1\n+1\tN{id}\t1\t2\t3\t4\n")).await;
            }
        }
    });
    let options = ClientOptions {
        protocol: Protocol::V4,
        ..opts()
    };
    let client = Client::open(&server.uri("q4"), options).unwrap();
    let mut tx = client.transaction("bob");
    tx.set("priv/a", "1").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.connections(), 0, "nothing is sent before the commit");
    tx.hide_log_values(true).unwrap();
    tx.set_expire_secs(60).unwrap();
    tx.inc("priv/n", 2).unwrap();
    assert_eq!(tx.commit().await, CommitResult::NotFound);
    let mut tx = client.transaction("bob");
    tx.set("priv/a", "2").unwrap();
    tx.rollback();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        server.all_lines(),
        [
            "H4\t0\t0\t\tq4",
            "B1\tbob\t60",
            "S1\tpriv/a\t1",
            "V1\tyes",
            "A1\tpriv/n\t2",
            "C1"
        ]
    );
}

#[tokio::test]
async fn major_4_retries_a_batch_after_a_lost_connection() {
    let server = FakeServer::start(|mut s| async move {
        if s.index == 0 {
            s.lines(4).await; // hello B S C, then close
        } else {
            while let Some(l) = s.line().await {
                if let Some(id) = l.strip_prefix('C') {
                    s.send(&format!("*1\n+1\tO{id}\n")).await;
                }
            }
        }
    });
    let client = Client::open(
        &server.uri("q"),
        ClientOptions {
            protocol: Protocol::V4,
            ..opts()
        },
    )
    .unwrap();
    let mut tx = client.transaction("");
    tx.set("shared/a", "1").unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);
    assert_eq!(
        server.lines_of(1),
        ["H4\t0\t0\t\tq", "B1\t\t0", "S1\tshared/a\t1", "C1"]
    );
}

#[tokio::test]
async fn unknown_dict_name_reads_as_closed_connection() {
    // A Dovecot server closes silently on a bad hello.
    let server = FakeServer::start(|mut s| async move {
        s.line().await;
    });
    let client = Client::open(&server.uri("nosuch"), opts()).unwrap();
    assert_eq!(client.lookup("shared/a", "").await, Err(Error::Closed));
    let mut tx = client.transaction("");
    tx.set("shared/a", "1").unwrap();
    let result = tx.commit().await;
    assert!(
        matches!(
            result,
            CommitResult::WriteUncertain(_) | CommitResult::Failed(_)
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn broken_replies_fail_pending_commands() {
    let server = FakeServer::start(|mut s| async move {
        s.lines(2).await;
        s.send("*1\n+7\tOwrong id\n").await;
        s.until_eof().await;
    });
    let client = Client::open(&server.uri("q"), opts()).unwrap();
    let err = client.lookup("shared/a", "").await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn connect_failures_and_invalid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sock");
    let client = Client::open(&format!("proxy:{}:q", path.display()), opts()).unwrap();
    let err = client.lookup("shared/a", "").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "net_connect_unix({}) failed: No such file or directory",
            path.display()
        )
    );
    let mut tx = client.transaction("");
    tx.set("shared/a", "1").unwrap();
    assert!(
        matches!(tx.commit().await, CommitResult::Failed(e) if e.starts_with("net_connect_unix"))
    );
    assert!(matches!(
        client.lookup("priv/a", "").await,
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        client.lookup("other/a", "u").await,
        Err(Error::InvalidKey(_))
    ));
    let first = client
        .iterate("nope/", "", IterateFlags::empty(), 0)
        .next()
        .await
        .unwrap();
    assert!(matches!(first, Err(Error::InvalidKey(_))));
    assert!(client.transaction("").set("priv/x", "1").is_err());
    assert!(matches!(
        Client::open("proxy:nocolon", opts()),
        Err(Error::InvalidUri(_))
    ));
}
