//! Replies still being produced on one connection, in the order the reply style demands:
//! strictly in command order for minor 0, as they complete otherwise (protocol-spec §3, §5.4).

use std::collections::VecDeque;
use std::task::{Context, Poll};

use dict_protocol::ServerLine;
use futures::stream::{BoxStream, SelectAll, StreamExt};

/// The lines of one reply-bearing command: iteration rows, then exactly one final reply.
pub type PendingReply = BoxStream<'static, ServerLine<'static>>;

/// Pending replies of one connection.
pub enum ReplyQueue {
    /// Only the oldest command may send; rows of later iterations wait their turn.
    Ordered(VecDeque<PendingReply>),
    /// Every command sends when ready; rows of different iterations may interleave.
    Unordered(SelectAll<PendingReply>),
}

impl ReplyQueue {
    /// A queue for a connection whose replies are (`ordered`) or are not kept in order.
    pub fn new(ordered: bool) -> Self {
        if ordered {
            ReplyQueue::Ordered(VecDeque::new())
        } else {
            ReplyQueue::Unordered(SelectAll::new())
        }
    }

    /// Commands whose final reply has not been taken yet.
    pub fn len(&self) -> usize {
        match self {
            ReplyQueue::Ordered(q) => q.len(),
            ReplyQueue::Unordered(s) => s.len(),
        }
    }

    /// Replies leave strictly in command order: only the oldest is polled.
    pub fn is_ordered(&self) -> bool {
        matches!(self, ReplyQueue::Ordered(_))
    }

    /// True when no reply is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the reply of a newly read command.
    pub fn push(&mut self, reply: PendingReply) {
        match self {
            ReplyQueue::Ordered(q) => q.push_back(reply),
            ReplyQueue::Unordered(s) => s.push(reply),
        }
    }

    /// The next line ready to be written; `Ready(None)` when nothing is pending.
    pub fn poll_next_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<ServerLine<'static>>> {
        match self {
            ReplyQueue::Ordered(q) => loop {
                let Some(front) = q.front_mut() else {
                    return Poll::Ready(None);
                };
                match front.poll_next_unpin(cx) {
                    Poll::Ready(Some(line)) => return Poll::Ready(Some(line)),
                    Poll::Ready(None) => {
                        q.pop_front();
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
            ReplyQueue::Unordered(s) => s.poll_next_unpin(cx),
        }
    }

    /// Waits for the next line; see [`ReplyQueue::poll_next_line`].
    pub async fn next_line(&mut self) -> Option<ServerLine<'static>> {
        futures::future::poll_fn(|cx| self.poll_next_line(cx)).await
    }
}
