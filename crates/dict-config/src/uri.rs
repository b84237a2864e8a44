//! Dovecot 2.3 dict URIs (`dict { name = <uri> }`) for the drivers we serve.

use std::fmt;
use std::path::PathBuf;

use crate::error::ConfigError;

/// A dict URI split into its driver and that driver's arguments.
// Parsed once per dict at startup: the size of the Redis variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DictUri {
    /// `sqlite:`, `mysql:` or `pgsql:` followed by the path of a map file
    /// (see [`SqlMapFile`](crate::SqlMapFile)). Dovecot 2.3 has no `sql:` scheme.
    Sql {
        driver: SqlDriver,
        map_path: PathBuf,
    },
    /// `redis:` followed by `:`-separated `key=value` parameters.
    Redis(RedisParams),
    /// `file:<path>` or `file:<path>:lock=fcntl|flock`: Dovecot's flat-file dict.
    File(FileParams),
}

/// A `file:` dict: one file of key and value lines, rewritten whole on every commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileParams {
    pub path: PathBuf,
    pub lock: FileLock,
}

/// How writers of a `file:` dict exclude each other, as Dovecot's `lock_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileLock {
    /// `<path>.lock` created exclusively, written, then renamed over the file (default).
    #[default]
    Dotlock,
    /// A POSIX record lock on the file itself; the new contents go through `<path>.tmp`.
    Fcntl,
    /// `flock(2)` on the file itself; the new contents go through `<path>.tmp`.
    Flock,
}

impl FileLock {
    /// The name in URIs (`lock=fcntl`) and in 2.4's `dict_file_lock_method`.
    pub fn name(self) -> &'static str {
        match self {
            FileLock::Dotlock => "dotlock",
            FileLock::Fcntl => "fcntl",
            FileLock::Flock => "flock",
        }
    }

    /// Parses a 2.4 `dict_file_lock_method` value.
    pub fn from_name(name: &str) -> Option<FileLock> {
        [FileLock::Dotlock, FileLock::Fcntl, FileLock::Flock]
            .into_iter()
            .find(|l| l.name() == name)
    }
}

impl FileParams {
    /// The part after `file:`: a path, optionally followed by `:lock=fcntl` or
    /// `:lock=flock` (the only parameter Dovecot 2.3 knows, given at most once).
    fn parse(args: &str) -> Result<FileParams, String> {
        let (path, lock) = match args.split_once(':') {
            None => (args, FileLock::Dotlock),
            Some((path, "lock=fcntl")) => (path, FileLock::Fcntl),
            Some((path, "lock=flock")) => (path, FileLock::Flock),
            Some((_, other)) => {
                return Err(format!(
                    "Invalid parameter: {other} (expected lock=fcntl or lock=flock)"
                ))
            }
        };
        if path.is_empty() {
            return Err(format!("missing file path in 'file:{args}'"));
        }
        Ok(FileParams {
            path: PathBuf::from(path),
            lock,
        })
    }

    /// The URI Dovecot 2.3 reads back.
    pub fn uri(&self) -> String {
        match self.lock {
            FileLock::Dotlock => format!("file:{}", self.path.display()),
            lock => format!("file:{}:lock={}", self.path.display(), lock.name()),
        }
    }
}

/// The SQL driver named by the URI scheme; it decides how the map file's `connect`
/// string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDriver {
    Sqlite,
    Mysql,
    Pgsql,
}

impl SqlDriver {
    /// The URI scheme, as Dovecot spells it.
    pub fn name(self) -> &'static str {
        match self {
            SqlDriver::Sqlite => "sqlite",
            SqlDriver::Mysql => "mysql",
            SqlDriver::Pgsql => "pgsql",
        }
    }
}

