//! Helpers for the end-to-end tests: the `dict-server` binary on a private socket, backends
//! from the services `tests/scripts/services.sh` starts, and the real `doveadm`.
//!
//! A test that needs a service fails loudly when the service is missing: run the suite with
//! `tests/scripts/run-all.sh`, which starts them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod faults;
pub mod load;
pub mod mail_env;
pub mod raw_cases;
pub mod redis_ha;
pub mod service_control;
pub mod wire;

/// An environment variable set by `tests/scripts/services.sh env`, or a panic saying so.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() && v != "unset" => v,
        _ => panic!("{name} is not set: start the test services with tests/scripts/run-all.sh (or `tests/scripts/services.sh start` and `eval \"$(tests/scripts/services.sh env)\"`)"),
    }
}

/// The repository's root.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `dict-server` binary cargo built next to this test executable.
pub fn server_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("DICT_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    workspace_binary("dict-server")
}

/// A binary of the workspace (`quota-clone`, `dictctl`, …) cargo built next to this test
/// executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    // cargo builds this package's dependencies for its tests, not another package's
    // binaries: a binary older than the sources would test old code without saying so.
    let built = modified(&bin).expect("the binary's modification time");
    if let Some((newest, source)) = newest_source() {
        assert!(
            built >= *newest,
            "{} is older than {}: run `cargo build --workspace` first",
            bin.display(),
            source.display()
        );
    }
    bin
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The most recently changed file the workspace's binaries are built from: `Cargo.lock`,
/// and every crate's `Cargo.toml` and `src/`.
fn newest_source() -> Option<&'static (std::time::SystemTime, PathBuf)> {
    static NEWEST: std::sync::OnceLock<Option<(std::time::SystemTime, PathBuf)>> =
        std::sync::OnceLock::new();
    NEWEST
        .get_or_init(|| {
            let root = repo_dir();
            let mut files = vec![root.join("Cargo.lock")];
            for krate in std::fs::read_dir(root.join("crates")).ok()?.flatten() {
                files.push(krate.path().join("Cargo.toml"));
                collect_files(&krate.path().join("src"), &mut files);
            }
            files
                .into_iter()
                .filter_map(|f| Some((modified(&f)?, f)))
                .max_by_key(|(t, _)| *t)
        })
        .as_ref()
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// SQL backends the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file per test.
    Sqlite,
    /// MariaDB from services.sh.
    Mysql,
    /// PostgreSQL from services.sh.
    Pgsql,
    /// Redis from services.sh, with a key prefix of its own per server.
    Redis,
}

impl Backend {
    /// The map file's `connect` string for the MariaDB or PostgreSQL of services.sh.
    pub fn server_connect(self) -> String {
        let v = |k: &str| {
            service_env(&format!(
                "DICT_TEST_{}_{k}",
                self.driver().to_ascii_uppercase()
            ))
        };
        format!(
            "host={} port={} dbname={} user={} password={}",
            v("HOST"),
            v("PORT"),
            v("DB"),
            v("USER"),
            v("PASSWORD")
        )
    }

    /// The dict-sql driver name (URI scheme).
    pub fn driver(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
            Backend::Pgsql => "pgsql",
            Backend::Redis => "redis",
        }
    }
}

/// The maps of the reference configuration (same as Dovecot's test harness).
pub const MAPS: &str = r#"
map {
  pattern = priv/quota/storage
  table = quota
  username_field = username
  value_field = bytes
  value_type = uint
}
map {
  pattern = priv/quota/messages
  table = quota
  username_field = username
  value_field = messages
  value_type = uint
}
map {
  pattern = shared/kv/$scope/$name
  table = kv
  value_field = value
  fields {
    scope = $scope
    name = $name
  }
}
map {
  pattern = priv/kv/$name
  table = userkv
  username_field = username
  value_field = value
  fields {
    name = $name
  }
}
map {
  pattern = priv/quota/both
  table = quota
  username_field = username
  value_field = bytes,messages
  value_type = uint,uint
}
map {
  pattern = shared/bench/$name
  table = bench
  value_field = value
  fields {
    name = $name
  }
}
"#;

