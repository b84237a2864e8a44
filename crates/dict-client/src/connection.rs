//! The connection task: owns the socket (when there is one), writes the commands the
//! [`Client`](crate::Client) handles send it over a channel, and matches the server's
//! replies to the pending commands (protocol-spec §5.1).
//!
//! Connections come and go: one is opened for the first command, closed when idle
//! (`idle_msecs`), and opened again for the next command. Transaction ids keep counting
//! across connections, as Dovecot's client does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use dict_protocol::codec::{ClientCodec, CodecError};
use dict_protocol::session::client::{ClientSession, Received};
use dict_protocol::{
    CommitReply, Hello, IterateFlags, LookupReply, Reply, ReplyKind, Request, TransactionId,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, warn};

use crate::{CommitResult, Error, IterRow, Protocol};

/// How long a refused or not-yet-listening socket is retried (`unix_client_connect_msecs`).
const CONNECT_RETRY: Duration = Duration::from_millis(1000);

/// What the task needs to know; fixed for the client's life.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub socket_path: PathBuf,
    pub dict_name: String,
    pub protocol: Protocol,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_line: usize,
}

pub(crate) type LookupResult = Result<Option<Vec<Vec<u8>>>, Error>;
pub(crate) type RowSender = mpsc::UnboundedSender<Result<IterRow, Error>>;

/// A request from a client handle.
pub(crate) enum Msg {
    Lookup {
        key: Vec<u8>,
        user: Vec<u8>,
        reply: oneshot::Sender<LookupResult>,
    },
    Iterate {
        flags: IterateFlags,
        max_rows: u64,
        path: Vec<u8>,
        user: Vec<u8>,
        rows: RowSender,
    },
    /// Major 3: one S/U/A/T line; `B` goes out lazily before the first one.
    TxLine {
        id: TransactionId,
        user: Vec<u8>,
        line: Request<'static>,
    },
    /// Major 3: `C`, or a local answer when nothing was sent or the transaction broke.
    Commit {
        id: TransactionId,
        reply: oneshot::Sender<CommitResult>,
    },
    /// Major 3: `R`, only when `B` went out.
    Rollback { id: TransactionId },
    /// Major 4: the whole transaction, `B` to `C`, in one write.
    Batch {
        lines: Vec<Request<'static>>,
        retryable: bool,
        reply: oneshot::Sender<CommitResult>,
    },
}

struct Conn {
    reader: FramedRead<OwnedReadHalf, ClientCodec>,
    writer: OwnedWriteHalf,
    wbuf: BytesMut,
    codec: ClientCodec,
}

impl Conn {
    fn send(&mut self, req: &Request<'_>) {
        // Encoding into a buffer cannot fail.
        let _ = self.codec.encode(req, &mut self.wbuf);
    }
}

enum PendingKind {
    Lookup {
        req: Request<'static>,
        reply: oneshot::Sender<LookupResult>,
    },
    Iterate {
        req: Request<'static>,
        rows: RowSender,
        got_rows: bool,
    },
    Commit {
        reply: oneshot::Sender<CommitResult>,
        batch: Option<(Vec<Request<'static>>, bool)>,
    },
}

struct Pending {
    kind: PendingKind,
    retried: bool,
}

impl Pending {
    fn reply_kind(&self) -> ReplyKind {
        match self.kind {
            PendingKind::Lookup { .. } => ReplyKind::Lookup,
            PendingKind::Iterate { .. } => ReplyKind::Iterate,
            PendingKind::Commit { .. } => ReplyKind::Commit,
        }
    }

    /// Whether it may be sent again on a new connection: lookups, iterations that have not
    /// returned rows yet, and (major 4 only, as 2.4 does) batches without an atomic inc.
    fn retryable(&self, protocol: Protocol) -> bool {
        !self.retried
            && match &self.kind {
                PendingKind::Lookup { .. } => true,
                PendingKind::Iterate { got_rows, .. } => !got_rows,
                PendingKind::Commit {
                    batch: Some((_, retryable)),
                    ..
                } => protocol == Protocol::V4 && *retryable,
                PendingKind::Commit { batch: None, .. } => false,
            }
    }

