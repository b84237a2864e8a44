//! Data written through Dovecot's own dict server reads the same through ours, and the
//! reverse: the real Dovecot 2.3 dict process (a dict-only `dovecot -c` instance) and our
//! server on the same Redis and the same SQLite file, driven by the real `doveadm dict`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dict_tests::{doveadm, run_ok, scratch, service_env, unique, Backend, DictServer, MAPS};

/// Dovecot's own dict server, alone in a private instance.
struct DovecotDict {
    dir: tempfile::TempDir,
    conf: PathBuf,
    socket: PathBuf,
}

impl DovecotDict {
    fn start(dicts: &str) -> DovecotDict {
        let dir = tempfile::Builder::new()
            .prefix("dovecot-")
            .tempdir_in(scratch())
            .unwrap();
        let d = dir.path();
        // The dict processes run as the dovecot user: they need to reach the files.
        run_ok(Command::new("chmod").arg("0755").arg(d));
        let socket = d.join("ref.sock");
        let conf = d.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "instance_name = dict-rs-ref-{id}\nbase_dir = {dir}/run\nstate_dir = {dir}/state\nprotocols =\nssl = no\n\
                 log_path = {dir}/dovecot.log\ndefault_internal_user = dovecot\ndefault_internal_group = dovecot\n\
                 default_login_user = dovenull\nservice dict {{\n  unix_listener {sock} {{\n    mode = 0666\n  }}\n}}\n\
                 dict {{\n{dicts}\n}}\n",
                id = unique(""),
                dir = d.display(),
                sock = socket.display()
            ),
        )
        .unwrap();
        // The master daemonises: it must not inherit pipes we wait on.
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run dovecot");
        assert!(status.success(), "dovecot -c {} failed", conf.display());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "Dovecot's dict server did not start: {}",
                std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        DovecotDict { dir, conf, socket }
    }

    fn uri(&self, name: &str) -> String {
        format!("proxy:{}:{name}", self.socket.display())
    }
}

impl Drop for DovecotDict {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .status();
        let pid_file = self.dir.path().join("run/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn get(uri: &str, user: Option<&str>, key: &str) -> (i32, String) {
    let mut args = vec!["-f", "flow", "dict", "get"];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    args.extend([uri, key]);
    let r = doveadm(&args);
    (r.code, r.stdout)
}

fn set(uri: &str, user: Option<&str>, key: &str, value: &str) {
    let mut args = vec!["dict", "set"];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    args.extend([uri, key, value]);
    let r = doveadm(&args);
    assert_eq!(r.code, 0, "set {key} via {uri}: {r:?}");
}

/// Each side writes, the other reads: priv/ keys of a plain user and of users whose names
/// need Redis escaping, shared/ keys, values with TAB.
fn both_ways(ours: &str, theirs: &str, users: &[&str], shared: &str) {
    for (writer, reader) in [(theirs, ours), (ours, theirs)] {
        for (i, user) in users.iter().enumerate() {
            let value = format!("{}{i}", if writer == ours { 7000 } else { 9000 });
            set(writer, Some(user), "priv/quota/storage", &value);
            assert_eq!(
                get(reader, Some(user), "priv/quota/storage"),
                (0, format!("{value}\n")),
                "user {user:?}"
            );
        }
        let value = format!("v\t{}", if writer == ours { "ours" } else { "theirs" });
        set(writer, None, shared, &value);
        assert_eq!(get(reader, None, shared), (0, format!("{value}\n")));
    }
}

#[test]
fn redis_data_is_shared_with_dovecots_redis_dict() {
    let prefix = unique("compat") + "/";
    let params = format!(
        "redis:host={}:port={}:prefix={prefix}",
        service_env("DICT_TEST_REDIS_HOST"),
        service_env("DICT_TEST_REDIS_PORT")
    );
    let theirs = DovecotDict::start(&format!("  r = {params}"));
    let ours = DictServer::start_with_dict(Backend::Redis, "r", &params);
    let alice = unique("alice");
    let slashed = format!("{}/a\\b", unique("user"));
    let backslash = format!("{}\\er", unique("us"));
    both_ways(
        &ours.uri(),
        &theirs.uri("r"),
        &[&alice, &slashed, &backslash],
        "shared/kv/x/y",
    );
    // The key names Dovecot documents: the user escaped only when it holds a '/'.
    let escaped = slashed.replace('\\', "\\\\").replace('/', "\\-");
    assert!(dict_tests::redis_get(&format!("{prefix}{escaped}/quota/storage")).starts_with('"'));
    assert!(dict_tests::redis_get(&format!("{prefix}{backslash}/quota/storage")).starts_with('"'));
}

#[test]
fn sqlite_rows_are_shared_with_dovecots_sql_dict() {
    let ours = DictServer::start(Backend::Sqlite, "sq");
    let db = ours.sqlite_db.clone().expect("sqlite file");
    // Dovecot's dict process runs as the dovecot user and writes journal files next to the db.
    let dir = db.parent().unwrap();
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg("dovecot:dovecot")
            .arg(dir),
    );
    run_ok(Command::new("chmod").arg("0755").arg(dir.parent().unwrap()));
    let map = dir.join("theirs.conf.ext");
    std::fs::write(&map, format!("connect = {}\n{MAPS}", db.display())).unwrap();
    let theirs = DovecotDict::start(&format!("  sq = sqlite:{}", map.display()));
    let alice = unique("alice");
    let bob = unique("bob");
    both_ways(
        &ours.uri(),
        &theirs.uri("sq"),
        &[&alice, &bob],
        &format!("shared/kv/{}/n", unique("s")),
    );
    assert_rows(&db, &alice);
}

fn assert_rows(db: &Path, user: &str) {
    let out = run_ok(
        Command::new("sqlite3")
            .arg(db)
            .arg(format!("SELECT bytes FROM quota WHERE username = '{user}'")),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "70000");
}
