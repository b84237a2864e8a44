//! The real Dovecot 2.4 (Debian 13's 2.4.1, in a chroot that `tests/scripts/dovecot24-chroot.sh`
//! builds once and caches) against our server configured in 2.4 syntax:
//!
//! * the 2.4 `doveadm dict` (get/set/unset/inc/iter, `-e` expiry, `-t` timestamp), with the
//!   host's 2.3 `doveadm dict` on the same socket at the same time;
//! * the 2.4 quota_clone plugin with `quota_clone_unset = yes` and `= no`: the quota row
//!   holds exactly what Dovecot reports after every step;
//! * raw protocol-4 bytes to Dovecot 2.4's own dict server and to ours, both on the same 2.4
//!   config (SQLite and Redis): the same replies and the same rows;
//! * `dict-server convert` output accepted by the real 2.4 `doveconf` (and its 2.3 output by
//!   the host's 2.3 `doveconf`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dict_tests::raw_cases::{self, raw_exchange, RAW_CASES};
use dict_tests::{
    doveadm, output_with_stdin, repo_dir, run_ok, server_binary, service_env, unique, Backend,
    DictServer, Doveadm, MAPS24,
};

/// The chroot, built (or found in the cache) once per test process.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_dir().join("tests/scripts/dovecot24-chroot.sh"))
            .arg("setup")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run dovecot24-chroot.sh");
        assert!(
            out.status.success(),
            "tests/scripts/dovecot24-chroot.sh setup failed (it needs root and Debian's package mirror)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A directory inside the chroot: `host` seen from here, `inside` seen from the chroot.
struct Area {
    dir: tempfile::TempDir,
    inside: PathBuf,
}

impl Area {
    fn new() -> Area {
        let tmp = root().join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("dict-rs-")
            .tempdir_in(&tmp)
            .unwrap();
        // mail processes run as nobody and must reach the socket
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
        Area { dir, inside }
    }

    fn host(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` inside the chroot.
    fn at(&self, name: &str) -> String {
        self.inside.join(name).display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.host().join(name), text).unwrap();
        self.at(name)
    }
}

/// A 2.4 client (and mail) configuration whose dicts go to `socket` (inside path).
fn client_conf(area: &Area, socket: &str, dict: &str) -> String {
    let dir = area.inside.display();
    let text = format!(
        "dovecot_config_version = 2.4.1\ndovecot_storage_version = 2.4.1\n\
         instance_name = {name}\nbase_dir = {dir}/run\nstate_dir = {dir}/state\n\
         log_path = {dir}/dovecot.log\nprotocols =\nlisten = 127.0.0.1\n\
         mail_attribute {{\n  dict proxy {{\n    dict_proxy_socket_path = {socket}\n    dict_proxy_name = {dict}\n  }}\n}}\n\
         quota_clone {{\n  dict proxy {{\n    dict_proxy_socket_path = {socket}\n    dict_proxy_name = {dict}\n  }}\n}}\n\
         first_valid_uid = 1\nmail_driver = maildir\nmail_home = {dir}/mail/%{{user}}\nmail_path = ~/Maildir\n\
         passdb passwd-file {{\n  passwd_file_path = {dir}/users\n}}\nuserdb passwd-file {{\n  passwd_file_path = {dir}/users\n}}\n\
         mail_plugins {{\n  quota = yes\n  quota_clone = yes\n}}\nquota \"User quota\" {{\n  driver = count\n}}\n\
         quota_clone_unset = yes\n",
        name = area.host().file_name().unwrap().to_string_lossy(),
    );
    area.write("client.conf", &text)
}

/// `doveadm` of Dovecot 2.4 (in the chroot) with `conf` (inside path).
fn doveadm24(conf: &str, args: &[&str], stdin: Option<&str>) -> Doveadm {
    let mut cmd = Command::new("chroot");
    cmd.arg(root())
        .arg("doveadm")
        .arg("-c")
        .arg(conf)
        .args(args);
    let out = output_with_stdin(&mut cmd, stdin.map(str::as_bytes));
    Doveadm {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A map with Dovecot 2.4's `expire_field`, added to the served dict.
const EXPIRE_MAP: &str = r#"
    dict_map shared/exp/$name {
      sql_table = kvexp
      expire_field = expires
      value_field value {
      }
      key_field name {
        value = $name
      }
    }
"#;

/// Our server on SQLite, configured in 2.4 syntax, with its socket inside the chroot.
fn start_server(area: &Area) -> DictServer {
    let dir = tempfile::Builder::new()
        .prefix("srv-")
        .tempdir_in(area.host())
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let server = DictServer::start24_in(dir, Backend::Sqlite, "quota", EXPIRE_MAP);
    server.sql("CREATE TABLE kvexp (name TEXT NOT NULL PRIMARY KEY, value TEXT, expires INTEGER)");
    server
}

/// The server's socket as the chroot sees it.
fn socket_inside(server: &DictServer) -> String {
    let rel = server.socket.strip_prefix(root()).unwrap();
    Path::new("/").join(rel).display().to_string()
}

#[test]
fn doveadm_24_and_23_share_our_server() {
    let area = Area::new();
    let server = start_server(&area);
    let conf = client_conf(&area, &socket_inside(&server), "quota");
    let d24 = |args: &[&str]| doveadm24(&conf, args, None);
    let uri = server.uri();
    let d23 = |args: &[&str]| doveadm(args);
    let ok = |r: Doveadm| {
        assert_eq!(r.code, 0, "{r:?}\n{}", server.log());
        r.stdout
    };
    const F: &str = "mail_attribute";

    // set / get / unset / not found
    ok(d24(&["dict", "set", F, "shared/kv/s/a", "hello"]));
    assert_eq!(
        ok(d24(&["-f", "flow", "dict", "get", F, "shared/kv/s/a"])),
        "hello\n"
    );
    let r = d24(&["dict", "get", F, "shared/kv/s/missing"]);
    assert_eq!(r.code, 68, "{r:?}");
    ok(d24(&["dict", "unset", F, "shared/kv/s/a"]));
    assert_eq!(d24(&["dict", "get", F, "shared/kv/s/a"]).code, 68);

    // priv keys, inc, inc on a missing row
    ok(d24(&[
        "dict",
        "set",
        "-u",
        "alice",
        F,
        "priv/quota/storage",
        "1000",
    ]));
    ok(d24(&[
        "dict",
        "inc",
        "-u",
        "alice",
        F,
        "priv/quota/storage",
        "24",
    ]));
    ok(d24(&[
        "dict",
        "inc",
        "-u",
        "alice",
        F,
        "priv/quota/storage",
        "--",
        "-4",
    ]));
    assert_eq!(
        ok(d24(&[
            "-f",
            "flow",
            "dict",
            "get",
            "-u",
            "alice",
            F,
            "priv/quota/storage"
        ])),
        "1020\n"
    );
    assert_eq!(
        d24(&["dict", "inc", "-u", "nobody", F, "priv/quota/messages", "1"]).code,
        68
    );

    // iteration: one level, recursive, exact, keys only
    for (k, v) in [("b", "bee"), ("c", "sea")] {
        ok(d24(&["dict", "set", F, &format!("shared/kv/s/{k}"), v]));
    }
    ok(d24(&["dict", "set", F, "shared/kv/t/d", "dee"]));
    let rows = |out: String| {
        let mut v: Vec<String> = out.lines().skip(1).map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(
        rows(ok(d24(&["dict", "iter", F, "shared/kv/s/"]))),
        ["shared/kv/s/b\tbee", "shared/kv/s/c\tsea"]
    );
    assert_eq!(
        rows(ok(d24(&["dict", "iter", "-R", F, "shared/kv/"]))),
        [
            "shared/kv/s/b\tbee",
            "shared/kv/s/c\tsea",
            "shared/kv/t/d\tdee"
        ]
    );
    assert_eq!(
        rows(ok(d24(&["dict", "iter", "-V", F, "shared/kv/s/"]))),
        ["shared/kv/s/b", "shared/kv/s/c"]
    );
    assert_eq!(
        rows(ok(d24(&["dict", "iter", "-1", F, "shared/kv/s/b"]))),
        ["shared/kv/s/b\tbee"]
    );

    // -t (T command) is accepted, the value written
    ok(d24(&[
        "dict",
        "set",
        "-t",
        "1700000000123456789",
        F,
        "shared/kv/s/ts",
        "v-ts",
    ]));
    assert_eq!(
        ok(d24(&["-f", "flow", "dict", "get", F, "shared/kv/s/ts"])),
        "v-ts\n"
    );

    // -e (B's expire_secs): stored as now + secs; an expired row is gone for 2.4 and 2.3
    ok(d24(&[
        "dict",
        "set",
        "-e",
        "3600",
        F,
        "shared/exp/long",
        "stays",
    ]));
    let at: i64 = server
        .sql("SELECT expires FROM kvexp WHERE name = 'long'")
        .parse()
        .unwrap();
    assert!((now() + 3590..=now() + 3601).contains(&at), "expires {at}");
    ok(d24(&[
        "dict",
        "set",
        "-e",
        "1",
        F,
        "shared/exp/short",
        "goes",
    ]));
    ok(d24(&["dict", "set", F, "shared/exp/forever", "no expiry"]));
    assert_eq!(
        server.sql("SELECT expires IS NULL FROM kvexp WHERE name = 'forever'"),
        "1"
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(d24(&["dict", "get", F, "shared/exp/short"]).code, 68);
    assert_eq!(d23(&["dict", "get", &uri, "shared/exp/short"]).code, 68);
    assert_eq!(
        rows(ok(d24(&["dict", "iter", F, "shared/exp/"]))),
        ["shared/exp/forever\tno expiry", "shared/exp/long\tstays"]
    );

    // 2.3 and 2.4 clients see each other's writes
    let r = d23(&["-f", "flow", "dict", "get", &uri, "shared/kv/s/b"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "bee\n"), "{r:?}");
    assert_eq!(
        d23(&["dict", "set", &uri, "shared/kv/s/from23", "x"]).code,
        0
    );
    assert_eq!(
        ok(d24(&["-f", "flow", "dict", "get", F, "shared/kv/s/from23"])),
        "x\n"
    );

    // both at the same time on the same socket
    std::thread::scope(|s| {
        let t24 = s.spawn(|| {
            for i in 0..12 {
                let k = format!("shared/kv/p24/k{i}");
                ok(d24(&["dict", "set", F, &k, &i.to_string()]));
                assert_eq!(
                    ok(d24(&["-f", "flow", "dict", "get", F, &k])),
                    format!("{i}\n")
                );
            }
        });
        let t23 = s.spawn(|| {
            for i in 0..12 {
                let k = format!("shared/kv/p23/k{i}");
                ok(d23(&["dict", "set", &uri, &k, &i.to_string()]));
                assert_eq!(
                    ok(d23(&["-f", "flow", "dict", "get", &uri, &k])),
                    format!("{i}\n")
                );
            }
        });
        t24.join().unwrap();
        t23.join().unwrap();
    });
    assert_eq!(
        server.sql("SELECT count(*) FROM kv WHERE scope IN ('p23', 'p24')"),
        "24"
    );
}

/// A private Dovecot 2.4 instance (auth only) in the chroot for `doveadm save` & co.
struct Mail<'a> {
    area: &'a Area,
    conf: String,
}

impl Drop for Mail<'_> {
    fn drop(&mut self) {
        let pidfile = self.area.host().join("run/master.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap_or(0));
            if pid.as_raw() > 0 {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                for _ in 0..100 {
                    if nix::sys::signal::kill(pid, None).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl<'a> Mail<'a> {
    fn start(area: &'a Area, socket: &str) -> Mail<'a> {
        let conf = client_conf(area, socket, "quota");
        std::fs::write(
            area.host().join("users"),
            format!(
                "alice:{{PLAIN}}secret:65534:65534::{}/mail/alice::\n",
                area.inside.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(area.host().join("mail")).unwrap();
        run_ok(
            Command::new("chroot")
                .arg(root())
                .arg("chown")
                .arg("nobody:nogroup")
                .arg(area.at("mail")),
        );
        // Not run_ok: the daemonised master keeps captured stdout/stderr pipes open.
        let status = Command::new("chroot")
            .arg(root())
            .args(["dovecot", "-c", &conf])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "dovecot 2.4 did not start: {}",
            area.host().display()
        );
        let sock = area.host().join("run/auth-userdb");
        for _ in 0..200 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Mail { area, conf }
    }

    fn doveadm(&self, args: &[&str], stdin: Option<&str>) -> String {
        let r = doveadm24(&self.conf, args, stdin);
        assert_eq!(r.code, 0, "doveadm {args:?}: {r:?}\n{}", self.log());
        r.stdout
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.area.host().join("dovecot.log")).unwrap_or_default()
    }

    /// (vsize, messages) of alice's INBOX as Dovecot sees it.
    fn usage(&self) -> (u64, u64) {
        let out = self.doveadm(
            &[
                "-f",
                "tab",
                "mailbox",
                "status",
                "-u",
                "alice",
                "vsize messages",
                "INBOX",
            ],
            None,
        );
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let row: Vec<&str> = lines.last().unwrap().split('\t').collect();
        let field = |name: &str| -> u64 {
            let i = header.iter().position(|h| *h == name).unwrap();
            row[i].trim().parse().unwrap()
        };
        (field("vsize"), field("messages"))
    }
}

fn message(n: usize) -> String {
    let mut m = format!(
        "From: a@example.test\r\nTo: alice\r\nSubject: {n}\r\nMessage-ID: <q24-{n}>\r\n\r\n"
    );
    for i in 0..n * 10 {
        m.push_str(&format!("line {i:04} of message {n}\r\n"));
    }
    m
}

#[test]
fn quota_clone_24_both_unset_settings() {
    let area = Area::new();
    let server = start_server(&area);
    let mail = Mail::start(&area, &socket_inside(&server));
    let uri = server.uri();
    let check = |step: &str| {
        let (bytes, messages) = mail.usage();
        assert_eq!(
            server.sql("SELECT bytes, messages FROM quota WHERE username = 'alice'"),
            format!("{bytes}\t{messages}"),
            "{step}\n{}\n{}",
            server.log(),
            mail.log()
        );
        let got = doveadm(&[
            "-f",
            "flow",
            "dict",
            "get",
            "-u",
            "alice",
            &uri,
            "priv/quota/storage",
        ]);
        assert_eq!(
            got.stdout.trim(),
            bytes.to_string(),
            "{step}: 2.3 lookup of storage"
        );
    };
    // a 2.3 client keeps reading the same socket meanwhile
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = doveadm(&["dict", "get", "-u", "alice", &uri, "priv/quota/messages"]);
                assert!(r.code == 0 || r.code == 68, "{r:?}");
                n += 1;
            }
            n
        });
        // quota_clone_unset = yes: U storage, S storage, U messages, S messages in one batch
        mail.doveadm(&["save", "-u", "alice"], Some(&message(1)));
        check("unset=yes, first save");
        mail.doveadm(&["save", "-u", "alice"], Some(&message(2)));
        check("unset=yes, second save");
        // quota_clone_unset = no: only the two S lines
        mail.doveadm(
            &["-o", "quota_clone_unset=no", "save", "-u", "alice"],
            Some(&message(3)),
        );
        check("unset=no");
        mail.doveadm(
            &["expunge", "-u", "alice", "mailbox", "INBOX", "uid", "1"],
            None,
        );
        check("unset=yes, expunge");
        mail.doveadm(
            &[
                "-o",
                "quota_clone_unset=no",
                "expunge",
                "-u",
                "alice",
                "mailbox",
                "INBOX",
                "all",
            ],
            None,
        );
        check("unset=no, expunge all");
        assert_eq!(mail.usage(), (0, 0));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}

#[test]
fn converted_configs_are_accepted_by_real_doveconf() {
    let area = Area::new();
    let h = area.host().display().to_string();
    std::fs::write(
        area.host().join("sql.conf.ext"),
        format!("connect = {h}/q.db\n{}", dict_tests::MAPS),
    )
    .unwrap();
    std::fs::write(
        area.host().join("my.conf.ext"),
        format!(
            "connect = host=127.0.0.1 port=3306 dbname=mail user=dovecot password=pw maxconns=4\n{}",
            dict_tests::MAPS
        ),
    )
    .unwrap();
    std::fs::write(
        area.host().join("pg.conf.ext"),
        format!(
            "connect = host=localhost dbname=mail user=dovecot\n{}",
            dict_tests::MAPS
        ),
    )
    .unwrap();
    let conf23 = area.host().join("dovecot23.conf");
    std::fs::write(
        &conf23,
        format!(
            "base_dir = {h}/run\nservice dict {{\n  unix_listener dict {{\n    mode = 0660\n    group = dovecot\n  }}\n}}\n\
             dict {{\n  quota = sqlite:{h}/sql.conf.ext\n  my = mysql:{h}/my.conf.ext\n  pg = pgsql:{h}/pg.conf.ext\n\
             rd = redis:host=127.0.0.1:prefix=dict/:expire_secs=60\n}}\n"
        ),
    )
    .unwrap();
    let out = run_ok(
        Command::new(server_binary())
            .arg("convert")
            .arg("--dovecot-config")
            .arg(&conf23),
    );
    let text24 = String::from_utf8(out.stdout).unwrap();
    area.write("converted24.conf", &text24);
    // what the real 2.4 needs besides the dict server part (dovecot_config_version must
    // stay the first setting, so no !include)
    let wrapper = area.write(
        "check24.conf",
        &format!(
            "{text24}dovecot_storage_version = 2.4.1\nprotocols =\nlisten = 127.0.0.1\nstate_dir = {}\n",
            area.at("state")
        ),
    );
    let out = Command::new("chroot")
        .arg(root())
        .args(["doveconf", "-c", &wrapper, "-n"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doveconf 2.4 refused:\n{}\n{text24}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "dict_server {",
        "dict quota {",
        "dict_map priv/quota/storage {",
        "mysql 127.0.0.1 {",
        "pgsql localhost {",
        "redis_key_prefix = dict/",
    ] {
        assert!(
            shown.contains(needle),
            "{needle} missing in doveconf -n:\n{shown}"
        );
    }

    // and back: 2.4 -> 2.3 files, accepted by the host's Dovecot 2.3 doveconf
    let back = area.host().join("back");
    run_ok(
        Command::new(server_binary())
            .arg("convert")
            .arg("--dovecot-config")
            .arg(area.host().join("converted24.conf"))
            .arg("--out-dir")
            .arg(&back),
    );
    let conf = std::fs::read_to_string(back.join("dovecot-dict23.conf")).unwrap();
    std::fs::write(
        back.join("check23.conf"),
        format!("{conf}protocols =\nstate_dir = {}/state\n", back.display()),
    )
    .unwrap();
    let out = Command::new("doveconf")
        .arg("-c")
        .arg(back.join("check23.conf"))
        .arg("-n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doveconf 2.3 refused: {}\n{conf}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map = std::fs::read_to_string(back.join("dovecot-dict-sql-quota.conf.ext")).unwrap();
    assert!(map.starts_with(&format!("connect = {h}/q.db\n")), "{map}");
}

/// Dovecot 2.4's own dict server (a dict-only instance in the chroot) with one SQLite dict
/// `sq` and one Redis dict `r`, configured in 2.4 syntax; stopped when dropped.
struct Dovecot24Dict {
    area: Area,
    conf: String,
    socket: PathBuf,
}

/// A dict-only 2.4 config: `sq` on the SQLite file `db`, `r` under `redis_prefix`, the
/// dict socket at `socket` (paths as the reading process sees them).
fn dict_server_conf24(base: &str, socket: &str, db: &str, redis_prefix: &str) -> String {
    format!(
        "dovecot_config_version = 2.4.1\ndovecot_storage_version = 2.4.1\n\
         instance_name = {name}\nbase_dir = {base}/run\nstate_dir = {base}/state\n\
         log_path = {base}/dovecot.log\nprotocols =\n\
         service dict {{\n  unix_listener {socket} {{\n    mode = 0666\n  }}\n}}\n\
         dict_server {{\n  dict sq {{\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = {db}\n{MAPS24}  }}\n\
         \x20 dict r {{\n    driver = redis\n    redis_host = {host}\n    redis_port = {port}\n    redis_key_prefix = {redis_prefix}\n  }}\n}}\n",
        name = unique("dict-rs-ref24-"),
        host = service_env("DICT_TEST_REDIS_HOST"),
        port = service_env("DICT_TEST_REDIS_PORT"),
    )
}

impl Dovecot24Dict {
    fn start(db: &str, redis_prefix: &str) -> Dovecot24Dict {
        let area = Area::new();
        let socket = area.at("ref.sock");
        let conf = area.write(
            "dovecot.conf",
            &dict_server_conf24(
                &area.inside.display().to_string(),
                &socket,
                db,
                redis_prefix,
            ),
        );
        let status = Command::new("chroot")
            .arg(root())
            .args(["dovecot", "-c", &conf])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dovecot 2.4 -c {conf} did not start");
        let socket = area.host().join("ref.sock");
        let dict = Dovecot24Dict { area, conf, socket };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&dict.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "Dovecot 2.4's dict server did not listen: {}",
                dict.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        dict
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.area.host().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot24Dict {
    fn drop(&mut self) {
        let _ = doveadm24(&self.conf, &["stop"], None);
        let pid_file = self.area.host().join("run/master.pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        // still there: the master by its pid file
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// One side's store: a SQLite file of the fixtures' schema and a Redis prefix.
struct Store {
    db: PathBuf,
    redis_prefix: String,
}

impl Store {
    fn new(db: PathBuf) -> Store {
        let schema =
            std::fs::File::open(repo_dir().join("tests/fixtures/schema-sqlite.sql")).unwrap();
        run_ok(Command::new("sqlite3").arg(&db).stdin(schema));
        Store {
            db,
            redis_prefix: unique("raw24-") + "/",
        }
    }

    fn wipe(&self, dict: &str) {
        if dict == "r" {
            return raw_cases::redis_wipe(&self.redis_prefix);
        }
        for t in ["quota", "kv", "userkv", "bench"] {
            dict_tests::sql_query(Backend::Sqlite, Some(&self.db), &format!("DELETE FROM {t}"));
        }
    }

    fn dump(&self, dict: &str) -> String {
        match dict {
            "r" => raw_cases::redis_dump(&self.redis_prefix),
            _ => raw_cases::sqlite_dump(&self.db),
        }
    }
}

/// Issue reproductions in raw protocol-4 bytes (`H4\t2\t0\t\t<dict>`), each to Dovecot
/// 2.4.1's own dict server and to ours, both configured with the same 2.4 dict_server
/// block on stores of their own (two SQLite files of one schema, two Redis prefixes): the
/// same replies (timing fields aside) and the same rows (SQLite: storage class and hex;
/// Redis: keys and values under the prefix).
#[test]
fn raw_protocol4_bytes_get_dovecot24s_replies_and_rows() {
    let theirs_dir = Area::new();
    let theirs_store = Store::new(theirs_dir.host().join("theirs.db"));
    // the dict process runs as the chroot's dovecot user and writes the journal next to it
    run_ok(
        Command::new("chroot")
            .arg(root())
            .args(["chown", "-R", "dovecot:dovecot"])
            .arg(&theirs_dir.inside),
    );
    let theirs = Dovecot24Dict::start(&theirs_dir.at("theirs.db"), &theirs_store.redis_prefix);
    let ours_dir = tempfile::Builder::new()
        .prefix("ours24-")
        .tempdir_in(dict_tests::scratch())
        .unwrap();
    let ours_store = Store::new(ours_dir.path().join("ours.db"));
    let base = ours_dir.path().display().to_string();
    let conf = dict_server_conf24(
        &base,
        &format!("{base}/dict.sock"),
        &ours_store.db.display().to_string(),
        &ours_store.redis_prefix,
    );
    let ours = DictServer::start24_config(ours_dir, &conf, "sq", Backend::Sqlite);
    let sides = [
        ("Dovecot 2.4", &theirs.socket, &theirs_store),
        ("ours", &ours.socket, &ours_store),
    ];
    let hello = |dict: &str| format!("H4\t2\t0\t\t{dict}");

    let mut compared = 0;
    for case in RAW_CASES {
        for dict in case.dicts.iter().filter(|d| ["sq", "r"].contains(d)) {
            let mut seen = Vec::new();
            for (_, socket, store) in sides {
                store.wipe(dict);
                if *dict == "sq" {
                    for sql in case.setup {
                        dict_tests::sql_query(
                            Backend::Sqlite,
                            Some(&store.db),
                            &sql.replace("{p}", ""),
                        );
                    }
                }
                let replies = raw_exchange(socket, &hello(dict), case.lines);
                seen.push((replies, store.dump(dict)));
            }
            assert_eq!(
                seen[1],
                seen[0],
                "{dict}: {}: ours (left) vs Dovecot 2.4 (right)\n{}",
                case.what,
                theirs.log()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 8, "cases compared");

    // A read sent before a commit in the same write answers what was there before it.
    let ordered: [&[u8]; 5] = [
        b"Lshared/kv/x/none\t",
        b"Lshared/kv/x/a\t",
        b"B1\t",
        b"S1\tshared/kv/x/a\tnew",
        b"C1",
    ];
    let alpha: [&[u8]; 3] = [b"B1\t", b"S1\tshared/kv/x/a\talpha", b"C1"];
    for dict in ["sq", "r"] {
        let mut seen = Vec::new();
        for (side, socket, store) in sides {
            store.wipe(dict);
            // many rounds: the fault this guards against was a race
            for round in 0..10 {
                raw_exchange(socket, &hello(dict), &alpha);
                let got = raw_cases::one_write_exchange(socket, &hello(dict), &ordered, 3);
                assert_eq!(
                    got,
                    ["+1\\tN", "+2\\tOalpha", "+3\\tO1"],
                    "{side} {dict} round {round}: read before commit\n{}",
                    theirs.log()
                );
            }
            seen.push(store.dump(dict));
        }
        assert!(
            seen[0].contains("6E6577") || seen[0].contains("\"new\""),
            "{seen:?}"
        );
        assert_eq!(
            seen[1], seen[0],
            "{dict}: rows after the read-before-commit"
        );
    }
    for (_, _, store) in sides {
        store.wipe("r");
        assert_eq!(
            store.dump("r"),
            "",
            "Redis keys left under {}",
            store.redis_prefix
        );
    }
}