    fn fail(self, err: &Error) {
        match self.kind {
            PendingKind::Lookup { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            PendingKind::Iterate { rows, .. } => {
                let _ = rows.send(Err(err.clone()));
            }
            PendingKind::Commit { reply, .. } => {
                // The commit may have been applied: Dovecot reports WRITE_UNCERTAIN.
                let _ = reply.send(CommitResult::WriteUncertain(err.to_string()));
            }
        }
    }
}

enum TxState {
    /// `B` went out on the current connection.
    Open,
    /// The connection broke (or never came up) after the transaction started; its commit
    /// fails with this text and nothing more is sent for it.
    Failed(String),
}

/// Why the connection is being dropped; decides what happens to pending commands.
enum Disconnect {
    /// The server closed it, or reading/writing failed.
    Lost(Error),
    /// No input within the request timeout: pending lookups and iterations are re-sent.
    Timeout(Error),
    /// The server sent garbage: everything pending fails.
    Protocol(Error),
}

pub(crate) struct Task {
    settings: Settings,
    rx: mpsc::UnboundedReceiver<Msg>,
    rx_closed: bool,
    conn: Option<Conn>,
    /// Commands sent and not answered yet, matched to the server's lines.
    pending: ClientSession<Pending>,
    txs: HashMap<TransactionId, TxState>,
    /// A failed connect is not retried within the same wall-clock second, as in Dovecot.
    connect_failure: Option<(u64, Error)>,
    /// Last time something happened: for the request timeout (oldest command sent, or last
    /// input) and the idle timeout.
    last_activity: Instant,
}

impl Task {
    pub(crate) fn new(settings: Settings, rx: mpsc::UnboundedReceiver<Msg>) -> Task {
        Task {
            settings,
            rx,
            rx_closed: false,
            conn: None,
            pending: ClientSession::new(),
            txs: HashMap::new(),
            connect_failure: None,
            last_activity: Instant::now(),
        }
    }

