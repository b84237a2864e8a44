//! dict-sql map files (`dovecot-dict-sql.conf.ext`): which SQL
//! table and columns each dict key pattern is stored in.
//!
//! Every check Dovecot 2.3 makes when it loads the file is made here too, so a map file
//! that Dovecot refuses is refused at startup rather than on the first request.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::settings::{self, Node};
use crate::sql_connect::SqlConnect;
use crate::uri::SqlDriver;

/// A parsed map file. The dict-sql server caches these by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMapFile {
    pub path: PathBuf,
    /// The `connect` setting, read for the dict's driver; for a 2.4 dict, built
    /// from its settings.
    pub connect: SqlConnect,
    pub connect_origin: Origin,
    /// In file order: the first map whose pattern matches a key wins.
    pub maps: Vec<SqlMap>,
}

/// One `map { }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMap {
    /// As written, e.g. `shared/expire/$user/$mailbox`.
    pub pattern: String,
    /// The pattern with every variable reduced to a bare `$`, which is what the key
    /// matcher walks (`shared/expire/$/$`).
    pub normalized_pattern: String,
    /// Pasted into SQL without quoting, as Dovecot does.
    pub table: String,
    /// Column holding the user name, needed for `priv/` keys.
    pub username_field: Option<String>,
    /// At least one; several mean several values per key.
    pub value_fields: Vec<String>,
    /// Same length as `value_fields`.
    pub value_types: Vec<ValueType>,
    /// One per pattern variable, in the order the variables appear in the pattern.
    pub fields: Vec<KeyField>,
    /// Dovecot 2.4's `expire_field`: the column holding the Unix time a row expires at
    /// (NULL: never). Always `None` in a 2.3 map file.
    pub expire_field: Option<String>,
    pub origin: Origin,
}

/// The column that stores one pattern variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyField {
    pub column: String,
    /// The variable's name without `$`, braces or type.
    pub variable: String,
    pub value_type: ValueType,
}

/// How a value is checked and bound in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ValueType {
    #[default]
    String,
    /// Signed 64-bit.
    Int,
    /// Unsigned 64-bit: like `Int` but refuses a leading `-`.
    Uint,
    /// Hex text in the dict, binary in the database.
    Hexblob,
    /// Dovecot 2.4: a floating point number.
    Double,
    /// Dovecot 2.4: a UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in the dict.
    Uuid,
}

impl ValueType {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Int => "int",
            ValueType::Uint => "uint",
            ValueType::Hexblob => "hexblob",
            ValueType::Double => "double",
            ValueType::Uuid => "uuid",
        }
    }

    /// A type Dovecot 2.3 knows (`double` and `uuid` came with 2.4).
    pub fn in_dovecot_2_3(self) -> bool {
        !matches!(self, ValueType::Double | ValueType::Uuid)
    }

    /// Parses a type name; 2.3 map files only accept the 2.3 types.
    pub(crate) fn parse(s: &str, dovecot_2_4: bool) -> Option<ValueType> {
        Some(match s {
            "string" => ValueType::String,
            "int" => ValueType::Int,
            "uint" => ValueType::Uint,
            "hexblob" => ValueType::Hexblob,
            "double" if dovecot_2_4 => ValueType::Double,
            "uuid" if dovecot_2_4 => ValueType::Uuid,
            _ => return None,
        })
    }
}

impl SqlMapFile {
    /// Reads a map file whose `connect` is for `driver`.
    pub fn load(driver: SqlDriver, path: impl AsRef<Path>) -> Result<SqlMapFile, ConfigError> {
        let path = path.as_ref();
        Self::from_nodes(driver, path, &settings::parse_file(path)?)
    }

    /// Parses `text` as the contents of `path` (used in messages and for `!include`).
    pub fn parse_str(
        driver: SqlDriver,
        text: &str,
        path: impl AsRef<Path>,
    ) -> Result<SqlMapFile, ConfigError> {
        let path = path.as_ref();
        Self::from_nodes(driver, path, &settings::parse_str(text, path)?)
    }

    fn from_nodes(
        driver: SqlDriver,
        path: &Path,
        nodes: &[Node],
    ) -> Result<SqlMapFile, ConfigError> {
        let mut connect = None;
        let mut maps = Vec::new();
        for node in nodes {
            match node {
                Node::Setting { key, value, origin } if key == "connect" => {
                    connect = Some((value.clone(), origin.clone()));
                }
                Node::Setting { key, origin, .. } => {
                    return Err(ConfigError::invalid(
                        origin,
                        format!("Unknown setting: {key}"),
                    ));
                }
                Node::Section {
                    kind,
                    children,
                    origin,
                    ..
                } if kind == "map" => {
                    maps.push(parse_map(children, origin)?);
                }
                Node::Section { kind, origin, .. } => {
                    return Err(ConfigError::invalid(
                        origin,
                        format!("Unknown section: {kind}"),
                    ));
                }
            }
        }
        let (connect, connect_origin) = connect.ok_or_else(|| {
            ConfigError::invalid(&Origin::new(path, 1), "Missing connect setting")
        })?;
        let connect = SqlConnect::parse(driver, &connect)
            .map_err(|e| ConfigError::invalid(&connect_origin, e))?;
        Ok(SqlMapFile {
            path: path.to_path_buf(),
            connect,
            connect_origin,
            maps,
        })
    }
}

