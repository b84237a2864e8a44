//! Configuration for dict-rs, a replacement for Dovecot's `dict` server process.
//!
//! ```
//! use dict_config::{DictSpec, DovecotConfig, SqlConnect, SqlDriver, SqlMapFile};
//!
//! // A Dovecot 2.3 configuration names each dict by a URI…
//! let conf = DovecotConfig::parse_str(
//!     "dict {\n  quota = mysql:/etc/dovecot/dovecot-dict-sql.conf.ext\n}\n",
//!     "/etc/dovecot/dovecot.conf",
//! )
//! .unwrap();
//! assert_eq!(conf.dicts[0].name, "quota");
//!
//! // …whose dict-sql map file is read as Dovecot reads it, its `connect` into a typed value.
//! let maps = SqlMapFile::parse_str(
//!     SqlDriver::Mysql,
//!     "connect = host=db1 host=db2 dbname=mail user=dovecot\n\
//!      map {\n  pattern = priv/quota/storage\n  table = quota\n  username_field = username\n  value_field = bytes\n}\n",
//!     "/etc/dovecot/dovecot-dict-sql.conf.ext",
//! )
//! .unwrap();
//! assert_eq!(maps.maps[0].table, "quota");
//! let SqlConnect::Mysql(mysql) = &maps.connect else { panic!("a MySQL connection") };
//! assert_eq!(mysql.hosts.len(), 2);
//! # let _ = DictSpec::Sql { driver: SqlDriver::Mysql, map_file: maps };
//! ```
//!
//! Dovecot's own files are read unchanged (a 2.3 `dovecot.conf` and its dict-sql map
//! files, or a 2.4 `dovecot.conf`), plus our TOML file. Everything ends up in plain
//! structs; nothing here opens a socket or a database. Every error message starts with
//! `file:line`.
//!
//! * [`settings`]: the Dovecot settings syntax, as a tree of [`Node`]s.
//! * [`convert`]: the 2.3 <-> 2.4 converter, printing back what the parsers read.
//! * [`dovecot`]: the dicts, `base_dir` and dict listeners of a dovecot.conf, 2.3
//!   ([`dovecot::v23`]) or 2.4 ([`dovecot::v24`]).
//! * [`uri`]: dict URIs (`sqlite:…`, `redis:…`, `file:…`).
//! * [`sql_connect`]: one SQL connection (hosts, credentials, TLS, pool), typed.
//! * [`sql_map`]: dict-sql map files.
//! * [`toml`](mod@toml): dict-rs's own configuration file.

pub mod convert;
pub mod dovecot;
mod error;
pub mod settings;
pub mod sql_connect;
pub mod sql_map;
pub mod toml;
pub mod uri;

pub use self::dovecot::{
    DictEntry, DictSource, DictSpec, DovecotConfig, UnixListenerConf, DEFAULT_BASE_DIR,
};
pub use self::error::{ConfigError, Origin};
pub use self::settings::Node;
pub use self::sql_connect::{
    MysqlConnect, MysqlTls, PgsqlConnect, PgsqlTls, SqlConnect, SqliteJournalMode, SqliteOptions,
    SqliteSynchronous,
};
pub use self::sql_map::{
    normalize_pattern, pattern_variables, KeyField, SqlMap, SqlMapFile, ValueType,
};
pub use self::toml::{
    ListenerSection, LogFormat, LogSection, MetricsSection, ServerSection, ServerToml, SqlSection,
};
pub use self::uri::{unserved_driver, DictUri, FileLock, FileParams, RedisParams, SqlDriver};
