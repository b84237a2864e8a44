//! Faults on MariaDB under load (issue 14): `kill -9` and restart, a stall (SIGSTOP) longer
//! than the request timeout, and requests queued behind others on a stalled MariaDB.
//! Its own test binary, so no other test uses MariaDB while it is down; the tests of this
//! file take turns.

use std::sync::Mutex;
use std::time::Duration;

use dict_tests::faults::{
    fault_server, queued_requests_on_stalled_backend, stall_under_load, under_load,
};
use dict_tests::service_control::Service;
use dict_tests::Backend;

static MARIADB: Mutex<()> = Mutex::new(());

#[test]
fn mariadb_kill9_under_load_loses_no_acknowledged_commit() {
    let _turn = MARIADB.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Mysql);
    under_load(&server, "mariadb kill -9", || {
        let crashed = Service::Mysql.crash();
        std::thread::sleep(Duration::from_millis(1500));
        crashed.restart()
    });
}

#[test]
fn mariadb_stall_under_load_answers_in_time() {
    let _turn = MARIADB.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Mysql);
    stall_under_load(&server, "mariadb SIGSTOP");
}

#[test]
fn mariadb_stalled_queued_requests_each_answered_within_the_timeout() {
    let _turn = MARIADB.lock().unwrap_or_else(|e| e.into_inner());
    let server = fault_server(Backend::Mysql);
    queued_requests_on_stalled_backend(&server);
}
