//! `L`: one final reply, `O`/`M`/`N`/`F`.

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::Dict;
use dict_protocol::{LookupReply, Reply, ServerLine};
use futures::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use super::{BarrierOpener, ReplyContext};
use crate::reply_queue::PendingReply;

/// The lookup of `key` for `username`; returns its reply. `done` opens when the answer is
/// known. With `in_task`, it starts now in a task of its own, so that it runs while earlier
/// replies are still queued and while the connection waits to write to a client that
/// doesn't read (a SQL lookup may be carrying other connections' lookups, which must not
/// wait for that client). Without, it runs as the reply is polled: a spawn and a wake-up
/// less, for backends whose lookups stand alone ([`Dict::lookups_stand_alone`]) when
/// nothing holds its reply back.
pub fn lookup(
    dict: Arc<dyn Dict>,
    key: Vec<u8>,
    username: Vec<u8>,
    ctx: ReplyContext,
    done: BarrierOpener,
    in_task: bool,
) -> PendingReply {
    let async_id = ctx.async_id;
    let answer = async move {
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
    };
    if !in_task {
        return stream::once(answer).boxed();
    }
    // Dropped with the connection: a lookup nobody will read is not finished.
    let task = AbortOnDropHandle::new(tokio::spawn(answer));
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
