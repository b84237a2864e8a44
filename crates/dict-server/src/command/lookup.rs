//! `L`: one final reply, `O`/`M`/`N`/`F`.

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::Dict;
use dict_protocol::{LookupReply, Reply, ServerLine};
use futures::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use super::{BarrierOpener, ReplyContext};
use crate::reply_queue::PendingReply;

/// Starts the lookup of `key` for `username` now (in a task of its own, so it runs while
/// earlier replies are still queued); returns its reply. `done` opens when the answer is
/// known. A task even when nothing is queued: the connection stops polling its replies
/// while it waits to write to a client that doesn't read, and a SQL lookup may be running
/// a batch for other connections' lookups, which must not wait for that client.
pub fn lookup(
    dict: Arc<dyn Dict>,
    key: Vec<u8>,
    username: Vec<u8>,
    ctx: ReplyContext,
    done: BarrierOpener,
) -> PendingReply {
    let async_id = ctx.async_id;
    let task = tokio::spawn(async move {
        let work = async {
            ctx.wait_for_commits().await;
            dict.lookup(&key, &username).await
        };
        let reply = match tokio::time::timeout_at(ctx.deadline, work).await {
            Ok(Ok(Some(values))) => {
                LookupReply::Found(values.into_iter().map(Cow::Owned).collect())
            }
            Ok(Ok(None)) => LookupReply::NotFound,
            Ok(Err(e)) => LookupReply::Failed(Cow::Owned(e.into_message().into_bytes())),
            Err(_) => LookupReply::Failed(Cow::Borrowed(b"Lookup timed out")),
        };
        drop(done);
        ServerLine::Reply {
            async_id: ctx.async_id,
            reply: Reply::Lookup(reply),
            timings: Some(ctx.timings()),
        }
    });
    // Dropped with the connection: a lookup nobody will read is not finished.
    let task = AbortOnDropHandle::new(task);
    stream::once(async move {
        task.await.unwrap_or_else(|e| ServerLine::Reply {
            async_id,
            reply: Reply::Lookup(LookupReply::Failed(Cow::Owned(
                format!("lookup task failed: {e}").into_bytes(),
            ))),
            timings: None,
        })
    })
    .boxed()
}
