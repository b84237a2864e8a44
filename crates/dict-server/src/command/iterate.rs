//! `I`: rows as they come from the backend, then one end line (empty first field, or `F`).
//!
//! The iteration runs in a task of its own from the moment it is read; its lines wait in a
//! small bounded channel until the reply queue lets them out, so a slow reader holds the
//! backend back instead of filling memory.

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::{Dict, DictError, IterateOptions};
use dict_protocol::{Reply, ServerLine};
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{BarrierOpener, ReplyContext};
use crate::reply_queue::PendingReply;

/// Lines an iteration may produce ahead of its reader.
const AHEAD: usize = 64;

/// Starts iterating `path` now; returns the reply lines. `started` opens when the first
/// line (a row, the end, or the failure) is known.
pub fn iterate(
    dict: Arc<dyn Dict>,
    path: Vec<u8>,
    username: Vec<u8>,
    options: IterateOptions,
    ctx: ReplyContext,
    started: BarrierOpener,
) -> PendingReply {
    let (tx, rx) = mpsc::channel::<ServerLine<'static>>(AHEAD);
    let task = tokio::spawn(produce(dict, path, username, options, ctx, started, tx));
    // Dropped with the connection: nobody reads the rows any more.
    let task = AbortOnDropHandle::new(task);
    stream::unfold((rx, task), |(mut rx, task)| async move {
        let line = rx.recv().await?;
        Some((line, (rx, task)))
    })
    .boxed()
}

async fn produce(
    dict: Arc<dyn Dict>,
    path: Vec<u8>,
    username: Vec<u8>,
    options: IterateOptions,
    ctx: ReplyContext,
    started: BarrierOpener,
    tx: mpsc::Sender<ServerLine<'static>>,
) {
    let end = |reply| ServerLine::Reply {
        async_id: ctx.async_id,
        reply,
        timings: Some(ctx.timings()),
    };
    let failed = |e: DictError| Reply::IterFailed(Cow::Owned(e.into_message().into_bytes()));
    if tokio::time::timeout_at(ctx.deadline, ctx.wait_for_commits())
        .await
        .is_err()
    {
        drop(started);
        let _ = tx
            .send(end(failed(DictError::timeout("Iteration timed out"))))
            .await;
        return;
    }
    let max_rows = options.max_rows;
    let mut rows = dict.iterate(&path, &username, options);
    let mut started = Some(started);
    let mut sent = 0u64;
    loop {
        // The backend applies max_rows too; counting here keeps the promise whatever it does.
        let next = if max_rows > 0 && sent >= max_rows {
            None
        } else {
            // The first row is due by the deadline, each later one within the timeout.
            let wait = match started {
                Some(_) => tokio::time::timeout_at(ctx.deadline, rows.next()).await,
                None => tokio::time::timeout(ctx.timeout, rows.next()).await,
            };
            wait.unwrap_or(Some(Err(DictError::timeout("Iteration timed out"))))
        };
        started.take();
        let line = match next {
            Some(Ok(row)) => ServerLine::Reply {
                async_id: ctx.async_id,
                reply: Reply::IterRow {
                    key: Cow::Owned(row.key),
                    values: row.values.into_iter().map(Cow::Owned).collect(),
                },
                timings: None,
            },
            Some(Err(e)) => {
                let _ = tx.send(end(failed(e))).await;
                return;
            }
            None => {
                let _ = tx.send(end(Reply::IterEnd)).await;
                return;
            }
        };
        if tx.send(line).await.is_err() {
            return;
        }
        sent += 1;
    }
}
