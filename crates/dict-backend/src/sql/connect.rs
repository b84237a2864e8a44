//! A dict's [`SqlConnect`] (read from a 2.3 `connect` string or 2.4 settings by
//! dict-config) turned into sqlx connect options, the way each of Dovecot's SQL drivers
//! would connect.
//!
//! Dovecot's pool-level settings work for both servers: `maxconns=N` (connections per host,
//! default 5) and several hosts (tried in order: failover); PostgreSQL's
//! `target_session_attrs` picks which of them may be used. Settings we cannot honour are
//! refused at start-up or logged with `warn!`, never dropped silently.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use dict_config::sql_connect::DEFAULT_MAXCONNS as DOVECOT_MAXCONNS;
use dict_config::{MysqlConnect, PgsqlConnect, SqlConnect, SqliteOptions};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::PgConnectOptions;

use super::session::SessionAttrs;

/// Dovecot's default `maxconns`.
pub(crate) const DEFAULT_MAXCONNS: u32 = DOVECOT_MAXCONNS;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite {
        path: PathBuf,
        options: SqliteOptions,
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
    /// PostgreSQL's `target_session_attrs` (never set for MySQL).
    pub session: Option<SessionAttrs>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            maxconns: DEFAULT_MAXCONNS,
            connect_timeout: None,
            io_timeout: None,
            session: None,
        }
    }
}

/// The sqlx options of `connect`. The error text is meant for a start-up message.
pub(crate) fn target(connect: &SqlConnect) -> Result<Target, String> {
    match connect {
        SqlConnect::Sqlite { path, options } => Ok(Target::Sqlite {
            path: path.clone(),
            options: *options,
        }),
        SqlConnect::Mysql(c) => mysql(c),
        SqlConnect::Pgsql(c) => pgsql(c),
    }
}

fn pool(maxconns: Option<u32>, connect_timeout: Option<u32>) -> PoolSettings {
    PoolSettings {
        maxconns: maxconns.unwrap_or(DEFAULT_MAXCONNS),
        connect_timeout: connect_timeout.map(|t| Duration::from_secs(t.into())),
        io_timeout: None,
        session: None,
    }
}

/// Where libmysqlclient looks for the server's socket when the host is `localhost`.
const MYSQL_SOCKETS: [&str; 3] = [
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/tmp/mysql.sock",
];

fn mysql(c: &MysqlConnect) -> Result<Target, String> {
    if let Some(file) = &c.option_file {
        return Err(format!(
            "mysql: option_file={file} is not supported: put host, port, user, password, dbname and ssl_* into the connect string"
        ));
    }
    if c.tls.ca_path.is_some() {
        return Err("mysql: ssl_ca_path is not supported; give the CA file with ssl_ca".into());
    }
    if let Some(cipher) = &c.tls.cipher {
        tracing::warn!("mysql: connect setting ssl_cipher={cipher} is ignored: the TLS library chooses the ciphers");
    }
    if let Some(group) = &c.option_group {
        tracing::warn!("mysql: connect setting option_group={group} is ignored (no MySQL option files are read)");
    }
    if let Some(flags) = &c.client_flags {
        tracing::warn!(
            "mysql: connect setting client_flags={flags} is ignored (the client flags are fixed)"
        );
    }
    let mut pool = pool(c.maxconns, c.connect_timeout);
    // read_timeout/write_timeout bound every operation: the smaller one counts.
    pool.io_timeout = [c.read_timeout, c.write_timeout]
        .into_iter()
        .flatten()
        .min()
        .map(|t| Duration::from_secs(t.into()));
    // The collation Dovecot's client library asks for (sqlx's default is
    // utf8mb4_unicode_ci): what literals compare with, and what errors name.
    let mut base = MySqlConnectOptions::new()
        .ssl_mode(MySqlSslMode::Disabled)
        .collation("utf8mb4_general_ci");
    if let Some(user) = &c.user {
        base = base.username(user);
    }
    if let Some(password) = &c.password {
        base = base.password(password);
    }
    if let Some(dbname) = &c.dbname {
        base = base.database(dbname);
    }
    if let Some(ca) = &c.tls.ca {
        base = base.ssl_ca(ca);
    }
    if let Some(cert) = &c.tls.cert {
        base = base.ssl_client_cert(cert);
    }
    if let Some(key) = &c.tls.key {
        base = base.ssl_client_key(key);
    }
    if c.tls.enabled() {
        base = base.ssl_mode(if c.tls.verify_server_cert {
            MySqlSslMode::VerifyIdentity
        } else {
            MySqlSslMode::Required
        });
    }
    let default_host = ["localhost".to_string()];
    let hosts = match c.hosts.is_empty() {
        true => &default_host[..],
        false => &c.hosts[..],
    };
    let hosts = hosts
        .iter()
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
            let opts = opts.host(host);
            match c.port {
                Some(p) => opts.port(p),
                None => opts,
            }
        })
        .collect();
    Ok(Target::Mysql { hosts, pool })
}

