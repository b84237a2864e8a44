//! Dovecot 2.4's dict server configuration: the
//! dicts of `dict_server { dict <name> { … } }`, read into the same [`DictEntry`]s as a 2.3
//! `dict { }` block, so the backends never know which syntax was used.
//!
//! ```text
//! dict_server {
//!   dict quota {
//!     driver = sql                  # default: the dict's name
//!     sql_driver = mysql
//!     mysql 127.0.0.1 {             # one filter per host; settings inside or outside
//!       user = dovecot
//!     }
//!     dict_map priv/quota/storage {
//!       sql_table = quota
//!       username_field = username
//!       expire_field = expires      # optional
//!       value_field bytes {
//!         type = uint
//!       }
//!     }
//!     dict_map shared/kv/$name {
//!       sql_table = kv
//!       value_field value {
//!       }
//!       key_field name {
//!         value = $name
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! As in Dovecot, a setting may be written where the dict inherits it from (top level,
//! `dict_server { }`), and inside a filter with or without the filter's prefix
//! (`sql_table` or `dict_map_sql_table`). The SQL connection settings are read into the
//! same [`SqlConnect`](crate::SqlConnect) a 2.3 map file's `connect` string gives (`sqlite_path`; `mysql <host>
//! { }` and `mysql_*`; `pgsql <host> { }` and `pgsql_parameters { }`), so one code path
//! opens both (the `sql` module).

mod sql;

use std::path::PathBuf;

use crate::dovecot::{DictEntry, DictSource, DictSpec};
use crate::error::{ConfigError, Origin};
use crate::settings::Node;
use crate::uri::{FileLock, FileParams, RedisParams};

/// The dicts of every `dict_server { }` block, in first-seen order; blocks of the same
/// dict name are merged (later settings win), as Dovecot merges them.
pub(crate) fn dicts(nodes: &[Node]) -> Result<Vec<DictEntry>, ConfigError> {
    let root = Scope::new(nodes, &[]);
    let mut server_nodes: Vec<&Node> = Vec::new();
    for node in nodes {
        if let Node::Section {
            kind,
            name: None,
            children,
            ..
        } = node
        {
            if kind == "dict_server" {
                server_nodes.extend(children);
            }
        }
    }
    let server = Scope::from_refs(server_nodes.clone(), &[]);

    // dict name -> (first origin, merged children)
    let mut blocks: Vec<(String, Origin, Vec<&Node>)> = Vec::new();
    for node in &server_nodes {
        let Node::Section {
            kind,
            name,
            children,
            origin,
        } = node
        else {
            continue;
        };
        if kind != "dict" {
            continue;
        }
        let Some(name) = name else {
            return Err(ConfigError::invalid(
                origin,
                "dict { } inside dict_server needs a name: dict <name> { … }",
            ));
        };
        match blocks.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, _, merged)) => merged.extend(children),
            None => blocks.push((name.clone(), origin.clone(), children.iter().collect())),
        }
    }

    let mut entries = Vec::new();
    for (name, origin, children) in blocks {
        let dict = Scope::from_refs(children, &["dict_"]);
        let chain = Chain {
            scopes: [&dict, &server, &root],
        };
        let spec = dict_spec(&name, &origin, &chain)?;
        entries.push(DictEntry {
            name,
            source: DictSource::Parsed(spec),
            origin,
        });
    }
    Ok(entries)
}

/// The settings and filters directly inside one block.
struct Scope<'a> {
    nodes: Vec<&'a Node>,
    /// Prefixes a setting may carry inside this block (`dict_map_` in `dict_map { }`).
    prefixes: &'static [&'static str],
}

