//! Raw protocol exchanges sent byte for byte to Dovecot's own dict server and to ours, for
//! the differential tests against Dovecot 2.3 (`tests/dovecot_compat.rs`) and 2.4
//! (`tests/dovecot24.rs`): the cases, the exchange, and dumps of what a store holds.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::run_ok;

/// One exchange of raw protocol lines, sent to Dovecot's server and to ours on the same
/// store (first one, then the other, the store emptied in between): the replies and the
/// rows left must be the same.
pub struct RawCase {
    /// What the case shows.
    pub what: &'static str,
    /// The dicts (`sq`, `my`, `pg`, `r`) the case runs on.
    pub dicts: &'static [&'static str],
    /// SQL run before each side (`{p}`: the table prefix), on the SQL dicts.
    pub setup: &'static [&'static str],
    /// The command lines, without their newline.
    pub lines: &'static [&'static [u8]],
}

/// The cases of the issue that made these differential tests.
pub const RAW_CASES: &[RawCase] = &[
    RawCase {
        what: "text that isn't UTF-8: stored unchanged or refused, never changed",
        dicts: &["sq", "my", "pg", "r"],
        setup: &[],
        lines: &[
            b"B1\t",
            b"S1\tshared/kv/x/y\t\xff\xfe",
            b"C1",
            b"Lshared/kv/x/y\t",
            b"Lshared/kv/x/\xc3\xbf\xc3\xbe\t",
            b"B2\t",
            b"S2\tshared/kv/x/z\xff\tv",
            b"C2",
            b"Lshared/kv/x/z\xff\t",
            b"B3\t\xffu",
            b"S3\tpriv/quota/storage\t5",
            b"C3",
            b"Lpriv/quota/storage\t\xffu",
        ],
    },
    RawCase {
        what: "iteration over non-UTF-8 text, sorted by key and by value",
        dicts: &["sq", "my", "pg"],
        setup: &[],
        lines: &[
            b"B1\t",
            b"S1\tshared/kv/s/a\t\x80",
            b"S1\tshared/kv/s/b\t\xc3\xa9",
            b"S1\tshared/kv/s/c\x80\tb",
            b"C1",
            b"I3\t0\tshared/kv/s/\t",
            b"I5\t0\tshared/kv/s/\t",
            b"I1\t0\tshared/kv/s\x80/\t",
        ],
    },
    RawCase {
        what: "a row Dovecot wrote with a non-UTF-8 key: found, listed, updated in place",
        dicts: &["sq"],
        setup: &[
            "INSERT INTO {p}kv (scope, name, value) VALUES ('d', CAST(X'FFFE' AS TEXT), 'old')",
        ],
        lines: &[
            b"Lshared/kv/d/\xff\xfe\t",
            b"B1\t",
            b"S1\tshared/kv/d/\xff\xfe\tnew",
            b"C1",
            b"I1\t0\tshared/kv/d/\t",
        ],
    },
    RawCase {
        what: "a bad value replaced by a later set of the same key still fails the commit",
        dicts: &["sq", "my", "pg", "r"],
        setup: &[],
        lines: &[
            b"B1\tu",
            b"S1\tpriv/quota/storage\tabc",
            b"S1\tpriv/quota/storage\t5",
            b"C1",
            b"B2\tu",
            b"S2\tpriv/quota/storage\t7",
            b"S2\tpriv/quota/messages\tx",
            b"S2\tpriv/quota/messages\t1",
            b"C2",
            b"Lpriv/quota/storage\tu",
        ],
    },
    RawCase {
        what: "EXACT_KEY with RECURSE reads the first matching map only",
        dicts: &["sq", "my", "pg"],
        setup: &[],
        lines: &[
            b"B1\t",
            b"S1\tshared/kv/a/b\t1",
            b"S1\tshared/bench/zz\t2",
            b"C1",
            b"I17\t0\tshared/\t",
            b"I1\t0\tshared/\t",
        ],
    },
    RawCase {
        what: "an increment of a NULL column (NOTFOUND on MariaDB, which counts changed rows)",
        dicts: &["sq", "my"],
        setup: &["INSERT INTO {p}kv (scope, name, value) VALUES ('n', 'n', NULL)"],
        lines: &[b"B1\t", b"A1\tshared/kv/n/n\t5", b"C1", b"Lshared/kv/n/n\t"],
    },
    RawCase {
        what: "increments that cancel out change no row (NOTFOUND on MariaDB)",
        dicts: &["my"],
        setup: &["INSERT INTO {p}quota (username, bytes, messages) VALUES ('u', 10, 1)"],
        lines: &[
            b"B1\tu",
            b"A1\tpriv/quota/storage\t5",
            b"A1\tpriv/quota/storage\t-5",
            b"C1",
            b"B2\tu",
            b"A2\tpriv/quota/storage\t5",
            b"A2\tpriv/quota/messages\t1",
            b"A2\tpriv/quota/storage\t-5",
            b"C2",
            b"Lpriv/quota/messages\tu",
        ],
    },
];

