//! An async client for Dovecot's dict proxy protocol, speaking major 3 (Dovecot 2.3.17–2.3.21)
//! or major 4 (2.4), shaped like tokio-postgres: a [`Client`] handle sends each request to a
//! connection task over a channel, with a reply channel per request, so any number of
//! requests can be in flight on one connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut registry = dict_server::Registry::new();
//! # registry.insert("quota", std::sync::Arc::new(dict_backend::MemoryDict::new()));
//! # let server =
//! #     dict_server::testing::InProcessServer::start(registry, Default::default()).await;
//! # let uri = format!("proxy:{}:quota", server.path.display());
//! use dict_client::{Client, ClientOptions, CommitResult};
//!
//! // `uri` is e.g. "proxy::quota" (the socket `dict` under Dovecot's base_dir).
//! let client = Client::open(&uri, ClientOptions::default())?;
//! let mut tx = client.transaction("alice");
//! tx.set("priv/quota/storage", "1234")?;
//! assert_eq!(tx.commit().await, CommitResult::Ok);
//! let bytes = client.lookup("priv/quota/storage", "alice").await?;
//! assert_eq!(bytes.as_deref(), Some(&b"1234"[..]));
//! # Ok(()) }
//! ```
//!
//! What follows Dovecot's client (protocol-spec §5.1, §6):
//! * URIs: `proxy:[idle_msecs=N:][warn_slow_msecs=N:][path]:name`, path relative to base_dir.
//! * Replies are matched by async id (`*n`/`+n`) or, for plain lines, to the oldest pending
//!   command, so servers answering in order without ids (hello minor 0) work too.
//! * A lost connection fails pending lookups and iterations and turns pending commits into
//!   [`CommitResult::WriteUncertain`]; transactions begun on it fail at commit. After a
//!   request timeout, lookups and iterations without rows yet are sent again once. Major 4
//!   also retries after a lost connection, and retries commits without atomic increments.
//! * The connection closes when idle (at once by default) and is opened again when needed.

#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod connection;
mod error;
#[cfg(feature = "cli")]
pub mod print;
mod transaction;
pub mod uri;

pub use client::{Client, ClientOptions, Iter, IterRow};
pub use dict_protocol::IterateFlags;
pub use error::{CommitResult, Error};
pub use transaction::Transaction;
pub use uri::ProxyUri;

/// The protocol major the client speaks; a server accepts only its own (protocol-spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// `H3\t2\t0\t\t<name>`: Dovecot 2.3.17 – 2.3.21.
    #[default]
    V3,
    /// `H4\t0\t0\t\t<name>`: Dovecot 2.4.
    V4,
}

impl Protocol {
    /// The major version number.
    pub fn major(self) -> u32 {
        match self {
            Protocol::V3 => 3,
            Protocol::V4 => 4,
        }
    }
}
