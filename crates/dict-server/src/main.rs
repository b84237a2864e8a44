//! `dict-server`: serve Dovecot's dict proxy protocol from the dicts of Dovecot's own
//! configuration files.

use anyhow::Result;
use clap::Parser;
use dict_server::cli::{Cli, Command};
use dict_server::setup::{self, Plan};
use tracing::error;

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
