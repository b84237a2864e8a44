//! The 2.3 <-> 2.4 converter behind `dict-server convert`: the dict server part of a
//! Dovecot configuration, printed for the other major version from the same typed values
//! the parsers read ([`DictSpec`], [`SqlConnect`](crate::SqlConnect)), so that an admin
//! migrates with one command.
//!
//! * 2.3 → 2.4 ([`to_v24`]): `dict { name = <uri> }`, each dict-sql map file and `service
//!   dict` / `service dict-async` listeners become one 2.4 text (`dovecot_config_version`,
//!   `dict_server { dict <name> { driver = sql; sql_driver; …; dict_map … } }`).
//! * 2.4 → 2.3 ([`to_v23`]): the `dict { }` block with URIs, plus one map file per SQL dict
//!   (`dovecot-dict-sql-<name>.conf.ext`).
//!
//! Only what the dict server reads is converted; the rest of dovecot.conf changed in
//! other ways between the versions. The output parses back to the same dicts (tests
//! below), and what one version can't express (2.4's `expire_field`, `double`, `uuid`,
//! `sqlite_synchronous`, `sqlite_journal_mode`; our Redis `user=`/`tls=` extensions) is an
//! error naming the line, never silently dropped.

mod to_v23;
mod to_v24;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

pub use self::to_v23::to_v23;
pub use self::to_v24::to_v24;
use crate::dovecot::{DictEntry, DictSpec, DovecotConfig, UnixListenerConf};
use crate::error::Origin;

/// A Dovecot major version a configuration is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DovecotVersion {
    V23,
    V24,
}

impl DovecotVersion {
    /// The version `config` was written for.
    pub fn of(config: &DovecotConfig) -> DovecotVersion {
        match config.config_version {
            Some(_) => DovecotVersion::V24,
            None => DovecotVersion::V23,
        }
    }

    pub fn other(self) -> DovecotVersion {
        match self {
            DovecotVersion::V23 => DovecotVersion::V24,
            DovecotVersion::V24 => DovecotVersion::V23,
        }
    }
}

impl fmt::Display for DovecotVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DovecotVersion::V23 => "2.3",
            DovecotVersion::V24 => "2.4",
        })
    }
}

impl std::str::FromStr for DovecotVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2.3" => Ok(DovecotVersion::V23),
            "2.4" => Ok(DovecotVersion::V24),
            _ => Err(format!("unknown version '{s}' (expected 2.3 or 2.4)")),
        }
    }
}

/// The `dovecot_config_version` written into 2.4 output.
pub const CONFIG_VERSION: &str = "2.4.0";

/// A converted configuration: the dovecot.conf part and, for 2.3, the map files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub conf: String,
    /// (path, contents); the paths are the ones `conf` names.
    pub map_files: Vec<(PathBuf, String)>,
}

/// Something the other version can't express, or a dict that can't be read; the message
/// names the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(String);

impl ConvertError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConvertError(message.into())
    }

    pub(crate) fn context(context: impl fmt::Display, cause: impl fmt::Display) -> Self {
        ConvertError(format!("{context}: {cause}"))
    }
}

type Result<T, E = ConvertError> = std::result::Result<T, E>;

macro_rules! convert_error {
    ($($arg:tt)*) => { $crate::convert::ConvertError::new(format!($($arg)*)) };
}
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::convert::ConvertError::new(format!($($arg)*))) };
}
pub(crate) use {bail, convert_error};

pub(crate) fn at(entry: &DictEntry) -> String {
    format!("{}: dict '{}'", entry.origin, entry.name)
}

