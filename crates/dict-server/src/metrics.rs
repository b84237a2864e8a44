//! Prometheus metrics: the series the server records, the recorder, and a small HTTP
//! endpoint that serves them (`GET /metrics`). Off unless a listen address is configured;
//! without an installed recorder every `metrics` call is a no-op.
//!
//! Series (labels in braces):
//! - `dict_operations_total{dict,op}`, `dict_operation_errors_total{dict,op,kind}`,
//!   `dict_operation_duration_seconds{dict,op}` (histogram), `dict_slow_operations_total{dict,op}`
//!   with `op` one of `lookup`, `iterate`, `commit` (recorded by [`crate::observe`]);
//!   an error's `kind` is the backend's error kind for lookups and iterations (`timeout`,
//!   `connection`, `database`, `refused`, `unsupported`, `other`), `failed` (`F`) or
//!   `uncertain` (`W`) for commits, and `abandoned` for a lookup or commit dropped
//!   unfinished (the server's timeout fired or the client left); every kind an operation
//!   can have is present from the start, at 0;
//! - `dict_operations_in_flight{dict}`: backend calls started and not finished;
//! - `dict_connections_open`, `dict_connections_total`;
//! - `dict_connections_closed_total{reason}`: connections the server closed or refused on
//!   its own (`refused` past `max_connections`, `hello_timeout`, `idle_timeout`,
//!   `memory_limit`);
//! - `dict_config_reloads_total{result}` (`ok` or `failed`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Backend operations by dict and operation.
pub const OPERATIONS: &str = "dict_operations_total";
/// Operations that failed, by kind: `F` replies, failed or uncertain commits, timeouts.
pub const OPERATION_ERRORS: &str = "dict_operation_errors_total";
/// Backend latency.
pub const OPERATION_SECONDS: &str = "dict_operation_duration_seconds";
/// Operations slower than `warn_slow_ms`.
pub const SLOW_OPERATIONS: &str = "dict_slow_operations_total";
/// Backend calls under way.
pub const OPERATIONS_IN_FLIGHT: &str = "dict_operations_in_flight";
/// Client connections being served.
pub const CONNECTIONS_OPEN: &str = "dict_connections_open";
/// Client connections accepted.
pub const CONNECTIONS: &str = "dict_connections_total";
/// Connections closed or refused by the server, by reason.
pub const CONNECTIONS_CLOSED: &str = "dict_connections_closed_total";
/// SIGHUP reloads by result.
pub const RELOADS: &str = "dict_config_reloads_total";

/// Histogram buckets (seconds): a healthy SQL round trip is sub-millisecond to a few ms,
/// the interesting tail runs up to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder. Call once, before the dicts are opened
/// (their metric handles are taken when they are built).
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        OPERATIONS,
        "Dict operations (lookup, iterate, commit) by dict"
    );
    describe_counter!(
        OPERATION_ERRORS,
        "Dict operations that failed or timed out, by dict and kind of failure"
    );
    describe_histogram!(
        OPERATION_SECONDS,
        Unit::Seconds,
        "Time the backend took per dict operation"
    );
    describe_counter!(SLOW_OPERATIONS, "Dict operations slower than warn_slow_ms");
    describe_gauge!(
        OPERATIONS_IN_FLIGHT,
        "Dict operations waiting for the backend"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Client connections being served");
    describe_counter!(CONNECTIONS, "Client connections accepted");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Client connections the server refused or closed on its own, by reason"
    );
    describe_counter!(RELOADS, "Configuration reloads (SIGHUP) by result");
}

/// Binds the metrics endpoint (a start-up error when the address is taken).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics endpoint: cannot listen on {addr}"))
}

/// Serves `GET /metrics` on `listener` until `shutdown`; also drains histogram samples
/// every few seconds so that they don't pile up between scrapes.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint: http://{addr}/metrics");
    }
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = respond(stream, &handle).await {
                            debug!("metrics request: {e}");
                        }
                    });
                }
                Err(e) => {
                    debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = upkeep.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One HTTP/1.x exchange, then close: enough for Prometheus and curl.
async fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .is_err()
    {
        return Ok(());
    }
    let (status, content_type, body) = route(&head, handle);
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head.starts_with(b"HEAD ") {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

fn route(head: &[u8], handle: &PrometheusHandle) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        (b"GET" | b"HEAD", Some(b"/metrics")) => {
            handle.run_upkeep();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        (b"GET" | b"HEAD", Some(_)) => ("404 Not Found", TEXT, "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", TEXT, "GET /metrics\n".into()),
    }
}

/// Counts a connection the server closed (or refused) on its own.
pub fn connection_closed(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// Counts a connection as open for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    /// A newly accepted connection.
    pub fn new() -> Self {
        metrics::counter!(CONNECTIONS).increment(1);
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}
