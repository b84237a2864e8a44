//! The parts of a Dovecot `dovecot.conf` that the dict server needs: the dicts, `base_dir`, and the listeners of `service dict` /
//! `service dict-async`. Everything else in the file is parsed and ignored.
//!
//! A 2.3 file names its dicts in `dict { name = uri }` ([`v23`]); a file that sets
//! `dovecot_config_version` is read as 2.4 (`dict_server { dict <name> { … } }`, [`v24`]).
//! Both end up as the same [`DictEntry`]s; the listeners are read alike.

mod listeners;
pub mod v23;
pub mod v24;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(crate) use self::listeners::parse_mode;
use self::listeners::Listeners;
pub use self::listeners::UnixListenerConf;
use crate::error::{ConfigError, Origin};
use crate::settings::{self, Node};
use crate::sql_map::SqlMapFile;
use crate::uri::{DictUri, FileParams, RedisParams, SqlDriver};

/// Debian's compiled-in `base_dir`, used when dovecot.conf doesn't set one.
pub const DEFAULT_BASE_DIR: &str = "/run/dovecot";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DovecotConfig {
    /// 2.3: every entry of every top-level `dict { }` block; 2.4: every
    /// `dict_server { dict <name> { } }`. In first-seen order; a name given twice keeps its
    /// first position and its last definition, as Dovecot's merging does.
    pub dicts: Vec<DictEntry>,
    /// `dovecot_config_version`, when the file is a 2.4 one.
    pub config_version: Option<String>,
    /// `None` when not set: see [`DovecotConfig::base_dir_or_default`].
    pub base_dir: Option<PathBuf>,
    /// Listeners of `service dict`. Dovecot's built-in `dict` listener is always there,
    /// even when the file doesn't mention it, because Dovecot would create it too.
    pub dict_listeners: Vec<UnixListenerConf>,
    /// Listeners of `service dict-async`, built-in `dict-async` included.
    pub dict_async_listeners: Vec<UnixListenerConf>,
}

/// One dict to serve: the name clients send in their hello, and how it is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictEntry {
    pub name: String,
    pub source: DictSource,
    /// The `name = uri` line (2.3) or the `dict <name> {` line (2.4).
    pub origin: Origin,
}

/// Where a dict's configuration comes from.
// Made once per dict at startup: the size of the parsed variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DictSource {
    /// 2.3 (and our TOML): a dict URI, kept as text so that a dict with a driver we don't
    /// serve (`file:`, `proxy:`) doesn't stop the others from loading.
    Uri(String),
    /// 2.4: everything was in dovecot.conf itself and is parsed already.
    Parsed(DictSpec),
}

/// A dict's backend configuration, whichever syntax it was written in: what the backends
/// are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DictSpec {
    /// A dict-sql dict: the driver, and the maps with the driver's connect string (for a
    /// 2.4 dict both built from its settings; `path` is the dovecot.conf).
    Sql {
        driver: SqlDriver,
        map_file: SqlMapFile,
    },
    Redis(RedisParams),
    File(FileParams),
}

impl DictEntry {
    /// A 2.3-style entry.
    pub fn from_uri(name: impl Into<String>, uri: impl Into<String>, origin: Origin) -> Self {
        DictEntry {
            name: name.into(),
            source: DictSource::Uri(uri.into()),
            origin,
        }
    }

    /// The URI of a 2.3-style entry.
    pub fn uri(&self) -> Option<&str> {
        match &self.source {
            DictSource::Uri(uri) => Some(uri),
            DictSource::Parsed(_) => None,
        }
    }

    /// [`DictUri::parse`], with errors pointing at this entry's line. A 2.4 entry has no
    /// URI: its SQL dict gives an error, its Redis dict the parameters.
    pub fn parse_uri(&self) -> Result<DictUri, ConfigError> {
        match &self.source {
            DictSource::Uri(uri) => DictUri::parse(&self.name, uri).map_err(|e| e.at(&self.origin)),
            DictSource::Parsed(DictSpec::Redis(params)) => Ok(DictUri::Redis(params.clone())),
            DictSource::Parsed(DictSpec::File(params)) => Ok(DictUri::File(params.clone())),
            DictSource::Parsed(DictSpec::Sql { .. }) => Err(ConfigError::Dict {
                origin: Some(self.origin.clone()),
                name: self.name.clone(),
                message: "a Dovecot 2.4 SQL dict has no URI".into(),
            }),
        }
    }

