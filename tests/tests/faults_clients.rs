//! Hostile and slow clients (issue 14): a client that pipelines and never reads, 10,000 idle
//! connections, transactions holding too many bytes, connections that never say hello or
//! go quiet, and more clients than `max_connections`. The server must stay within bounded
//! memory, close the offender, and keep serving everyone else. On SQLite: no service is
//! stopped here; one test runs on MariaDB.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dict_tests::service_control::rss_kib;
use dict_tests::wire::{set_commit, RawClient, ReadEnd};
use dict_tests::{Backend, DictServer};

/// What a well-behaved client may wait for a reply while others misbehave.
const PROMPT: Duration = Duration::from_secs(2);

fn server(toml: &str) -> DictServer {
    DictServer::start_with_toml(
        Backend::Sqlite,
        "sqlite",
        &format!("[server]\nrequest_timeout_ms = 1000\n{toml}"),
    )
}

/// A fresh connection that commits `key` and looks it up; both must come within [`PROMPT`].
fn well_behaved(server: &DictServer, key: &str) -> Duration {
    let started = Instant::now();
    let mut client = RawClient::connect(&server.socket, &server.name).expect("connect");
    client
        .send(&format!("{}L{key}\t\n", set_commit(1, key, "ok")))
        .expect("write");
    let mut replies = Vec::new();
    for _ in 0..2 {
        let reply = client
            .read_reply(started + PROMPT)
            .unwrap_or_else(|e| panic!("a well-behaved client got {e:?}: {}", server.log()));
        replies.push((
            reply.n,
            reply.text.split('\t').next().unwrap_or("").to_string(),
        ));
    }
    // Replies may come in either order; their numbers say which is which.
    replies.sort();
    assert_eq!(
        replies,
        [(1, "O1".to_string()), (2, "Ook".to_string())],
        "commit and lookup of a well-behaved client: {}",
        server.log()
    );
    started.elapsed()
}

