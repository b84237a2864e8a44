//! The UNIX socket clients connect to: created with a large backlog, a stale socket file
//! replaced, mode and ownership set as configured, removed again on exit.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Group, User};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UnixListener;

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Socket path (Dovecot's default is `/run/dovecot/dict`).
    pub path: PathBuf,
    /// File mode, e.g. 0o660.
    pub mode: u32,
    /// Owner user name (unchanged when `None`).
    pub user: Option<String>,
    /// Owner group name (unchanged when `None`).
    pub group: Option<String>,
    /// Listen backlog: Dovecot clients connect in bursts, one connection per operation.
    pub backlog: i32,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The path exists and is not a socket: never delete someone's file.
    #[error("{0}: exists and is not a socket")]
    NotASocket(PathBuf),
    /// Another server answers on the path.
    #[error("{0}: another server is already listening there")]
    InUse(PathBuf),
    /// Unknown owner or group.
    #[error("{path}: unknown {what} '{name}'")]
    UnknownOwner {
        /// The socket path.
        path: PathBuf,
        /// "user" or "group".
        what: &'static str,
        /// The name that was not found.
        name: String,
    },
    /// Any other failure, with the step that failed.
    #[error("{path}: {step}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A bound socket that removes its file when dropped.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener.
    pub listener: UnixListener,
    path: PathBuf,
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io_err<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// Binds the socket described by `settings`. Must run inside a tokio runtime.
pub fn bind(settings: &ListenerSettings) -> Result<BoundSocket, ListenError> {
    let path = settings.path.as_path();
    remove_stale(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(path, "creating the directory"))?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err(path, "socket"))?;
    let addr = SockAddr::unix(path).map_err(io_err(path, "address"))?;
    socket.bind(&addr).map_err(io_err(path, "bind"))?;
    let bound = || -> Result<UnixListener, ListenError> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
            .map_err(io_err(path, "chmod"))?;
        set_owner(settings)?;
        socket
            .listen(settings.backlog)
            .map_err(io_err(path, "listen"))?;
        socket
            .set_nonblocking(true)
            .map_err(io_err(path, "set_nonblocking"))?;
        let std_listener: std::os::unix::net::UnixListener = socket.into();
        UnixListener::from_std(std_listener).map_err(io_err(path, "registering with the runtime"))
    };
    match bound() {
        Ok(listener) => Ok(BoundSocket {
            listener,
            path: path.to_path_buf(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Removes a socket file left by a server that is gone; refuses to touch anything else.
fn remove_stale(path: &Path) -> Result<(), ListenError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ListenError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(io_err(path, "removing the stale socket"))
}

fn set_owner(settings: &ListenerSettings) -> Result<(), ListenError> {
    let path = settings.path.as_path();
    let unknown = |what, name: &str| ListenError::UnknownOwner {
        path: path.to_path_buf(),
        what,
        name: name.to_string(),
    };
    let uid = match settings.user.as_deref().filter(|u| !u.is_empty()) {
        Some(name) => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| unknown("user", name))?
                .uid,
        ),
        None => None,
    };
    let gid = match settings.group.as_deref().filter(|g| !g.is_empty()) {
        Some(name) => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| unknown("group", name))?
                .gid,
        ),
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        chown(path, uid, gid).map_err(|e| io_err(path, "chown")(e.into()))?;
    }
    Ok(())
}
