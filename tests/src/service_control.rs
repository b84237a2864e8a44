//! Faults injected into the services of `tests/scripts/services.sh`: stall one (SIGSTOP, then
//! SIGCONT), crash one (MariaDB `kill -9`, PostgreSQL immediate stop) and start it again.
//!
//! Guards undo a fault when they are dropped, also when a test panics, so that the test
//! binaries that run afterwards find every service up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{repo_dir, run_ok, service_env};

/// A service of `services.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Redis,
    Mysql,
    Pgsql,
}

impl Service {
    /// The name `services.sh` and `DICT_TEST_SERVICES` use.
    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::Mysql => "mysql",
            Service::Pgsql => "pgsql",
        }
    }

    /// The main process (redis-server, mariadbd, the postmaster), from its PID file.
    pub fn main_pid(self) -> i32 {
        let scratch = service_env("DICT_TEST_SCRATCH");
        let path = match self {
            Service::Redis => format!("{scratch}/redis/redis.pid"),
            Service::Mysql => format!("{scratch}/mysql/mysqld.pid"),
            Service::Pgsql => format!("{scratch}/pgsql/data/postmaster.pid"),
        };
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is not running? {path}: {e}", self.name()))
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path}: no PID"))
    }

    /// Stops every process of the service with SIGSTOP (PostgreSQL: the postmaster first, so
    /// that it forks no more, then its children). The guard sends SIGCONT.
    pub fn freeze(self) -> Frozen {
        let main = self.main_pid();
        let mut frozen = Frozen { pids: Vec::new() };
        signal(main, Signal::SIGSTOP);
        frozen.pids.push(main);
        if self == Service::Pgsql {
            for child in children_of(main) {
                signal(child, Signal::SIGSTOP);
                frozen.pids.push(child);
            }
        }
        frozen
    }

    /// Crashes the service (`services.sh crash`: MariaDB and Redis `kill -9`, PostgreSQL
    /// `pg_ctl stop -m immediate`) and waits until it is gone. The guard starts it again.
    pub fn crash(self) -> Crashed {
        let pid = self.main_pid();
        run_ok(&mut services_sh("crash", self));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "{} did not die", self.name());
            std::thread::sleep(Duration::from_millis(20));
        }
        Crashed {
            service: self,
            restarted: false,
        }
    }

    /// Starts the service if it is not running (`services.sh start`, same port and data).
    pub fn start(self) {
        run_ok(&mut services_sh("start", self));
    }
}

fn services_sh(command: &str, service: Service) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_dir().join("tests/scripts/services.sh"))
        .arg(command)
        .arg(service.name())
        .env("DICT_TEST_SERVICES", service.name())
        .stdin(Stdio::null());
    cmd
}

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

/// The processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so read after the last `)`.
        let ppid = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// A stalled service; dropping it (or [`Frozen::thaw`]) lets it run again.
#[must_use = "the service runs again when the guard is dropped"]
pub struct Frozen {
    pids: Vec<i32>,
}

impl Frozen {
    /// Sends SIGCONT now; the moment the service runs again.
    pub fn thaw(self) -> Instant {
        drop(self);
        Instant::now()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

/// A crashed service; dropping it (or [`Crashed::restart`]) starts it again.
#[must_use = "the service is started again when the guard is dropped"]
pub struct Crashed {
    service: Service,
    restarted: bool,
}

impl Crashed {
    /// Starts the service again and returns the moment it accepts connections.
    pub fn restart(mut self) -> Instant {
        self.restarted = true;
        self.service.start();
        Instant::now()
    }
}

impl Drop for Crashed {
    fn drop(&mut self) {
        if !self.restarted {
            let _ = services_sh("start", self.service).status();
        }
    }
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Redis `CLIENT KILL TYPE normal`: closes every client connection (the dict server's too)
/// but the one asking; returns how many were closed.
pub fn redis_kill_clients() -> u64 {
    let out = run_ok(crate::redis_cli().args(["CLIENT", "KILL", "TYPE", "normal"]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The names (last path component) of the Redis keys under `prefix`.
pub fn redis_key_names(prefix: &str) -> Vec<String> {
    let out = run_ok(
        crate::redis_cli()
            .arg("--scan")
            .arg("--pattern")
            .arg(format!("{prefix}*")),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
        .collect()
}
