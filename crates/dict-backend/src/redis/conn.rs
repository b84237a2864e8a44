//! One multiplexed Redis connection shared by all operations of a dict, made on first use
//! and made again after it broke, so the server starts while Redis is down and resumes
//! when Redis returns.
//!
//! This is `redis::aio::ConnectionManager`'s job, done here because a dict needs what that
//! manager hides: whether a failed commit had been handed to Redis at all (`Failed` vs
//! `WriteUncertain`), and failing at once while Redis is down instead of waiting for the
//! manager's reconnect backoff. Like Dovecot we connect again on the next operation after
//! a failure. We open the socket ourselves and run the connection's driver task, so a
//! connection that died while idle (Redis restarted) is known dead before it is used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisConnectionInfo, RedisError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use dict_config::RedisParams;

/// A connection handed to one operation; `dead` is shared by all handles of it.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) conn: MultiplexedConnection,
    dead: Arc<AtomicBool>,
    /// Made for this operation (not taken from the cache).
    pub(crate) fresh: bool,
}

impl Live {
    /// Stops handing out this connection; the next operation connects again.
    pub(crate) fn discard(&self) {
        self.dead.store(true, Ordering::Relaxed);
    }
}

enum Addr {
    Tcp {
        host: String,
        port: u16,
    },
    Tls {
        host: String,
        port: u16,
        tls: TlsConnector,
    },
    Unix(PathBuf),
}

pub(crate) struct Connector {
    addr: Addr,
    /// `AUTH` and `SELECT` after each connect.
    info: RedisConnectionInfo,
    /// `host:port` or the socket path, for error messages.
    target: String,
    current: Mutex<Option<Live>>,
    /// Logs a reconnect louder than the first connect.
    connected_before: AtomicBool,
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    TimedOut,
    Failed(RedisError),
}

impl Connector {
    /// Checks the parameters (and loads the CA certificates for `tls=yes`); does not
    /// connect.
    pub(crate) fn new(params: &RedisParams) -> Result<Connector, String> {
        let (addr, target) = match &params.path {
            Some(path) => {
                if params.tls {
                    return Err(format!(
                        "redis: tls=yes needs a TCP connection, not the UNIX socket {}",
                        path.display()
                    ));
                }
                (Addr::Unix(path.clone()), path.display().to_string())
            }
            None => {
                let target = if params.host.contains(':') {
                    format!("[{}]:{}", params.host, params.port)
                } else {
                    format!("{}:{}", params.host, params.port)
                };
                let (host, port) = (params.host.clone(), params.port);
                let addr = if params.tls {
                    ServerName::try_from(host.clone())
                        .map_err(|e| format!("redis: tls=yes: invalid host name {host}: {e}"))?;
                    let tls = TlsConnector::from(Arc::new(tls_config()?));
                    Addr::Tls { host, port, tls }
                } else {
                    Addr::Tcp { host, port }
                };
                (addr, target)
            }
        };
        if params.user.is_some() && params.password.is_none() {
            return Err("redis: user= needs password= as well".into());
        }
        let info = RedisConnectionInfo {
            db: i64::from(params.db),
            username: params.user.clone(),
            password: params.password.clone(),
            protocol: ProtocolVersion::RESP2,
        };
        Ok(Connector {
            addr,
            info,
            target,
            current: Mutex::new(None),
            connected_before: AtomicBool::new(false),
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The current connection, or a new one made before `deadline`. Operations queue here
    /// while one of them connects, so a dead Redis sees one connect attempt at a time.
    pub(crate) async fn get(&self, deadline: Instant) -> Result<Live, ConnectError> {
        let mut current = timeout_at(deadline, self.current.lock())
            .await
            .map_err(|_| ConnectError::TimedOut)?;
        if let Some(live) = current.as_ref() {
            if !live.dead.load(Ordering::Relaxed) {
                return Ok(Live {
                    fresh: false,
                    ..live.clone()
                });
            }
        }
        *current = None;
        let (conn, dead) = timeout_at(deadline, self.open())
            .await
            .map_err(|_| ConnectError::TimedOut)?
            .map_err(ConnectError::Failed)?;
        if self.connected_before.swap(true, Ordering::Relaxed) {
            tracing::info!("redis: reconnected to {}", self.target);
        } else {
            tracing::debug!("redis: connected to {}", self.target);
        }
        let live = Live {
            conn,
            dead,
            fresh: true,
        };
        *current = Some(live.clone());
        Ok(live)
    }

    async fn open(&self) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError> {
        match &self.addr {
            Addr::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                self.start(tcp).await
            }
            Addr::Tls { host, port, tls } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                self.start(tls.connect(name, tcp).await?).await
            }
            Addr::Unix(path) => self.start(UnixStream::connect(path).await?).await,
        }
    }

    /// Sends `AUTH`/`SELECT` and starts the task that drives the connection; when that
    /// task ends (EOF, reset, all handles dropped) the connection is marked dead.
    async fn start<S>(
        &self,
        stream: S,
    ) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (conn, driver) = MultiplexedConnection::new_with_config(
            &self.info,
            stream,
            AsyncConnectionConfig::new(),
        )
        .await?;
        let dead = Arc::new(AtomicBool::new(false));
        let flag = dead.clone();
        tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Relaxed);
        });
        Ok((conn, dead))
    }
}

/// rustls with ring, trusting the system's CA certificates (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override them).
fn tls_config() -> Result<ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!("redis: tls=yes: no CA certificates found{why}"));
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("redis: tls=yes: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// True when `e` says the connection itself is unusable (as opposed to an error reply).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}
