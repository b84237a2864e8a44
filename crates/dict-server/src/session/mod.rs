//! The rules of one server connection, without I/O: what a line means given the hello's reply
//! style, the open transactions and their limits, key checks, async ids, and the ordering
//! barriers between reads and commits (see [`crate::command`]). Lines and the time go in;
//! [`Action`]s come out, for the connection loop to carry out. Nothing here waits or spawns,
//! so the tests below drive it line by line with time as a value.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use dict_backend::{Change, IterateOptions};
use dict_protocol::{IterateFlags, ProtocolError, ReplyStyle, Request, ServerLine, TransactionId};
use tokio::time::Instant;

use crate::budget::ConnectionBudget;
use crate::command::commit::CommitJob;
use crate::command::{self, Barrier, BarrierOpener, ReplyContext};
use crate::transactions::{check_key, KeyError, TransactionError, Transactions};

/// Reads kept in the list a commit waits for before the open ones are dropped from it.
const READS_BEFORE_PRUNE: usize = 32;

/// Why the session ends early; logged, never sent (Dovecot sends nothing either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Transaction(#[from] TransactionError),
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl CloseReason {
    /// The open transactions reached a byte cap.
    pub fn is_memory_limit(&self) -> bool {
        matches!(self, CloseReason::Transaction(TransactionError::Memory(_)))
    }
}

/// What the connection loop does next.
pub enum Action {
    /// Write this line now: the `*<n>` announcing the id of the command that follows.
    Write(ServerLine<'static>),
    /// Start looking `key` up; `done` opens when the answer is known.
    Lookup {
        key: Vec<u8>,
        username: Vec<u8>,
        ctx: ReplyContext,
        done: BarrierOpener,
    },
    /// Start iterating `path`; `started` opens when the first line is known.
    Iterate {
        path: Vec<u8>,
        username: Vec<u8>,
        options: IterateOptions,
        ctx: ReplyContext,
        started: BarrierOpener,
    },
    /// Commit a transaction with changes, after the requests it must wait for.
    Commit(CommitJob),
    /// Answer a commit of a transaction without changes; no backend is needed.
    EmptyCommit {
        id: TransactionId,
        is_async: bool,
        ctx: ReplyContext,
    },
    /// Read no more lines; the replies already due are still sent.
    Close(CloseReason),
}

/// One connection's protocol state after the hello.
pub struct Session {
    style: ReplyStyle,
    request_timeout: Duration,
    transactions: Transactions,
    next_async_id: u32,
    last_commit: Option<Barrier>,
    /// Reads sent since the last commit: the next commit waits until they have started.
    reads_since_commit: Vec<Barrier>,
    actions: VecDeque<Action>,
    closed: bool,
}

impl Session {
    /// A session answering in `style`, each request due `request_timeout` after it was read,
    /// its transactions holding at most what `budget` allows.
    pub fn new(style: ReplyStyle, request_timeout: Duration, budget: ConnectionBudget) -> Self {
        Session {
            style,
            request_timeout,
            transactions: Transactions::new(budget),
            next_async_id: 1,
            last_commit: None,
            reads_since_commit: Vec::new(),
            actions: VecDeque::with_capacity(4),
            closed: false,
        }
    }

    /// The reply style the hello chose.
    pub fn style(&self) -> ReplyStyle {
        self.style
    }

    /// True once a line closed the session; later lines are ignored.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Transactions still open (rolled back when the connection ends).
    pub fn open_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Handles one request line read at `now` (`wall`: the same moment on the wall clock,
    /// for the timing fields). Its actions are taken with [`Session::poll_action`].
    pub fn handle_line(&mut self, line: &[u8], now: Instant, wall: SystemTime) {
        if self.closed {
            return;
        }
        if let Err(reason) = self.request(line, now, wall) {
            self.closed = true;
            self.actions.push_back(Action::Close(reason));
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The context of a reply-bearing command read now; announces its async id first.
    fn reply_context(&mut self, now: Instant, wall: SystemTime) -> ReplyContext {
        let async_id = self.style.async_ids.then(|| {
            let id = self.next_async_id;
            self.next_async_id = self.next_async_id.checked_add(1).unwrap_or(1);
            self.actions
                .push_back(Action::Write(ServerLine::AsyncId(id)));
            id
        });
        ReplyContext {
            async_id,
            started: wall,
            deadline: now + self.request_timeout,
            timeout: self.request_timeout,
            after_commit: self.last_commit.clone(),
        }
    }

    /// A barrier for a read just read: the next commit waits until it opens.
    fn read_barrier(&mut self) -> BarrierOpener {
        // Reads whose barrier is open already need no waiting: drop them now and then, so
        // a connection that only reads keeps a short list.
        if self.reads_since_commit.len() >= READS_BEFORE_PRUNE {
            self.reads_since_commit.retain(|b| !b.is_cancelled());
        }
        let (opener, barrier) = command::barrier();
        self.reads_since_commit.push(barrier);
        opener
    }

    fn request(&mut self, line: &[u8], now: Instant, wall: SystemTime) -> Result<(), CloseReason> {
        let username = |u: Option<std::borrow::Cow<'_, [u8]>>| -> Vec<u8> {
            u.map(|u| u.into_owned()).unwrap_or_default()
        };
        match Request::parse(line)? {
            Request::Lookup { key, username: u } => {
                let username = username(u);
                check_key(&key, &username)?;
                let ctx = self.reply_context(now, wall);
                let done = self.read_barrier();
                self.actions.push_back(Action::Lookup {
                    key: key.into_owned(),
                    username,
                    ctx,
                    done,
                });
            }
            Request::Iterate {
                flags,
                max_rows,
                path,
                username: u,
            } => {
                let username = username(u);
                check_key(&path, &username)?;
                let options = IterateOptions {
                    recurse: flags.contains(IterateFlags::RECURSE),
                    sort_by_key: flags.contains(IterateFlags::SORT_BY_KEY),
                    sort_by_value: flags.contains(IterateFlags::SORT_BY_VALUE),
                    no_value: flags.contains(IterateFlags::NO_VALUE),
                    exact_key: flags.contains(IterateFlags::EXACT_KEY),
                    max_rows,
                };
                let ctx = self.reply_context(now, wall);
                let started = self.read_barrier();
                self.actions.push_back(Action::Iterate {
                    path: path.into_owned(),
                    username,
                    options,
                    ctx,
                    started,
                });
            }
            Request::Begin {
                id,
                username: u,
                expire_secs,
            } => self.transactions.begin(id, username(u), expire_secs)?,
            Request::Set { id, key, value } => self.transactions.change(
                id,
                Change::Set {
                    key: key.into_owned(),
                    value: value.into_owned(),
                },
            )?,
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
            Request::Commit { id } => self.commit(id, false, now, wall)?,
            Request::CommitAsync { id } => self.commit(id, true, now, wall)?,
        }
        Ok(())
    }

    /// `C` and `D`: the commit waits for the previous commit and the reads sent since.
    fn commit(
        &mut self,
        id: TransactionId,
        is_async: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), CloseReason> {
        let txn = self.transactions.finish(id)?;
        let ctx = self.reply_context(now, wall);
        if txn.changes.is_empty() {
            self.actions
                .push_back(Action::EmptyCommit { id, is_async, ctx });
            return Ok(());
        }
        let earlier_reads = std::mem::take(&mut self.reads_since_commit);
        let (done, barrier) = command::barrier();
        self.last_commit = Some(barrier);
        self.actions.push_back(Action::Commit(CommitJob {
            id,
            is_async,
            txn,
            ctx,
            earlier_reads,
            done,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
