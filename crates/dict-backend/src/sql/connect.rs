//! The map file's `connect` string, read the way each of
//! Dovecot's SQL drivers reads it, and turned into sqlx connect options.
//!
//! * SQLite: the whole value is the database file.
//! * MySQL: space-separated `key=value` pairs.
//! * PostgreSQL: a libpq conninfo string (`key=value`, values optionally in single quotes)
//!   or a `postgresql://` URI.
//!
//! Dovecot's pool-level settings work for both servers: `maxconns=N` (connections per host,
//! default 5) and several `host=` (tried in order: failover). Settings we cannot honour are
//! refused at start-up or logged with `warn!`, never dropped silently.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use dict_config::SqlDriver;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::PgConnectOptions;

/// Dovecot's default `maxconns`.
pub(crate) const DEFAULT_MAXCONNS: u32 = 5;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite {
        path: PathBuf,
    },
    Mysql {
        hosts: Vec<MySqlConnectOptions>,
        pool: PoolSettings,
    },
    Postgres {
        hosts: Vec<PgConnectOptions>,
        pool: PoolSettings,
    },
}

/// Pool-level settings shared by the hosts of one dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    /// Connections per host.
    pub maxconns: u32,
    /// `connect_timeout`: bounds connecting (never above the dict's own timeout).
    pub connect_timeout: Option<Duration>,
    /// MySQL `read_timeout`/`write_timeout`: bound every operation (never above the dict's
    /// own timeout).
    pub io_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            maxconns: DEFAULT_MAXCONNS,
            connect_timeout: None,
            io_timeout: None,
        }
    }
}

/// Parses `connect` for `driver`. The error text is meant for a start-up message.
pub(crate) fn parse(driver: SqlDriver, connect: &str) -> Result<Target, String> {
    match driver {
        SqlDriver::Sqlite => {
            if connect.is_empty() {
                return Err(
                    "sqlite: empty connect setting (it must be the database file path)".into(),
                );
            }
            Ok(Target::Sqlite {
                path: PathBuf::from(connect),
            })
        }
        SqlDriver::Mysql => parse_mysql(connect),
        SqlDriver::Pgsql => parse_pgsql(connect),
    }
}

fn seconds(driver: &str, key: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{driver}: invalid {key} value '{value}' (expected seconds)"))
}

fn maxconns(driver: &str, value: &str) -> Result<u32, String> {
    value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("{driver}: invalid maxconns value '{value}' (expected a number > 0)")
    })
}

/// Where libmysqlclient looks for the server's socket when the host is `localhost`.
const MYSQL_SOCKETS: [&str; 3] = [
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/tmp/mysql.sock",
];

