//! `dictctl` spells Dovecot 2.4's `doveadm dict` options: `set -e <expire-secs>` (the third
//! field of `B`, protocol 4) and `-t <timestamp-nsecs>` (a `T` command) on set, unset and
//! inc. Checked on the wire and against our server on Redis, where the expiry becomes the
//! key's TTL.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};

use dict_tests::{run_ok, scratch, service_env, unique, workspace_binary, Backend, DictServer};

fn dictctl(args: &[&str]) -> Output {
    Command::new(workspace_binary("dictctl"))
        .args(args)
        .output()
        .expect("run dictctl")
}

fn redis_cli(args: &[&str]) -> String {
    let out = run_ok(
        Command::new("redis-cli")
            .arg("-h")
            .arg(service_env("DICT_TEST_REDIS_HOST"))
            .arg("-p")
            .arg(service_env("DICT_TEST_REDIS_PORT"))
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// What dictctl sends for one command (`URI` in `args` stands for the peer's), read by a
/// listener that answers the commit `O`.
fn sent_lines(args: &[&str]) -> (Vec<String>, Output) {
    let dir = tempfile::Builder::new()
        .prefix("ctl-")
        .tempdir_in(scratch())
        .unwrap();
    let socket = dir.path().join("peer.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let reader = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut lines = Vec::new();
        let mut input = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while input.read_line(&mut line).unwrap() > 0 {
            let done = line.starts_with('C');
            lines.push(line.trim_end_matches('\n').to_string());
            line.clear();
            if done {
                // the hello asked for minor 0: plain ordered replies
                (&stream).write_all(b"O1\n").unwrap();
                break;
            }
        }
        lines
    });
    let uri = format!("proxy:{}:d", socket.display());
    let all: Vec<&str> = args
        .iter()
        .map(|a| if *a == "URI" { uri.as_str() } else { a })
        .collect();
    let out = dictctl(&all);
    // a dictctl that never connects must not leave the listener waiting
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    (reader.join().unwrap(), out)
}

#[test]
fn timestamp_and_expiry_on_the_wire() {
    let (lines, out) = sent_lines(&[
        "--protocol",
        "4",
        "set",
        "-u",
        "bob",
        "-t",
        "1700000000123456789",
        "-e",
        "60",
        "URI",
        "priv/k",
        "v",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines,
        [
            "H4\t0\t0\t\td",
            "B1\tbob\t60",
            "T1\t1700000000\t123456789",
            "S1\tpriv/k\tv",
            "C1"
        ]
    );
    let (lines, out) = sent_lines(&["unset", "-t", "1000000000000000001", "URI", "shared/k"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines[1..],
        ["B1\t", "T1\t1000000000\t1", "U1\tshared/k", "C1"]
    );
    let (lines, out) = sent_lines(&["inc", "-t", "2000000000000000000", "URI", "shared/n", "5"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines[2..], ["T1\t2000000000\t0", "A1\tshared/n\t5", "C1"]);
}

#[test]
fn bad_timestamp_and_expiry_are_usage_errors() {
    let out = dictctl(&["set", "-e", "60", "proxy:/nonexistent:d", "shared/k", "v"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: dict set: -e needs --protocol 4 (a Dovecot 2.4 dict server)\n"
    );
    let out = dictctl(&["set", "-t", "soon", "proxy:/nonexistent:d", "shared/k", "v"]);
    assert_eq!(out.status.code(), Some(64));
    let out = dictctl(&["set", "-e", "-1", "proxy:/nonexistent:d", "shared/k", "v"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn expiry_becomes_the_redis_ttl_on_our_server() {
    let server = DictServer::start(Backend::Redis, "ttl");
    let uri = server.uri();
    let key = format!("shared/{}", unique("ttl"));
    let set = |extra: &[&str], value: &str| {
        let mut args = vec!["--protocol", "4", "set"];
        args.extend_from_slice(extra);
        args.extend([uri.as_str(), key.as_str(), value]);
        let out = dictctl(&args);
        assert!(out.status.success(), "{out:?}");
    };
    set(&["-e", "100", "-t", "1700000000000000000"], "v1");
    // Dovecot's Redis layout: shared/<k> is stored as <prefix><k>
    let stored = format!("{}{}", server.redis_prefix, &key["shared/".len()..]);
    assert_eq!(redis_cli(&["GET", &stored]), "v1");
    let ttl: i64 = redis_cli(&["TTL", &stored]).parse().unwrap();
    assert!((1..=100).contains(&ttl), "TTL {ttl}");
    // without -e the value does not expire
    set(&[], "v2");
    assert_eq!(redis_cli(&["TTL", &stored]), "-1");
    let out = dictctl(&[
        "--protocol",
        "4",
        "unset",
        "-t",
        "1700000000000000000",
        &uri,
        &key,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(redis_cli(&["EXISTS", &stored]), "0");
}