/// The libpq settings sqlx reads from a `postgres://` URL.
const PG_URL_PARAMS: &[&str] = &[
    "user",
    "dbname",
    "password",
    "application_name",
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
];

fn pgsql(c: &PgsqlConnect) -> Result<Target, String> {
    if let Some(enc) = &c.client_encoding {
        if !enc.eq_ignore_ascii_case("utf8") && !enc.eq_ignore_ascii_case("utf-8") {
            tracing::warn!(
                "pgsql: client_encoding={enc} is ignored: the connection always uses UTF8"
            );
        }
    }
    for (key, _) in &c.ignored {
        tracing::warn!("pgsql: connect setting {key} is not supported and is ignored");
    }
    c.check_ports()?;
    let params: Vec<(&str, String)> = c
        .parameters()
        .into_iter()
        .filter(|(k, _)| PG_URL_PARAMS.contains(k))
        .collect();
    let defaults = PgConnectOptions::new_without_pgpass();
    let mut hosts = c.hosts.clone();
    if hosts.is_empty() {
        hosts.push(match defaults.get_socket() {
            Some(dir) => dir.to_string_lossy().into_owned(),
            None => defaults.get_host().to_string(),
        });
    }
    let mut options = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let mut query = vec![("host", host.clone())];
        if let Some(port) = c.port(i) {
            query.push(("port", port.to_string()));
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
    let mut pool = pool(c.maxconns, c.connect_timeout);
    if let Some(attrs) = &c.target_session_attrs {
        pool.session = SessionAttrs::parse(attrs)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use dict_config::SqlDriver;

    fn parse(driver: SqlDriver, s: &str) -> Result<Target, String> {
        target(&SqlConnect::parse(driver, s)?)
    }

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
        let Target::Sqlite { path, .. } =
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
                io_timeout: Some(Duration::from_secs(4)),
                session: None,
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
        // the syntax errors are dict-config's (sql_connect tests); these are ours
        let err = |s| parse(SqlDriver::Mysql, s).unwrap_err();
        assert!(err("option_file=/etc/my.cnf").contains("option_file=/etc/my.cnf is not supported"));
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
    fn pgsql_target_session_attrs() {
        let (hosts, pool) = pg("host=pg1 host=pg2 target_session_attrs=read-write");
        assert_eq!(hosts.len(), 2);
        assert_eq!(pool.session, Some(SessionAttrs::ReadWrite));
        let (_, pool) = pg("host=pg1,pg2 target_session_attrs=any");
        assert_eq!(pool.session, None);
        let (_, pool) = pg("host=pg1,pg2");
        assert_eq!(pool.session, None);
        assert!(parse(
            SqlDriver::Pgsql,
            "host=a,b target_session_attrs=prefer-standby"
        )
        .unwrap_err()
        .contains("not supported"));
    }

    #[test]
    fn pgsql_refusals() {
        // the syntax errors are dict-config's (sql_connect tests); known but unsupported
        // settings are only logged
        assert!(parse(SqlDriver::Pgsql, "host=x keepalives=1").is_ok());
    }
}