/// One running `dict-server` with one SQL dict, on a private socket.
pub struct DictServer {
    /// The socket path.
    pub socket: PathBuf,
    /// The dict name served.
    pub name: String,
    /// The backend.
    pub backend: Backend,
    /// The SQLite file (SQLite only).
    pub sqlite_db: Option<PathBuf>,
    /// The Redis key prefix (Redis only).
    pub redis_prefix: String,
    child: Child,
    /// The scratch directory (config, socket, log).
    pub dir: tempfile::TempDir,
}

impl DictServer {
    /// Starts the server binary with a Dovecot 2.3 config serving dict `name` on `sql`.
    pub fn start(backend: Backend, name: &str) -> DictServer {
        Self::start_with_dict(backend, name, "")
    }

    /// Like [`DictServer::start`], with the dict's URI given (`""`: made for `backend`).
    pub fn start_with_dict(backend: Backend, name: &str, given_uri: &str) -> DictServer {
        Self::start_configured(backend, name, given_uri, None, None)
    }

    /// Like [`DictServer::start`], plus our own TOML file (`--config`) with `toml` in it, for
    /// the `[server]` and `[listener]` limits and timeouts.
    pub fn start_with_toml(backend: Backend, name: &str, toml: &str) -> DictServer {
        Self::start_configured(backend, name, "", Some(toml), None)
    }

    /// Like [`DictServer::start_with_toml`], on a database of its own: `connect` is the map
    /// file's connect string (several hosts, for instance).
    pub fn start_with_connect(
        backend: Backend,
        name: &str,
        connect: &str,
        toml: &str,
    ) -> DictServer {
        Self::start_configured(backend, name, "", Some(toml), Some(connect))
    }

    /// Both: the dict's URI given, and our own TOML file.
    pub fn start_with_dict_and_toml(
        backend: Backend,
        name: &str,
        given_uri: &str,
        toml: &str,
    ) -> DictServer {
        Self::start_configured(backend, name, given_uri, Some(toml), None)
    }

