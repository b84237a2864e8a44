//! The parts of a Dovecot 2.3 `dovecot.conf` that the dict server needs (dict-protocol.md
//! §1.3, §7.1): the `dict { }` name → URI table, `base_dir`, and the listeners of
//! `service dict` / `service dict-async`. Everything else in the file is parsed and ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::settings::{self, Node};
use crate::uri::DictUri;

/// Debian's compiled-in `base_dir`, used when dovecot.conf doesn't set one.
pub const DEFAULT_BASE_DIR: &str = "/run/dovecot";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DovecotConfig {
    /// Every entry of every top-level `dict { }` block, in first-seen order; a name given
    /// twice keeps its first position and its last URI, as Dovecot's merging does.
    pub dicts: Vec<DictEntry>,
    /// `None` when not set: see [`DovecotConfig::base_dir_or_default`].
    pub base_dir: Option<PathBuf>,
    /// Listeners of `service dict`. Dovecot's built-in `dict` listener is always there,
    /// even when the file doesn't mention it, because Dovecot would create it too.
    pub dict_listeners: Vec<UnixListenerConf>,
    /// Listeners of `service dict-async`, built-in `dict-async` included.
    pub dict_async_listeners: Vec<UnixListenerConf>,
}

/// One `name = uri` line of a `dict { }` block. The URI is kept as text so that a dict
/// with a driver we don't serve (`file:`, `proxy:`) doesn't stop the others from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictEntry {
    pub name: String,
    pub uri: String,
    pub origin: Origin,
}

impl DictEntry {
    /// [`DictUri::parse`], with errors pointing at this entry's line.
    pub fn parse_uri(&self) -> Result<DictUri, ConfigError> {
        DictUri::parse(&self.name, &self.uri).map_err(|e| e.at(&self.origin))
    }
}

/// A `unix_listener` of a dict service. Unset fields mean Dovecot's defaults: mode
/// 0660, owner root, group `dovecot` (§1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListenerConf {
    /// Absolute: a relative listener name is resolved against `base_dir`.
    pub path: PathBuf,
    pub mode: Option<u32>,
    /// `Some("")` means "explicitly no owner change", which differs from unset.
    /// `$default_internal_user` and similar references are already resolved.
    pub user: Option<String>,
    pub group: Option<String>,
    /// The `unix_listener` block that last changed it; `None` for an untouched built-in.
    pub origin: Option<Origin>,
}

/// Values of Dovecot's own settings that listener `user`/`group` commonly refer to.
const BUILTIN_REFS: &[(&str, &str)] = &[
    ("default_internal_user", "dovecot"),
    ("default_internal_group", "dovecot"),
    ("default_login_user", "dovenull"),
];

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

        for node in nodes {
            match node {
                Node::Setting { key, origin, .. } if key == "dovecot_config_version" => {
                    return Err(ConfigError::invalid(
                        origin,
                        "Dovecot 2.4 configuration is not supported yet \
                         (dovecot_config_version is set)",
                    ));
                }
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
                } if kind == "dict" => {
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

        let base_dir = config.base_dir_or_default().to_path_buf();
        config.dict_listeners = sync.resolve(&base_dir, &top);
        config.dict_async_listeners = async_.resolve(&base_dir, &top);
        Ok(config)
    }

    fn add_dicts(&mut self, children: &[Node]) {
        for child in children {
            let Node::Setting { key, value, origin } = child else {
                tracing::warn!("{}: ignoring section inside dict {{ }}", child.origin());
                continue;
            };
            let entry = DictEntry {
                name: key.clone(),
                uri: value.clone(),
                origin: origin.clone(),
            };
            match self.dicts.iter_mut().find(|d| d.name == *key) {
                Some(old) => {
                    tracing::info!(
                        "{origin}: dict '{key}' overrides the one set at {}",
                        old.origin
                    );
                    *old = entry;
                }
                None => self.dicts.push(entry),
            }
        }
    }
}

/// Listeners of one service, keyed by the name as written so that later blocks modify
/// earlier ones (and the built-in).
struct Listeners(Vec<(String, RawListener)>);

