//! MariaDB restarted under a running server: requests during the outage fail fast with `F`/`W`,
//! requests after it succeed again, and every commit acknowledged with `O` is in the table.
//! Its own test binary, so no other test uses MariaDB while it is down.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dict_tests::{repo_dir, run_ok, service_env, unique, Backend, DictServer};

/// One Dovecot-style connection: hello, B/S/C in one write, the commit's reply letter.
fn commit(server: &DictServer, id: u32, key: &str) -> char {
    let mut s = UnixStream::connect(&server.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "H3\t2\t0\t\t{}\nB{id}\t\nS{id}\t{key}\tv{id}\nC{id}\n",
        server.name
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    loop {
        let line = lines.next().expect("a reply before EOF").expect("read");
        if let Some(rest) = line.strip_prefix('+') {
            let reply = rest.split('\t').nth(1).expect("reply field");
            return reply.chars().next().expect("reply letter");
        }
    }
}

fn mysqld_pid() -> i32 {
    let path = format!("{}/mysql/mysqld.pid", service_env("DICT_TEST_SCRATCH"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .expect("pid")
}

#[test]
fn mariadb_restart_fails_fast_and_loses_no_acknowledged_commit() {
    let server = DictServer::start(Backend::Mysql, "mysql");
    let scope = unique("restart");
    let key = |i: u32| format!("shared/kv/{scope}/k{i}");
    let mut acknowledged = Vec::new();
    let mut id = 0;
    let mut next = |acknowledged: &mut Vec<u32>| {
        id += 1;
        let started = Instant::now();
        let letter = commit(&server, id, &key(id));
        if letter == 'O' {
            acknowledged.push(id);
        }
        (letter, started.elapsed())
    };
    for _ in 0..20 {
        assert_eq!(next(&mut acknowledged).0, 'O', "{}", server.log());
    }

    // Stop MariaDB hard and wait until it is gone.
    let pid = mysqld_pid();
    run_ok(Command::new("kill").arg("-KILL").arg(pid.to_string()));
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && Command::new("kill")
            .arg("-0")
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut outage = Vec::new();
    for _ in 0..5 {
        outage.push(next(&mut acknowledged));
    }
    for (letter, took) in &outage {
        assert!(
            matches!(letter, 'F' | 'W'),
            "a commit during the outage must fail: {outage:?}"
        );
        assert!(
            *took < Duration::from_secs(7),
            "failures must come within the request timeout: {outage:?}"
        );
    }

    // Start it again (same data directory and port).
    run_ok(
        Command::new("bash")
            .arg(repo_dir().join("tests/scripts/services.sh"))
            .arg("start")
            .env("DICT_TEST_SERVICES", "mysql")
            .stdin(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = 0;
    while recovered < 20 {
        let (letter, _) = next(&mut acknowledged);
        if letter == 'O' {
            recovered += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "no recovery after MariaDB came back: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let rows = server.sql(&format!("SELECT name FROM kv WHERE scope = '{scope}'"));
    let stored: std::collections::HashSet<&str> = rows.lines().collect();
    for i in &acknowledged {
        assert!(
            stored.contains(format!("k{i}").as_str()),
            "commit {i} was acknowledged with O but is missing"
        );
    }
}
