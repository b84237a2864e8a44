//! How replies leave the server: with a real Redis behind it, a lookup's `*<n>`
//! announcement waits for its reply, so both go out in one write and the client wakes once
//! (issue 16, the K=1 profile: the separate announcement was one write and one client
//! wake-up per request). The bytes are the same as Dovecot's.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use dict_tests::{redis_cli, redis_del, unique, Backend, DictServer};

#[test]
fn redis_lookup_announcement_and_reply_leave_in_one_write() {
    let server = DictServer::start(Backend::Redis, "redis");
    let key = unique("onewrite");
    let redis_key = format!("{}kv/{key}", server.redis_prefix);
    let status = redis_cli()
        .args(["SET", &redis_key, "v1"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut conn = UnixStream::connect(&server.socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(format!("H3\t2\t0\t\t{}\n", server.name).as_bytes())
        .unwrap();
    for n in 1..=20 {
        conn.write_all(format!("Lshared/kv/{key}\t\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        let mut reads = 0;
        while !text.contains(&format!("+{n}\t")) || !text.ends_with('\n') {
            let mut buf = [0u8; 512];
            let got = conn.read(&mut buf).unwrap();
            assert!(got > 0, "request {n}: the server closed the connection");
            text.push_str(&String::from_utf8_lossy(&buf[..got]));
            reads += 1;
        }
        assert!(
            text.starts_with(&format!("*{n}\n+{n}\tOv1\t")),
            "request {n}: {text:?}"
        );
        assert_eq!(reads, 1, "request {n}: {text:?} came in {reads} reads");
    }
    redis_del(&[&redis_key]);
}
