//! Prometheus metrics: the series the server records, the recorder, and the exporter's
//! HTTP listener that serves them (`GET /metrics`; `/health` answers `OK`). Off unless a listen address is configured;
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

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{ExporterFuture, PrometheusBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

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

/// Installs the process-wide Prometheus recorder and binds the exporter's own HTTP
/// listener on `addr` (a start-up error when the address is taken). The exporter also runs
/// the recorder's upkeep every few seconds, so histogram samples don't pile up between
/// scrapes. Call once, inside the runtime, before the dicts are opened (their metric
/// handles are taken when they are built).
pub fn start(addr: SocketAddr) -> Result<ExporterFuture> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(LATENCY_BUCKETS)
        .context("histogram buckets")?
        .build()
        .with_context(|| format!("metrics endpoint: cannot listen on {addr}"))?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    describe();
    Ok(exporter)
}

/// Serves the endpoint [`start`] bound on `addr` until `shutdown`.
pub async fn serve(exporter: ExporterFuture, addr: SocketAddr, shutdown: CancellationToken) {
    info!(%addr, "metrics endpoint: http://{addr}/metrics");
    tokio::select! {
        ended = exporter => if let Err(e) = ended {
            error!("metrics endpoint stopped: {e:?}");
        },
        _ = shutdown.cancelled() => {}
    }
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
