//! One module per reply-bearing command: each turns a parsed request into the stream of
//! lines that answers it. Commands without replies live in [`crate::transactions`]; which
//! barriers each command waits for is decided by [`crate::session`].
//!
//! Ordering (protocol-spec §5.4): a read (`L`, `I`) starts as soon
//! as it is read, once the commits sent before it have finished; a commit starts once the
//! commits and reads sent before it have finished (a read has finished when its answer, or
//! an iteration's first row, is known). So a read never sees a commit sent after it, and
//! always sees one sent before it, as with Dovecot. Every wait counts against the request's
//! deadline, which runs from the moment the request was read.

pub mod commit;
pub mod iterate;
pub mod lookup;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dict_protocol::Timings;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Opens when an earlier request of the connection has gone far enough for a later one to
/// start: a commit when it has finished, a read when its first result is known. (A
/// cancellation token used as a one-shot latch: `cancelled()` waits, `is_cancelled()` peeks.)
pub type Barrier = CancellationToken;

/// Opens its [`Barrier`] when dropped, so a request that fails or is cancelled never
/// blocks the ones after it.
pub type BarrierOpener = DropGuard;

/// A closed [`Barrier`] and the handle that opens it.
pub fn barrier() -> (BarrierOpener, Barrier) {
    let token = CancellationToken::new();
    (token.clone().drop_guard(), token)
}

/// What a reply-bearing command needs besides its own fields.
#[derive(Clone)]
pub struct ReplyContext {
    /// `Some(n)` when replies carry `+n`.
    pub async_id: Option<u32>,
    /// When the command line was read.
    pub started: SystemTime,
    /// When the command must have its final reply (or an iteration its first line):
    /// read time plus the request timeout, however long it waited behind others.
    pub deadline: Instant,
    /// The request timeout itself: the longest wait for each further iteration row.
    pub timeout: Duration,
    /// Commits sent before this command.
    pub after_commit: Option<Barrier>,
}

impl ReplyContext {
    /// Start and end (now) of the command as the four timing fields.
    pub fn timings(&self) -> Timings {
        let (start_secs, start_usecs) = split_time(self.started);
        let (end_secs, end_usecs) = split_time(SystemTime::now());
        Timings {
            start_secs,
            start_usecs,
            end_secs,
            end_usecs,
        }
    }

    /// Waits for earlier commits of the connection.
    pub async fn wait_for_commits(&self) {
        if let Some(barrier) = &self.after_commit {
            barrier.cancelled().await;
        }
    }
}

fn split_time(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_micros())
}
