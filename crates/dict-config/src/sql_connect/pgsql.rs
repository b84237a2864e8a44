//! PostgreSQL: a libpq conninfo string or `postgresql://` URI; Dovecot adds `maxconns` and
//! reads each `host=` as one more host (libpq: a comma-separated list).

use super::conninfo::{conninfo_pairs, conninfo_quote, uri_pairs};
use super::{maxconns, seconds};

/// libpq settings that we know but cannot honour: kept, and logged by the backend.
pub const PGSQL_IGNORED: &[&str] = &[
    "passfile",
    "service",
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

/// The values libpq accepts for `target_session_attrs`.
pub const TARGET_SESSION_ATTRS: &[&str] = &[
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
];

/// A PostgreSQL connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgsqlConnect {
    /// Host names or socket directories (`/…`), in failover order; empty: libpq's default.
    pub hosts: Vec<String>,
    /// None, one for every host, or one per host (`None`: the default port).
    pub ports: Vec<Option<u16>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub client_encoding: Option<String>,
    pub tls: PgsqlTls,
    /// Connections per host; `None`: [`DEFAULT_MAXCONNS`](super::DEFAULT_MAXCONNS).
    pub maxconns: Option<u32>,
    /// Seconds.
    pub connect_timeout: Option<u32>,
    /// libpq's `target_session_attrs`: which of the hosts a connection may stay on
    /// (one of [`TARGET_SESSION_ATTRS`]); `None`: any.
    pub target_session_attrs: Option<String>,
    /// Settings of [`PGSQL_IGNORED`], in order.
    pub ignored: Vec<(String, String)>,
}

/// libpq's `ssl*` settings, as written (`sslmode=verify-full`, file paths).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgsqlTls {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl PgsqlConnect {
    pub fn parse(connect: &str) -> Result<PgsqlConnect, String> {
        let pairs = if connect.starts_with("postgresql://") || connect.starts_with("postgres://") {
            uri_pairs(connect)?
        } else {
            conninfo_pairs(connect)?
        };
        let mut c = PgsqlConnect::default();
        for (key, value) in pairs {
            c.set(&key, &value)?;
        }
        c.check_ports()?;
        Ok(c)
    }

    /// Applies one libpq `key=value`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let text = || Some(value.to_string());
        match key {
            "host" | "hostaddr" => self.hosts.extend(
                value
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_string),
            ),
            "port" => {
                self.ports = value
                    .split(',')
                    .map(|p| match p {
                        "" => Ok(None),
                        p => p
                            .parse::<u16>()
                            .map(Some)
                            .map_err(|_| format!("pgsql: invalid port number: \"{p}\"")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "maxconns" => self.maxconns = Some(maxconns("pgsql", value)?),
            "connect_timeout" => self.connect_timeout = Some(seconds("pgsql", key, value)?),
            "dbname" => self.dbname = text(),
            "user" => self.user = text(),
            "password" => self.password = text(),
            "application_name" => self.application_name = text(),
            "options" => self.options = text(),
            "client_encoding" => self.client_encoding = text(),
            "sslmode" => self.tls.sslmode = text(),
            "sslrootcert" => self.tls.sslrootcert = text(),
            "sslcert" => self.tls.sslcert = text(),
            "sslkey" => self.tls.sslkey = text(),
            "target_session_attrs" => {
                if !TARGET_SESSION_ATTRS.contains(&value) {
                    return Err(format!(
                        "pgsql: invalid target_session_attrs value: \"{value}\""
                    ));
                }
                self.target_session_attrs = text();
            }
            k if PGSQL_IGNORED.contains(&k) => {
                self.ignored.retain(|(old, _)| old != k);
                self.ignored.push((k.to_string(), value.to_string()));
            }
            _ => return Err(format!("pgsql: invalid connection option \"{key}\"")),
        }
        Ok(())
    }

    /// libpq: several ports must match the hosts one to one (no host: one default host).
    pub fn check_ports(&self) -> Result<(), String> {
        let hosts = self.hosts.len().max(1);
        if self.ports.len() > 1 && self.ports.len() != hosts {
            return Err(format!(
                "pgsql: could not match {} port numbers to {} hosts",
                self.ports.len(),
                hosts
            ));
        }
        Ok(())
    }

    /// The port of the `i`th host.
    pub fn port(&self, i: usize) -> Option<u16> {
        match self.ports.len() {
            0 => None,
            1 => self.ports[0],
            _ => self.ports.get(i).copied().flatten(),
        }
    }

    /// Every libpq setting but `host` and `maxconns`, in a fixed order.
    pub fn parameters(&self) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|p| p.map(|p| p.to_string()).unwrap_or_default())
                .collect();
            out.push(("port", ports.join(",")));
        }
        let mut add = |k: &'static str, v: &Option<String>| out.extend(v.clone().map(|v| (k, v)));
        add("user", &self.user);
        add("dbname", &self.dbname);
        add("password", &self.password);
        add("application_name", &self.application_name);
        add("options", &self.options);
        add("client_encoding", &self.client_encoding);
        add("sslmode", &self.tls.sslmode);
        add("sslrootcert", &self.tls.sslrootcert);
        add("sslcert", &self.tls.sslcert);
        add("sslkey", &self.tls.sslkey);
        add(
            "connect_timeout",
            &self.connect_timeout.map(|t| t.to_string()),
        );
        add("target_session_attrs", &self.target_session_attrs);
        out.extend(self.ignored.iter().map(|(k, v)| (k.as_str(), v.clone())));
        out
    }

    /// The conninfo form, one `host=` per host as Dovecot writes them.
    pub fn to_connect_string(&self) -> String {
        let hosts = self.hosts.iter().map(|h| ("host", h.clone()));
        let maxconns = self.maxconns.map(|n| ("maxconns", n.to_string()));
        hosts
            .chain(self.parameters())
            .chain(maxconns)
            .map(|(k, v)| format!("{k}={}", conninfo_quote(&v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
