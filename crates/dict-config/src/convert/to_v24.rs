//! 2.3 → 2.4: the dicts of a 2.3 configuration as `dict_server { }` blocks.

use std::fmt::Write as _;
use std::path::Path;

use super::{at, bail, ha_extension, quote24, write_common, ConvertError, Result, CONFIG_VERSION};
use crate::dovecot::{DictSpec, DovecotConfig};
use crate::sql_connect::{MysqlConnect, PgsqlConnect, SqlConnect};
use crate::sql_map::{SqlMap, ValueType};
use crate::uri::RedisParams;

/// The 2.4 form of a 2.3 configuration's dict server settings.
pub fn to_v24(config: &DovecotConfig, input: &Path) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Dovecot 2.4 form of the dict server settings of {} (dict-server convert).",
        input.display()
    );
    let _ = writeln!(s, "dovecot_config_version = {CONFIG_VERSION}");
    write_common(&mut s, config);
    if config.dicts.is_empty() {
        return Ok(s);
    }
    s.push_str("dict_server {\n");
    for entry in &config.dicts {
        let spec = entry
            .spec()
            .map_err(|e| ConvertError::context(at(entry), e))?;
        let _ = writeln!(s, "  dict {} {{", quote24(&entry.name));
        match &spec {
            DictSpec::Sql { driver, map_file } => {
                s.push_str("    driver = sql\n");
                let _ = writeln!(s, "    sql_driver = {driver}");
                write_connect24(&mut s, &map_file.connect)
                    .map_err(|e| ConvertError::context(&map_file.connect_origin, e))
                    .map_err(|e| ConvertError::context(at(entry), e))?;
                for map in &map_file.maps {
                    write_map24(&mut s, map);
                }
            }
            DictSpec::Redis(p) => {
                s.push_str("    driver = redis\n");
                write_redis24(&mut s, p).map_err(|e| ConvertError::context(at(entry), e))?;
            }
            DictSpec::File(p) => {
                s.push_str("    driver = file\n");
                let path = p.path.display().to_string();
                let _ = writeln!(s, "    dict_file_path = {}", quote24(&path));
                if p.lock != crate::uri::FileLock::Dotlock {
                    let _ = writeln!(s, "    dict_file_lock_method = {}", p.lock.name());
                }
            }
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    Ok(s)
}

/// The 2.4 settings of a connection.
pub(super) fn write_connect24(s: &mut String, connect: &SqlConnect) -> Result<(), String> {
    match connect {
        SqlConnect::Sqlite { path, options } => {
            let path = path.display().to_string();
            let _ = writeln!(s, "    sqlite_path = {}", quote24(path.trim()));
            if let Some(sync) = options.synchronous {
                let _ = writeln!(s, "    sqlite_synchronous = {sync}");
            }
            if let Some(mode) = options.journal_mode {
                let _ = writeln!(s, "    sqlite_journal_mode = {mode}");
            }
        }
        SqlConnect::Mysql(c) => write_mysql24(s, c)?,
        SqlConnect::Pgsql(c) => write_pgsql24(s, c),
    }
    Ok(())
}

fn write_mysql24(s: &mut String, c: &MysqlConnect) -> Result<(), String> {
    let mut settings: Vec<(String, String)> = Vec::new();
    for (key, value) in c.pairs() {
        let (name, value) = match key {
            "port" | "user" | "password" | "dbname" | "option_file" | "option_group"
            | "client_flags" => (format!("mysql_{key}"), value),
            "maxconns" => ("mysql_connection_limit".into(), value),
            "connect_timeout" | "read_timeout" | "write_timeout" => {
                (format!("mysql_{key}"), format!("{value}s"))
            }
            "ssl_ca" => ("ssl_client_ca_file".into(), format!("<{value}")),
            "ssl_cert" => ("ssl_client_cert_file".into(), format!("<{value}")),
            "ssl_key" => ("ssl_client_key_file".into(), format!("<{value}")),
            "ssl_verify_server_cert" => ("ssl_client_require_valid_cert".into(), "no".into()),
            // 2.3 turns TLS on with any ssl_ setting; HIGH is its default cipher list.
            "ssl_cipher" if value == "HIGH" => continue,
            "ssl_cipher" => ("ssl_cipher_list".into(), value),
            _ => {
                return Err(format!(
                    "the MySQL connect setting {key} has no Dovecot 2.4 setting"
                ))
            }
        };
        settings.push((name, value));
    }
    if c.tls.enabled() {
        settings.push(("mysql_ssl".into(), "yes".into()));
    }
    for (k, v) in settings {
        let _ = writeln!(s, "    {k} = {}", quote_file24(&v));
    }
    write_hosts24(s, "mysql", &c.hosts);
    Ok(())
}

fn write_pgsql24(s: &mut String, c: &PgsqlConnect) {
    if let Some(limit) = c.maxconns {
        let _ = writeln!(s, "    pgsql_connection_limit = {limit}");
    }
    let params = c.parameters();
    if !params.is_empty() {
        s.push_str("    pgsql_parameters {\n");
        for (k, v) in params {
            let _ = writeln!(s, "      {k} = {}", quote24(&v));
        }
        s.push_str("    }\n");
    }
    write_hosts24(s, "pgsql", &c.hosts);
}

/// One `<driver> <host> { }` filter per host; none given means `localhost`, as in 2.3.
fn write_hosts24(s: &mut String, driver: &str, hosts: &[String]) {
    let localhost = ["localhost".to_string()];
    let hosts = if hosts.is_empty() {
        &localhost[..]
    } else {
        hosts
    };
    for h in hosts {
        let _ = writeln!(s, "    {driver} {} {{\n    }}", quote24(h));
    }
}

fn quote_file24(value: &str) -> String {
    if value.starts_with('<') && !value.contains(char::is_whitespace) {
        value.to_string()
    } else {
        quote24(value)
    }
}

fn write_map24(s: &mut String, map: &SqlMap) {
    let _ = writeln!(s, "    dict_map {} {{", quote24(&map.pattern));
    let _ = writeln!(s, "      sql_table = {}", quote24(&map.table));
    if let Some(u) = &map.username_field {
        let _ = writeln!(s, "      username_field = {}", quote24(u));
    }
    if let Some(e) = &map.expire_field {
        let _ = writeln!(s, "      expire_field = {}", quote24(e));
    }
    for (column, ty) in map.value_fields.iter().zip(&map.value_types) {
        let _ = writeln!(s, "      value_field {} {{", quote24(column));
        if *ty != ValueType::String {
            let _ = writeln!(s, "        type = {}", ty.name());
        }
        s.push_str("      }\n");
    }
    for f in &map.fields {
        let _ = writeln!(s, "      key_field {} {{", quote24(&f.column));
        let _ = writeln!(s, "        value = ${}", f.variable);
        if f.value_type != ValueType::String {
            let _ = writeln!(s, "        type = {}", f.value_type.name());
        }
        s.push_str("      }\n");
    }
    s.push_str("    }\n");
}

fn write_redis24(s: &mut String, p: &RedisParams) -> Result<()> {
    if p.user.is_some() || p.tls {
        bail!("the redis URI's user= and tls= (our extensions) have no Dovecot 2.4 setting");
    }
    if let Some(what) = ha_extension(p) {
        bail!("the redis URI's {what} (our extension) has no Dovecot 2.4 setting");
    }
    let d = RedisParams::default();
    if let Some(path) = &p.path {
        let _ = writeln!(
            s,
            "    redis_socket_path = {}",
            quote24(&path.display().to_string())
        );
    }
    if p.host != d.host {
        let _ = writeln!(s, "    redis_host = {}", quote24(&p.host));
    }
    if p.port != d.port {
        let _ = writeln!(s, "    redis_port = {}", p.port);
    }
    if !p.prefix.is_empty() {
        let _ = writeln!(s, "    redis_key_prefix = {}", quote24(&p.prefix));
    }
    if let Some(pw) = &p.password {
        let _ = writeln!(s, "    redis_password = {}", quote24(pw));
    }
    if p.db != 0 {
        let _ = writeln!(s, "    redis_db_id = {}", p.db);
    }
    if let Some(e) = p.expire_secs {
        let _ = writeln!(s, "    redis_expire = {e}s");
    }
    if p.timeout_msecs != d.timeout_msecs {
        let _ = writeln!(s, "    redis_request_timeout = {}ms", p.timeout_msecs);
    }
    Ok(())
}
