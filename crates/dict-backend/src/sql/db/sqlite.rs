//! SQLite through sqlx: binding values and decoding cells.

use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Database, Row, TypeInfo, ValueRef};

use super::Backend;
use crate::sql::query::Param;
use crate::sql::types::{Cell, DbError};

impl Backend for Sqlite {
    fn bind<'q>(
        q: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        p: &'q Param,
    ) -> Result<Query<'q, Self, <Self as Database>::Arguments<'q>>, DbError> {
        Ok(match p {
            // Text that is not UTF-8 goes as a BLOB that the statement casts back to TEXT
            // (`SqlText::param`): stored and compared as text with the bytes unchanged.
            Param::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => q.bind(s),
                Err(_) => q.bind(t.as_slice()),
            },
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    }

    fn cells(row: &SqliteRow) -> Result<Vec<Cell>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Cell::Null);
                }
                // Matched in place: no String per cell on the lookup path.
                let info = raw.type_info();
                Ok(match info.name() {
                    "INTEGER" => Cell::Int(row.try_get_unchecked::<i64, _>(i)?),
                    "REAL" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
                    _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
                })
            })
            .collect()
    }
}
