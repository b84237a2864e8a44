//! The SQL dicts of a 2.4 `dict_server { }`: the connection (`sqlite_path`; `mysql <host>
//! { }` and `mysql_*`; `pgsql <host> { }` and `pgsql_parameters { }`) read into a
//! [`SqlConnect`], and the `dict_map { }` blocks into [`SqlMap`]s.

use std::path::PathBuf;

use super::{parse_interval, Chain, Fail, Scope};
use crate::dovecot::DictSpec;
use crate::error::{ConfigError, Origin};
use crate::settings::Node;
use crate::sql_connect::{MysqlConnect, PgsqlConnect, SqlConnect, SqliteOptions};
use crate::sql_map::{check_pattern_fields, KeyField, SqlMap, SqlMapFile, ValueType};
use crate::uri::SqlDriver;

pub(super) fn sql_spec(origin: &Origin, chain: &Chain<'_, '_>) -> Result<DictSpec, Fail> {
    let (driver_name, driver_origin) = chain
        .value("sql_driver")
        .ok_or_else(|| (origin.clone(), "sql_driver is not set".to_string()))?;
    let driver = match driver_name {
        "sqlite" => SqlDriver::Sqlite,
        "mysql" => SqlDriver::Mysql,
        "pgsql" => SqlDriver::Pgsql,
        other => {
            return Err((
                driver_origin.clone(),
                format!("sql_driver '{other}' is not supported (supported: sqlite, mysql, pgsql)"),
            ))
        }
    };
    let connect = match driver {
        SqlDriver::Sqlite => sqlite_connect(origin, chain)?,
        SqlDriver::Mysql => mysql_connect(origin, chain)?,
        SqlDriver::Pgsql => pgsql_connect(origin, chain)?,
    };
    let mut maps = Vec::new();
    for (pattern, children, map_origin) in chain.scopes[0].filters("dict_map") {
        maps.push(
            parse_map(pattern, children, map_origin).map_err(|e| match e {
                ConfigError::Invalid { origin, message } => (origin, message),
                other => (map_origin.clone(), other.to_string()),
            })?,
        );
    }
    if maps.is_empty() {
        tracing::warn!("{origin}: SQL dict without any dict_map: every key is unmapped");
    }
    Ok(DictSpec::Sql {
        driver,
        map_file: SqlMapFile {
            path: origin.file.clone(),
            connect,
            connect_origin: origin.clone(),
            maps,
        },
    })
}

fn sqlite_connect(origin: &Origin, chain: &Chain<'_, '_>) -> Result<SqlConnect, Fail> {
    if let Some(("yes", at)) = chain.get("sqlite_readonly") {
        tracing::warn!("{at}: sqlite_readonly = yes is ignored: the dict writes to the database");
    }
    let (path, _) = chain
        .value("sqlite_path")
        .ok_or_else(|| (origin.clone(), "sqlite_path is not set".to_string()))?;
    let mut options = SqliteOptions::default();
    if let Some((value, at)) = chain.value("sqlite_synchronous") {
        options.synchronous = Some(value.parse().map_err(|e| (at.clone(), e))?);
    }
    if let Some((value, at)) = chain.value("sqlite_journal_mode") {
        options.journal_mode = Some(value.parse().map_err(|e| (at.clone(), e))?);
    }
    Ok(SqlConnect::Sqlite {
        path: PathBuf::from(path),
        options,
    })
}

