//! The command line of `dictctl`, a library module (feature `cli`) so that its man page and
//! shell completions can be generated from the same definitions (crate `dict-rs-docs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// doveadm dict, for Dovecot dict proxy servers.
#[derive(Debug, Parser)]
#[command(name = "dictctl", version)]
pub struct Cli {
    /// Output formatter, as doveadm's -f: flow, tab, json or table. Default: table for get,
    /// tab for iter, nothing for set/unset/inc.
    #[arg(short = 'f', value_name = "FORMATTER")]
    pub format: Option<String>,
    /// A Dovecot configuration file to take base_dir from (for relative proxy paths).
    #[arg(short = 'c', value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// base_dir for relative proxy socket paths (default: from -c, else /run/dovecot).
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// Protocol major: 3 for Dovecot 2.3 servers, 4 for Dovecot 2.4 servers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=4))]
    pub protocol: u32,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look up a key.
    Get {
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
        uri: Option<String>,
        key: Option<String>,
    },
    /// Set a key.
    Set {
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
        #[command(flatten)]
        when: WriteTime,
        /// Expire the value after this many seconds (needs --protocol 4).
        #[arg(short = 'e', value_name = "EXPIRE-SECS")]
        expire_secs: Option<u32>,
        uri: Option<String>,
        key: Option<String>,
        value: Option<String>,
    },
    /// Remove a key.
    Unset {
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
        #[command(flatten)]
        when: WriteTime,
        uri: Option<String>,
        key: Option<String>,
    },
    /// Add to a number (negative diffs after `--`).
    Inc {
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
        #[command(flatten)]
        when: WriteTime,
        uri: Option<String>,
        key: Option<String>,
        #[arg(allow_negative_numbers = true)]
        diff: Option<String>,
    },
    /// List keys under a prefix.
    Iter {
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
        /// Only the key equal to the prefix.
        #[arg(short = '1')]
        exact: bool,
        /// All levels below the prefix.
        #[arg(short = 'R')]
        recurse: bool,
        /// Keys only.
        #[arg(short = 'V')]
        no_value: bool,
        uri: Option<String>,
        prefix: Option<String>,
    },
}

/// `-t <timestamp-nsecs>` of set, unset and inc.
#[derive(Debug, clap::Args)]
pub struct WriteTime {
    /// The write timestamp, in nanoseconds since the epoch.
    #[arg(short = 't', value_name = "TIMESTAMP-NSECS")]
    pub timestamp: Option<u64>,
}

impl WriteTime {
    /// Sends `T` (before any change, as the protocol wants).
    pub fn apply(&self, tx: &mut crate::Transaction) -> Result<(), crate::Error> {
        match self.timestamp {
            None => Ok(()),
            Some(ns) => tx.timestamp(
                i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
                u32::try_from(ns % 1_000_000_000).unwrap_or(0),
            ),
        }
    }
}
