//! dict-rs's own configuration file (TOML). Everything has a default, so an empty file is
//! valid; unknown keys are errors so that typos don't go unnoticed.
//!
//! ```toml
//! dovecot_config = "/etc/dovecot/dovecot.conf"   # optional: take dicts from it
//! # data_dir = "/var/lib/dict-rs"   # only without any dict: the embedded default's home
//!
//! [listener]
//! path = "/run/dovecot/dict"
//! mode = "0660"
//! group = "dovecot"
//!
//! [dicts]
//! quota = "sqlite:/etc/dovecot/dovecot-dict-sql.conf.ext"
//! cache = "redis:host=127.0.0.1:prefix=dict/"
//!
//! [server]
//! request_timeout_ms = 5000
//!
//! [sql]
//! sqlite_synchronous = "normal"
//! sqlite_journal_mode = "wal"
//!
//! [log]
//! level = "info"
//! format = "json"
//!
//! [metrics]
//! listen = "127.0.0.1:9137"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::dovecot::{parse_mode, DictEntry, DovecotConfig};
use crate::error::{ConfigError, Origin};
use crate::sql_connect::{SqliteJournalMode, SqliteOptions, SqliteSynchronous};

/// The whole dict-rs configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerToml {
    /// `[listener]`: the socket Dovecot's clients connect to.
    pub listener: ListenerSection,
    /// `dovecot_config = "<path>"`: a Dovecot 2.3 dovecot.conf whose `dict { }` entries are
    /// served as well. A relative path is relative to the TOML file's directory.
    pub dovecot_config: Option<PathBuf>,
    /// `[dicts]`: `name = "uri"`, the same URI syntax as dovecot.conf's `dict { }`. Already
    /// checked with [`DictEntry::parse_uri`]. In file order.
    pub dicts: Vec<DictEntry>,
    /// `[server]`: limits and timeouts.
    pub server: ServerSection,
    /// `[sql]`: settings of SQL dicts that a 2.3 config cannot carry.
    pub sql: SqlSection,
    /// `[log]`
    pub log: LogSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
    /// `data_dir`: where the embedded default (served when no dict is configured at all)
    /// keeps its map file and SQLite database. Unset: the server's default. A relative path
    /// is relative to the TOML file's directory.
    pub data_dir: Option<PathBuf>,
    /// The `data_dir = …` line, for messages.
    pub data_dir_origin: Option<Origin>,
}

/// `[listener]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSection {
    /// UNIX socket path. Unset: the caller decides (Dovecot's default is
    /// `/run/dovecot/dict`, or what `dovecot_config` says).
    pub path: Option<PathBuf>,
    /// Socket permissions, written as an octal string (`"0660"`); default 0660 like Dovecot.
    #[serde(deserialize_with = "octal_mode")]
    pub mode: u32,
    /// Socket owner; unset leaves it to whoever runs the server.
    pub user: Option<String>,
    /// Socket group; Dovecot's clients usually need `dovecot`.
    pub group: Option<String>,
    /// `listen(2)` backlog. Default 1024.
    pub backlog: u32,
    /// Connections served at once; more wait in the backlog. Default 10000.
    pub max_connections: usize,
}

impl Default for ListenerSection {
    fn default() -> Self {
        ListenerSection {
            path: None,
            mode: 0o660,
            user: None,
            group: None,
            backlog: 1024,
            max_connections: 10_000,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Requests of one connection waiting for their reply before it stops reading more.
    /// Default 1000.
    pub max_pending_per_connection: usize,
    /// A backend call taking longer fails with an `F` reply. Default 5000.
    pub request_timeout_ms: u64,
    /// How long a shutdown waits for running requests. Default 10000.
    pub shutdown_timeout_ms: u64,
    /// A lookup, iteration or commit taking longer is logged as a warning, like Dovecot's
    /// `warn_slow_msecs`. 0 turns the warning off. Default 5000.
    pub warn_slow_ms: u64,
    /// A connection that sends no hello within this time is closed. Default 10000.
    pub hello_timeout_ms: u64,
    /// A connection with no request pending that sends nothing for this long is closed
    /// (Dovecot's clients reconnect by themselves). 0: never. Default 600000 (10 minutes).
    pub idle_timeout_ms: u64,
    /// Bytes (keys, values, a little per change) one connection may hold in open
    /// transactions; past it the connection is closed. Default 16 MiB.
    pub max_transaction_bytes_per_connection: usize,
    /// The same, for all connections together. Default 512 MiB.
    pub max_transaction_bytes_total: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            max_pending_per_connection: 1000,
            request_timeout_ms: 5000,
            shutdown_timeout_ms: 10_000,
            warn_slow_ms: 5000,
            hello_timeout_ms: 10_000,
            idle_timeout_ms: 600_000,
            max_transaction_bytes_per_connection: 16 << 20,
            max_transaction_bytes_total: 512 << 20,
        }
    }
}

