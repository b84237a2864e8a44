//! Faults on Redis under load (issue 14): a stall (SIGSTOP) longer than the request timeout,
//! the server's connections closed by `CLIENT KILL`, and requests queued behind others on a
//! stalled Redis. Its own test binary, so no other test uses Redis while it is down; the
//! tests of this file take turns.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dict_tests::faults::{
    fault_server, queued_requests_on_stalled_backend, stall_under_load, under_load,
};
use dict_tests::service_control::redis_kill_clients;
use dict_tests::Backend;

static REDIS: Mutex<()> = Mutex::new(());

#[test]
fn redis_stall_under_load_answers_in_time() {
    let _turn = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Redis);
    stall_under_load(&server, "redis SIGSTOP");
}

#[test]
fn redis_client_kill_under_load_loses_no_acknowledged_commit() {
    let _turn = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Redis);
    under_load(&server, "redis CLIENT KILL", || {
        let mut killed = 0;
        for _ in 0..5 {
            killed += redis_kill_clients();
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(killed > 0, "CLIENT KILL found no connection of the server");
        Instant::now()
    });
}

#[test]
fn redis_stalled_queued_requests_each_answered_within_the_timeout() {
    let _turn = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Redis);
    queued_requests_on_stalled_backend(&server);
}
