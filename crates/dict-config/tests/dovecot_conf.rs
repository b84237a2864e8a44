//! DovecotConfig on a Debian-style dovecot.conf with conf.d includes, and on small files
//! for the error cases.

mod common;

use std::path::PathBuf;

use common::{fixture, Scratch};
use dict_config::settings::parse_file;
use dict_config::{DictUri, DovecotConfig, Node, Origin, RedisParams, SqlDriver, DEFAULT_BASE_DIR};

fn debian() -> DovecotConfig {
    DovecotConfig::load(fixture("debian/dovecot.conf")).unwrap()
}

#[test]
fn debian_layout_dicts_come_from_all_included_files() {
    let c = debian();
    let dicts: Vec<_> = c
        .dicts
        .iter()
        .map(|d| (d.name.as_str(), d.uri().unwrap(), d.origin.clone()))
        .collect();
    assert_eq!(
        dicts,
        vec![
            (
                "quota",
                "sqlite:/etc/dovecot/dovecot-dict-sql.conf.ext",
                Origin::new(fixture("debian/dovecot.conf"), 28)
            ),
            (
                "quotaclone",
                "redis:host=127.0.0.1:port=6379:prefix=quota/:expire_secs=86400",
                Origin::new(fixture("debian/conf.d/90-quota.conf"), 19)
            ),
            (
                "expire",
                "mysql:/etc/dovecot/dovecot-dict-sql.conf.ext",
                Origin::new(fixture("debian/conf.d/90-quota.conf"), 20)
            ),
        ]
    );
    // `quota = dict:…` inside plugin { } is not a dict definition.
    assert_eq!(
        c.dict("quota").unwrap().uri().unwrap(),
        "sqlite:/etc/dovecot/dovecot-dict-sql.conf.ext"
    );
}

#[test]
fn debian_layout_dict_uris_parse() {
    let c = debian();
    assert_eq!(
        c.dict("quota").unwrap().parse_uri().unwrap(),
        DictUri::Sql {
            driver: SqlDriver::Sqlite,
            map_path: "/etc/dovecot/dovecot-dict-sql.conf.ext".into()
        }
    );
    assert_eq!(
        c.dict("quotaclone").unwrap().parse_uri().unwrap(),
        DictUri::Redis(RedisParams {
            prefix: "quota/".into(),
            expire_secs: Some(86400),
            ..RedisParams::default()
        })
    );
}

#[test]
fn debian_layout_listeners() {
    let c = debian();
    assert_eq!(c.base_dir, None);
    assert_eq!(c.base_dir_or_default(), PathBuf::from(DEFAULT_BASE_DIR));
    // Only service dict's listeners: not lmtp's or auth's.
    assert_eq!(c.dict_listeners.len(), 1);
    let l = &c.dict_listeners[0];
    assert_eq!(l.path, PathBuf::from("/run/dovecot/dict"));
    assert_eq!(l.mode, Some(0o660));
    assert_eq!(l.user.as_deref(), Some("dovecot"));
    assert_eq!(l.group.as_deref(), Some("vmail"));
    assert_eq!(
        l.origin,
        Some(Origin::new(fixture("debian/conf.d/10-master.conf"), 37))
    );

    assert_eq!(c.dict_async_listeners.len(), 1);
    let l = &c.dict_async_listeners[0];
    assert_eq!(l.path, PathBuf::from("/run/dovecot/dict-async"));
    assert_eq!(
        (l.mode, l.user.as_deref(), l.group.as_deref()),
        (None, None, Some("vmail"))
    );
}

#[test]
fn debian_layout_keeps_settings_we_do_not_use_verbatim() {
    let nodes = parse_file(fixture("debian/dovecot.conf")).unwrap();
    let find = |key: &str| {
        nodes.iter().find_map(|n| match n {
            Node::Setting { key: k, value, .. } if k == key => Some(value.clone()),
            _ => None,
        })
    };
    assert_eq!(
        find("ssl_cert").as_deref(),
        Some("</etc/dovecot/private/dovecot.pem")
    );
    assert_eq!(find("mail_plugins").as_deref(), Some("$mail_plugins quota"));
    assert_eq!(
        find("login_greeting").as_deref(),
        Some("Mail server ready.")
    );
    assert_eq!(
        find("postmaster_address").as_deref(),
        Some("postmaster@example.org")
    );
    assert_eq!(find("auth_mechanisms").as_deref(), Some("plain login"));
    // auth-system.conf.ext, included from conf.d/10-auth.conf, relative to conf.d.
    assert!(nodes
        .iter()
        .any(|n| matches!(n, Node::Section { kind, .. } if kind == "passdb")));
}