impl ServerSection {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }

    /// The idle timeout; `None` when idle connections are kept.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    /// The slow-operation threshold; `None` when the warning is off.
    pub fn warn_slow(&self) -> Option<Duration> {
        (self.warn_slow_ms > 0).then(|| Duration::from_millis(self.warn_slow_ms))
    }
}

/// `[sql]`: Dovecot 2.4's SQLite settings, for every SQLite dict whose own configuration
/// (a 2.4 `dict_server { }` block) does not set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSection {
    /// `default` (no pragma), `off`, `normal`, `full` or `extra`. Unset: `default`.
    pub sqlite_synchronous: Option<SqliteSynchronous>,
    /// `delete` or `wal`. Unset: `wal`.
    pub sqlite_journal_mode: Option<SqliteJournalMode>,
}

impl SqlSection {
    /// The SQLite settings as one value.
    pub fn sqlite(&self) -> SqliteOptions {
        SqliteOptions {
            synchronous: self.sqlite_synchronous,
            journal_mode: self.sqlite_journal_mode,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A level (`info`) or a tracing filter (`info,dict_server=debug`). Default `info`.
    pub level: String,
    /// `"text"` (default) or `"json"`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `listen = "127.0.0.1:9137"`: serve `/metrics` over HTTP there. Unset (default): off.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The file as TOML sees it; `dicts` keeps spans so errors can name the line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerToml {
    #[serde(default)]
    listener: ListenerSection,
    dovecot_config: Option<PathBuf>,
    #[serde(default)]
    dicts: BTreeMap<String, ::toml::Spanned<String>>,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    sql: SqlSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    metrics: MetricsSection,
    data_dir: Option<::toml::Spanned<PathBuf>>,
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    parse_mode(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid mode '{s}': expected an octal string like \"0660\""
        ))
    })
}

impl ServerToml {
    pub fn load(path: impl AsRef<Path>) -> Result<ServerToml, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            included_from: None,
            source,
        })?;
        let mut config = Self::parse_str(&text, path)?;
        if let Some(dir) = path.parent() {
            for relative in [&mut config.dovecot_config, &mut config.data_dir] {
                if let Some(p) = relative.as_mut().filter(|p| p.is_relative()) {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Parses `text` as the contents of `path`, which is only used in messages.
    pub fn parse_str(text: &str, path: impl AsRef<Path>) -> Result<ServerToml, ConfigError> {
        let path = path.as_ref();
        let line_of = |offset: usize| {
            let newlines = text.as_bytes()[..offset.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            u32::try_from(newlines + 1).unwrap_or(u32::MAX)
        };
        let raw: RawServerToml = ::toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(s.start));
            ConfigError::invalid(&Origin::new(path, line), e.message().trim_end())
        })?;

        let mut dicts: Vec<(usize, DictEntry)> = raw
            .dicts
            .into_iter()
            .map(|(name, uri)| {
                let start = uri.span().start;
                let origin = Origin::new(path, line_of(start));
                (start, DictEntry::from_uri(name, uri.into_inner(), origin))
            })
            .collect();
        dicts.sort_by_key(|(start, _)| *start);
        let dicts: Vec<DictEntry> = dicts.into_iter().map(|(_, d)| d).collect();
        for dict in &dicts {
            dict.parse_uri()?;
        }

        Ok(ServerToml {
            listener: raw.listener,
            dovecot_config: raw.dovecot_config,
            dicts,
            server: raw.server,
            sql: raw.sql,
            log: raw.log,
            metrics: raw.metrics,
            data_dir_origin: raw
                .data_dir
                .as_ref()
                .map(|d| Origin::new(path, line_of(d.span().start))),
            data_dir: raw.data_dir.map(::toml::Spanned::into_inner),
        })
    }

    /// Every dict to serve: those of `dovecot_config` (if set, read now), then `[dicts]`,
    /// whose entries replace a dovecot.conf dict of the same name.
    pub fn all_dicts(&self) -> Result<Vec<DictEntry>, ConfigError> {
        let mut all = match &self.dovecot_config {
            Some(path) => DovecotConfig::load(path)?.dicts,
            None => Vec::new(),
        };
        for dict in &self.dicts {
            match all.iter_mut().find(|d| d.name == dict.name) {
                Some(old) => *old = dict.clone(),
                None => all.push(dict.clone()),
            }
        }
        Ok(all)
    }
}

impl FromStr for ServerToml {
    type Err = ConfigError;