/// Sends `hello` (without its newline) and `lines` one at a time, waiting for the replies
/// of each lookup, iteration and commit; returns the replies, one string per line
/// (escaped), without the timing fields of the async styles.
pub fn raw_exchange(socket: &Path, hello: &str, lines: &[&[u8]]) -> Vec<String> {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer.write_all(format!("{hello}\n").as_bytes()).unwrap();
    let mut replies = Vec::new();
    for line in lines {
        writer.write_all(line).unwrap();
        writer.write_all(b"\n").unwrap();
        let (lookup, iterate) = (line[0] == b'L', line[0] == b'I');
        if !lookup && !iterate && line[0] != b'C' {
            continue;
        }
        loop {
            let mut reply = Vec::new();
            if let Err(e) = reader.read_until(b'\n', &mut reply) {
                panic!(
                    "{}: {hello}: no reply to {:?} ({e}); so far: {replies:?}",
                    socket.display(),
                    line.escape_ascii().to_string()
                );
            }
            assert!(reply.ends_with(b"\n"), "connection closed after {line:?}");
            let kept = untimed(&reply);
            replies.push(kept.join(&b'\t').escape_ascii().to_string());
            let done = kept[0].starts_with(b"+")
                && (!iterate
                    || (kept.len() == 2 && kept[1].is_empty())
                    || kept[1].starts_with(b"F"));
            if done {
                break;
            }
        }
    }
    replies
}

/// The TAB-separated fields of a reply line (with its newline), without the four timing
/// fields that end a final reply: `+<id>\t<reply>[\t<4 timing fields>]`.
fn untimed(reply: &[u8]) -> Vec<&[u8]> {
    let fields: Vec<&[u8]> = reply[..reply.len() - 1].split(|&b| b == b'\t').collect();
    let timed = fields.len() >= 6
        && fields[fields.len() - 4..]
            .iter()
            .all(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
    let keep = if timed {
        fields.len() - 4
    } else {
        fields.len()
    };
    fields[..keep].to_vec()
}

/// Sends `hello` and `lines` in one write and reads until `finals` final replies (`+`
/// lines ending a lookup, an iteration or a commit) have come; returns the `+` lines
/// (escaped, timing fields cut) ordered by command number, each command's in the order
/// they came: the async styles may answer a later command first.
pub fn one_write_exchange(
    socket: &Path,
    hello: &str,
    lines: &[&[u8]],
    finals: usize,
) -> Vec<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut input = format!("{hello}\n").into_bytes();
    for line in lines {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    stream.write_all(&input).unwrap();
    let mut reader = BufReader::new(stream);
    let mut replies: Vec<(u32, String)> = Vec::new();
    let mut done = 0;
    while done < finals {
        let mut reply = Vec::new();
        if let Err(e) = reader.read_until(b'\n', &mut reply) {
            panic!("{}: {hello}: {e}; so far: {replies:?}", socket.display());
        }
        assert!(
            reply.ends_with(b"\n"),
            "{}: {hello}: closed; so far: {replies:?}",
            socket.display()
        );
        let kept = untimed(&reply);
        let Some(id) = kept[0].strip_prefix(b"+") else {
            continue;
        };
        let id: u32 = std::str::from_utf8(id).unwrap().parse().unwrap();
        // An iteration's rows have a key and a value; its end, a lookup or a commit not.
        if kept.len() != 3 || kept[1].first() == Some(&b'F') {
            done += 1;
        }
        replies.push((id, kept.join(&b'\t').escape_ascii().to_string()));
    }
    replies.sort_by_key(|(id, _)| *id);
    replies.into_iter().map(|(_, r)| r).collect()
}

/// Every row of the `quota` and `kv` tables of a SQLite file, each column as its storage
/// class and its bytes in hex, one table after the other.
pub fn sqlite_dump(db: &Path) -> String {
    let mut out = String::new();
    for (table, cols) in [
        ("quota", ["username", "bytes", "messages"]),
        ("kv", ["scope", "name", "value"]),
    ] {
        let select: Vec<String> = cols
            .iter()
            .map(|c| format!("typeof({c}), hex({c})"))
            .collect();
        out += &crate::sql_query(
            crate::Backend::Sqlite,
            Some(db),
            &format!("SELECT {} FROM {table} ORDER BY 2, 4", select.join(", ")),
        );
        out += "\n";
    }
    out
}

/// Every Redis key under `prefix` (the prefix cut, escaped) with its value as `redis-cli`
/// quotes it, sorted.
pub fn redis_dump(prefix: &str) -> String {
    let mut lines: Vec<String> = redis_keys(prefix)
        .iter()
        .map(|key| {
            let out = run_ok(
                crate::redis_cli()
                    .arg("--no-raw")
                    .arg("GET")
                    .arg(std::ffi::OsStr::from_bytes(key)),
            );
            format!(
                "{} {}\n",
                key[prefix.len()..].escape_ascii(),
                String::from_utf8_lossy(&out.stdout).trim_end()
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// Deletes every Redis key under `prefix`.
pub fn redis_wipe(prefix: &str) {
    for key in redis_keys(prefix) {
        run_ok(
            crate::redis_cli()
                .arg("DEL")
                .arg(std::ffi::OsStr::from_bytes(&key)),
        );
    }
}

/// The Redis keys under `prefix`, as bytes.
fn redis_keys(prefix: &str) -> Vec<Vec<u8>> {
    let out = run_ok(
        crate::redis_cli()
            .arg("--scan")
            .arg("--pattern")
            .arg(format!("{prefix}*")),
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|k| !k.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}
