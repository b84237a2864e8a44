//! The `dict-server` binary as an operator runs it: SIGHUP reload, the config check,
//! systemd socket activation and readiness notifications, the metrics flag, log settings.
//! Each test has its own SQLite database, map files and socket in a temporary directory.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::{ConnectOptions, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_dict-server");

/// A scratch directory with a SQLite database.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A directory whose `dict.db` holds `sql`.
    async fn new(sql: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("dict.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        conn.execute(sql).await.unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A map file on `dict.db` mapping `shared/kv/$name` to `table`.
    fn kv_map(&self, name: &str, table: &str) -> PathBuf {
        let db = self.path("dict.db");
        self.write(
            name,
            &format!(
                "connect = {}\nmap {{\n  pattern = shared/kv/$name\n  table = {table}\n  value_field = value\n  fields {{\n    name = $name\n  }}\n}}\n",
                db.display()
            ),
        )
    }

    /// Our TOML file: the socket `dict.sock`, `dicts` as `name = "uri"` lines, `extra` after.
    fn toml(&self, dicts: &[(&str, String)], extra: &str) -> PathBuf {
        let mut text = format!(
            "[listener]\npath = {:?}\nmode = \"0600\"\n[dicts]\n",
            self.path("dict.sock").display().to_string()
        );
        for (name, uri) in dicts {
            text.push_str(&format!("{name} = {uri:?}\n"));
        }
        text.push_str(extra);
        self.write("dict-rs.toml", &text)
    }
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn spawn(mut cmd: Command, log: PathBuf) -> Server {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env_remove("NOTIFY_SOCKET")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn dict-server");
        Server { child, log }
    }

    /// Starts the binary with `--config toml` and waits until `socket` answers.
    fn start(toml: &Path, socket: &Path, log: PathBuf) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(toml).env("RUST_LOG", "info");
        let mut server = Server::spawn(cmd, log);
        server.wait_for(|| UnixStream::connect(socket).is_ok(), "listening");
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits (10 s at most) for `ready`, failing early if the server exits.
    fn wait_for(&mut self, mut ready: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dict-server exited with {status} waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log holds `n` lines containing `text`.
    fn wait_for_log(&mut self, text: &str, n: usize) {
        let log = self.log.clone();
        let count = move || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(text))
                .count()
        };
        self.wait_for(|| count() >= n, text);
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A protocol client with ordered replies (minor version 0).
struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(socket: &Path, dict: &str) -> Client {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut client = Client { stream, reader };
        client.send(&format!("H3\t0\t0\t\t{dict}\n"));
        client
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// `O<value>`, `N` or `F<error>`, without the newline.
    fn lookup(&mut self, key: &str) -> String {
        self.send(&format!("L{key}\t\n"));
        self.line().trim_end_matches('\n').to_string()
    }

    fn set(&mut self, key: &str, value: &str) -> String {
        self.send(&format!("B9\t\nS9\t{key}\t{value}\nC9\n"));
        self.line().trim_end_matches('\n').to_string()
    }
}

const KV_TABLES: &str = "\
CREATE TABLE old_kv (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE new_kv (name TEXT PRIMARY KEY, value TEXT);
INSERT INTO old_kv VALUES ('a', 'from-old');
INSERT INTO new_kv VALUES ('a', 'from-new');
";

#[tokio::test]
async fn sighup_swaps_the_map_for_new_connections_and_keeps_open_ones() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    let socket = s.path("dict.sock");
    let mut server = Server::start(&toml, &socket, s.path("server.log"));

    let mut open = Client::connect(&socket, "kv");
    assert_eq!(open.lookup("shared/kv/a"), "Ofrom-old");

    s.kv_map("kv.conf.ext", "new_kv");
    server.signal(Signal::SIGHUP);
    server.wait_for_log("configuration reloaded", 1);

    // The open connection keeps the dict it started with, reads and writes alike.
    assert_eq!(open.lookup("shared/kv/a"), "Ofrom-old");
    assert_eq!(open.set("shared/kv/b", "written-after-reload"), "O9");
    // A new connection gets the new map.
    let mut fresh = Client::connect(&socket, "kv");
    assert_eq!(fresh.lookup("shared/kv/a"), "Ofrom-new");
    assert_eq!(fresh.lookup("shared/kv/b"), "N");

    // A broken map file: the reload is refused, the running configuration stays.
    s.write(
        "kv.conf.ext",
        "connect = x\nmap {\n  pattern = shared/kv/$name\n}\n",
    );
    server.signal(Signal::SIGHUP);
    server.wait_for_log("reload failed", 1);
    let log = server.log();
    assert!(log.contains("keeping the running configuration"), "{log}");
    assert!(
        log.contains("kv.conf.ext:2"),
        "the error names the map file: {log}"
    );
    assert_eq!(
        Client::connect(&socket, "kv").lookup("shared/kv/a"),
        "Ofrom-new"
    );
    assert_eq!(fresh.lookup("shared/kv/a"), "Ofrom-new");
    assert_eq!(open.lookup("shared/kv/a"), "Ofrom-old");

    // A broken TOML file: refused as well.
    std::fs::write(&toml, "[dicts]\nkv = \"nosuch:x\"\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_log("reload failed", 2);
    assert_eq!(
        Client::connect(&socket, "kv").lookup("shared/kv/a"),
        "Ofrom-new"
    );

    // A fixed configuration loads again, adding a dict.
    s.toml(
        &[
            (
                "kv",
                format!("sqlite:{}", s.kv_map("kv.conf.ext", "old_kv").display()),
            ),
            (
                "kv2",
                format!("sqlite:{}", s.kv_map("kv2.conf.ext", "new_kv").display()),
            ),
        ],
        "",
    );
    server.signal(Signal::SIGHUP);
    server.wait_for_log("configuration reloaded", 2);
    assert_eq!(
        Client::connect(&socket, "kv").lookup("shared/kv/b"),
        "Owritten-after-reload"
    );
    assert_eq!(
        Client::connect(&socket, "kv2").lookup("shared/kv/a"),
        "Ofrom-new"
    );
    assert_eq!(open.lookup("shared/kv/a"), "Ofrom-old");

    drop((open, fresh));
    assert!(server.stop().success());
}

fn check(toml: &Path) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(toml)
        .arg("check")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn check_prints_the_effective_configuration() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(
        &[("kv", format!("sqlite:{}", map.display()))],
        "[server]\nwarn_slow_ms = 250\n[metrics]\nlisten = \"127.0.0.1:9137\"\n",
    );
    let out = check(&toml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let expected = [
        format!(
            "listener {} mode 0600 user - group - backlog 1024",
            s.path("dict.sock").display()
        ),
        "warn_slow_ms 250".into(),
        "log level info format text".into(),
        "metrics http://127.0.0.1:9137/metrics".into(),
        format!("dict kv = sqlite:{}  ({}:5)", map.display(), toml.display()),
        format!("  sqlite map file {} (1 map(s))", map.display()),
        "  map shared/kv/$name -> old_kv(value) name=$name".into(),
        "  backend: ok".into(),
        "check passed: 1 dict(s)".into(),
    ];
    for line in expected {
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn check_reports_each_problem_and_fails() {
    let s = Scratch::new(
        "CREATE TABLE kv (name TEXT PRIMARY KEY, value TEXT);
         CREATE TABLE no_key (name TEXT NOT NULL, value TEXT);",
    )
    .await;
    let good = s.kv_map("good.conf.ext", "kv");
    let no_key = s.kv_map("nokey.conf.ext", "no_key");
    let bad = s.write(
        "bad.conf.ext",
        "connect = /nonexistent.db\nmap {\n  pattern = shared/x\n  tabel = x\n}\n",
    );
    let toml = s.toml(
        &[
            ("good", format!("sqlite:{}", good.display())),
            ("nokey", format!("sqlite:{}", no_key.display())),
            ("badmap", format!("sqlite:{}", bad.display())),
        ],
        "",
    );
    let out = check(&toml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    // Every dict is reported, the good one too.
    assert!(stdout.contains("dict good = sqlite:"), "{stdout}");
    assert!(stdout.contains("dict nokey = sqlite:"), "{stdout}");
    assert!(stdout.contains("dict badmap = sqlite:"), "{stdout}");
    assert_eq!(stdout.matches("  backend: ok").count(), 1, "{stdout}");
    assert!(stdout.contains("  maps: FAILED"), "{stdout}");
    // One message per problem, naming the dict, the file and what is wrong.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("dict-server: check: "))
        .collect();
    assert_eq!(problems.len(), 2, "{stderr}");
    let unique = format!(
        "dict-server: check: dict 'nokey': {}:2: map shared/kv/$name: table no_key: needs a primary key or unique index on exactly (name)",
        no_key.display()
    );
    assert!(problems.iter().any(|p| p.starts_with(&unique)), "{stderr}");
    let map_error = format!("dict-server: check: dict 'badmap': {}:4", bad.display());
    assert!(
        problems.iter().any(|p| p.starts_with(&map_error)),
        "{stderr}"
    );
    assert!(stderr.contains("check failed: 2 problem(s)"), "{stderr}");
}

/// `sh` moves the listening socket from stdin to fd 3 and sets LISTEN_FDS/LISTEN_PID for
/// its own pid before exec'ing the server, as systemd does for a socket unit.
fn socket_activated(listener: UnixListener) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" "$@""#)
        .arg(BIN)
        .stdin(Stdio::from(OwnedFd::from(listener)));
    cmd
}

#[tokio::test]
async fn socket_activation_serves_the_socket_systemd_passes() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    // The configured path is not where the activated socket is: it must not be bound.
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    let activated = s.path("activated.sock");
    let listener = UnixListener::bind(&activated).unwrap();
    let mut cmd = socket_activated(listener);
    cmd.arg("--config").arg(&toml).env("RUST_LOG", "info");
    let mut server = Server::spawn(cmd, s.path("server.log"));
    server.wait_for_log("socket activation", 1);
    assert_eq!(
        Client::connect(&activated, "kv").lookup("shared/kv/a"),
        "Ofrom-old"
    );
    assert!(
        !s.path("dict.sock").exists(),
        "bound the configured path too"
    );
    assert!(server.stop().success());
    // systemd owns the socket file: it stays for the next start.
    assert!(activated.exists());
}

#[tokio::test]
async fn readiness_reload_and_stopping_are_notified() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    let notify = UnixDatagram::bind(s.path("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&toml).env("RUST_LOG", "info");
    let log = s.path("server.log");
    let file = std::fs::File::create(&log).unwrap();
    cmd.env("NOTIFY_SOCKET", s.path("notify.sock"))
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let server = Server {
        child: cmd.spawn().unwrap(),
        log,
    };
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 1 dict(s) on "),
        "{ready}"
    );
    // READY comes after listening.
    assert_eq!(
        Client::connect(&s.path("dict.sock"), "kv").lookup("shared/kv/a"),
        "Ofrom-old"
    );
    server.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(next().starts_with("READY=1\n"));
    server.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1\n");
    assert!(server.stop().success());
}

#[tokio::test]
async fn metrics_listen_flag_serves_the_endpoint() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    let socket = s.path("dict.sock");
    let addr = free_tcp_port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&toml)
        .arg("--metrics-listen")
        .arg(&addr)
        .env("RUST_LOG", "info");
    let mut server = Server::spawn(cmd, s.path("server.log"));
    server.wait_for_log(&format!("metrics endpoint: http://{addr}/metrics"), 1);
    server.wait_for(|| UnixStream::connect(&socket).is_ok(), "listening");
    assert_eq!(
        Client::connect(&socket, "kv").lookup("shared/kv/a"),
        "Ofrom-old"
    );
    let mut http = std::net::TcpStream::connect(&addr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut scrape = String::new();
    std::io::Read::read_to_string(&mut http, &mut scrape).unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("dict_operations_total{dict=\"kv\",op=\"lookup\"} 1"),
        "{scrape}"
    );
    assert!(scrape.contains("dict_connections_total "), "{scrape}");
    assert!(server.stop().success());
    // Text logs to a file (or journald) carry no colour codes.
    let log = server_log(&s);
    assert!(log.contains(" INFO ") && !log.contains('\u{1b}'), "{log}");
}

/// A loopback address no one listens on right now (the exporter binds its own listener, so
/// port 0 would leave the test without the port).
fn free_tcp_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

#[tokio::test]
async fn a_taken_metrics_address_is_a_start_up_error() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&toml)
        .arg("--metrics-listen")
        .arg(addr.to_string())
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("metrics endpoint: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!s.path("dict.sock").exists(), "{stderr}");
}

