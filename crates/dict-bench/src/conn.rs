//! Connection workers. A persistent worker keeps up to `depth` operations in flight on one
//! connection and matches replies through the `*<n>` / `+<n>` async ids (protocol-spec §5.1); a
//! reconnect worker does what doveadm and quota_clone do: connect, hello and one
//! operation in one write, wait for the reply, close. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dict_protocol::codec::LineDecoder;
use dict_protocol::session::client::{ClientSession, Received};
use dict_protocol::ReplyKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Barrier;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;

use crate::stats::{Outcome, Stats};
use crate::workload::{OpKind, OpSpec, Reply, Rng, Workload};

/// Longest server line accepted (iteration rows of big values).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// What all workers of a run share.
#[derive(Debug)]
pub struct Run {
    pub socket: PathBuf,
    /// The hello line, LF included.
    pub hello: Vec<u8>,
    pub spec: OpSpec,
    /// Operations in flight per persistent connection.
    pub depth: usize,
    /// Longest wait for any one reply, write or connect.
    pub timeout: Duration,
    /// Origin of the deadlines below.
    pub base: Instant,
    /// No operation starts after `base` + this (set when the clock starts).
    pub deadline_ns: AtomicU64,
    /// No wait goes past `base` + this, whatever is pending.
    pub hard_deadline_ns: AtomicU64,
    /// At most this many operations in total.
    pub count: Option<u64>,
    pub issued: AtomicU64,
    pub seed: u64,
}

