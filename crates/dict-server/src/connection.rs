//! One client connection: the hello, then commands read and replies written until either
//! side is done. Protocol errors close the connection after the replies already due are
//! sent, as Dovecot does; open transactions are simply dropped (rolled back).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use dict_backend::{Change, IterateOptions};
use dict_protocol::codec::ServerCodec;
use dict_protocol::{
    Hello, IterateFlags, ProtocolError, ReplyStyle, Request, ServerLine, MAX_PENDING_COMMANDS,
};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::budget::{ConnectionBudget, ServerBudget};
use crate::command::{self, Barrier, BarrierOpener, ReplyContext};
use crate::metrics;
use crate::registry::{DictHandle, Registry};
use crate::reply_queue::ReplyQueue;
use crate::transactions::{check_key, KeyError, TransactionError, Transactions};

/// Limits and timeouts of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Stop reading while this many reply-bearing commands are pending (Dovecot: 1000).
    pub max_pending: usize,
    /// Longest from reading a request to its reply (`F`, or `W` for a commit that may
    /// have been applied), however many requests wait before it.
    pub request_timeout: Duration,
    /// Longest to wait for pending replies once the connection is closing.
    pub drain_timeout: Duration,
    /// Longest to wait for the hello after accepting.
    pub hello_timeout: Duration,
    /// A connection with nothing pending and nothing read for this long is closed
    /// (Dovecot's clients reconnect by themselves); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Bytes one connection may hold in open transactions.
    pub max_transaction_bytes: usize,
    /// Bytes all connections together may hold in open transactions.
    pub server_budget: Arc<ServerBudget>,
}

/// Default of [`ConnectionSettings::max_transaction_bytes`]: far above what Dovecot's
/// clients buffer (quota_clone: two short keys; METADATA: values of at most 64 KiB).
pub const DEFAULT_MAX_TRANSACTION_BYTES: usize = 16 << 20;
/// Default of the server-wide cap.
pub const DEFAULT_MAX_TRANSACTION_BYTES_TOTAL: usize = 512 << 20;

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_pending: MAX_PENDING_COMMANDS,
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            max_transaction_bytes: DEFAULT_MAX_TRANSACTION_BYTES,
            server_budget: ServerBudget::new(DEFAULT_MAX_TRANSACTION_BYTES_TOTAL),
        }
    }
}

