//! dict-sql map files: Debian's shape, and every error Dovecot 2.3 reports, each with its
//! file and line.

mod common;

use common::{fixture, Scratch};
use dict_config::{KeyField, SqlDriver, SqlMapFile, ValueType};

/// Loads `text` from a real file and returns the error with the scratch path replaced by
/// `F`, so expectations stay readable.
fn err(text: &str) -> String {
    let s = Scratch::new();
    let path = s.write("map.conf", text);
    SqlMapFile::load(SqlDriver::Sqlite, &path)
        .unwrap_err()
        .to_string()
        .replace(&path.display().to_string(), "F")
}

/// A map file with one map whose body is `body` (the body starts on line 3).
fn map_err(body: &str) -> String {
    err(&format!("connect = /tmp/x.db\nmap {{\n{body}\n}}\n"))
}

const OK_BODY: &str = "pattern = shared/kv/$scope/$name\ntable = kv\nvalue_field = value";

#[test]
fn debian_style_map_file() {
    let f = SqlMapFile::load(
        SqlDriver::Sqlite,
        fixture("debian/dovecot-dict-sql.conf.ext"),
    )
    .unwrap();
    assert_eq!(
        f.connect.to_connect_string().unwrap(),
        "/var/lib/dovecot/dict.sqlite"
    );
    assert_eq!(f.connect_origin.line, 5);
    assert_eq!(f.maps.len(), 4);

    let storage = &f.maps[0];
    assert_eq!(storage.pattern, "priv/quota/storage");
    assert_eq!(storage.normalized_pattern, "priv/quota/storage");
    assert_eq!(storage.table, "quota");
    assert_eq!(storage.username_field.as_deref(), Some("username"));
    assert_eq!(storage.value_fields, vec!["bytes"]);
    assert_eq!(storage.value_types, vec![ValueType::Int]);
    assert!(storage.fields.is_empty());
    assert_eq!(storage.origin.line, 14);
    assert_eq!(f.maps[1].value_fields, vec!["messages"]);

    let expire = &f.maps[2];
    assert_eq!(expire.normalized_pattern, "shared/expire/$/$");
    assert_eq!(expire.username_field, None);
    assert_eq!(expire.value_types, vec![ValueType::Uint]);
    // Ordered like the pattern's variables, not like the fields block.
    assert_eq!(
        expire.fields,
        vec![
            KeyField {
                column: "username".into(),
                variable: "user".into(),
                value_type: ValueType::String
            },
            KeyField {
                column: "mailbox".into(),
                variable: "mailbox".into(),
                value_type: ValueType::String
            },
        ]
    );

    let kv = &f.maps[3];
    assert_eq!(kv.normalized_pattern, "priv/kv/$");
    assert_eq!(kv.value_types, vec![ValueType::Hexblob]);
    assert_eq!(
        kv.fields,
        vec![KeyField {
            column: "name".into(),
            variable: "name".into(),
            value_type: ValueType::Hexblob
        }]
    );
}

#[test]
fn connect_is_raw_and_maps_can_be_included() {
    let s = Scratch::new();
    std::env::set_var("DICT_CONFIG_TEST_DBAUTH", "user=dict password=s3cret");
    // $ENV: expands after whitespace only, so `dbname=$ENV:…` stays as written.
    let main = s.write(
        "dict.conf",
        "connect = host=db1 host=db2 dbname=$ENV:X $ENV:DICT_CONFIG_TEST_DBAUTH \\\n  maxconns=4\n\
         !include maps.d/*.ext\n",
    );
    s.write("maps.d/quota.ext", "map {\n  pattern = priv/quota/storage\n  table = quota\n  username_field = username\n  value_field = bytes\n}\n");
    let f = SqlMapFile::load(SqlDriver::Sqlite, &main).unwrap();
    // read as SQLite's connect, which is the text as written
    assert_eq!(
        f.connect.to_connect_string().unwrap(),
        "host=db1 host=db2 dbname=$ENV:X user=dict password=s3cret maxconns=4"
    );
    assert_eq!(f.maps.len(), 1);
    assert_eq!(f.maps[0].origin.file, s.path("maps.d/quota.ext"));
}

#[test]
fn top_level_errors() {
    assert_eq!(
        err("# nothing\nmap {\n  pattern = shared/a\n  table = t\n  value_field = v\n}\n"),
        "F:1: Missing connect setting"
    );
    assert_eq!(
        err("connect = x\n\ndriver = mysql\n"),
        "F:3: Unknown setting: driver"
    );
    assert_eq!(
        err("connect = x\nmaps {\n}\n"),
        "F:2: Unknown section: maps"
    );
    assert_eq!(
        err("connect = x\nmap {\n"),
        "F:2: Section 'map' is not closed (missing '}')"
    );
}

