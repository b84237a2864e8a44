//! systemd integration: readiness notifications (`Type=notify`) and socket activation
//! (`dict-rs.socket` hands the listening socket over as fd 3 with `LISTEN_FDS`/`LISTEN_PID`).
//! Both are no-ops outside systemd.

use std::io;

use anyhow::{Context, Result};
use sd_notify::NotifyState;
use tokio::net::UnixListener;
use tracing::{debug, info};

use crate::listener::{self, BoundSocket, ListenerSettings};

/// Tells systemd the server is listening (READY=1), with a status line.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started (RELOADING=1; systemd 253+ wants the monotonic time too).
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the server is shutting down (STOPPING=1).
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify failed: {e}");
    }
}

/// A socket being served: bound here (its file is removed on exit), or handed over by
/// systemd (systemd owns the file and keeps it across restarts).
#[derive(Debug)]
pub enum ServedSocket {
    /// Bound from the configuration.
    Bound(BoundSocket),
    /// Taken from systemd.
    Activated {
        /// The listener.
        listener: UnixListener,
        /// Its path, for logs.
        path: String,
    },
}

impl ServedSocket {
    /// The listener to accept on.
    pub fn listener(&self) -> &UnixListener {
        match self {
            ServedSocket::Bound(b) => &b.listener,
            ServedSocket::Activated { listener, .. } => listener,
        }
    }

    /// Where it listens, for logs.
    pub fn describe(&self) -> String {
        match self {
            ServedSocket::Bound(b) => b.path().display().to_string(),
            ServedSocket::Activated { path, .. } => format!("{path} (from systemd)"),
        }
    }
}

/// The UNIX stream sockets systemd passed (`LISTEN_FDS` for this `LISTEN_PID`), in order;
/// empty when not socket-activated. Clears the variables. Must run inside a tokio runtime.
pub fn activated_listeners() -> io::Result<Vec<UnixListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        let Some(std_listener) = fds.take_unix_listener(i)? else {
            continue;
        };
        std_listener.set_nonblocking(true)?;
        listeners.push(UnixListener::from_std(std_listener)?);
    }
    Ok(listeners)
}

/// The sockets to serve: systemd's when socket-activated (the configured paths are then
/// only informative), else the configured ones, bound now.
pub fn open_sockets(configured: &[ListenerSettings]) -> Result<Vec<ServedSocket>> {
    let activated = activated_listeners().context("taking the sockets passed by systemd")?;
    if !activated.is_empty() {
        info!(
            count = activated.len(),
            "socket activation: serving the socket(s) systemd passed instead of binding"
        );
        return Ok(activated
            .into_iter()
            .map(|listener| {
                let path = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "an unnamed socket".into());
                ServedSocket::Activated { listener, path }
            })
            .collect());
    }
    configured
        .iter()
        .map(|l| {
            listener::bind(l)
                .map(ServedSocket::Bound)
                .with_context(|| format!("cannot listen on {}", l.path.display()))
        })
        .collect()
}
