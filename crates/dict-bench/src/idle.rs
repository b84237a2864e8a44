//! `--idle-connections N`: open N connections (hello only), measure what they cost the
//! server (its RSS, with `--server-pid`), hold them, then check that every one still gets
//! an answer to a lookup.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use dict_protocol::codec::LineDecoder;
use dict_protocol::Frame;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;

use crate::conn::Run;

/// Connections opened (or probed) at once.
const PARALLEL: usize = 64;

/// What the idle run found.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub idle_connections: usize,
    pub opened: usize,
    pub connect_errors: usize,
    pub open_secs: f64,
    pub opens_per_sec: f64,
    pub held_secs: f64,
    /// Connections that answered the lookup after being held.
    pub alive: usize,
    pub errors: usize,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_opened_kib: Option<u64>,
    pub server_rss_probed_kib: Option<u64>,
    /// (RSS with all connections open − RSS before) / connections opened.
    pub rss_per_conn_bytes: Option<u64>,
    /// The same after every connection served one lookup.
    pub rss_per_used_conn_bytes: Option<u64>,
    pub error_samples: Vec<String>,
}

/// The resident set of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn open(run: &Run) -> Result<UnixStream, String> {
    let deadline = (Instant::now() + run.timeout).min(run.hard_deadline());
    let mut s = timeout_at(deadline, crate::conn::connect_unix(&run.socket))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    timeout_at(deadline, s.write_all(&run.hello))
        .await
        .map_err(|_| "hello timed out".to_string())?
        .map_err(|e| format!("hello: {e}"))?;
    Ok(s)
}

/// One lookup on a held connection; Ok when its final reply arrives in time.
async fn probe(run: &Run, mut s: UnixStream) -> Result<(), String> {
    let deadline = (Instant::now() + run.timeout).min(run.hard_deadline());
    timeout_at(deadline, s.write_all(b"Lshared/bench/k0\t\n"))
        .await
        .map_err(|_| "probe write timed out".to_string())?
        .map_err(|e| format!("probe write: {e}"))?;
    let mut buf = BytesMut::with_capacity(512);
    let mut lines = LineDecoder::new(64 * 1024);
    loop {
        let n = timeout_at(deadline, s.read_buf(&mut buf))
            .await
            .map_err(|_| "no reply to the probe".to_string())?
            .map_err(|e| format!("probe read: {e}"))?;
        if n == 0 {
            return Err("server closed an idle connection".into());
        }
        while let Some(line) = lines.decode(&mut buf).map_err(|e| e.to_string())? {
            if let Ok(Frame::Reply { .. }) = Frame::parse(&line) {
                return Ok(());
            }
        }
    }
}

/// Opens `n` connections, holds them for `hold`, probes each, closes all.
pub async fn run_idle(run: &Run, n: usize, hold: Duration, server_pid: Option<u32>) -> IdleReport {
    let rss_before = server_pid.and_then(rss_kib);
    let t0 = Instant::now();
    let results: Vec<Result<UnixStream, String>> = stream::iter(0..n)
        .map(|_| open(run))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let open_secs = t0.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    let mut streams = Vec::with_capacity(n);
    let mut connect_errors = 0;
    for r in results {
        match r {
            Ok(s) => streams.push(s),
            Err(e) => {
                connect_errors += 1;
                if samples.len() < 5 {
                    samples.push(e);
                }
            }
        }
    }
    let opened = streams.len();
    // Let the server read every hello before looking at its memory.
    tokio::time::sleep(Duration::from_secs(1).min(hold)).await;
    let rss_opened = server_pid.and_then(rss_kib);
    let held_from = Instant::now();
    tokio::time::sleep_until((t0 + hold).min(run.hard_deadline()).max(held_from)).await;
    let held_secs = t0.elapsed().as_secs_f64();
    let probes: Vec<Result<(), String>> = stream::iter(streams)
        .map(|s| probe(run, s))
        .buffer_unordered(PARALLEL * 4)
        .collect()
        .await;
    let rss_probed = server_pid.and_then(rss_kib);
    let mut alive = 0;
    for p in probes {
        match p {
            Ok(()) => alive += 1,
            Err(e) if samples.len() < 5 => samples.push(e),
            Err(_) => {}
        }
    }
    let per_conn = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if opened > 0 => Some(a.saturating_sub(b) * 1024 / opened as u64),
        _ => None,
    };
    IdleReport {
        mode: "idle",
        idle_connections: n,
        opened,
        connect_errors,
        open_secs: round3(open_secs),
        opens_per_sec: if open_secs > 0.0 {
            (opened as f64 / open_secs).round()
        } else {
            0.0
        },
        held_secs: round3(held_secs),
        alive,
        errors: n - alive,
        server_rss_before_kib: rss_before,
        server_rss_opened_kib: rss_opened,
        server_rss_probed_kib: rss_probed,
        rss_per_conn_bytes: per_conn(rss_opened),
        rss_per_used_conn_bytes: per_conn(rss_probed),
        error_samples: samples,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