impl fmt::Display for SqlDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parameters of a `redis:` URI, with Dovecot's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisParams {
    /// Dovecot 2.3 accepts only IP literals here; we also accept host names.
    pub host: String,
    pub port: u16,
    /// UNIX socket; when set, `host` and `port` are not used.
    pub path: Option<PathBuf>,
    /// Put in front of every Redis key.
    pub prefix: String,
    /// Selected after each connect when non-zero.
    pub db: u32,
    /// `EXPIRE` sent after every SET and INCRBY; never 0.
    pub expire_secs: Option<u32>,
    /// Lookup and commit timeout.
    pub timeout_msecs: u32,
    pub password: Option<String>,
    /// Our extension: the Redis 6 ACL user for `AUTH <user> <password>`.
    pub user: Option<String>,
    /// Our extension: `tls=yes` connects with TLS.
    pub tls: bool,
    /// Our extension: `sentinels=<host>[/<port>],…` asks these Redis Sentinels (port
    /// 26379 by default) for the master called `master_name`, instead of using host/port.
    pub sentinels: Vec<(String, u16)>,
    /// Our extension: `master_name=` of the Sentinel-monitored master.
    pub master_name: Option<String>,
    /// Our extension: `sentinel_user=`/`sentinel_password=` for the sentinels (user/password
    /// are for the data nodes).
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
    /// Our extension: `cluster=<host>[/<port>],…` are seed nodes of a Redis Cluster.
    pub cluster: Vec<(String, u16)>,
    /// Our extension: `user_hash_tag=yes` writes `priv/` keys as `<prefix>{<user>}/<rest>`
    /// so that all keys of one user share one cluster slot (Dovecot cannot read these).
    pub user_hash_tag: bool,
    /// Our extension: `wait_replicas=N` sends `WAIT N <wait_timeout_msecs>` after each
    /// commit's `EXEC`; fewer replicas acknowledging makes the commit write-uncertain.
    pub wait_replicas: u32,
    pub wait_timeout_msecs: u32,
}

impl Default for RedisParams {
    fn default() -> Self {
        RedisParams {
            host: "127.0.0.1".into(),
            port: 6379,
            path: None,
            prefix: String::new(),
            db: 0,
            expire_secs: None,
            timeout_msecs: 30_000,
            password: None,
            user: None,
            tls: false,
            sentinels: Vec::new(),
            master_name: None,
            sentinel_user: None,
            sentinel_password: None,
            cluster: Vec::new(),
            user_hash_tag: false,
            wait_replicas: 0,
            wait_timeout_msecs: 1000,
        }
    }
}

/// `<host>[/<port>],…` (a `:` cannot appear in a URI value), `default_port` where none is
/// given.
fn parse_nodes(value: &str, default_port: u16) -> Option<Vec<(String, u16)>> {
    value
        .split(',')
        .map(|node| {
            let (host, port) = match node.split_once('/') {
                Some((host, port)) => (host, port.parse().ok().filter(|p| *p != 0)?),
                None => (node, default_port),
            };
            (!host.is_empty()).then(|| (host.to_string(), port))
        })
        .collect()
}

fn yes_no(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!(
            "Invalid {key} value: '{value}' (expected yes or no)"
        )),
    }
}

const SUPPORTED: &str = "sqlite, mysql, pgsql, redis, file";

/// The driver of `uri` when it is one dict-rs does not serve (`ldap`, `fs`, a typo), so
/// that such a dict can be left out with a warning instead of stopping the others.
pub fn unserved_driver(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    (!matches!(scheme, "sqlite" | "mysql" | "pgsql" | "redis" | "file")).then_some(scheme)
}

impl DictUri {
    /// Parses the URI configured for dict `name`; `name` only appears in error messages.
    /// Errors carry no file position: use [`ConfigError::at`] or
    /// [`DictEntry::parse_uri`](crate::DictEntry::parse_uri) to add one.
    pub fn parse(name: &str, uri: &str) -> Result<DictUri, ConfigError> {
        let fail = |message: String| ConfigError::Dict {
            origin: None,
            name: name.to_string(),
            message,
        };
        let Some((scheme, args)) = uri.split_once(':') else {
            return Err(fail(format!(
                "invalid dict URI '{uri}' (expected <driver>:<arguments>, supported: {SUPPORTED})"
            )));
        };
        let driver = match scheme {
            "sqlite" => SqlDriver::Sqlite,
            "mysql" => SqlDriver::Mysql,
            "pgsql" => SqlDriver::Pgsql,
            "redis" => return RedisParams::parse(args).map(DictUri::Redis).map_err(fail),
            "file" => return FileParams::parse(args).map(DictUri::File).map_err(fail),
            _ => {
                return Err(fail(format!(
                    "unknown dict driver '{scheme}' in '{uri}' (supported: {SUPPORTED})"
                )))
            }
        };
        if args.is_empty() {
            return Err(fail(format!("missing map file path in '{uri}'")));
        }
        Ok(DictUri::Sql {
            driver,
            map_path: PathBuf::from(args),
        })
    }
}

