//! `C` and `D`: the transaction goes to the backend in a task of its own, so that a commit
//! already sent finishes even when the client goes away (§4.7).

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::{CommitResult, Dict, Transaction};
use dict_protocol::{CommitReply, Reply, ServerLine, TransactionId};
use futures::channel::oneshot;
use futures::future::FutureExt;
use futures::stream::{self, StreamExt};
use tokio_util::task::TaskTracker;

use super::{CommitBarrier, ReplyContext};
use crate::reply_queue::PendingReply;

/// Starts committing `txn`; returns its reply and the barrier later reads must wait for.
pub fn commit(
    dict: Arc<dyn Dict>,
    id: TransactionId,
    is_async: bool,
    txn: Transaction,
    ctx: ReplyContext,
    tasks: &TaskTracker,
) -> (PendingReply, CommitBarrier) {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let barrier: CommitBarrier = done_rx.map(|_| ()).boxed().shared();
    let earlier = ctx.barrier.clone();
    let timeout = ctx.timeout;
    let task = tasks.spawn(async move {
        // Commits of one connection apply in the order they were sent.
        if let Some(earlier) = earlier {
            earlier.await;
        }
        let result = match tokio::time::timeout(timeout, dict.commit(txn)).await {
            Ok(result) => result,
            Err(_) => CommitResult::WriteUncertain("Commit timed out".into()),
        };
        drop(done_tx);
        result
    });
    let reply = stream::once(async move {
        let result = task
            .await
            .unwrap_or_else(|e| CommitResult::WriteUncertain(format!("commit task failed: {e}")));
        commit_line(id, is_async, result, &ctx)
    })
    .boxed();
    (reply, barrier)
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
