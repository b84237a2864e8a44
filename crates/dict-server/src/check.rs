//! `dict-server check`: print the effective configuration (listeners, settings, each dict
//! with its URI and, for SQL dicts, its maps), then open every dict and check its backend
//! (reachable; every map's table has its columns and the unique key an upsert needs).
//! Every problem gets a message of its own on stderr; any problem makes the check fail.
//! A dict with a driver we don't serve is a warning: the server starts without it.

use std::io::Write;

use anyhow::{bail, Result};
use dict_config::{
    DictEntry, DictSpec, SqlConnect, SqlMap, SqliteJournalMode, SqliteSynchronous, ValueType,
};

use crate::setup::{self, Plan};

/// Runs the check, writing the configuration to `out` and one message per problem to `err`.
/// An error when there was any problem.
pub async fn run(plan: &Plan, out: &mut impl Write, err: &mut impl Write) -> Result<()> {
    print_settings(plan, out, err)?;
    let mut problems = 0;
    let mut unserved = Vec::new();
    for entry in &plan.dicts {
        writeln!(
            out,
            "dict {} = {}  ({})",
            entry.name,
            entry.describe(),
            entry.origin
        )?;
        if let Some(reason) = setup::unserved_reason(entry) {
            writeln!(out, "  NOT SERVED")?;
            writeln!(
                err,
                "dict-server: check: warning: dict '{}': {reason}",
                entry.name
            )?;
            unserved.push(entry.name.as_str());
            continue;
        }
        if let Err(e) = print_maps(entry, plan, out) {
            problems += 1;
            writeln!(out, "  maps: FAILED")?;
            problem(err, entry, &format!("{e:#}"))?;
            continue;
        }
        let dict = match setup::open_one(plan, entry).await {
            Ok(dict) => dict,
            Err(e) => {
                problems += 1;
                writeln!(out, "  backend: FAILED")?;
                problem(err, entry, &format!("{e:#}"))?;
                continue;
            }
        };
        match dict.check().await {
            Ok(()) => writeln!(out, "  backend: ok")?,
            Err(e) => {
                writeln!(out, "  backend: FAILED")?;
                // The SQL check reports every table problem, one per line.
                for line in e.message().lines() {
                    problems += 1;
                    problem(err, entry, line)?;
                }
            }
        }
    }
    let served = plan.dicts.len() - unserved.len();
    if served == 0 {
        problems += 1;
        writeln!(err, "dict-server: check: none of the dicts can be served")?;
    }
    if problems > 0 {
        bail!("check failed: {problems} problem(s)");
    }
    match unserved.is_empty() {
        true => writeln!(out, "check passed: {served} dict(s)")?,
        false => writeln!(
            out,
            "check passed: {served} dict(s); not served: {}",
            unserved.join(", ")
        )?,
    }
    Ok(())
}

fn problem(err: &mut impl Write, entry: &DictEntry, message: &str) -> std::io::Result<()> {
    writeln!(err, "dict-server: check: dict '{}': {message}", entry.name)
}

fn print_settings(plan: &Plan, out: &mut impl Write, err: &mut impl Write) -> std::io::Result<()> {
    for l in &plan.listeners {
        writeln!(
            out,
            "listener {} mode {:04o} user {} group {} backlog {}",
            l.path.display(),
            l.mode,
            l.user.as_deref().unwrap_or("-"),
            l.group.as_deref().unwrap_or("-"),
            l.backlog
        )?;
    }
    let s = &plan.server;
    writeln!(
        out,
        "server max_connections {} max_pending_per_connection {} request_timeout_ms {} \
         shutdown_timeout_ms {} warn_slow_ms {}",
        plan.max_connections,
        s.max_pending_per_connection,
        s.request_timeout_ms,
        s.shutdown_timeout_ms,
        s.warn_slow_ms
    )?;
    let format = match plan.log.format {
        dict_config::LogFormat::Text => "text",
        dict_config::LogFormat::Json => "json",
    };
    writeln!(out, "log level {} format {format}", plan.log.level)?;
    // As the server will: the soft limit raised to the hard one first.
    match crate::fd_limit::raise() {
        Ok(limit) => {
            writeln!(
                out,
                "open files {} (needed at most {})",
                limit.soft,
                crate::fd_limit::needed(plan)
            )?;
            if let Some(warning) = crate::fd_limit::shortfall(limit, plan) {
                writeln!(err, "dict-server: check: warning: {warning}")?;
            }
        }
        Err(e) => writeln!(
            err,
            "dict-server: check: warning: cannot read the open-file limit: {e}"
        )?,
    }
    match plan.metrics.listen {
        Some(addr) => writeln!(out, "metrics http://{addr}/metrics"),
        None => writeln!(out, "metrics off"),
    }
}

/// The maps of an SQL dict (nothing for other backends), and a SQLite file's settings; an
/// error for a bad map file.
fn print_maps(entry: &DictEntry, plan: &Plan, out: &mut impl Write) -> Result<()> {
    if let DictSpec::Sql { driver, map_file } = entry.spec()? {
        writeln!(
            out,
            "  {driver} map file {} ({} map(s))",
            map_file.path.display(),
            map_file.maps.len()
        )?;
        if let SqlConnect::Sqlite { options, .. } = map_file.connect {
            // As the server opens it: the dict's own settings, else the TOML's [sql].
            let options = options.or(plan.sql.sqlite());
            writeln!(
                out,
                "  sqlite_journal_mode {} sqlite_synchronous {}",
                options.journal_mode.unwrap_or(SqliteJournalMode::Wal),
                options.synchronous.unwrap_or(SqliteSynchronous::Default)
            )?;
        }
        for map in &map_file.maps {
            writeln!(out, "  map {}", describe_map(map))?;
        }
    }
    Ok(())
}

fn describe_map(map: &SqlMap) -> String {
    let values: Vec<String> = map
        .value_fields
        .iter()
        .zip(&map.value_types)
        .map(|(field, ty)| match ty {
            ValueType::String => field.clone(),
            ty => format!("{field}:{}", ty.name()),
        })
        .collect();
    let mut text = format!("{} -> {}({})", map.pattern, map.table, values.join(","));
    if let Some(user) = &map.username_field {
        text.push_str(&format!(" user={user}"));
    }
    for field in &map.fields {
        text.push_str(&format!(" {}=${}", field.column, field.variable));
    }
    text
}
