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

/// How long a connection past `max_connections` waits for a slot before it is closed.
const REFUSE_GRACE: Duration = Duration::from_millis(250);
/// Connections that may wait for a slot at once.
const MAX_WAITING: usize = 1024;

/// Closes a connection past the limit (dropping the stream closes it), logged now and then.
fn refuse(log: &LogLimit, max_connections: usize) {
    crate::metrics::connection_closed("refused");
    log.warn(|held_back| {
        warn!(
            "refused a connection: max_connections ({max_connections}) are open{}",
            log_limit::more(held_back, log_limit::INTERVAL)
        )
    });
}

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Connections served at once; one more waits a moment for a slot, then is closed.
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
    let refused_log = Arc::new(LogLimit::new(log_limit::INTERVAL));
    // Connections past the limit that wait for a slot; past this many, refused at once.
    let waiters = Arc::new(Semaphore::new(MAX_WAITING));
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
        // Full: a slot freed a moment ago (a client that just closed) is still waited for
        // briefly; past that the connection is closed rather than left hanging in the
        // backlog. Dovecot's clients fail that one request and connect again for the next.
        let permit = limit.clone().try_acquire_owned().ok();
        let waiting = match permit {
            Some(_) => None,
            None => match waiters.clone().try_acquire_owned() {
                Ok(w) => Some(w),
                Err(_) => {
                    refuse(&refused_log, settings.max_connections);
                    continue;
                }
            },
        };
        let registry = registry.load_full();
        let conn_settings = settings.connection.clone();
        let conn_tasks = tasks.clone();
        let conn_shutdown = shutdown.clone();
        let (limit, refused_log) = (limit.clone(), refused_log.clone());
        let max_connections = settings.max_connections;
        tasks.spawn(async move {
            let permit = match permit {
                Some(permit) => permit,
                None => match tokio::time::timeout(REFUSE_GRACE, limit.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        drop(waiting);
                        return refuse(&refused_log, max_connections);
                    }
                },
            };
            drop(waiting);
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