impl<'a> Scope<'a> {
    fn new(nodes: &'a [Node], prefixes: &'static [&'static str]) -> Self {
        Scope {
            nodes: nodes.iter().collect(),
            prefixes,
        }
    }

    fn from_refs(nodes: Vec<&'a Node>, prefixes: &'static [&'static str]) -> Self {
        Scope { nodes, prefixes }
    }

    fn matches(&self, key: &str, name: &str) -> bool {
        key == name
            || self
                .prefixes
                .iter()
                .any(|p| key.strip_prefix(p) == Some(name))
    }

    /// The last `name = value` of this block (Dovecot: the last one wins).
    fn get(&self, name: &str) -> Option<(&'a str, &'a Origin)> {
        self.nodes.iter().rev().find_map(|n| match n {
            Node::Setting { key, value, origin } if self.matches(key, name) => {
                Some((value.as_str(), origin))
            }
            _ => None,
        })
    }

    /// The `kind <name> { }` filters of this block, in order.
    fn filters(&self, kind: &str) -> Vec<(&'a str, &'a [Node], &'a Origin)> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Section {
                    kind: k,
                    name: Some(name),
                    children,
                    origin,
                } if self.matches(k, kind) => Some((name.as_str(), children.as_slice(), origin)),
                _ => None,
            })
            .collect()
    }

    /// `kind { }` sections without a name (`pgsql_parameters { }`), merged.
    fn lists(&self, kind: &str) -> Vec<&'a Node> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Section {
                    kind: k,
                    name: None,
                    children,
                    ..
                } if self.matches(k, kind) => Some(children.iter()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// The blocks a dict inherits from, innermost first.
struct Chain<'s, 'a> {
    scopes: [&'s Scope<'a>; 3],
}

impl<'a> Chain<'_, 'a> {
    fn get(&self, name: &str) -> Option<(&'a str, &'a Origin)> {
        self.scopes.iter().find_map(|s| s.get(name))
    }

    /// A setting that is set to something (Dovecot treats `x =` as unset).
    fn value(&self, name: &str) -> Option<(&'a str, &'a Origin)> {
        self.get(name).filter(|(v, _)| !v.is_empty())
    }

    /// Host filters (`mysql <host> { }`): those of the innermost block that has any.
    fn filters(&self, kind: &str) -> Vec<(&'a str, &'a [Node], &'a Origin)> {
        self.scopes
            .iter()
            .map(|s| s.filters(kind))
            .find(|f| !f.is_empty())
            .unwrap_or_default()
    }
}

fn dict_spec(name: &str, origin: &Origin, chain: &Chain<'_, '_>) -> Result<DictSpec, ConfigError> {
    let fail = |at: &Origin, message: String| ConfigError::Dict {
        origin: Some(at.clone()),
        name: name.to_string(),
        message,
    };
    // Only the dict's own block can set its driver; it defaults to the dict's name.
    let (driver, driver_origin) = chain.scopes[0]
        .get("driver")
        .filter(|(v, _)| !v.is_empty())
        .unwrap_or((name, origin));
    match driver {
        "sql" => sql::sql_spec(origin, chain).map_err(|(at, m)| fail(&at, m)),
        "redis" => redis_params(chain)
            .map(DictSpec::Redis)
            .map_err(|(at, m)| fail(&at, m)),
        "file" => file_params(origin, chain)
            .map(DictSpec::File)
            .map_err(|(at, m)| fail(&at, m)),
        other => Err(fail(
            driver_origin,
            format!("driver '{other}' is not supported (supported: sql, redis, file)"),
        )),
    }
}

/// An error message and the line it is about.
type Fail = (Origin, String);

/// `driver = file`: `dict_file_path` and `dict_file_lock_method` (default dotlock).
fn file_params(origin: &Origin, chain: &Chain<'_, '_>) -> Result<FileParams, Fail> {
    let (path, _) = chain
        .value("dict_file_path")
        .ok_or_else(|| (origin.clone(), "dict_file_path is not set".to_string()))?;
    let lock = match chain.value("dict_file_lock_method") {
        None => FileLock::Dotlock,
        Some((v, at)) => FileLock::from_name(v).ok_or_else(|| {
            (
                at.clone(),
                format!("Invalid dict_file_lock_method: '{v}' (expected dotlock, fcntl or flock)"),
            )
        })?,
    };
    Ok(FileParams {
        path: PathBuf::from(path),
        lock,
    })
}