fn parse_mysql(connect: &str) -> Result<Target, String> {
    let mut hosts = Vec::new();
    let mut pool = PoolSettings::default();
    // The collation Dovecot's client library asks for (sqlx's default is
    // utf8mb4_unicode_ci): what literals compare with, and what errors name.
    let mut base = MySqlConnectOptions::new()
        .ssl_mode(MySqlSslMode::Disabled)
        .collation("utf8mb4_general_ci");
    let mut port = None;
    let (mut ssl, mut verify) = (false, true);
    for token in connect.split_ascii_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!("mysql: missing value in connect string: {token}"));
        };
        match key {
            "host" | "hostaddr" => hosts.push(value.to_string()),
            "port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| format!("mysql: invalid port value '{value}'"))?,
                )
            }
            "user" => base = base.username(value),
            "password" => base = base.password(value),
            "dbname" => base = base.database(value),
            "maxconns" => pool.maxconns = maxconns("mysql", value)?,
            "connect_timeout" => pool.connect_timeout = Some(seconds("mysql", key, value)?),
            "read_timeout" | "write_timeout" => {
                let t = seconds("mysql", key, value)?;
                pool.io_timeout = Some(pool.io_timeout.map_or(t, |old| old.min(t)));
            }
            "ssl_ca" => {
                ssl = true;
                base = base.ssl_ca(value);
            }
            "ssl_cert" => {
                ssl = true;
                base = base.ssl_client_cert(value);
            }
            "ssl_key" => {
                ssl = true;
                base = base.ssl_client_key(value);
            }
            "ssl_verify_server_cert" => {
                verify = match value {
                    "yes" | "1" => true,
                    "no" | "0" => false,
                    _ => {
                        return Err(format!(
                    "mysql: invalid ssl_verify_server_cert value '{value}' (expected yes or no)"
                ))
                    }
                }
            }
            "ssl_ca_path" => {
                return Err(
                    "mysql: ssl_ca_path is not supported; give the CA file with ssl_ca".into(),
                );
            }
            "ssl_cipher" => {
                ssl = true;
                tracing::warn!("mysql: connect setting ssl_cipher={value} is ignored: the TLS library chooses the ciphers");
            }
            "option_file" => {
                return Err(format!(
                    "mysql: option_file={value} is not supported: put host, port, user, password, dbname and ssl_* into the connect string"
                ));
            }
            "option_group" => {
                tracing::warn!("mysql: connect setting option_group={value} is ignored (no MySQL option files are read)");
            }
            "client_flags" => {
                tracing::warn!("mysql: connect setting client_flags={value} is ignored (the client flags are fixed)");
            }
            _ => return Err(format!("mysql: unknown connect string setting: {key}")),
        }
    }
    if ssl {
        base = base.ssl_mode(if verify {
            MySqlSslMode::VerifyIdentity
        } else {
            MySqlSslMode::Required
        });
    }
    if hosts.is_empty() {
        hosts.push("localhost".into());
    }
    let hosts = hosts
        .into_iter()
        .map(|host| {
            let opts = base.clone();
            if host.starts_with('/') {
                return opts.socket(host);
            }
            // libmysqlclient talks to "localhost" over the default UNIX socket.
            if host == "localhost" {
                if let Some(sock) = MYSQL_SOCKETS
                    .iter()
                    .find(|p| std::path::Path::new(p).exists())
                {
                    return opts.socket(sock);
                }
            }
            let opts = opts.host(&host);
            match port {
                Some(p) => opts.port(p),
                None => opts,
            }
        })
        .collect();
    Ok(Target::Mysql { hosts, pool })
}

/// libpq settings that we know but cannot honour: logged and skipped.
const PG_IGNORED: &[&str] = &[
    "passfile",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "gsslib",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "channel_binding",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslpassword",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "fallback_application_name",
];

fn parse_pgsql(connect: &str) -> Result<Target, String> {
    let pairs = if connect.starts_with("postgresql://") || connect.starts_with("postgres://") {
        pg_uri_pairs(connect)?
    } else {
        pg_conninfo_pairs(connect)?
    };
    let mut pool = PoolSettings::default();
    let mut hosts: Vec<String> = Vec::new();
    let mut ports: Vec<String> = Vec::new();
    let mut params: Vec<(&'static str, String)> = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            // Dovecot: each host= is a separate host; libpq: a comma-separated list.
            "host" | "hostaddr" => hosts.extend(
                value
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_string),
            ),
            "port" => ports = value.split(',').map(str::to_string).collect(),
            "maxconns" => pool.maxconns = maxconns("pgsql", &value)?,
            "connect_timeout" => {
                pool.connect_timeout = Some(seconds("pgsql", "connect_timeout", &value)?)
            }
            "dbname" => params.push(("dbname", value)),
            "user" => params.push(("user", value)),
            "password" => params.push(("password", value)),
            "application_name" => params.push(("application_name", value)),
            "options" => params.push(("options", value)),
            "sslmode" => params.push(("sslmode", value)),
            "sslrootcert" => params.push(("sslrootcert", value)),
            "sslcert" => params.push(("sslcert", value)),
            "sslkey" => params.push(("sslkey", value)),
            "client_encoding" => {
                if !value.eq_ignore_ascii_case("utf8") && !value.eq_ignore_ascii_case("utf-8") {
                    tracing::warn!("pgsql: client_encoding={value} is ignored: the connection always uses UTF8");
                }
            }
            k if PG_IGNORED.contains(&k) => {
                tracing::warn!("pgsql: connect setting {k} is not supported and is ignored");
            }
            _ => return Err(format!("pgsql: invalid connection option \"{key}\"")),
        }
    }
    let defaults = PgConnectOptions::new_without_pgpass();
    if hosts.is_empty() {
        hosts.push(match defaults.get_socket() {
            Some(dir) => dir.to_string_lossy().into_owned(),
            None => defaults.get_host().to_string(),
        });
    }
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(format!(
            "pgsql: could not match {} port numbers to {} hosts",
            ports.len(),
            hosts.len()
        ));
    }
    let mut options = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let port = ports
            .get(if ports.len() == 1 { 0 } else { i })
            .filter(|p| !p.is_empty());
        let mut query = vec![("host", host.clone())];
        if let Some(port) = port {
            port.parse::<u16>()
                .map_err(|_| format!("pgsql: invalid port number: \"{port}\""))?;
            query.push(("port", port.clone()));
        }
        query.extend(params.iter().cloned());
        let url = format!(
            "postgres://?{}",
            query
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        );
        // The URL form makes sqlx also read ~/.pgpass / PGPASSFILE, as libpq does.
        let opts = PgConnectOptions::from_str(&url).map_err(|e| format!("pgsql: {e}"))?;
        options.push(opts);
    }
    Ok(Target::Postgres {
        hosts: options,
        pool,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("pgsql: invalid percent-encoded token: \"{s}\""))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("pgsql: invalid percent-encoded token: \"{s}\""))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("pgsql: invalid UTF-8 in URI: \"{s}\""))
}

