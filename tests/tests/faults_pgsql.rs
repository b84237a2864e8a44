//! Faults on PostgreSQL under load (issue 14): an immediate stop (`pg_ctl stop -m immediate`,
//! no checkpoint) and restart with `synchronous_commit = on`, a stall (SIGSTOP of the
//! postmaster and every backend) longer than the request timeout, and requests queued behind
//! others on a stalled PostgreSQL.
//! Its own test binary, so no other test uses PostgreSQL while it is down; the tests of this
//! file take turns.

use std::sync::Mutex;
use std::time::Duration;

use dict_tests::faults::{
    fault_server, queued_requests_on_stalled_backend, stall_under_load, under_load,
};
use dict_tests::service_control::Service;
use dict_tests::Backend;

static POSTGRESQL: Mutex<()> = Mutex::new(());

#[test]
fn postgresql_immediate_stop_under_load_keeps_acknowledged_and_no_failed_commit() {
    let _turn = POSTGRESQL.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Pgsql);
    // With it off an acknowledged commit may die with the server: not ours to lose.
    assert_eq!(server.sql("SHOW synchronous_commit"), "on");
    under_load(&server, "postgresql immediate stop", || {
        let crashed = Service::Pgsql.crash();
        std::thread::sleep(Duration::from_millis(1500));
        crashed.restart()
    });
}

#[test]
fn postgresql_stall_under_load_answers_in_time() {
    let _turn = POSTGRESQL.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Pgsql);
    stall_under_load(&server, "postgresql SIGSTOP");
}

#[test]
fn postgresql_stalled_queued_requests_each_answered_within_the_timeout() {
    let _turn = POSTGRESQL.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Pgsql);
    queued_requests_on_stalled_backend(&server);
}
