//! Text parameters as exactly the bytes the client sent, also when they are not UTF-8.
//!
//! A dict value is bytes; Dovecot pastes them into its SQL as a string literal, so the
//! database judges them by the column's type: a text column refuses bytes its character
//! set can't hold, a binary column keeps them. Binding such text as a BLOB instead would
//! let MySQL convert it byte by byte (a latin1 column stores `\xff` as `ÿ`) and makes
//! SQLite store a BLOB where Dovecot stores TEXT. These types send the bytes as text.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlTypeInfo};
use sqlx::{Encode, Type};

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