fn redis_params(chain: &Chain<'_, '_>) -> Result<RedisParams, Fail> {
    let mut p = RedisParams::default();
    let invalid = |at: &Origin, name: &str, value: &str| {
        (at.clone(), format!("Invalid {name} value: '{value}'"))
    };
    if let Some((v, _)) = chain.value("redis_socket_path") {
        p.path = Some(PathBuf::from(v));
    }
    if let Some((v, _)) = chain.value("redis_host") {
        p.host = v.to_string();
    }
    if let Some((v, at)) = chain.value("redis_port") {
        p.port = v
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(at, "redis_port", v))?;
    }
    if let Some((v, _)) = chain.get("redis_key_prefix") {
        p.prefix = v.to_string();
    }
    if let Some((v, _)) = chain.value("redis_password") {
        p.password = Some(v.to_string());
    }
    if let Some((v, at)) = chain.value("redis_db_id") {
        p.db = v.parse().map_err(|_| invalid(at, "redis_db_id", v))?;
    }
    if let Some((v, at)) = chain.value("redis_expire") {
        let secs =
            parse_interval(v, false).map_err(|e| (at.clone(), format!("redis_expire: {e}")))?;
        p.expire_secs = (secs > 0).then_some(secs);
    }
    if let Some((v, at)) = chain.value("redis_request_timeout") {
        p.timeout_msecs = parse_interval(v, true)
            .map_err(|e| (at.clone(), format!("redis_request_timeout: {e}")))?;
    }
    Ok(p)
}

