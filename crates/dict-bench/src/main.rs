//! `dict-bench`: a load generator for Dovecot dict servers (ours and Dovecot's own) on a
//! UNIX socket. K connections, persistent and pipelined or one per operation as Dovecot's
//! clients use them; bounded by a duration and an operation count; prints throughput and
//! latency percentiles (text, or one JSON object with `--json`).

mod conn;
mod idle;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use clap::Parser;
use serde::Serialize;
use tokio::sync::Barrier;
use tokio::time::Instant;

use conn::Run;
use stats::Stats;
use workload::{OpSpec, Workload};

/// Load generator for Dovecot dict servers (dict proxy protocol on a UNIX socket).
///
/// Keys match the reference dict-sql maps: quota-txn writes priv/quota/storage and
/// priv/quota/messages of users bench<N>; lookup, inc, iter and mixed use
/// shared/bench/k<N> (table bench). Every wait is bounded by --timeout; F and W replies,
/// disconnects, timeouts and failed connects are counted as errors (exit status 1).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The dict server's socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Dict name sent in the hello.
    #[arg(long, value_name = "NAME")]
    dict: String,
    /// What each operation is.
    #[arg(long, value_enum, default_value = "lookup")]
    workload: Workload,
    /// Concurrent connections (workers).
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Stop starting operations after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many operations in total (whichever of --count and --duration
    /// comes first).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// A new connection (and hello) for every operation, like doveadm and quota_clone.
    #[arg(long)]
    reconnect: bool,
    /// quota-txn users: bench0 .. bench<N-1>.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    users: u32,
    /// Keys shared/bench/k0 .. k<N-1>.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Operations in flight per persistent connection (pipelining).
    #[arg(long, value_name = "D", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    depth: u64,
    /// Protocol major: 3 (Dovecot 2.3 client) or 4 (2.4 client).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=4))]
    major: u32,
    /// Set every key shared/bench/k<N> to N first (not measured).
    #[arg(long)]
    preload: bool,
    /// mixed: the share of operations that are set transactions.
    #[arg(long, value_name = "R", default_value_t = 0.2)]
    write_ratio: f64,
    /// iter: max_rows of each iteration (0 = all).
    #[arg(long, value_name = "N", default_value_t = 10)]
    iter_rows: u64,
    /// Longest wait for one reply, write or connect, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout: u64,
    /// Client threads (1 = a single-threaded runtime, the least CPU taken from the server).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// Instead of a workload: open N connections (hello only), hold them for --duration,
    /// then send one lookup on each; with --server-pid, report the server's RSS per
    /// connection.
    #[arg(long, value_name = "N")]
    idle_connections: Option<usize>,
    /// The server's pid: its CPU time and RSS are reported.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Seed of the key/user choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The report of a workload run (`--json` prints it as is).
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    dict: String,
    socket: String,
    connections: u64,
    depth: u64,
    reconnect: bool,
    major: u32,
    ops: u64,
    elapsed_s: f64,
    ops_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    errors: u64,
    ok: u64,
    not_found: u64,
    failed: u64,
    uncertain: u64,
    disconnects: u64,
    timeouts: u64,
    connect_errors: u64,
    protocol_errors: u64,
    lost: u64,
    rows: u64,
    preloaded: Option<u64>,
    client_cpu_pct: f64,
    server_cpu_pct: Option<f64>,
    server_rss_kib: Option<u64>,
    error_samples: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(0.0..=1.0).contains(&cli.write_ratio) || cli.duration.is_nan() || cli.duration < 0.0 {
        eprintln!("dict-bench: --write-ratio must be within 0..1 and --duration >= 0");
        return ExitCode::from(2);
    }
    raise_fd_limit();
    let mut builder = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads as usize);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dict-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// 10,000 connections need more descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn make_run(cli: &Cli, seconds: f64) -> Run {
    let spec = OpSpec {
        workload: cli.workload,
        major: cli.major,
        users: cli.users,
        keys: cli.keys,
        write_ratio: cli.write_ratio,
        iter_rows: cli.iter_rows,
    };
    let mut hello = BytesMut::new();
    spec.hello(&cli.dict, &mut hello);
    let run = Run {
        socket: cli.socket.clone(),
        hello: hello.to_vec(),
        spec,
        depth: cli.depth as usize,
        timeout: Duration::from_millis(cli.timeout.max(1)),
        base: Instant::now(),
        deadline_ns: AtomicU64::new(0),
        hard_deadline_ns: AtomicU64::new(0),
        count: cli.count,
        issued: AtomicU64::new(0),
        seed: cli.seed,
    };
    run.set_deadline(run.base + Duration::from_secs_f64(seconds));
    run
}

