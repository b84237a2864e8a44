//! A dict commit applied: planned into statements, then run with the commits queued
//! alongside it (SQLite: one transaction on the writer thread, see
//! [`sqlite_write`](super::sqlite_write); MySQL and PostgreSQL: a batch, see
//! [`batch`](super::batch)). A commit on its own runs in one transaction,
//! retried on a fresh connection while nothing can have been applied (see
//! [`outcome`](super::outcome)).

use tokio::time::{timeout_at, Instant};

use super::commit;
use super::dialect::Dialect;
use super::expire::unix_now;
use super::group::Outcome;
use super::outcome::{self, Next};
use super::param::has_non_utf8;
use super::state::{DictState, MAX_RETRIES};
use super::types::{DbError, Exec, Phase, NOT_UTF8};
use crate::{CommitResult, Transaction};

impl DictState {
    /// Applies `txn`; what the client is told.
    pub async fn commit(&self, txn: Transaction) -> CommitResult {
        let deadline = self.deadline();
        let failed = |e: &dyn std::fmt::Display| format!("sql dict: commit failed: {e}");
        let queries = match self.queries(deadline).await {
            Ok(q) => q,
            Err(e) => return CommitResult::Failed(failed(&e)),
        };
        let expire_at = txn
            .expire_secs
            .filter(|&e| e > 0)
            .map(|e| unix_now().saturating_add(i64::from(e)));
        let steps = match commit::plan_expiring(&queries, &txn.username, expire_at, &txn.changes) {
            Ok(steps) => steps,
            Err(e) => return CommitResult::Failed(e),
        };
        if queries.dialect == Dialect::Postgres && has_non_utf8(steps.iter().flat_map(Exec::params))
        {
            return CommitResult::Failed(failed(&NOT_UTF8));
        }
        if steps.is_empty() {
            return CommitResult::Ok;
        }
        let outcome = match self.db.sqlite_writer() {
            Some(writer) => writer.commit(steps, deadline).await,
            None => {
                let apply = |g| self.apply_batch(&queries, g);
                self.group.commit(steps, deadline, apply).await
            }
        };
        match outcome {
            Outcome::Applied(false) => CommitResult::Ok,
            Outcome::Applied(true) => CommitResult::NotFound,
            Outcome::Failed(e) => CommitResult::Failed(failed(&e)),
            Outcome::Uncertain(e) => CommitResult::WriteUncertain(failed(&e)),
        }
    }

    /// One commit in a transaction of its own (MySQL, PostgreSQL), retried on a fresh
    /// connection while nothing can have been applied.
    pub(super) async fn commit_alone(&self, steps: &[Exec], deadline: Instant) -> Outcome {
        let answer = |next: Next, e: &DbError| match next {
            Next::Uncertain => Outcome::Uncertain(e.to_string()),
            _ => Outcome::Failed(e.to_string()),
        };
        let mut retries = 0;
        // An attempt got as far as sending its statement: it may have been applied.
        let mut maybe_applied = false;
        loop {
            let mut conn = match self.db.acquire(true, deadline).await {
                Ok(c) => c,
                Err(e) => return answer(outcome::after_acquire_failure(maybe_applied), &e),
            };
            let mut phase = Phase::Begin;
            let result = match timeout_at(deadline, conn.transaction(steps, &mut phase)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout(self.timeout)),
            };
            let e = match result {
                Ok(missing) => {
                    self.db.release(conn);
                    return Outcome::Applied(missing);
                }
                Err(e) => e,
            };
            if !e.is_database() && !e.is_refused() {
                conn.discard();
            }
            match outcome::after_failure(phase, &e, maybe_applied, retries < MAX_RETRIES) {
                Next::Retry => {
                    retries += 1;
                    maybe_applied |= phase == Phase::Repeatable;
                }
                next => return answer(next, &e),
            }
        }
    }
}
