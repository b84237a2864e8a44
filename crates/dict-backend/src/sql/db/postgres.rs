//! PostgreSQL through sqlx: text binding (UTF-8 only) and cell decoding.

use sqlx::postgres::{PgRow, Postgres};
use sqlx::Row;

use super::{Backend, Bound};
use crate::sql::types::{Cell, DbError, NOT_UTF8};

impl Backend for Postgres {
    fn bind_text<'q>(q: Bound<'q, Self>, t: &'q [u8]) -> Result<Bound<'q, Self>, DbError> {
        match std::str::from_utf8(t) {
            Ok(s) => Ok(q.bind(s)),
            // Callers refuse such text before anything is sent (`refuse_non_utf8`).
            Err(_) => Err(DbError::Invalid(NOT_UTF8.into())),
        }
    }

    /// Every selected column is text or bytea (see `SqlText::select`).
    fn cell(row: &PgRow, i: usize, type_name: &str) -> Result<Cell, DbError> {
        Ok(match type_name {
            "INT2" => Cell::Int(i64::from(row.try_get::<i16, _>(i)?)),
            "INT4" => Cell::Int(i64::from(row.try_get::<i32, _>(i)?)),
            "INT8" => Cell::Int(row.try_get::<i64, _>(i)?),
            _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
        })
    }
}
