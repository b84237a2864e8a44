//! The client handle: cheap to clone, every call a message to the connection task with its
//! own reply channel, so any number of lookups, iterations and commits can be in flight on
//! one connection at once.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dict_protocol::namespace::{self, KeyRefusal};
use dict_protocol::{IterateFlags, TransactionId};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use crate::connection::{Msg, Settings, Task};
use crate::transaction::Transaction;
use crate::uri::{ProxyUri, DEFAULT_BASE_DIR};
use crate::{Error, Protocol};

/// Client settings that are not part of the URI.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Protocol major: 3 speaks to Dovecot 2.3.17–2.3.21 servers, 4 to 2.4.
    pub protocol: Protocol,
    /// Where relative and empty URI paths are resolved (doveadm's `base_dir`).
    pub base_dir: PathBuf,
    /// No input for this long while commands are pending drops the connection (Dovecot:
    /// 30 s). Lookups and iterations are then re-sent once; commits become write-uncertain.
    pub request_timeout: Duration,
    /// Overrides the URI's `idle_msecs`.
    pub idle_timeout: Option<Duration>,
    /// Longest server line accepted.
    pub max_line: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            protocol: Protocol::V3,
            base_dir: PathBuf::from(DEFAULT_BASE_DIR),
            request_timeout: Duration::from_secs(30),
            idle_timeout: None,
            max_line: dict_protocol::codec::ClientCodec::DEFAULT_MAX_LINE,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    /// Transaction ids: 1, 2, 3… for the life of the client, across reconnects.
    next_id: AtomicU32,
    pub(crate) protocol: Protocol,
    warn_slow: Duration,
    uri: ProxyUri,
}

/// A dict client for one `proxy:` URI. Clones share the connection.
///
/// Must be created inside a tokio runtime: it spawns the task that owns the connection.
/// The task ends when the last clone is dropped and nothing is pending any more, so a
/// commit whose future was dropped still completes.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("uri", &self.shared.uri)
            .field("protocol", &self.shared.protocol)
            .finish()
    }
}

/// One iteration row: the full key and its values (one per value column; a single empty
/// value for NO_VALUE iterations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterRow {
    /// The full key.
    pub key: Vec<u8>,
    /// The values.
    pub values: Vec<Vec<u8>>,
}

impl Client {
    /// Parses `uri` (`proxy:[idle_msecs=N:][warn_slow_msecs=N:][path]:name`) and starts the
    /// connection task. Nothing is connected until the first command.
    pub fn open(uri: &str, options: ClientOptions) -> Result<Client, Error> {
        let parsed = ProxyUri::parse(uri, &options.base_dir)?;
        Ok(Client::with_uri(parsed, options))
    }

