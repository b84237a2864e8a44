//! The start-up check: every map's table has its columns and a unique key (or primary
//! key) on exactly the key columns (and the username column for `priv/`), so that sets
//! can update rows in place.

use std::collections::HashMap;

use dict_config::{SqliteJournalMode, SqliteOptions, SqliteSynchronous};
use tokio::time::timeout_at;

use super::dialect::{ident_name, Dialect};
use super::state::DictState;
use super::types::DbError;
use crate::DictError;

impl DictState {
    /// Connects and checks the tables of every map.
    pub async fn check(&self) -> Result<(), DictError> {
        let deadline = self.deadline();
        let cant = |e: DbError| {
            e.context(format_args!(
                "{}: can't check the database: ",
                self.map_file.display()
            ))
        };
        let mut conn = self.db.acquire(false, deadline).await.map_err(cant)?;
        let mut infos = HashMap::new();
        for map in self.maps.iter() {
            if !infos.contains_key(&map.table) {
                let info = match timeout_at(deadline, conn.table_info(&map.table)).await {
                    Ok(r) => r.map_err(cant)?,
                    Err(_) => return Err(cant(DbError::Timeout(self.timeout))),
                };
                infos.insert(map.table.clone(), info);
            }
        }
        let fold = |c: &str| match self.db.dialect() {
            Dialect::Postgres => ident_name(c),
            _ => ident_name(c).to_ascii_lowercase(),
        };
        let mut problems = Vec::new();
        for map in self.maps.iter() {
            let at = format!("{}: map {}: table {}", map.origin, map.pattern, map.table);
            let info = &infos[&map.table];
            if info.columns.is_empty() {
                problems.push(format!("{at}: no such table"));
                continue;
            }
            let private = map.pattern.starts_with("priv/");
            let mut needed: Vec<&str> = map.value_fields.iter().map(String::as_str).collect();
            needed.extend(map.fields.iter().map(|f| f.column.as_str()));
            needed.extend(map.username_field.as_deref());
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|c| !info.columns.contains_key(&fold(c)))
                .collect();
            if !missing.is_empty() {
                problems.push(format!("{at}: no column {}", missing.join(", ")));
                continue;
            }
            let mut key: Vec<String> = map.fields.iter().map(|f| fold(&f.column)).collect();
            if private {
                match &map.username_field {
                    Some(u) => key.push(fold(u)),
                    None => continue, // never matches a key; dict-config warned already
                }
            }
            if key.is_empty() {
                continue; // shared map without variables: written with UPDATE, then INSERT
            }
            key.sort();
            let covered = info.unique_keys.iter().any(|k| {
                let mut k: Vec<String> = k.iter().map(|c| fold(c)).collect();
                k.sort();
                k == key
            });
            if !covered {
                problems.push(format!(
                    "{at}: needs a primary key or unique index on exactly ({}) so that sets can update rows",
                    key.join(",")
                ));
            }
        }
        drop(conn);
        match timeout_at(deadline, self.db.sqlite_pragmas()).await {
            Ok(Ok(Some((options, journal, synchronous)))) => {
                problems.extend(sqlite_pragma_problems(options, &journal, synchronous));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(cant(e)),
            Err(_) => return Err(cant(DbError::Timeout(self.timeout))),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DictError::database(problems.join("\n")))
        }
    }
}

/// Where the writing connection's pragmas differ from the configuration (a file system
/// without shared memory keeps WAL off, for one).
fn sqlite_pragma_problems(options: SqliteOptions, journal: &str, synchronous: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let want = options
        .journal_mode
        .unwrap_or(SqliteJournalMode::Wal)
        .as_str();
    if !journal.eq_ignore_ascii_case(want) {
        problems.push(format!(
            "sqlite: journal_mode is {journal}, not {want} as configured (sqlite_journal_mode)"
        ));
    }
    let level = match options.synchronous {
        None | Some(SqliteSynchronous::Default) => None,
        Some(SqliteSynchronous::Off) => Some(0),
        Some(SqliteSynchronous::Normal) => Some(1),
        Some(SqliteSynchronous::Full) => Some(2),
        Some(SqliteSynchronous::Extra) => Some(3),
    };
    if let Some(level) = level.filter(|l| *l != synchronous) {
        problems.push(format!(
            "sqlite: synchronous is {synchronous}, not {level} as configured (sqlite_synchronous)"
        ));
    }
    problems
}
