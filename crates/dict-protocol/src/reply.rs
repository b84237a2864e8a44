//! Server → client lines (§4.3, §4.4): the `*<n>` async id, and replies with their optional
//! `+<n>\t` prefix and four timing fields.

use std::borrow::Cow;

use bytes::BufMut;

use crate::escape::{
    escape_into, find_byte, join_escaped, rfind_byte, split_raw, split_raw_after_tab, unescape,
};
use crate::hello::ReplyStyle;
use crate::number::{parse_u32, parse_u64, push_u64};
use crate::request::TransactionId;
use crate::ProtocolError;

/// Wall-clock start (command read) and end (reply made) of a command, sent after final replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// Seconds since the epoch when the command was read.
    pub start_secs: u64,
    /// Microseconds part of the start.
    pub start_usecs: u32,
    /// Seconds since the epoch when the reply was made.
    pub end_secs: u64,
    /// Microseconds part of the end.
    pub end_usecs: u32,
}

/// Outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupReply<'a> {
    /// `O<value>`, or `M<values>` for two or more values when the style allows.
    Found(Vec<Cow<'a, [u8]>>),
    /// `N`
    NotFound,
    /// `F<error>`
    Failed(Cow<'a, [u8]>),
}

/// Outcome of a commit, as Dovecot's `enum dict_commit_ret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitReply<'a> {
    /// `O<id>`
    Ok,
    /// `N<id>`: an atomic increment found no row; the rest was committed.
    NotFound,
    /// `F<id>\t<error>`: nothing was written.
    Failed(Cow<'a, [u8]>),
    /// `W<id>\t<error>`: the outcome is unknown.
    WriteUncertain(Cow<'a, [u8]>),
}

/// One reply, without framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Final reply to `L`.
    Lookup(LookupReply<'a>),
    /// One iteration row: `O<key>\t<v1>[\t<v2>…]`. NO_VALUE rows carry one empty value.
    IterRow {
        key: Cow<'a, [u8]>,
        values: Vec<Cow<'a, [u8]>>,
    },
    /// Successful end of an iteration: an empty first field.
    IterEnd,
    /// Failed end of an iteration: `F<error>`, the error NOT escaped (as Dovecot sends it).
    IterFailed(Cow<'a, [u8]>),
    /// Final reply to `C` (or to `D` when `is_async`, with an `A` prefix).
    Commit {
        id: TransactionId,
        result: CommitReply<'a>,
        is_async: bool,
    },
}

/// Which command a reply answers; needed to read a reply body, whose letters are ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Answers `L`.
    Lookup,
    /// Answers `I`.
    Iterate,
    /// Answers `C`.
    Commit,
    /// Answers `D`.
    CommitAsync,
}

impl Reply<'_> {
    /// Final replies end a command and carry timings; iteration rows do not.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::IterRow { .. })
    }

    /// Appends the reply body (no prefix, no timings, no LF) in `style`.
    pub fn encode_body(&self, style: ReplyStyle, dst: &mut impl BufMut) {
        match self {
            Reply::Lookup(LookupReply::Found(values)) => match values.as_slice() {
                [_, _, ..] if style.multi_value => {
                    // The values are joined with escaping, then escaped again as one field.
                    let mut inner = Vec::new();
                    join_escaped(&mut inner, values);
                    dst.put_u8(b'M');
                    escape_into(dst, &inner);
                }
                [first, ..] => {
                    dst.put_u8(b'O');
                    escape_into(dst, first);
                }
                [] => dst.put_u8(b'O'),
            },
            Reply::Lookup(LookupReply::NotFound) => dst.put_u8(b'N'),
            Reply::Lookup(LookupReply::Failed(err)) => {
                dst.put_u8(b'F');
                escape_into(dst, err);
            }
            Reply::IterRow { key, values } => {
                dst.put_u8(b'O');
                escape_into(dst, key);
                if values.is_empty() {
                    // Dovecot's client needs at least one field after the key.
                    dst.put_u8(b'\t');
                }
                for v in values {
                    dst.put_u8(b'\t');
                    escape_into(dst, v);
                }
            }
            Reply::IterEnd => {}
            Reply::IterFailed(err) => {
                dst.put_u8(b'F');
                dst.put_slice(err);
            }
            Reply::Commit {
                id,
                result,
                is_async,
            } => {
                if *is_async {
                    dst.put_u8(b'A');
                }
                let (letter, err) = match result {
                    CommitReply::Ok => (b'O', None),
                    CommitReply::NotFound => (b'N', None),
                    CommitReply::Failed(e) => (b'F', Some(e)),
                    CommitReply::WriteUncertain(e) => (b'W', Some(e)),
                };
                dst.put_u8(letter);
                push_u64(dst, (*id).into());
                if let Some(e) = err {
                    dst.put_u8(b'\t');
                    escape_into(dst, e);
                }
            }
        }
    }

    /// Reads a reply body (the line without any `+<n>\t` prefix) answering a `kind` command.
    /// Timing fields are recognised and returned when present, so replies of servers that
    /// send none (minor 0, third-party servers) read the same.
    pub fn parse(
        body: &[u8],
        kind: ReplyKind,
    ) -> Result<(Reply<'_>, Option<Timings>), ProtocolError> {
        // How many fields of its own the reply has before any timings (0: never timings).
        let own_fields = match (kind, body.first()) {
            // The minor-0 end of an iteration is an empty line: zero fields, not one empty one.
            (ReplyKind::Iterate, None) => return Ok((Reply::IterEnd, None)),
            (_, None) => return Err(ProtocolError::BadReply("empty reply")),
            (ReplyKind::Iterate, Some(b'O')) => 0,
            (ReplyKind::Commit, Some(b'F' | b'W')) => 2,
            (ReplyKind::CommitAsync, Some(b'A')) if matches!(body.get(1), Some(b'F' | b'W')) => 2,
            _ => 1,
        };
        let (own, timings) = if own_fields == 0 {
            (body, None)
        } else {
            split_timings(body, own_fields)
        };
        // The first field, and what follows its TAB (None: it was the only field).
        let (first, more) = match find_byte(b'\t', own) {
            Some(tab) => (&own[..tab], Some(&own[tab + 1..])),
            None => (own, None),
        };
        let reply = match kind {
            ReplyKind::Lookup => Reply::Lookup(match first.split_first() {
                Some((b'O', v)) => LookupReply::Found(vec![unescape(v)]),
                Some((b'M', v)) => LookupReply::Found(
                    split_raw(&unescape(v))
                        .map(|f| Cow::Owned(unescape(f).into_owned()))
                        .collect(),
                ),
                Some((b'N', _)) => LookupReply::NotFound,
                Some((b'F', e)) => LookupReply::Failed(unescape(e)),
                _ => return Err(ProtocolError::BadReply("unknown lookup reply")),
            }),
            ReplyKind::Iterate => match first.split_first() {
                None => Reply::IterEnd,
                Some((b'O', key)) => {
                    let Some(values) = more else {
                        return Err(ProtocolError::BadReply("iterate row without a value field"));
                    };
                    Reply::IterRow {
                        key: unescape(key),
                        values: split_raw_after_tab(values).map(unescape).collect(),
                    }
                }
                // The error is sent raw, TABs and all: everything before the timings.
                Some((b'F', _)) => Reply::IterFailed(Cow::Borrowed(&own[1..])),
                _ => return Err(ProtocolError::BadReply("unknown iterate reply")),
            },
            ReplyKind::Commit | ReplyKind::CommitAsync => {
                let (is_async, rest) = match (kind, first.split_first()) {
                    (ReplyKind::CommitAsync, Some((b'A', rest))) => (true, rest),
                    (ReplyKind::CommitAsync, _) => {
                        return Err(ProtocolError::BadReply("async commit reply without A"))
                    }
                    _ => (false, first),
                };
                let (&letter, id) = rest
                    .split_first()
                    .ok_or(ProtocolError::BadReply("empty commit reply"))?;
                let err = || {
                    more.map(|m| unescape(split_raw_after_tab(m).next().unwrap_or_default()))
                        .unwrap_or_default()
                };
                let result = match letter {
                    b'O' => CommitReply::Ok,
                    b'N' => CommitReply::NotFound,
                    b'F' => CommitReply::Failed(err()),
                    b'W' => CommitReply::WriteUncertain(err()),
                    _ => return Err(ProtocolError::BadReply("unknown commit reply")),
                };
                let id = parse_u32(id).ok_or(ProtocolError::BadReply(
                    "commit reply without transaction id",
                ))?;
                Reply::Commit {
                    id,
                    result,
                    is_async,
                }
            }
        };
        Ok((reply, timings))
    }

    /// Detaches the reply from the line it was parsed from.
    pub fn into_owned(self) -> Reply<'static> {
        fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Reply::Lookup(LookupReply::Found(v)) => {
                Reply::Lookup(LookupReply::Found(v.into_iter().map(own).collect()))
            }
            Reply::Lookup(LookupReply::NotFound) => Reply::Lookup(LookupReply::NotFound),
            Reply::Lookup(LookupReply::Failed(e)) => Reply::Lookup(LookupReply::Failed(own(e))),
            Reply::IterRow { key, values } => Reply::IterRow {
                key: own(key),
                values: values.into_iter().map(own).collect(),
            },
            Reply::IterEnd => Reply::IterEnd,
            Reply::IterFailed(e) => Reply::IterFailed(own(e)),
            Reply::Commit {
                id,
                result,
                is_async,
            } => Reply::Commit {
                id,
                is_async,
                result: match result {
                    CommitReply::Ok => CommitReply::Ok,
                    CommitReply::NotFound => CommitReply::NotFound,
                    CommitReply::Failed(e) => CommitReply::Failed(own(e)),
                    CommitReply::WriteUncertain(e) => CommitReply::WriteUncertain(own(e)),
                },
            },
        }
    }
}

