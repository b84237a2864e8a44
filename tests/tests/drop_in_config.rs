//! Configurations a new admin drops in: the sockets get the mode and owner Dovecot would
//! give them (compared with a private Dovecot instance's own), `--listen` keeps a
//! configured listener's, and a `file:` dict shares its file with Dovecot's own dict server
//! (both driven by the real `doveadm dict`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dict_tests::{doveadm, readable_dir, run_ok, server_binary, unique, DovecotInstance};

/// Our server, started with `args`, waited for on `socket`, killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, args: &[&str], socket: &Path) -> Server {
        let log = dir.join(format!("{}.log", unique("server")));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(server_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn dict-server");
        let mut server = Server { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dict-server exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "dict-server did not listen on {}: {}",
                socket.display(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dovecot.conf with a dict that is only connected to on first use, and `extra`.
fn dovecot_conf(dir: &Path, base_dir: &Path, extra: &str) -> PathBuf {
    dovecot_conf_with(dir, base_dir, extra, "")
}

/// [`dovecot_conf`] with more `name = uri` lines in its `dict { }`.
fn dovecot_conf_with(dir: &Path, base_dir: &Path, extra: &str, dicts: &str) -> PathBuf {
    let conf = dir.join(format!("{}.conf", unique("dovecot")));
    std::fs::write(
        &conf,
        format!(
            "instance_name = dict-rs-cfg-{id}\nbase_dir = {base}\nstate_dir = {dir}/state\n\
             protocols =\nssl = no\nlog_path = {dir}/dovecot.log\n{extra}\n\
             dict {{\n  cache = redis:host=127.0.0.1:port=1\n{dicts}\n}}\n",
            id = unique(""),
            base = base_dir.display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    conf
}

/// (mode, uid, gid) of a socket.
fn owner(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// The id of a user (`id -u`) or group (`getent group`).
fn uid(user: &str) -> u32 {
    let out = run_ok(Command::new("id").arg("-u").arg(user));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn gid(group: &str) -> u32 {
    let out = run_ok(Command::new("getent").arg("group").arg(group));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// True when the mail user (as quota_clone, METADATA and last_login run) can connect.
fn mail_user_connects(socket: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "mail", "--", "socat", "-u", "/dev/null"])
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .stderr(Stdio::null())
        .status()
        .expect("runuser socat")
        .success()
}

/// Dovecot's built-in `dict` listener is root:$default_internal_group 0660: ours too.
#[test]
fn builtin_dict_listener_is_dovecots() {
    let dir = readable_dir("cfg-");
    let theirs_base = dir.path().join("run-dovecot");
    let conf = dovecot_conf(dir.path(), &theirs_base, "");
    let theirs = {
        let _dovecot = DovecotInstance::start(
            &conf,
            &theirs_base,
            &theirs_base.join("dict"),
            &conf.with_file_name("dovecot.log"),
        );
        owner(&theirs_base.join("dict"))
    };
    assert_eq!(theirs, (0o660, 0, gid("dovecot")), "Dovecot's own socket");

    let ours_base = dir.path().join("run-ours");
    let conf = dovecot_conf(dir.path(), &ours_base, "");
    let socket = ours_base.join("dict");
    let _server = Server::start(
        dir.path(),
        &["--dovecot-config", conf.to_str().unwrap()],
        &socket,
    );
    assert_eq!(owner(&socket), theirs);

    // default_internal_group is followed, as Dovecot does
    let conf = dovecot_conf(
        dir.path(),
        &dir.path().join("run-mail"),
        "default_internal_group = mail",
    );
    let socket = dir.path().join("run-mail/dict");
    let _server = Server::start(
        dir.path(),
        &["--dovecot-config", conf.to_str().unwrap()],
        &socket,
    );
    assert_eq!(owner(&socket), (0o660, 0, gid("mail")));
    assert!(mail_user_connects(&socket));
}

/// `--listen` on the path of a configured listener keeps its mode and owner, so the mail
/// user's processes can still connect.
#[test]
fn listen_on_a_configured_path_keeps_its_owner() {
    let dir = readable_dir("cfg-");
    let base = dir.path().join("run");
    let conf = dovecot_conf(
        dir.path(),
        &base,
        "service dict {\n  unix_listener dict {\n    mode = 0600\n    user = mail\n  }\n}\n",
    );
    let socket = base.join("dict");
    let _server = Server::start(
        dir.path(),
        &[
            "--dovecot-config",
            conf.to_str().unwrap(),
            "--listen",
            socket.to_str().unwrap(),
        ],
        &socket,
    );
    assert_eq!(owner(&socket), (0o600, uid("mail"), gid("dovecot")));
    assert!(mail_user_connects(&socket));
}

/// `--listen` elsewhere: `--listen-mode/-user/-group` decide; without them the first
/// configured listener's settings are used.
#[test]
fn listen_elsewhere_takes_the_listen_options() {
    let dir = readable_dir("cfg-");
    let conf = dovecot_conf(dir.path(), &dir.path().join("run"), "");
    let socket = dir.path().join("other.sock");
    let server = Server::start(
        dir.path(),
        &[
            "--dovecot-config",
            conf.to_str().unwrap(),
            "--listen",
            socket.to_str().unwrap(),
            "--listen-mode",
            "0606",
            "--listen-user",
            "mail",
            "--listen-group",
            "mail",
        ],
        &socket,
    );
    assert_eq!(owner(&socket), (0o606, uid("mail"), gid("mail")));
    assert!(mail_user_connects(&socket));
    drop(server);

    let _server = Server::start(
        dir.path(),
        &[
            "--dovecot-config",
            conf.to_str().unwrap(),
            "--listen",
            socket.to_str().unwrap(),
            "--listen-mode",
            "0600",
        ],
        &socket,
    );
    assert_eq!(owner(&socket), (0o600, 0, gid("dovecot")));
    assert!(!mail_user_connects(&socket));

    let out = Command::new(server_binary())
        .args(["--listen-mode", "0660", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--listen-mode needs --listen");
    let out = Command::new(server_binary())
        .args(["--listen", "/x", "--listen-mode", "rw", "check"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid mode 'rw'"),
        "{out:?}"
    );
}

// ------------------------------------------------------------- file: dict ---

/// Dovecot's dict server and ours serving dict `f` from the same `file:` dict.
struct SharedFile {
    file: PathBuf,
    theirs: String,
    ours: String,
    _ours: Server,
    _dovecot: DovecotInstance,
    _dir: tempfile::TempDir,
}

impl SharedFile {
    /// `params`: what follows the path in the URI (`""`, `":lock=fcntl"`).
    fn start(params: &str) -> SharedFile {
        let dir = readable_dir("cfg-");
        // Dovecot's dict processes run as dovecot: the file's directory is theirs.
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        run_ok(Command::new("chown").arg("dovecot:dovecot").arg(&data));
        let file = data.join("dict.txt");
        let theirs_sock = dir.path().join("theirs.sock");
        let base = dir.path().join("run");
        let conf = dovecot_conf_with(
            dir.path(),
            &base,
            &format!(
                "service dict {{\n  unix_listener {} {{\n    mode = 0666\n  }}\n}}\n",
                theirs_sock.display()
            ),
            &format!("  f = file:{}{params}", file.display()),
        );
        let dovecot = DovecotInstance::start(
            &conf,
            &base,
            &theirs_sock,
            &conf.with_file_name("dovecot.log"),
        );
        let ours_sock = dir.path().join("ours.sock");
        let ours = Server::start(
            dir.path(),
            &[
                "--dovecot-config",
                conf.to_str().unwrap(),
                "--listen",
                ours_sock.to_str().unwrap(),
            ],
            &ours_sock,
        );
        SharedFile {
            file,
            theirs: format!("proxy:{}:f", theirs_sock.display()),
            ours: format!("proxy:{}:f", ours_sock.display()),
            _ours: ours,
            _dovecot: dovecot,
            _dir: dir,
        }
    }
}

/// `doveadm dict <args>`, which must succeed; its output.
fn dict_ok(args: &[&str]) -> String {
    let mut all = vec!["dict"];
    all.extend_from_slice(args);
    let r = doveadm(&all);
    assert_eq!(r.code, 0, "doveadm {all:?}: {r:?}");
    r.stdout
}

/// `doveadm dict get`: `Some(value)`, or `None` when the key doesn't exist.
fn dict_get(uri: &str, user: &str, key: &str) -> Option<String> {
    let r = doveadm(&["-f", "flow", "dict", "get", "-u", user, uri, key]);
    match r.code {
        0 => Some(r.stdout.trim_end_matches('\n').to_string()),
        68 if r.stderr.contains("doesn't exist") => None,
        _ => panic!("doveadm dict get {uri} {key}: {r:?}"),
    }
}

/// `doveadm dict iter -R`, lines sorted (Dovecot's order is its hash table's).
fn dict_iter(uri: &str, prefix: &str) -> Vec<String> {
    let out = dict_ok(&["iter", "-u", "anyone", "-R", uri, prefix]);
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Each side writes, the other reads, with every kind of change.
fn both_ways(f: &SharedFile) {
    for (writer, reader) in [(&f.theirs, &f.ours), (&f.ours, &f.theirs)] {
        let tag = if writer == &f.ours { "ours" } else { "theirs" };
        dict_ok(&[
            "set",
            "-u",
            "u1",
            writer,
            "shared/t/tab",
            &format!("{tag}\tvalue"),
        ]);
        dict_ok(&["set", "-u", "u1", writer, "priv/quota/storage", "1024"]);
        dict_ok(&["set", writer, "shared/t/n", "10"]);
        dict_ok(&["inc", writer, "shared/t/n", "--", "-3"]);
        dict_ok(&["set", writer, "shared/t/gone", "x"]);
        dict_ok(&["unset", writer, "shared/t/gone"]);
        assert_eq!(
            dict_get(reader, "u2", "shared/t/tab").as_deref(),
            Some(format!("{tag}\tvalue").as_str())
        );
        // a file dict has no per-user keys: u2 sees u1's priv/ key
        assert_eq!(
            dict_get(reader, "u2", "priv/quota/storage").as_deref(),
            Some("1024")
        );
        assert_eq!(dict_get(reader, "u1", "shared/t/n").as_deref(), Some("7"));
        assert_eq!(dict_get(reader, "u1", "shared/t/gone"), None);
        assert_eq!(
            dict_iter(reader, "shared/t/"),
            dict_iter(writer, "shared/t/")
        );
        assert_eq!(
            dict_iter(reader, "shared/t/"),
            [
                "key\tvalue".to_string(),
                "shared/t/n\t7".to_string(),
                format!("shared/t/tab\t{tag}\tvalue")
            ]
        );
    }
}

/// Both servers increment one key at the same time: with the locks taken the same way,
/// no increment is lost.
fn concurrent_increments(f: &SharedFile) {
    dict_ok(&["set", &f.theirs, "shared/count", "0"]);
    let rounds = 15;
    let workers: Vec<_> = [f.theirs.clone(), f.ours.clone()]
        .into_iter()
        .map(|uri| {
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    dict_ok(&["inc", &uri, "shared/count", "1"]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let total = (2 * rounds).to_string();
    assert_eq!(dict_get(&f.ours, "u", "shared/count"), Some(total.clone()));
    assert_eq!(dict_get(&f.theirs, "u", "shared/count"), Some(total));
}

#[test]
fn file_dict_is_shared_with_dovecot_dotlock() {
    let f = SharedFile::start("");
    both_ways(&f);
    concurrent_increments(&f);
    let text = std::fs::read(&f.file).unwrap();
    assert!(
        text.windows(12).any(|w| w == b"ours\x01tvalue\n"),
        "TAB escaped in the file: {}",
        String::from_utf8_lossy(&text)
    );
    assert!(!f.file.with_extension("txt.lock").exists());
}

#[test]
fn file_dict_is_shared_with_dovecot_fcntl() {
    let f = SharedFile::start(":lock=fcntl");
    both_ways(&f);
    concurrent_increments(&f);
}

// ------------------------------------------------------- unserved drivers ---

/// A `dict { }` entry with a driver we don't serve is left out with one warning; the other
/// dicts are served, and its clients get what Dovecot answers for a dict it doesn't have.
#[test]
fn unserved_drivers_are_left_out_with_a_warning() {
    let dir = readable_dir("cfg-");
    let dicts = format!(
        "  f = file:{}\n  people = ldap:/etc/dovecot/dovecot-ldap.conf.ext\n  blobs = fs:posix:prefix=/srv/x/",
        dir.path().join("d.txt").display()
    );
    let base = dir.path().join("run");
    let theirs_sock = dir.path().join("theirs.sock");
    let conf = dovecot_conf_with(
        dir.path(),
        &base,
        &format!(
            "service dict {{\n  unix_listener {} {{\n    mode = 0666\n  }}\n}}\n",
            theirs_sock.display()
        ),
        &dicts,
    );
    let ours_sock = dir.path().join("ours.sock");
    let server = Server::start(
        dir.path(),
        &[
            "--dovecot-config",
            conf.to_str().unwrap(),
            "--listen",
            ours_sock.to_str().unwrap(),
        ],
        &ours_sock,
    );
    let ours = |name: &str| format!("proxy:{}:{name}", ours_sock.display());
    dict_ok(&["set", &ours("f"), "shared/k", "v"]);
    assert_eq!(dict_get(&ours("f"), "u", "shared/k").as_deref(), Some("v"));

    // Dovecot's own answer for a dict name it doesn't have (only `f` and `cache` here)
    let plain = dovecot_conf_with(
        dir.path(),
        &base,
        &format!(
            "service dict {{\n  unix_listener {} {{\n    mode = 0666\n  }}\n}}\n",
            theirs_sock.display()
        ),
        &format!("  f = file:{}", dir.path().join("d.txt").display()),
    );
    let _dovecot = DovecotInstance::start(
        &plain,
        &base,
        &theirs_sock,
        &plain.with_file_name("dovecot.log"),
    );
    let theirs = doveadm(&[
        "dict",
        "get",
        &format!("proxy:{}:people", theirs_sock.display()),
        "shared/k",
    ]);
    let ours_reply = doveadm(&["dict", "get", &ours("people"), "shared/k"]);
    // Dovecot logs "Unconfigured dictionary name" and closes the connection.
    let dovecot_log = std::fs::read_to_string(dir.path().join("dovecot.log")).unwrap();
    assert!(
        dovecot_log.contains("Unconfigured dictionary name 'people'"),
        "{dovecot_log}"
    );
    let without_timing = |s: &str| s.split(" (reply took").next().unwrap_or("").to_string();
    // Dovecot closes at once, so doveadm sees either the end of the connection or a failed
    // write of its lookup, by timing; ours reads what the client sent first, so it is
    // always the former, which is Dovecot's usual answer.
    let closed = "Error: dict_lookup(shared/k) failed: Connection closed";
    let theirs_text = without_timing(&theirs.stderr);
    assert!(
        theirs_text == closed || theirs_text.ends_with("failed: Broken pipe"),
        "{theirs_text}"
    );
    assert_eq!(
        (ours_reply.code, without_timing(&ours_reply.stderr)),
        (theirs.code, closed.to_string())
    );

    let log = server.log();
    for (name, driver) in [("people", "ldap"), ("blobs", "fs")] {
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("dict '{name}'")) && l.contains("not served"))
            .collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
        assert!(
            warnings[0].contains(&format!("no '{driver}' driver")),
            "{}",
            warnings[0]
        );
    }

    // (the `cache` dict of `conf` is unreachable on purpose: not in the check's file)
    let check_conf = dir.path().join("check.conf");
    std::fs::write(&check_conf, format!("dict {{\n{dicts}\n}}\n")).unwrap();
    let check = Command::new(server_binary())
        .args(["--dovecot-config", check_conf.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
    );
    assert!(check.status.success(), "{out}{err}");
    assert!(
        out.contains("dict people = ldap:/etc/dovecot/dovecot-ldap.conf.ext")
            && out.contains("  NOT SERVED")
            && out.contains("check passed: 1 dict(s); not served: people, blobs"),
        "{out}"
    );
    assert!(
        err.contains(
            "dict-server: check: warning: dict 'people': not served: dict-rs has no 'ldap' driver"
        ),
        "{err}"
    );

    // nothing left to serve: an error, not a server that answers nothing
    let only_ldap = dir.path().join("only-ldap.conf");
    std::fs::write(&only_ldap, "dict {\n  people = ldap:/etc/x\n}\n").unwrap();
    let check = Command::new(server_binary())
        .args(["--dovecot-config", only_ldap.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("none of the dicts can be served"));
    let start = Command::new(server_binary())
        .args(["--dovecot-config", only_ldap.to_str().unwrap(), "--listen"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert!(!start.status.success());
    assert!(
        String::from_utf8_lossy(&start.stderr)
            .contains("none of the configured dicts can be served"),
        "{start:?}"
    );
}

// ---------------------------------------------------------------- data_dir ---

/// The TOML `data_dir` is where the embedded default lives when no dict is configured;
/// with dicts configured it would mean nothing, so it is an error naming its line.
#[test]
fn toml_data_dir_is_the_embedded_defaults_home() {
    let dir = readable_dir("cfg-");
    let socket = dir.path().join("embedded.sock");
    let toml = dir.path().join("dict-rs.toml");
    std::fs::write(
        &toml,
        format!(
            "data_dir = \"state\"\n[listener]\npath = \"{}\"\nmode = \"0666\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let _server = Server::start(dir.path(), &["--config", toml.to_str().unwrap()], &socket);
    let uri = format!("proxy:{}:quota", socket.display());
    dict_ok(&["set", "-u", "alice", &uri, "priv/quota/storage", "4096"]);
    assert_eq!(
        dict_get(&uri, "alice", "priv/quota/storage").as_deref(),
        Some("4096")
    );
    // relative to the TOML file's directory
    let state = dir.path().join("state");
    assert!(state.join("dict-sql.conf.ext").is_file());
    let rows = run_ok(
        Command::new("sqlite3")
            .arg(state.join("dict.db"))
            .arg("SELECT username, name, value FROM dict_quota"),
    );
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout),
        "alice|storage|4096\n"
    );

    std::fs::write(
        &toml,
        "data_dir = \"/srv/dict\"\n[dicts]\nf = \"file:/srv/dict/f.txt\"\n",
    )
    .unwrap();
    let check = Command::new(server_binary())
        .args(["--config", toml.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert_eq!(
        String::from_utf8_lossy(&check.stderr).trim_end(),
        format!(
            "dict-server: {}:1: data_dir = /srv/dict is only used by the embedded default \
             (when no dict is configured), and dicts are configured: remove data_dir",
            toml.display()
        )
    );
}