/// `base_dir` and the listeners the file configured (untouched built-ins are left out).
pub(crate) fn write_common(s: &mut String, config: &DovecotConfig) {
    if let Some(dir) = &config.base_dir {
        let _ = writeln!(s, "base_dir = {}", quote24(&dir.display().to_string()));
    }
    let base = config.base_dir_or_default();
    for (service, listeners) in [
        ("dict", &config.dict_listeners),
        ("dict-async", &config.dict_async_listeners),
    ] {
        let set: Vec<&UnixListenerConf> = listeners.iter().filter(|l| l.origin.is_some()).collect();
        if set.is_empty() {
            continue;
        }
        let _ = writeln!(s, "service {service} {{");
        for l in set {
            let name = l.path.strip_prefix(base).unwrap_or(&l.path);
            let _ = writeln!(
                s,
                "  unix_listener {} {{",
                quote24(&name.display().to_string())
            );
            if let Some(mode) = l.mode {
                let _ = writeln!(s, "    mode = {mode:04o}");
            }
            if let Some(user) = &l.user {
                let _ = writeln!(s, "    user = {}", quote24(user));
            }
            if let Some(group) = &l.group {
                let _ = writeln!(s, "    group = {}", quote24(group));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
    }
}

/// A value as 2.4 (and 2.3) settings read it back: quoted when it has anything the parser
/// would treat specially. A `<file` value stays as it is.
pub(crate) fn quote24(value: &str) -> String {
    let plain = !value.is_empty()
        && !value.starts_with(['"', '\''])
        && !value
            .chars()
            .any(|c| matches!(c, ' ' | '\t' | '#' | '{' | '}' | '$' | '\\' | '"' | '\n'));
    if plain {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

// ----------------------------------------------------------- comparing ---

/// A spec with everything that only says where it was written (files, lines) cleared:
/// two configurations that mean the same give equal values.
pub fn comparable(spec: &DictSpec) -> DictSpec {
    match spec {
        DictSpec::Redis(p) => DictSpec::Redis(p.clone()),
        DictSpec::File(p) => DictSpec::File(p.clone()),
        DictSpec::Sql { driver, map_file } => {
            let nowhere = Origin::new("", 0);
            let mut file = map_file.clone();
            file.path = PathBuf::new();
            file.connect_origin = nowhere.clone();
            for m in &mut file.maps {
                m.origin = nowhere.clone();
            }
            DictSpec::Sql {
                driver: *driver,
                map_file: file,
            }
        }
    }
}

/// The first Sentinel/Cluster/WAIT parameter of a redis URI, which no Dovecot version has.
fn ha_extension(p: &crate::uri::RedisParams) -> Option<&'static str> {
    if !p.sentinels.is_empty() {
        Some("sentinels=")
    } else if !p.cluster.is_empty() {
        Some("cluster=")
    } else if p.user_hash_tag {
        Some("user_hash_tag=")
    } else if p.wait_replicas != 0 {
        Some("wait_replicas=")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn specs(c: &DovecotConfig) -> Vec<(String, DictSpec)> {
        c.dicts
            .iter()
            .map(|d| (d.name.clone(), comparable(&d.spec().unwrap())))
            .collect()
    }

    /// Path, mode, user and group of every listener.
    fn listeners(c: &DovecotConfig) -> Vec<String> {
        c.dict_listeners
            .iter()
            .chain(&c.dict_async_listeners)
            .map(|l| format!("{:?} {:?} {:?} {:?}", l.path, l.mode, l.user, l.group))
            .collect()
    }

    const MAPS23: &str = r#"
map {
  pattern = priv/quota/storage
  table = quota
  username_field = username
  value_field = bytes
  value_type = uint
}
map {
  pattern = priv/quota/messages
  table = quota
  username_field = username
  value_field = messages
  value_type = uint
}
map {
  pattern = shared/kv/$scope/${name}
  table = kv
  value_field = value,n
  value_type = string,int
  fields {
    scope = $scope
    name = ${hexblob:name}
  }
}
map {
  pattern = priv/blob/$id
  table = blob
  username_field = user
  value_field = data
  value_type = hexblob
  fields {
    id = ${uint:id}
  }
}
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_2_3_config_round_trips_through_2_4_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "sqlite.conf.ext",
            &format!("connect = {}/q.db\n{MAPS23}", d.display()),
        );
        write(
            d,
            "mysql.conf.ext",
            &format!("connect = host=/run/mysqld.sock host=db2 port=3307 dbname=mail user=dovecot password=s3cr#t maxconns=9 read_timeout=20 ssl_ca=/etc/ca.pem ssl_verify_server_cert=no\n{MAPS23}"),
        );
        write(
            d,
            "pgsql.conf.ext",
            &format!("connect = \"host=pg1 host=pg2 dbname='my db' user=dovecot password='it\\\\'s' maxconns=3\"\n{MAPS23}"),
        );
        let conf = write(
            d,
            "dovecot.conf",
            &format!(
                "base_dir = {d}/run\nservice dict {{\n  unix_listener dict {{\n    mode = 0600\n    user = vmail\n  }}\n  unix_listener /var/spool/postfix/dict {{\n    group = postfix\n  }}\n}}\n\
                 dict {{\n  lite = sqlite:{d}/sqlite.conf.ext\n  my = mysql:{d}/mysql.conf.ext\n  pg = pgsql:{d}/pgsql.conf.ext\n\
                 rd = redis:host=10.1.2.3:port=6380:prefix=p/:db=2:expire_secs=3600:timeout_msecs=1500:password=pw\n  rd2 = redis:path=/run/redis.sock\n}}\n",
                d = d.display()
            ),
        );
        let c23 = DovecotConfig::load(&conf).unwrap();
        let text24 = to_v24(&c23, &conf).unwrap();
        let conf24 = write(d, "dovecot24.conf", &text24);
        let c24 = DovecotConfig::load(&conf24).unwrap_or_else(|e| panic!("{e}\n{text24}"));
        assert_eq!(c24.config_version.as_deref(), Some(CONFIG_VERSION));
        assert_eq!(specs(&c24), specs(&c23), "{text24}");
        assert_eq!(listeners(&c24), listeners(&c23), "{text24}");
        assert_eq!(c24.base_dir, c23.base_dir);

        // and back to 2.3, through files
        let out = d.join("back");
        std::fs::create_dir(&out).unwrap();
        let back = to_v23(&c24, &conf24, &out).unwrap();
        for (path, text) in &back.map_files {
            std::fs::write(path, text).unwrap();
        }
        let conf23 = write(&out, "dovecot.conf", &back.conf);
        let again = DovecotConfig::load(&conf23).unwrap_or_else(|e| panic!("{e}\n{}", back.conf));
        assert_eq!(specs(&again), specs(&c23), "{}", back.conf);
        assert_eq!(listeners(&again), listeners(&c23));
        assert_eq!(back.map_files.len(), 3);
        assert!(
            back.conf.contains("  rd2 = redis:path=/run/redis.sock\n"),
            "{}",
            back.conf
        );
    }

    #[test]
    fn a_2_4_config_round_trips_through_2_3_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = write(
            d,
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\nsql_driver = pgsql\ndict_server {\n  dict q {\n    driver = sql\n\
             pgsql db.example {\n      parameters {\n        dbname = mail\n        port = 5433\n      }\n    }\n\
             dict_map \"shared/kv/$a/$b\" {\n      sql_table = kv\n      value_field v {\n      }\n\
             key_field a {\n        value = $a\n        type = int\n      }\n      key_field b {\n        value = $b\n      }\n    }\n  }\n\
             dict r {\n    driver = redis\n    redis_expire = 1h\n    redis_request_timeout = 2s\n  }\n}\n",
        );
        let c24 = DovecotConfig::load(&conf).unwrap();
        let back = to_v23(&c24, &conf, d).unwrap();
        for (path, text) in &back.map_files {
            std::fs::write(path, text).unwrap();
        }
        let conf23 = write(d, "dovecot23.conf", &back.conf);
        let c23 = DovecotConfig::load(&conf23).unwrap_or_else(|e| panic!("{e}\n{}", back.conf));
        assert_eq!(specs(&c23), specs(&c24));
        let text24 = to_v24(&c23, &conf23).unwrap();
        let c24b = DovecotConfig::parse_str(&text24, d.join("x.conf")).unwrap();
        assert_eq!(specs(&c24b), specs(&c24), "{text24}");
    }

    #[test]
    fn what_2_3_cannot_express_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(
            dir.path(),
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /x.db\n\
             dict_map shared/x {\n      sql_table = t\n      expire_field = e\n      value_field v {\n      }\n    }\n  }\n}\n",
        );
        let c = DovecotConfig::load(&conf).unwrap();
        let e = format!("{:#}", to_v23(&c, &conf, dir.path()).unwrap_err());
        assert!(
            e.contains("dovecot.conf:7: expire_field can't be expressed in a Dovecot 2.3 map file"),
            "{e}"
        );
    }

    #[test]
    fn redis_sentinel_cluster_and_wait_have_no_2_4_setting() {
        let dir = tempfile::tempdir().unwrap();
        for (uri, what) in [
            ("redis:sentinels=s1,s2:master_name=m", "sentinels="),
            ("redis:cluster=n1/7000:user_hash_tag=yes", "cluster="),
            ("redis:user_hash_tag=yes", "user_hash_tag="),
            ("redis:wait_replicas=1", "wait_replicas="),
        ] {
            let conf = write(
                dir.path(),
                "dovecot.conf",
                &format!(
                    "dict {{
  rd = {uri}
}}
"
                ),
            );
            let c = DovecotConfig::load(&conf).unwrap();
            let e = format!("{:#}", to_v24(&c, &conf).unwrap_err());
            assert!(
                e.contains(&format!(
                    "the redis URI's {what} (our extension) has no Dovecot 2.4 setting"
                )),
                "{uri}: {e}"
            );
        }
    }

    /// The connection of the one SQL dict of a 2.4 text.
    fn connect24(text: &str) -> crate::SqlConnect {
        let c = DovecotConfig::parse_str(text, "/etc/dovecot/dovecot.conf")
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        match c.dicts[0].spec().unwrap() {
            DictSpec::Sql { map_file, .. } => map_file.connect,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sql_connections_round_trip_through_2_4_blocks() {
        use crate::{SqlConnect, SqlDriver};
        for (driver, connect) in [
            (SqlDriver::Sqlite, "/var/lib/dovecot/dict.sqlite"),
            (SqlDriver::Mysql, "host=db1 host=db2 host=/run/mysqld/mysqld.sock port=3307 user=u password=s3cr#t dbname=mail maxconns=9 connect_timeout=5 read_timeout=20 write_timeout=30"),
            (SqlDriver::Mysql, "host=db ssl_ca=/etc/ca.pem ssl_cert=/etc/c.pem ssl_key=/etc/k.pem ssl_verify_server_cert=no"),
            (SqlDriver::Mysql, "host=db ssl_cipher=HIGH"),
            (SqlDriver::Mysql, "host=db ssl_cipher=ECDHE-RSA-AES256-GCM-SHA384 option_file=/etc/my.cnf option_group=dict client_flags=2"),
            (SqlDriver::Pgsql, "host=pg1 host=pg2 port=5433 dbname='my db' user=dovecot password='it\\'s' maxconns=3 connect_timeout=4"),
            (SqlDriver::Pgsql, "host=db sslmode=verify-full sslrootcert=/etc/ca.pem sslcert=/etc/c.pem sslkey=/etc/k.pem application_name=dict"),
            (SqlDriver::Pgsql, "postgresql://u:p@h1:5440,h2:5441/mail?maxconns=2&keepalives=1"),
        ] {
            let typed = SqlConnect::parse(driver, connect).unwrap();
            let mut settings = String::new();
            to_v24::write_connect24(&mut settings, &typed).unwrap();
            let text = format!(
                "dovecot_config_version = 2.4.1\ndict_server {{\n  dict q {{\n    driver = sql\n    sql_driver = {driver}\n{settings}  }}\n}}\n"
            );
            // 2.3 string -> typed -> 2.4 blocks -> typed
            let from24 = connect24(&text);
            assert_eq!(from24, typed, "{connect}\n{text}");
            // -> 2.3 string -> typed
            let printed = from24.to_connect_string().unwrap();
            assert_eq!(SqlConnect::parse(driver, &printed).unwrap(), typed, "{printed}");
            // -> 2.4 blocks again: the same text
            let mut again = String::new();
            to_v24::write_connect24(&mut again, &from24).unwrap();
            assert_eq!(again, settings);
        }
    }

    #[test]
    fn sqlite_settings_round_trip_through_2_4_blocks() {
        let text = "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /x.db\n    sqlite_synchronous = off\n    sqlite_journal_mode = delete\n  }\n}\n";
        let typed = connect24(text);
        let mut settings = String::new();
        to_v24::write_connect24(&mut settings, &typed).unwrap();
        assert_eq!(
            settings,
            "    sqlite_path = /x.db\n    sqlite_synchronous = off\n    sqlite_journal_mode = delete\n"
        );
    }

    #[test]
    fn sql_connections_2_4_cannot_express_are_errors() {
        use crate::{SqlConnect, SqlDriver};
        let typed = SqlConnect::parse(SqlDriver::Mysql, "host=db ssl_ca_path=/etc/ssl").unwrap();
        let e = to_v24::write_connect24(&mut String::new(), &typed).unwrap_err();
        assert!(e.contains("ssl_ca_path has no Dovecot 2.4 setting"), "{e}");
        // a 2.4 value a 2.3 MySQL connect string can't carry
        let c = connect24(
            "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = mysql\n    mysql db {\n      password = \"a b\"\n    }\n  }\n}\n",
        );
        assert!(c.to_connect_string().unwrap_err().contains("whitespace"));
        // 2.4's SQLite settings: a 2.3 connect string is only the path
        let dir = tempfile::tempdir().unwrap();
        let conf = write(
            dir.path(),
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /x.db\n    sqlite_synchronous = normal\n  }\n}\n",
        );
        let c = DovecotConfig::load(&conf).unwrap();
        let e = format!("{:#}", to_v23(&c, &conf, dir.path()).unwrap_err());
        assert!(
            e.contains("sqlite_synchronous and sqlite_journal_mode can't be expressed"),
            "{e}"
        );
    }
}
