//! MySQL/MariaDB through sqlx: text binding (the client's bytes, see [`MysqlText`]) and
//! cell decoding.
//!
//! A dict value is bytes; Dovecot pastes them into its SQL as a string literal, so the
//! database judges them by the column's type: a text column refuses bytes its character
//! set can't hold, a binary column keeps them. Binding such text as a BLOB instead would
//! let MySQL convert it byte by byte (a latin1 column stores `\xff` as `ÿ`) and makes
//! SQLite store a BLOB where Dovecot stores TEXT. These types send the bytes as text.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlRow, MySqlTypeInfo};
use sqlx::{Column, Encode, Row, Type};

use super::{Backend, Bound};
use crate::sql::types::{Cell, DbError};

/// Bytes bound as a MySQL string (`VAR_STRING`): the server reads them in the
/// connection's character set (utf8mb4) and checks them against the column's, as it
/// does Dovecot's string literals. (A BLOB parameter is binary and converted unchecked.)
pub(crate) struct MysqlText<'a>(pub &'a [u8]);

impl Type<MySql> for MysqlText<'_> {
    fn type_info() -> MySqlTypeInfo {
        <str as Type<MySql>>::type_info()
    }
}

impl<'q> Encode<'q, MySql> for MysqlText<'_> {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        // A string and a byte string have the same wire form: length, then the bytes.
        <&[u8] as Encode<MySql>>::encode_by_ref(&self.0, buf)
    }
}

impl Backend for MySql {
    fn bind_text<'q>(q: Bound<'q, Self>, t: &'q [u8]) -> Result<Bound<'q, Self>, DbError> {
        // Always as a string, also when not UTF-8: the column decides, as for Dovecot.
        Ok(q.bind(MysqlText(t)))
    }

    fn cell(row: &MySqlRow, i: usize, type_name: &str) -> Result<Cell, DbError> {
        Ok(match type_name {
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                Cell::Int(row.try_get_unchecked::<i64, _>(i)?)
            }
            t if t.ends_with("UNSIGNED") || t == "BIT" => {
                Cell::UInt(row.try_get_unchecked::<u64, _>(i)?)
            }
            "FLOAT" => Cell::Float(f64::from(row.try_get_unchecked::<f32, _>(i)?)),
            "DOUBLE" => Cell::Float(row.try_get_unchecked::<f64, _>(i)?),
            t @ ("DATE" | "TIME" | "DATETIME" | "TIMESTAMP") => {
                return Err(DbError::Invalid(format!(
                    "column {} has type {t}, which the dict can't read (cast it to a string in a view)",
                    row.column(i).name()
                )))
            }
            _ => Cell::Bytes(row.try_get_unchecked::<&[u8], _>(i)?.to_vec()),
        })
    }
}