#[test]
fn the_embedded_default_prints_the_dovecot_conf_lines_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dict.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(&socket)
        .arg("--listen-mode")
        .arg("0666")
        .env("RUST_LOG", "info");
    let mut server = Server::spawn(cmd, dir.path().join("server.log"));
    server.wait_for(|| UnixStream::connect(&socket).is_ok(), "listening");
    server.wait_for_log("quota_clone_dict", 1);
    let log = server.log();
    assert!(server.stop().success());
    let expected = format!(
        "\nmail_plugins = $mail_plugins quota quota_clone\nplugin {{\n  \
         quota_clone_dict = proxy:{}:quota\n}}\n",
        socket.display()
    );
    assert_eq!(log.matches(&expected).count(), 1, "{log}");
    assert_eq!(log.matches("quota_clone_dict").count(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "The socket {} has mode 0666, owner the user dict-server runs as",
            socket.display()
        )),
        "{log}"
    );
    assert!(log.contains("must be able to connect"), "{log}");
    let hint = log
        .lines()
        .find(|l| l.contains("embedded default"))
        .unwrap();
    assert!(hint.contains(" INFO "), "{log}");
}

fn server_log(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("server.log")).unwrap()
}

#[test]
fn dovecots_switched_off_dict_listener_is_served_with_the_default_mode() {
    // What the README tells admins to write so that Dovecot leaves the socket to us.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {}\ndict {{\n  quota = sqlite:/etc/q.conf\n}}\n\
             service dict {{\n  unix_listener dict {{\n    mode = 0\n  }}\n}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let plan = dict_server::setup::plan(Some(&conf), None, None, None).unwrap();
    let dict = plan
        .listeners
        .iter()
        .find(|l| l.path == dir.path().join("dict"))
        .unwrap_or_else(|| panic!("{:?}", plan.listeners));
    assert_eq!(dict.mode, 0o660);
}

#[tokio::test]
async fn log_format_and_level_come_from_the_config_and_rust_log() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(
        &[("kv", format!("sqlite:{}", map.display()))],
        "[log]\nlevel = \"info\"\nformat = \"json\"\n",
    );
    let socket = s.path("dict.sock");
    let start = |rust_log: Option<&str>, log: &str| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&toml).env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut server = Server::spawn(cmd, s.path(log));
        server.wait_for(|| UnixStream::connect(&socket).is_ok(), "listening");
        let log = server.log();
        assert!(server.stop().success());
        log
    };
    let json = start(None, "json.log");
    let listening = json
        .lines()
        .find(|l| l.contains("listening"))
        .unwrap_or_else(|| panic!("{json}"));
    assert!(
        listening.starts_with('{') && listening.ends_with('}'),
        "{json}"
    );
    assert!(listening.contains("\"level\":\"INFO\""), "{json}");
    // RUST_LOG wins over the file's level.
    let quiet = start(Some("warn"), "quiet.log");
    assert!(!quiet.contains("listening"), "{quiet}");
}