/// Why a connection ends early; logged, never sent (Dovecot sends nothing either).
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Transaction(#[from] TransactionError),
    #[error("{0}")]
    Key(#[from] KeyError),
}

struct Connection {
    reader: FramedRead<OwnedReadHalf, ServerCodec>,
    writer: OwnedWriteHalf,
    out: BytesMut,
    style: ReplyStyle,
    dict: DictHandle,
    transactions: Transactions,
    replies: ReplyQueue,
    next_async_id: u32,
    last_commit: Option<Barrier>,
    /// Reads sent since the last commit: the next commit waits until they have started.
    reads_since_commit: Vec<Barrier>,
    settings: ConnectionSettings,
    tasks: TaskTracker,
    /// No more input is read (EOF, error or shutdown); pending replies are still sent.
    reading: bool,
}

/// Serves one accepted connection until it ends.
pub async fn serve(
    stream: UnixStream,
    registry: Arc<Registry>,
    settings: ConnectionSettings,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let (read_half, write_half) = stream.into_split();
    let mut reader = FramedRead::new(read_half, ServerCodec::new());
    let hello_line = tokio::select! {
        line = tokio::time::timeout(settings.hello_timeout, reader.next()) => match line {
            Ok(line) => line,
            Err(_) => {
                metrics::connection_closed("hello_timeout");
                return debug!("no hello within {:?}; closing", settings.hello_timeout);
            }
        },
        _ = shutdown.cancelled() => return,
    };
    let line = match hello_line {
        Some(Ok(line)) => line,
        Some(Err(e)) => return warn!("handshake failed: {e}"),
        None => return debug!("client closed before the hello"),
    };
    let hello = match Hello::parse(&line) {
        Ok(hello) => hello,
        Err(e) => return warn!("handshake failed: {e}"),
    };
    let Some(dict) = registry.get(&hello.dict_name).cloned() else {
        if registry.is_empty() {
            warn!("No dictionaries configured");
        } else {
            warn!(
                "Unconfigured dictionary name '{}'",
                String::from_utf8_lossy(&hello.dict_name)
            );
        }
        return refuse_after_hello(reader, write_half).await;
    };
    let style = hello.reply_style();
    reader.decoder_mut().set_style(style);
    let span =
        tracing::debug_span!("conn", dict = %dict.name, major = hello.major, minor = hello.minor);
    let conn = Connection {
        reader,
        writer: write_half,
        out: BytesMut::with_capacity(4096),
        style,
        dict,
        transactions: Transactions::new(ConnectionBudget::new(
            settings.server_budget.clone(),
            settings.max_transaction_bytes,
        )),
        replies: ReplyQueue::new(!style.async_ids),
        next_async_id: 1,
        last_commit: None,
        reads_since_commit: Vec::new(),
        settings,
        tasks,
        reading: true,
    };
    tracing::Instrument::instrument(conn.run(shutdown), span).await;
}

/// Ends a connection whose hello named no dict we serve: the client sees end of file
/// ("Connection closed") rather than a failed write, whatever it sent after the hello —
/// its commands are read and dropped until it closes, for a second at most.
async fn refuse_after_hello(
    mut reader: FramedRead<OwnedReadHalf, ServerCodec>,
    mut writer: OwnedWriteHalf,
) {
    let _ = writer.shutdown().await;
    let drain = async { while let Some(Ok(_)) = reader.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

impl Connection {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut drain_deadline = None;
        // Input read or reply written: the idle timeout runs from the later of the two.
        let mut last_activity = tokio::time::Instant::now();
        loop {
            self.process_ready();
            if !self.out.is_empty() {
                if let Err(e) = self.writer.write_all(&self.out).await {
                    debug!("write failed, closing: {e}");
                    break;
                }
                self.out.clear();
                last_activity = tokio::time::Instant::now();
            }
            if !self.reading && self.replies.is_empty() {
                break;
            }
            if !self.reading && drain_deadline.is_none() {
                drain_deadline = Some(tokio::time::Instant::now() + self.settings.drain_timeout);
            }
            let can_read = self.can_read();
            // Idle: nothing pending and nothing read for a while.
            let idle_deadline = self
                .settings
                .idle_timeout
                .filter(|_| self.reading && self.replies.is_empty())
                .map(|t| last_activity + t);
            tokio::select! {
                line = self.replies.next_line(), if !self.replies.is_empty() => {
                    if let Some(line) = line {
                        line.encode(self.style, &mut self.out);
                    }
                }
                input = self.reader.next(), if can_read => {
                    last_activity = tokio::time::Instant::now();
                    self.handle_input(input);
                }
                _ = sleep_until(idle_deadline), if idle_deadline.is_some() => {
                    metrics::connection_closed("idle_timeout");
                    debug!("idle for {:?}; closing", self.settings.idle_timeout.unwrap_or_default());
                    self.reading = false;
                }
                _ = shutdown.cancelled(), if self.reading => {
                    debug!("shutting down: no more commands are read");
                    self.reading = false;
                }
                _ = sleep_until(drain_deadline), if drain_deadline.is_some() => {
                    warn!("{} replies still pending after {:?}; closing", self.replies.len(), self.settings.drain_timeout);
                    break;
                }
            }
        }
        if !self.transactions.is_empty() {
            debug!("rolling back {} open transactions", self.transactions.len());
        }
        let _ = self.writer.shutdown().await;
    }

    fn can_read(&self) -> bool {
        self.reading && self.replies.len() < self.settings.max_pending
    }

    /// Handles everything that needs no waiting: buffered input lines and finished replies,
    /// so that replies to pipelined commands leave in one write.
    fn process_ready(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(Some(line)) = self.replies.next_line().now_or_never() {
                line.encode(self.style, &mut self.out);
                progressed = true;
            }
            if self.can_read() {
                if let Some(input) = self.reader.next().now_or_never() {
                    self.handle_input(input);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn handle_input(&mut self, input: Option<Result<BytesMut, dict_protocol::codec::CodecError>>) {
        match input {
            Some(Ok(line)) => {
                if let Err(e) = self.handle_line(&line) {
                    if matches!(e, Fatal::Transaction(TransactionError::Memory(_))) {
                        metrics::connection_closed("memory_limit");
                    }
                    warn!("closing connection: {e}");
                    self.reading = false;
                }
            }
            Some(Err(e)) => {
                warn!("closing connection: {e}");
                self.reading = false;
            }
            None => {
                debug!("client closed the connection");
                self.reading = false;
            }
        }
    }

    fn reply_context(&mut self) -> ReplyContext {
        let async_id = self.style.async_ids.then(|| {
            let id = self.next_async_id;
            self.next_async_id = self.next_async_id.checked_add(1).unwrap_or(1);
            ServerLine::AsyncId(id).encode(self.style, &mut self.out);
            id
        });
        ReplyContext {
            async_id,
            started: SystemTime::now(),
            deadline: tokio::time::Instant::now() + self.settings.request_timeout,
            timeout: self.settings.request_timeout,
            after_commit: self.last_commit.clone(),
        }
    }

    /// A barrier for a read just read: the next commit waits until it opens.
    fn read_barrier(&mut self) -> BarrierOpener {
        // Reads whose barrier is open already need no waiting: drop them now and then, so
        // a connection that only reads keeps a short list.
        if self.reads_since_commit.len() >= 32 {
            self.reads_since_commit.retain(|b| !b.is_cancelled());
        }
        let (opener, barrier) = command::barrier();
        self.reads_since_commit.push(barrier);
        opener
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), Fatal> {
        let request = Request::parse(line)?;
        let dict = self.dict.dict.clone();
        match request {
            Request::Lookup { key, username } => {
                let username = username.map(|u| u.into_owned()).unwrap_or_default();
                check_key(&key, &username)?;
                let ctx = self.reply_context();
                let done = self.read_barrier();
                self.replies.push(command::lookup::lookup(
                    dict,
                    key.into_owned(),
                    username,
                    ctx,
                    done,
                ));
            }
            Request::Iterate {
                flags,
                max_rows,
                path,
                username,
            } => {
                let username = username.map(|u| u.into_owned()).unwrap_or_default();
                check_key(&path, &username)?;
                let options = IterateOptions {
                    recurse: flags.contains(IterateFlags::RECURSE),
                    sort_by_key: flags.contains(IterateFlags::SORT_BY_KEY),
                    sort_by_value: flags.contains(IterateFlags::SORT_BY_VALUE),
                    no_value: flags.contains(IterateFlags::NO_VALUE),
                    exact_key: flags.contains(IterateFlags::EXACT_KEY),
                    max_rows,
                };
                let ctx = self.reply_context();
                let started = self.read_barrier();
                self.replies.push(command::iterate::iterate(
                    dict,
                    path.into_owned(),
                    username,
                    options,
                    ctx,
                    started,
                ));
            }
            Request::Begin {
                id,
                username,
                expire_secs,
            } => {
                self.transactions.begin(
                    id,
                    username.map(|u| u.into_owned()).unwrap_or_default(),
                    expire_secs,
                )?;
            }
            Request::Set { id, key, value } => {
                self.transactions.change(
                    id,
                    Change::Set {
                        key: key.into_owned(),
                        value: value.into_owned(),
                    },
                )?;
            }
            Request::Unset { id, key } => self.transactions.change(
                id,
                Change::Unset {
                    key: key.into_owned(),
                },
            )?,
            Request::AtomicInc { id, key, diff } => self.transactions.change(
                id,
                Change::Inc {
                    key: key.into_owned(),
                    diff,
                },
            )?,
            Request::Timestamp { id, secs, nsecs } => {
                self.transactions.timestamp(id, secs, nsecs)?
            }
            Request::HideLogValues { id, hide } => self.transactions.hide_log_values(id, hide)?,
            Request::Rollback { id } => {
                self.transactions.finish(id)?;
            }
            Request::Commit { id } | Request::CommitAsync { id } => {
                let is_async = matches!(request, Request::CommitAsync { .. });
                let txn = self.transactions.finish(id)?;
                let ctx = self.reply_context();
                if txn.changes.is_empty() {
                    self.replies
                        .push(command::commit::empty_commit(id, is_async, ctx));
                } else {
                    if !txn.hide_log_values {
                        debug!(id, changes = txn.changes.len(), "commit");
                    }
                    let reads = std::mem::take(&mut self.reads_since_commit);
                    let (reply, barrier) =
                        command::commit::commit(dict, id, is_async, txn, ctx, reads, &self.tasks);
                    self.last_commit = Some(barrier);
                    self.replies.push(reply);
                }
            }
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}
