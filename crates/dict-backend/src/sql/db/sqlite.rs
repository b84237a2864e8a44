//! SQLite through sqlx: text binding and cell decoding.

use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::Row;

use super::{Backend, Bound};
use crate::sql::types::{Cell, DbError};

impl Backend for Sqlite {
    fn bind_text<'q>(q: Bound<'q, Self>, t: &'q [u8]) -> Result<Bound<'q, Self>, DbError> {
        Ok(match std::str::from_utf8(t) {
            Ok(s) => q.bind(s),
            // Not UTF-8: a BLOB that the statement casts back to TEXT (`SqlText::param`),
            // stored and compared as text with the bytes unchanged.
            Err(_) => q.bind(t),
        })
    }

    fn cell(row: &SqliteRow, i: usize, type_name: &str) -> Result<Cell, DbError> {
        Ok(match type_name {
            "INTEGER" => Cell::Int(row.try_get_unchecked::<i64, _>(i)?),
            "REAL" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
            _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
        })
    }
}
