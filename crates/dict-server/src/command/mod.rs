//! One module per reply-bearing command: each turns a parsed request into the stream of
//! lines that answers it. Commands without replies live in [`crate::transactions`].

pub mod commit;
pub mod iterate;
pub mod lookup;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dict_protocol::Timings;
use futures::future::{BoxFuture, Shared};

/// Resolves when every commit sent earlier on the connection has finished, so that a read
/// sent after a commit sees its data (Dovecot applies commits before later commands).
pub type CommitBarrier = Shared<BoxFuture<'static, ()>>;

/// What a reply-bearing command needs besides its own fields.
#[derive(Clone)]
pub struct ReplyContext {
    /// `Some(n)` when replies carry `+n`.
    pub async_id: Option<u32>,
    /// When the command line was read.
    pub started: SystemTime,
    /// Commits sent before this command.
    pub barrier: Option<CommitBarrier>,
    /// Longest a backend may take before the client gets a failure.
    pub timeout: Duration,
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
        if let Some(barrier) = &self.barrier {
            barrier.clone().await;
        }
    }
}

fn split_time(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_micros())
}