    /// The backend configuration: a 2.3 URI is parsed and its map file read now.
    pub fn spec(&self) -> Result<DictSpec, ConfigError> {
        match &self.source {
            DictSource::Parsed(spec) => Ok(spec.clone()),
            DictSource::Uri(_) => match self.parse_uri()? {
                DictUri::Sql { driver, map_path } => Ok(DictSpec::Sql {
                    driver,
                    map_file: SqlMapFile::load(driver, map_path)?,
                }),
                DictUri::Redis(params) => Ok(DictSpec::Redis(params)),
                DictUri::File(params) => Ok(DictSpec::File(params)),
            },
        }
    }

    /// The driver of a 2.3 URI that dict-rs does not serve (`ldap`, `fs`, …): such a dict
    /// is left out, and its clients get "Unconfigured dictionary".
    pub fn unserved_driver(&self) -> Option<&str> {
        self.uri().and_then(crate::uri::unserved_driver)
    }

    /// One line for logs: the URI, or the 2.4 driver. Never a password.
    pub fn describe(&self) -> String {
        match &self.source {
            DictSource::Uri(uri) => uri.clone(),
            DictSource::Parsed(DictSpec::Sql { driver, map_file }) => format!(
                "driver = sql, sql_driver = {driver}, {} dict_map(s)",
                map_file.maps.len()
            ),
            DictSource::Parsed(DictSpec::Redis(_)) => "driver = redis".to_string(),
            DictSource::Parsed(DictSpec::File(p)) => format!(
                "driver = file, dict_file_path = {}, dict_file_lock_method = {}",
                p.path.display(),
                p.lock.name()
            ),
        }
    }
}

impl DovecotConfig {
    pub fn load(path: impl AsRef<Path>) -> Result<DovecotConfig, ConfigError> {
        Self::from_nodes(&settings::parse_file(path)?)
    }

    /// Parses `text` as the contents of `path` (used in messages and for `!include`).
    pub fn parse_str(text: &str, path: impl AsRef<Path>) -> Result<DovecotConfig, ConfigError> {
        Self::from_nodes(&settings::parse_str(text, path)?)
    }

