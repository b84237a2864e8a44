//! One client connection: the hello, then commands read and replies written until either
//! side is done. Protocol errors close the connection after the replies already due are
//! sent, as Dovecot does; open transactions are simply dropped (rolled back).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use dict_protocol::codec::ServerCodec;
use dict_protocol::{Hello, ReplyStyle, ServerLine, MAX_PENDING_COMMANDS};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::budget::{ConnectionBudget, ServerBudget};
use crate::command;
use crate::metrics;
use crate::registry::{DictHandle, Registry};
use crate::reply_queue::ReplyQueue;
use crate::session::{Action, Session};

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

struct Connection {
    reader: FramedRead<OwnedReadHalf, ServerCodec>,
    writer: OwnedWriteHalf,
    out: BytesMut,
    style: ReplyStyle,
    dict: DictHandle,
    /// What each line means; this file only carries out its actions.
    session: Session,
    replies: ReplyQueue,
    settings: ConnectionSettings,
    tasks: TaskTracker,
    /// No more input is read (EOF, error or shutdown); pending replies are still sent.
    reading: bool,
    /// `out` holds only `*<n>` announcements. They wait for the next reply line and leave
    /// in its write: a write and a wake-up of the client less per request. Every pending
    /// command answers by its deadline, so the wait is bounded by the request timeout; it
    /// needs no timer of its own (arming one per request woke the timer driver each time).
    only_announcements: bool,
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
        session: Session::new(
            style,
            settings.request_timeout,
            ConnectionBudget::new(
                settings.server_budget.clone(),
                settings.max_transaction_bytes,
            ),
        ),
        replies: ReplyQueue::new(!style.async_ids),
        settings,
        tasks,
        reading: true,
        only_announcements: false,
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
            let hold = self.only_announcements && self.reading && !self.replies.is_empty();
            if !hold && !self.out.is_empty() {
                self.only_announcements = false;
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
                        self.encode_reply(&line);
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
        if self.session.open_transactions() > 0 {
            debug!(
                "rolling back {} open transactions",
                self.session.open_transactions()
            );
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
                self.encode_reply(&line);
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

    fn encode_reply(&mut self, line: &ServerLine<'_>) {
        line.encode(self.style, &mut self.out);
        self.only_announcements = false;
    }

    fn handle_input(&mut self, input: Option<Result<BytesMut, dict_protocol::codec::CodecError>>) {
        match input {
            Some(Ok(line)) => {
                self.session
                    .handle_line(&line, tokio::time::Instant::now(), SystemTime::now());
                while let Some(action) = self.session.poll_action() {
                    self.execute(action);
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

    /// Carries out one action of the session: each command runs as its own future.
    fn execute(&mut self, action: Action) {
        let dict = || self.dict.dict.clone();
        match action {
            Action::Write(line) => {
                if self.out.is_empty() {
                    self.only_announcements = true;
                }
                line.encode(self.style, &mut self.out);
            }
            Action::Lookup {
                key,
                username,
                ctx,
                done,
            } => {
                // In the connection's task when the backend allows it and the reply is
                // polled at once: first in line, or replies sent as they complete.
                let in_task = !(self.dict.dict.lookups_stand_alone()
                    && (self.replies.is_empty() || !self.replies.is_ordered()));
                let reply = command::lookup::lookup(dict(), key, username, ctx, done, in_task);
                self.replies.push(reply);
            }
            Action::Iterate {
                path,
                username,
                options,
                ctx,
                started,
            } => {
                let reply =
                    command::iterate::iterate(dict(), path, username, options, ctx, started);
                self.replies.push(reply);
            }
            Action::Commit(job) => {
                if !job.txn.hide_log_values {
                    debug!(id = job.id, changes = job.txn.changes.len(), "commit");
                }
                let reply = command::commit::commit(dict(), job, &self.tasks);
                self.replies.push(reply);
            }
            Action::EmptyCommit { id, is_async, ctx } => {
                self.replies
                    .push(command::commit::empty_commit(id, is_async, ctx));
            }
            Action::Close(reason) => {
                if reason.is_memory_limit() {
                    metrics::connection_closed("memory_limit");
                }
                warn!("closing connection: {reason}");
                self.reading = false;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}
