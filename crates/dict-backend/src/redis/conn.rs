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
//!
//! With `sentinels=` the address of each new connection is the master the sentinels name
//! at that moment ([`super::sentinel`]); with `cluster=` the connection is redis-rs'
//! cluster connection, which routes by slot and follows MOVED/ASK ([`super::cluster`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, ProtocolVersion, RedisConnectionInfo, RedisError,
    RedisFuture, Value,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use dict_config::RedisParams;

use super::sentinel::SentinelAddr;

/// One Redis server's connection, or a cluster's (one per node, routed by slot).
#[derive(Clone)]
pub(crate) enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The cluster connection, for what only a cluster has (its masters, routing by node).
    pub(crate) fn cluster(self) -> Result<ClusterConnection, RedisError> {
        match self {
            Conn::Cluster(c) => Ok(c),
            Conn::Server(_) => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "not a cluster connection",
            ))),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection handed to one operation; `dead` is shared by all handles of it.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) conn: Conn,
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
    /// The master named by the sentinels, over TCP (with TLS for `tls=yes`).
    Sentinel(SentinelAddr, Option<TlsConnector>),
    Cluster(ClusterClient),
}

pub(crate) struct Connector {
    addr: Addr,
    /// `AUTH` and `SELECT` after each connect.
    info: RedisConnectionInfo,
    /// `host:port` or the socket path, for error messages.
    target: String,
    /// Held while a connection is made: requests queue behind it.
    current: Arc<Mutex<Option<Live>>>,
    /// Logs a reconnect louder than the first connect.
    connected_before: AtomicBool,
}

/// Whether the connection may send a request again by itself. Only redis-rs' cluster
/// client does: after a connection error it sends the request to the node again, though
/// it may have run there. A single server's connection never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resends {
    /// A few, for requests that may run twice (reads, sets and unsets).
    Allowed,
    /// None: every error comes back to the caller (increments).
    Never,
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
    pub(crate) fn new(params: &RedisParams, resends: Resends) -> Result<Connector, String> {
        if params.user.is_some() && params.password.is_none() {
            return Err("redis: user= needs password= as well".into());
        }
        let info = RedisConnectionInfo {
            db: i64::from(params.db),
            username: params.user.clone(),
            password: params.password.clone(),
            protocol: ProtocolVersion::RESP2,
        };
        let (addr, target) = if !params.cluster.is_empty() {
            let retries = match resends {
                Resends::Allowed => 3,
                Resends::Never => 0,
            };
            let (client, target) = super::cluster::client(params, retries)?;
            (Addr::Cluster(client), target)
        } else if !params.sentinels.is_empty() {
            let sentinel = SentinelAddr::new(params, &info)?;
            let target = sentinel.target();
            let tls = match params.tls {
                true => Some(TlsConnector::from(Arc::new(tls_config()?))),
                false => None,
            };
            (Addr::Sentinel(sentinel, tls), target)
        } else {
            Self::server_addr(params)?
        };
        Ok(Connector {
            addr,
            info,
            target,
            current: Arc::new(Mutex::new(None)),
            connected_before: AtomicBool::new(false),
        })
    }

    /// `path=`, or `host=`/`port=` with or without TLS.
    fn server_addr(params: &RedisParams) -> Result<(Addr, String), String> {
        Ok(match &params.path {
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
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The current connection, or a new one made before `deadline`. Operations queue here
    /// while one of them connects, so a dead Redis sees one connect attempt at a time. The
    /// attempt runs in a task of its own: the operation that started it may stop being
    /// polled (its client does not read) or be dropped, and those queued behind it still
    /// get their connection, or the attempt's failure, by its deadline.
    pub(crate) async fn get(self: &Arc<Self>, deadline: Instant) -> Result<Live, ConnectError> {
        let mut current = timeout_at(deadline, self.current.clone().lock_owned())
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
        let connector = self.clone();
        let attempt = tokio::spawn(async move {
            let (conn, dead) = timeout_at(deadline, connector.open())
                .await
                .map_err(|_| ConnectError::TimedOut)?
                .map_err(ConnectError::Failed)?;
            if connector.connected_before.swap(true, Ordering::Relaxed) {
                tracing::info!("redis: reconnected to {}", connector.target);
            } else {
                tracing::debug!("redis: connected to {}", connector.target);
            }
            let live = Live {
                conn,
                dead,
                fresh: true,
            };
            *current = Some(live.clone());
            Ok(live)
        });
        // The attempt ends by the deadline; a panic in it is a failed connect.
        attempt.await.unwrap_or_else(|e| {
            Err(ConnectError::Failed(RedisError::from((
                redis::ErrorKind::ClientError,
                "connect task failed",
                e.to_string(),
            ))))
        })
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.addr, Addr::Cluster(_))
    }

    async fn open(&self) -> Result<(Conn, Arc<AtomicBool>), RedisError> {
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
            Addr::Sentinel(sentinel, tls) => {
                let (host, port) = sentinel.master().await?;
                tracing::debug!("redis: sentinels name {host}:{port} as the master");
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                match tls {
                    Some(tls) => {
                        let name = ServerName::try_from(host).map_err(|e| {
                            std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
                        })?;
                        self.start(tls.connect(name, tcp).await?).await
                    }
                    None => self.start(tcp).await,
                }
            }
            // redis-rs reconnects to single nodes itself; `dead` is set by our callers
            // when a request fails on the connection, to make a new one (new topology).
            Addr::Cluster(client) => Ok((
                Conn::Cluster(client.get_async_connection().await?),
                Arc::new(AtomicBool::new(false)),
            )),
        }
    }

    /// Sends `AUTH`/`SELECT` and starts the task that drives the connection; when that
    /// task ends (EOF, reset, all handles dropped) the connection is marked dead.
    async fn start<S>(&self, stream: S) -> Result<(Conn, Arc<AtomicBool>), RedisError>
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
        Ok((Conn::Server(conn), dead))
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

/// True when `e` says the server we reached is not (or no longer) the master: a replica
/// (`READONLY`, an old master after a failover) or a cluster node without the slot (down,
/// or moved or moving elsewhere: redirects come back here when redis-rs does not resend).
/// Nothing was written; a new connection finds the master.
pub(crate) fn is_not_master(e: &RedisError) -> bool {
    use redis::ErrorKind::*;
    matches!(
        e.kind(),
        ReadOnly | ClusterDown | MasterDown | Moved | Ask | TryAgain
    ) || e.to_string().contains("READONLY")
}
