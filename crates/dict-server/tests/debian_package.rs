//! The files the Debian package installs (crates/dict-server/Cargo.toml,
//! [package.metadata.deb]) agree with each other: the unit runs the binary where the package
//! puts it, with the configuration file it ships, and that file changes nothing as shipped.
//! tests/scripts/package.sh builds, installs and tries the package itself.

use std::path::{Path, PathBuf};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_shipped_configuration_is_all_defaults() {
    let shipped = dict_config::ServerToml::load(repo_file("deploy/systemd/dict-rs.toml"))
        .expect("deploy/systemd/dict-rs.toml parses");
    let defaults: dict_config::ServerToml = "".parse().unwrap();
    assert_eq!(shipped, defaults);
}

#[test]
fn the_unit_runs_the_packaged_binary_with_the_packaged_configuration() {
    let unit = read("deploy/systemd/dict-rs.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert_eq!(
        exec,
        "/usr/bin/dict-server --dovecot-config /etc/dovecot/dovecot.conf \
         --config /etc/dict-rs/dict-rs.toml"
    );
    assert!(
        unit.lines().any(|l| l.starts_with("LimitNOFILE=")),
        "{unit}"
    );
    let manifest = read("crates/dict-server/Cargo.toml");
    for asset in [
        r#"["target/release/dict-server", "usr/bin/", "755"]"#,
        r#"["../../deploy/systemd/dict-rs.toml", "etc/dict-rs/dict-rs.toml", "644"]"#,
    ] {
        assert!(
            manifest.contains(asset),
            "{asset} not in [package.metadata.deb]"
        );
    }
    // Nothing enabled or started by the maintainer scripts.
    assert!(manifest.contains("enable = false, start = false"));
}