#[test]
fn the_compose_stacks_configuration_loads() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dict-rs");
    let plan = dict_server::setup::plan(None, Some(&deploy.join("dict-rs.toml")), None, None)
        .expect("deploy/dict-rs/dict-rs.toml");
    let names: Vec<&str> = plan.dicts.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["mysql", "pgsql", "redis"]);
    assert_eq!(plan.listeners[0].path, Path::new("/run/dict-rs/dict"));
    assert_eq!(plan.listeners[0].mode, 0o666);
    assert_eq!(plan.metrics.listen, Some("0.0.0.0:9137".parse().unwrap()));
    // The map files are read as the server reads them (paths rebased from /etc/dict-rs).
    for (dict, file, driver) in [
        (
            "mysql",
            "dict-mysql.conf.ext",
            dict_config::SqlDriver::Mysql,
        ),
        (
            "pgsql",
            "dict-pgsql.conf.ext",
            dict_config::SqlDriver::Pgsql,
        ),
    ] {
        let map = dict_config::SqlMapFile::load(driver, deploy.join(file)).expect(file);
        assert_eq!(map.maps.len(), 6, "{file}");
        let entry = plan.dicts.iter().find(|d| d.name == dict).unwrap();
        assert_eq!(
            entry.uri(),
            Some(format!("{dict}:/etc/dict-rs/{file}").as_str())
        );
    }
}

