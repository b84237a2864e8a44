//! `dict-server`: serve Dovecot's dict proxy protocol from the dicts of Dovecot's own
//! configuration files.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dict_server::setup::{self, Plan};
use tracing::error;

/// A drop-in replacement for Dovecot's dict server process.
///
/// Without any dict configured (no option, or a TOML file without dicts) it serves dict
/// `quota` (quota_clone's keys and any other key) from a SQLite file in its data directory
/// (--data-dir, or the TOML file's data_dir): /var/lib/dict-rs with the socket
/// /run/dovecot/dict when run as root, else ./dict-rs-data with the socket
/// ./dict-rs-data/dict.sock.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// A Dovecot dovecot.conf (with its !includes): the dicts of its 2.3 `dict { name = uri }`
    /// block or 2.4 `dict_server { dict <name> { … } }`, its base_dir and its
    /// `service dict { unix_listener … }` socket(s).
    #[arg(long, value_name = "FILE", global = true)]
    dovecot_config: Option<PathBuf>,
    /// Our own TOML file: listener, [dicts], timeouts, logging (see the README).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Listen on this socket path instead of the configured one(s). A configured listener
    /// of the same path keeps its mode, user and group; any other path gets those of the
    /// first configured listener (Dovecot's `dict`: 0660, group dovecot).
    #[arg(long, value_name = "PATH", global = true)]
    listen: Option<PathBuf>,
    /// The --listen socket's mode (octal, e.g. 0660).
    #[arg(long, value_name = "MODE", global = true, value_parser = parse_mode, requires = "listen")]
    listen_mode: Option<u32>,
    /// The --listen socket's owner ("" leaves it to whoever runs the server).
    #[arg(long, value_name = "USER", global = true, requires = "listen")]
    listen_user: Option<String>,
    /// The --listen socket's group ("" leaves it to whoever runs the server).
    #[arg(long, value_name = "GROUP", global = true, requires = "listen")]
    listen_group: Option<String>,
    /// Data directory of the embedded default, served when no dict is configured (overrides
    /// the TOML file's `data_dir`; an error when dicts are configured).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (overrides `[metrics] listen`).
    #[arg(long, value_name = "ADDR", global = true)]
    metrics_listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse the configuration and every map file, connect to each backend and check its
    /// tables; print the effective configuration. Exit status 1 on any problem.
    Check,
    /// Print the dict server part of --dovecot-config in the other Dovecot version's
    /// syntax: 2.3 (`dict { }` and map files) → 2.4 (`dict_server { }`), or 2.4 → 2.3
    /// (map files printed after `# ==> <path> <==` lines, or written with --out-dir).
    Convert {
        /// The version to write: 2.3 or 2.4 (default: the one the input is not).
        #[arg(long, value_name = "VERSION")]
        to: Option<dict_server::convert::DovecotVersion>,
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

fn init_logging(plan: &Plan) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&plan.log.level));
    // No colour codes in journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match plan.log.format {
        dict_config::LogFormat::Json => builder.json().init(),
        dict_config::LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Convert { to, out_dir }) = &cli.command {
        let Some(input) = &cli.dovecot_config else {
            eprintln!("dict-server: convert needs --dovecot-config FILE");
            return std::process::ExitCode::from(2);
        };
        let mut out = std::io::stdout();
        return match dict_server::convert::run(input, *to, out_dir.as_deref(), &mut out) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dict-server: convert: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Read at start, and again on every SIGHUP.
    let load = || -> Result<Plan> {
        let listen = setup::ListenOverride {
            path: cli.listen.clone(),
            mode: cli.listen_mode,
            user: cli.listen_user.clone(),
            group: cli.listen_group.clone(),
        };
        let mut plan = setup::plan_with(
            cli.dovecot_config.as_deref(),
            cli.config.as_deref(),
            &listen,
            cli.data_dir.as_deref(),
        )?;
        if let Some(addr) = cli.metrics_listen {
            plan.metrics.listen = Some(addr);
        }
        Ok(plan)
    };
    let plan = match load() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("dict-server: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    init_logging(&plan);
    let result = match cli.command {
        Some(Command::Check) => {
            dict_server::check::run(&plan, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Some(Command::Convert { .. }) => unreachable!("handled before loading"),
        None => dict_server::daemon::serve(plan, load).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("dict-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
