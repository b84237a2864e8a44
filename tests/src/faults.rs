//! The fault scenarios the `faults_*` test binaries run on each backend: load while a
//! service is stalled or crashed, and requests queued behind others on a stalled backend.
//!
//! The server runs with a short request timeout so that the whole suite stays quick.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::load::{Figures, Load, LoadShape};
use crate::service_control::{redis_key_names, Service};
use crate::wire::{set_commit, RawClient};
use crate::{unique, Backend, DictServer};

/// `[server] request_timeout_ms` of the servers under fault.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// What a reply may take beyond the request timeout: scheduling on a loaded 2-core machine.
pub const MARGIN: Duration = Duration::from_millis(1000);
/// The first `O` must come this soon after the backend is back.
pub const RECOVERY: Duration = Duration::from_secs(1);
/// How long a stall lasts: well past the request timeout.
pub const STALL: Duration = Duration::from_millis(2500);

/// The service behind a backend.
pub fn service_of(backend: Backend) -> Service {
    match backend {
        Backend::Mysql => Service::Mysql,
        Backend::Pgsql => Service::Pgsql,
        Backend::Redis => Service::Redis,
        Backend::Sqlite => panic!("SQLite is no service"),
    }
}

/// A server on `backend` with [`REQUEST_TIMEOUT`].
pub fn fault_server(backend: Backend) -> DictServer {
    DictServer::start_with_toml(
        backend,
        backend.driver(),
        &format!(
            "[server]\nrequest_timeout_ms = {}\n",
            REQUEST_TIMEOUT.as_millis()
        ),
    )
}

/// The key names under `shared/kv/<scope>/` the backend holds, read directly.
pub fn stored_names(server: &DictServer, scope: &str) -> HashSet<String> {
    match server.backend {
        // Dovecot's layout: the prefix, then the key without `shared/`.
        Backend::Redis => redis_key_names(&format!("{}kv/{scope}/", server.redis_prefix))
            .into_iter()
            .collect(),
        _ => server
            .sql(&format!("SELECT name FROM kv WHERE scope = '{scope}'"))
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// Runs load on `server`, injects `fault` after a second (it returns when the backend is
/// back), keeps the load on a little longer, then checks and prints the figures.
pub fn under_load(server: &DictServer, scenario: &str, fault: impl FnOnce() -> Instant) -> Figures {
    let scope = unique("fault");
    let load = Load::start(server, &scope, LoadShape::default());
    std::thread::sleep(Duration::from_secs(1));
    let back = fault();
    std::thread::sleep(Duration::from_millis(1500));
    let report = load.finish();
    // A commit that timed out may still reach the backend; give it time to show.
    std::thread::sleep(Duration::from_millis(500));
    let stored = stored_names(server, &scope);
    let figures = report.check(
        scenario,
        &stored,
        REQUEST_TIMEOUT + MARGIN,
        Some((back, RECOVERY)),
    );
    if figures.failed + figures.uncertain == 0 {
        eprintln!("[{scenario}] note: no request failed during the fault");
    }
    figures
}

/// A stall of [`STALL`] under load.
pub fn stall_under_load(server: &DictServer, scenario: &str) -> Figures {
    let service = service_of(server.backend);
    under_load(server, scenario, || {
        let frozen = service.freeze();
        std::thread::sleep(STALL);
        frozen.thaw()
    })
}

/// Issue 14's first reproduction: with the backend stalled, a hello, three transactions and
/// a lookup in one write. Every reply must come within the request timeout of the request
/// being read (the write, here) plus a small margin, however many requests are queued
/// before it. Afterwards no commit answered `F` may have left its key behind.
pub fn queued_requests_on_stalled_backend(server: &DictServer) {
    let scope = unique("queued");
    let key = format!("shared/kv/{scope}/a");
    let mut bytes = format!("H3\t2\t0\t\t{}\n", server.name);
    for id in 1..=3 {
        bytes += &set_commit(id, &key, "1");
    }
    bytes += &format!("L{key}\t\n");
    let service = service_of(server.backend);
    let frozen = service.freeze();
    let mut client = RawClient::connect_bare(&server.socket).expect("connect");
    let sent = Instant::now();
    client.send(&bytes).expect("write");
    let mut replies = Vec::new();
    for _ in 0..4 {
        match client.read_reply(sent + Duration::from_secs(30)) {
            Ok(reply) => replies.push(reply),
            Err(end) => panic!("{end:?} after {replies:?}"),
        }
    }
    drop(frozen);
    let waits: Vec<(u32, String, u128)> = replies
        .iter()
        .map(|r| {
            let text = r.text.split('\t').next().unwrap_or("").to_string();
            (r.n, text, (r.at - sent).as_millis())
        })
        .collect();
    eprintln!(
        "fault figures [queued requests, {} stalled]: {waits:?}",
        service.name()
    );
    let bound = REQUEST_TIMEOUT + Duration::from_millis(600);
    for (reply, (n, text, ms)) in replies.iter().zip(&waits) {
        assert!(
            reply.at - sent <= bound,
            "request {n} answered {text:?} after {ms} ms, bound {} ms: {waits:?}",
            bound.as_millis()
        );
        assert!(
            matches!(reply.letter(), 'F' | 'W'),
            "request {n} cannot succeed on a stalled backend: {waits:?}"
        );
    }
    // Once the backend runs again, a commit answered F must not have written anything.
    std::thread::sleep(Duration::from_millis(1500));
    // Replies carry their request's number and may come in any order: the commits are
    // requests 1 to 3, the lookup is 4.
    let commits: Vec<char> = replies
        .iter()
        .filter(|r| (1..=3).contains(&r.n))
        .map(|r| r.letter())
        .collect();
    assert_eq!(commits.len(), 3, "a reply to each commit: {waits:?}");
    if commits.iter().all(|&l| l == 'F') {
        assert!(
            stored_names(server, &scope).is_empty(),
            "every commit was answered F, yet the key was written"
        );
    }
    // And the server serves again.
    let mut client = RawClient::connect(&server.socket, &server.name).expect("connect");
    client.send(&set_commit(1, &key, "2")).unwrap();
    let reply = client
        .read_reply(Instant::now() + REQUEST_TIMEOUT + MARGIN)
        .expect("a commit after the stall");
    assert_eq!(reply.letter(), 'O', "{}", reply.text);
}
