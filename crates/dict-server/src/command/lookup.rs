//! `L`: one final reply, `O`/`M`/`N`/`F`.

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::Dict;
use dict_protocol::{LookupReply, Reply, ServerLine};
use futures::stream::{self, StreamExt};

use super::ReplyContext;
use crate::reply_queue::PendingReply;

/// The reply to a lookup of `key` for `username`.
pub fn lookup(
    dict: Arc<dyn Dict>,
    key: Vec<u8>,
    username: Vec<u8>,
    ctx: ReplyContext,
) -> PendingReply {
    stream::once(async move {
        ctx.wait_for_commits().await;
        let reply = match tokio::time::timeout(ctx.timeout, dict.lookup(&key, &username)).await {
            Ok(Ok(Some(values))) => {
                LookupReply::Found(values.into_iter().map(Cow::Owned).collect())
            }
            Ok(Ok(None)) => LookupReply::NotFound,
            Ok(Err(e)) => LookupReply::Failed(Cow::Owned(e.0.into_bytes())),
            Err(_) => LookupReply::Failed(Cow::Borrowed(b"Lookup timed out")),
        };
        ServerLine::Reply {
            async_id: ctx.async_id,
            reply: Reply::Lookup(reply),
            timings: Some(ctx.timings()),
        }
    })
    .boxed()
}
