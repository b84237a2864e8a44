//! `dict-server convert`: the dict server part of a Dovecot configuration, rewritten for the
//! other major version, so that an admin migrates with one command.
//!
//! * 2.3 → 2.4: `dict { name = <uri> }`, each dict-sql map file and `service dict` /
//!   `service dict-async` listeners become one 2.4 text (`dovecot_config_version`,
//!   `dict_server { dict <name> { driver = sql; sql_driver; …; dict_map … } }`).
//! * 2.4 → 2.3: the `dict { }` block with URIs, plus one map file per SQL dict
//!   (`dovecot-dict-sql-<name>.conf.ext`), printed with separator lines or written into a
//!   directory.
//!
//! Only what the dict server reads is converted; the rest of dovecot.conf changed in
//! other ways between the versions. The output parses back to the same dicts (tests
//! below), and what one version can't express (2.4's `expire_field`, `double`, `uuid`; our
//! Redis `user=`/`tls=` extensions) is an error naming the line, never silently dropped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use dict_config::{
    DictEntry, DictSpec, DovecotConfig, Origin, RedisParams, SqlDriver, SqlMap, SqlMapFile,
    UnixListenerConf, ValueType,
};

/// The Dovecot major version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    V23,
    V24,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2.3" => Ok(Target::V23),
            "2.4" => Ok(Target::V24),
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