/// With an open-file limit too low for max_connections (10000 by default), `check` warns and names the fix;
/// it stays a warning (the check still passes).
#[tokio::test]
async fn check_warns_when_the_open_file_limit_is_too_low() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let toml = s.toml(&[("kv", format!("sqlite:{}", map.display()))], "");
    // Soft and hard limit lowered for the child alone.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 512 && exec {BIN} --config {} check",
            toml.display()
        ))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("open files 512 (needed at most 10096)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: open-file limit 512 is below the 10096")
            && stderr.contains("LimitNOFILE"),
        "{stderr}"
    );
}

/// `PRAGMA journal_mode` of `db` as a new connection sees it (the mode is kept in the file).
async fn journal_mode_of(db: &Path) -> String {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// `check` opens each dict as the server does and fails when the writing connection's
/// `PRAGMA journal_mode` / `PRAGMA synchronous` differ from the configuration: so "backend:
/// ok" means both settings reached the database.
fn check_sqlite_settings(out: &Output, journal: &str, synchronous: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = format!("  sqlite_journal_mode {journal} sqlite_synchronous {synchronous}\n");
    assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    assert!(stdout.contains("  backend: ok"), "{stdout}");
}

#[tokio::test]
async fn toml_sql_section_sets_sqlite_synchronous_and_journal_mode() {
    let s = Scratch::new(KV_TABLES).await;
    let map = s.kv_map("kv.conf.ext", "old_kv");
    let dicts = [("kv", format!("sqlite:{}", map.display()))];
    let toml = s.toml(
        &dicts,
        "[sql]\nsqlite_synchronous = \"off\"\nsqlite_journal_mode = \"delete\"\n",
    );
    check_sqlite_settings(&check(&toml), "delete", "off");
    assert_eq!(journal_mode_of(&s.path("dict.db")).await, "delete");

    let toml = s.toml(
        &dicts,
        "[sql]\nsqlite_synchronous = \"extra\"\nsqlite_journal_mode = \"wal\"\n",
    );
    check_sqlite_settings(&check(&toml), "wal", "extra");
    assert_eq!(journal_mode_of(&s.path("dict.db")).await, "wal");

    // Unset: WAL, and no synchronous pragma (SQLite's default, FULL)
    let toml = s.toml(&dicts, "");
    check_sqlite_settings(&check(&toml), "wal", "default");
}

#[tokio::test]
async fn dovecot24_sqlite_synchronous_and_journal_mode_reach_the_file() {
    let s = Scratch::new(KV_TABLES).await;
    let conf = |synchronous: &str, journal: &str| {
        s.write(
            "dovecot.conf",
            &format!(
                "dovecot_config_version = 2.4.1\nbase_dir = {}\ndict_server {{\n  dict kv {{\n    \
                 driver = sql\n    sql_driver = sqlite\n    sqlite_path = {}\n    \
                 sqlite_synchronous = {synchronous}\n    sqlite_journal_mode = {journal}\n    \
                 dict_map shared/kv/$name {{\n      sql_table = old_kv\n      \
                 value_field value {{\n      }}\n      key_field name {{\n        \
                 value = $name\n      }}\n    }}\n  }}\n}}\n",
                s.path("run").display(),
                s.path("dict.db").display()
            ),
        )
    };
    let check24 = |conf: &Path| {
        Command::new(BIN)
            .arg("--dovecot-config")
            .arg(conf)
            .arg("check")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    check_sqlite_settings(&check24(&conf("normal", "wal")), "wal", "normal");
    assert_eq!(journal_mode_of(&s.path("dict.db")).await, "wal");
    check_sqlite_settings(&check24(&conf("full", "delete")), "delete", "full");
    assert_eq!(journal_mode_of(&s.path("dict.db")).await, "delete");
    // a value Dovecot 2.4 refuses is refused here too
    let out = check24(&conf("sometimes", "wal"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sqlite_synchronous: invalid value 'sometimes'"),
        "{stderr}"
    );
}