/// The variable names of a pattern, in order (`$user`, `${user}` both give `user`).
/// Lenient: a `$` with no name gives `""`, so the list always has one entry per `$` of
/// [`normalize_pattern`].
pub fn pattern_variables(pattern: &str) -> Vec<String> {
    scan_pattern(pattern)
        .1
        .into_iter()
        .map(|v| v.name)
        .collect()
}

/// The pattern with each variable replaced by a bare `$`.
pub fn normalize_pattern(pattern: &str) -> String {
    scan_pattern(pattern).0
}

struct PatternVar {
    name: String,
    /// `${name` without its `}`.
    unclosed: bool,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn scan_pattern(pattern: &str) -> (String, Vec<PatternVar>) {
    let mut normalized = String::with_capacity(pattern.len());
    let mut vars = Vec::new();
    let mut rest = pattern;
    while let Some(pos) = rest.find('$') {
        normalized.push_str(&rest[..pos]);
        normalized.push('$');
        let after = &rest[pos + 1..];
        let (name, unclosed, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], false, end + 2),
                None => (braced, true, after.len()),
            }
        } else {
            let end = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
            (&after[..end], false, end)
        };
        vars.push(PatternVar {
            name: name.to_string(),
            unclosed,
        });
        rest = &after[consumed..];
    }
    normalized.push_str(rest);
    (normalized, vars)
}

/// A setting's value and where it was set.
type Located = Option<(String, Origin)>;

