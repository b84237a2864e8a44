//! The command line of `quota-clone`, a library module (feature `cli`) so that its man page
//! and shell completions can be generated from the same definitions (crate `dict-rs-docs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::export::Format;

/// Write quota usage (priv/quota/storage, priv/quota/messages) to a dict server, as
/// Dovecot's quota_clone plugin does.
#[derive(Debug, Parser)]
#[command(name = "quota-clone", version)]
pub struct Cli {
    /// The dict to write to: proxy:[idle_msecs=N:][warn_slow_msecs=N:][path]:name.
    #[arg(long, env = "QUOTA_CLONE_DICT", value_name = "URI", global = true)]
    pub dict: Option<String>,
    /// base_dir for relative proxy socket paths.
    #[arg(long, default_value = dict_client::uri::DEFAULT_BASE_DIR, value_name = "DIR", global = true)]
    pub base_dir: PathBuf,
    /// Protocol major: 3 for Dovecot 2.3 dict servers, 4 for 2.4.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=4), global = true)]
    pub protocol: u32,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", global = true)]
    pub timeout: u64,
    /// Unset both keys before setting them (Dovecot 2.4's quota_clone_unset; sent as
    /// U storage, U messages, S storage, S messages).
    #[arg(long, global = true)]
    pub unset: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write one user's usage.
    Set {
        user: String,
        bytes: u64,
        messages: u64,
    },
    /// Write many users' usage: `user<TAB>bytes<TAB>messages` lines from FILE (or stdin),
    /// or the output of doveadm mailbox status.
    Sync {
        /// Input file; `-` or nothing reads stdin.
        #[arg(conflicts_with = "from_doveadm")]
        file: Option<PathBuf>,
        /// Run `doveadm -f tab mailbox status -A 'vsize messages' '*'` and write its sums
        /// (vsize is in bytes, so values are exact).
        #[arg(long)]
        from_doveadm: bool,
        /// The doveadm binary.
        #[arg(long, default_value = "doveadm", value_name = "PATH")]
        doveadm: PathBuf,
        /// Passed to doveadm as `-c FILE`.
        #[arg(long, value_name = "FILE")]
        doveadm_config: Option<PathBuf>,
        /// Writes in flight at once.
        #[arg(long, short = 'j', default_value_t = 8)]
        jobs: usize,
    },
    /// Print everybody's cloned quota (user, bytes, messages), read straight from the
    /// backend of a configured dict: its SQL table(s) or its Redis keys.
    Export {
        /// Dovecot's configuration (2.3 or 2.4 syntax), or dict-server's TOML (`*.toml`).
        #[arg(
            long,
            short = 'c',
            value_name = "FILE",
            default_value = "/etc/dovecot/dovecot.conf"
        )]
        config: PathBuf,
        /// The dict to read. Default: the name in --dict's proxy URI, else the only dict
        /// configured.
        #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        name: Option<String>,
        /// A dict URI instead of a configuration, as in a 2.3 `dict { }` block:
        /// `mysql:/etc/dovecot/dovecot-dict-sql.conf.ext`, `redis:host=127.0.0.1:port=6379`.
        #[arg(long, value_name = "URI", conflicts_with = "config")]
        backend: Option<String>,
        /// Output format.
        #[arg(long, short = 'f', value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write to FILE (replaced only once complete) instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Output formats on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// `user,bytes,messages` with a header; missing values empty.
    Csv,
    /// One JSON array of objects; missing values null.
    Json,
    /// One JSON object per line.
    Jsonl,
}

impl From<ExportFormat> for Format {
    fn from(f: ExportFormat) -> Format {
        match f {
            ExportFormat::Csv => Format::Csv,
            ExportFormat::Json => Format::Json,
            ExportFormat::Jsonl => Format::JsonLines,
        }
    }
}
