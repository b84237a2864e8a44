//! The docker compose stack's files stay in step with the test suite, so that the suite runs
//! against the stack (tests/scripts/compose-env.sh) as against tests/scripts/services.sh.
//! No Docker needed: these read the files, and Dovecot's own doveconf checks its config.

use std::process::Command;

use dict_tests::{repo_dir, MAPS};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The SQL statements of a schema file, without its comments.
fn statements(path: &str) -> String {
    read(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_stack_creates_the_tables_of_the_fixtures() {
    assert_eq!(
        statements("deploy/sql/mysql.sql"),
        statements("tests/fixtures/schema-mysql.sql")
    );
    assert_eq!(
        statements("deploy/sql/pgsql.sql"),
        statements("tests/fixtures/schema-sqlite.sql")
    );
}

#[test]
fn the_stacks_map_files_have_the_suites_maps() {
    for (file, connect) in [
        (
            "deploy/dict-rs/dict-mysql.conf.ext",
            "connect = host=mariadb port=3306 dbname=dovecot user=dovecot password=dovecotpass",
        ),
        (
            "deploy/dict-rs/dict-pgsql.conf.ext",
            "connect = host=postgres port=5432 dbname=dovecot user=dovecot password=dovecotpass",
        ),
    ] {
        let text = read(file);
        assert!(text.contains(connect), "{file}");
        let maps = &text[text.find("map {").expect("maps")..];
        assert_eq!(maps.trim(), MAPS.trim(), "{file}");
    }
}

#[test]
fn every_file_the_compose_file_mounts_or_builds_exists() {
    let compose = read("docker-compose.yml");
    let mut checked = 0;
    for line in compose.lines() {
        let line = line.trim().trim_start_matches("- ");
        let local = line
            .strip_prefix("./")
            .map(|rest| rest.split(':').next().unwrap_or(rest));
        let built = line
            .strip_prefix("build: ")
            .or_else(|| line.strip_prefix("context: "));
        for path in local.into_iter().chain(built) {
            let path = repo_dir().join(path);
            assert!(path.exists(), "{} is missing", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked} paths found in docker-compose.yml");
    assert!(repo_dir().join("Dockerfile").exists());
    for service in ["dovecot", "mariadb", "postgres", "redis"] {
        assert!(repo_dir()
            .join(format!("deploy/{service}/Dockerfile"))
            .exists());
    }
}

/// Docker-compose 1.29 (Debian 12's) runs the file as Compose v2 does, and every image is
/// built here from debian:bookworm-slim (no registry needed), published on loopback only.
#[test]
fn the_compose_file_works_offline_with_compose_v1() {
    let compose = read("docker-compose.yml");
    assert!(
        !compose.lines().any(|l| l.starts_with("name:")),
        "Compose v1 rejects a top-level name:"
    );
    assert!(read(".env").contains("COMPOSE_PROJECT_NAME=dict-rs"));
    let images = compose.lines().filter(|l| l.trim().starts_with("image: "));
    let builds = compose.lines().filter(|l| l.trim().starts_with("build:"));
    assert_eq!(images.count(), builds.count(), "an image not built here");
    for dockerfile in [
        "Dockerfile",
        "deploy/dovecot/Dockerfile",
        "deploy/mariadb/Dockerfile",
        "deploy/postgres/Dockerfile",
        "deploy/redis/Dockerfile",
    ] {
        let from: Vec<_> = read(dockerfile)
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .map(str::to_owned)
            .collect();
        assert_eq!(from, ["FROM debian:bookworm-slim"], "{dockerfile}");
    }
    // every published port: "<host>:${DICT_COMPOSE_<NAME>_PORT:-<default>}:<container>"
    let ports: Vec<_> = compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- \"") && l.contains("_PORT:-"))
        .collect();
    assert_eq!(ports.len(), 5, "{ports:?}");
    for port in ports {
        assert!(port.starts_with("- \"127.0.0.1:"), "{port}");
    }
}

#[test]
fn compose_env_uses_the_ports_the_compose_file_publishes() {
    let compose = read("docker-compose.yml");
    let script = read("tests/scripts/compose-env.sh");
    for (var, default) in [
        ("DICT_COMPOSE_MYSQL_PORT", "23306"),
        ("DICT_COMPOSE_PGSQL_PORT", "25432"),
        ("DICT_COMPOSE_REDIS_PORT", "26379"),
        ("DICT_COMPOSE_SCRATCH", "/tmp/dict-rs-compose"),
    ] {
        let spelled = format!("{var}:-{default}");
        assert!(compose.contains(&spelled), "docker-compose.yml: {spelled}");
        assert!(script.contains(&spelled), "compose-env.sh: {spelled}");
    }
}

#[test]
fn the_stacks_dovecot_config_is_valid_and_leaves_the_dict_socket_to_us() {
    let conf = repo_dir().join("deploy/dovecot/dovecot.conf");
    let out = Command::new("doveconf")
        .arg("-c")
        .arg(&conf)
        .arg("-n")
        .output()
        .expect("doveconf (dovecot-core) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("quota_clone_dict = proxy::mysql"), "{text}");
    assert!(
        text.contains("mail_attribute_dict = proxy::redis"),
        "{text}"
    );
    assert!(text.contains("proxy::pgsql"), "{text}");
    let listener = Command::new("doveconf")
        .arg("-c")
        .arg(&conf)
        .arg("service/dict/unix_listener/dict/mode")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listener.stdout).trim(),
        "service/dict/unix_listener/dict/mode = 00"
    );
    // The dict-server config names the socket the Dovecot container links to.
    let toml = read("deploy/dict-rs/dict-rs.toml");
    assert!(toml.contains("path = \"/run/dict-rs/dict\""));
    assert!(read("deploy/dovecot/entrypoint.sh")
        .contains("ln -sfn /run/dict-rs/dict /run/dovecot/dict"));
}
