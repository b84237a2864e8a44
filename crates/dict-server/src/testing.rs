//! The server in-process on a socket in a temporary directory, for tests: this crate's, and
//! those of the crates that talk to it (client, quota-clone). Dropping it stops it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{listener, Registry, ServerSettings};

/// A running in-process server.
pub struct InProcessServer {
    /// The socket.
    pub path: PathBuf,
    /// The temporary directory the socket lives in (removed on drop).
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessServer {
    /// Serves `registry` with `settings` on `<tmp>/dict`.
    pub async fn start(registry: Registry, settings: ServerSettings) -> InProcessServer {
        Self::start_at(registry, settings, Path::new("dict")).await
    }

    /// Serves `registry` with `settings` on `<tmp>/<socket>` (parent directories created).
    pub async fn start_at(
        registry: Registry,
        settings: ServerSettings,
        socket: &Path,
    ) -> InProcessServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(socket);
        let bound = listener::bind(&listener::ListenerSettings {
            path: path.clone(),
            mode: 0o660,
            user: None,
            group: None,
            backlog: 128,
        })
        .expect("bind the test socket");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            crate::run(&bound.listener, Arc::new(registry), settings, token).await;
            drop(bound);
        });
        InProcessServer {
            path,
            dir,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("the server task ends without panicking");
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
