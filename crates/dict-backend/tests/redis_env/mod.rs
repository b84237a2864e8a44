//! Where the test Redis is (`DICT_TEST_REDIS_*` from `tests/scripts/services.sh env`),
//! key prefixes of a test's own, and free ports, for the Redis suites.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Env {
    pub host: String,
    pub port: u16,
    pub socket: PathBuf,
}

pub fn env() -> Env {
    let get = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{name} is not set: start redis with `DICT_TEST_SERVICES=redis bash \
                 tests/scripts/services.sh start` and run the tests under \
                 `eval \"$(bash tests/scripts/services.sh env)\"`"
                )
            })
    };
    Env {
        host: get("DICT_TEST_REDIS_HOST"),
        port: get("DICT_TEST_REDIS_PORT")
            .parse()
            .expect("DICT_TEST_REDIS_PORT is a port number"),
        socket: get("DICT_TEST_REDIS_SOCKET").into(),
    }
}

pub static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A key prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "dtest-{}-{}-{nanos}/",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