/// Why a connection was given up.
enum Broken {
    Timeout(&'static str),
    Closed,
    Io(std::io::Error),
    Protocol(String),
}

impl Run {
    /// No operation starts after this.
    pub fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::Relaxed))
    }

    /// No wait goes past this.
    pub fn hard_deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.hard_deadline_ns.load(Ordering::Relaxed))
    }

    /// Starts the clock: operations may start until `deadline`; replies still in flight
    /// then get one more timeout.
    pub fn set_deadline(&self, deadline: Instant) {
        let ns =
            |t: Instant| u64::try_from(t.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let hard = deadline + self.timeout + Duration::from_secs(1);
        self.hard_deadline_ns.store(ns(hard), Ordering::Relaxed);
        self.deadline_ns.store(ns(deadline), Ordering::Relaxed);
    }

    /// Takes the right to start one more operation.
    fn claim(&self) -> bool {
        if Instant::now() >= self.deadline() {
            return false;
        }
        match self.count {
            Some(limit) => self.issued.fetch_add(1, Ordering::Relaxed) < limit,
            None => {
                self.issued.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    fn active(&self) -> bool {
        Instant::now() < self.deadline()
            && self
                .count
                .is_none_or(|c| self.issued.load(Ordering::Relaxed) < c)
    }

    /// The end of a wait that starts now.
    fn wait_until(&self) -> Instant {
        (Instant::now() + self.timeout).min(self.hard_deadline())
    }

    async fn connect(&self) -> Result<UnixStream, Broken> {
        match timeout_at(self.wait_until(), connect_unix(&self.socket)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Broken::Io(e)),
            Err(_) => Err(Broken::Timeout("connect")),
        }
    }

    async fn write(&self, stream: &mut UnixStream, buf: &[u8]) -> Result<(), Broken> {
        match timeout_at(self.wait_until(), stream.write_all(buf)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Broken::Io(e)),
            Err(_) => Err(Broken::Timeout("write")),
        }
    }

    /// Reads more input; EOF is [`Broken::Closed`].
    async fn read(&self, stream: &mut UnixStream, buf: &mut BytesMut) -> Result<(), Broken> {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match timeout_at(self.wait_until(), stream.read_buf(buf)).await {
            Ok(Ok(0)) => Err(Broken::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Broken::Io(e)),
            Err(_) => Err(Broken::Timeout("reply")),
        }
    }
}

/// connect(), retried while the listen backlog is full: a non-blocking connect to a UNIX
/// socket fails with EAGAIN then, where a TCP client would wait. The caller bounds it.
pub async fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    loop {
        match UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

/// Counts a broken connection; `lost` operations never got their reply.
fn count_broken(stats: &mut Stats, why: Broken, lost: u64, connecting: bool) {
    stats.lost += lost;
    match why {
        Broken::Timeout(what) => {
            stats.timeouts += 1;
            stats.sample(|| format!("timeout waiting for {what} ({lost} in flight)"));
        }
        Broken::Io(e) if connecting => {
            stats.connect_errors += 1;
            stats.sample(|| format!("connect: {e}"));
        }
        Broken::Closed | Broken::Io(_) => {
            stats.disconnects += 1;
            stats.sample(|| match why {
                Broken::Io(e) => format!("connection error with {lost} in flight: {e}"),
                _ => format!("server closed the connection with {lost} in flight"),
            });
        }
        Broken::Protocol(text) => {
            stats.protocol_errors += 1;
            stats.sample(|| text);
        }
    }
}

/// An operation waiting for its reply.
struct Pending {
    kind: OpKind,
    sent: Instant,
}

/// One connection's operations in flight, matched to reply lines by the client session.
type Pipeline = ClientSession<Pending>;

/// How the replies of an operation read.
fn reply_kind(kind: OpKind) -> ReplyKind {
    match kind {
        OpKind::Lookup => ReplyKind::Lookup,
        OpKind::Commit => ReplyKind::Commit,
        OpKind::Iterate => ReplyKind::Iterate,
    }
}

fn unexpected(line: &[u8]) -> Broken {
    Broken::Protocol(format!(
        "unexpected reply {:?}",
        String::from_utf8_lossy(&line[..line.len().min(80)])
    ))
}

/// Handles one server line; true when an operation finished.
fn on_line(pipe: &mut Pipeline, line: &[u8], stats: &mut Stats) -> Result<bool, Broken> {
    match pipe
        .receive(line)
        .map_err(|e| Broken::Protocol(e.to_string()))?
    {
        Received::AsyncId(_) => Ok(false),
        Received::Row { .. } => {
            stats.rows += 1;
            Ok(false)
        }
        Received::Final { request, body, .. } => match request.kind.classify(body) {
            Reply::Final(outcome) => {
                finish(stats, outcome, request.sent, body);
                Ok(true)
            }
            Reply::Row | Reply::Invalid => Err(unexpected(line)),
        },
    }
}

fn finish(stats: &mut Stats, outcome: Outcome, sent: Instant, body: &[u8]) {
    stats.record(outcome, sent.elapsed());
    if matches!(outcome, Outcome::Failed | Outcome::Uncertain) {
        stats.sample(|| {
            format!(
                "reply {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            )
        });
    }
}

/// Runs operations over one long-lived connection (reconnecting when it breaks) until the
/// run is over. Connects and says hello before `start`, so set-up is not measured.
pub async fn persistent(run: Arc<Run>, worker: u64, start: Arc<Barrier>) -> Stats {
    let mut stats = Stats::default();
    let mut rng = Rng::new(run.seed.wrapping_mul(1_000_003).wrapping_add(worker));
    let mut next_id: u32 = 0;
    let mut conn = match hello_connection(&run).await {
        Ok(s) => Some(s),
        Err(e) => {
            count_broken(&mut stats, e, 0, true);
            None
        }
    };
    start.wait().await;
    loop {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => {
                if !run.active() {
                    break;
                }
                match hello_connection(&run).await {
                    Ok(s) => s,
                    Err(e) => {
                        count_broken(&mut stats, e, 0, true);
                        backoff(&run, 50).await;
                        continue;
                    }
                }
            }
        };
        match drive(&run, &mut stream, &mut rng, &mut next_id, &mut stats).await {
            Ok(()) => break,
            Err((why, lost)) => {
                count_broken(&mut stats, why, lost, false);
                backoff(&run, 10).await;
            }
        }
    }
    stats
}

/// After a failure: do not spin on a server that is down or refuses us.
async fn backoff(run: &Run, ms: u64) {
    tokio::time::sleep_until((Instant::now() + Duration::from_millis(ms)).min(run.deadline()))
        .await;
}

async fn hello_connection(run: &Run) -> Result<UnixStream, Broken> {
    let mut stream = run.connect().await?;
    run.write(&mut stream, &run.hello).await?;
    Ok(stream)
}

/// Keeps the pipeline full until no more operations may start and all replies are in.
async fn drive(
    run: &Run,
    stream: &mut UnixStream,
    rng: &mut Rng,
    next_id: &mut u32,
    stats: &mut Stats,
) -> Result<(), (Broken, u64)> {
    let mut out = BytesMut::with_capacity(4096);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut scratch = Vec::with_capacity(64);
    let mut lines = LineDecoder::new(MAX_LINE);
    let mut pipe = Pipeline::async_only();
    let mut fresh = Vec::with_capacity(run.depth);
    loop {
        while pipe.len() + fresh.len() < run.depth && run.claim() {
            *next_id = next_id.checked_add(1).unwrap_or(1);
            fresh.push(run.spec.encode(rng, *next_id, &mut scratch, &mut out));
        }
        if !out.is_empty() {
            // All operations of one write share its start time.
            let sent = Instant::now();
            for kind in fresh.drain(..) {
                pipe.sent(reply_kind(kind), Pending { kind, sent });
            }
            let lost = pipe.len() as u64;
            run.write(stream, &out).await.map_err(|e| (e, lost))?;
            out.clear();
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let lost = pipe.len() as u64;
        run.read(stream, &mut input).await.map_err(|e| (e, lost))?;
        loop {
            let line = match lines.decode(&mut input) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    let lost = pipe.len() as u64;
                    return Err((Broken::Protocol(format!("{e}")), lost));
                }
            };
            if let Err(e) = on_line(&mut pipe, &line, stats) {
                return Err((e, pipe.len() as u64));
            }
        }
    }
}

/// Runs operations each on a new connection (hello and operation in one write, then close),
/// as Dovecot's short-lived clients do. Latency includes connect.
pub async fn reconnect(run: Arc<Run>, worker: u64, start: Arc<Barrier>) -> Stats {
    let mut stats = Stats::default();
    let mut rng = Rng::new(run.seed.wrapping_mul(1_000_003).wrapping_add(worker));
    let mut out = BytesMut::with_capacity(512);
    let mut input = BytesMut::with_capacity(4096);
    let mut scratch = Vec::with_capacity(64);
    start.wait().await;
    while run.claim() {
        let sent = Instant::now();
        let mut stream = match run.connect().await {
            Ok(s) => s,
            Err(e) => {
                count_broken(&mut stats, e, 0, true);
                backoff(&run, 10).await;
                continue;
            }
        };
        out.clear();
        out.extend_from_slice(&run.hello);
        let result = if run.spec.workload == Workload::Connections {
            hello_only(&run, &mut stream, &out, &mut input).await
        } else {
            let kind = run.spec.encode(&mut rng, 1, &mut scratch, &mut out);
            one_op(&run, &mut stream, &out, &mut input, kind, &mut stats).await
        };
        match result {
            Ok(outcome) => finish(&mut stats, outcome, sent, &input),
            Err(e) => count_broken(&mut stats, e, 1, false),
        }
        input.clear();
    }
    stats
}

/// The `connections` workload: the server must close after our EOF and send nothing.
async fn hello_only(
    run: &Run,
    stream: &mut UnixStream,
    out: &[u8],
    input: &mut BytesMut,
) -> Result<Outcome, Broken> {
    run.write(stream, out).await?;
    stream.shutdown().await.map_err(Broken::Io)?;
    match run.read(stream, input).await {
        Err(Broken::Closed) => Ok(Outcome::Ok),
        Err(e) => Err(e),
        Ok(()) => Err(Broken::Protocol(format!(
            "server sent {:?} after a hello",
            String::from_utf8_lossy(&input[..input.len().min(80)])
        ))),
    }
}

/// Sends hello + one operation and reads until its final reply.
async fn one_op(
    run: &Run,
    stream: &mut UnixStream,
    out: &[u8],
    input: &mut BytesMut,
    kind: OpKind,
    stats: &mut Stats,
) -> Result<Outcome, Broken> {
    run.write(stream, out).await?;
    let mut lines = LineDecoder::new(MAX_LINE);
    let mut buf = BytesMut::with_capacity(4096);
    let mut pipe = ClientSession::new();
    pipe.sent(reply_kind(kind), kind);
    loop {
        run.read(stream, &mut buf).await?;
        while let Some(line) = lines
            .decode(&mut buf)
            .map_err(|e| Broken::Protocol(format!("{e}")))?
        {
            match pipe
                .receive(&line)
                .map_err(|e| Broken::Protocol(e.to_string()))?
            {
                Received::AsyncId(_) => {}
                Received::Row { .. } => stats.rows += 1,
                Received::Final { request, body, .. } => match request.classify(body) {
                    // Recorded by the caller, with the connect time included.
                    Reply::Final(outcome) => {
                        input.clear();
                        input.extend_from_slice(body);
                        return Ok(outcome);
                    }
                    Reply::Row | Reply::Invalid => return Err(unexpected(&line)),
                },
            }
        }
    }
}

/// Sets `shared/bench/k<N>` to `N` for every key (numbers, so `inc` works on them), over
/// one connection with up to 256 transactions in flight. Returns how many commits said OK.
pub async fn preload(run: &Run, keys: u32) -> Result<u64, String> {
    let describe = |e: Broken| match e {
        Broken::Timeout(what) => format!("timeout waiting for {what}"),
        Broken::Closed => "server closed the connection".to_string(),
        Broken::Io(e) => e.to_string(),
        Broken::Protocol(text) => text,
    };
    let mut stream = hello_connection(run).await.map_err(describe)?;
    let mut stats = Stats::default();
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut lines = LineDecoder::new(MAX_LINE);
    let mut pipe = Pipeline::async_only();
    let mut key = Vec::new();
    let mut next = 0u32;
    while next < keys || !pipe.is_empty() {
        while next < keys && pipe.len() < 256 {
            let id = next + 1;
            crate::workload::bench_key(&mut key, next);
            let value = next.to_string();
            for request in [
                dict_protocol::Request::Begin {
                    id,
                    username: Some(b""[..].into()),
                    expire_secs: (run.spec.major == 4).then_some(0),
                },
                dict_protocol::Request::Set {
                    id,
                    key: key.as_slice().into(),
                    value: value.as_bytes().into(),
                },
                dict_protocol::Request::Commit { id },
            ] {
                request.encode(&mut out);
            }
            pipe.sent(
                ReplyKind::Commit,
                Pending {
                    kind: OpKind::Commit,
                    sent: Instant::now(),
                },
            );
            next += 1;
        }
        if !out.is_empty() {
            run.write(&mut stream, &out).await.map_err(describe)?;
            out.clear();
        }
        run.read(&mut stream, &mut input).await.map_err(describe)?;
        while let Some(line) = lines.decode(&mut input).map_err(|e| e.to_string())? {
            on_line(&mut pipe, &line, &mut stats).map_err(describe)?;
        }
    }
    if let Some(sample) = stats.samples.first() {
        return Err(format!(
            "{} of {keys} commits failed, e.g. {sample}",
            keys as u64 - stats.ok
        ));
    }
    Ok(stats.ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    fn run(socket: PathBuf, workload: Workload, depth: usize, count: u64) -> Arc<Run> {
        let spec = OpSpec {
            workload,
            major: 3,
            users: 10,
            keys: 10,
            write_ratio: 0.5,
            iter_rows: 0,
        };
        let mut hello = BytesMut::new();
        spec.hello("d", &mut hello);
        let run = Run {
            socket,
            hello: hello.to_vec(),
            spec,
            depth,
            timeout: Duration::from_millis(500),
            base: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            hard_deadline_ns: AtomicU64::new(0),
            count: Some(count),
            issued: AtomicU64::new(0),
            seed: 1,
        };
        run.set_deadline(Instant::now() + Duration::from_secs(5));
        Arc::new(run)
    }

    /// A fake server: after the hello, answers reply-bearing commands (with `pairs`, two at
    /// a time, the second first: `*a *b +b +a`, so matching by async id is exercised).
    /// `answer` gives the reply lines (without `+n\t`) of a command, none for silence;
    /// `close_after` closes the connection after that many commands.
    async fn fake_server(
        listener: UnixListener,
        answer: fn(&str) -> Vec<String>,
        close_after: usize,
        pairs: bool,
    ) {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let _hello = lines.next_line().await;
                let mut id = 0;
                let mut held: Vec<(u32, Vec<String>)> = Vec::new();
                let mut seen = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    if !matches!(line.as_bytes()[0], b'L' | b'I' | b'C') {
                        continue;
                    }
                    seen += 1;
                    if seen > close_after {
                        return;
                    }
                    id += 1;
                    held.push((id, answer(&line)));
                    let mut out = format!("*{id}\n");
                    if !pairs || held.len() == 2 {
                        for (n, reply) in held.drain(..).rev() {
                            for l in reply {
                                out.push_str(&format!("+{n}\t{l}\n"));
                            }
                        }
                    }
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn start(
        answer: fn(&str) -> Vec<String>,
        close_after: usize,
        pairs: bool,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(fake_server(listener, answer, close_after, pairs));
        (dir, path)
    }

    #[tokio::test]
    async fn out_of_order_replies_are_matched_by_async_id() {
        let (_dir, path) = start(
            |line| {
                vec![if line.contains("k1\t") || line.starts_with('C') {
                    "N\t1\t2\t3\t4".into()
                } else {
                    "Ov\t1\t2\t3\t4".into()
                }]
            },
            usize::MAX,
            true,
        )
        .await;
        let run = run(path, Workload::Lookup, 2, 40);
        let start = Arc::new(Barrier::new(1));
        let stats = persistent(run, 0, start).await;
        assert_eq!(stats.ops(), 40, "{:?}", stats.samples);
        assert_eq!(stats.errors(), 0, "{:?}", stats.samples);
        assert!(stats.not_found > 0 && stats.ok > 0);
    }

    #[tokio::test]
    async fn iteration_rows_then_end() {
        let (_dir, path) = start(
            |_| {
                vec![
                    "Oshared/bench/k1\t1".into(),
                    "Oshared/bench/k2\t2".into(),
                    "\t1\t2\t3\t4".into(),
                ]
            },
            usize::MAX,
            false,
        )
        .await;
        let stats = persistent(
            run(path, Workload::Iter, 1, 5),
            0,
            Arc::new(Barrier::new(1)),
        )
        .await;
        assert_eq!((stats.ok, stats.rows, stats.errors()), (5, 10, 0));
    }

    #[tokio::test]
    async fn failures_and_disconnects_are_counted_not_waited_for() {
        let (_dir, path) = start(|_| vec!["F1\tboom\t1\t2\t3\t4".into()], 4, true).await;
        let t0 = Instant::now();
        let stats = persistent(
            run(path, Workload::QuotaTxn, 2, 12),
            0,
            Arc::new(Barrier::new(1)),
        )
        .await;
        assert!(t0.elapsed() < Duration::from_secs(4));
        assert_eq!(stats.ok, 0);
        assert!(stats.failed > 0, "{stats:?}");
        assert!(stats.disconnects > 0, "{stats:?}");
        assert_eq!(stats.failed + stats.lost, 12, "{stats:?}");
    }

    #[tokio::test]
    async fn reconnect_worker_sends_hello_and_one_operation() {
        let (_dir, path) = start(|_| vec!["O1\t1\t2\t3\t4".into()], usize::MAX, false).await;
        let stats = reconnect(
            run(path, Workload::QuotaTxn, 1, 3),
            0,
            Arc::new(Barrier::new(1)),
        )
        .await;
        assert_eq!((stats.ok, stats.errors()), (3, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (_dir, path) = start(|_| Vec::new(), usize::MAX, false).await;
        let t0 = Instant::now();
        let stats = reconnect(
            run(path, Workload::Lookup, 1, 2),
            0,
            Arc::new(Barrier::new(1)),
        )
        .await;
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert_eq!((stats.timeouts, stats.lost), (2, 2), "{stats:?}");
    }
}