/// Splits four trailing timing fields off a final reply body whose own fields number at
/// least `own_fields`. The reply's own fields are escaped (TAB-free), except an iteration
/// error, which is why the count is only a minimum. Fields that do not parse as timings are
/// left in the body.
fn split_timings(body: &[u8], own_fields: usize) -> (&[u8], Option<Timings>) {
    // The positions of the last four TABs.
    let mut tabs = [0; 4];
    let mut end = body.len();
    for slot in tabs.iter_mut().rev() {
        match rfind_byte(b'\t', &body[..end]) {
            Some(tab) => *slot = tab,
            None => return (body, None),
        }
        end = *slot;
    }
    let [t0, t1, t2, t3] = tabs;
    let own = &body[..t0];
    // `own` holds own_fields - 1 TABs at least (an empty `own` is one empty field).
    if memchr::memchr_iter(b'\t', own).take(own_fields - 1).count() < own_fields - 1 {
        return (body, None);
    }
    match (
        parse_u64(&body[t0 + 1..t1]),
        parse_u32(&body[t1 + 1..t2]),
        parse_u64(&body[t2 + 1..t3]),
        parse_u32(&body[t3 + 1..]),
    ) {
        (Some(start_secs), Some(start_usecs), Some(end_secs), Some(end_usecs)) => (
            own,
            Some(Timings {
                start_secs,
                start_usecs,
                end_secs,
                end_usecs,
            }),
        ),
        _ => (body, None),
    }
}