async fn run(cli: Cli) -> ExitCode {
    let mut preloaded = None;
    if cli.preload {
        let run = make_run(&cli, 60.0);
        match conn::preload(&run, cli.keys).await {
            Ok(n) => preloaded = Some(n),
            Err(e) => {
                eprintln!("dict-bench: preload failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(n) = cli.idle_connections {
        let run = make_run(&cli, cli.duration);
        let report = idle::run_idle(
            &run,
            n,
            Duration::from_secs_f64(cli.duration),
            cli.server_pid,
        )
        .await;
        if cli.json {
            emit(&format!(
                "{}\n",
                serde_json::to_string(&report).expect("serializable")
            ));
        } else {
            print_idle(&report);
        }
        return if report.errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    // Persistent workers connect and say hello first; the clock starts when all have.
    let workers = cli.connections;
    let start = Arc::new(Barrier::new(workers as usize + 1));
    let reconnect = cli.reconnect || cli.workload == Workload::Connections;
    let run = Arc::new(make_run(&cli, cli.duration + 3600.0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (run, start) = (run.clone(), start.clone());
        if reconnect {
            tasks.spawn(conn::reconnect(run, w, start));
        } else {
            tasks.spawn(conn::persistent(run, w, start));
        }
    }
    // Connecting is bounded by the timeout; the run's deadlines start after it.
    let setup_limit = Instant::now() + run.timeout + Duration::from_secs(1);
    if tokio::time::timeout_at(setup_limit, start.wait())
        .await
        .is_err()
    {
        eprintln!("dict-bench: workers did not get ready in time");
        return ExitCode::FAILURE;
    }
    let t0 = Instant::now();
    let cpu0 = client_cpu();
    let server0 = cli.server_pid.and_then(server_cpu);
    let deadline = t0 + Duration::from_secs_f64(cli.duration);
    run.set_deadline(deadline);

    let mut total = Stats::default();
    let hard_stop = deadline + run.timeout + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(stats))) => total.merge(&stats),
            Ok(Some(Err(e))) => {
                total.protocol_errors += 1;
                total.sample(|| format!("worker failed: {e}"));
            }
            Ok(None) => break,
            Err(_) => {
                total.timeouts += tasks.len() as u64;
                total.sample(|| format!("{} workers still busy at the hard stop", tasks.len()));
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = client_cpu().map(|c| c - cpu0.unwrap_or(0.0));
    let server_cpu_pct = match (server0, cli.server_pid.and_then(server_cpu)) {
        (Some(a), Some(b)) if elapsed > 0.0 => Some(round1(100.0 * (b - a) / elapsed)),
        _ => None,
    };
    let ops = total.ops();
    let report = Report {
        workload: cli.workload.name(),
        dict: cli.dict.clone(),
        socket: cli.socket.display().to_string(),
        connections: cli.connections,
        depth: if reconnect { 1 } else { cli.depth },
        reconnect,
        major: cli.major,
        ops,
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        ops_per_sec: if elapsed > 0.0 {
            round1(ops as f64 / elapsed)
        } else {
            0.0
        },
        p50_us: total.quantile_us(0.50),
        p90_us: total.quantile_us(0.90),
        p99_us: total.quantile_us(0.99),
        p999_us: total.quantile_us(0.999),
        max_us: total.max_us(),
        mean_us: total.mean_us(),
        errors: total.errors(),
        ok: total.ok,
        not_found: total.not_found,
        failed: total.failed,
        uncertain: total.uncertain,
        disconnects: total.disconnects,
        timeouts: total.timeouts,
        connect_errors: total.connect_errors,
        protocol_errors: total.protocol_errors,
        lost: total.lost,
        rows: total.rows,
        preloaded,
        client_cpu_pct: match cpu {
            Some(c) if elapsed > 0.0 => round1(100.0 * c / elapsed),
            _ => 0.0,
        },
        server_cpu_pct,
        server_rss_kib: cli.server_pid.and_then(idle::rss_kib),
        error_samples: total.samples.clone(),
    };
    if cli.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string(&report).expect("serializable")
        ));
    } else {
        print_report(&report);
    }
    if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// User + system CPU seconds of this process.
fn client_cpu() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// User + system CPU seconds of `pid` (all its threads), from /proc (100 ticks per second,
/// Linux's USER_HZ).
fn server_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5); utime and stime are 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn print_report(r: &Report) {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} {} K={} {}: {} ops in {:.2} s = {:.0} ops/s; latency p50 {:.1} us, p99 {:.1} us, \
         p999 {:.1} us, max {:.1} us; errors {}",
        r.dict,
        r.workload,
        r.connections,
        if r.reconnect {
            "reconnect".to_string()
        } else {
            format!("depth={}", r.depth)
        },
        r.ops,
        r.elapsed_s,
        r.ops_per_sec,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.errors
    );
    let _ = writeln!(
        o,
        "  replies: ok={} not_found={} failed={} uncertain={} rows={}; disconnects={} \
         timeouts={} connect_errors={} protocol_errors={} lost={}",
        r.ok,
        r.not_found,
        r.failed,
        r.uncertain,
        r.rows,
        r.disconnects,
        r.timeouts,
        r.connect_errors,
        r.protocol_errors,
        r.lost
    );
    let _ = write!(o, "  client cpu {:.0}%", r.client_cpu_pct);
    if let Some(s) = r.server_cpu_pct {
        let _ = write!(o, ", server cpu {s:.0}%");
    }
    if let Some(rss) = r.server_rss_kib {
        let _ = write!(o, ", server rss {rss} KiB");
    }
    if let Some(n) = r.preloaded {
        let _ = write!(o, ", preloaded {n} keys");
    }
    o.push('\n');
    for s in &r.error_samples {
        let _ = writeln!(o, "  error: {s}");
    }
    emit(&o);
}

fn print_idle(r: &idle::IdleReport) {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "idle: {} of {} connections opened in {:.2} s ({:.0}/s), held {:.1} s, {} answered a \
         lookup afterwards; errors {}",
        r.opened, r.idle_connections, r.open_secs, r.opens_per_sec, r.held_secs, r.alive, r.errors
    );
    if let (Some(before), Some(opened)) = (r.server_rss_before_kib, r.server_rss_opened_kib) {
        let _ = writeln!(
            o,
            "  server rss {before} KiB before, {opened} KiB with the connections open ({} bytes each), \
             {} KiB after one lookup each ({} bytes each)",
            r.rss_per_conn_bytes.unwrap_or(0),
            r.server_rss_probed_kib.unwrap_or(0),
            r.rss_per_used_conn_bytes.unwrap_or(0)
        );
    }
    for s in &r.error_samples {
        let _ = writeln!(o, "  error: {s}");
    }
    emit(&o);
}

/// Writes the report to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
