//! Every backend call, observed: counts, errors by kind and latency per dict and operation
//! (see [`crate::metrics`]), and a warning for an operation slower than `warn_slow_ms`, as
//! Dovecot's `warn_slow_msecs` does. A decorator around the dict, so neither the backends
//! nor the connection task know about it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dict_backend::{
    CommitResult, Dict, DictError, ErrorKind, IterRow, IterateOptions, Transaction,
};
use futures::stream::{BoxStream, Stream, StreamExt};
use metrics::{Counter, Gauge, Histogram};
use tracing::warn;

use crate::log_limit::{self, LogLimit};
use crate::metrics as m;

/// The operations that reach a backend.
#[derive(Debug, Clone, Copy)]
enum Op {
    Lookup,
    Iterate,
    Commit,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Iterate => "iterate",
            Op::Commit => "commit",
        }
    }

    /// The `kind` labels a failure of this operation can have: a lookup or iteration
    /// fails with a [`DictError`] and its kind; a commit has only its result.
    fn error_kinds(self) -> Vec<&'static str> {
        match self {
            Op::Lookup => ErrorKind::ALL
                .iter()
                .map(|k| k.as_str())
                .chain([ABANDONED])
                .collect(),
            Op::Iterate => ErrorKind::ALL.iter().map(|k| k.as_str()).collect(),
            Op::Commit => vec![COMMIT_FAILED, COMMIT_UNCERTAIN, ABANDONED],
        }
    }
}

/// The `kind` of a call dropped unfinished: the server's timeout fired or the client left.
const ABANDONED: &str = "abandoned";
/// The `kind` of a commit answered `F` (nothing written).
const COMMIT_FAILED: &str = "failed";
/// The `kind` of a commit answered `W` (maybe written).
const COMMIT_UNCERTAIN: &str = "uncertain";

/// Metric handles of one (dict, operation), taken once.
struct OpMetrics {
    count: Counter,
    /// One counter per `kind` label, all present from the start (at 0).
    errors: Vec<(&'static str, Counter)>,
    seconds: Histogram,
    slow: Counter,
    /// A stalled backend makes every call slow: one warning per interval, with a count.
    slow_log: LogLimit,
}

impl OpMetrics {
    fn new(dict: &str, op: Op) -> Self {
        let labels = [("dict", dict.to_string()), ("op", op.name().to_string())];
        OpMetrics {
            count: metrics::counter!(m::OPERATIONS, &labels),
            errors: op
                .error_kinds()
                .into_iter()
                .map(|kind| (kind, error_counter(dict, op, kind)))
                .collect(),
            seconds: metrics::histogram!(m::OPERATION_SECONDS, &labels),
            slow: metrics::counter!(m::SLOW_OPERATIONS, &labels),
            slow_log: LogLimit::new(log_limit::INTERVAL),
        }
    }
}

/// The error counter of (`dict`, `op`, `kind`).
fn error_counter(dict: &str, op: Op, kind: &'static str) -> Counter {
    let labels = [
        ("dict", dict.to_string()),
        ("op", op.name().to_string()),
        ("kind", kind.to_string()),
    ];
    metrics::counter!(m::OPERATION_ERRORS, &labels)
}

struct Shared {
    name: Arc<str>,
    warn_slow: Option<Duration>,
    in_flight: Gauge,
    lookup: OpMetrics,
    iterate: OpMetrics,
    commit: OpMetrics,
}

/// A dict whose calls are measured; otherwise it is the dict it wraps.
pub struct ObservedDict {
    inner: Arc<dyn Dict>,
    shared: Arc<Shared>,
}

/// Wraps `dict` (called `name`); `warn_slow` is the slow-operation threshold, if any.
pub fn wrap(name: &str, dict: Arc<dyn Dict>, warn_slow: Option<Duration>) -> Arc<dyn Dict> {
    Arc::new(ObservedDict::new(name, dict, warn_slow))
}

impl ObservedDict {
    /// See [`wrap`].
    pub fn new(name: &str, inner: Arc<dyn Dict>, warn_slow: Option<Duration>) -> Self {
        let shared = Shared {
            name: name.into(),
            warn_slow,
            in_flight: metrics::gauge!(m::OPERATIONS_IN_FLIGHT, "dict" => name.to_string()),
            lookup: OpMetrics::new(name, Op::Lookup),
            iterate: OpMetrics::new(name, Op::Iterate),
            commit: OpMetrics::new(name, Op::Commit),
        };
        ObservedDict {
            inner,
            shared: Arc::new(shared),
        }
    }
}

/// One operation under way. Finished explicitly with its outcome; dropped unfinished (the
/// caller's timeout fired, or the client went away) it counts as failed, except an
/// iteration, which its reader may stop early on purpose (`max_rows`).
struct Call {
    shared: Arc<Shared>,
    op: Op,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(shared: &Arc<Shared>, op: Op) -> Self {
        shared.in_flight.increment(1.0);
        Call {
            shared: shared.clone(),
            op,
            started: Instant::now(),
            done: false,
        }
    }

