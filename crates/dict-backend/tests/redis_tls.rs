//! `tls=yes` against a private TLS-only redis-server with a throwaway CA made by the
//! `openssl` command. A test binary of its own: it points `SSL_CERT_FILE` at that CA for
//! the whole process.

mod redis_env;
mod tls_certs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dict_backend::redis::RedisDict;
use dict_backend::{Change, CommitResult, Dict, Transaction};
use dict_config::RedisParams;
use redis_env::free_port;
use tls_certs::make_certs;

fn set(key: &str, value: &str) -> Transaction {
    Transaction {
        changes: vec![Change::Set {
            key: key.into(),
            value: value.into(),
        }],
        ..Transaction::default()
    }
}

#[tokio::test]
async fn tls_connection_verifies_the_server() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1 127.0.0.2"])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // the only test in this process: nothing else reads the variable
    std::env::set_var("SSL_CERT_FILE", dir.path().join("ca.crt"));

    let params = |host: &str| RedisParams {
        host: host.into(),
        port,
        tls: true,
        timeout_msecs: 3000,
        ..RedisParams::default()
    };
    for host in ["127.0.0.1", "localhost"] {
        let d = RedisDict::connect(&params(host)).unwrap();
        d.check().await.unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(d.commit(set("shared/tls", host)).await, CommitResult::Ok);
        assert_eq!(
            d.lookup(b"shared/tls", b"").await.unwrap(),
            Some(vec![host.as_bytes().to_vec()])
        );
    }
    // the certificate does not name 127.0.0.2
    let d = RedisDict::connect(&params("127.0.0.2")).unwrap();
    let err = d.lookup(b"shared/tls", b"").await.unwrap_err();
    assert!(err.message().contains("certificate"), "{err}");
    // plain TCP to a TLS port fails within the timeout
    let plain = RedisDict::connect(&RedisParams {
        tls: false,
        timeout_msecs: 500,
        ..params("127.0.0.1")
    })
    .unwrap();
    let started = Instant::now();
    assert!(plain.lookup(b"shared/tls", b"").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    let _ = child.kill();
    let _ = child.wait();
}
