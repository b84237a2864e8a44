//! `dictctl`: `doveadm dict` for dict proxy servers, with the same arguments, output and exit
//! codes:
//!
//! ```text
//! dictctl [-f flow|tab|json|table] get   [-u user] <dict uri> <key>
//! dictctl [-f …]                   set   [-u user] [-t nsecs] [-e secs] <dict uri> <key> <value>
//! dictctl [-f …]                   unset [-u user] [-t nsecs] <dict uri> <key>
//! dictctl [-f …]                   inc   [-u user] [-t nsecs] <dict uri> <key> [--] <diff>
//! dictctl [-f …]                   iter  [-u user] [-1RV] <dict uri> <prefix>
//! ```
//!
//! `-t` (the write timestamp, nanoseconds since the epoch: sent as `T`) and `-e` (expiry in
//! seconds: the third field of `B`, protocol 4 only) are spelled as in Dovecot 2.4's doveadm.
//!
//! Exit codes: 0 ok, 64 usage, 68 not found (get, inc), 75 failure.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dict_client::cli::{Cli, Command};
use dict_client::print::{Format, Printer, DEFAULT_COLUMNS, MIN_COLUMNS};
use dict_client::{Client, ClientOptions, CommitResult, IterateFlags, Protocol};
use dict_protocol::namespace::{self, KeyRefusal};
use futures::StreamExt;

const EX_OK: u8 = 0;
const EX_USAGE: u8 = 64;
const EX_NOTFOUND: u8 = 68;
const EX_TEMPFAIL: u8 = 75;

/// Logs an error the way doveadm does (`Error: …` on stderr) and gives the exit code.
fn fail(code: u8, msg: impl std::fmt::Display) -> u8 {
    eprintln!("Error: {msg}");
    code
}

struct Ctx {
    printer: Option<Printer<std::io::BufWriter<std::io::Stdout>>>,
    options: ClientOptions,
}

impl Ctx {
    /// doveadm_print_init(): a formatter given with -f wins over the command's default.
    fn printer(&mut self, default: Format) -> &mut Printer<std::io::BufWriter<std::io::Stdout>> {
        self.printer.get_or_insert_with(|| new_printer(default))
    }

    /// cmd_dict_init(): checks shared by all commands, then the client.
    fn init(&self, uri: Option<&str>, key: &str, user: &str) -> Result<Client, u8> {
        let Some(uri) = uri else {
            return Err(fail(EX_USAGE, "dictionary URI must be specified"));
        };
        match namespace::check_key(key.as_bytes(), user.as_bytes()) {
            Ok(_) => {}
            Err(KeyRefusal::NoNamespace) => {
                return Err(fail(
                    EX_USAGE,
                    format!("Key must begin with 'priv/' or 'shared/': {key}"),
                ))
            }
            Err(KeyRefusal::NoUsername) => {
                return Err(fail(EX_USAGE, "-u must be specified for priv/ keys"))
            }
        }
        Client::open(uri, self.options.clone())
            .map_err(|e| fail(EX_TEMPFAIL, format!("dict_init({uri}) failed: {e}")))
    }
}

fn new_printer(format: Format) -> Printer<std::io::BufWriter<std::io::Stdout>> {
    let stdout = std::io::stdout();
    let columns = if stdout.is_terminal() {
        terminal_size::terminal_size()
            .map(|(w, _)| usize::from(w.0).max(MIN_COLUMNS))
            .unwrap_or(DEFAULT_COLUMNS)
    } else {
        DEFAULT_COLUMNS
    };
    Printer::new(std::io::BufWriter::new(stdout), format, columns)
}

async fn commit_one(
    client: &Client,
    user: &str,
    op: impl FnOnce(&mut dict_client::Transaction) -> Result<(), dict_client::Error>,
) -> CommitResult {
    let mut tx = client.transaction(user);
    if let Err(e) = op(&mut tx) {
        return CommitResult::Failed(e.to_string());
    }
    tx.commit().await
}

fn commit_error(result: &CommitResult) -> String {
    match result {
        CommitResult::Failed(e) | CommitResult::WriteUncertain(e) => e.clone(),
        CommitResult::NotFound => "Key not found".into(),
        CommitResult::Ok => String::new(),
    }
}

