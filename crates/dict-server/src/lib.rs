//! A drop-in replacement for Dovecot's `dict` server: one tokio process serving the dict
//! proxy protocol on a UNIX socket, with dicts configured from Dovecot's own files.
//!
//! The binary is a thin layer over this library, so tests run the same server in-process.

pub mod budget;
pub mod check;
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
pub mod transactions;

pub use connection::ConnectionSettings;
pub use registry::Registry;
pub use server::{run, run_shared, ServerSettings};