    pub fn base_dir_or_default(&self) -> &Path {
        self.base_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_BASE_DIR))
    }

    /// Looks a dict up by the name a client sends in its hello.
    pub fn dict(&self, name: &str) -> Option<&DictEntry> {
        self.dicts.iter().find(|d| d.name == name)
    }

    fn from_nodes(nodes: &[Node]) -> Result<DovecotConfig, ConfigError> {
        let mut config = DovecotConfig::default();
        let mut top: HashMap<&str, &str> = HashMap::new();
        let mut sync = Listeners::with_builtin("dict");
        let mut async_ = Listeners::with_builtin("dict-async");
        config.config_version = nodes.iter().find_map(|n| match n {
            Node::Setting { key, value, .. } if key == "dovecot_config_version" => {
                Some(value.clone())
            }
            _ => None,
        });
        let v24 = config.config_version.is_some();

        for node in nodes {
            match node {
                Node::Setting { key, value, .. } => {
                    if key == "base_dir" {
                        config.base_dir = (!value.is_empty()).then(|| PathBuf::from(value));
                    }
                    top.insert(key, value);
                }
                Node::Section {
                    kind,
                    name: None,
                    children,
                    ..
                } if kind == "dict" && !v24 => {
                    config.add_dicts(children);
                }
                Node::Section {
                    kind,
                    name: Some(name),
                    children,
                    ..
                } if kind == "service" => match name.as_str() {
                    "dict" => sync.merge(children)?,
                    "dict-async" => async_.merge(children)?,
                    _ => {}
                },
                Node::Section { .. } => {}
            }
        }

        if v24 {
            config.dicts = v24::dicts(nodes)?;
        }
        let base_dir = config.base_dir_or_default().to_path_buf();
        config.dict_listeners = sync.resolve(&base_dir, &top);
        config.dict_async_listeners = async_.resolve(&base_dir, &top);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/dovecot/dovecot.conf";

    fn load(text: &str) -> Result<DovecotConfig, String> {
        DovecotConfig::parse_str(text, FILE).map_err(|e| e.to_string())
    }

    #[test]
    fn dict_blocks_merge_and_later_names_override() {
        let c = load(
            "dict {\n  quota = sqlite:/etc/q.conf\n  expire = redis:\n}\n\
             protocol imap {\n  dict {\n    ignored = x:y\n  }\n}\n\
             dict {\n  quota = mysql:/etc/q2.conf\n  rd = redis:db=1\n}\n",
        )
        .unwrap();
        let names: Vec<_> = c
            .dicts
            .iter()
            .map(|d| (d.name.as_str(), d.uri().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("quota", "mysql:/etc/q2.conf"),
                ("expire", "redis:"),
                ("rd", "redis:db=1")
            ]
        );
        assert_eq!(c.dict("quota").unwrap().origin, Origin::new(FILE, 11));
        assert!(c.dict("ignored").is_none());
    }

    #[test]
    fn listeners_default_and_resolve_against_base_dir() {
        let c = load("protocols = imap\n").unwrap();
        assert_eq!(c.base_dir, None);
        assert_eq!(c.dict_listeners.len(), 1);
        assert_eq!(c.dict_listeners[0].path, PathBuf::from("/run/dovecot/dict"));
        assert_eq!(c.dict_listeners[0].origin, None);
        assert_eq!(
            c.dict_async_listeners[0].path,
            PathBuf::from("/run/dovecot/dict-async")
        );

        let c = load(
            "service dict {\n  unix_listener dict {\n    mode = 0600\n    user = $default_internal_user\n  }\n\
             unix_listener /var/spool/postfix/private/dict {\n    group = postfix\n  }\n}\n\
             service dict-async {\n  unix_listener dict-async {\n    group = $mygroup\n  }\n}\n\
             mygroup = mail\nbase_dir = /var/run/dovecot2\n",
        )
        .unwrap();
        let l = &c.dict_listeners;
        assert_eq!(l[0].path, PathBuf::from("/var/run/dovecot2/dict"));
        assert_eq!(
            (l[0].mode, l[0].user.as_deref(), l[0].group.as_deref()),
            (Some(0o600), Some("dovecot"), None)
        );
        assert_eq!(l[0].origin, Some(Origin::new(FILE, 2)));
        assert_eq!(l[1].path, PathBuf::from("/var/spool/postfix/private/dict"));
        assert_eq!((l[1].mode, l[1].group.as_deref()), (None, Some("postfix")));
        assert_eq!(c.dict_async_listeners[0].group.as_deref(), Some("mail"));
    }

    /// `doveconf -a`: the built-in listener is 0660 with group `$default_internal_group`;
    /// a listener the file adds is 0600 with no owner change.
    #[test]
    fn unset_listener_fields_take_dovecots_defaults() {
        let effective = |c: &DovecotConfig| -> Vec<(u32, Option<String>)> {
            c.dict_listeners
                .iter()
                .chain(&c.dict_async_listeners)
                .map(|l| (l.effective_mode(), l.effective_group().map(String::from)))
                .collect()
        };
        let c = load("service dict {\n  unix_listener /srv/other {\n  }\n}\n").unwrap();
        assert_eq!(
            effective(&c),
            vec![
                (0o660, Some("dovecot".into())),
                (0o600, None),
                (0o660, Some("dovecot".into()))
            ]
        );
        let c = load(
            "default_internal_group = dovegrp\nservice dict {\n  unix_listener dict {\n    mode = 0\n    user = mail\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(effective(&c)[0], (0o660, Some("dovegrp".into())));
        assert_eq!(c.dict_listeners[0].user.as_deref(), Some("mail"));
        let c =
            load("service dict {\n  unix_listener dict {\n    group =\n    mode = 0600\n  }\n}\n")
                .unwrap();
        assert_eq!(effective(&c)[0], (0o600, Some(String::new())));
    }

    #[test]
    fn invalid_mode_is_an_error() {
        assert_eq!(
            load("service dict {\n  unix_listener dict {\n    mode = 0999\n  }\n}\n").unwrap_err(),
            "/etc/dovecot/dovecot.conf:3: Invalid mode: 0999 (expected an octal number like 0660)"
        );
    }

    #[test]
    fn a_2_4_file_ignores_2_3_dict_blocks() {
        let c =
            load("# 2.4\ndovecot_config_version = 2.4.0\ndict {\n  a = sqlite:/x\n}\n").unwrap();
        assert_eq!(c.config_version.as_deref(), Some("2.4.0"));
        assert!(c.dicts.is_empty());
    }

    #[test]
    fn dict_entry_uri_errors_point_at_the_line() {
        let c = load("dict {\n  a = sqlite:/x\n  b = memcached:127.0.0.1\n}\n").unwrap();
        assert!(c.dicts[0].parse_uri().is_ok());
        assert_eq!(
            c.dicts[1].parse_uri().unwrap_err().to_string(),
            "/etc/dovecot/dovecot.conf:3: dict 'b': unknown dict driver 'memcached' in \
             'memcached:127.0.0.1' (supported: sqlite, mysql, pgsql, redis, file)"
        );
    }
}
