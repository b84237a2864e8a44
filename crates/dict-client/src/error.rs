//! Errors of lookups and iterations, and the four results of a commit.

use std::fmt;
use std::path::PathBuf;

/// Why a lookup, an iteration or an API call failed. Cloneable, because one broken
/// connection fails every command pending on it with the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dict URI is not a usable `proxy:` URI (Dovecot's texts, e.g. `Invalid URI: …`).
    #[error("{0}")]
    InvalidUri(String),
    /// A key outside `priv/` and `shared/`, or a `priv/` key without a username: Dovecot
    /// 2.3 asserts on these, we refuse them before anything is sent.
    #[error("{0}")]
    InvalidKey(String),
    /// An operation this protocol major cannot express (e.g. hide-log-values on major 3).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The socket could not be connected.
    #[error("net_connect_unix({}) failed: {message}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error kind.
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
    /// The server closed the connection (Dovecot: `Connection closed`). A server closes
    /// without a word on a bad hello, an unknown dict name or a malformed command.
    #[error("Connection closed")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(String),
    /// No input from the server within the request timeout.
    #[error("Dict server timeout: {0}")]
    Timeout(String),
    /// The server sent something that is not a valid reply.
    #[error("{0}")]
    Protocol(String),
    /// The server answered `F`: the backend failed.
    #[error("dict-server returned failure: {0}")]
    Server(String),
    /// The client was shut down while the command was pending.
    #[error("dict client is gone")]
    ClientGone,
}

/// The outcome of a commit: Dovecot's `enum dict_commit_ret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Everything was written.
    Ok,
    /// Written, but an atomic increment found no row to change (the other changes of the
    /// transaction were applied).
    NotFound,
    /// Nothing was written (backend error, connect failure, or the connection was lost
    /// before the commit was sent).
    Failed(String),
    /// The commit was sent but its outcome is unknown: the connection closed or timed out
    /// before the reply, or the backend itself could not tell.
    WriteUncertain(String),
}

impl CommitResult {
    /// True for [`CommitResult::Ok`] and [`CommitResult::NotFound`], which both mean the
    /// transaction was committed.
    pub fn is_committed(&self) -> bool {
        matches!(self, CommitResult::Ok | CommitResult::NotFound)
    }

    /// Dovecot's numeric value: 1 ok, 0 not found, -1 failed, -2 write uncertain.
    pub fn as_dovecot_ret(&self) -> i32 {
        match self {
            CommitResult::Ok => 1,
            CommitResult::NotFound => 0,
            CommitResult::Failed(_) => -1,
            CommitResult::WriteUncertain(_) => -2,
        }
    }
}

impl fmt::Display for CommitResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitResult::Ok => f.write_str("ok"),
            CommitResult::NotFound => f.write_str("not found"),
            CommitResult::Failed(e) => write!(f, "failed: {e}"),
            CommitResult::WriteUncertain(e) => write!(f, "write uncertain: {e}"),
        }
    }
}
