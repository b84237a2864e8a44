//! Lookups across connections (MySQL, PostgreSQL): a lookup whose map has no lookup in
//! flight runs at once, alone, as its own statement. Lookups of the same map (and `priv/`
//! or not) arriving while one is in flight queue up ([`lookup_queue`](super::lookup_queue));
//! when it finishes, one of them takes the queue (up to 64) and sends it as one statement,
//! a `UNION ALL` of each lookup's own statement tagged with its place (see
//! [`Shape::LookupBatch`](super::query::Shape::LookupBatch)). The database compares each
//! branch's keys as in the single statement, so collations and PAD SPACE decide exactly
//! as there; rows are handed back by tag, never by comparing keys here.
//!
//! A batch is bounded by its earliest deadline. If the database refuses it, each lookup
//! runs again alone (a bad one fails alone); a batch that timed out sends the lookups
//! with time left to run alone; a connection that failed past its retries fails them all.
//! A lookup still queued at its deadline is taken back and times out. A lookup whose
//! batch was dropped (its leader's caller went away) runs alone. SQLite keeps its own
//! lookup path ([`sqlite_read`](super::sqlite_read)).

use std::sync::Arc;

use tokio::time::Instant;

use super::lookup_queue::{Answer, Reply, Waiting};
use super::param::Param;
use super::query::{Queries, Shape};
use super::state::DictState;
use super::types::{Cell, DbError};

impl DictState {
    /// The first row of a lookup of map `map` (`private`: a `priv/` key), batched with
    /// concurrent lookups of the same map (MySQL, PostgreSQL).
    pub async fn lookup_row(
        &self,
        queries: &Queries,
        map: usize,
        private: bool,
        params: Vec<Param>,
        deadline: Instant,
    ) -> Answer {
        let shape = Shape::Lookup { map, private };
        if self.db.sqlite_lookups().is_some() {
            return self.lookup_alone(queries, &shape, &params, deadline).await;
        }
        let lane = self.lookups.lane(map, private);
        if let Some(_running) = lane.try_run() {
            // Nothing of this shape in flight: at once, no hand-off.
            return self.lookup_alone(queries, &shape, &params, deadline).await;
        }
        // Shared with the queue: the lookup may have to run alone after all.
        let params = Arc::new(params);
        let mut queued = lane.enqueue(params.clone(), deadline);
        let mut expired = false;
        let got = loop {
            tokio::select! {
                biased;
                got = &mut queued.reply => break got,
                running = lane.run(), if !expired => {
                    let batch = lane.take(params.len());
                    if batch.is_empty() {
                        // An earlier runner took ours.
                        drop(running);
                        break (&mut queued.reply).await;
                    }
                    self.run_batch(queries, map, private, batch).await;
                }
                () = tokio::time::sleep_until(deadline), if !expired => {
                    expired = true;
                    if queued.take_back() {
                        return Err(DbError::Timeout(self.timeout).context(LOOKUP_FAILED));
                    }
                    // Taken: its batch ends by its earliest deadline, not later than ours.
                }
            }
        };
        match got {
            Ok(Reply::Done(answer)) => answer,
            // Alone, or its batch was dropped unfinished: a read can run again.
            Ok(Reply::Alone) | Err(_) => {
                self.lookup_alone(queries, &shape, &params, deadline).await
            }
        }
    }

    /// Sends `batch` (oldest first, not empty) as one statement and tells each lookup its
    /// answer, or to run alone.
    async fn run_batch(&self, queries: &Queries, map: usize, private: bool, batch: Vec<Waiting>) {
        let n = batch.len();
        let deadline = batch
            .iter()
            .map(|w| w.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        if n == 1 {
            let w = batch.into_iter().next().expect("a batch of one");
            let shape = Shape::Lookup { map, private };
            let answer = self
                .lookup_alone(queries, &shape, &w.params, deadline)
                .await;
            w.reply(Reply::Done(answer));
            return;
        }
        // Padded to a power of two with copies of the last lookup (their rows are not
        // read): a few statement texts per map, so the prepared statements stay cached.
        let lookups = n.next_power_of_two();
        let sql = queries.sql(&Shape::LookupBatch {
            map,
            private,
            lookups,
        });
        let last = &batch[n - 1].params;
        let mut params = Vec::with_capacity(lookups * last.len());
        for w in batch
            .iter()
            .map(|w| &w.params)
            .chain(std::iter::repeat_n(last, lookups - n))
        {
            params.extend(w.iter().cloned());
        }
        self.lookups.sent(n);
        tracing::trace!(lookups = n, "sql lookup batch");
        match self.read_rows(&sql, &params, deadline, true).await {
            Ok(rows) => {
                let mut answers: Vec<Option<Vec<Cell>>> = (0..n).map(|_| None).collect();
                for row in rows {
                    let mut cells = row.into_iter();
                    let tag = match cells.next() {
                        Some(Cell::Int(i)) => usize::try_from(i).ok(),
                        Some(Cell::UInt(u)) => usize::try_from(u).ok(),
                        _ => None,
                    };
                    // Tags past `n` are the padding's.
                    if let Some(slot) = tag.and_then(|t| answers.get_mut(t)) {
                        slot.get_or_insert_with(|| cells.collect());
                    }
                }
                for (w, answer) in batch.into_iter().zip(answers) {
                    w.reply(Reply::Done(Ok(answer)));
                }
            }
            Err(e @ DbError::Timeout(_)) => {
                // Those with time left get it for themselves.
                let now = Instant::now();
                let error = e.context(LOOKUP_FAILED);
                for w in batch {
                    let reply = if w.deadline <= now {
                        Reply::Done(Err(error.clone()))
                    } else {
                        Reply::Alone
                    };
                    w.reply(reply);
                }
            }
            // Past its retries on fresh connections: each alone would fail the same way.
            Err(e) if e.is_connection() => {
                let error = e.context(LOOKUP_FAILED);
                for w in batch {
                    w.reply(Reply::Done(Err(error.clone())));
                }
            }
            // Refused (a statement error, a value it can't read): maybe for one lookup
            // only, so each runs alone.
            Err(e) => {
                tracing::debug!(lookups = n, error = %e, "sql lookup batch refused, each lookup runs alone");
                for w in batch {
                    w.reply(Reply::Alone);
                }
            }
        }
    }

    /// One lookup as its own statement.
    async fn lookup_alone(
        &self,
        queries: &Queries,
        shape: &Shape,
        params: &[Param],
        deadline: Instant,
    ) -> Answer {
        if self.db.sqlite_lookups().is_none() {
            self.lookups.sent(1);
        }
        let sql = queries.sql(shape);
        self.read_first(&sql, params, deadline)
            .await
            .map_err(|e| e.context(LOOKUP_FAILED))
    }
}

const LOOKUP_FAILED: &str = "dict sql lookup failed: ";
