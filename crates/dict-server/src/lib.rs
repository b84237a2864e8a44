//! A drop-in replacement for Dovecot's `dict` server: one tokio process serving the dict
//! proxy protocol on a UNIX socket, with dicts configured from Dovecot's own files.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//!
//! use dict_backend::MemoryDict;
//! use dict_server::testing::InProcessServer;
//! use dict_server::{Registry, ServerSettings};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // Serve dict `quota` on a socket; any Dovecot dict client can now use it.
//! let mut registry = Registry::new();
//! registry.insert("quota", Arc::new(MemoryDict::new()));
//! let server = InProcessServer::start(registry, ServerSettings::default()).await;
//!
//! // Dovecot 2.3's doveadm: hello (minor 0: replies in order), a transaction, a lookup.
//! let mut client = tokio::net::UnixStream::connect(&server.path).await.unwrap();
//! client
//!     .write_all(b"H3\t0\t0\t\tquota\nB1\talice\nS1\tpriv/quota/storage\t1024\nC1\nLpriv/quota/storage\talice\n")
//!     .await
//!     .unwrap();
//! client.shutdown().await.unwrap();
//! let mut replies = String::new();
//! client.read_to_string(&mut replies).await.unwrap();
//! assert_eq!(replies, "O1\nO1024\n");
//! server.stop().await;
//! # }
//! ```
//!
//! The binary is a thin layer over this library, so tests run the same server in-process.

pub mod budget;
pub mod check;
pub mod cli;
pub mod command;
pub mod connection;
pub mod convert;
pub mod daemon;
pub mod fd_limit;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod observe;
pub mod registry;
pub mod reload;
pub mod reply_queue;
pub mod server;
pub mod session;
pub mod setup;
pub mod systemd;
pub mod testing;
pub mod timer_floor;
pub mod transactions;

pub use connection::ConnectionSettings;
pub use registry::Registry;
pub use server::{run, run_shared, ServerSettings};
