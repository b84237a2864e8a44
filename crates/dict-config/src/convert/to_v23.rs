//! 2.4 → 2.3: a `dict { }` block of URIs and one map file per SQL dict.

use std::fmt::Write as _;
use std::path::Path;

use super::{at, bail, convert_error, quote24, write_common, ConvertError, Converted, Result};
use crate::dovecot::{DictSpec, DovecotConfig};
use crate::sql_map::{SqlMapFile, ValueType};
use crate::uri::RedisParams;

/// The 2.3 form of a 2.4 configuration: the dovecot.conf part naming map files in
/// `map_dir`, and those files.
pub fn to_v23(config: &DovecotConfig, input: &Path, map_dir: &Path) -> Result<Converted> {
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
            let spec = entry
                .spec()
                .map_err(|e| ConvertError::context(at(entry), e))?;
            let uri = match &spec {
                DictSpec::Sql { driver, map_file } => {
                    let path = map_dir.join(format!("dovecot-dict-sql-{}.conf.ext", entry.name));
                    let text =
                        map_file_23(map_file).map_err(|e| ConvertError::context(at(entry), e))?;
                    let uri = format!("{driver}:{}", path.display());
                    map_files.push((path, text));
                    uri
                }
                DictSpec::Redis(p) => {
                    redis_uri(p).map_err(|e| ConvertError::context(at(entry), e))?
                }
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
    let connect = file
        .connect
        .to_connect_string()
        .map_err(|e| ConvertError::context(&file.connect_origin, e))?;
    let _ = writeln!(s, "connect = {}", quote23(&connect));
    for map in &file.maps {
        let fail = |what: &str| {
            convert_error!(
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
    if let Some(what) = super::ha_extension(p) {
        bail!("the redis URI's {what} (our extension) has no Dovecot 2.3 equivalent");
    }
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