/// A 2.4 time setting (`30s`, `5 mins`, `100ms`, `1 hour`): seconds, or milliseconds when
/// `msecs`. A number needs a unit unless it is 0, as in Dovecot.
pub fn parse_interval(value: &str, msecs: bool) -> Result<u32, String> {
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let num: u64 = value[..digits]
        .parse()
        .map_err(|_| format!("Invalid time interval: {value}"))?;
    let unit = value[digits..].trim_start_matches(' ').to_ascii_lowercase();
    if unit.is_empty() {
        if num == 0 {
            return Ok(0);
        }
        return Err(format!(
            "Time interval '{value}' is missing units (add e.g. 's' for seconds)"
        ));
    }
    let word = |words: &[&str]| words.iter().any(|w| w.starts_with(unit.as_str()));
    let base: u64 = if msecs { 1000 } else { 1 };
    let total = if word(&["secs", "seconds"]) {
        num * base
    } else if word(&["mins", "minutes"]) {
        num * 60 * base
    } else if word(&["msecs", "mseconds", "millisecs", "milliseconds"]) {
        if msecs {
            num
        } else if num % 1000 == 0 {
            num / 1000
        } else {
            return Err(format!(
                "Milliseconds not supported for this setting: {value}"
            ));
        }
    } else if word(&["hours"]) {
        num * 3600 * base
    } else if word(&["days"]) {
        num * 86_400 * base
    } else if word(&["weeks"]) {
        num * 604_800 * base
    } else {
        return Err(format!("Invalid time interval: {value}"));
    };
    u32::try_from(total).map_err(|_| format!("Time interval is too large: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql_map::{SqlMapFile, ValueType};
    use crate::uri::SqlDriver;
    use crate::DovecotConfig;

    const FILE: &str = "/etc/dovecot/dovecot.conf";

    fn load(text: &str) -> Result<DovecotConfig, String> {
        DovecotConfig::parse_str(text, FILE).map_err(|e| e.to_string())
    }

    fn spec(text: &str) -> DictSpec {
        let c = load(text).unwrap();
        match &c.dicts[0].source {
            DictSource::Parsed(spec) => spec.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn sql(text: &str) -> (SqlDriver, SqlMapFile) {
        match spec(text) {
            DictSpec::Sql { driver, map_file } => (driver, map_file),
            other => panic!("{other:?}"),
        }
    }

    const V: &str = "dovecot_config_version = 2.4.1\n";

    #[test]
    fn sqlite_synchronous_and_journal_mode() {
        let conf = |extra: &str| {
            format!(
                "{V}dict_server {{\n  dict q {{\n    driver = sql\n    sql_driver = sqlite\n    \
                 sqlite_path = /d.db\n{extra}  }}\n}}\n"
            )
        };
        let (_, f) = sql(&conf(
            "    sqlite_synchronous = normal\n    sqlite_journal_mode = delete\n",
        ));
        let crate::SqlConnect::Sqlite { options, .. } = f.connect else {
            panic!("{:?}", f.connect)
        };
        assert_eq!(
            options,
            crate::SqliteOptions {
                synchronous: Some(crate::SqliteSynchronous::Normal),
                journal_mode: Some(crate::SqliteJournalMode::Delete),
            }
        );
        let (_, f) = sql(&conf(""));
        assert!(matches!(
            f.connect,
            crate::SqlConnect::Sqlite { options, .. } if options == crate::SqliteOptions::default()
        ));
        let e = load(&conf("    sqlite_journal_mode = truncate\n")).unwrap_err();
        assert!(
            e.contains(":7: dict 'q': sqlite_journal_mode: invalid value 'truncate'"),
            "{e}"
        );
    }

    #[test]
    fn sqlite_dict_with_maps() {
        let (driver, f) = sql(&format!(
            "{V}dict_server {{\n  dict quota {{\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /var/lib/d.db\n\
             dict_map priv/quota/storage {{\n      sql_table = quota\n      username_field = username\n      expire_field = exp\n\
             value_field bytes {{\n        type = uint\n      }}\n    }}\n\
             dict_map \"shared/kv/$scope/${{name}}\" {{\n      dict_map_sql_table = kv\n      dict_map_value_field value {{\n      }}\n\
             value_field n {{\n        value_field_type = double\n      }}\n\
             key_field name {{\n        value = ${{name}}\n        type = uuid\n      }}\n      key_field scope {{\n        value = $scope\n      }}\n    }}\n  }}\n}}\n"
        ));
        assert_eq!(driver, SqlDriver::Sqlite);
        assert_eq!(f.connect.to_connect_string().unwrap(), "/var/lib/d.db");
        assert_eq!(f.maps.len(), 2);
        let m = &f.maps[0];
        assert_eq!(
            (
                m.table.as_str(),
                m.username_field.as_deref(),
                m.expire_field.as_deref()
            ),
            ("quota", Some("username"), Some("exp"))
        );
        assert_eq!(
            (m.value_fields.clone(), m.value_types.clone()),
            (vec!["bytes".to_string()], vec![ValueType::Uint])
        );
        assert_eq!(m.origin, Origin::new(FILE, 7));
        let m = &f.maps[1];
        assert_eq!(m.normalized_pattern, "shared/kv/$/$");
        assert_eq!(m.value_fields, vec!["value", "n"]);
        assert_eq!(m.value_types, vec![ValueType::String, ValueType::Double]);
        let fields: Vec<_> = m
            .fields
            .iter()
            .map(|f| (f.column.as_str(), f.variable.as_str(), f.value_type))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("scope", "scope", ValueType::String),
                ("name", "name", ValueType::Uuid)
            ]
        );
    }

    #[test]
    fn file_dict() {
        assert_eq!(
            spec(&format!(
                "{V}dict_server {{\n  dict f {{\n    driver = file\n    dict_file_path = /var/d.txt\n  }}\n}}\n"
            )),
            DictSpec::File(FileParams {
                path: "/var/d.txt".into(),
                lock: FileLock::Dotlock
            })
        );
        assert_eq!(
            spec(&format!(
                "{V}dict_file_lock_method = flock\ndict_server {{\n  dict file {{\n    dict_file_path = /d\n  }}\n}}\n"
            )),
            DictSpec::File(FileParams {
                path: "/d".into(),
                lock: FileLock::Flock
            })
        );
        let e = load(&format!(
            "{V}dict_server {{\n  dict f {{\n    driver = file\n    dict_file_lock_method = lockf\n    dict_file_path = /d\n  }}\n}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("Invalid dict_file_lock_method: 'lockf'"), "{e}");
        let e = load(&format!(
            "{V}dict_server {{\n  dict f {{\n    driver = file\n  }}\n}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("dict_file_path is not set"), "{e}");
    }

    #[test]
    fn inherited_settings_and_driver_default() {
        let c = load(&format!(
            "{V}sql_driver = sqlite\nsqlite_path = /top.db\ndict_server {{\n  sqlite_path = /server.db\n\
             dict a {{\n    driver = sql\n  }}\n  dict b {{\n    driver = sql\n    sqlite_path = /b.db\n  }}\n\
             dict redis {{\n    redis_expire = 1 hour\n  }}\n}}\n\
             mail_attribute {{\n  dict proxy {{\n    dict_proxy_name = a\n  }}\n}}\n"
        ))
        .unwrap();
        let names: Vec<_> = c.dicts.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "redis"]);
        let connect = |i: usize| match &c.dicts[i].source {
            DictSource::Parsed(DictSpec::Sql { map_file, .. }) => {
                map_file.connect.to_connect_string().unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (connect(0), connect(1)),
            ("/server.db".into(), "/b.db".into())
        );
        match &c.dicts[2].source {
            DictSource::Parsed(DictSpec::Redis(p)) => assert_eq!(p.expire_secs, Some(3600)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mysql_and_pgsql_connect_strings() {
        let (driver, f) = sql(&format!(
            "{V}dict_server {{\n dict q {{\n  driver = sql\n  sql_driver = mysql\n  mysql_connection_limit = 7\n\
             mysql 10.0.0.1 {{\n   user = dovecot\n   mysql_password = pw\n   dbname = mail\n   port = 3307\n  }}\n\
             mysql 10.0.0.2 {{\n   user = dovecot\n   mysql_password = pw\n   dbname = mail\n   port = 3307\n  }}\n\
             mysql_read_timeout = 1 min\n }}\n}}\n"
        ));
        assert_eq!(driver, SqlDriver::Mysql);
        assert_eq!(
            f.connect.to_connect_string().unwrap(),
            "host=10.0.0.1 host=10.0.0.2 port=3307 user=dovecot password=pw dbname=mail maxconns=7 read_timeout=60"
        );
        let (_, f) = sql(&format!(
            "{V}dict_server {{\n dict q {{\n  driver = sql\n  sql_driver = mysql\n  mysql /run/mysqld/mysqld.sock {{\n  }}\n\
             mysql_ssl = yes\n  ssl_client_ca_file = </etc/ca.pem\n  ssl_client_require_valid_cert = no\n }}\n}}\n"
        ));
        assert_eq!(
            f.connect.to_connect_string().unwrap(),
            "host=/run/mysqld/mysqld.sock ssl_ca=/etc/ca.pem ssl_verify_server_cert=no"
        );

        let (driver, f) = sql(&format!(
            "{V}dict_server {{\n dict q {{\n  driver = sql\n  sql_driver = pgsql\n  pgsql db.example {{\n   parameters {{\n\
             user = dovecot\n    dbname = my db\n    password = it's\n   }}\n  }}\n  pgsql_connection_limit = 3\n }}\n}}\n"
        ));
        assert_eq!(driver, SqlDriver::Pgsql);
        assert_eq!(
            f.connect.to_connect_string().unwrap(),
            r"host=db.example user=dovecot dbname='my db' password='it\'s' maxconns=3"
        );
        // a primary and a replica: libpq's target_session_attrs picks the writable one
        let (_, f) = sql(&format!(
            "{V}dict_server {{\n dict q {{\n  driver = sql\n  sql_driver = pgsql\n  pgsql pg1 {{\n  }}\n  pgsql pg2 {{\n  }}\n\
             pgsql_parameters {{\n   dbname = mail\n   target_session_attrs = read-write\n  }}\n }}\n}}\n"
        ));
        assert_eq!(
            f.connect.to_connect_string().unwrap(),
            "host=pg1 host=pg2 dbname=mail target_session_attrs=read-write"
        );
    }

    #[test]
    fn redis_settings() {
        let p = match spec(&format!(
            "{V}dict_server {{\n dict r {{\n  driver = redis\n  redis_socket_path = /run/redis.sock\n  redis_key_prefix = pfx/\n\
             redis_db_id = 2\n  redis_password = pw\n  redis_request_timeout = 500ms\n  redis_port = 6380\n }}\n}}\n"
        )) {
            DictSpec::Redis(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(p.path, Some(PathBuf::from("/run/redis.sock")));
        assert_eq!(
            (p.prefix.as_str(), p.db, p.port, p.timeout_msecs),
            ("pfx/", 2, 6380, 500)
        );
        assert_eq!((p.password.as_deref(), p.expire_secs), (Some("pw"), None));
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0", false), Ok(0));
        assert_eq!(parse_interval("30s", false), Ok(30));
        assert_eq!(parse_interval("5 mins", false), Ok(300));
        assert_eq!(parse_interval("2000ms", false), Ok(2));
        assert_eq!(parse_interval("1 hour", true), Ok(3_600_000));
        assert_eq!(parse_interval("250 msecs", true), Ok(250));
        assert!(parse_interval("10", false)
            .unwrap_err()
            .contains("missing units"));
        assert!(parse_interval("10 parsecs", false).is_err());
        assert!(parse_interval("1500ms", false).is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = |body: &str| {
            load(&format!(
                "{V}dict_server {{\n  dict q {{\n{body}\n  }}\n}}\n"
            ))
            .unwrap_err()
        };
        assert_eq!(
            e("driver = ldap"),
            "/etc/dovecot/dovecot.conf:4: dict 'q': driver 'ldap' is not supported (supported: sql, redis, file)"
        );
        assert_eq!(
            e("driver = sql"),
            "/etc/dovecot/dovecot.conf:3: dict 'q': sql_driver is not set"
        );
        assert_eq!(
            e("driver = sql\nsql_driver = cassandra"),
            "/etc/dovecot/dovecot.conf:5: dict 'q': sql_driver 'cassandra' is not supported (supported: sqlite, mysql, pgsql)"
        );
        let map = |m: &str| {
            e(&format!(
                "driver = sql\nsql_driver = sqlite\nsqlite_path = /x\ndict_map {m}"
            ))
        };
        assert_eq!(
            map("shared/a {\nsql_table = t\n}"),
            "/etc/dovecot/dovecot.conf:7: dict 'q': dict_map_value_field { .. } named list filter is missing"
        );
        assert_eq!(
            map("shared/a {\nsql_table = t\ntable = t\n}"),
            "/etc/dovecot/dovecot.conf:9: dict 'q': Unknown setting in dict_map: table"
        );
        assert_eq!(
            map("shared/$a {\nsql_table = t\nvalue_field v {\n}\n}"),
            "/etc/dovecot/dovecot.conf:7: dict 'q': Missing fields for pattern variables"
        );
        assert_eq!(
            map("shared/$a {\nsql_table = t\nvalue_field v {\ntype = float\n}\nkey_field a {\nvalue = $a\n}\n}"),
            "/etc/dovecot/dovecot.conf:10: dict 'q': Invalid type: float (expected string, int, uint, double, hexblob or uuid)"
        );
        assert_eq!(
            map("shared/$a {\nsql_table = t\nvalue_field v {\n}\nkey_field a {\nvalue = a\n}\n}"),
            "/etc/dovecot/dovecot.conf:12: dict 'q': key_field a: value must be a pattern variable ($name): a"
        );
        assert_eq!(
            e("driver = sql\nsql_driver = pgsql"),
            "/etc/dovecot/dovecot.conf:3: dict 'q': pgsql { .. } named list filter is missing (pgsql <host> { … })"
        );
    }
}
