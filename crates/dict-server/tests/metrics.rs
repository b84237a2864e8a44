//! The Prometheus endpoint and slow-operation warnings, in-process: a recorder installed for
//! this test binary, dicts wrapped as the server wraps them, traffic over the socket, then a
//! scrape over HTTP. One test, because the recorder is process-wide.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dict_backend::{
    CommitResult, Dict, DictError, IterRow, IterateOptions, MemoryDict, Transaction,
};
use dict_server::{listener, metrics, observe, Registry, ServerSettings};
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

/// Fails every operation.
struct Broken;

#[async_trait]
impl Dict for Broken {
    async fn lookup(&self, _: &[u8], _: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        Err(DictError::connection("backend down"))
    }
    fn iterate(
        &self,
        _: &[u8],
        _: &[u8],
        _: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        futures::stream::once(async { Err(DictError::new("backend down")) }).boxed()
    }
    async fn commit(&self, _: Transaction) -> CommitResult {
        CommitResult::Failed("backend down".into())
    }
}

/// Answers lookups after 30 ms.
struct Slow;

#[async_trait]
impl Dict for Slow {
    async fn lookup(&self, _: &[u8], _: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(Some(vec![b"late".to_vec()]))
    }
    fn iterate(
        &self,
        _: &[u8],
        _: &[u8],
        _: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        futures::stream::empty().boxed()
    }
    async fn commit(&self, _: Transaction) -> CommitResult {
        CommitResult::Ok
    }
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `input`, half-closes, reads until the server closes.
async fn exchange(path: &std::path::Path, input: &[u8]) -> String {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(input).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the series `name{labels}` in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The sum of the series whose labels begin with `labels_prefix` (e.g. every `kind` of
/// one dict and operation); `None` when there is none.
fn sum(scrape: &str, name: &str, labels_prefix: &str) -> Option<f64> {
    let start = format!("{name}{{{labels_prefix},");
    let values: Vec<f64> = scrape
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&start)?;
            rest.rsplit_once("} ")?.1.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "current_thread")]
async fn endpoint_reports_operations_errors_latency_connections_and_slow_calls() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);

    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let exporter = metrics::start(addr).unwrap();
    let slow_limit = Some(Duration::from_millis(10));
    let mut registry = Registry::new();
    registry.insert(
        "mem",
        observe::wrap("mem", Arc::new(MemoryDict::new()), slow_limit),
    );
    registry.insert(
        "broken",
        observe::wrap("broken", Arc::new(Broken), slow_limit),
    );
    registry.insert("slow", observe::wrap("slow", Arc::new(Slow), slow_limit));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.sock");
    let bound = listener::bind(&listener::ListenerSettings {
        path: path.clone(),
        mode: 0o600,
        user: None,
        group: None,
        backlog: 16,
    })
    .unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            dict_server::run(
                &bound.listener,
                Arc::new(registry),
                ServerSettings::default(),
                shutdown,
            )
            .await;
        }
    });
    let endpoint = tokio::spawn(metrics::serve(exporter, addr, shutdown.clone()));

    let out = exchange(
        &path,
        b"H3\t0\t0\t\tmem\nB1\t\nS1\tshared/k/x\t1\nC1\nLshared/k/x\t\nLshared/none\t\nI0\t0\tshared/k/\t\n",
    )
    .await;
    assert_eq!(out, "O1\nO1\nN\nOshared/k/x\t1\n\n");
    let out = exchange(
        &path,
        b"H3\t0\t0\t\tbroken\nLshared/a\t\nB1\t\nS1\tshared/a\t1\nC1\n",
    )
    .await;
    assert_eq!(out, "Fbackend down\nF1\tbackend down\n");
    let out = exchange(&path, b"H3\t0\t0\t\tslow\nLshared/a\t\n").await;
    assert_eq!(out, "Olate\n");
    // A connection that stays open while the endpoint is scraped.
    let mut open = UnixStream::connect(&path).await.unwrap();
    open.write_all(b"H3\t0\t0\t\tmem\nLshared/k/x\t\n")
        .await
        .unwrap();
    let mut reply = [0u8; 3];
    open.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"O1\n");

    let scrape = http_get(addr, "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    // Prometheus reads text/plain as its text format.
    assert!(
        scrape
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{scrape}"
    );
    let ops = |dict: &str, op: &str| {
        value(
            &scrape,
            &format!("dict_operations_total{{dict=\"{dict}\",op=\"{op}\"}}"),
        )
    };
    // Errors by dict and operation, all kinds together.
    let errors = |dict: &str, op: &str| {
        sum(
            &scrape,
            "dict_operation_errors_total",
            &format!("dict=\"{dict}\",op=\"{op}\""),
        )
    };
    let errors_of_kind = |dict: &str, op: &str, kind: &str| {
        value(
            &scrape,
            &format!("dict_operation_errors_total{{dict=\"{dict}\",op=\"{op}\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(ops("mem", "lookup"), Some(3.0), "{scrape}");
    assert_eq!(ops("mem", "commit"), Some(1.0), "{scrape}");
    assert_eq!(ops("mem", "iterate"), Some(1.0), "{scrape}");
    assert_eq!(errors("mem", "lookup"), Some(0.0), "{scrape}");
    assert_eq!(ops("broken", "lookup"), Some(1.0), "{scrape}");
    assert_eq!(errors("broken", "lookup"), Some(1.0), "{scrape}");
    assert_eq!(errors("broken", "commit"), Some(1.0), "{scrape}");
    // Counted by kind: the backend's for a lookup, the result for a commit; every kind
    // an operation can have is there from the start.
    for (dict, op, kind, want) in [
        ("broken", "lookup", "connection", 1.0),
        ("broken", "lookup", "timeout", 0.0),
        ("broken", "commit", "failed", 1.0),
        ("mem", "iterate", "database", 0.0),
    ] {
        assert_eq!(
            errors_of_kind(dict, op, kind),
            Some(want),
            "{dict} {op} {kind}: {scrape}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "dict_slow_operations_total{dict=\"slow\",op=\"lookup\"}"
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(
            &scrape,
            "dict_operation_duration_seconds_count{dict=\"mem\",op=\"lookup\"}"
        ),
        Some(3.0),
        "{scrape}"
    );
    // The 30 ms lookup lies above the 25 ms bucket; how far above depends on the load.
    assert!(
        scrape.contains(
            "dict_operation_duration_seconds_bucket{dict=\"slow\",op=\"lookup\",le=\"0.025\"} 0"
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            "dict_operation_duration_seconds_bucket{dict=\"slow\",op=\"lookup\",le=\"+Inf\"} 1"
        ),
        "{scrape}"
    );
    assert_eq!(
        value(&scrape, "dict_operations_in_flight{dict=\"mem\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "dict_connections_open"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(&scrape, "dict_connections_total"),
        Some(4.0),
        "{scrape}"
    );
    assert!(scrape.contains("# HELP dict_operations_total"), "{scrape}");

    let health = http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    assert!(health.ends_with("\r\n\r\nOK"), "{health}");

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The dict that sleeps 30 ms is slow; on a loaded machine another call may pass 10 ms too.
    let slow: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("slow dict lookup: shared/a"))
        .collect();
    assert_eq!(slow.len(), 1, "{logs}");
    assert!(slow[0].contains("WARN"), "{logs}");
    assert!(
        slow[0].contains("slow dict lookup: shared/a took"),
        "{logs}"
    );
    assert!(slow[0].contains("(warn_slow_ms = 10)"), "{logs}");

    drop(open);
    shutdown.cancel();
    server.await.unwrap();
    endpoint.await.unwrap();
}