    fn start_configured(
        backend: Backend,
        name: &str,
        given_uri: &str,
        toml: Option<&str>,
        given_connect: Option<&str>,
    ) -> DictServer {
        let dir = tempfile::Builder::new()
            .prefix("dict-rs-")
            .tempdir_in(scratch())
            .expect("tempdir");
        let mut sqlite_db = None;
        let connect = match (given_connect, backend) {
            (Some(connect), _) => connect.to_string(),
            (None, Backend::Sqlite) => {
                let db = dir.path().join("dict.db");
                let schema =
                    std::fs::File::open(repo_dir().join("tests/fixtures/schema-sqlite.sql"))
                        .unwrap();
                run_ok(Command::new("sqlite3").arg(&db).stdin(schema));
                sqlite_db = Some(db.clone());
                db.display().to_string()
            }
            (None, Backend::Mysql | Backend::Pgsql) => backend.server_connect(),
            (None, Backend::Redis) => String::new(),
        };
        let map_path = dir.path().join("dovecot-dict-sql.conf.ext");
        std::fs::write(&map_path, format!("connect = {connect}\n{MAPS}")).unwrap();
        let redis_prefix = unique("t") + "/";
        let uri = match backend {
            _ if !given_uri.is_empty() => given_uri.to_string(),
            Backend::Redis => format!(
                "redis:host={}:port={}:prefix={redis_prefix}",
                service_env("DICT_TEST_REDIS_HOST"),
                service_env("DICT_TEST_REDIS_PORT")
            ),
            sql => format!("{}:{}", sql.driver(), map_path.display()),
        };
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "# a dovecot.conf as admins have them\nbase_dir = {}\nprotocols =\nservice dict {{\n  unix_listener dict {{\n    mode = 0666\n  }}\n}}\ndict {{\n  {name} = {uri}\n}}\n",
                dir.path().display(),
            ),
        )
        .unwrap();
        let socket = dir.path().join("dict.sock");
        let mut args = vec![
            "--dovecot-config".to_string(),
            conf.display().to_string(),
            "--listen".to_string(),
            socket.display().to_string(),
        ];
        if let Some(toml) = toml {
            let path = dir.path().join("dict-rs.toml");
            std::fs::write(&path, toml).unwrap();
            args.extend(["--config".to_string(), path.display().to_string()]);
        }
        Self::spawn(dir, &args, socket, name, backend, sqlite_db, redis_prefix)
    }

    /// Starts the server bare, as a new user does: the embedded default (dict `quota` on
    /// SQLite, its map file and tables written into a fresh data directory).
    pub fn start_embedded() -> DictServer {
        let dir = tempfile::Builder::new()
            .prefix("dict-rs-")
            .tempdir_in(scratch())
            .expect("tempdir");
        let data = dir.path().join("data");
        let socket = dir.path().join("dict.sock");
        let args = [
            "--data-dir".to_string(),
            data.display().to_string(),
            "--listen".to_string(),
            socket.display().to_string(),
            "--listen-mode".to_string(),
            "0666".to_string(),
        ];
        let db = Some(data.join("dict.db"));
        Self::spawn(
            dir,
            &args,
            socket,
            "quota",
            Backend::Sqlite,
            db,
            String::new(),
        )
    }

    fn spawn(
        dir: tempfile::TempDir,
        args: &[String],
        socket: PathBuf,
        name: &str,
        backend: Backend,
        sqlite_db: Option<PathBuf>,
        redis_prefix: String,
    ) -> DictServer {
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(server_binary())
            .args(args)
            .env("RUST_LOG", "info,dict_server=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dict-server");
        let mut server = DictServer {
            socket,
            name: name.to_string(),
            backend,
            sqlite_db,
            redis_prefix,
            child,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dict-server exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dict-server did not listen on {} in time: {}",
            self.socket.display(),
            self.log()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `proxy:<socket>:<name>`, the URI Dovecot's clients use.
    pub fn uri(&self) -> String {
        format!("proxy:{}:{}", self.socket.display(), self.name)
    }

    /// Runs SQL in the backing database and returns its rows, tab-separated, one per line.
    pub fn sql(&self, query: &str) -> String {
        sql_query(self.backend, self.sqlite_db.as_deref(), query)
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("dict-server did not stop on SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DictServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `query` against a backend directly (not through the dict), via its CLI.
pub fn sql_query(backend: Backend, sqlite_db: Option<&Path>, query: &str) -> String {
    let out = match backend {
        Backend::Sqlite => run_ok(
            Command::new("sqlite3")
                .arg("-separator")
                .arg("\t")
                .arg(sqlite_db.expect("sqlite db"))
                .arg(query),
        ),
        Backend::Mysql => run_ok(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("-h{}", service_env("DICT_TEST_MYSQL_HOST")))
                .arg(format!("-P{}", service_env("DICT_TEST_MYSQL_PORT")))
                .arg(format!("-u{}", service_env("DICT_TEST_MYSQL_USER")))
                .arg(format!("-p{}", service_env("DICT_TEST_MYSQL_PASSWORD")))
                .arg("-N")
                .arg("-B")
                .arg(service_env("DICT_TEST_MYSQL_DB"))
                .arg("-e")
                .arg(query),
        ),
        Backend::Redis => panic!("no SQL on redis"),
        Backend::Pgsql => run_ok(
            Command::new("psql")
                .env("PGPASSWORD", service_env("DICT_TEST_PGSQL_PASSWORD"))
                .arg("-h")
                .arg(service_env("DICT_TEST_PGSQL_HOST"))
                .arg("-p")
                .arg(service_env("DICT_TEST_PGSQL_PORT"))
                .arg("-U")
                .arg(service_env("DICT_TEST_PGSQL_USER"))
                .arg("-At")
                .arg("-F")
                .arg("\t")
                .arg("-v")
                .arg("ON_ERROR_STOP=1")
                .arg("-c")
                .arg(query)
                .arg(service_env("DICT_TEST_PGSQL_DB")),
        ),
    };
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The value of a raw Redis key, read with `redis-cli` (not through the dict).
pub fn redis_get(key: &str) -> String {
    let out = run_ok(redis_cli().arg("--no-raw").arg("GET").arg(key));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Deletes raw Redis keys with `redis-cli` (not through the dict).
pub fn redis_del(keys: &[&str]) {
    run_ok(redis_cli().arg("DEL").args(keys));
}

/// `redis-cli` for the Redis of services.sh.
pub fn redis_cli() -> Command {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h")
        .arg(service_env("DICT_TEST_REDIS_HOST"))
        .arg("-p")
        .arg(service_env("DICT_TEST_REDIS_PORT"));
    cmd
}

/// Runs the workspace's `quota-clone` with `args`; its stdout (panics unless it succeeds).
pub fn quota_clone(args: &[&str]) -> String {
    let out = run_ok(Command::new(workspace_binary("quota-clone")).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where tests keep their files: the services' scratch dir when set (short socket paths).
pub fn scratch() -> PathBuf {
    let dir = std::env::var("DICT_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = dir.join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command with `stdin` (nothing: the parent's stdin) and collects its output.
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let Some(input) = stdin else {
        return cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    };
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What a `doveadm` run printed.
#[derive(Debug)]
pub struct Doveadm {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code.
    pub code: i32,
}

/// Runs the real `doveadm` with the test client config and `args`.
pub fn doveadm(args: &[&str]) -> Doveadm {
    let bin = service_env("DICT_TEST_DOVEADM");
    let conf = service_env("DICT_TEST_DOVEADM_CONF");
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    Doveadm {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// A name unique to this process and call, for keys and users that must not collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// [`MAPS`] in Dovecot 2.4 syntax (`dict_map` filters inside `dict <name> { }`).
pub const MAPS24: &str = r#"
    dict_map priv/quota/storage {
      sql_table = quota
      username_field = username
      value_field bytes {
        type = uint
      }
    }
    dict_map priv/quota/messages {
      sql_table = quota
      username_field = username
      value_field messages {
        type = uint
      }
    }
    dict_map shared/kv/$scope/$name {
      sql_table = kv
      value_field value {
      }
      key_field scope {
        value = $scope
      }
      key_field name {
        value = $name
      }
    }
    dict_map priv/kv/$name {
      sql_table = userkv
      username_field = username
      value_field value {
      }
      key_field name {
        value = $name
      }
    }
    dict_map priv/quota/both {
      sql_table = quota
      username_field = username
      value_field bytes {
        type = uint
      }
      value_field messages {
        type = uint
      }
    }
    dict_map shared/bench/$name {
      sql_table = bench
      value_field value {
      }
      key_field name {
        value = $name
      }
    }
"#;

impl DictServer {
    /// [`DictServer::start`] with the same maps and database written in Dovecot 2.4 syntax:
    /// `dovecot_config_version`, `dict_server { dict <name> { driver = sql … } }`.
    /// `extra` goes inside the dict block (more `dict_map`s).
    pub fn start24(backend: Backend, name: &str, extra: &str) -> DictServer {
        let dir = tempfile::Builder::new()
            .prefix("dict-rs-")
            .tempdir_in(scratch())
            .expect("tempdir");
        Self::start24_in(dir, backend, name, extra)
    }

    /// [`DictServer::start24`] in a directory of the caller's choice.
    pub fn start24_in(
        dir: tempfile::TempDir,
        backend: Backend,
        name: &str,
        extra: &str,
    ) -> DictServer {
        let mut sqlite_db = None;
        let connection = match backend {
            Backend::Sqlite => {
                let db = dir.path().join("dict.db");
                let schema =
                    std::fs::File::open(repo_dir().join("tests/fixtures/schema-sqlite.sql"))
                        .unwrap();
                run_ok(Command::new("sqlite3").arg(&db).stdin(schema));
                sqlite_db = Some(db.clone());
                format!("sql_driver = sqlite\n    sqlite_path = {}", db.display())
            }
            Backend::Mysql => format!(
                "sql_driver = mysql\n    mysql_port = {}\n    mysql_dbname = {}\n    mysql {} {{\n      user = {}\n      password = {}\n    }}",
                service_env("DICT_TEST_MYSQL_PORT"),
                service_env("DICT_TEST_MYSQL_DB"),
                service_env("DICT_TEST_MYSQL_HOST"),
                service_env("DICT_TEST_MYSQL_USER"),
                service_env("DICT_TEST_MYSQL_PASSWORD")
            ),
            Backend::Pgsql => format!(
                "sql_driver = pgsql\n    pgsql {} {{\n      parameters {{\n        port = {}\n        dbname = {}\n        user = {}\n        password = {}\n      }}\n    }}",
                service_env("DICT_TEST_PGSQL_HOST"),
                service_env("DICT_TEST_PGSQL_PORT"),
                service_env("DICT_TEST_PGSQL_DB"),
                service_env("DICT_TEST_PGSQL_USER"),
                service_env("DICT_TEST_PGSQL_PASSWORD")
            ),
            Backend::Redis => panic!("start24 serves SQL dicts"),
        };
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "dovecot_config_version = 2.4.1\nbase_dir = {}\nprotocols =\n\
                 service dict {{\n  unix_listener dict {{\n    mode = 0666\n  }}\n}}\n\
                 dict_server {{\n  dict {name} {{\n    driver = sql\n    {connection}\n{MAPS24}{extra}\n  }}\n}}\n",
                dir.path().display(),
            ),
        )
        .unwrap();
        let socket = dir.path().join("dict.sock");
        let args = [
            "--dovecot-config".to_string(),
            conf.display().to_string(),
            "--listen".to_string(),
            socket.display().to_string(),
        ];
        Self::spawn(dir, &args, socket, name, backend, sqlite_db, String::new())
    }
}

impl DictServer {
    /// Our server on a whole Dovecot 2.4 config written by the caller (`conf`, the file's
    /// text, as Dovecot itself is given it), in `dir`, on a socket of its own there. `name`
    /// is the dict [`DictServer::uri`] names; every dict of `conf` is served.
    pub fn start24_config(
        dir: tempfile::TempDir,
        conf: &str,
        name: &str,
        backend: Backend,
    ) -> DictServer {
        let path = dir.path().join("dovecot.conf");
        std::fs::write(&path, conf).unwrap();
        let socket = dir.path().join("dict.sock");
        let args = [
            "--dovecot-config".to_string(),
            path.display().to_string(),
            "--listen".to_string(),
            socket.display().to_string(),
        ];
        Self::spawn(dir, &args, socket, name, backend, None, String::new())
    }
}

/// A directory under [`scratch`] that Dovecot's processes (the dovecot user) and the mail
/// user can read.
pub fn readable_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch())
        .unwrap();
    run_ok(Command::new("chmod").arg("0755").arg(dir.path()));
    dir
}

/// A private Dovecot instance (`dovecot -c conf`), ready once `socket` accepts connections;
/// stopped with `doveadm stop` when dropped.
pub struct DovecotInstance {
    conf: PathBuf,
    base_dir: PathBuf,
}

impl DovecotInstance {
    /// Starts Dovecot on `conf` (whose `base_dir` is `base_dir`); `log` is shown if it
    /// never listens on `socket`.
    pub fn start(conf: &Path, base_dir: &Path, socket: &Path, log: &Path) -> DovecotInstance {
        // The master daemonises: it must not inherit pipes we wait on.
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run dovecot");
        assert!(status.success(), "dovecot -c {} failed", conf.display());
        let dovecot = DovecotInstance {
            conf: conf.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "Dovecot did not listen on {}: {}",
                socket.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dovecot
    }
}

impl Drop for DovecotInstance {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .status();
        let pid_file = self.base_dir.join("master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