/// A whole server line: an async id announcement or a (possibly prefixed) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `*<n>`: sent as soon as a reply-bearing command is parsed.
    AsyncId(u32),
    /// `[+<n>\t]<reply>[\t<timings>]`
    Reply {
        async_id: Option<u32>,
        reply: Reply<'a>,
        timings: Option<Timings>,
    },
}

impl ServerLine<'_> {
    /// Appends the line, with its LF. `style` decides the `+<n>` prefix, the timings (final
    /// replies only) and whether a multi-value lookup is sent as `M`.
    pub fn encode(&self, style: ReplyStyle, dst: &mut impl BufMut) {
        match self {
            ServerLine::AsyncId(n) => {
                dst.put_u8(b'*');
                push_u64(dst, (*n).into());
            }
            ServerLine::Reply {
                async_id,
                reply,
                timings,
            } => {
                if let (true, Some(n)) = (style.async_ids, async_id) {
                    dst.put_u8(b'+');
                    push_u64(dst, (*n).into());
                    dst.put_u8(b'\t');
                }
                reply.encode_body(style, dst);
                if let (true, true, Some(t)) = (style.timings, reply.is_final(), timings) {
                    for n in [
                        t.start_secs,
                        t.start_usecs.into(),
                        t.end_secs,
                        t.end_usecs.into(),
                    ] {
                        dst.put_u8(b'\t');
                        push_u64(dst, n);
                    }
                }
            }
        }
        dst.put_u8(b'\n');
    }
}

/// A server line split into its framing, before the body is read (which needs the command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `*<n>`
    AsyncId(u32),
    /// A reply body, with the number of its `+<n>\t` prefix if it had one.
    Reply {
        async_id: Option<u32>,
        body: &'a [u8],
    },
}

