//! One SQL connection, typed: where a dict-sql dict connects and how (hosts in failover
//! order, port, credentials, database, TLS, pool size, timeouts), whichever syntax named it.
//!
//! A 2.3 map file's `connect` string is read by [`SqlConnect::parse`] the way each of
//! Dovecot's drivers reads it (SQLite: a path; MySQL: `key=value` words; PostgreSQL: libpq
//! conninfo or URI); a 2.4 `dict_server { }` block is read straight into the same value
//! ([`dovecot::v24`](crate::dovecot::v24)), and [`SqlConnect::to_connect_string`] prints the
//! 2.3 form back ([`convert`](crate::convert) prints the 2.4 form). The backend maps the value to
//! its database driver's options; nothing here opens a connection.
//!
//! ```
//! use dict_config::{SqlConnect, SqlDriver};
//!
//! let c = SqlConnect::parse(SqlDriver::Mysql, "host=db1 host=db2 dbname=mail maxconns=9").unwrap();
//! let SqlConnect::Mysql(my) = &c else { unreachable!() };
//! assert_eq!((my.hosts.as_slice(), my.maxconns), (&["db1".to_string(), "db2".into()][..], Some(9)));
//! assert_eq!(c.to_connect_string().unwrap(), "host=db1 host=db2 dbname=mail maxconns=9");
//! ```

mod conninfo;
mod mysql;
mod pgsql;
mod sqlite;

use std::path::PathBuf;

pub use self::conninfo::conninfo_quote;
pub use self::mysql::{MysqlConnect, MysqlTls};
pub use self::pgsql::{PgsqlConnect, PgsqlTls, PGSQL_IGNORED};
pub use self::sqlite::{SqliteJournalMode, SqliteOptions, SqliteSynchronous};
use crate::uri::SqlDriver;

/// Dovecot's default `maxconns` (connections per host).
pub const DEFAULT_MAXCONNS: u32 = 5;

/// Where and how one SQL dict connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlConnect {
    /// The database file, and how it is written.
    Sqlite {
        path: PathBuf,
        options: SqliteOptions,
    },
    Mysql(Box<MysqlConnect>),
    Pgsql(Box<PgsqlConnect>),
}

impl SqlConnect {
    /// Reads a 2.3 `connect` value for `driver`. The error text is meant for a start-up
    /// message (the caller adds the file and line).
    pub fn parse(driver: SqlDriver, connect: &str) -> Result<SqlConnect, String> {
        match driver {
            SqlDriver::Sqlite => {
                if connect.is_empty() {
                    return Err(
                        "sqlite: empty connect setting (it must be the database file path)".into(),
                    );
                }
                Ok(SqlConnect::Sqlite {
                    path: PathBuf::from(connect),
                    options: SqliteOptions::default(),
                })
            }
            SqlDriver::Mysql => {
                MysqlConnect::parse(connect).map(|c| SqlConnect::Mysql(Box::new(c)))
            }
            SqlDriver::Pgsql => {
                PgsqlConnect::parse(connect).map(|c| SqlConnect::Pgsql(Box::new(c)))
            }
        }
    }

    pub fn driver(&self) -> SqlDriver {
        match self {
            SqlConnect::Sqlite { .. } => SqlDriver::Sqlite,
            SqlConnect::Mysql(_) => SqlDriver::Mysql,
            SqlConnect::Pgsql(_) => SqlDriver::Pgsql,
        }
    }

    /// The 2.3 `connect` value that [`SqlConnect::parse`] reads back to `self`. Fails for
    /// what the string can't carry (whitespace inside a MySQL value).
    pub fn to_connect_string(&self) -> Result<String, String> {
        match self {
            SqlConnect::Sqlite { path, options } if *options == SqliteOptions::default() => {
                Ok(path.display().to_string())
            }
            SqlConnect::Sqlite { .. } => Err("sqlite_synchronous and sqlite_journal_mode can't \
                be expressed in a Dovecot 2.3 connect string (dict-rs.toml's [sql] sets them)"
                .into()),
            SqlConnect::Mysql(c) => c.to_connect_string(),
            SqlConnect::Pgsql(c) => Ok(c.to_connect_string()),
        }
    }
}

pub(crate) fn seconds(driver: &str, key: &str, value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| format!("{driver}: invalid {key} value '{value}' (expected seconds)"))
}

pub(crate) fn maxconns(driver: &str, value: &str) -> Result<u32, String> {
    value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("{driver}: invalid maxconns value '{value}' (expected a number > 0)")
    })
}

#[cfg(test)]
mod tests;
