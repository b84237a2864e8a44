//! SQL failover on real engines, each shape made by `tests/scripts/sql-ha.sh` for the test
//! alone: two independent MariaDB servers in `host=`, and a PostgreSQL primary with a
//! synchronous streaming replica behind a libpq host list with
//! `target_session_attrs=read-write`. Under load the first server goes away: requests fail
//! fast (`F`, `W` for a commit in flight), then commits go on against the other server, and
//! no commit acknowledged with `O` is lost. The real quota_clone plugin writes through the
//! server before and after the failover. Prints the failover time (last `O` before the
//! fault, first `O` after it).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dict_tests::faults::{MARGIN, REQUEST_TIMEOUT};
use dict_tests::load::{Load, LoadReport, LoadShape};
use dict_tests::mail_env::{message, MailEnv};
use dict_tests::{repo_dir, run_ok, unique, Backend, DictServer};

/// The first `O` after the fault must come this soon after the other server can take it.
const FAILOVER: Duration = Duration::from_secs(3);
const USER: &str = "qc-alice@example.test";

/// The servers of one shape, stopped on drop.
struct Shape {
    kind: &'static str,
    connect: String,
}

impl Shape {
    fn start(kind: &'static str) -> Shape {
        let out = run_ok(&mut sql_ha(kind, &["start"]));
        let connect = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Shape { kind, connect }
    }

    fn ctl(&self, cmd: &str) -> Instant {
        run_ok(&mut sql_ha(self.kind, &[cmd]));
        Instant::now()
    }

    /// Rows of `query` on server `A` or `B`, one per line.
    fn sql(&self, server: &str, query: &str) -> String {
        let out = run_ok(&mut sql_ha(self.kind, &["sql", server, query]));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    fn names(&self, server: &str, scope: &str) -> HashSet<String> {
        let rows = self.sql(
            server,
            &format!("SELECT name FROM kv WHERE scope = '{scope}'"),
        );
        rows.lines().map(str::to_string).collect()
    }

    /// (bytes, messages) of the quota row quota_clone wrote on `server`.
    fn quota(&self, server: &str) -> (u64, u64) {
        let row = self.sql(
            server,
            &format!("SELECT bytes, messages FROM quota WHERE username = '{USER}'"),
        );
        let mut cells = row.split('\t').map(|c| c.trim().parse().unwrap_or(0));
        (cells.next().unwrap_or(0), cells.next().unwrap_or(0))
    }
}

impl Drop for Shape {
    fn drop(&mut self) {
        let _ = sql_ha(self.kind, &["stop"]).status();
    }
}

fn sql_ha(kind: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_dir().join("tests/scripts/sql-ha.sh"))
        .arg(kind)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// The real quota_clone plugin writing through `server`, one more message each time.
struct Mail {
    env: MailEnv,
    saved: usize,
}

impl Mail {
    fn start(server: &DictServer, kind: &str) -> Mail {
        let env = MailEnv::start_in(server, &format!("qc-ha-{kind}"));
        Mail { env, saved: 0 }
    }

    /// Saves one more message; returns Dovecot's (vsize, messages) of the INBOX.
    fn save(&mut self) -> (u64, u64) {
        self.saved += 1;
        let msg = message(self.saved, USER);
        self.env
            .doveadm(&["save", "-u", USER, "-m", "INBOX"], Some(msg));
        self.env.usage(USER)
    }

