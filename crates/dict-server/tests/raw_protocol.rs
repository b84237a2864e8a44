//! Exact bytes in, exact bytes out: the server in-process on a temporary socket, with the
//! in-memory backend, driven by raw protocol lines.

use std::sync::Arc;
use std::time::Duration;

use dict_backend::MemoryDict;
use dict_server::testing::InProcessServer;
use dict_server::{Registry, ServerSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn start() -> InProcessServer {
    let mut registry = Registry::new();
    registry.insert("mem", Arc::new(MemoryDict::new()));
    InProcessServer::start(registry, ServerSettings::default()).await
}

/// Replaces the four timing fields of final replies with `TS`, so transcripts compare.
fn strip_timings(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    text.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches('\n');
            let fields: Vec<&str> = body.split('\t').collect();
            let n = fields.len();
            if n >= 5
                && fields[n - 4..]
                    .iter()
                    .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
            {
                format!("{}\tTS\n", fields[..n - 4].join("\t"))
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// Sends `input` in one write, half-closes, and reads everything until the server closes.
async fn exchange(server: &InProcessServer, input: &[u8]) -> String {
    let stream = UnixStream::connect(&server.path).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Write from a task of its own: a server with replies to deliver stops reading.
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&input).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut out))
        .await
        .expect("server closed in time")
        .unwrap();
    writer.await.unwrap();
    strip_timings(&out)
}

/// The reply lines sorted: `*n` lines keep their order, `+n` replies may come in any order.
fn sorted(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort_by_key(|l| {
        (
            !l.starts_with('*'),
            l.split('\t')
                .next()
                .unwrap_or("")
                .trim_start_matches(['*', '+'])
                .parse::<u64>()
                .unwrap_or(0),
        )
    });
    lines
}

/// Sends `input` without closing and reads until the server closes the connection.
async fn until_closed(server: &InProcessServer, input: &[u8]) -> String {
    let mut stream = UnixStream::connect(&server.path).await.unwrap();
    stream.write_all(input).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("server must close the connection")
        .unwrap_or(0);
    strip_timings(&out)
}

#[tokio::test]
async fn pipelined_async_replies() {
    let s = start().await;
    let out = exchange(&s, b"H3\t2\t0\t\tmem\nLshared/a\t\nB1\t\nS1\tshared/a\tv1\nC1\nLshared/a\t\nI1\t0\tshared/\t\n").await;
    // The lookup after the commit waits for it, so it sees v1.
    let expected = [
        "*1",
        "+1\tN\tTS",
        "*2",
        "*3",
        "+2\tO1\tTS",
        "+3\tOv1\tTS",
        "*4",
        "+4\tOshared/a\tv1",
        "+4\t\tTS",
    ];
    let lines: Vec<&str> = out.lines().collect();
    for e in expected {
        assert!(lines.contains(&e), "missing {e:?} in {out:?}");
    }
    assert_eq!(lines.len(), expected.len(), "{out:?}");
    // *n lines come in command order.
    let stars: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with('*'))
        .collect();
    assert_eq!(stars, ["*1", "*2", "*3", "*4"]);
    s.stop().await;
}

#[tokio::test]
async fn ordered_replies_for_minor_0() {
    let s = start().await;
    let out = exchange(&s, b"H3\t0\t0\t\tmem\nB1\t\nS1\tshared/k/x\t1\nC1\nLshared/k/x\t\nLshared/none\t\nI0\t0\tshared/k/\t\nA2\tshared/x\t1\n").await;
    assert_eq!(out, "O1\nO1\nN\nOshared/k/x\t1\n\n");
}

#[tokio::test]
async fn escaping_round_trips_through_the_server() {
    let s = start().await;
    let out = exchange(&s, b"H3\t2\t0\t\tmem\nB1\t\nS1\tshared/e\x01t\ta\x01tb\x01nc\x011d\x01re\nC1\nLshared/e\x01t\t\n").await;
    assert_eq!(
        sorted(&out),
        sorted("*1\n*2\n+1\tO1\tTS\n+2\tOa\x01tb\x01nc\x011d\x01re\tTS\n")
    );
}

#[tokio::test]
async fn commit_results_and_rollback() {
    let s = start().await;
    let out = exchange(&s, b"H3\t2\t0\t\tmem\nB1\t\nA1\tshared/none\t1\nS1\tshared/z\t1\nC1\nB2\t\nS2\tshared/r\tx\nR2\nLshared/r\t\nLshared/z\t\nB3\t\nD3\nB4\tu\nD4\n").await;
    assert_eq!(
        sorted(&out),
        sorted("*1\n*2\n*3\n*4\n*5\n+1\tN1\tTS\n+2\tN\tTS\n+3\tO1\tTS\n+4\tAO3\tTS\n+5\tAO4\tTS\n")
    );
}