#[derive(Default)]
struct RawListener {
    mode: Option<u32>,
    user: Option<String>,
    group: Option<String>,
    origin: Option<Origin>,
}

impl Listeners {
    fn with_builtin(name: &str) -> Self {
        Listeners(vec![(name.to_string(), RawListener::default())])
    }

    fn merge(&mut self, service_children: &[Node]) -> Result<(), ConfigError> {
        for node in service_children {
            let Node::Section {
                kind,
                name,
                children,
                origin,
            } = node
            else {
                continue;
            };
            if kind != "unix_listener" {
                continue;
            }
            let Some(name) = name else {
                return Err(ConfigError::invalid(origin, "unix_listener without a path"));
            };
            let idx = match self.0.iter().position(|(n, _)| n == name) {
                Some(idx) => idx,
                None => {
                    self.0.push((name.clone(), RawListener::default()));
                    self.0.len() - 1
                }
            };
            let listener = &mut self.0[idx].1;
            listener.origin = Some(origin.clone());
            for child in children {
                let Node::Setting { key, value, origin } = child else {
                    continue;
                };
                match key.as_str() {
                    "mode" if value.is_empty() => listener.mode = None,
                    "mode" => {
                        let mode = parse_mode(value).ok_or_else(|| {
                            ConfigError::invalid(
                                origin,
                                format!(
                                    "Invalid mode: {value} (expected an octal number like 0660)"
                                ),
                            )
                        })?;
                        listener.mode = Some(mode);
                    }
                    "user" => listener.user = Some(value.clone()),
                    "group" => listener.group = Some(value.clone()),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn resolve(self, base_dir: &Path, top: &HashMap<&str, &str>) -> Vec<UnixListenerConf> {
        let expand = |v: Option<String>| v.map(|v| expand_ref(&v, top));
        self.0
            .into_iter()
            .map(|(name, raw)| UnixListenerConf {
                path: base_dir.join(name),
                mode: raw.mode,
                user: expand(raw.user),
                group: expand(raw.group),
                origin: raw.origin,
            })
            .collect()
    }
}

/// Resolves a whole-value `$setting` reference; anything else is returned unchanged.
fn expand_ref(value: &str, top: &HashMap<&str, &str>) -> String {
    let Some(name) = value.strip_prefix('$') else {
        return value.to_string();
    };
    top.get(name)
        .copied()
        .or_else(|| {
            BUILTIN_REFS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
        })
        .unwrap_or(value)
        .to_string()
}

/// A permission mode written in octal (`0660`, `600`), at most `07777`.
pub(crate) fn parse_mode(value: &str) -> Option<u32> {
    u32::from_str_radix(value, 8).ok().filter(|m| *m <= 0o7777)
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
            .map(|d| (d.name.as_str(), d.uri.as_str()))
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

    #[test]
    fn invalid_mode_and_2_4_config_are_errors() {
        assert_eq!(
            load("service dict {\n  unix_listener dict {\n    mode = 0999\n  }\n}\n").unwrap_err(),
            "/etc/dovecot/dovecot.conf:3: Invalid mode: 0999 (expected an octal number like 0660)"
        );
        assert_eq!(
            load("# 2.4\ndovecot_config_version = 2.4.0\n").unwrap_err(),
            "/etc/dovecot/dovecot.conf:2: Dovecot 2.4 configuration is not supported yet \
             (dovecot_config_version is set)"
        );
    }

    #[test]
    fn dict_entry_uri_errors_point_at_the_line() {
        let c = load("dict {\n  a = sqlite:/x\n  b = memcached:127.0.0.1\n}\n").unwrap();
        assert!(c.dicts[0].parse_uri().is_ok());
        assert_eq!(
            c.dicts[1].parse_uri().unwrap_err().to_string(),
            "/etc/dovecot/dovecot.conf:3: dict 'b': unknown dict driver 'memcached' in \
             'memcached:127.0.0.1' (supported: sqlite, mysql, pgsql, redis)"
        );
    }
}