/// libpq's `key = value` syntax: spaces around `=` allowed; a value is either a run of
/// non-space characters or single-quoted; a backslash escapes the next character.
fn pg_conninfo_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "pgsql: missing \"=\" after \"{key}\" in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "pgsql: unterminated quoted string in connection info string".into(),
                        )
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `postgresql://[user[:password]@][host[:port][,...]][/dbname][?param=value&...]`
fn pg_uri_pairs(uri: &str) -> Result<Vec<(String, String)>, String> {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_string(), percent_decode(user)?));
            }
            if let Some(p) = password {
                pairs.push(("password".to_string(), percent_decode(p)?));
            }
            hosts
        }
        None => authority,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for spec in hostlist.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("pgsql: unterminated IPv6 address in URI: \"{uri}\""))?;
            (
                h.to_string(),
                tail.strip_prefix(':').unwrap_or_default().to_string(),
            )
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, p.to_string()),
                None => (percent_decode(spec)?, String::new()),
            }
        };
        hosts.push(host);
        ports.push(port);
    }
    if !hosts.is_empty() {
        pairs.push(("host".to_string(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_string(), percent_decode(dbname)?));
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            format!("pgsql: missing key/value separator \"=\" in URI query parameter: \"{kv}\"")
        })?;
        pairs.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(s: &str) -> (Vec<MySqlConnectOptions>, PoolSettings) {
        match parse(SqlDriver::Mysql, s).unwrap() {
            Target::Mysql { hosts, pool } => (hosts, pool),
            _ => unreachable!(),
        }
    }

    fn pg(s: &str) -> (Vec<PgConnectOptions>, PoolSettings) {
        match parse(SqlDriver::Pgsql, s).unwrap() {
            Target::Postgres { hosts, pool } => (hosts, pool),
            _ => unreachable!(),
        }
    }

    #[test]
    fn sqlite_is_a_path() {
        let Target::Sqlite { path } =
            parse(SqlDriver::Sqlite, "/var/lib/dovecot/dict db.sqlite").unwrap()
        else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("/var/lib/dovecot/dict db.sqlite"));
        assert!(parse(SqlDriver::Sqlite, "").is_err());
    }

    #[test]
    fn mysql_settings() {
        let (hosts, pool) = mysql(
            "host=db1.example.org host=/run/my.sock port=3307 user=dovecot password=p=w dbname=mail maxconns=9 connect_timeout=2 read_timeout=7 write_timeout=4 client_flags=2 option_group=x",
        );
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            (hosts[0].get_host(), hosts[0].get_port()),
            ("db1.example.org", 3307)
        );
        assert_eq!(hosts[1].get_socket(), Some(&PathBuf::from("/run/my.sock")));
        assert_eq!(
            (hosts[0].get_username(), hosts[0].get_database()),
            ("dovecot", Some("mail"))
        );
        assert_eq!(
            pool,
            PoolSettings {
                maxconns: 9,
                connect_timeout: Some(Duration::from_secs(2)),
                io_timeout: Some(Duration::from_secs(4))
            }
        );
        let (hosts, pool) = mysql("host=127.0.0.1 dbname=x");
        assert_eq!(
            (hosts[0].get_host(), hosts[0].get_port(), pool.maxconns),
            ("127.0.0.1", 3306, 5)
        );
    }

    #[test]
    fn mysql_refusals() {
        let err = |s| parse(SqlDriver::Mysql, s).unwrap_err();
        assert_eq!(
            err("host=x foo=bar"),
            "mysql: unknown connect string setting: foo"
        );
        assert_eq!(err("host"), "mysql: missing value in connect string: host");
        assert!(err("option_file=/etc/my.cnf").contains("option_file=/etc/my.cnf is not supported"));
        assert!(err("maxconns=0").contains("invalid maxconns"));
        assert!(err("port=x").contains("invalid port"));
        assert!(err("ssl_ca_path=/etc/ssl/certs").contains("ssl_ca_path is not supported"));
    }

    #[test]
    fn tls_settings() {
        use sqlx::mysql::MySqlSslMode;
        use sqlx::postgres::PgSslMode;
        let (hosts, _) = mysql("host=db ssl_ca=/etc/ca.pem ssl_cert=/etc/c.pem ssl_key=/etc/k.pem");
        assert!(matches!(
            hosts[0].get_ssl_mode(),
            MySqlSslMode::VerifyIdentity
        ));
        let (hosts, _) = mysql("host=db ssl_ca=/etc/ca.pem ssl_verify_server_cert=no");
        assert!(matches!(hosts[0].get_ssl_mode(), MySqlSslMode::Required));
        let (hosts, _) = mysql("host=db");
        assert!(matches!(hosts[0].get_ssl_mode(), MySqlSslMode::Disabled));
        let (hosts, _) = pg("host=db sslmode=verify-full sslrootcert=/etc/ca.pem");
        assert!(matches!(hosts[0].get_ssl_mode(), PgSslMode::VerifyFull));
    }

    #[test]
    fn pgsql_conninfo() {
        let (hosts, pool) = pg("host=a.example,b.example port=5433 dbname='mail db' user=dovecot password='it\\'s' maxconns=3 connect_timeout=1");
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            (hosts[0].get_host(), hosts[0].get_port()),
            ("a.example", 5433)
        );
        assert_eq!(
            (hosts[1].get_host(), hosts[1].get_port()),
            ("b.example", 5433)
        );
        assert_eq!(
            (hosts[0].get_username(), hosts[0].get_database()),
            ("dovecot", Some("mail db"))
        );
        assert_eq!(
            (pool.maxconns, pool.connect_timeout),
            (3, Some(Duration::from_secs(1)))
        );
        let (hosts, _) = pg("host = /run/postgresql   dbname=d host=10.0.0.2");
        assert_eq!(
            hosts[0].get_socket(),
            Some(&PathBuf::from("/run/postgresql"))
        );
        assert_eq!(hosts[1].get_host(), "10.0.0.2");
    }

    #[test]
    fn pgsql_uri() {
        let (hosts, _) =
            pg("postgresql://us%40er:p%3Aw@h1:5440,h2/my%20db?application_name=dict&maxconns=2");
        assert_eq!(hosts.len(), 2);
        assert_eq!((hosts[0].get_host(), hosts[0].get_port()), ("h1", 5440));
        assert_eq!(hosts[1].get_host(), "h2");
        assert_eq!(
            (hosts[0].get_username(), hosts[0].get_database()),
            ("us@er", Some("my db"))
        );
        assert_eq!(hosts[0].get_application_name(), Some("dict"));
    }

    #[test]
    fn pgsql_refusals() {
        let err = |s| parse(SqlDriver::Pgsql, s).unwrap_err();
        assert_eq!(
            err("host=x bogus=1"),
            "pgsql: invalid connection option \"bogus\""
        );
        assert!(err("host=x dbname").contains("missing \"=\""));
        assert!(err("host=x dbname='abc").contains("unterminated"));
        assert!(err("host=a,b,c port=1,2").contains("could not match"));
        // known but unsupported settings are only logged
        assert!(parse(SqlDriver::Pgsql, "host=x keepalives=1").is_ok());
    }
}