    /// Runs until every client handle is gone and nothing is pending.
    pub(crate) async fn run(mut self) {
        loop {
            let unsent = self.conn.as_ref().is_some_and(|c| !c.wbuf.is_empty());
            if self.rx_closed && self.pending.is_empty() && !unsent {
                break;
            }
            let request_deadline = (!self.pending.is_empty())
                .then(|| self.last_activity + self.settings.request_timeout);
            let idle = self.conn.is_some()
                && self.pending.is_empty()
                && !unsent
                && !self.txs.values().any(|t| matches!(t, TxState::Open));
            let idle_deadline = idle.then(|| self.last_activity + self.settings.idle_timeout);

            let (reader, writer) = match self.conn.as_mut() {
                Some(c) => (Some(&mut c.reader), Some((&mut c.writer, &mut c.wbuf))),
                None => (None, None),
            };
            tokio::select! {
                biased;
                msg = self.rx.recv(), if !self.rx_closed => match msg {
                    Some(msg) => {
                        self.handle_msg(msg).await;
                        // Take what else is queued, so pipelined commands (and the hello)
                        // leave in one write.
                        for _ in 0..256 {
                            match self.rx.try_recv() {
                                Ok(msg) => self.handle_msg(msg).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => self.rx_closed = true,
                },
                line = next_line(reader) => self.handle_input(line).await,
                res = write_some(writer), if unsent => {
                    if let Err(e) = res {
                        let path = self.settings.socket_path.display();
                        self.disconnect(Disconnect::Lost(Error::Io(format!("write({path}) failed: {e}")))).await;
                    }
                }
                _ = sleep_until(request_deadline) => {
                    let secs = self.settings.request_timeout.as_secs_f64();
                    let err = Error::Timeout(format!("No input for {secs:.3} secs ({} commands pending)", self.pending.len()));
                    warn!("{err}");
                    self.disconnect(Disconnect::Timeout(err)).await;
                }
                _ = sleep_until(idle_deadline) => {
                    debug!(path = %self.settings.socket_path.display(), "idle: disconnecting");
                    self.conn = None;
                }
            }
        }
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.writer.shutdown().await;
        }
    }

    async fn connect(&mut self) -> Result<(), Error> {
        if self.conn.is_some() {
            return Ok(());
        }
        let now_sec = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some((sec, err)) = &self.connect_failure {
            if *sec == now_sec {
                return Err(err.clone());
            }
        }
        let path = &self.settings.socket_path;
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::WouldBlock
                    ) && started.elapsed() < CONNECT_RETRY =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    let err = Error::Connect {
                        path: path.clone(),
                        kind: e.kind(),
                        message: os_error_text(&e),
                    };
                    self.connect_failure = Some((now_sec, err.clone()));
                    return Err(err);
                }
            }
        };
        self.connect_failure = None;
        debug!(path = %path.display(), dict = %self.settings.dict_name, "connected");
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            reader: FramedRead::new(read, ClientCodec::new(self.settings.max_line)),
            writer: write,
            wbuf: BytesMut::with_capacity(512),
            codec: ClientCodec::new(self.settings.max_line),
        };
        // No reply comes for the hello (protocol-spec §3); it leaves with the first command.
        let name = self.settings.dict_name.as_bytes();
        let hello = match self.settings.protocol {
            Protocol::V3 => Hello::v3(name),
            Protocol::V4 => Hello::v4(name),
        };
        let _ = conn.codec.encode(&hello, &mut conn.wbuf);
        self.conn = Some(conn);
        Ok(())
    }

    fn touch_if_first(&mut self) {
        if self.pending.is_empty() {
            self.last_activity = Instant::now();
        }
    }

    /// Sends a reply-bearing command, connecting first if needed.
    async fn start(&mut self, pending: Pending) {
        if let Err(e) = self.connect().await {
            pending.fail_connect(&e);
            return;
        }
        self.touch_if_first();
        let conn = self.conn.as_mut().expect("connected");
        match &pending.kind {
            PendingKind::Lookup { req, .. } | PendingKind::Iterate { req, .. } => conn.send(req),
            PendingKind::Commit {
                batch: Some((lines, _)),
                ..
            } => lines.iter().for_each(|l| conn.send(l)),
            PendingKind::Commit { batch: None, .. } => {
                unreachable!("major 3 commits are sent by handle_msg")
            }
        }
        self.pending.sent(pending.reply_kind(), pending);
    }

    async fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Lookup { key, user, reply } => {
                let req = Request::Lookup {
                    key: key.into(),
                    username: Some(user.into()),
                };
                self.start(Pending {
                    kind: PendingKind::Lookup { req, reply },
                    retried: false,
                })
                .await;
            }
            Msg::Iterate {
                flags,
                max_rows,
                path,
                user,
                rows,
            } => {
                let req = Request::Iterate {
                    flags,
                    max_rows,
                    path: path.into(),
                    username: Some(user.into()),
                };
                self.start(Pending {
                    kind: PendingKind::Iterate {
                        req,
                        rows,
                        got_rows: false,
                    },
                    retried: false,
                })
                .await;
            }
            Msg::Batch {
                lines,
                retryable,
                reply,
            } => {
                let kind = PendingKind::Commit {
                    reply,
                    batch: Some((lines, retryable)),
                };
                self.start(Pending {
                    kind,
                    retried: false,
                })
                .await;
            }
            Msg::TxLine { id, user, line } => match (self.txs.get(&id), self.conn.as_mut()) {
                (Some(TxState::Open), Some(conn)) => conn.send(&line),
                (Some(TxState::Failed(_)), _) => {}
                // Open transactions break when the connection goes, so this is not expected.
                (Some(TxState::Open), None) => {
                    self.txs
                        .insert(id, TxState::Failed(Error::Closed.to_string()));
                }
                (None, _) => match self.connect().await {
                    Ok(()) => {
                        self.touch_if_first();
                        let conn = self.conn.as_mut().expect("connected");
                        conn.send(&Request::Begin {
                            id,
                            username: Some(user.into()),
                            expire_secs: None,
                        });
                        conn.send(&line);
                        self.txs.insert(id, TxState::Open);
                    }
                    Err(e) => {
                        self.txs.insert(id, TxState::Failed(e.to_string()));
                    }
                },
            },
            Msg::Commit { id, reply } => match (self.txs.remove(&id), self.conn.is_some()) {
                // Nothing was ever sent: Dovecot answers OK without the server.
                (None, _) => {
                    let _ = reply.send(CommitResult::Ok);
                }
                (Some(TxState::Failed(e)), _) => {
                    let _ = reply.send(CommitResult::Failed(e));
                }
                (Some(TxState::Open), false) => {
                    let _ = reply.send(CommitResult::Failed(Error::Closed.to_string()));
                }
                (Some(TxState::Open), true) => {
                    self.touch_if_first();
                    self.conn
                        .as_mut()
                        .expect("checked")
                        .send(&Request::Commit { id });
                    self.pending.sent(
                        ReplyKind::Commit,
                        Pending {
                            kind: PendingKind::Commit { reply, batch: None },
                            retried: false,
                        },
                    );
                }
            },
            Msg::Rollback { id } => {
                if let (Some(TxState::Open), Some(conn)) =
                    (self.txs.remove(&id), self.conn.as_mut())
                {
                    conn.send(&Request::Rollback { id });
                    self.touch_if_first();
                }
            }
        }
    }

    async fn handle_input(&mut self, line: Option<Result<BytesMut, CodecError>>) {
        let line = match line {
            None => return self.disconnect(Disconnect::Lost(Error::Closed)).await,
            Some(Err(CodecError::Io(e))) => {
                let path = self.settings.socket_path.display();
                return self
                    .disconnect(Disconnect::Lost(Error::Io(format!(
                        "read({path}) failed: {e}"
                    ))))
                    .await;
            }
            Some(Err(e)) => {
                return self
                    .disconnect(Disconnect::Protocol(Error::Protocol(e.to_string())))
                    .await
            }
            Some(Ok(line)) => line,
        };
        self.last_activity = Instant::now();
        if let Err(e) = self.handle_line(&line) {
            warn!(line = %String::from_utf8_lossy(&line), "dict server: {e}");
            self.disconnect(Disconnect::Protocol(e)).await;
        }
    }

    /// Hands one server line to the command it answers (matched by the session).
    fn handle_line(&mut self, line: &[u8]) -> Result<(), Error> {
        let protocol = |e: &dyn std::fmt::Display| Error::Protocol(e.to_string());
        let (pending, kind, body) = match self.pending.receive(line).map_err(|e| protocol(&e))? {
            Received::AsyncId(_) => return Ok(()),
            Received::Row { request, body } => {
                if let PendingKind::Iterate { rows, got_rows, .. } = &mut request.kind {
                    let Reply::IterRow { key, values } = parse_reply(body, ReplyKind::Iterate)?
                    else {
                        unreachable!("a row's body starts with O")
                    };
                    *got_rows = true;
                    let row = IterRow {
                        key: key.into_owned(),
                        values: values.into_iter().map(|v| v.into_owned()).collect(),
                    };
                    // The stream may have been dropped; the rows are still read off the wire.
                    let _ = rows.send(Ok(row));
                }
                return Ok(());
            }
            Received::Final {
                request,
                kind,
                body,
            } => (request, kind, body),
        };
        let reply = match parse_reply(body, kind) {
            Ok(reply) => reply,
            Err(e) => {
                pending.fail(&e);
                return Err(e);
            }
        };
        match (pending.kind, reply) {
            (PendingKind::Lookup { reply, .. }, Reply::Lookup(r)) => {
                let _ = reply.send(match r {
                    LookupReply::Found(values) => {
                        Ok(Some(values.into_iter().map(|v| v.into_owned()).collect()))
                    }
                    LookupReply::NotFound => Ok(None),
                    LookupReply::Failed(e) => {
                        Err(Error::Server(String::from_utf8_lossy(&e).into_owned()))
                    }
                });
            }
            (PendingKind::Iterate { .. }, Reply::IterEnd) => {}
            (PendingKind::Iterate { rows, .. }, Reply::IterFailed(e)) => {
                let _ = rows.send(Err(Error::Server(String::from_utf8_lossy(&e).into_owned())));
            }
            (PendingKind::Commit { reply, .. }, Reply::Commit { result, .. }) => {
                let text = |e: &[u8]| String::from_utf8_lossy(e).into_owned();
                let _ = reply.send(match result {
                    CommitReply::Ok => CommitResult::Ok,
                    CommitReply::NotFound => CommitResult::NotFound,
                    CommitReply::Failed(e) => CommitResult::Failed(text(&e)),
                    CommitReply::WriteUncertain(e) => CommitResult::WriteUncertain(text(&e)),
                });
            }
            _ => unreachable!("Reply::parse answers the kind it was given"),
        }
        Ok(())
    }

    /// Drops the connection. Open transactions break; pending commands fail, except that
    /// after a timeout (and with major 4 after any loss) the retryable ones are sent again
    /// once on a new connection.
    async fn disconnect(&mut self, why: Disconnect) {
        self.conn = None;
        let (err, retry) = match why {
            Disconnect::Lost(e) => (e, self.settings.protocol == Protocol::V4),
            Disconnect::Timeout(e) => (e, true),
            Disconnect::Protocol(e) => (e, false),
        };
        debug!(path = %self.settings.socket_path.display(), "disconnected: {err}");
        for state in self.txs.values_mut() {
            if matches!(state, TxState::Open) {
                *state = TxState::Failed(err.to_string());
            }
        }
        let mut again = Vec::new();
        for p in self.pending.drain() {
            if retry && p.retryable(self.settings.protocol) {
                again.push(p);
            } else {
                p.fail(&err);
            }
        }
        if again.is_empty() {
            return;
        }
        debug!("re-sending {} commands", again.len());
        for mut p in again {
            p.retried = true;
            self.start(p).await;
        }
    }
}

impl Pending {
    /// A command that never reached a server: a commit of it certainly failed.
    fn fail_connect(self, err: &Error) {
        match self.kind {
            PendingKind::Commit { reply, .. } if !self.retried => {
                let _ = reply.send(CommitResult::Failed(err.to_string()));
            }
            _ => self.fail(err),
        }
    }
}

async fn next_line(
    reader: Option<&mut FramedRead<OwnedReadHalf, ClientCodec>>,
) -> Option<Result<BytesMut, CodecError>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn write_some(writer: Option<(&mut OwnedWriteHalf, &mut BytesMut)>) -> std::io::Result<()> {
    match writer {
        Some((w, buf)) => w.write_buf(buf).await.map(|_| ()),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Reads a reply body answering a `kind` command.
fn parse_reply(body: &[u8], kind: ReplyKind) -> Result<Reply<'_>, Error> {
    Reply::parse(body, kind)
        .map(|(reply, _timings)| reply)
        .map_err(|e| Error::Protocol(format!("Invalid reply: {e}")))
}

/// `No such file or directory`, without Rust's ` (os error 2)` suffix.
fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