    /// Saves one more message and checks the quota row quota_clone wrote on `on`.
    fn save_and_check(&mut self, shape: &Shape, on: &str, server: &DictServer, when: &str) {
        let usage = self.save();
        assert_eq!(
            shape.quota(on),
            usage,
            "quota_clone {when}: {}",
            server.log()
        );
    }
}

fn server(backend: Backend, shape: &Shape) -> DictServer {
    DictServer::start_with_connect(
        backend,
        shape.kind,
        &shape.connect,
        &format!(
            "[server]\nrequest_timeout_ms = {}\n",
            REQUEST_TIMEOUT.as_millis()
        ),
    )
}

/// The failover time: the longest pause between two acknowledged commits that ends after
/// `fault` (the last `O` before the outage, the first `O` after it).
fn failover_time(report: &LoadReport, fault: Instant) -> Duration {
    let mut acks: Vec<Instant> = report
        .outcomes
        .iter()
        .filter(|o| o.commit)
        .filter_map(|o| o.reply.filter(|r| r.0 == 'O').map(|r| r.1))
        .collect();
    acks.sort();
    acks.windows(2)
        .filter(|w| w[1] >= fault)
        .map(|w| w[1] - w[0])
        .max()
        .expect("commits acknowledged after the fault")
}

/// A shape with our server on it: quota_clone's row checked on server A, then a second of
/// load before the fault.
struct UnderLoad {
    shape: Shape,
    server: DictServer,
    mail: Mail,
    scope: String,
    load: Load,
}

impl UnderLoad {
    fn start(kind: &'static str, backend: Backend) -> UnderLoad {
        let shape = Shape::start(kind);
        let server = server(backend, &shape);
        let mut mail = Mail::start(&server, kind);
        mail.save_and_check(&shape, "A", &server, "before the failover");
        let scope = unique("ha");
        let load = Load::start(&server, &scope, LoadShape::default());
        std::thread::sleep(Duration::from_secs(1));
        UnderLoad {
            shape,
            server,
            mail,
            scope,
            load,
        }
    }
}

#[test]
fn mariadb_two_hosts_fail_over_to_the_second_under_load() {
    let UnderLoad {
        shape,
        server,
        mut mail,
        scope,
        load,
    } = UnderLoad::start("mysql", Backend::Mysql);
    let fault = Instant::now();
    shape.ctl("kill-a");
    std::thread::sleep(Duration::from_secs(2));
    let report = load.finish();

    // quota_clone writes whole values: the second server gets the user's full usage
    mail.save_and_check(&shape, "B", &server, "after the failover");

    // Server A comes back with what it had acknowledged; the dict stays on B.
    shape.ctl("start-a");
    let on_a = shape.names("A", &scope);
    let on_b = shape.names("B", &scope);
    let stored: HashSet<String> = on_a.union(&on_b).cloned().collect();
    let figures = report.figures(&stored, Some(fault));
    let took = failover_time(&report, fault);
    eprintln!(
        "failover figures [mariadb host=A host=B, A killed]: {figures} / failover {} ms (last O before, first O after) / rows on A {}, on B {}",
        took.as_millis(),
        on_a.len(),
        on_b.len()
    );
    assert_eq!(figures.lost, 0, "acknowledged commits lost");
    assert_eq!(figures.false_f, 0, "commits answered F whose row is there");
    assert_eq!(figures.unanswered, 0, "requests never answered");
    assert!(
        figures.max_wait <= REQUEST_TIMEOUT + MARGIN,
        "a reply took {} ms",
        figures.max_wait.as_millis()
    );
    assert!(took <= FAILOVER, "failover took {} ms", took.as_millis());
    assert!(!on_b.is_empty(), "no commit went to the second server");
    // Independent servers: A's rows are not on B (lookups of them say "not found" there),
    // but a one-statement commit cut off on A may be applied again, alike, on B.
    // With A back, the dict stays on B: a second server's rows never mix with the first's.
    let later = unique("ha-later");
    let report = Load::start(&server, &later, LoadShape::default());
    std::thread::sleep(Duration::from_millis(500));
    let report = report.finish();
    assert!(report
        .outcomes
        .iter()
        .all(|o| o.reply.is_some_and(|r| r.0 != 'F' && r.0 != 'W')));
    assert!(
        shape.names("A", &later).is_empty(),
        "the dict went back to A"
    );
    assert!(!shape.names("B", &later).is_empty());
}

#[test]
fn postgresql_primary_stopped_replica_promoted_writes_resume() {
    let UnderLoad {
        shape,
        server,
        mut mail,
        scope,
        load,
    } = UnderLoad::start("pgsql", Backend::Pgsql);
    let fault = Instant::now();
    shape.ctl("crash-a");
    // the replica takes no writes until promoted: requests fail fast meanwhile
    std::thread::sleep(Duration::from_millis(500));
    let promoted = shape.ctl("promote-b");
    std::thread::sleep(Duration::from_secs(2));
    let report = load.finish();

    mail.save_and_check(&shape, "B", &server, "after the failover");
    // synchronous replication: every commit the primary acknowledged is on the replica
    let stored = shape.names("B", &scope);
    let figures = report.check(
        "postgresql primary stopped, replica promoted",
        &stored,
        REQUEST_TIMEOUT + MARGIN,
        Some((promoted, FAILOVER)),
    );
    let took = failover_time(&report, fault);
    eprintln!(
        "failover figures [postgresql primary + sync replica]: failover {} ms (last O before, first O after; {} ms of it before the promotion) / acknowledged lost {}",
        took.as_millis(),
        (promoted - fault).as_millis(),
        figures.lost
    );
    assert!(
        figures.failed + figures.uncertain > 0,
        "nothing failed while no server took writes"
    );
}
