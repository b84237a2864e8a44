//! SIGHUP: re-read the configuration and the map files, and serve new connections from the
//! dicts built from them. A connection keeps the registry it was accepted with, so open
//! connections finish on the old dicts (whose pools close once the last one ends). A
//! configuration that does not load, or a dict that cannot be set up, is logged and the
//! running one kept: a reload accepts exactly what a start would.
//!
//! Listeners, connection limits and timeouts, logging and the metrics endpoint are read at
//! start only; what is per dict (`warn_slow_ms`, the backend's own timeout) follows the
//! reload.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::registry::Registry;
use crate::setup::{self, Plan};
use crate::systemd;

/// The registry new connections use; swapped whole on reload.
pub type SharedRegistry = Arc<ArcSwap<Registry>>;

/// A shared registry starting with `registry`.
pub fn shared(registry: Arc<Registry>) -> SharedRegistry {
    Arc::new(ArcSwap::new(registry))
}

/// Builds the dicts of `plan` and swaps them in; on error nothing changes. `listening` are
/// the socket paths being served: a plan naming others gets a warning (they need a restart).
pub async fn reload(
    registry: &ArcSwap<Registry>,
    plan: Result<Plan>,
    listening: &[PathBuf],
) -> Result<Vec<Arc<str>>> {
    let plan = plan.context("reading the configuration")?;
    let new = setup::open_dicts(&plan).await?;
    let names = new.names();
    let paths: Vec<PathBuf> = plan.listeners.iter().map(|l| l.path.clone()).collect();
    if paths != listening {
        warn!(
            configured = ?paths,
            serving = ?listening,
            "the listeners changed: they take effect on restart"
        );
    }
    registry.store(Arc::new(new));
    Ok(names)
}

/// Reloads on every SIGHUP received on `hangups` until `shutdown`. `replan` reads the
/// configuration again (the same files and command-line overrides as at start).
pub async fn on_sighup(
    mut hangups: Signal,
    registry: SharedRegistry,
    replan: impl Fn() -> Result<Plan>,
    listening: Vec<PathBuf>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            received = hangups.recv() => if received.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        info!("SIGHUP: reloading the configuration");
        systemd::notify_reloading();
        match reload(&registry, replan(), &listening).await {
            Ok(names) => {
                metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
                info!(dicts = ?names, "configuration reloaded: new connections use the new dicts");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::RELOADS, "result" => "failed").increment(1);
                error!("reload failed, keeping the running configuration: {e:#}");
            }
        }
        systemd::notify_ready("serving");
    }
}