/// Reads `input` and prints (or, with `out_dir`, writes) the other version's form.
/// `to` defaults to the version the input is not.
pub fn run(
    input: &Path,
    to: Option<Target>,
    out_dir: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let config = DovecotConfig::load(input)?;
    let from = match config.config_version {
        Some(_) => Target::V24,
        None => Target::V23,
    };
    let to = to.unwrap_or(match from {
        Target::V23 => Target::V24,
        Target::V24 => Target::V23,
    });
    if to == from {
        bail!(
            "{} is already a Dovecot {} configuration",
            input.display(),
            if to == Target::V24 { "2.4" } else { "2.3" }
        );
    }
    let map_dir = match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()
                .with_context(|| format!("output directory {}", dir.display()))?
        }
        None => input
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let converted = match to {
        Target::V24 => Converted {
            conf: to_24(&config, input)?,
            map_files: Vec::new(),
        },
        Target::V23 => to_23(&config, input, &map_dir)?,
    };
    let conf_name = match to {
        Target::V24 => "dovecot-dict24.conf",
        Target::V23 => "dovecot-dict23.conf",
    };
    match out_dir {
        Some(_) => {
            let conf_path = map_dir.join(conf_name);
            let files = std::iter::once((conf_path, converted.conf)).chain(converted.map_files);
            for (path, text) in files {
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None if converted.map_files.is_empty() => out.write_all(converted.conf.as_bytes())?,
        None => {
            writeln!(out, "{}", separator("dovecot.conf (the dict server part)"))?;
            out.write_all(converted.conf.as_bytes())?;
            for (path, text) in &converted.map_files {
                writeln!(out, "{}", separator(&path.display().to_string()))?;
                out.write_all(text.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The line printed before each file when several go to stdout.
pub fn separator(name: &str) -> String {
    format!("# ==> {name} <==")
}

// ----------------------------------------------------------------- 2.3 → 2.4 ---

/// The 2.4 form of a 2.3 configuration's dict server settings.
pub fn to_24(config: &DovecotConfig, input: &Path) -> Result<String> {
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
        let spec = entry.spec().with_context(|| at(entry))?;
        let _ = writeln!(s, "  dict {} {{", quote24(&entry.name));
        match &spec {
            DictSpec::Sql { driver, map_file } => {
                s.push_str("    driver = sql\n");
                let _ = writeln!(s, "    sql_driver = {driver}");
                write_connect24(&mut s, *driver, map_file).with_context(|| at(entry))?;
                for map in &map_file.maps {
                    write_map24(&mut s, map);
                }
            }
            DictSpec::Redis(p) => {
                s.push_str("    driver = redis\n");
                write_redis24(&mut s, p).with_context(|| at(entry))?;
            }
            DictSpec::File(p) => {
                s.push_str("    driver = file\n");
                let path = p.path.display().to_string();
                let _ = writeln!(s, "    dict_file_path = {}", quote24(&path));
                if p.lock != dict_config::FileLock::Dotlock {
                    let _ = writeln!(s, "    dict_file_lock_method = {}", p.lock.name());
                }
            }
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    Ok(s)
}

fn at(entry: &DictEntry) -> String {
    format!("{}: dict '{}'", entry.origin, entry.name)
}

/// `base_dir` and the listeners the file configured (untouched built-ins are left out).
fn write_common(s: &mut String, config: &DovecotConfig) {
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
fn quote24(value: &str) -> String {
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

/// The 2.4 settings of a 2.3 `connect` string.
fn write_connect24(s: &mut String, driver: SqlDriver, file: &SqlMapFile) -> Result<()> {
    let fail = |m: String| anyhow!("{}: {m}", file.connect_origin);
    match driver {
        SqlDriver::Sqlite => {
            let _ = writeln!(s, "    sqlite_path = {}", quote24(file.connect.trim()));
        }
        SqlDriver::Mysql => {
            let mut hosts = Vec::new();
            let mut ssl = false;
            let mut settings = Vec::new();
            for token in file.connect.split_ascii_whitespace() {
                let (key, value) = token
                    .split_once('=')
                    .ok_or_else(|| fail(format!("missing value in connect string: {token}")))?;
                let setting = match key {
                    "host" | "hostaddr" => {
                        hosts.push(value.to_string());
                        continue;
                    }
                    "port" | "user" | "password" | "dbname" | "option_file" | "option_group"
                    | "client_flags" => format!("mysql_{key}"),
                    "maxconns" => "mysql_connection_limit".into(),
                    "connect_timeout" | "read_timeout" | "write_timeout" => {
                        settings.push((format!("mysql_{key}"), format!("{value}s")));
                        continue;
                    }
                    "ssl_ca" | "ssl_cert" | "ssl_key" => {
                        ssl = true;
                        let name = match key {
                            "ssl_ca" => "ssl_client_ca_file",
                            "ssl_cert" => "ssl_client_cert_file",
                            _ => "ssl_client_key_file",
                        };
                        settings.push((name.into(), format!("<{value}")));
                        continue;
                    }
                    "ssl_verify_server_cert" => {
                        if matches!(value, "no" | "0") {
                            settings.push(("ssl_client_require_valid_cert".into(), "no".into()));
                        }
                        continue;
                    }
                    // 2.3 turns TLS on with any ssl_ setting; HIGH is its default cipher list.
                    "ssl_cipher" => {
                        ssl = true;
                        if value != "HIGH" {
                            settings.push(("ssl_cipher_list".into(), value.into()));
                        }
                        continue;
                    }
                    _ => return Err(fail(format!("unknown MySQL connect setting: {key}"))),
                };
                settings.push((setting, value.to_string()));
            }
            if ssl {
                settings.push(("mysql_ssl".into(), "yes".into()));
            }
            if hosts.is_empty() {
                hosts.push("localhost".into());
            }
            for (k, v) in settings {
                let _ = writeln!(s, "    {k} = {}", quote_file24(&v));
            }
            for h in hosts {
                let _ = writeln!(s, "    mysql {} {{\n    }}", quote24(&h));
            }
        }
        SqlDriver::Pgsql => {
            if file.connect.trim_start().starts_with("postgres") && file.connect.contains("://") {
                return Err(fail(
                    "a postgresql:// URI can't be converted: write the connect string as key=value pairs"
                        .into(),
                ));
            }
            let mut hosts = Vec::new();
            let mut params = Vec::new();
            let mut limit = None;
            for (key, value) in conninfo_pairs(&file.connect).map_err(fail)? {
                match key.as_str() {
                    "host" | "hostaddr" => hosts.push(value),
                    "maxconns" => limit = Some(value),
                    _ => params.push((key, value)),
                }
            }
            if hosts.is_empty() {
                hosts.push("localhost".into());
            }
            if let Some(limit) = limit {
                let _ = writeln!(s, "    pgsql_connection_limit = {limit}");
            }
            if !params.is_empty() {
                s.push_str("    pgsql_parameters {\n");
                for (k, v) in params {
                    let _ = writeln!(s, "      {k} = {}", quote24(&v));
                }
                s.push_str("    }\n");
            }
            for h in hosts {
                let _ = writeln!(s, "    pgsql {} {{\n    }}", quote24(&h));
            }
        }
    }
    Ok(())
}

fn quote_file24(value: &str) -> String {
    if value.starts_with('<') && !value.contains(char::is_whitespace) {
        value.to_string()
    } else {
        quote24(value)
    }
}

/// The `key=value` pairs of a libpq conninfo string (values optionally in single quotes,
/// with backslash escapes).
fn conninfo_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing '=' after {key} in connect string"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of {key}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
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

// ----------------------------------------------------------------- 2.4 → 2.3 ---

/// The 2.3 form of a 2.4 configuration: the dovecot.conf part naming map files in
/// `map_dir`, and those files.
pub fn to_23(config: &DovecotConfig, input: &Path, map_dir: &Path) -> Result<Converted> {
    let mut conf = String::new();
    let _ = writeln!(
        conf,
        "# Dovecot 2.3 form of the dict server settings of {} (dict-server convert).",
        input.display()
    );
    write_common(&mut conf, config);
    let mut map_files = Vec::new();
    if !config.dicts.is_empty() {
        conf.push_str("dict {\n");
        for entry in &config.dicts {
            let spec = entry.spec().with_context(|| at(entry))?;
            let uri = match &spec {
                DictSpec::Sql { driver, map_file } => {
                    let path = map_dir.join(format!("dovecot-dict-sql-{}.conf.ext", entry.name));
                    let text = map_file_23(map_file).with_context(|| at(entry))?;
                    let uri = format!("{driver}:{}", path.display());
                    map_files.push((path, text));
                    uri
                }
                DictSpec::Redis(p) => redis_uri(p).with_context(|| at(entry))?,
                DictSpec::File(p) => p.uri(),
            };
            if entry
                .name
                .contains(|c: char| c.is_whitespace() || c == '=' || c == '#')
            {
                bail!(
                    "{}: a dict named '{}' can't be written as a 2.3 `name = uri` line",
                    entry.origin,
                    entry.name
                );
            }
            let _ = writeln!(conf, "  {} = {}", entry.name, quote23(&uri));
        }
        conf.push_str("}\n");
    }
    Ok(Converted { conf, map_files })
}

/// A 2.3 value: quoted only when the parser would otherwise cut or change it.
fn quote23(value: &str) -> String {
    let needs = value.contains('#')
        || value.starts_with(['"', '\''])
        || value.ends_with('\\')
        || value.contains("$ENV:")
        || value != value.trim();
    if needs {
        quote24(value)
    } else {
        value.to_string()
    }
}

fn map_file_23(file: &SqlMapFile) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "connect = {}", quote23(&file.connect));
    for map in &file.maps {
        let fail = |what: &str| {
            anyhow!(
                "{}: {what} can't be expressed in a Dovecot 2.3 map file",
                map.origin
            )
        };
        if map.expire_field.is_some() {
            return Err(fail("expire_field"));
        }
        let types = map
            .value_types
            .iter()
            .chain(map.fields.iter().map(|f| &f.value_type));
        if let Some(t) = types.clone().find(|t| !t.in_dovecot_2_3()) {
            return Err(fail(&format!("type {}", t.name())));
        }
        if map.value_fields.iter().any(|c| c.contains(',')) {
            return Err(fail("a value_field name with a comma"));
        }
        s.push_str("\nmap {\n");
        let _ = writeln!(s, "  pattern = {}", quote23(&map.pattern));
        let _ = writeln!(s, "  table = {}", quote23(&map.table));
        if let Some(u) = &map.username_field {
            let _ = writeln!(s, "  username_field = {}", quote23(u));
        }
        let _ = writeln!(s, "  value_field = {}", map.value_fields.join(","));
        if map.value_types.iter().any(|t| *t != ValueType::String) {
            let names: Vec<&str> = map.value_types.iter().map(|t| t.name()).collect();
            let _ = writeln!(s, "  value_type = {}", names.join(","));
        }
        if !map.fields.is_empty() {
            s.push_str("  fields {\n");
            for f in &map.fields {
                let value = match f.value_type {
                    ValueType::String => format!("${}", f.variable),
                    t => format!("${{{}:{}}}", t.name(), f.variable),
                };
                let _ = writeln!(s, "    {} = {value}", f.column);
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
    }
    Ok(s)
}

fn redis_uri(p: &RedisParams) -> Result<String> {
    let d = RedisParams::default();
    let mut parts = vec!["redis".to_string()];
    let mut add = |k: &str, v: String| -> Result<()> {
        if v.contains(':') {
            bail!("redis {k} '{v}' contains ':', which a 2.3 redis URI can't carry");
        }
        parts.push(format!("{k}={v}"));
        Ok(())
    };
    if let Some(path) = &p.path {
        add("path", path.display().to_string())?;
    }
    if p.host != d.host {
        add("host", p.host.clone())?;
    }
    if p.port != d.port {
        add("port", p.port.to_string())?;
    }
    if !p.prefix.is_empty() {
        add("prefix", p.prefix.clone())?;
    }
    if p.db != 0 {
        add("db", p.db.to_string())?;
    }
    if let Some(e) = p.expire_secs {
        add("expire_secs", e.to_string())?;
    }
    if p.timeout_msecs != d.timeout_msecs {
        add("timeout_msecs", p.timeout_msecs.to_string())?;
    }
    if let Some(pw) = &p.password {
        add("password", pw.clone())?;
    }
    if parts.len() == 1 {
        return Ok("redis:".into());
    }
    Ok(format!("{}:{}", parts[0], parts[1..].join(":")))
}

// ----------------------------------------------------------- comparing ---

/// A spec with everything that only says where it was written (files, lines) cleared,
/// and the connect string's settings in a canonical order: two configurations that mean
/// the same give equal values.
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
            file.connect = match driver {
                SqlDriver::Sqlite => file.connect.trim().to_string(),
                SqlDriver::Mysql => {
                    let mut t: Vec<&str> = file.connect.split_ascii_whitespace().collect();
                    t.sort_unstable();
                    t.join(" ")
                }
                SqlDriver::Pgsql => {
                    let mut t: Vec<String> = conninfo_pairs(&file.connect)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    t.sort_unstable();
                    t.join(" ")
                }
            };
            DictSpec::Sql {
                driver: *driver,
                map_file: file,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text24 = to_24(&c23, &conf).unwrap();
        let conf24 = write(d, "dovecot24.conf", &text24);
        let c24 = DovecotConfig::load(&conf24).unwrap_or_else(|e| panic!("{e}\n{text24}"));
        assert_eq!(c24.config_version.as_deref(), Some(CONFIG_VERSION));
        assert_eq!(specs(&c24), specs(&c23), "{text24}");
        assert_eq!(listeners(&c24), listeners(&c23), "{text24}");
        assert_eq!(c24.base_dir, c23.base_dir);

        // and back to 2.3, through files
        let out = d.join("back");
        std::fs::create_dir(&out).unwrap();
        let back = to_23(&c24, &conf24, &out).unwrap();
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
        let back = to_23(&c24, &conf, d).unwrap();
        for (path, text) in &back.map_files {
            std::fs::write(path, text).unwrap();
        }
        let conf23 = write(d, "dovecot23.conf", &back.conf);
        let c23 = DovecotConfig::load(&conf23).unwrap_or_else(|e| panic!("{e}\n{}", back.conf));
        assert_eq!(specs(&c23), specs(&c24));
        let text24 = to_24(&c23, &conf23).unwrap();
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
        let e = format!("{:#}", to_23(&c, &conf, dir.path()).unwrap_err());
        assert!(
            e.contains("dovecot.conf:7: expire_field can't be expressed in a Dovecot 2.3 map file"),
            "{e}"
        );
    }

    #[test]
    fn run_prints_files_with_separators_or_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(
            dir.path(),
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /x.db\n\
             dict_map shared/x {\n      sql_table = t\n      value_field v {\n      }\n    }\n  }\n}\n",
        );
        let mut out = Vec::new();
        run(&conf, None, None, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let map = dir
            .path()
            .canonicalize()
            .unwrap()
            .join("dovecot-dict-sql-q.conf.ext");
        assert!(
            out.starts_with("# ==> dovecot.conf (the dict server part) <==\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!("  q = sqlite:{}\n", map.display())),
            "{out}"
        );
        assert!(
            out.contains(&format!("# ==> {} <==\nconnect = /x.db\n", map.display())),
            "{out}"
        );

        let mut out = Vec::new();
        let dest = dir.path().join("out");
        run(&conf, Some(Target::V23), Some(&dest), &mut out).unwrap();
        let conf23 = dest.canonicalize().unwrap().join("dovecot-dict23.conf");
        let c = DovecotConfig::load(&conf23).unwrap();
        assert_eq!(
            c.dicts[0].uri().unwrap(),
            format!(
                "sqlite:{}",
                dest.canonicalize()
                    .unwrap()
                    .join("dovecot-dict-sql-q.conf.ext")
                    .display()
            )
        );
        assert!(run(&conf, Some(Target::V24), None, &mut Vec::new()).is_err());
    }
}
