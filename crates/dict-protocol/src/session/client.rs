//! A client's view of its commands in flight: which reply line answers which command
//! (protocol-spec §4.3). Requests are registered as they are sent; each server line then
//! comes back as an async id, an iteration row or a final reply of one command.
//!
//! Matching follows Dovecot's 2.3 client, so ordered (minor 0) and async replies both work:
//! `*<n>` names the oldest command without an id, `+<n>\t` is matched by id, and a line
//! without a prefix answers the oldest command still pending.

use std::collections::VecDeque;

use crate::{Frame, ProtocolError, ReplyKind};

/// A server line that matches nothing: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The line's framing is invalid.
    #[error(transparent)]
    Frame(#[from] ProtocolError),
    /// `*<n>` while every command has an id already.
    #[error("Received async ID {0} without a pending command")]
    AsyncIdWithoutCommand(u32),
    /// `+<n>` naming no pending command.
    #[error("Received reply +{0} without a pending command")]
    UnknownAsyncId(u32),
    /// A reply while nothing is pending.
    #[error("Received reply without pending commands")]
    NothingPending,
    /// A reply without `+<n>` where every reply must carry one.
    #[error("Received reply without an async ID")]
    MissingAsyncId,
}

/// What one server line was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'s, 'a, T> {
    /// `*<n>`: the oldest command without an id has `n` now; nothing is answered yet.
    AsyncId(u32),
    /// An iteration row of `request`; more lines follow for it.
    Row { request: &'s mut T, body: &'a [u8] },
    /// The final reply of `request`, which leaves the session; `body` is read with `kind`.
    Final {
        request: T,
        kind: ReplyKind,
        body: &'a [u8],
    },
}

struct Sent<T> {
    kind: ReplyKind,
    request: T,
}

/// Commands sent and not yet answered, each with the caller's `T`.
pub struct ClientSession<T> {
    /// Commands with an id, oldest first (ids come in the order commands were sent, so
    /// all of these are older than any in `waiting`).
    assigned: Vec<(u32, Sent<T>)>,
    /// Commands without an id yet, oldest first.
    waiting: VecDeque<Sent<T>>,
    /// Replies without `+<n>` are refused.
    async_only: bool,
}

impl<T> Default for ClientSession<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ClientSession<T> {
    /// A session that takes ordered and async replies alike, as Dovecot's client does.
    pub fn new() -> Self {
        ClientSession {
            assigned: Vec::new(),
            waiting: VecDeque::new(),
            async_only: false,
        }
    }

    /// A session for a server that must tag every reply with `+<n>` (minor 1 and later).
    pub fn async_only() -> Self {
        ClientSession {
            async_only: true,
            ..Self::new()
        }
    }

    /// Commands waiting for their final reply.
    pub fn len(&self) -> usize {
        self.assigned.len() + self.waiting.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reply-bearing command was written; `kind` says how its replies read.
    pub fn sent(&mut self, kind: ReplyKind, request: T) {
        self.waiting.push_back(Sent { kind, request });
    }

    /// Takes every pending command out, oldest first (the connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.assigned
            .drain(..)
            .map(|(_, s)| s.request)
            .chain(self.waiting.drain(..).map(|s| s.request))
    }

