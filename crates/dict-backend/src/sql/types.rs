//! The leaf types every part of the SQL dict shares: a returned cell, a database-level
//! error, how far a transaction got, and one step of a transaction. They depend on
//! nothing in `sql/` but the bound value ([`Param`]) and column types.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dict_config::{SqlMap, ValueType};

use super::dialect::ColumnType;
use super::param::{canonical_uuid, Param};
use super::query::Shape;
use crate::{DictError, ErrorKind};

/// What PostgreSQL's client library says of text that isn't valid in the database's
/// encoding (UTF-8), which Dovecot's pgsql dict answers.
pub(crate) const NOT_UTF8: &str = "invalid multibyte character";

/// One value as the database returned it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bytes(Vec<u8>),
}

/// A database-level failure.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlx(sqlx::Error),
    /// The operation did not finish within the dict's timeout.
    Timeout(Duration),
    /// Refused before reaching the database.
    Invalid(String),
    /// SQLite's own error on a lookup connection (`sqlite_read`), as sqlx reports it.
    Sqlite(rusqlite::Error),
}

impl DbError {
    /// The connection (or the way to it) failed, rather than the statement: worth
    /// retrying on another connection when nothing can have been applied.
    pub fn is_connection(&self) -> bool {
        match self {
            DbError::Sqlx(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            DbError::Timeout(_) => true,
            DbError::Invalid(_) | DbError::Sqlite(_) => false,
        }
    }

    /// Refused here, before anything was sent: the connection is fine.
    pub fn is_refused(&self) -> bool {
        matches!(self, DbError::Invalid(_))
    }

    /// An error reported by the database server about a statement.
    pub fn is_database(&self) -> bool {
        matches!(
            self,
            DbError::Sqlx(sqlx::Error::Database(_)) | DbError::Sqlite(_)
        )
    }

    /// The kind of failure, as the dict reports it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DbError::Timeout(_) => ErrorKind::Timeout,
            DbError::Invalid(_) => ErrorKind::Refused,
            DbError::Sqlite(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    ErrorKind::Timeout
                }
                Some(rusqlite::ErrorCode::CannotOpen) => ErrorKind::Connection,
                _ => ErrorKind::Database,
            },
            e if e.is_connection() => ErrorKind::Connection,
            DbError::Sqlx(_) => ErrorKind::Database,
        }
    }

    /// The dict's error: `prefix` then this error's text, of this error's kind.
    pub fn context(&self, prefix: impl fmt::Display) -> DictError {
        DictError::with_kind(self.kind(), format!("{prefix}{self}"))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => f.write_str(e.message()),
            DbError::Sqlx(sqlx::Error::PoolTimedOut) => {
                f.write_str("timed out connecting to the database")
            }
            DbError::Sqlx(e) => write!(f, "{e}"),
            DbError::Timeout(t) => write!(f, "timed out after {} ms", t.as_millis()),
            DbError::Invalid(s) => f.write_str(s),
            DbError::Sqlite(e) => write!(f, "{e}"),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError::Sqlx(e)
    }
}

/// How far a transaction got, to tell a failed commit from an uncertain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Acquiring a connection or sending BEGIN: nothing can have been applied.
    Begin,
    /// Running the statements: the database rolls them back if we go away.
    Statements,
    /// COMMIT sent: it may or may not have been applied.
    Committing,
    /// One idempotent statement sent on its own (autocommit): it may have been applied,
    /// but running it again on a fresh connection gives the same rows either way.
    Repeatable,
}

/// One step of a transaction.
#[derive(Debug, Clone)]
pub(crate) enum Exec {
    /// Run `sql`; with `count`, a statement that touched no row makes the commit NOTFOUND.
    /// Only increments count; every other statement (an upsert or a delete) is idempotent.
    Run {
        sql: Arc<str>,
        params: Vec<Param>,
        count: bool,
        /// An upsert or delete of one row that can join others of its shape in a batch.
        fold: Option<Fold>,
    },
    /// Run `update`; if it touched no row, run `insert`.
    UpdateElseInsert {
        update: Arc<str>,
        update_params: Vec<Param>,
        insert: Arc<str>,
        insert_params: Vec<Param>,
    },
    /// An increment that can't change its row (its diffs add up to 0) where the database
    /// counts changed rows, not matched ones (MySQL, as Dovecot uses it): NOTFOUND.
    Unchanged,
}

/// How a one-row statement joins others of the same shape into one statement for many
/// rows ([`Shape::Rows`]) when commits are applied together.
#[derive(Debug, Clone)]
pub(crate) struct Fold {
    /// The one-row shape.
    pub base: Shape,
    /// The leading parameters that make the row (MySQL's upsert binds the values again
    /// after them).
    pub row: usize,
    /// Positions in the row of the key columns: rows with the same key are the same row.
    pub key: Vec<usize>,
}

impl Fold {
    /// The row's key values, of the statement's `params`.
    pub fn key_of<'p>(&self, params: &'p [Param]) -> Vec<&'p Param> {
        self.key.iter().map(|&i| &params[i]).collect()
    }
}

impl Exec {
    /// The values this step binds.
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        let (a, b): (&[Param], &[Param]) = match self {
            Exec::Run { params, .. } => (params, &[]),
            Exec::UpdateElseInsert {
                update_params,
                insert_params,
                ..
            } => (update_params, insert_params),
            Exec::Unchanged => (&[], &[]),
        };
        a.iter().chain(b)
    }
}

/// Columns and unique keys of a table, for `check()` and PostgreSQL's parameter types.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableInfo {
    /// Column names as stored, with their type (type only known on PostgreSQL).
    pub columns: HashMap<String, Option<ColumnType>>,
    /// Each unique index or primary key, as its column names.
    pub unique_keys: Vec<Vec<String>>,
}

/// A cell as dict text (protocol-spec, SQL dict notes): numbers in decimal, hexblob columns as
/// lowercase hex; `None` for NULL.
pub(super) fn cell_text(cell: Cell, ty: ValueType) -> Option<Vec<u8>> {
    let bytes = match cell {
        Cell::Null => return None,
        Cell::Int(i) => i.to_string().into_bytes(),
        Cell::UInt(u) => u.to_string().into_bytes(),
        Cell::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{f:.1}").into_bytes()
        }
        Cell::Float(f) => f.to_string().into_bytes(),
        Cell::Bytes(b) => b,
    };
    Some(match ty {
        ValueType::Hexblob => hex::encode(bytes).into_bytes(),
        // As Dovecot 2.4 prints a uuid column: lowercase, with dashes.
        ValueType::Uuid => canonical_uuid(&bytes)
            .map(String::into_bytes)
            .unwrap_or(bytes),
        _ => bytes,
    })
}

/// The values of a row: NULL reads as an empty value.
pub(super) fn row_values(map: &SqlMap, cells: &mut impl Iterator<Item = Cell>) -> Vec<Vec<u8>> {
    map.value_types
        .iter()
        .map(|ty| {
            cells
                .next()
                .and_then(|c| cell_text(c, *ty))
                .unwrap_or_default()
        })
        .collect()
}