    /// Records the outcome (`Some(kind)` for a failure); `what` describes the call for
    /// the slow warning.
    fn finish(mut self, error: Option<&'static str>, what: impl FnOnce() -> String) {
        self.done = true;
        if let Some(elapsed) = self.record(error) {
            self.warn_slow(elapsed, &what());
        }
    }

    fn metrics(&self) -> &OpMetrics {
        let s = &self.shared;
        match self.op {
            Op::Lookup => &s.lookup,
            Op::Iterate => &s.iterate,
            Op::Commit => &s.commit,
        }
    }

    /// Records the call; returns its duration when it was slow.
    fn record(&self, error: Option<&'static str>) -> Option<Duration> {
        let s = &self.shared;
        let metrics = self.metrics();
        let elapsed = self.started.elapsed();
        s.in_flight.decrement(1.0);
        metrics.count.increment(1);
        metrics.seconds.record(elapsed.as_secs_f64());
        if let Some(kind) = error {
            match metrics.errors.iter().find(|(k, _)| *k == kind) {
                Some((_, counter)) => counter.increment(1),
                None => error_counter(&s.name, self.op, kind).increment(1),
            }
        }
        let slow = s.warn_slow.is_some_and(|limit| elapsed >= limit);
        if slow {
            metrics.slow.increment(1);
        }
        slow.then_some(elapsed)
    }

    fn warn_slow(&self, elapsed: Duration, what: &str) {
        self.metrics().slow_log.warn(|held_back| {
            warn!(
                dict = %self.shared.name,
                op = self.op.name(),
                elapsed_ms = elapsed.as_millis() as u64,
                "slow dict {}: {what} took {} ms (warn_slow_ms = {}){}",
                self.op.name(),
                elapsed.as_millis(),
                self.shared.warn_slow.unwrap_or_default().as_millis(),
                log_limit::more(held_back, log_limit::INTERVAL),
            )
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            // An iteration's reader may stop early on purpose (`max_rows`).
            let error = (!matches!(self.op, Op::Iterate)).then_some(ABANDONED);
            if let Some(elapsed) = self.record(error) {
                self.warn_slow(elapsed, "an abandoned call (timed out or client gone)");
            }
        }
    }
}

/// The `kind` label of a failed call.
fn error_kind<T>(result: &Result<T, DictError>) -> Option<&'static str> {
    result.as_ref().err().map(|e| e.kind().as_str())
}

fn describe_key(key: &[u8], username: &[u8]) -> String {
    if username.is_empty() {
        format!("{}", String::from_utf8_lossy(key))
    } else {
        format!(
            "{} (user {})",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(username)
        )
    }
}

#[async_trait]
impl Dict for ObservedDict {
    fn lookups_stand_alone(&self) -> bool {
        self.inner.lookups_stand_alone()
    }

    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let call = Call::start(&self.shared, Op::Lookup);
        let result = self.inner.lookup(key, username).await;
        call.finish(error_kind(&result), || describe_key(key, username));
        result
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let call = Call::start(&self.shared, Op::Iterate);
        ObservedRows {
            rows: self.inner.iterate(path, username, options),
            call: Some(call),
            what: describe_key(path, username),
        }
        .boxed()
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        let call = Call::start(&self.shared, Op::Commit);
        let changes = txn.changes.len();
        let result = self.inner.commit(txn).await;
        let error = match result {
            CommitResult::Ok | CommitResult::NotFound => None,
            CommitResult::Failed(_) => Some(COMMIT_FAILED),
            CommitResult::WriteUncertain(_) => Some(COMMIT_UNCERTAIN),
        };
        call.finish(error, || format!("a commit of {changes} change(s)"));
        result
    }

    async fn check(&self) -> Result<(), DictError> {
        self.inner.check().await
    }

    fn scan_users(
        &self,
        key: &[u8],
    ) -> BoxStream<'static, Result<dict_backend::UserValues, DictError>> {
        self.inner.scan_users(key)
    }
}

/// An iteration's rows, timed from the call to the end of the stream or its first error.
struct ObservedRows {
    rows: BoxStream<'static, Result<IterRow, DictError>>,
    call: Option<Call>,
    what: String,
}

impl Stream for ObservedRows {
    type Item = Result<IterRow, DictError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.rows.poll_next_unpin(cx);
        let error = match &next {
            Poll::Ready(Some(Err(e))) => Some(e.kind().as_str()),
            Poll::Ready(None) => None,
            _ => return next,
        };
        if let Some(call) = this.call.take() {
            let what = std::mem::take(&mut this.what);
            call.finish(error, || format!("an iteration of {what}"));
        }
        next
    }
}
