//! `I`: rows as they come from the backend, then one end line (empty first field, or `F`).

use std::borrow::Cow;
use std::sync::Arc;

use dict_backend::{Dict, DictError, IterRow, IterateOptions};
use dict_protocol::{Reply, ServerLine};
use futures::stream::{self, BoxStream, StreamExt};

use super::ReplyContext;
use crate::reply_queue::PendingReply;

enum State {
    Start {
        dict: Arc<dyn Dict>,
        path: Vec<u8>,
        username: Vec<u8>,
        options: IterateOptions,
    },
    Rows {
        rows: BoxStream<'static, Result<IterRow, DictError>>,
        sent: u64,
    },
    Done,
}

/// The reply lines of an iteration of `path`.
pub fn iterate(
    dict: Arc<dyn Dict>,
    path: Vec<u8>,
    username: Vec<u8>,
    options: IterateOptions,
    ctx: ReplyContext,
) -> PendingReply {
    let max_rows = options.max_rows;
    let start = State::Start {
        dict,
        path,
        username,
        options,
    };
    stream::unfold((start, ctx), move |(state, ctx)| async move {
        let (mut rows, sent) = match state {
            State::Done => return None,
            State::Start {
                dict,
                path,
                username,
                options,
            } => {
                ctx.wait_for_commits().await;
                (dict.iterate(&path, &username, options), 0)
            }
            State::Rows { rows, sent } => (rows, sent),
        };
        let end = |reply| ServerLine::Reply {
            async_id: ctx.async_id,
            reply,
            timings: Some(ctx.timings()),
        };
        // The backend applies max_rows too; counting here keeps the promise whatever it does.
        let next = if max_rows > 0 && sent >= max_rows {
            None
        } else {
            tokio::time::timeout(ctx.timeout, rows.next())
                .await
                .unwrap_or(Some(Err(DictError::new("Iteration timed out"))))
        };
        match next {
            Some(Ok(row)) => {
                let line = ServerLine::Reply {
                    async_id: ctx.async_id,
                    reply: Reply::IterRow {
                        key: Cow::Owned(row.key),
                        values: row.values.into_iter().map(Cow::Owned).collect(),
                    },
                    timings: None,
                };
                Some((
                    line,
                    (
                        State::Rows {
                            rows,
                            sent: sent + 1,
                        },
                        ctx,
                    ),
                ))
            }
            Some(Err(e)) => {
                let line = end(Reply::IterFailed(Cow::Owned(e.0.into_bytes())));
                Some((line, (State::Done, ctx)))
            }
            None => {
                let line = end(Reply::IterEnd);
                Some((line, (State::Done, ctx)))
            }
        }
    })
    .boxed()
}
