//! ServerToml from files, and its link to a dovecot.conf.

mod common;

use std::str::FromStr;

use common::{fixture, Scratch};
use dict_config::{LogFormat, ServerToml};

#[test]
fn dovecot_config_is_relative_to_the_toml_file_and_merged() {
    let s = Scratch::new();
    s.write(
        "dovecot/dovecot.conf",
        "dict {\n  quota = sqlite:/etc/q.conf\n  other = redis:db=2\n}\n",
    );
    let toml = s.write(
        "dict-rs.toml",
        "dovecot_config = \"dovecot/dovecot.conf\"\n\n[dicts]\nquota = \"pgsql:/etc/pg.conf\"\nmine = \"redis:\"\n",
    );
    let c = ServerToml::load(&toml).unwrap();
    assert_eq!(c.dovecot_config, Some(s.path("dovecot/dovecot.conf")));
    let all: Vec<_> = c
        .all_dicts()
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.uri().unwrap().to_string(),
                d.name,
                d.origin.file,
                d.origin.line,
            )
        })
        .map(|(uri, name, file, line)| (name, uri, file, line))
        .collect();
    assert_eq!(
        all,
        vec![
            ("quota".into(), "pgsql:/etc/pg.conf".into(), toml.clone(), 4),
            (
                "other".into(),
                "redis:db=2".into(),
                s.path("dovecot/dovecot.conf"),
                3
            ),
            ("mine".into(), "redis:".into(), toml.clone(), 5),
        ]
    );
}

#[test]
fn dovecot_config_can_be_the_debian_fixture() {
    let text = format!(
        "dovecot_config = {:?}\n",
        fixture("debian/dovecot.conf").display().to_string()
    );
    let c = ServerToml::from_str(&text).unwrap();
    let names: Vec<_> = c.all_dicts().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["quota", "quotaclone", "expire"]);
}

#[test]
fn load_errors_name_the_file() {
    let s = Scratch::new();
    let e = ServerToml::load(s.path("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "can't read {}: ",
            s.path("missing.toml").display()
        )),
        "{e}"
    );

    let bad = s.write("bad.toml", "[log]\nlevel = \"info\"\n\n[serverr]\n");
    let e = ServerToml::load(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}unknown field `serverr`", s.at("bad.toml", 4))),
        "{e}"
    );

    let bad = s.write("dict.toml", "[dicts]\nq = \"sql:/etc/x\"\n");
    assert_eq!(
        ServerToml::load(&bad).unwrap_err().to_string(),
        format!(
            "{}dict 'q': unknown dict driver 'sql' in 'sql:/etc/x' (supported: sqlite, mysql, pgsql, redis, file)",
            s.at("dict.toml", 2)
        )
    );
}

#[test]
fn from_str_uses_a_placeholder_file_name() {
    let c: ServerToml = "[log]\nformat = \"json\"\n".parse().unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.data_dir, None);
    let e = ServerToml::from_str("data_dir = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("<string>:1: "), "{e}");
}