    /// Messages name the file `<string>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_str(text, "<string>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        ServerToml::parse_str(text, "/etc/dict-rs.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = ServerToml::from_str("").unwrap();
        assert_eq!(c.listener, ListenerSection::default());
        assert_eq!(
            (
                c.listener.mode,
                c.listener.backlog,
                c.listener.max_connections
            ),
            (0o660, 1024, 10_000)
        );
        assert_eq!(c.server.request_timeout(), Duration::from_millis(5000));
        assert_eq!(
            (
                c.server.max_pending_per_connection,
                c.server.shutdown_timeout_ms
            ),
            (1000, 10_000)
        );
        assert_eq!(
            (c.log.level.as_str(), c.log.format),
            ("info", LogFormat::Text)
        );
        assert_eq!(c.data_dir, None);
        assert_eq!(c.sql.sqlite(), SqliteOptions::default());
        assert!(c.dicts.is_empty() && c.dovecot_config.is_none());
        assert_eq!(c.server.warn_slow(), Some(Duration::from_secs(5)));
        assert_eq!(c.metrics.listen, None);
    }

    #[test]
    fn full_file() {
        let c = ServerToml::parse_str(
            "dovecot_config = \"/etc/dovecot/dovecot.conf\"\ndata_dir = \"/srv/dict\"\n\
             [listener]\npath = \"/run/dovecot/dict\"\nmode = \"0600\"\nuser = \"root\"\n\
             group = \"dovecot\"\nbacklog = 64\nmax_connections = 5\n\
             [dicts]\nzz = \"redis:db=2\"\nquota = \"sqlite:/etc/q.conf\"\n\
             [server]\nmax_pending_per_connection = 10\nrequest_timeout_ms = 1\nshutdown_timeout_ms = 2\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n\
             [metrics]\nlisten = \"127.0.0.1:9137\"\n",
            "/etc/dict-rs.toml",
        )
        .unwrap();
        assert_eq!(c.listener.mode, 0o600);
        assert_eq!(c.listener.group.as_deref(), Some("dovecot"));
        assert_eq!((c.listener.backlog, c.listener.max_connections), (64, 5));
        let dicts: Vec<_> = c
            .dicts
            .iter()
            .map(|d| (d.name.as_str(), d.origin.line))
            .collect();
        assert_eq!(dicts, vec![("zz", 11), ("quota", 12)]);
        assert_eq!(c.server.max_pending_per_connection, 10);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.data_dir, Some(PathBuf::from("/srv/dict")));
        assert_eq!(c.data_dir_origin, Some(Origin::new("/etc/dict-rs.toml", 2)));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9137".parse().unwrap()));
    }

    #[test]
    fn warn_slow_and_metrics() {
        let c = ServerToml::from_str("[server]\nwarn_slow_ms = 0\n").unwrap();
        assert_eq!(c.server.warn_slow(), None);
        let c = ServerToml::from_str("[server]\nwarn_slow_ms = 250\n").unwrap();
        assert_eq!(c.server.warn_slow(), Some(Duration::from_millis(250)));
        let e = err("[metrics]\nlisten = \"127.0.0.1:9137\"\nport = 1\n");
        assert!(
            e.starts_with("/etc/dict-rs.toml:3: unknown field `port`"),
            "{e}"
        );
        let e = err("[metrics]\nlisten = \"localhost\"\n");
        assert!(
            e.starts_with("/etc/dict-rs.toml:2: invalid socket address"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err("[listener]\nmode = \"0660\"\nbogus = 1\n");
        assert!(
            e.starts_with("/etc/dict-rs.toml:3: unknown field `bogus`"),
            "{e}"
        );
        let e = err("[listener]\n\nmode = \"rw\"\n");
        assert!(
            e.starts_with("/etc/dict-rs.toml:3: invalid mode 'rw'"),
            "{e}"
        );
        let e = err("[log]\nformat = \"xml\"\n");
        assert!(
            e.starts_with("/etc/dict-rs.toml:2: unknown variant `xml`"),
            "{e}"
        );
        assert_eq!(
            err("[dicts]\nok = \"redis:\"\nbad = \"redis:foo=1\"\n"),
            "/etc/dict-rs.toml:3: dict 'bad': Unknown parameter: foo"
        );
    }

    #[test]
    fn sql_section_sets_sqlite_options() {
        let c = ServerToml::from_str(
            "[sql]\nsqlite_synchronous = \"normal\"\nsqlite_journal_mode = \"delete\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sql.sqlite(),
            SqliteOptions {
                synchronous: Some(SqliteSynchronous::Normal),
                journal_mode: Some(SqliteJournalMode::Delete),
            }
        );
        let e = err("[sql]\nsqlite_synchronous = \"sometimes\"\n");
        assert!(
            e.contains("/etc/dict-rs.toml:2") && e.contains("invalid value 'sometimes'"),
            "{e}"
        );
        assert!(err("[sql]\nsqlite_journal = \"wal\"\n").contains("unknown field"));
    }
}