fn parse_map(children: &[Node], origin: &Origin) -> Result<SqlMap, ConfigError> {
    let (mut pattern, mut table, mut value_field): (Located, Located, Located) = Default::default();
    let (mut value_type, mut value_hexblob, mut username_field): (Located, Located, Located) =
        Default::default();
    // (column, value, origin) of each `fields { }` line.
    let mut field_lines = Vec::new();
    for node in children {
        match node {
            Node::Setting { key, value, origin } => {
                let slot = match key.as_str() {
                    "pattern" => &mut pattern,
                    "table" => &mut table,
                    "value_field" => &mut value_field,
                    "value_type" => &mut value_type,
                    "value_hexblob" => &mut value_hexblob,
                    "username_field" => &mut username_field,
                    _ => {
                        return Err(ConfigError::invalid(
                            origin,
                            format!("Unknown setting: {key}"),
                        ))
                    }
                };
                *slot = Some((value.clone(), origin.clone())).filter(|(v, _)| !v.is_empty());
            }
            Node::Section { kind, children, .. } if kind == "fields" => {
                for field in children {
                    match field {
                        Node::Setting { key, value, origin } => {
                            field_lines.push((key.clone(), value.clone(), origin.clone()));
                        }
                        Node::Section { kind, origin, .. } => {
                            return Err(unknown_section(origin, kind));
                        }
                    }
                }
            }
            Node::Section { kind, origin, .. } => return Err(unknown_section(origin, kind)),
        }
    }

    let missing = |what: &str| ConfigError::invalid(origin, format!("Missing {what} setting"));
    let (pattern, pattern_origin) = pattern.ok_or_else(|| missing("pattern"))?;
    let (table, _) = table.ok_or_else(|| missing("table"))?;
    let (value_field, value_field_origin) = value_field.ok_or_else(|| missing("value_field"))?;

    // Split on ',' only, as Dovecot does: "a, b" names the column " b".
    let value_fields: Vec<String> = value_field.split(',').map(str::to_string).collect();
    if value_fields.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            &value_field_origin,
            format!("Empty column name in value_field: {value_field}"),
        ));
    }
    let value_types = match (value_type, value_hexblob) {
        (Some((types, types_origin)), _) => {
            let parsed = types
                .split(',')
                .map(|t| {
                    ValueType::parse(t, false).ok_or_else(|| {
                        ConfigError::invalid(
                            &types_origin,
                            format!("Invalid value in value_type: '{t}'"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if parsed.len() != value_fields.len() {
                return Err(ConfigError::invalid(
                    &types_origin,
                    "Number of fields in value_fields doesn't match value_type",
                ));
            }
            parsed
        }
        (None, Some((hexblob, hexblob_origin))) => {
            let ty = match hexblob.as_str() {
                "yes" => ValueType::Hexblob,
                "no" => ValueType::String,
                _ => {
                    return Err(ConfigError::invalid(
                        &hexblob_origin,
                        format!(
                        "Invalid boolean value for value_hexblob: {hexblob} (expected yes or no)"
                    ),
                    ))
                }
            };
            vec![ty; value_fields.len()]
        }
        (None, None) => vec![ValueType::String; value_fields.len()],
    };

    let mut candidates = Vec::new();
    for (column, value, line) in field_lines {
        let (variable, value_type) =
            parse_field_value(&column, &value).map_err(|m| ConfigError::invalid(&line, m))?;
        candidates.push((
            KeyField {
                column,
                variable,
                value_type,
            },
            line,
        ));
    }
    let (normalized_pattern, fields) =
        check_pattern_fields(&pattern, &pattern_origin, candidates, origin)?;

    let username_field = username_field.map(|(v, _)| v);
    if username_field.is_none() && pattern.starts_with("priv/") {
        tracing::warn!(
            "{origin}: map for '{pattern}' has no username_field; its priv/ keys will never match a row"
        );
    }
    Ok(SqlMap {
        pattern,
        normalized_pattern,
        table,
        username_field,
        value_fields,
        value_types,
        fields,
        expire_field: None,
        origin: origin.clone(),
    })
}

/// The checks of a map's pattern and key fields shared by both syntaxes: every variable
/// named once, each with exactly one field. Returns the normalised pattern and the fields
/// in pattern order. `candidates` are the configured fields with the line of each.
pub(crate) fn check_pattern_fields(
    pattern: &str,
    pattern_origin: &Origin,
    candidates: Vec<(KeyField, Origin)>,
    map_origin: &Origin,
) -> Result<(String, Vec<KeyField>), ConfigError> {
    let (normalized_pattern, vars) = scan_pattern(pattern);
    let mut var_names: Vec<&str> = Vec::new();
    for var in &vars {
        let problem = if var.unclosed {
            Some(format!("Missing '}}' after '${{{}' in pattern", var.name))
        } else if var.name.is_empty() {
            Some("'$' without a variable name in pattern".to_string())
        } else if var_names.contains(&var.name.as_str()) {
            Some(format!("Variable used twice in pattern: {}", var.name))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError::invalid(pattern_origin, problem));
        }
        var_names.push(&var.name);
    }
    if !var_names.is_empty() && candidates.is_empty() {
        return Err(ConfigError::invalid(
            map_origin,
            "Missing fields for pattern variables",
        ));
    }
    let mut candidates: Vec<(KeyField, Origin, bool)> =
        candidates.into_iter().map(|(f, o)| (f, o, false)).collect();
    let mut fields = Vec::new();
    for name in var_names {
        let Some((field, _, used)) = candidates.iter_mut().find(|(f, _, _)| f.variable == name)
        else {
            return Err(ConfigError::invalid(
                map_origin,
                format!("Missing SQL field for variable: {name}"),
            ));
        };
        *used = true;
        fields.push(field.clone());
    }
    if let Some((field, line, _)) = candidates.iter().find(|(_, _, used)| !used) {
        return Err(ConfigError::invalid(
            line,
            format!("Unused variable: {}", field.variable),
        ));
    }
    Ok((normalized_pattern, fields))
}

fn unknown_section(origin: &Origin, kind: &str) -> ConfigError {
    ConfigError::invalid(origin, format!("Unknown section: {kind}"))
}

/// `$var`, `${var}` or `${hexblob:var}` / `${int:var}` / `${uint:var}`.
fn parse_field_value(column: &str, value: &str) -> Result<(String, ValueType), String> {
    let Some(rest) = value.strip_prefix('$') else {
        return Err(format!("Value is missing '$' for field: {column}"));
    };
    let (name, value_type) = match rest.strip_prefix('{') {
        Some(braced) => {
            let inner = braced
                .strip_suffix('}')
                .ok_or_else(|| format!("Missing '}}' in value of field {column}: {value}"))?;
            match inner.split_once(':') {
                Some((ty, name)) => match ty {
                    "hexblob" => (name, ValueType::Hexblob),
                    "int" => (name, ValueType::Int),
                    "uint" => (name, ValueType::Uint),
                    _ => {
                        return Err(format!(
                            "Invalid type '{ty}' in value of field {column}: {value} \
                             (expected hexblob, int or uint)"
                        ))
                    }
                },
                None => (inner, ValueType::String),
            }
        }
        None => (rest, ValueType::String),
    };
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(format!(
            "Invalid variable name in value of field {column}: {value}"
        ));
    }
    Ok((name.to_string(), value_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/dovecot/map.conf";

    fn parse(text: &str) -> Result<SqlMapFile, String> {
        SqlMapFile::parse_str(SqlDriver::Sqlite, text, FILE).map_err(|e| e.to_string())
    }

    fn map(body: &str) -> Result<SqlMap, String> {
        parse(&format!("connect = /tmp/x.db\nmap {{\n{body}\n}}\n")).map(|mut f| f.maps.remove(0))
    }

    #[test]
    fn pattern_variables_and_normalisation() {
        let p = "shared/expire/$user/${mailbox}x/$a_1-$";
        assert_eq!(pattern_variables(p), vec!["user", "mailbox", "a_1", ""]);
        assert_eq!(normalize_pattern(p), "shared/expire/$/$x/$-$");
        assert_eq!(
            normalize_pattern("priv/quota/storage"),
            "priv/quota/storage"
        );
        assert!(pattern_variables("priv/quota/storage").is_empty());
    }

    #[test]
    fn field_value_forms() {
        assert_eq!(
            parse_field_value("c", "$v"),
            Ok(("v".into(), ValueType::String))
        );
        assert_eq!(
            parse_field_value("c", "${v}"),
            Ok(("v".into(), ValueType::String))
        );
        assert_eq!(
            parse_field_value("c", "${hexblob:v}"),
            Ok(("v".into(), ValueType::Hexblob))
        );
        assert_eq!(
            parse_field_value("c", "${int:v}"),
            Ok(("v".into(), ValueType::Int))
        );
        assert_eq!(
            parse_field_value("c", "${uint:v}"),
            Ok(("v".into(), ValueType::Uint))
        );
        assert!(parse_field_value("c", "${float:v}")
            .unwrap_err()
            .contains("Invalid type 'float'"));
        assert!(parse_field_value("c", "${v")
            .unwrap_err()
            .contains("Missing '}'"));
    }

    #[test]
    fn value_types_and_legacy_hexblob() {
        let m = map(
            "pattern = shared/a\ntable = t\nvalue_field = a,b,c\nvalue_type = int,uint,hexblob",
        )
        .unwrap();
        assert_eq!(m.value_fields, vec!["a", "b", "c"]);
        assert_eq!(
            m.value_types,
            vec![ValueType::Int, ValueType::Uint, ValueType::Hexblob]
        );

        let m =
            map("pattern = shared/a\ntable = t\nvalue_field = a,b\nvalue_hexblob = yes").unwrap();
        assert_eq!(m.value_types, vec![ValueType::Hexblob; 2]);
        // value_type wins over the legacy setting.
        let m = map(
            "pattern = shared/a\ntable = t\nvalue_field = a\nvalue_hexblob = yes\nvalue_type = int",
        )
        .unwrap();
        assert_eq!(m.value_types, vec![ValueType::Int]);
        let m = map("pattern = shared/a\ntable = t\nvalue_field = a").unwrap();
        assert_eq!(
            (m.value_types, m.username_field),
            (vec![ValueType::String], None)
        );
    }

    #[test]
    fn value_type_errors() {
        assert_eq!(
            map("pattern = shared/a\ntable = t\nvalue_field = a,b\nvalue_type = string, int")
                .unwrap_err(),
            "/etc/dovecot/map.conf:6: Invalid value in value_type: ' int'"
        );
        assert_eq!(
            map("pattern = shared/a\ntable = t\nvalue_field = a,b\nvalue_type = int").unwrap_err(),
            "/etc/dovecot/map.conf:6: Number of fields in value_fields doesn't match value_type"
        );
        assert_eq!(
            map("pattern = shared/a\ntable = t\nvalue_field = a,b\nvalue_hexblob = maybe").unwrap_err(),
            "/etc/dovecot/map.conf:6: Invalid boolean value for value_hexblob: maybe (expected yes or no)"
        );
        assert_eq!(
            map("pattern = shared/a\ntable = t\nvalue_field = a,,b").unwrap_err(),
            "/etc/dovecot/map.conf:5: Empty column name in value_field: a,,b"
        );
    }

    #[test]
    fn bad_pattern_variables() {
        let base = "table = t\nvalue_field = v\nfields {\n  c = $a\n}";
        assert_eq!(
            map(&format!("pattern = shared/${{a\n{base}")).unwrap_err(),
            "/etc/dovecot/map.conf:3: Missing '}' after '${a' in pattern"
        );
        assert_eq!(
            map(&format!("pattern = shared/$/$a\n{base}")).unwrap_err(),
            "/etc/dovecot/map.conf:3: '$' without a variable name in pattern"
        );
        assert_eq!(
            map(&format!("pattern = shared/$a/$a\n{base}")).unwrap_err(),
            "/etc/dovecot/map.conf:3: Variable used twice in pattern: a"
        );
    }
}