#[test]
fn base_dir_applies_to_relative_listeners_wherever_it_is_set() {
    let s = Scratch::new();
    let main = s.write(
        "dovecot.conf",
        "!include conf.d/*.conf\nbase_dir = /var/run/dovecot-test/\n",
    );
    s.write(
        "conf.d/10-master.conf",
        "service dict {\n  unix_listener dict {\n  }\n  unix_listener sub/dict2 {\n    mode = 600\n  }\n}\n",
    );
    let c = DovecotConfig::load(&main).unwrap();
    let paths: Vec<_> = c
        .dict_listeners
        .iter()
        .map(|l| (l.path.clone(), l.mode))
        .collect();
    assert_eq!(
        paths,
        vec![
            (PathBuf::from("/var/run/dovecot-test/dict"), None),
            (
                PathBuf::from("/var/run/dovecot-test/sub/dict2"),
                Some(0o600)
            ),
        ]
    );
}

#[test]
fn errors_point_into_the_included_file() {
    let s = Scratch::new();
    let main = s.write("dovecot.conf", "protocols = imap\n!include conf.d/*.conf\n");
    s.write(
        "conf.d/10-master.conf",
        "service dict {\n  unix_listener dict {\n    mode = rw-rw----\n  }\n}\n",
    );
    assert_eq!(
        DovecotConfig::load(&main).unwrap_err().to_string(),
        format!(
            "{}Invalid mode: rw-rw---- (expected an octal number like 0660)",
            s.at("conf.d/10-master.conf", 3)
        )
    );

    s.write(
        "conf.d/10-master.conf",
        "service dict {\n  unix_listener {\n  }\n}\n",
    );
    assert_eq!(
        DovecotConfig::load(&main).unwrap_err().to_string(),
        format!(
            "{}unix_listener without a path",
            s.at("conf.d/10-master.conf", 2)
        )
    );
}

#[test]
fn a_2_4_config_with_includes() {
    let s = Scratch::new();
    let main = s.write(
        "dovecot.conf",
        "!include head.conf\nbase_dir = /srv/d24/run\n\
         service dict {\n  unix_listener /srv/d24/dict.sock {\n    mode = 0666\n  }\n}\n\
         dict_server {\n  !include dicts.d/*.conf\n}\n",
    );
    s.write(
        "head.conf",
        "# Dovecot 2.4 needs this first\n\ndovecot_config_version = 2.4.1\n",
    );
    s.write(
        "dicts.d/quota.conf",
        "dict quota {\n  driver = sql\n  sql_driver = sqlite\n  sqlite_path = /srv/d24/q.db\n\
         dict_map priv/quota/storage {\n    sql_table = quota\n    username_field = username\n\
         value_field bytes {\n      type = uint\n    }\n  }\n}\n",
    );
    let c = DovecotConfig::load(&main).unwrap();
    assert_eq!(c.config_version.as_deref(), Some("2.4.1"));
    assert_eq!(c.dicts.len(), 1);
    assert_eq!(
        c.dicts[0].origin,
        Origin::new(s.path("dicts.d/quota.conf"), 1)
    );
    let paths: Vec<_> = c.dict_listeners.iter().map(|l| l.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            std::path::PathBuf::from("/srv/d24/run/dict"),
            std::path::PathBuf::from("/srv/d24/dict.sock")
        ]
    );
    assert_eq!(c.dict_listeners[1].mode, Some(0o666));

    // errors point into the included file
    s.write(
        "dicts.d/quota.conf",
        "dict quota {\n  driver = sql\n  sql_driver = sqlite\n  sqlite_path = /x\n\
         dict_map priv/quota/storage {\n    sql_tabel = quota\n  }\n}\n",
    );
    let e = DovecotConfig::load(&main).unwrap_err();
    assert_eq!(
        e.origin(),
        Some(&Origin::new(s.path("dicts.d/quota.conf"), 6))
    );
    assert!(
        e.to_string()
            .contains("Unknown setting in dict_map: sql_tabel"),
        "{e}"
    );
}

#[test]
fn missing_dovecot_conf_is_a_read_error() {
    let s = Scratch::new();
    let e = DovecotConfig::load(s.path("dovecot.conf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "can't read {}: ",
            s.path("dovecot.conf").display()
        )),
        "{e}"
    );
}