#[tokio::test]
async fn bad_hellos_close_without_reply() {
    let s = start().await;
    for hello in [
        &b"H2\t2\t0\t\tmem\nLshared/a\t\n"[..],
        b"H3\t2\t0\tmem\n",
        b"H3\t2\t2\t\tmem\n",
        b"H3\t2\t0\t\tnosuch\nLshared/a\t\n",
        b"Lshared/a\t\n",
        b"\n",
    ] {
        assert_eq!(until_closed(&s, hello).await, "", "{hello:?}");
    }
}

#[tokio::test]
async fn protocol_errors_close_after_earlier_replies() {
    let s = start().await;
    let cases: [(&[u8], &str); 9] = [
        (b"Xfoo\n", ""),
        (b"\n", ""),
        (b"L\n", ""),
        (b"B1\t\nS1\tshared/a\n", ""),
        (b"B1\t\nA1\tshared/a\tabc\n", ""),
        (b"S5\tshared/a\tx\n", ""),
        (b"C9\n", ""),
        (b"B1\t\nB1\t\n", ""),
        (b"Lshared/a\t\nXbad\n", "*1\n+1\tN\tTS\n"),
    ];
    for (input, expected) in cases {
        let mut line = b"H3\t2\t0\t\tmem\n".to_vec();
        line.extend_from_slice(input);
        assert_eq!(
            until_closed(&s, &line).await,
            expected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[tokio::test]
async fn dovecot_crash_inputs_close_only_that_connection() {
    let s = start().await;
    let mut bystander = UnixStream::connect(&s.path).await.unwrap();
    bystander
        .write_all(b"H3\t2\t0\t\tmem\nB7\t\nS7\tshared/keep\tyes\n")
        .await
        .unwrap();
    let crashers: [&[u8]; 8] = [
        b"Lpriv/quota/storage\t\n",
        b"Lfoo/bar\t\n",
        b"I1\t0\tpriv/quota/\t\n",
        b"B1\t\nSpriv/x\tv\n",
        b"B1\t\nS1\tpriv/x\tv\n",
        b"B1\t\nS1\tother/x\tv\n",
        b"C\n",
        b"B1\t\nS1\tshared/x\t1\nC1\nC1\n",
    ];
    for input in crashers {
        let mut line = b"H3\t2\t0\t\tmem\n".to_vec();
        line.extend_from_slice(input);
        let out = until_closed(&s, &line).await;
        assert!(!out.contains('F'), "{out:?}");
    }
    // The other connection and its open transaction are unharmed.
    bystander.write_all(b"C7\nLshared/keep\t\n").await.unwrap();
    bystander.shutdown().await.unwrap();
    let mut out = Vec::new();
    bystander.read_to_end(&mut out).await.unwrap();
    assert_eq!(
        sorted(&strip_timings(&out)),
        sorted("*1\n*2\n+1\tO7\tTS\n+2\tOyes\tTS\n")
    );
}

#[tokio::test]
async fn line_limit_is_65536_bytes_with_lf() {
    let s = start().await;
    let mut ok = b"H3\t2\t0\t\tmem\nLshared/".to_vec();
    let pad = 65536 - "Lshared/".len() - 2;
    ok.extend(std::iter::repeat_n(b'k', pad));
    ok.extend_from_slice(b"\t\n");
    assert_eq!(exchange(&s, &ok).await, "*1\n+1\tN\tTS\n");
    let mut too_long = b"H3\t2\t0\t\tmem\nLshared/".to_vec();
    too_long.extend(std::iter::repeat_n(b'k', pad + 1));
    too_long.extend_from_slice(b"\t\n");
    assert_eq!(until_closed(&s, &too_long).await, "");
}

#[tokio::test]
async fn closing_the_connection_rolls_back_open_transactions() {
    let s = start().await;
    assert_eq!(
        exchange(&s, b"H3\t2\t0\t\tmem\nB1\t\nS1\tshared/lost\tx\n").await,
        ""
    );
    assert_eq!(
        exchange(&s, b"H3\t2\t0\t\tmem\nLshared/lost\t\n").await,
        "*1\n+1\tN\tTS\n"
    );
}

#[tokio::test]
async fn major_4_hello_and_v_command() {
    let s = start().await;
    let out = exchange(
        &s,
        b"H4\t0\t0\t\tmem\nB1\tu\t60\nV1\tyes\nS1\tpriv/k\tsecret\nC1\nLpriv/k\tu\n",
    )
    .await;
    assert_eq!(
        sorted(&out),
        sorted("*1\n*2\n+1\tO1\tTS\n+2\tOsecret\tTS\n")
    );
}

#[tokio::test]
async fn many_pipelined_commands() {
    let s = start().await;
    let mut input = b"H3\t2\t0\t\tmem\n".to_vec();
    for i in 0..5000 {
        input.extend_from_slice(
            format!("B{i}\t\nS{i}\tshared/n/{i}\t{i}\nC{i}\nLshared/n/{i}\t\n").as_bytes(),
        );
    }
    let out = exchange(&s, &input).await;
    assert_eq!(out.lines().filter(|l| l.starts_with('*')).count(), 10000);
    for i in (0..5000).step_by(997) {
        assert!(out.contains(&format!("\tO{i}\tTS\n")), "{i}");
    }
}