async fn run(ctx: &mut Ctx, command: Command) -> std::io::Result<u8> {
    Ok(match command {
        Command::Get { user, uri, key } => {
            let Some(key) = key else {
                return Ok(fail(EX_USAGE, "dict-get: Missing key"));
            };
            let user = user.unwrap_or_default();
            let client = match ctx.init(uri.as_deref(), &key, &user) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let printer = ctx.printer(Format::Table);
            printer.header("value", "", true)?;
            match client.lookup_values(&key, &user).await {
                Err(e) => fail(EX_TEMPFAIL, format!("dict_lookup({key}) failed: {e}")),
                Ok(None) => fail(EX_NOTFOUND, format!("{key} doesn't exist")),
                Ok(Some(values)) => {
                    for _ in 1..values.len() {
                        printer.header("value", "", true)?;
                    }
                    for v in &values {
                        printer.print(v)?;
                    }
                    EX_OK
                }
            }
        }
        Command::Set {
            user,
            when,
            expire_secs,
            uri,
            key,
            value,
        } => {
            let (Some(key), Some(value)) = (key, value) else {
                return Ok(fail(EX_USAGE, "dict set: Missing parameters"));
            };
            if expire_secs.is_some() && ctx.options.protocol != Protocol::V4 {
                return Ok(fail(
                    EX_USAGE,
                    "dict set: -e needs --protocol 4 (a Dovecot 2.4 dict server)",
                ));
            }
            let user = user.unwrap_or_default();
            let client = match ctx.init(uri.as_deref(), &key, &user) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let set = |tx: &mut dict_client::Transaction| {
                if let Some(secs) = expire_secs {
                    tx.set_expire_secs(secs)?;
                }
                when.apply(tx)?;
                tx.set(&key, &value)
            };
            match commit_one(&client, &user, set).await {
                CommitResult::Ok => EX_OK,
                r => fail(
                    EX_TEMPFAIL,
                    format!("dict_transaction_commit() failed: {}", commit_error(&r)),
                ),
            }
        }
        Command::Unset {
            user,
            when,
            uri,
            key,
        } => {
            let Some(key) = key else {
                return Ok(fail(EX_USAGE, "dict unset: Missing key"));
            };
            let user = user.unwrap_or_default();
            let client = match ctx.init(uri.as_deref(), &key, &user) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let unset = |tx: &mut dict_client::Transaction| {
                when.apply(tx)?;
                tx.unset(&key)
            };
            match commit_one(&client, &user, unset).await {
                CommitResult::Ok => EX_OK,
                r => fail(
                    EX_TEMPFAIL,
                    format!("dict_transaction_commit() failed: {}", commit_error(&r)),
                ),
            }
        }
        Command::Inc {
            user,
            when,
            uri,
            key,
            diff,
        } => {
            let diff = diff.as_deref().and_then(parse_i64);
            let (Some(key), Some(diff)) = (key, diff) else {
                return Ok(fail(EX_USAGE, "dict-inc: Missing parameters"));
            };
            let user = user.unwrap_or_default();
            let client = match ctx.init(uri.as_deref(), &key, &user) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let inc = |tx: &mut dict_client::Transaction| {
                when.apply(tx)?;
                tx.inc(&key, diff)
            };
            match commit_one(&client, &user, inc).await {
                CommitResult::Ok => EX_OK,
                CommitResult::NotFound => fail(EX_NOTFOUND, format!("{key} doesn't exist")),
                r => fail(
                    EX_TEMPFAIL,
                    format!("dict_transaction_commit() failed: {}", commit_error(&r)),
                ),
            }
        }
        Command::Iter {
            user,
            exact,
            recurse,
            no_value,
            uri,
            prefix,
        } => {
            let Some(prefix) = prefix else {
                return Ok(fail(EX_USAGE, "dict-iter: Missing prefix"));
            };
            let user = user.unwrap_or_default();
            let mut flags = IterateFlags::empty();
            flags.set(IterateFlags::EXACT_KEY, exact);
            flags.set(IterateFlags::RECURSE, recurse);
            flags.set(IterateFlags::NO_VALUE, no_value);
            let client = match ctx.init(uri.as_deref(), &prefix, &user) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let printer = ctx.printer(Format::Tab);
            printer.header_simple("key")?;
            if !no_value {
                printer.header_simple("value")?;
            }
            let mut rows = client.iterate(&prefix, &user, flags, 0);
            let mut first = true;
            let mut code = EX_OK;
            while let Some(row) = rows.next().await {
                match row {
                    Ok(row) => {
                        // Extra value columns are only known from the first row.
                        if first {
                            first = false;
                            for _ in 1..row.values.len() {
                                printer.header_simple("value")?;
                            }
                        }
                        printer.print(&row.key)?;
                        if !no_value {
                            for v in &row.values {
                                printer.print(v)?;
                            }
                        }
                    }
                    Err(e) => {
                        code = fail(
                            EX_TEMPFAIL,
                            format!("dict_iterate_deinit({prefix}) failed: {e}"),
                        );
                        break;
                    }
                }
            }
            code
        }
    })
}

/// doveadm's int64 parameter: an optional `-` and decimal digits.
fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

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
            tracing_subscriber::EnvFilter::try_from_env("DICTCTL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let printer = match cli.format.as_deref() {
        None => None,
        Some(name) => match Format::from_name(name) {
            Some(f) => Some(new_printer(f)),
            None => {
                eprintln!("dictctl: Fatal: Unknown print formatter: {name}");
                return ExitCode::from(EX_TEMPFAIL);
            }
        },
    };
    let base_dir = match (&cli.base_dir, &cli.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(conf)) => match dict_config::DovecotConfig::load(conf) {
            Ok(c) => c.base_dir_or_default().to_path_buf(),
            Err(e) => {
                eprintln!("dictctl: Fatal: {e}");
                return ExitCode::from(EX_TEMPFAIL);
            }
        },
        (None, None) => PathBuf::from(dict_client::uri::DEFAULT_BASE_DIR),
    };
    let options = ClientOptions {
        protocol: if cli.protocol == 4 {
            Protocol::V4
        } else {
            Protocol::V3
        },
        base_dir,
        request_timeout: Duration::from_secs(cli.timeout.max(1)),
        ..ClientOptions::default()
    };
    let mut ctx = Ctx { printer, options };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dictctl: Fatal: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let result = runtime.block_on(run(&mut ctx, cli.command));
    let flushed = match ctx.printer.as_mut() {
        Some(p) => p.flush(),
        None => Ok(()),
    };
    match result
        .and_then(|code| flushed.map(|()| code))
        .and_then(|code| std::io::stdout().flush().map(|()| code))
    {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(EX_TEMPFAIL),
        Err(e) => {
            eprintln!("dictctl: Fatal: write(stdout) failed: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}
