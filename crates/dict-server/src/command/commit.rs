//! `C` and `D`: the transaction goes to the backend in a task of its own, so that a commit
//! already sent finishes even when the client goes away (protocol-spec §8).

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::{CommitResult, Dict, Transaction};
use dict_protocol::{CommitReply, Reply, ServerLine, TransactionId};
use futures::future;
use futures::stream::{self, StreamExt};
use tokio_util::task::TaskTracker;

use super::{Barrier, BarrierOpener, ReplyContext};
use crate::reply_queue::PendingReply;

/// A commit to run: what the session decided when it read `C` or `D`.
pub struct CommitJob {
    pub id: TransactionId,
    /// `D`: the reply carries the `A` prefix.
    pub is_async: bool,
    pub txn: Transaction,
    pub ctx: ReplyContext,
    /// Reads sent since the previous commit: the commit starts once they have.
    pub earlier_reads: Vec<Barrier>,
    /// Opens when the commit has finished.
    pub done: BarrierOpener,
}

/// Starts committing `job.txn` once the requests sent before it (`ctx.after_commit` and
/// `earlier_reads`) are far enough; returns its reply.
pub fn commit(dict: Arc<dyn Dict>, job: CommitJob, tasks: &TaskTracker) -> PendingReply {
    let (txn, earlier_reads, done) = (job.txn, job.earlier_reads, job.done);
    let (id, is_async, ctx) = (job.id, job.is_async, job.ctx);
    let earlier = ctx.after_commit.clone();
    let (deadline, timeout) = (ctx.deadline, ctx.timeout);
    let task = tasks.spawn(async move {
        // Commits of one connection apply in the order they were sent, after the reads
        // sent before them have seen the data as it was.
        let wait = async {
            if let Some(earlier) = &earlier {
                earlier.cancelled().await;
            }
            future::join_all(earlier_reads.iter().map(|r| r.cancelled())).await;
        };
        let waited = tokio::time::timeout_at(deadline, wait).await.is_ok();
        // Started with almost no time left, a commit would only end as "uncertain":
        // better not to start it at all and say so.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = if !waited || left < timeout / 10 {
            // Nothing was sent: the commit is dropped here and never applied later.
            CommitResult::Failed("Commit timed out waiting for earlier requests".into())
        } else {
            match tokio::time::timeout_at(deadline, dict.commit(txn)).await {
                Ok(result) => result,
                Err(_) => CommitResult::WriteUncertain("Commit timed out".into()),
            }
        };
        drop(done);
        result
    });
    stream::once(async move {
        let result = task
            .await
            .unwrap_or_else(|e| CommitResult::WriteUncertain(format!("commit task failed: {e}")));
        commit_line(id, is_async, result, &ctx)
    })
    .boxed()
}

/// The reply to a commit that needs no backend (a transaction without changes).
pub fn empty_commit(id: TransactionId, is_async: bool, ctx: ReplyContext) -> PendingReply {
    stream::once(async move { commit_line(id, is_async, CommitResult::Ok, &ctx) }).boxed()
}

fn commit_line(
    id: TransactionId,
    is_async: bool,
    result: CommitResult,
    ctx: &ReplyContext,
) -> ServerLine<'static> {
    let result = match result {
        CommitResult::Ok => CommitReply::Ok,
        CommitResult::NotFound => CommitReply::NotFound,
        CommitResult::Failed(e) => CommitReply::Failed(Cow::Owned(e.into_bytes())),
        CommitResult::WriteUncertain(e) => CommitReply::WriteUncertain(Cow::Owned(e.into_bytes())),
    };
    ServerLine::Reply {
        async_id: ctx.async_id,
        reply: Reply::Commit {
            id,
            result,
            is_async,
        },
        timings: Some(ctx.timings()),
    }
}
