//! Server → client lines (protocol-spec §5): the `*<n>` async id, and replies with their
//! optional `+<n>\t` prefix and four timing fields, read with nom parsers.

use std::borrow::Cow;

use bytes::BufMut;

use nom::combinator::{all_consuming, map};
use nom::multi::many1;
use nom::number::complete::u8;
use nom::sequence::{preceded, terminated};
use nom::Parser;

use crate::escape::{escape_into, join_escaped, split_raw, unescape};
use crate::fields::{field, next_field, optional_field, tab, Parsed};
use crate::hello::ReplyStyle;
use crate::number::{decimal_u32, decimal_u64, parse_u32, push_u64};
use crate::request::TransactionId;
use crate::search::rfind_byte;
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
        let reply = match kind {
            ReplyKind::Lookup => Reply::Lookup(lookup(own)?),
            ReplyKind::Iterate => iterate(own)?,
            ReplyKind::Commit => commit(own, false)?,
            ReplyKind::CommitAsync => commit(own, true)?,
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

/// The first field of a reply: its letter and the rest of the field. Fields after it are
/// ignored, as Dovecot's client ignores them.
fn letter(own: &[u8]) -> Parsed<'_, (u8, &[u8])> {
    (u8, field).parse(own)
}

/// `O<value>`, `M<values>`, `N` or `F<error>`.
fn lookup(own: &[u8]) -> Result<LookupReply<'_>, ProtocolError> {
    Ok(match letter(own) {
        Ok((_, (b'O', v))) => LookupReply::Found(vec![unescape(v)]),
        // The values were escaped and joined, then escaped again as one field.
        Ok((_, (b'M', v))) => LookupReply::Found(
            split_raw(&unescape(v))
                .map(|f| Cow::Owned(unescape(f).into_owned()))
                .collect(),
        ),
        Ok((_, (b'N', _))) => LookupReply::NotFound,
        Ok((_, (b'F', e))) => LookupReply::Failed(unescape(e)),
        _ => return Err(ProtocolError::BadReply("unknown lookup reply")),
    })
}

/// A row `O<key>\t<value>…` (at least one value field), the end (an empty first field), or
/// `F<error>` with the error sent raw, TABs and all.
fn iterate(own: &[u8]) -> Result<Reply<'_>, ProtocolError> {
    match own.first() {
        None | Some(b'\t') => Ok(Reply::IterEnd),
        Some(b'O') => {
            let mut row = (u8, field, many1(map(next_field, unescape)));
            match row.parse(own) {
                Ok((_, (_, key, values))) => Ok(Reply::IterRow {
                    key: unescape(key),
                    values,
                }),
                Err(_) => Err(ProtocolError::BadReply("iterate row without a value field")),
            }
        }
        Some(b'F') => Ok(Reply::IterFailed(Cow::Borrowed(&own[1..]))),
        _ => Err(ProtocolError::BadReply("unknown iterate reply")),
    }
}

/// `[A]<letter><id>[\t<error>]`: the `A` answers `D`, and only `D`.
fn commit(own: &[u8], is_async: bool) -> Result<Reply<'_>, ProtocolError> {
    let Ok((_, (first, error))) = (field, optional_field).parse(own) else {
        return Err(ProtocolError::BadReply("empty commit reply"));
    };
    let rest = match (is_async, first.strip_prefix(b"A")) {
        (true, Some(rest)) => rest,
        (false, None) => first,
        (true, None) => return Err(ProtocolError::BadReply("async commit reply without A")),
        // Without `D` an `A` is the reply letter, and an unknown one.
        (false, Some(_)) => return Err(ProtocolError::BadReply("unknown commit reply")),
    };
    let (id, letter) =
        u8::<_, ()>(rest).map_err(|_| ProtocolError::BadReply("empty commit reply"))?;
    let error = || error.map(unescape).unwrap_or_default();
    let result = match letter {
        b'O' => CommitReply::Ok,
        b'N' => CommitReply::NotFound,
        b'F' => CommitReply::Failed(error()),
        b'W' => CommitReply::WriteUncertain(error()),
        _ => return Err(ProtocolError::BadReply("unknown commit reply")),
    };
    let id = parse_u32(id).ok_or(ProtocolError::BadReply(
        "commit reply without transaction id",
    ))?;
    Ok(Reply::Commit {
        id,
        result,
        is_async,
    })
}

/// The four timing fields, each after its TAB: start seconds and microseconds, end seconds
/// and microseconds.
fn timings(tail: &[u8]) -> Parsed<'_, Timings> {
    map(
        all_consuming((
            preceded(tab, decimal_u64),
            preceded(tab, decimal_u32),
            preceded(tab, decimal_u64),
            preceded(tab, decimal_u32),
        )),
        |(start_secs, start_usecs, end_secs, end_usecs)| Timings {
            start_secs,
            start_usecs,
            end_secs,
            end_usecs,
        },
    )
    .parse(tail)
}

/// Splits four trailing timing fields off a final reply body whose own fields number at
/// least `own_fields`. The reply's own fields are escaped (TAB-free), except an iteration
/// error, which is why the count is only a minimum, and why the split starts from the end.
/// Fields that do not parse as timings are left in the body.
fn split_timings(body: &[u8], own_fields: usize) -> (&[u8], Option<Timings>) {
    // The fourth TAB from the end.
    let mut start = body.len();
    for _ in 0..4 {
        match rfind_byte(b'\t', &body[..start]) {
            Some(tab) => start = tab,
            None => return (body, None),
        }
    }
    let (own, tail) = body.split_at(start);
    // `own` holds own_fields - 1 TABs at least (an empty `own` is one empty field).
    if memchr::memchr_iter(b'\t', own).take(own_fields - 1).count() < own_fields - 1 {
        return (body, None);
    }
    match timings(tail) {
        Ok((_, t)) => (own, Some(t)),
        Err(_) => (body, None),
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
            Some((b'*', n)) => all_consuming(decimal_u32)
                .parse(n)
                .map(|(_, n)| Frame::AsyncId(n))
                .map_err(|_| ProtocolError::BadReply("invalid async id")),
            Some((b'+', rest)) => {
                let (body, n) = terminated(field, tab)
                    .parse(rest)
                    .map_err(|_| ProtocolError::BadReply("async reply without TAB"))?;
                let n = parse_u32(n).ok_or(ProtocolError::BadReply("invalid async reply id"))?;
                Ok(Frame::Reply {
                    async_id: Some(n),
                    body,
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
