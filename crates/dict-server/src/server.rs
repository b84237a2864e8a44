//! The accept loop: a cap on connections, accept errors retried with backoff, and a graceful
//! shutdown that stops accepting, lets connections send what is due, and waits for commits.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::connection::{self, ConnectionSettings};
use crate::log_limit::{self, LogLimit};
use crate::registry::Registry;
use crate::reload::{self, SharedRegistry};

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Per-connection settings.
    pub connection: ConnectionSettings,
    /// Longest the shutdown waits for connections and commits.
    pub shutdown_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 10_000,
            connection: ConnectionSettings::default(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(
    listener: &UnixListener,
    registry: Arc<Registry>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    run_shared(listener, reload::shared(registry), settings, shutdown).await;
}

/// [`run`] with a registry that a reload may swap: each connection keeps the one that was
/// current when it was accepted.
pub async fn run_shared(
    listener: &UnixListener,
    registry: SharedRegistry,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let tasks = TaskTracker::new();
    let refused_log = LogLimit::new(log_limit::INTERVAL);
    let mut backoff = Duration::from_millis(1);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    error!("accept failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        backoff = Duration::from_millis(1);
        // Full: close at once rather than leave the client hanging in the backlog; Dovecot's
        // clients fail that one request and connect again for the next.
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            crate::metrics::connection_closed("refused");
            refused_log.warn(|held_back| {
                warn!(
                    "refused a connection: max_connections ({}) are open{}",
                    settings.max_connections,
                    log_limit::more(held_back, log_limit::INTERVAL)
                )
            });
            drop(stream);
            continue;
        };
        let registry = registry.load_full();
        let conn_settings = settings.connection.clone();
        let conn_tasks = tasks.clone();
        let conn_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _open = crate::metrics::OpenConnection::new();
            connection::serve(stream, registry, conn_settings, conn_tasks, conn_shutdown).await;
            drop(permit);
        });
    }
    info!(
        "shutting down: waiting for {} connections and commits",
        tasks.len()
    );
    tasks.close();
    if tokio::time::timeout(settings.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        error!("shutdown timed out with {} tasks left", tasks.len());
    }
}
