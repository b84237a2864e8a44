//! The command line of `dict-server`, a library module so that its man page and shell
//! completions can be generated from the same definitions (crate `dict-rs-docs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A drop-in replacement for Dovecot's dict server process.
///
/// Without any dict configured (no option, or a TOML file without dicts) it serves dict
/// `quota` (quota_clone's keys and any other key) from a SQLite file in its data directory
/// (--data-dir, or the TOML file's data_dir): /var/lib/dict-rs with the socket
/// /run/dovecot/dict when run as root, else ./dict-rs-data with the socket
/// ./dict-rs-data/dict.sock.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// A Dovecot dovecot.conf (with its !includes): the dicts of its 2.3 `dict { name = uri }`
    /// block or 2.4 `dict_server { dict <name> { … } }`, its base_dir and its
    /// `service dict { unix_listener … }` socket(s).
    #[arg(long, value_name = "FILE", global = true)]
    pub dovecot_config: Option<PathBuf>,
    /// Our own TOML file: listener, [dicts], timeouts, logging (see the README).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Listen on this socket path instead of the configured one(s). A configured listener
    /// of the same path keeps its mode, user and group; any other path gets those of the
    /// first configured listener (Dovecot's `dict`: 0660, group dovecot).
    #[arg(long, value_name = "PATH", global = true)]
    pub listen: Option<PathBuf>,
    /// The --listen socket's mode (octal, e.g. 0660).
    #[arg(long, value_name = "MODE", global = true, value_parser = parse_mode, requires = "listen")]
    pub listen_mode: Option<u32>,
    /// The --listen socket's owner ("" leaves it to whoever runs the server).
    #[arg(long, value_name = "USER", global = true, requires = "listen")]
    pub listen_user: Option<String>,
    /// The --listen socket's group ("" leaves it to whoever runs the server).
    #[arg(long, value_name = "GROUP", global = true, requires = "listen")]
    pub listen_group: Option<String>,
    /// Data directory of the embedded default, served when no dict is configured (overrides
    /// the TOML file's `data_dir`; an error when dicts are configured).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (overrides `[metrics] listen`).
    #[arg(long, value_name = "ADDR", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse the configuration and every map file, connect to each backend and check its
    /// tables; print the effective configuration. Exit status 1 on any problem.
    Check,
    /// Print the dict server part of --dovecot-config in the other Dovecot version's
    /// syntax: 2.3 (`dict { }` and map files) → 2.4 (`dict_server { }`), or 2.4 → 2.3
    /// (map files printed after `# ==> <path> <==` lines, or written with --out-dir).
    Convert {
        /// The version to write: 2.3 or 2.4 (default: the one the input is not).
        #[arg(long, value_name = "VERSION")]
        to: Option<crate::convert::DovecotVersion>,
        /// Write the files into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode '{s}': expected an octal number like 0660"))
}