/// A MySQL connection from `mysql <host> { }` filters and `mysql_*` settings.
fn mysql_connect(origin: &Origin, chain: &Chain<'_, '_>) -> Result<SqlConnect, Fail> {
    let hosts = chain.filters("mysql");
    let mut hosts: Vec<(&str, Scope<'_>, &Origin)> = hosts
        .into_iter()
        .map(|(h, children, o)| (h, Scope::new(children, &["mysql_"]), o))
        .collect();
    if hosts.is_empty() {
        match chain.value("mysql_host") {
            Some((h, o)) => hosts.push((h, Scope::from_refs(Vec::new(), &[]), o)),
            None => {
                return Err((
                    origin.clone(),
                    "mysql { .. } named list filter is missing (mysql <host> { … })".into(),
                ))
            }
        }
    }
    const KEYS: &[(&str, &str)] = &[
        ("mysql_port", "port"),
        ("mysql_user", "user"),
        ("mysql_password", "password"),
        ("mysql_dbname", "dbname"),
        ("mysql_option_file", "option_file"),
        ("mysql_option_group", "option_group"),
        ("mysql_client_flags", "client_flags"),
        ("mysql_connection_limit", "maxconns"),
        ("mysql_connect_timeout", "connect_timeout"),
        ("mysql_read_timeout", "read_timeout"),
        ("mysql_write_timeout", "write_timeout"),
        ("ssl_client_ca_file", "ssl_ca"),
        ("ssl_client_cert_file", "ssl_cert"),
        ("ssl_client_key_file", "ssl_key"),
        ("ssl_cipher_list", "ssl_cipher"),
    ];
    // The settings of each host; one connection has one set for all hosts.
    let mut each = Vec::new();
    let mut names = Vec::new();
    for (host, scope, host_origin) in &hosts {
        names.push(host.to_string());
        let get = |name: &str| {
            let short = name.strip_prefix("mysql_").unwrap_or(name);
            scope.get(short).or_else(|| chain.get(name))
        };
        let ssl = matches!(get("mysql_ssl"), Some(("yes", _)));
        let mut conn = MysqlConnect::default();
        for (setting, key) in KEYS {
            let Some((value, at)) = get(setting).filter(|(v, _)| !v.is_empty()) else {
                continue;
            };
            let value = match *key {
                "port" if value == "0" => continue,
                "option_group" if value == "client" => continue,
                "client_flags" if value == "0" => continue,
                "ssl_ca" | "ssl_cert" | "ssl_key" | "ssl_cipher" if !ssl => continue,
                "connect_timeout" | "read_timeout" | "write_timeout" => {
                    parse_interval(value, false)
                        .map_err(|e| (at.clone(), format!("{setting}: {e}")))?
                        .to_string()
                }
                "ssl_ca" | "ssl_cert" | "ssl_key" => {
                    value.strip_prefix('<').unwrap_or(value).to_string()
                }
                _ => value.to_string(),
            };
            conn.set(key, &value).map_err(|e| (at.clone(), e))?;
        }
        if ssl {
            if let Some(("no", _)) = get("ssl_client_require_valid_cert") {
                conn.tls.verify_server_cert = false;
            }
            // Without a certificate file, this is how a 2.3 connect string turns TLS on.
            if !conn.tls.enabled() {
                conn.tls.cipher = Some("HIGH".into());
            }
        }
        each.push((conn, *host_origin));
    }
    let mut conn = same_for_every_host(each, "mysql", "settings")?;
    conn.hosts = names;
    Ok(SqlConnect::Mysql(Box::new(conn)))
}

/// Dovecot reads settings per host filter; one connection has one set for all its hosts,
/// so every host must give the same.
fn same_for_every_host<T: PartialEq + Default>(
    each: Vec<(T, &Origin)>,
    driver: &str,
    what: &str,
) -> Result<T, Fail> {
    let mut each = each.into_iter();
    let Some((first, _)) = each.next() else {
        return Ok(T::default());
    };
    match each.find(|(other, _)| *other != first) {
        None => Ok(first),
        Some((_, at)) => Err((
            at.clone(),
            format!("the {driver} {{ }} hosts of one dict must have the same {what}"),
        )),
    }
}

/// A PostgreSQL connection from `pgsql <host> { }` filters and `pgsql_parameters { }`.
fn pgsql_connect(origin: &Origin, chain: &Chain<'_, '_>) -> Result<SqlConnect, Fail> {
    let hosts = chain.filters("pgsql");
    if hosts.is_empty() {
        return Err((
            origin.clone(),
            "pgsql { .. } named list filter is missing (pgsql <host> { … })".into(),
        ));
    }
    let mut names = Vec::new();
    let mut each = Vec::new();
    for (host, children, host_origin) in &hosts {
        names.push(host.to_string());
        let scope = Scope::new(children, &["pgsql_"]);
        // parameters of the host filter, else the innermost block that has them
        let mut lists = scope.lists("parameters");
        if lists.is_empty() {
            lists = chain
                .scopes
                .iter()
                .map(|s| s.lists("pgsql_parameters"))
                .find(|l| !l.is_empty())
                .unwrap_or_default();
        }
        let mut conn = PgsqlConnect::default();
        for node in lists {
            let Node::Setting { key, value, origin } = node else {
                return Err((
                    node.origin().clone(),
                    "unexpected section in pgsql_parameters".into(),
                ));
            };
            if key == "host" || key == "hostaddr" {
                return Err((
                    origin.clone(),
                    "host goes in the filter name: pgsql <host> { }".into(),
                ));
            }
            conn.set(key, value).map_err(|e| (origin.clone(), e))?;
        }
        let limit = scope
            .get("connection_limit")
            .or_else(|| chain.get("pgsql_connection_limit"));
        if let Some((limit, at)) = limit.filter(|(v, _)| !v.is_empty()) {
            conn.set("maxconns", limit).map_err(|e| (at.clone(), e))?;
        }
        each.push((conn, *host_origin));
    }
    let mut conn = same_for_every_host(each, "pgsql", "parameters")?;
    conn.hosts = names;
    conn.check_ports().map_err(|e| (origin.clone(), e))?;
    Ok(SqlConnect::Pgsql(Box::new(conn)))
}

/// One `dict_map <pattern> { }`.
fn parse_map(pattern: &str, children: &[Node], origin: &Origin) -> Result<SqlMap, ConfigError> {
    const MAP: &[&str] = &["dict_map_"];
    let scope = Scope::new(children, MAP);
    for node in children {
        match node {
            Node::Setting { key, origin, .. } => {
                let known = ["sql_table", "username_field", "expire_field", "pattern"]
                    .iter()
                    .any(|k| scope.matches(key, k));
                if !known {
                    return Err(ConfigError::invalid(
                        origin,
                        format!("Unknown setting in dict_map: {key}"),
                    ));
                }
            }
            Node::Section { kind, origin, .. } => {
                if !scope.matches(kind, "value_field") && !scope.matches(kind, "key_field") {
                    return Err(ConfigError::invalid(
                        origin,
                        format!("Unknown section in dict_map: {kind}"),
                    ));
                }
            }
        }
    }
    let text = |name: &str| {
        scope
            .get(name)
            .map(|(v, _)| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let table = text("sql_table")
        .ok_or_else(|| ConfigError::invalid(origin, "dict_map: sql_table is not set"))?;

    let mut value_fields = Vec::new();
    let mut value_types = Vec::new();
    for (column, body, at) in scope.filters("value_field") {
        let field = Scope::new(body, &["dict_map_value_field_", "value_field_"]);
        only_settings(body, &field, &["type"], "value_field")?;
        value_fields.push(column.to_string());
        value_types.push(field_type(&field, at)?);
    }
    if value_fields.is_empty() {
        return Err(ConfigError::invalid(
            origin,
            "dict_map_value_field { .. } named list filter is missing",
        ));
    }

    let mut candidates = Vec::new();
    for (column, body, at) in scope.filters("key_field") {
        let field = Scope::new(body, &["dict_map_key_field_", "key_field_"]);
        only_settings(body, &field, &["value", "type"], "key_field")?;
        let (value, value_at) = field.get("value").ok_or_else(|| {
            ConfigError::invalid(at, format!("key_field {column}: value is not set"))
        })?;
        let variable = value
            .strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .or_else(|| value.strip_prefix('$'))
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| {
                ConfigError::invalid(
                    value_at,
                    format!(
                        "key_field {column}: value must be a pattern variable ($name): {value}"
                    ),
                )
            })?;
        candidates.push((
            KeyField {
                column: column.to_string(),
                variable: variable.to_string(),
                value_type: field_type(&field, at)?,
            },
            at.clone(),
        ));
    }
    let (normalized_pattern, fields) = check_pattern_fields(pattern, origin, candidates, origin)?;

    let username_field = text("username_field");
    if username_field.is_none() && pattern.starts_with("priv/") {
        tracing::warn!(
            "{origin}: dict_map {pattern} has no username_field; its priv/ keys will never match a row"
        );
    }
    Ok(SqlMap {
        pattern: pattern.to_string(),
        normalized_pattern,
        table,
        username_field,
        value_fields,
        value_types,
        fields,
        expire_field: text("expire_field"),
        origin: origin.clone(),
    })
}

fn only_settings(
    body: &[Node],
    scope: &Scope<'_>,
    allowed: &[&str],
    what: &str,
) -> Result<(), ConfigError> {
    for node in body {
        let ok = match node {
            Node::Setting { key, .. } => allowed.iter().any(|a| scope.matches(key, a)),
            Node::Section { .. } => false,
        };
        if !ok {
            let name = match node {
                Node::Setting { key, .. } => key,
                Node::Section { kind, .. } => kind,
            };
            return Err(ConfigError::invalid(
                node.origin(),
                format!("Unknown setting in {what}: {name}"),
            ));
        }
    }
    Ok(())
}

fn field_type(scope: &Scope<'_>, at: &Origin) -> Result<ValueType, ConfigError> {
    match scope.get("type") {
        None | Some(("", _)) => Ok(ValueType::String),
        Some((t, type_at)) => ValueType::parse(t, true).ok_or_else(|| {
            let _ = at;
            ConfigError::invalid(
                type_at,
                format!("Invalid type: {t} (expected string, int, uint, double, hexblob or uuid)"),
            )
        }),
    }
}
