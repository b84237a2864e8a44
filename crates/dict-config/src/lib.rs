//! Configuration for dict-rs, a replacement for Dovecot's `dict` server process.
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
pub use self::sql_connect::{MysqlConnect, MysqlTls, PgsqlConnect, PgsqlTls, SqlConnect};
pub use self::sql_map::{
    normalize_pattern, pattern_variables, KeyField, SqlMap, SqlMapFile, ValueType,
};
pub use self::toml::{
    ListenerSection, LogFormat, LogSection, MetricsSection, ServerSection, ServerToml,
};
pub use self::uri::{unserved_driver, DictUri, FileLock, FileParams, RedisParams, SqlDriver};
