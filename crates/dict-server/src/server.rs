//! The accept loop: a cap on connections, accept errors retried with backoff, and a graceful
//! shutdown that stops accepting, lets connections send what is due, and waits for commits.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::connection::{self, ConnectionSettings};
use crate::registry::Registry;
use crate::reload::{self, SharedRegistry};

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Connections served at once; more wait in the listen backlog.
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
    let mut backoff = Duration::from_millis(1);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
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
