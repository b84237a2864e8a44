//! The running server: dicts, sockets (bound, or passed by systemd), the metrics endpoint,
//! SIGHUP reloads, readiness notifications, and a graceful stop on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::budget::ServerBudget;
use crate::setup::{self, Plan};
use crate::{fd_limit, metrics, reload, systemd, timer_floor, ConnectionSettings, ServerSettings};

/// Serves `plan` until SIGTERM or SIGINT. `replan` reads the configuration again on SIGHUP.
pub async fn serve(plan: Plan, replan: impl Fn() -> Result<Plan>) -> Result<()> {
    // Before anything can report readiness: a signal must never hit the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hangups = signal(SignalKind::hangup())?;

    match fd_limit::raise() {
        Ok(limit) => match fd_limit::shortfall(limit, &plan) {
            Some(warning) => warn!("{warning}"),
            None => info!(soft = limit.soft, "open-file limit"),
        },
        Err(e) => warn!("cannot read or raise the open-file limit: {e}"),
    }
    let metrics_endpoint = match plan.metrics.listen {
        Some(addr) => Some((metrics::start(addr)?, addr)),
        None => None,
    };
    let registry = reload::shared(Arc::new(setup::open_dicts(&plan).await?));
    let settings = ServerSettings {
        max_connections: plan.max_connections,
        connection: ConnectionSettings {
            max_pending: plan.server.max_pending_per_connection,
            request_timeout: plan.server.request_timeout(),
            hello_timeout: plan.server.hello_timeout(),
            idle_timeout: plan.server.idle_timeout(),
            max_transaction_bytes: plan.server.max_transaction_bytes_per_connection,
            server_budget: ServerBudget::new(plan.server.max_transaction_bytes_total),
            ..ConnectionSettings::default()
        },
        shutdown_timeout: plan.server.shutdown_timeout(),
    };
    let sockets = systemd::open_sockets(&plan.listeners)?;
    let names = registry.load().names();
    let mut described = Vec::new();
    for socket in &sockets {
        info!(path = %socket.describe(), dicts = ?names, "listening");
        described.push(socket.describe());
    }

    if let Some(hint) = setup::dovecot_hint(&plan) {
        info!("{hint}");
    }

    let shutdown = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for socket in sockets {
        let (registry, settings, shutdown) = (registry.clone(), settings.clone(), shutdown.clone());
        servers.spawn(async move {
            crate::run_shared(socket.listener(), registry, settings, shutdown).await;
            drop(socket);
        });
    }
    servers.spawn(timer_floor::run(shutdown.clone()));
    if let Some((exporter, addr)) = metrics_endpoint {
        servers.spawn(metrics::serve(exporter, addr, shutdown.clone()));
    }
    let configured: Vec<PathBuf> = plan.listeners.iter().map(|l| l.path.clone()).collect();
    let reloads = reload::on_sighup(hangups, registry, replan, configured, shutdown.clone());
    tokio::pin!(reloads);
    systemd::notify_ready(&format!(
        "serving {} dict(s) on {}",
        names.len(),
        described.join(", ")
    ));
    let mut reloads_ended = false;
    loop {
        tokio::select! {
            _ = term.recv() => break info!("SIGTERM: shutting down"),
            _ = int.recv() => break info!("SIGINT: shutting down"),
            _ = &mut reloads, if !reloads_ended => reloads_ended = true,
        }
    }
    systemd::notify_stopping();
    shutdown.cancel();
    while servers.join_next().await.is_some() {}
    info!("stopped");
    Ok(())
}