/// A connection that sends `first`, then `line` `count` times (in writes of up to 1000 lines),
/// from a thread, and never reads. It stops writing when the server closes the connection,
/// and notices a close that comes after its last write too.
struct Flood {
    written: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Flood {
    fn start(server: &DictServer, first: &str, line: &str, count: usize) -> Flood {
        let client = RawClient::connect(&server.socket, &server.name).expect("connect");
        let mut stream = client.stream().try_clone().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, c, s) = (written.clone(), closed.clone(), stop.clone());
        let per_write = count.min(1000);
        let bytes = first.to_string() + &line.repeat(per_write);
        // After the first round only the repeated lines are sent again.
        let repeat_from = first.len();
        let thread = std::thread::spawn(move || {
            let _keep_open = client;
            let mut sent = 0;
            let mut offset = 0;
            while sent < count && !s.load(Ordering::Relaxed) {
                match stream.write(&bytes.as_bytes()[offset..]) {
                    Ok(n) => {
                        w.fetch_add(n as u64, Ordering::Relaxed);
                        offset += n;
                        if offset == bytes.len() {
                            offset = repeat_from;
                            sent += per_write;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => {
                        c.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            // Everything written: the server may still close the connection while it reads
            // what the socket holds (a cap reached late), which a peek sees as end of file.
            while !s.load(Ordering::Relaxed) {
                if !c.load(Ordering::Relaxed) && peer_closed(&stream) {
                    c.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Flood {
            written,
            closed,
            stop,
            thread,
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops writing and closes the connection.
    fn end(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// The server closed `stream` and sent nothing more: a peek finds end of file (without
/// taking any byte, so the connection still reads nothing).
fn peer_closed(stream: &UnixStream) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(
        recv(stream.as_raw_fd(), &mut byte, flags),
        Ok(0) | Err(Errno::ECONNRESET)
    )
}

/// Samples the server's RSS every 50 ms for `time` or until `done`; the peak in KiB.
fn peak_rss(server: &DictServer, time: Duration, done: impl Fn() -> bool) -> u64 {
    let mut peak = rss_kib(server.pid());
    let until = Instant::now() + time;
    while Instant::now() < until && !done() {
        peak = peak.max(rss_kib(server.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    peak.max(rss_kib(server.pid()))
}

#[test]
fn client_pipelining_200000_lookups_without_reading_keeps_memory_bounded() {
    let server = server("");
    well_behaved(&server, "shared/kv/pipe/warm");
    let before = rss_kib(server.pid());
    let flood = Flood::start(&server, "", "Lshared/kv/pipe/missing\t\n", 200_000);
    let mut peak = before;
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        slowest = slowest.max(well_behaved(&server, &format!("shared/kv/pipe/k{i}")));
        peak = peak_rss(&server, Duration::from_millis(100), || false).max(peak);
    }
    let written = flood.written();
    flood.end();
    eprintln!(
        "fault figures [pipelining client never reads]: {written} bytes taken, RSS {before} -> peak {peak} KiB, others' slowest {} ms",
        slowest.as_millis()
    );
    assert!(
        peak - before < 48 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
}

/// A client that pipelines lookups on MariaDB and never reads holds up no one: lookups of
/// one map share statements across connections, and one of that client's lookups may be
/// carrying other connections' lookups when its connection stops to wait for the client.
#[test]
fn client_pipelining_lookups_without_reading_holds_up_no_one_on_mariadb() {
    pipelining_client_holds_up_no_one(Backend::Mysql, "MariaDB");
}

/// The same on Redis: every request of the dict shares redis-rs' bounded request channel,
/// and a lookup run inside a connection that stopped (not in a task of its own) would keep
/// the room in it that it is given.
#[test]
fn client_pipelining_lookups_without_reading_holds_up_no_one_on_redis() {
    pipelining_client_holds_up_no_one(Backend::Redis, "Redis");
}

/// The same on SQLite, whose lookups run inside their connection's task (they stand alone).
#[test]
fn client_pipelining_lookups_without_reading_holds_up_no_one_on_sqlite() {
    pipelining_client_holds_up_no_one(Backend::Sqlite, "SQLite");
}

/// For 4 s a client pipelines lookups and never reads, while others' lookups (each after a
/// commit of the value) are answered within [`PROMPT`].
fn pipelining_client_holds_up_no_one(backend: Backend, name: &str) {
    let dict = format!("{backend:?}").to_lowercase();
    let server =
        DictServer::start_with_toml(backend, &dict, "[server]\nrequest_timeout_ms = 1000\n");
    well_behaved(&server, "shared/kv/pipe/warm");
    let flood = Flood::start(&server, "", "Lshared/kv/pipe/missing\t\n", 200_000);
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        // Each lookup is answered within PROMPT, with the value just committed.
        slowest = slowest.max(well_behaved(&server, &format!("shared/kv/pipe/k{i}")));
    }
    let written = flood.written();
    flood.end();
    eprintln!(
        "fault figures [pipelining client never reads, {name}]: {written} bytes taken, {i} well-behaved rounds, slowest {} ms",
        slowest.as_millis()
    );
    assert!(written > 0, "the flood wrote nothing");
}

/// Raises this process's open-file limit (the server inherits it) to at least `need`.
fn raise_nofile(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= need,
        "RLIMIT_NOFILE hard limit {hard} < {need}: raise it (ulimit -Hn)"
    );
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

#[test]
fn ten_thousand_idle_connections_leave_others_served() {
    raise_nofile(10_000 + 200);
    let server = DictServer::start_with_toml(
        Backend::Sqlite,
        "sqlite",
        "[listener]\nmax_connections = 10100\n",
    );
    let before = rss_kib(server.pid());
    let started = Instant::now();
    let hello = format!("H3\t2\t0\t\t{}\n", server.name);
    let idle: Vec<UnixStream> = (0..10_000)
        .map(|i| {
            let mut s = UnixStream::connect(&server.socket)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.write_all(hello.as_bytes()).unwrap();
            s
        })
        .collect();
    let opened = started.elapsed();
    let took = well_behaved(&server, "shared/kv/idle/k");
    let rss = rss_kib(server.pid());
    eprintln!(
        "fault figures [10000 idle connections]: opened in {} ms, another client served in {} ms, RSS {before} -> {rss} KiB",
        opened.as_millis(),
        took.as_millis()
    );
    // About 11 KiB each today; a buffer of 64 KiB per idle connection would break this.
    assert!(
        rss - before < 256 * 1024,
        "10000 idle connections took {} KiB",
        rss - before
    );
    drop(idle);
    well_behaved(&server, "shared/kv/idle/k2");
}

/// A set of a 32 KiB value in transaction 1 (a line may have 64 KiB).
fn big_set(name: &str) -> String {
    format!("S1\tshared/kv/big/{name}\t{}\n", "x".repeat(32 * 1024))
}

#[test]
fn transaction_bytes_past_the_connection_cap_close_that_connection() {
    let server = server("max_transaction_bytes_per_connection = 1048576\n");
    let before = rss_kib(server.pid());
    // 64 MiB of sets in one open transaction.
    let flood = Flood::start(&server, "B1\t\n", &big_set("v"), 2000);
    let peak = peak_rss(&server, Duration::from_secs(5), || flood.closed());
    let (closed, written) = (flood.closed(), flood.written());
    let took = well_behaved(&server, "shared/kv/big/other");
    flood.end();
    eprintln!(
        "fault figures [transaction over the connection cap]: closed {closed} after {written} bytes, RSS {before} -> peak {peak} KiB, another client served in {} ms",
        took.as_millis()
    );
    assert!(
        closed,
        "the server took {written} bytes of one open transaction without closing it"
    );
    assert!(
        peak - before < 32 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("transaction")),
        "no warning logged: {}",
        server.log()
    );
}

#[test]
fn transaction_bytes_past_the_total_cap_close_a_connection() {
    let server = server(
        "max_transaction_bytes_per_connection = 4194304\nmax_transaction_bytes_total = 6291456\n",
    );
    // Three open transactions of 3 MiB each: each under its own cap, together over the total.
    let floods: Vec<Flood> = (0..3)
        .map(|i| Flood::start(&server, "B1\t\n", &big_set(&format!("t{i}")), 96))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !floods.iter().any(Flood::closed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed = floods.iter().filter(|f| f.closed()).count();
    let written: Vec<u64> = floods.iter().map(Flood::written).collect();
    for flood in floods {
        flood.end();
    }
    eprintln!("fault figures [transactions over the total cap]: {closed} of 3 closed, bytes written {written:?}");
    assert!(
        closed > 0,
        "9 MiB held in open transactions past a 6 MiB total cap"
    );
    // Their bytes are released with their connections.
    std::thread::sleep(Duration::from_millis(200));
    well_behaved(&server, "shared/kv/big/after");
}

/// A lookup on `client` (its `n`-th reply-bearing command), answered within [`PROMPT`].
fn lookup(client: &mut RawClient, key: &str) -> Instant {
    let sent = Instant::now();
    client.send(&format!("L{key}\t\n")).expect("write");
    let reply = client
        .read_reply(sent + PROMPT)
        .unwrap_or_else(|e| panic!("lookup of {key}: {e:?}"));
    assert!(matches!(reply.letter(), 'O' | 'N'), "{}", reply.text);
    reply.at
}

#[test]
fn connection_without_hello_is_closed_after_the_hello_timeout() {
    let server = server("hello_timeout_ms = 500\nidle_timeout_ms = 60000\n");
    let started = Instant::now();
    let mut silent = RawClient::connect_bare(&server.socket).expect("connect");
    let mut polite = RawClient::connect(&server.socket, &server.name).expect("connect");
    let closed = silent
        .wait_closed(started + Duration::from_secs(5))
        .map(|at| at - started);
    eprintln!("fault figures [no hello, hello_timeout_ms = 500]: closed after {closed:?}");
    let closed = closed.expect("a connection without a hello must be closed");
    assert!(
        closed >= Duration::from_millis(400) && closed <= Duration::from_millis(2000),
        "closed after {closed:?}, hello_timeout_ms = 500"
    );
    // A client that said hello is not bound by it.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    lookup(&mut polite, "shared/kv/hello/k");
}

#[test]
fn quiet_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let server = server("idle_timeout_ms = 700\n");
    let mut quiet = RawClient::connect(&server.socket, &server.name).expect("connect");
    let mut busy = RawClient::connect(&server.socket, &server.name).expect("connect");
    let last = lookup(&mut quiet, "shared/kv/idle/q");
    let busy = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            lookup(&mut busy, "shared/kv/idle/b");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let closed = quiet
        .wait_closed(last + Duration::from_secs(5))
        .map(|at| at - last);
    eprintln!("fault figures [idle, idle_timeout_ms = 700]: closed after {closed:?}");
    let closed = closed.expect("an idle connection must be closed");
    assert!(
        closed >= Duration::from_millis(600) && closed <= Duration::from_millis(2200),
        "closed {closed:?} after its last reply, idle_timeout_ms = 700"
    );
    busy.join()
        .expect("a busy connection stays open and served");
}

#[test]
fn client_past_max_connections_is_served_or_refused_promptly() {
    let server = DictServer::start_with_toml(
        Backend::Sqlite,
        "sqlite",
        "[listener]\nmax_connections = 2\n[server]\nrequest_timeout_ms = 1000\n",
    );
    let mut first = RawClient::connect(&server.socket, &server.name).expect("connect");
    let mut second = RawClient::connect(&server.socket, &server.name).expect("connect");
    lookup(&mut first, "shared/kv/max/a");
    lookup(&mut second, "shared/kv/max/b");
    let started = Instant::now();
    let outcome = match RawClient::connect(&server.socket, &server.name) {
        Err(e) => format!("refused at connect: {e}"),
        Ok(mut third) => {
            let _ = third.send("Lshared/kv/max/c\t\n");
            match third.read_reply(started + PROMPT) {
                Ok(reply) => format!("served: {}", reply.text),
                Err(ReadEnd::Closed) => "closed".to_string(),
                Err(ReadEnd::TimedOut) => {
                    panic!("a third client with max_connections = 2 was left hanging")
                }
            }
        }
    };
    eprintln!(
        "fault figures [max_connections = 2, third client]: {outcome} after {} ms",
        started.elapsed().as_millis()
    );
    // A freed slot is taken again.
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = RawClient::connect(&server.socket, &server.name).expect("connect");
    lookup(&mut fourth, "shared/kv/max/d");
    lookup(&mut second, "shared/kv/max/b");
}
