//! `quota-clone`: write users' quota usage to a dict server as Dovecot's quota_clone plugin
//! does.
//!
//! ```text
//! quota-clone --dict <proxy uri> set <user> <bytes> <messages>
//! quota-clone --dict <proxy uri> sync [--jobs N] [FILE | -]
//! quota-clone --dict <proxy uri> sync --from-doveadm [--doveadm PATH] [--doveadm-config FILE]
//! quota-clone export [--config FILE] [--name NAME | --backend URI] [--format csv|json|jsonl] [-o FILE]
//! ```
//!
//! Exit codes: 0 all written, 75 a write failed or is uncertain (export: the backend could
//! not be read), 65 some input unusable (everything else written; export: some values are
//! not numbers), 64 usage, 78 (export) no such dict in the configuration.

mod export;

use std::collections::HashSet;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dict_client::{ClientOptions, Protocol};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quota_clone::cli::{Cli, Command};
use quota_clone::sync::{self, Entry, Summary, DOVEADM_STATUS_ARGS, EXIT_FAILED};
use quota_clone::{QuotaClone, Usage};

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUOTA_CLONE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quota-clone: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("quota-clone: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    if let Command::Export {
        config,
        name,
        backend,
        format,
        output,
    } = &cli.command
    {
        let source = export::Source {
            config,
            name: name.as_deref(),
            backend: backend.as_deref(),
            proxy_uri: cli.dict.as_deref(),
        };
        let entry = match export::find_dict(&source) {
            Ok(entry) => entry,
            Err(e) => {
                eprintln!("quota-clone: {e}");
                return Ok(export::EX_CONFIG);
            }
        };
        let timeout = Duration::from_secs(cli.timeout.max(1));
        return export::run(&entry, timeout, *format, output.as_deref()).await;
    }
    let Some(dict) = cli.dict.as_deref() else {
        eprintln!("quota-clone: --dict <proxy uri> is required (or QUOTA_CLONE_DICT)");
        return Ok(EX_USAGE);
    };
    let options = ClientOptions {
        protocol: if cli.protocol == 4 {
            Protocol::V4
        } else {
            Protocol::V3
        },
        base_dir: cli.base_dir.clone(),
        request_timeout: Duration::from_secs(cli.timeout.max(1)),
        ..ClientOptions::default()
    };
    let qc = match QuotaClone::open(dict, options) {
        Ok(qc) => qc.with_unset(cli.unset),
        Err(e) => {
            eprintln!("quota-clone: dict_init({dict}) failed: {e}");
            return Ok(EX_USAGE);
        }
    };
    match cli.command {
        Command::Set {
            user,
            bytes,
            messages,
        } => Ok(match qc.write(&user, Usage { bytes, messages }).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("quota-clone: {user}: {e}");
                EXIT_FAILED
            }
        }),
        Command::Sync {
            file,
            from_doveadm,
            doveadm,
            doveadm_config,
            jobs,
        } => {
            let (entries, problems) = if from_doveadm {
                from_doveadm_output(&doveadm, doveadm_config.as_ref()).await?
            } else {
                let text = read_input(file.as_ref())?;
                sync::parse_input(&text)
            };
            for p in &problems {
                eprintln!("quota-clone: skipped {p}");
            }
            let summary = sync_entries(&qc, entries, jobs).await;
            let summary = Summary {
                invalid: problems.len() as u64,
                ..summary
            };
            println!("{summary}");
            Ok(summary.exit_code())
        }
        // Answered above, before a client was opened.
        Command::Export { .. } => Ok(EX_USAGE),
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<String> {
    let mut text = String::new();
    match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
        }
    }
    Ok(text)
}

/// Runs doveadm and reads its sums. Users doveadm reported errors for are skipped (their
/// sums may miss mailboxes); a failing doveadm that blames no user aborts the sync.
async fn from_doveadm_output(
    doveadm: &PathBuf,
    config: Option<&PathBuf>,
) -> Result<(Vec<Entry>, Vec<String>)> {
    let mut cmd = tokio::process::Command::new(doveadm);
    if let Some(c) = config {
        cmd.arg("-c").arg(c);
    }
    cmd.args(DOVEADM_STATUS_ARGS);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", doveadm.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    let failed_users: HashSet<String> = sync::doveadm_failed_users(&stderr);
    if !out.status.success() && failed_users.is_empty() {
        bail!(
            "{} {} failed: {}",
            doveadm.display(),
            DOVEADM_STATUS_ARGS.join(" "),
            out.status
        );
    }
    let (entries, skipped) =
        sync::parse_doveadm_status(&stdout, &failed_users).map_err(anyhow::Error::msg)?;
    Ok((
        entries,
        skipped
            .into_iter()
            .map(|u| format!("user {u}: doveadm could not read all of its mailboxes"))
            .collect(),
    ))
}

async fn sync_entries(qc: &QuotaClone, entries: Vec<Entry>, jobs: usize) -> Summary {
    // A progress bar only on a terminal; logs and pipes get the summary alone.
    let bar = if std::io::stderr().is_terminal() {
        let bar =
            ProgressBar::with_draw_target(Some(entries.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} users, {per_sec}, eta {eta} {msg}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let summary = sync::run(qc, entries, jobs, |entry, result| {
        if let Err(e) = result {
            bar.suspend(|| eprintln!("quota-clone: {}: {e}", entry.user));
        }
        bar.inc(1);
    })
    .await;
    bar.finish_and_clear();
    summary
}
