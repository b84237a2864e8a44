//! A timer that is always due within [`PERIOD`], so that tokio's I/O driver never plans to
//! sleep longer than that.
//!
//! Why: registering a timer that is due before the driver's planned wake-up wakes the
//! driver (a write to its eventfd, and one more return from `epoll_wait`), whether or not
//! it sleeps at that moment (tokio issue 5207). Every request arms a few deadlines seconds
//! away (the request timeout, the backend's own timeout), and on a runtime with no other
//! timer the driver plans to sleep for minutes: with one client, each request paid two such
//! wake-ups, measured with `strace -c` as two `write`s per request. With a timer at most
//! `PERIOD` away the planned wake-up always comes before any request deadline, and those
//! writes go away (Redis at K=1: 12–17 % more requests per second). The price
//! is `1 s / PERIOD` wake-ups a second on an idle server (about 1 ms of CPU a second).

use std::time::Duration;

use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Shorter than the deadlines requests arm (the request timeout is 5 s unless configured);
/// with a shorter timeout the wake-ups come back, nothing else changes.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Runs until `shutdown`.
pub async fn run(shutdown: CancellationToken) {
    let mut ticks = interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
