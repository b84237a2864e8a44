//! Warnings that can come in floods (slow operations while a backend stalls, connections
//! refused while the server is full) are logged at most once per interval; the next one
//! logged says how many were held back, so nothing is hidden, only summed up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each kind of flood warning may be logged.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning and when it was last logged.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    /// At most one warning per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// Calls `log` with the number of warnings held back since the last one, or counts
    /// this one as held back when the last was logged less than an interval ago.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        let held_back = {
            // A poisoned lock only means a logger panicked: the counts are still usable.
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .last
                .is_some_and(|last| now.duration_since(last) < self.interval)
            {
                state.held_back += 1;
                return;
            }
            state.last = Some(now);
            std::mem::take(&mut state.held_back)
        };
        log(held_back);
    }
}

/// " (and N more in the last 10 s)" when some were held back, else nothing.
pub fn more(held_back: u64, interval: Duration) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(
            " (and {held_back} more in the {} s before)",
            interval.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_millis(200));
        let mut logged = Vec::new();
        for _ in 0..1000 {
            limit.warn(|n| logged.push(n));
        }
        assert_eq!(logged, vec![0]);
        std::thread::sleep(Duration::from_millis(250));
        limit.warn(|n| logged.push(n));
        assert_eq!(logged, vec![0, 999]);
    }
}
