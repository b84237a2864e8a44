//! PostgreSQL through sqlx: binding values (text must be UTF-8) and decoding cells.

use sqlx::postgres::{PgRow, Postgres};
use sqlx::query::Query;
use sqlx::{Database, Row, TypeInfo, ValueRef};

use super::Backend;
use crate::sql::query::Param;
use crate::sql::types::{Cell, DbError, NOT_UTF8};

impl Backend for Postgres {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        Ok(match p {
            Param::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => q.bind(s),
                // Callers refuse such text before anything is sent (`refuse_non_utf8`).
                Err(_) => return Err(DbError::Invalid(NOT_UTF8.into())),
            },
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    }

    /// Every selected column is text or bytea (see `SqlText::select`).
    fn cells(row: &PgRow) -> Result<Vec<Cell>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Cell::Null);
                }
                // Matched in place: no String per cell on the lookup path.
                let info = raw.type_info();
                Ok(match info.name() {
                    "INT2" => Cell::Int(i64::from(row.try_get::<i16, _>(i)?)),
                    "INT4" => Cell::Int(i64::from(row.try_get::<i32, _>(i)?)),
                    "INT8" => Cell::Int(row.try_get::<i64, _>(i)?),
                    _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
                })
            })
            .collect()
    }
}
