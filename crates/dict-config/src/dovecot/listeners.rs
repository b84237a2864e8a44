//! The `unix_listener`s of `service dict` and `service dict-async` (both versions write
//! them the same way): Dovecot's built-in listener, later blocks merging into earlier
//! ones, `$setting` references resolved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::settings::Node;

/// A `unix_listener` of a dict service. `mode`, `user` and `group` are what the file says;
/// unset ones take Dovecot's defaults ([`UnixListenerConf::effective_mode`],
/// [`UnixListenerConf::effective_group`]).
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
    /// Dovecot's default mode: 0660 for the built-in `dict`/`dict-async` listener, 0600 for
    /// any other (as `doveconf -a` shows them).
    pub default_mode: u32,
    /// Dovecot's default group: `$default_internal_group` (resolved, `dovecot` unless the
    /// file sets it) for the built-in listener, none for any other.
    pub default_group: Option<String>,
}

impl UnixListenerConf {
    /// The socket's mode. `mode = 0` is how Dovecot's own dict service is told not to
    /// listen there (so that we can): it says nothing about our socket's mode.
    pub fn effective_mode(&self) -> u32 {
        self.mode.filter(|&m| m != 0).unwrap_or(self.default_mode)
    }

    /// The socket's group; `None` or `""` leaves it to whoever runs the server.
    pub fn effective_group(&self) -> Option<&str> {
        self.group.as_deref().or(self.default_group.as_deref())
    }
}

/// Modes Dovecot 2.3 gives a dict service's listeners that don't set one.
const BUILTIN_LISTENER_MODE: u32 = 0o660;
const OTHER_LISTENER_MODE: u32 = 0o600;

/// Values of Dovecot's own settings that listener `user`/`group` commonly refer to.
const BUILTIN_REFS: &[(&str, &str)] = &[
    ("default_internal_user", "dovecot"),
    ("default_internal_group", "dovecot"),
    ("default_login_user", "dovenull"),
];

/// Listeners of one service, keyed by the name as written so that later blocks modify
/// earlier ones (and the built-in).
pub(super) struct Listeners(Vec<(String, RawListener)>);

#[derive(Default)]
struct RawListener {
    mode: Option<u32>,
    user: Option<String>,
    group: Option<String>,
    origin: Option<Origin>,
}

impl Listeners {
    pub(super) fn with_builtin(name: &str) -> Self {
        Listeners(vec![(name.to_string(), RawListener::default())])
    }

    pub(super) fn merge(&mut self, service_children: &[Node]) -> Result<(), ConfigError> {
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

    /// The first listener is the service's built-in one ([`Listeners::with_builtin`]).
    pub(super) fn resolve(
        self,
        base_dir: &Path,
        top: &HashMap<&str, &str>,
    ) -> Vec<UnixListenerConf> {
        let expand = |v: Option<String>| v.map(|v| expand_ref(&v, top));
        self.0
            .into_iter()
            .enumerate()
            .map(|(i, (name, raw))| {
                let builtin = i == 0;
                UnixListenerConf {
                    path: base_dir.join(name),
                    mode: raw.mode,
                    user: expand(raw.user),
                    group: expand(raw.group),
                    origin: raw.origin,
                    default_mode: match builtin {
                        true => BUILTIN_LISTENER_MODE,
                        false => OTHER_LISTENER_MODE,
                    },
                    default_group: builtin
                        .then(|| expand_ref("$default_internal_group", top))
                        .filter(|g| !g.starts_with('$')),
                }
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
