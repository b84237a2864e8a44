//! MySQL/MariaDB: Dovecot's `connect` string is space-separated `key=value` pairs, several
//! `host=` tried in order.

use super::{maxconns, seconds};

/// A MySQL connection. Settings the backend can't honour (`option_file`, `ssl_ca_path`) are
/// kept, so that the backend refuses them by name and the converter carries them over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MysqlConnect {
    /// Host names or socket paths (`/…`), in failover order; empty: `localhost`.
    pub hosts: Vec<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// Connections per host; `None`: [`DEFAULT_MAXCONNS`](super::DEFAULT_MAXCONNS).
    pub maxconns: Option<u32>,
    /// Seconds.
    pub connect_timeout: Option<u32>,
    pub read_timeout: Option<u32>,
    pub write_timeout: Option<u32>,
    pub tls: MysqlTls,
    pub option_file: Option<String>,
    pub option_group: Option<String>,
    pub client_flags: Option<String>,
}

/// The `ssl_*` settings. Any of `ca`, `cert`, `key` or `cipher` turns TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca_path: Option<String>,
    pub cipher: Option<String>,
    pub verify_server_cert: bool,
}

impl Default for MysqlTls {
    fn default() -> Self {
        MysqlTls {
            ca: None,
            cert: None,
            key: None,
            ca_path: None,
            cipher: None,
            verify_server_cert: true,
        }
    }
}

impl MysqlTls {
    /// What a 2.3 connect string means by "TLS on".
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.cipher.is_some()
    }
}

impl MysqlConnect {
    pub fn parse(connect: &str) -> Result<MysqlConnect, String> {
        let mut c = MysqlConnect::default();
        for token in connect.split_ascii_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                return Err(format!("mysql: missing value in connect string: {token}"));
            };
            c.set(key, value)?;
        }
        Ok(c)
    }

    /// Applies one `key=value` of the connect string.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let text = || Some(value.to_string());
        match key {
            "host" | "hostaddr" => self.hosts.push(value.to_string()),
            "port" => {
                self.port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| format!("mysql: invalid port value '{value}'"))?,
                )
            }
            "user" => self.user = text(),
            "password" => self.password = text(),
            "dbname" => self.dbname = text(),
            "maxconns" => self.maxconns = Some(maxconns("mysql", value)?),
            "connect_timeout" => self.connect_timeout = Some(seconds("mysql", key, value)?),
            "read_timeout" => self.read_timeout = Some(seconds("mysql", key, value)?),
            "write_timeout" => self.write_timeout = Some(seconds("mysql", key, value)?),
            "ssl_ca" => self.tls.ca = text(),
            "ssl_cert" => self.tls.cert = text(),
            "ssl_key" => self.tls.key = text(),
            "ssl_ca_path" => self.tls.ca_path = text(),
            "ssl_cipher" => self.tls.cipher = text(),
            "ssl_verify_server_cert" => {
                self.tls.verify_server_cert = match value {
                    "yes" | "1" => true,
                    "no" | "0" => false,
                    _ => {
                        return Err(format!(
                    "mysql: invalid ssl_verify_server_cert value '{value}' (expected yes or no)"
                ))
                    }
                }
            }
            "option_file" => self.option_file = text(),
            "option_group" => self.option_group = text(),
            "client_flags" => self.client_flags = text(),
            _ => return Err(format!("mysql: unknown connect string setting: {key}")),
        }
        Ok(())
    }

    /// Every setting but the hosts, as connect-string pairs in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut add = |k: &'static str, v: Option<String>| out.extend(v.map(|v| (k, v)));
        add("port", self.port.map(|p| p.to_string()));
        add("user", self.user.clone());
        add("password", self.password.clone());
        add("dbname", self.dbname.clone());
        add("option_file", self.option_file.clone());
        add("option_group", self.option_group.clone());
        add("client_flags", self.client_flags.clone());
        add("maxconns", self.maxconns.map(|n| n.to_string()));
        add(
            "connect_timeout",
            self.connect_timeout.map(|n| n.to_string()),
        );
        add("read_timeout", self.read_timeout.map(|n| n.to_string()));
        add("write_timeout", self.write_timeout.map(|n| n.to_string()));
        add("ssl_ca", self.tls.ca.clone());
        add("ssl_cert", self.tls.cert.clone());
        add("ssl_key", self.tls.key.clone());
        add("ssl_ca_path", self.tls.ca_path.clone());
        add("ssl_cipher", self.tls.cipher.clone());
        if !self.tls.verify_server_cert {
            add("ssl_verify_server_cert", Some("no".into()));
        }
        out
    }

    pub fn to_connect_string(&self) -> Result<String, String> {
        let hosts = self.hosts.iter().map(|h| ("host", h.clone()));
        let mut tokens = Vec::new();
        for (key, value) in hosts.chain(self.pairs()) {
            if value.contains(char::is_whitespace) {
                return Err(format!(
                    "mysql: the {key} value '{value}' can't be written in a MySQL connect string (it splits at whitespace)"
                ));
            }
            tokens.push(format!("{key}={value}"));
        }
        Ok(tokens.join(" "))
    }
}