impl RedisParams {
    /// Parses the part after `redis:`. Values can't contain `:`, which is why an IPv6
    /// literal can't be given as `host`.
    fn parse(args: &str) -> Result<RedisParams, String> {
        let mut params = RedisParams::default();
        for item in args.split(':').filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let invalid = || format!("Invalid {key} value: '{value}'");
            match key {
                "host" if !value.is_empty() => params.host = value.to_string(),
                "host" => return Err(invalid()),
                "port" => {
                    params.port = value.parse().ok().filter(|p| *p != 0).ok_or_else(invalid)?
                }
                "path" if !value.is_empty() => params.path = Some(PathBuf::from(value)),
                "path" => return Err(invalid()),
                "prefix" => params.prefix = value.to_string(),
                "db" => params.db = value.parse().map_err(|_| invalid())?,
                "expire_secs" => {
                    let secs: u32 = value.parse().map_err(|_| invalid())?;
                    if secs == 0 {
                        return Err("expire_secs must be > 0".into());
                    }
                    params.expire_secs = Some(secs);
                }
                "timeout_msecs" => params.timeout_msecs = value.parse().map_err(|_| invalid())?,
                "password" => params.password = Some(value.to_string()),
                "user" => params.user = Some(value.to_string()),
                "tls" => params.tls = yes_no(key, value)?,
                "sentinels" => params.sentinels = parse_nodes(value, 26379).ok_or_else(invalid)?,
                "master_name" if !value.is_empty() => params.master_name = Some(value.into()),
                "master_name" => return Err(invalid()),
                "sentinel_user" => params.sentinel_user = Some(value.to_string()),
                "sentinel_password" => params.sentinel_password = Some(value.to_string()),
                "cluster" => params.cluster = parse_nodes(value, 6379).ok_or_else(invalid)?,
                "user_hash_tag" => params.user_hash_tag = yes_no(key, value)?,
                "wait_replicas" => params.wait_replicas = value.parse().map_err(|_| invalid())?,
                "wait_timeout_msecs" => {
                    params.wait_timeout_msecs = value.parse().map_err(|_| invalid())?
                }
                _ => return Err(format!("Unknown parameter: {key}")),
            }
        }
        params.check_shape()?;
        Ok(params)
    }

    /// One shape at a time: a server (host/port or path), Sentinel, or Cluster.
    fn check_shape(&self) -> Result<(), String> {
        if self.sentinels.is_empty() != self.master_name.is_none() {
            return Err("sentinels= and master_name= go together".into());
        }
        let sentinel = !self.sentinels.is_empty();
        let cluster = !self.cluster.is_empty();
        if sentinel && cluster {
            return Err("sentinels= and cluster= exclude each other".into());
        }
        if (sentinel || cluster) && self.path.is_some() {
            return Err("path= cannot be combined with sentinels= or cluster=".into());
        }
        if cluster && self.db != 0 {
            return Err("a Redis Cluster has only db 0".into());
        }
        if (self.sentinel_user.is_some() || self.sentinel_password.is_some()) && !sentinel {
            return Err("sentinel_user=/sentinel_password= need sentinels=".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(uri: &str) -> String {
        DictUri::parse("x", uri).unwrap_err().to_string()
    }

    #[test]
    fn sql_schemes_take_the_map_path() {
        for (scheme, driver) in [
            ("sqlite", SqlDriver::Sqlite),
            ("mysql", SqlDriver::Mysql),
            ("pgsql", SqlDriver::Pgsql),
        ] {
            let uri = format!("{scheme}:/etc/dovecot/dovecot-dict-sql.conf.ext");
            assert_eq!(
                DictUri::parse("quota", &uri).unwrap(),
                DictUri::Sql {
                    driver,
                    map_path: "/etc/dovecot/dovecot-dict-sql.conf.ext".into()
                }
            );
        }
        assert_eq!(
            err("sqlite:"),
            "dict 'x': missing map file path in 'sqlite:'"
        );
    }

    #[test]
    fn unknown_scheme_names_the_dict() {
        assert_eq!(
            err("foo:bar"),
            "dict 'x': unknown dict driver 'foo' in 'foo:bar' (supported: sqlite, mysql, pgsql, redis, file)"
        );
        assert!(err("nocolon").contains("invalid dict URI 'nocolon'"));
    }

    #[test]
    fn file_uris_take_a_path_and_a_lock_method() {
        let file = |uri: &str| match DictUri::parse("f", uri).unwrap() {
            DictUri::File(p) => (p.path.display().to_string(), p.lock),
            other => panic!("{other:?}"),
        };
        assert_eq!(file("file:/var/d"), ("/var/d".into(), FileLock::Dotlock));
        assert_eq!(
            file("file:/var/d:lock=fcntl"),
            ("/var/d".into(), FileLock::Fcntl)
        );
        assert_eq!(
            file("file:/var/d:lock=flock"),
            ("/var/d".into(), FileLock::Flock)
        );
        assert_eq!(
            err("file:/var/d:lock=dotlock"),
            "dict 'x': Invalid parameter: lock=dotlock (expected lock=fcntl or lock=flock)"
        );
        assert_eq!(err("file:"), "dict 'x': missing file path in 'file:'");
        for uri in ["file:/var/d", "file:/var/d:lock=flock"] {
            let DictUri::File(p) = DictUri::parse("f", uri).unwrap() else {
                panic!()
            };
            assert_eq!(p.uri(), uri);
        }
    }

    #[test]
    fn unserved_drivers() {
        assert_eq!(unserved_driver("ldap:/etc/dovecot/ldap.conf"), Some("ldap"));
        assert_eq!(unserved_driver("fs:posix:prefix=/x"), Some("fs"));
        assert_eq!(unserved_driver("file:/x"), None);
        assert_eq!(unserved_driver("redis:"), None);
        assert_eq!(unserved_driver("nocolon"), None);
    }

    #[test]
    fn redis_defaults() {
        assert_eq!(
            DictUri::parse("r", "redis:").unwrap(),
            DictUri::Redis(RedisParams::default())
        );
        let p = RedisParams::default();
        assert_eq!(
            (p.host.as_str(), p.port, p.timeout_msecs),
            ("127.0.0.1", 6379, 30_000)
        );
    }

    #[test]
    fn redis_all_parameters() {
        let uri = "redis:host=redis.example.org:port=6380:prefix=pfx/:db=3:expire_secs=100:\
                   timeout_msecs=500:password=pw:user=dict:tls=yes";
        let DictUri::Redis(p) = DictUri::parse("r", uri).unwrap() else {
            panic!()
        };
        assert_eq!(
            p,
            RedisParams {
                host: "redis.example.org".into(),
                port: 6380,
                path: None,
                prefix: "pfx/".into(),
                db: 3,
                expire_secs: Some(100),
                timeout_msecs: 500,
                password: Some("pw".into()),
                user: Some("dict".into()),
                tls: true,
                ..RedisParams::default()
            }
        );
        let DictUri::Redis(p) = DictUri::parse("r", "redis:path=/run/redis.sock:tls=no").unwrap()
        else {
            panic!()
        };
        assert_eq!((p.path, p.tls), (Some("/run/redis.sock".into()), false));
    }

    #[test]
    fn redis_bad_parameters() {
        assert_eq!(
            err("redis:host=127.0.0.1:foo=1"),
            "dict 'x': Unknown parameter: foo"
        );
        assert_eq!(
            err("redis:expire_secs=0"),
            "dict 'x': expire_secs must be > 0"
        );
        assert_eq!(
            err("redis:port=http"),
            "dict 'x': Invalid port value: 'http'"
        );
        assert_eq!(err("redis:db=-1"), "dict 'x': Invalid db value: '-1'");
        assert!(err("redis:timeout_msecs=soon").contains("Invalid timeout_msecs value"));
        assert!(err("redis:tls=maybe").contains("Invalid tls value: 'maybe'"));
    }

    #[test]
    fn redis_sentinel_and_cluster_parameters() {
        let redis = |uri: &str| match DictUri::parse("r", uri).unwrap() {
            DictUri::Redis(p) => p,
            other => panic!("{other:?}"),
        };
        let p = redis(
            "redis:sentinels=10.0.0.1,s2/26380:master_name=mymaster:sentinel_user=su:\
             sentinel_password=sp:wait_replicas=1:wait_timeout_msecs=250",
        );
        assert_eq!(
            p.sentinels,
            [("10.0.0.1".to_string(), 26379), ("s2".to_string(), 26380)]
        );
        assert_eq!(p.master_name.as_deref(), Some("mymaster"));
        assert_eq!(
            (p.sentinel_user.as_deref(), p.sentinel_password.as_deref()),
            (Some("su"), Some("sp"))
        );
        assert_eq!((p.wait_replicas, p.wait_timeout_msecs), (1, 250));
        let p = redis("redis:cluster=a/7000,b:user_hash_tag=yes");
        assert_eq!(
            p.cluster,
            [("a".to_string(), 7000), ("b".to_string(), 6379)]
        );
        assert!(p.user_hash_tag);
        assert_eq!(
            err("redis:sentinels=a"),
            "dict 'x': sentinels= and master_name= go together"
        );
        assert_eq!(
            err("redis:master_name=m"),
            "dict 'x': sentinels= and master_name= go together"
        );
        assert!(err("redis:sentinels=a/0:master_name=m").contains("Invalid sentinels value"));
        assert!(err("redis:cluster=a,,b").contains("Invalid cluster value"));
        assert!(err("redis:cluster=a:sentinels=b:master_name=m").contains("exclude each other"));
        assert!(err("redis:cluster=a:db=1").contains("only db 0"));
        assert!(err("redis:cluster=a:path=/x").contains("path= cannot"));
        assert!(err("redis:sentinel_password=x").contains("need sentinels="));
        assert!(err("redis:user_hash_tag=1").contains("Invalid user_hash_tag value"));
    }
}