    /// Starts a client for an already parsed URI.
    pub fn with_uri(uri: ProxyUri, options: ClientOptions) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = Settings {
            socket_path: uri.socket_path.clone(),
            dict_name: uri.dict_name.clone(),
            protocol: options.protocol,
            request_timeout: options.request_timeout,
            idle_timeout: options.idle_timeout.unwrap_or(uri.idle_timeout),
            max_line: options.max_line,
        };
        tokio::spawn(Task::new(settings, rx).run());
        let shared = Shared {
            tx,
            next_id: AtomicU32::new(1),
            protocol: options.protocol,
            warn_slow: uri.warn_slow,
            uri,
        };
        Client {
            shared: Arc::new(shared),
        }
    }

    /// The URI this client talks to.
    pub fn uri(&self) -> &ProxyUri {
        &self.shared.uri
    }

    /// The protocol major in use.
    pub fn protocol(&self) -> Protocol {
        self.shared.protocol
    }

    pub(crate) fn next_transaction_id(&self) -> TransactionId {
        // 0 is skipped on wrap-around: it is a valid id, but Dovecot never uses it.
        loop {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub(crate) fn send(&self, msg: Msg) -> Result<(), Error> {
        self.shared.tx.send(msg).map_err(|_| Error::ClientGone)
    }

    pub(crate) fn warn_if_slow(&self, what: &str, key: &[u8], started: Instant) {
        let took = started.elapsed();
        if took >= self.shared.warn_slow {
            warn!(
                "dict {what} for {} took {:.3} secs",
                String::from_utf8_lossy(key),
                took.as_secs_f64()
            );
        }
    }

    /// Looks up `key` and returns its first value (`None`: not found). `user` is needed for
    /// `priv/` keys and ignored by the server for `shared/` ones.
    pub async fn lookup(
        &self,
        key: impl AsRef<[u8]>,
        user: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lookup_values(key, user).await?.map(|mut values| {
            if values.is_empty() {
                Vec::new()
            } else {
                values.swap_remove(0)
            }
        }))
    }

    /// Looks up `key` and returns all its values (several for multi-column SQL maps; the
    /// server must see hello minor ≥ 2 for that, which major 3 and 4 clients send).
    pub async fn lookup_values(
        &self,
        key: impl AsRef<[u8]>,
        user: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let (key, user) = (key.as_ref(), user.as_ref());
        check_key(key, user)?;
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Lookup {
            key: key.to_vec(),
            user: user.to_vec(),
            reply,
        })?;
        let result = rx.await.map_err(|_| Error::ClientGone)?;
        self.warn_if_slow("lookup", key, started);
        result
    }

    /// Iterates under `path`: a stream of rows, ending after the last row or at the first
    /// error. The command is sent when the stream is first polled. `max_rows` 0 is no limit.
    pub fn iterate(
        &self,
        path: impl AsRef<[u8]>,
        user: impl AsRef<[u8]>,
        flags: IterateFlags,
        max_rows: u64,
    ) -> Iter {
        let (path, user) = (path.as_ref(), user.as_ref());
        let start = check_key(path, user).map(|()| Msg::Iterate {
            flags,
            max_rows,
            path: path.to_vec(),
            user: user.to_vec(),
            rows: mpsc::unbounded_channel().0,
        });
        Iter {
            client: self.clone(),
            start: Some(start),
            rows: None,
            max_rows,
            seen: 0,
            done: false,
            path: path.to_vec(),
            started: Instant::now(),
        }
    }

    /// Starts a transaction whose `priv/` keys belong to `user`. Nothing is sent until the
    /// first change (major 3) or the commit (major 4).
    pub fn transaction(&self, user: impl AsRef<[u8]>) -> Transaction {
        Transaction::new(self.clone(), user.as_ref().to_vec())
    }
}

/// A key must be under `priv/` (with a username) or `shared/` (protocol-spec §4); the
/// messages are those of Dovecot's client library.
pub(crate) fn check_key(key: &[u8], user: &[u8]) -> Result<(), Error> {
    let message = match namespace::check_key(key, user) {
        Ok(_) => return Ok(()),
        Err(KeyRefusal::NoUsername) => "A username is required for priv/ keys",
        Err(KeyRefusal::NoNamespace) => "Key must begin with 'priv/' or 'shared/'",
    };
    Err(Error::InvalidKey(format!(
        "{message}: {}",
        String::from_utf8_lossy(key)
    )))
}

/// The rows of one iteration, as a [`Stream`].
pub struct Iter {
    client: Client,
    start: Option<Result<Msg, Error>>,
    rows: Option<mpsc::UnboundedReceiver<Result<IterRow, Error>>>,
    max_rows: u64,
    seen: u64,
    done: bool,
    path: Vec<u8>,
    started: Instant,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("path", &String::from_utf8_lossy(&self.path))
            .field("seen", &self.seen)
            .finish()
    }
}

impl Stream for Iter {
    type Item = Result<IterRow, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(start) = this.start.take() {
            let msg = match start {
                Ok(Msg::Iterate {
                    flags,
                    max_rows,
                    path,
                    user,
                    ..
                }) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    this.rows = Some(rx);
                    this.started = Instant::now();
                    Msg::Iterate {
                        flags,
                        max_rows,
                        path,
                        user,
                        rows: tx,
                    }
                }
                Ok(_) => unreachable!("iterate builds an Iterate message"),
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if let Err(e) = this.client.send(msg) {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
        let rows = this.rows.as_mut().expect("started");
        match rows.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                this.client
                    .warn_if_slow("iteration", &this.path, this.started);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(row))) => {
                this.seen += 1;
                // A server that ignores max_rows is cut short here; the rest is still read
                // off the wire by the connection task.
                if this.max_rows > 0 && this.seen >= this.max_rows {
                    this.done = true;
                }
                Poll::Ready(Some(Ok(row)))
            }
        }
    }
}
