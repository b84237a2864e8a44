//! What one connection worker saw: a latency histogram and counters by outcome. Workers
//! keep their own and the totals are merged at the end, so the hot path takes no lock.

use std::time::Duration;

use hdrhistogram::Histogram;

/// How a final reply ended an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `O`/`M` lookup, `O` commit, iteration end.
    Ok,
    /// `N` lookup (key missing) or `N` commit (atomic increment found no row). Not an error.
    NotFound,
    /// `F`: the server reported a failure.
    Failed,
    /// `W`: the commit's outcome is unknown (backend timeout).
    Uncertain,
}

/// Most error texts kept for the report.
const MAX_SAMPLES: usize = 5;

/// Latencies (nanoseconds, 3 significant digits, up to 2 minutes) and counters.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub not_found: u64,
    pub failed: u64,
    pub uncertain: u64,
    /// Iteration rows received (not operations).
    pub rows: u64,
    /// The server closed a connection that still had operations in flight.
    pub disconnects: u64,
    /// No reply (or no progress writing) within the per-wait timeout.
    pub timeouts: u64,
    /// connect() failed or timed out.
    pub connect_errors: u64,
    /// A line the client could not match to an operation, or a reply of the wrong kind.
    pub protocol_errors: u64,
    /// Operations sent whose reply never came (their connection broke).
    pub lost: u64,
    /// A few error texts, for the report.
    pub samples: Vec<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: Histogram::new_with_bounds(100, 120_000_000_000, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            not_found: 0,
            failed: 0,
            uncertain: 0,
            rows: 0,
            disconnects: 0,
            timeouts: 0,
            connect_errors: 0,
            protocol_errors: 0,
            lost: 0,
            samples: Vec::new(),
        }
    }
}

impl Stats {
    /// One finished operation.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(100));
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::NotFound => self.not_found += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Uncertain => self.uncertain += 1,
        }
    }

    /// Keeps the first few error texts.
    pub fn sample(&mut self, text: impl FnOnce() -> String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(text());
        }
    }

    /// Operations that got a final reply.
    pub fn ops(&self) -> u64 {
        self.ok + self.not_found + self.failed + self.uncertain
    }

    /// Everything counted as an error: F and W replies, broken connections, timeouts,
    /// failed connects and protocol errors.
    pub fn errors(&self) -> u64 {
        self.failed
            + self.uncertain
            + self.disconnects
            + self.timeouts
            + self.connect_errors
            + self.protocol_errors
    }

    /// Adds another worker's numbers.
    pub fn merge(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("histograms have the same bounds");
        self.ok += other.ok;
        self.not_found += other.not_found;
        self.failed += other.failed;
        self.uncertain += other.uncertain;
        self.rows += other.rows;
        self.disconnects += other.disconnects;
        self.timeouts += other.timeouts;
        self.connect_errors += other.connect_errors;
        self.protocol_errors += other.protocol_errors;
        self.lost += other.lost;
        for s in &other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }

    /// The latency at `q` (0..=1) in microseconds; 0 without samples.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        us(self.latency.value_at_quantile(q))
    }

    /// Largest latency in microseconds.
    pub fn max_us(&self) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        us(self.latency.max())
    }

    /// Mean latency in microseconds.
    pub fn mean_us(&self) -> f64 {
        (self.latency.mean() / 100.0).round() / 10.0
    }
}

/// Nanoseconds as microseconds with one decimal.
fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_quantiles() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100u64 {
            a.record(Outcome::Ok, Duration::from_micros(i));
        }
        b.record(Outcome::Failed, Duration::from_millis(10));
        b.disconnects += 1;
        b.sample(|| "boom".into());
        a.merge(&b);
        assert_eq!(a.ops(), 101);
        assert_eq!(a.errors(), 2);
        assert!(
            (a.quantile_us(0.5) - 51.0).abs() < 0.2,
            "{}",
            a.quantile_us(0.5)
        );
        assert!((a.max_us() - 10_000.0).abs() < 10.0);
        assert_eq!(a.samples, vec!["boom".to_string()]);
    }
}