    /// Matches one server line (without its LF) to its command.
    pub fn receive<'s, 'a>(
        &'s mut self,
        line: &'a [u8],
    ) -> Result<Received<'s, 'a, T>, MatchError> {
        let (async_id, body) = match Frame::parse(line)? {
            Frame::AsyncId(n) => {
                let sent = self
                    .waiting
                    .pop_front()
                    .ok_or(MatchError::AsyncIdWithoutCommand(n))?;
                self.assigned.push((n, sent));
                return Ok(Received::AsyncId(n));
            }
            Frame::Reply { async_id, body } => (async_id, body),
        };
        // Where the command is: an index into `assigned`, or the front of `waiting`.
        let index = match async_id {
            Some(n) => Some(
                self.assigned
                    .iter()
                    .position(|(id, _)| *id == n)
                    .ok_or(MatchError::UnknownAsyncId(n))?,
            ),
            None if self.async_only => return Err(MatchError::MissingAsyncId),
            None if !self.assigned.is_empty() => Some(0),
            None if !self.waiting.is_empty() => None,
            None => return Err(MatchError::NothingPending),
        };
        let kind = match index {
            Some(i) => self.assigned[i].1.kind,
            None => self.waiting[0].kind,
        };
        // Only iterations have lines before their final one: rows, which start with `O`.
        if kind == ReplyKind::Iterate && body.first() == Some(&b'O') {
            let request = match index {
                Some(i) => &mut self.assigned[i].1.request,
                None => &mut self.waiting[0].request,
            };
            return Ok(Received::Row { request, body });
        }
        let sent = match index {
            Some(i) => self.assigned.remove(i).1,
            None => self.waiting.pop_front().expect("checked above"),
        };
        Ok(Received::Final {
            request: sent.request,
            kind,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `lines`; describes each as `id`, `row <req> <body>` or `final <req> <body>`.
    fn run(s: &mut ClientSession<&'static str>, lines: &[&[u8]]) -> Vec<String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        lines
            .iter()
            .map(|line| match s.receive(line) {
                Ok(Received::AsyncId(n)) => format!("id {n}"),
                Ok(Received::Row { request, body }) => format!("row {request} {}", text(body)),
                Ok(Received::Final { request, body, .. }) => {
                    format!("final {request} {}", text(body))
                }
                Err(e) => format!("error {e}"),
            })
            .collect()
    }

    #[test]
    fn ordered_replies_answer_the_oldest_command() {
        let mut s = ClientSession::new();
        s.sent(ReplyKind::Lookup, "l1");
        s.sent(ReplyKind::Iterate, "i2");
        s.sent(ReplyKind::Commit, "c3");
        let got = run(&mut s, &[b"Ov", b"Ok\tv", b"Ok2\tv", b"", b"O3", b"N"]);
        assert_eq!(
            got,
            [
                "final l1 Ov",
                "row i2 Ok\tv",
                "row i2 Ok2\tv",
                "final i2 ",
                "final c3 O3",
                "error Received reply without pending commands",
            ]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn async_replies_are_matched_by_id_in_any_order() {
        let mut s = ClientSession::async_only();
        s.sent(ReplyKind::Iterate, "i1");
        s.sent(ReplyKind::Lookup, "l2");
        let got = run(
            &mut s,
            &[
                b"*7",
                b"*8",
                b"+8\tN\t1\t2\t3\t4",
                b"+7\tOk\tv",
                b"+7\tFboom",
            ],
        );
        assert_eq!(
            got,
            [
                "id 7",
                "id 8",
                "final l2 N\t1\t2\t3\t4",
                "row i1 Ok\tv",
                "final i1 Fboom"
            ]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn lines_matching_nothing_are_errors() {
        let mut s = ClientSession::async_only();
        s.sent(ReplyKind::Lookup, "l1");
        assert_eq!(
            run(&mut s, &[b"*1", b"*2"])[1],
            "error Received async ID 2 without a pending command"
        );
        assert_eq!(s.receive(b"+5\tO"), Err(MatchError::UnknownAsyncId(5)));
        assert_eq!(s.receive(b"O"), Err(MatchError::MissingAsyncId));
        assert!(matches!(s.receive(b"*x"), Err(MatchError::Frame(_))));
        assert_eq!(s.len(), 1, "nothing was taken by a bad line");
    }

    #[test]
    fn a_bare_reply_answers_the_oldest_command_even_with_ids() {
        let mut s = ClientSession::new();
        s.sent(ReplyKind::Lookup, "l1");
        s.sent(ReplyKind::Lookup, "l2");
        s.sent(ReplyKind::Lookup, "l3");
        let got = run(&mut s, &[b"*1", b"*2", b"+2\tOb", b"Oa"]);
        assert_eq!(got[2..], ["final l2 Ob", "final l1 Oa"]);
        assert_eq!(s.drain().collect::<Vec<_>>(), ["l3"]);
        assert!(s.is_empty());
    }

    #[test]
    fn drain_gives_commands_back_oldest_first() {
        let mut s = ClientSession::new();
        for r in ["a", "b", "c"] {
            s.sent(ReplyKind::Commit, r);
        }
        assert_eq!(run(&mut s, &[b"*1"]), ["id 1"]);
        assert_eq!(s.drain().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