impl<'a> Frame<'a> {
    /// Splits the framing off a server line (without its LF).
    pub fn parse(line: &'a [u8]) -> Result<Self, ProtocolError> {
        match line.split_first() {
            Some((b'*', n)) => parse_u32(n)
                .map(Frame::AsyncId)
                .ok_or(ProtocolError::BadReply("invalid async id")),
            Some((b'+', rest)) => {
                let tab = find_byte(b'\t', rest)
                    .ok_or(ProtocolError::BadReply("async reply without TAB"))?;
                let n = parse_u32(&rest[..tab])
                    .ok_or(ProtocolError::BadReply("invalid async reply id"))?;
                Ok(Frame::Reply {
                    async_id: Some(n),
                    body: &rest[tab + 1..],
                })
            }
            _ => Ok(Frame::Reply {
                async_id: None,
                body: line,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(line: &ServerLine<'_>, style: ReplyStyle) -> Vec<u8> {
        let mut out = Vec::new();
        line.encode(style, &mut out);
        out
    }

    const TS: Timings = Timings {
        start_secs: 1795897969,
        start_usecs: 936556,
        end_secs: 1795897969,
        end_usecs: 936748,
    };

    #[test]
    fn multi_value_is_escaped_twice() {
        let reply = Reply::Lookup(LookupReply::Found(vec![
            Cow::Borrowed(b"a\tb"),
            Cow::Borrowed(b"42"),
        ]));
        let line = ServerLine::Reply {
            async_id: Some(1),
            reply: reply.clone(),
            timings: Some(TS),
        };
        assert_eq!(
            enc(&line, ReplyStyle::ASYNC_MULTI),
            b"+1\tMa\x011tb\x01t42\t1795897969\t936556\t1795897969\t936748\n"
        );
        assert_eq!(
            enc(&line, ReplyStyle::ASYNC),
            b"+1\tOa\x01tb\t1795897969\t936556\t1795897969\t936748\n"
        );
        assert_eq!(enc(&line, ReplyStyle::ORDERED), b"Oa\x01tb\n");
        let (parsed, t) = Reply::parse(
            b"Ma\x011tb\x01t42\t1795897969\t936556\t1795897969\t936748",
            ReplyKind::Lookup,
        )
        .unwrap();
        assert_eq!(parsed, reply);
        assert_eq!(t, Some(TS));
    }

    #[test]
    fn iterate_end_and_failure() {
        let end = ServerLine::Reply {
            async_id: Some(3),
            reply: Reply::IterEnd,
            timings: Some(TS),
        };
        assert_eq!(
            enc(&end, ReplyStyle::ASYNC_MULTI),
            b"+3\t\t1795897969\t936556\t1795897969\t936748\n"
        );
        assert_eq!(enc(&end, ReplyStyle::ORDERED), b"\n");
        let (r, t) = Reply::parse(b"Fbad\tpath\t1\t2\t3\t4", ReplyKind::Iterate).unwrap();
        assert_eq!(r, Reply::IterFailed(Cow::Borrowed(b"bad\tpath")));
        assert!(t.is_some());
    }

    #[test]
    fn commit_replies() {
        let (r, t) = Reply::parse(
            b"F1\tsql dict set: Invalid/unmapped key: shared/nope\t1\t2\t3\t4",
            ReplyKind::Commit,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Commit {
                id: 1,
                result: CommitReply::Failed(Cow::Borrowed(
                    b"sql dict set: Invalid/unmapped key: shared/nope"
                )),
                is_async: false
            }
        );
        assert!(t.is_some());
        let (r, _) = Reply::parse(b"AO5", ReplyKind::CommitAsync).unwrap();
        assert_eq!(
            r,
            Reply::Commit {
                id: 5,
                result: CommitReply::Ok,
                is_async: true
            }
        );
    }

    #[test]
    fn empty_bodies() {
        // The minor-0 end of an iteration, and no panic for the other kinds.
        assert_eq!(
            Reply::parse(b"", ReplyKind::Iterate),
            Ok((Reply::IterEnd, None))
        );
        for kind in [ReplyKind::Lookup, ReplyKind::Commit, ReplyKind::CommitAsync] {
            assert_eq!(
                Reply::parse(b"", kind),
                Err(ProtocolError::BadReply("empty reply"))
            );
        }
    }

    #[test]
    fn frames() {
        assert_eq!(Frame::parse(b"*12").unwrap(), Frame::AsyncId(12));
        assert_eq!(
            Frame::parse(b"+2\tO1").unwrap(),
            Frame::Reply {
                async_id: Some(2),
                body: b"O1"
            }
        );
        assert_eq!(
            Frame::parse(b"N").unwrap(),
            Frame::Reply {
                async_id: None,
                body: b"N"
            }
        );
    }
}
