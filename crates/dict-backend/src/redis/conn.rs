//! One multiplexed Redis connection shared by all operations of a dict, made on first use
//! and made again after it broke, so the server starts while Redis is down and resumes
//! when Redis returns.
//!
//! This is `redis::aio::ConnectionManager`'s job, done here because a dict needs two things
//! that manager hides: knowing whether a failed commit had been handed to Redis at all
//! (`Failed` vs `WriteUncertain`), and failing at once while Redis is down instead of
//! waiting for the manager's background reconnect backoff. Like Dovecot, we connect again
//! on the next operation after a failure; `AUTH` and `SELECT` are sent on every connect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushKind,
    RedisConnectionInfo, RedisError,
};
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

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

pub(crate) struct Connector {
    client: Client,
    config: AsyncConnectionConfig,
    /// `host:port` or the socket path, for error messages.
    target: String,
    current: Mutex<Option<Live>>,
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    TimedOut,
    Failed(RedisError),
}

impl Connector {
    /// Checks the parameters; does not connect.
    pub(crate) fn new(params: &RedisParams) -> Result<Connector, String> {
        let (addr, target) = match &params.path {
            Some(path) => {
                if params.tls {
                    return Err(format!(
                        "redis: tls=yes needs a TCP connection, not the UNIX socket {}",
                        path.display()
                    ));
                }
                (
                    ConnectionAddr::Unix(path.clone()),
                    path.display().to_string(),
                )
            }
            None => {
                let target = if params.host.contains(':') {
                    format!("[{}]:{}", params.host, params.port)
                } else {
                    format!("{}:{}", params.host, params.port)
                };
                let addr = if params.tls {
                    install_crypto_provider();
                    ConnectionAddr::TcpTls {
                        host: params.host.clone(),
                        port: params.port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(params.host.clone(), params.port)
                };
                (addr, target)
            }
        };
        if params.user.is_some() && params.password.is_none() {
            return Err("redis: user= needs password= as well".into());
        }
        let info = ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: i64::from(params.db),
                username: params.user.clone(),
                password: params.password.clone(),
                protocol: ProtocolVersion::RESP2,
            },
        };
        let client = Client::open(info).map_err(|e| format!("redis: {e}"))?;
        // Every call is bounded by the caller's deadline; this one only keeps a hanging
        // connect (an address that drops packets) from outliving it.
        let timeout = Duration::from_millis(u64::from(params.timeout_msecs.max(1)));
        let config = AsyncConnectionConfig::new().set_connection_timeout(timeout);
        Ok(Connector {
            client,
            config,
            target,
            current: Mutex::new(None),
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
        let dead = Arc::new(AtomicBool::new(false));
        let flag = dead.clone();
        // The connection reports its own end (EOF, reset) as a Disconnection push, so a
        // connection that died while idle is not handed out again.
        let config = self
            .config
            .clone()
            .set_push_sender(move |info: redis::PushInfo| {
                if info.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Relaxed);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = timeout_at(
            deadline,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| ConnectError::TimedOut)?
        .map_err(ConnectError::Failed)?;
        let live = Live {
            conn,
            dead,
            fresh: true,
        };
        *current = Some(live.clone());
        Ok(live)
    }
}

/// `tls=yes` uses rustls with ring; installed once per process (a provider installed
/// before, by us or anyone else, is kept).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// True when `e` says the connection itself is unusable (as opposed to an error reply).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}