#[test]
fn unknown_things_inside_a_map() {
    assert_eq!(
        map_err(&format!("{OK_BODY}\nexpire_field = e")),
        "F:6: Unknown setting: expire_field"
    );
    assert_eq!(
        map_err(&format!("{OK_BODY}\nkeys {{\n}}")),
        "F:6: Unknown section: keys"
    );
    assert_eq!(
        map_err(&format!(
            "{OK_BODY}\nfields {{\n  scope = $scope\n  name = $name\n  sub {{\n  }}\n}}"
        )),
        "F:9: Unknown section: sub"
    );
}

#[test]
fn required_map_settings() {
    assert_eq!(
        map_err("table = t\nvalue_field = v"),
        "F:2: Missing pattern setting"
    );
    assert_eq!(
        map_err("pattern = shared/a\nvalue_field = v"),
        "F:2: Missing table setting"
    );
    assert_eq!(
        map_err("pattern = shared/a\ntable = t"),
        "F:2: Missing value_field setting"
    );
    // An empty value counts as missing.
    assert_eq!(
        map_err("pattern = shared/a\ntable =\nvalue_field = v"),
        "F:2: Missing table setting"
    );
}

#[test]
fn value_field_and_value_type_checks() {
    let head = "pattern = shared/a\ntable = t\nvalue_field = bytes,messages";
    assert_eq!(
        map_err(&format!("{head}\nvalue_type = int, int")),
        "F:6: Invalid value in value_type: ' int'"
    );
    assert_eq!(
        map_err(&format!("{head}\nvalue_type = int,int,int")),
        "F:6: Number of fields in value_fields doesn't match value_type"
    );
    assert_eq!(
        map_err(&format!("{head}\nvalue_type = integer,int")),
        "F:6: Invalid value in value_type: 'integer'"
    );
}

#[test]
fn field_values_need_a_dollar() {
    assert_eq!(
        map_err(&format!(
            "{OK_BODY}\nfields {{\n  scope = scope\n  name = $name\n}}"
        )),
        "F:7: Value is missing '$' for field: scope"
    );
    assert_eq!(
        map_err(&format!("{OK_BODY}\nfields {{\n  scope = ${{text:scope}}\n  name = $name\n}}")),
        "F:7: Invalid type 'text' in value of field scope: ${text:scope} (expected hexblob, int or uint)"
    );
}

#[test]
fn pattern_variables_and_fields_must_match() {
    assert_eq!(
        map_err(OK_BODY),
        "F:2: Missing fields for pattern variables"
    );
    assert_eq!(
        map_err(&format!("{OK_BODY}\nfields {{\n  scope = $scope\n}}")),
        "F:2: Missing SQL field for variable: name"
    );
    assert_eq!(
        map_err(&format!(
            "{OK_BODY}\nfields {{\n  scope = $scope\n  name = $name\n  extra = $extra\n}}"
        )),
        "F:9: Unused variable: extra"
    );
    // A variable given two columns: the second one is unused.
    assert_eq!(
        map_err(&format!(
            "{OK_BODY}\nfields {{\n  scope = $scope\n  name = $name\n  name2 = ${{name}}\n}}"
        )),
        "F:9: Unused variable: name"
    );
    // Fields without any pattern variable are unused too.
    assert_eq!(
        map_err("pattern = shared/a\ntable = t\nvalue_field = v\nfields {\n  x = $x\n}"),
        "F:7: Unused variable: x"
    );
}

#[test]
fn typed_key_fields() {
    let s = Scratch::new();
    let path = s.write(
        "map.conf",
        "connect = x\nmap {\n  pattern = shared/t/$a/$b/${c}/$d\n  table = t\n  value_field = v\n  fields {\n\
         \x20   d = $d\n    c = ${uint:c}\n    b = ${int:b}\n    a = ${hexblob:a}\n  }\n}\n",
    );
    let f = SqlMapFile::load(SqlDriver::Sqlite, &path).unwrap();
    let types: Vec<_> = f.maps[0]
        .fields
        .iter()
        .map(|k| (k.column.as_str(), k.value_type))
        .collect();
    assert_eq!(
        types,
        vec![
            ("a", ValueType::Hexblob),
            ("b", ValueType::Int),
            ("c", ValueType::Uint),
            ("d", ValueType::String)
        ]
    );
    assert_eq!(f.maps[0].normalized_pattern, "shared/t/$/$/$/$");
}
