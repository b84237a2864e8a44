//! `dict-server`: serve Dovecot's dict proxy protocol from the dicts of Dovecot's own
//! configuration files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dict_server::setup::{self, Plan};
use dict_server::{listener, ConnectionSettings, ServerSettings};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// A drop-in replacement for Dovecot's dict server process.
///
/// Without any option it serves dict `quota` (quota_clone's keys and any other key) from a
/// SQLite file in its data directory: /var/lib/dict-rs with the socket /run/dovecot/dict
/// when run as root, else ./dict-rs-data with the socket ./dict-rs-data/dict.sock.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// A Dovecot 2.3 dovecot.conf (with its !includes): the dicts of its `dict { name = uri }`
    /// block, its base_dir and its `service dict { unix_listener … }` socket(s).
    #[arg(long, value_name = "FILE", global = true)]
    dovecot_config: Option<PathBuf>,
    /// Our own TOML file: listener, [dicts], timeouts, logging (see the README).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Listen on this socket path instead of the configured one(s).
    #[arg(long, value_name = "PATH", global = true)]
    listen: Option<PathBuf>,
    /// Data directory of the embedded default (only used without any dict configured).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse the configuration and every map file, connect to each backend and check its
    /// tables; print the effective configuration. Exit status 1 on any problem.
    Check,
}

fn init_logging(plan: &Plan) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&plan.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match plan.log.format {
        dict_config::LogFormat::Json => builder.json().init(),
        dict_config::LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let plan = match setup::plan(
        cli.dovecot_config.as_deref(),
        cli.config.as_deref(),
        cli.listen.as_deref(),
        cli.data_dir.as_deref(),
    ) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("dict-server: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    init_logging(&plan);
    let result = match cli.command {
        Some(Command::Check) => check(&plan).await,
        None => serve(plan).await,
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

async fn check(plan: &Plan) -> Result<()> {
    for l in &plan.listeners {
        println!(
            "listener {} mode {:o} user {} group {}",
            l.path.display(),
            l.mode,
            l.user.as_deref().unwrap_or("-"),
            l.group.as_deref().unwrap_or("-")
        );
    }
    let registry = setup::open_dicts(plan).await?;
    let mut failed = 0;
    for entry in &plan.dicts {
        let handle = registry
            .get(entry.name.as_bytes())
            .context("dict vanished")?;
        match handle.dict.check().await {
            Ok(()) => println!("dict {} = {}: ok", entry.name, entry.uri),
            Err(e) => {
                failed += 1;
                println!("dict {} = {}: {e}", entry.name, entry.uri);
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} dict(s) failed the check");
    Ok(())
}

async fn serve(plan: Plan) -> Result<()> {
    let registry = Arc::new(setup::open_dicts(&plan).await?);
    let settings = ServerSettings {
        max_connections: plan.max_connections,
        connection: ConnectionSettings {
            max_pending: plan.server.max_pending_per_connection,
            request_timeout: plan.server.request_timeout(),
            ..ConnectionSettings::default()
        },
        shutdown_timeout: plan.server.shutdown_timeout(),
    };
    let mut sockets = Vec::new();
    for l in &plan.listeners {
        sockets.push(
            listener::bind(l).with_context(|| format!("cannot listen on {}", l.path.display()))?,
        );
        info!(path = %l.path.display(), dicts = ?registry.names(), "listening");
    }
    let shutdown = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for socket in sockets {
        let (registry, settings, shutdown) = (registry.clone(), settings.clone(), shutdown.clone());
        servers.spawn(async move {
            dict_server::run(&socket.listener, registry, settings, shutdown).await;
            drop(socket);
        });
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
    while servers.join_next().await.is_some() {}
    info!("stopped");
    Ok(())
}
