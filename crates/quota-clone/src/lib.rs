//! Writes users' quota usage to a dict server exactly as Dovecot's `quota_clone` plugin does:
//! one transaction per user, setting `priv/quota/storage` (bytes) and
//! `priv/quota/messages`, with the user as the transaction's username:
//!
//! ```text
//! H3\t2\t0\t\t<name>\nB1\t<user>\nS1\tpriv/quota/storage\t<bytes>\nS1\tpriv/quota/messages\t<n>\nC1\n
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut registry = dict_server::Registry::new();
//! # registry.insert("quota", std::sync::Arc::new(dict_backend::MemoryDict::new()));
//! # let server =
//! #     dict_server::testing::InProcessServer::start(registry, Default::default()).await;
//! # let uri = format!("proxy:{}:quota", server.path.display());
//! use dict_client::ClientOptions;
//! use quota_clone::{QuotaClone, Usage};
//!
//! // `uri` is what quota_clone_dict says, e.g. "proxy::quota".
//! let clone = QuotaClone::open(&uri, ClientOptions::default())?;
//! clone.write("alice", Usage { bytes: 70_000, messages: 7 }).await?;
//! let stored = clone.client().lookup(quota_clone::STORAGE_KEY, "alice").await?;
//! assert_eq!(stored.as_deref(), Some(&b"70000"[..]));
//! # Ok(()) }
//! ```
//!
//! * [`QuotaClone`] writes one user's usage, optionally unsetting the keys first
//!   ([`QuotaClone::with_unset`], Dovecot 2.4's `quota_clone_unset`, in a safer order).
//! * [`Coalescer`] batches rapid updates per user for long-running callers, flushing at most
//!   every N seconds per user like the plugin's 10 s timer.
//! * [`sync`] writes many users with bounded concurrency and counts the outcomes.
//! * `export` (feature `export`, on by default) reads everybody's cloned quota back,
//!   straight from the dict's backend.

#[cfg(feature = "cli")]
pub mod cli;
mod coalesce;
#[cfg(feature = "export")]
pub mod export;
pub mod sync;

use std::future::Future;

use dict_client::{Client, ClientOptions, CommitResult};

pub use coalesce::{Coalescer, FlushEvent, DEFAULT_INTERVAL};

/// The key quota_clone writes the storage usage in bytes to.
pub const STORAGE_KEY: &str = "priv/quota/storage";
/// The key quota_clone writes the message count to.
pub const MESSAGES_KEY: &str = "priv/quota/messages";

/// A user's usage: bytes (Dovecot's STORAGE_BYTES resource) and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    /// Storage in bytes (exact, not KiB).
    pub bytes: u64,
    /// Number of messages.
    pub messages: u64,
}

/// Why a write did not certainly happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// An empty username: `priv/` keys need one.
    #[error("invalid user: the username is empty")]
    EmptyUser,
    /// Nothing was written (the texts are the plugin's log lines).
    #[error("Failed to write value: {0}")]
    Failed(String),
    /// The commit was sent but not confirmed: the values may or may not be stored.
    #[error("Write was unconfirmed (timeout or disconnect): {0}")]
    WriteUncertain(String),
}

impl WriteError {
    /// True for [`WriteError::WriteUncertain`].
    pub fn is_uncertain(&self) -> bool {
        matches!(self, WriteError::WriteUncertain(_))
    }
}

/// Something that stores a user's usage; [`QuotaClone`] is the real one, tests and
/// [`Coalescer`] users may bring their own.
pub trait UsageWriter: Send + Sync + 'static {
    /// Stores `usage` for `user`.
    fn write_usage(
        &self,
        user: &str,
        usage: Usage,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// Writes quota usage through a dict client.
#[derive(Debug, Clone)]
pub struct QuotaClone {
    client: Client,
    unset: bool,
}

impl QuotaClone {
    /// Writes through `client`.
    pub fn new(client: Client) -> QuotaClone {
        QuotaClone {
            client,
            unset: false,
        }
    }

    /// Opens a client for `dict_uri` (`proxy:…`) and writes through it.
    pub fn open(dict_uri: &str, options: ClientOptions) -> Result<QuotaClone, dict_client::Error> {
        Ok(QuotaClone::new(Client::open(dict_uri, options)?))
    }

    /// Unsets both keys before setting them (Dovecot 2.4's `quota_clone_unset`), so a
    /// backend row is rewritten from scratch.
    ///
    /// The order is `U storage`, `U messages`, `S storage`, `S messages`, not 2.4's
    /// `U storage`, `S storage`, `U messages`, `S messages`. With dict-sql both keys usually
    /// live in one row, an unset deletes the whole row, and an unset first flushes the sets
    /// buffered before it. In 2.4's order the second `U` therefore inserts the row with the
    /// new storage value and then deletes it, leaving only the message count (protocol-spec, SQL dict notes). Doing
    /// both deletes first and both sets after leaves both values right on every backend, and
    /// lets dict-sql merge the two sets into one INSERT.
    pub fn with_unset(mut self, unset: bool) -> QuotaClone {
        self.unset = unset;
        self
    }

    /// The client used.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes `usage` for `user` in one transaction and waits for the commit.
    pub async fn write(&self, user: &str, usage: Usage) -> Result<(), WriteError> {
        if user.is_empty() {
            return Err(WriteError::EmptyUser);
        }
        let mut tx = self.client.transaction(user);
        let bytes = usage.bytes.to_string();
        let messages = usage.messages.to_string();
        let queued = (|| {
            if self.unset {
                tx.unset(STORAGE_KEY)?;
                tx.unset(MESSAGES_KEY)?;
            }
            tx.set(STORAGE_KEY, &bytes)?;
            tx.set(MESSAGES_KEY, &messages)
        })();
        if let Err(e) = queued {
            return Err(WriteError::Failed(e.to_string()));
        }
        match tx.commit().await {
            // The plugin treats NOTFOUND as done too (it cannot happen without increments).
            CommitResult::Ok | CommitResult::NotFound => Ok(()),
            CommitResult::Failed(e) => Err(WriteError::Failed(e)),
            CommitResult::WriteUncertain(e) => Err(WriteError::WriteUncertain(e)),
        }
    }
}

impl UsageWriter for QuotaClone {
    fn write_usage(
        &self,
        user: &str,
        usage: Usage,
    ) -> impl Future<Output = Result<(), WriteError>> + Send {
        self.write(user, usage)
    }
}
