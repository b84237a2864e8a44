//! Property tests: whatever the crate encodes, it parses back to the same value, for arbitrary
//! bytes (TAB, LF, CR, 0x01, NUL, invalid UTF-8), numbers, every command, every reply in every
//! reply style, and the hello; and a stream of encoded lines cut anywhere decodes line by line.
//!
//! Where the wire cannot carry a value as it is, the test says so and compares with what the
//! wire can carry:
//! * ordered and async styles send only the first value of a multi-value lookup (`O`);
//! * the ordered style sends neither `+<n>` prefixes nor timings, and rows never carry timings;
//! * an iteration row with no value is sent with one empty value;
//! * `L` with an empty key and no username is the line `L`, which has zero fields;
//! * `B` with expire_secs but no username is sent with an empty username;
//! * an iteration error travels unescaped, so it cannot hold CR or LF, and without timings
//!   after it, four TAB-separated numbers at its end would read as timings.

use std::borrow::Cow;

use bytes::BytesMut;
use dict_protocol::codec::{ClientCodec, CodecError, ServerCodec};
use dict_protocol::escape::{escape, join_escaped, split_unescaped, unescape};
use dict_protocol::{
    CommitReply, Frame, Hello, IterateFlags, LookupReply, Reply, ReplyKind, ReplyStyle, Request,
    ServerLine, Timings, MAJOR_V3, MAJOR_V4,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

type Bytes = Cow<'static, [u8]>;

/// Bytes biased towards the ones that need escaping or that framing cares about.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(vec![0x01, b'\t', b'\n', b'\r', 0x00, b'\\', b'/', b'0', b'1', b't', b'n', b'r']),
        2 => b'a'..=b'z',
    ]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(byte(), 0..24).prop_map(Cow::Owned)
}

fn non_empty_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(byte(), 1..24).prop_map(Cow::Owned)
}

/// An unescaped iteration error: anything but CR and LF.
fn raw_error() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        byte().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
    .prop_map(Cow::Owned)
}

fn flags() -> impl Strategy<Value = IterateFlags> {
    prop_oneof![any::<u32>(), 0u32..64].prop_map(IterateFlags::from_bits_retain)
}

fn request() -> impl Strategy<Value = Request<'static>> {
    let id = || any::<u32>();
    prop_oneof![
        (non_empty_bytes(), prop::option::of(bytes()))
            .prop_map(|(key, username)| Request::Lookup { key, username }),
        (bytes(), bytes()).prop_map(|(key, u)| Request::Lookup {
            key,
            username: Some(u)
        }),
        (flags(), any::<u64>(), bytes(), prop::option::of(bytes())).prop_map(
            |(flags, max_rows, path, username)| Request::Iterate {
                flags,
                max_rows,
                path,
                username
            }
        ),
        (
            id(),
            prop_oneof![
                Just((None, None)),
                bytes().prop_map(|u| (Some(u), None)),
                (bytes(), any::<u32>()).prop_map(|(u, e)| (Some(u), Some(e))),
            ]
        )
            .prop_map(|(id, (username, expire_secs))| Request::Begin {
                id,
                username,
                expire_secs
            }),
        id().prop_map(|id| Request::Commit { id }),
        id().prop_map(|id| Request::CommitAsync { id }),
        id().prop_map(|id| Request::Rollback { id }),
        (id(), bytes(), bytes()).prop_map(|(id, key, value)| Request::Set { id, key, value }),
        (id(), bytes()).prop_map(|(id, key)| Request::Unset { id, key }),
        (id(), bytes(), any::<i64>()).prop_map(|(id, key, diff)| Request::AtomicInc {
            id,
            key,
            diff
        }),
        (
            id(),
            bytes(),
            prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX])
        )
            .prop_map(|(id, key, diff)| Request::AtomicInc { id, key, diff }),
        (id(), any::<i64>(), any::<u32>()).prop_map(|(id, secs, nsecs)| Request::Timestamp {
            id,
            secs,
            nsecs
        }),
        (id(), any::<bool>()).prop_map(|(id, hide)| Request::HideLogValues { id, hide }),
    ]
}

fn hello() -> impl Strategy<Value = Hello<'static>> {
    let v3 = (any::<u32>(), 0u32..2, bytes(), bytes()).prop_map(
        |(minor, value_type, username, dict_name)| Hello {
            major: MAJOR_V3,
            minor,
            value_type,
            username,
            dict_name,
        },
    );
    let v4 = (any::<u32>(), any::<u32>(), bytes(), bytes()).prop_map(
        |(minor, value_type, username, dict_name)| Hello {
            major: MAJOR_V4,
            minor,
            value_type,
            username,
            dict_name,
        },
    );
    prop_oneof![v3, v4]
}

fn timings() -> impl Strategy<Value = Timings> {
    (any::<u64>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
        |(start_secs, start_usecs, end_secs, end_usecs)| Timings {
            start_secs,
            start_usecs,
            end_secs,
            end_usecs,
        },
    )
}

fn commit_result() -> impl Strategy<Value = CommitReply<'static>> {
    prop_oneof![
        Just(CommitReply::Ok),
        Just(CommitReply::NotFound),
        bytes().prop_map(CommitReply::Failed),
        bytes().prop_map(CommitReply::WriteUncertain),
    ]
}

fn reply() -> impl Strategy<Value = Reply<'static>> {
    prop_oneof![
        prop::collection::vec(bytes(), 1..5).prop_map(|v| Reply::Lookup(LookupReply::Found(v))),
        Just(Reply::Lookup(LookupReply::NotFound)),
        bytes().prop_map(|e| Reply::Lookup(LookupReply::Failed(e))),
        (bytes(), prop::collection::vec(bytes(), 0..5))
            .prop_map(|(key, values)| Reply::IterRow { key, values }),
        Just(Reply::IterEnd),
        raw_error().prop_map(Reply::IterFailed),
        (any::<u32>(), commit_result(), any::<bool>()).prop_map(|(id, result, is_async)| {
            Reply::Commit {
                id,
                result,
                is_async,
            }
        }),
    ]
}

fn style() -> impl Strategy<Value = ReplyStyle> {
    prop::sample::select(vec![
        ReplyStyle::ORDERED,
        ReplyStyle::ASYNC,
        ReplyStyle::ASYNC_MULTI,
    ])
}

fn kind_of(reply: &Reply<'_>) -> ReplyKind {
    match reply {
        Reply::Lookup(_) => ReplyKind::Lookup,
        Reply::IterRow { .. } | Reply::IterEnd | Reply::IterFailed(_) => ReplyKind::Iterate,
        Reply::Commit {
            is_async: false, ..
        } => ReplyKind::Commit,
        Reply::Commit { is_async: true, .. } => ReplyKind::CommitAsync,
    }
}

/// What a reply looks like after a trip through the wire in `style`.
fn as_sent(reply: &Reply<'static>, style: ReplyStyle) -> Reply<'static> {
    match reply {
        Reply::Lookup(LookupReply::Found(v)) if !style.multi_value => {
            Reply::Lookup(LookupReply::Found(vec![v[0].clone()]))
        }
        Reply::IterRow { key, values } if values.is_empty() => Reply::IterRow {
            key: key.clone(),
            values: vec![Cow::Borrowed(b"")],
        },
        other => other.clone(),
    }
}

/// The line without its LF, checking that the LF is the only one.
fn strip_lf(encoded: &[u8]) -> &[u8] {
    let (last, line) = encoded
        .split_last()
        .expect("an encoded line is never empty");
    assert_eq!(*last, b'\n', "an encoded line ends with LF");
    assert!(
        !line.contains(&b'\n'),
        "no LF inside an encoded line: {line:?}"
    );
    line
}

fn encode_request(r: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

fn encode_server(line: &ServerLine<'_>, style: ReplyStyle) -> Vec<u8> {
    let mut out = Vec::new();
    line.encode(style, &mut out);
    out
}

fn server_line() -> impl Strategy<Value = (ServerLine<'static>, ReplyStyle)> {
    let reply_line = (
        prop::option::of(any::<u32>()),
        reply(),
        prop::option::of(timings()),
    )
        .prop_map(|(async_id, reply, timings)| ServerLine::Reply {
            async_id,
            reply,
            timings,
        });
    (
        prop_oneof![1 => any::<u32>().prop_map(ServerLine::AsyncId), 4 => reply_line],
        style(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn escape_round_trips(value in prop::collection::vec(any::<u8>(), 0..64)) {
        let escaped = escape(&value);
        prop_assert!(!escaped.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0)));
        prop_assert_eq!(&*unescape(&escaped), &value[..]);
    }

    #[test]
    fn split_round_trips(fields in prop::collection::vec(bytes(), 1..6)) {
        // One empty field and zero fields are both the empty line.
        prop_assume!(!(fields.len() == 1 && fields[0].is_empty()));
        let mut line = Vec::new();
        join_escaped(&mut line, &fields);
        prop_assert_eq!(split_unescaped(&line), fields);
    }

    #[test]
    fn request_round_trips(req in request()) {
        let encoded = encode_request(&req);
        let line = strip_lf(&encoded);
        prop_assert!(!line.contains(&b'\r') && !line.contains(&0), "CR and NUL are always escaped");
        prop_assert_eq!(Request::parse(line), Ok(req));
    }

    #[test]
    fn hello_round_trips(h in hello()) {
        let mut encoded = Vec::new();
        h.encode(&mut encoded);
        let parsed = Hello::parse(strip_lf(&encoded));
        prop_assert_eq!(parsed.as_ref().map(Hello::reply_style), Ok(ReplyStyle::for_version(h.major, h.minor)));
        prop_assert_eq!(parsed, Ok(h));
    }

    #[test]
    fn server_line_round_trips((line, style) in server_line()) {
        let encoded = encode_server(&line, style);
        let wire = strip_lf(&encoded);
        match line {
            ServerLine::AsyncId(n) => prop_assert_eq!(Frame::parse(wire), Ok(Frame::AsyncId(n))),
            ServerLine::Reply { async_id, reply, timings } => {
                let sent_timings = if style.timings && reply.is_final() { timings } else { None };
                if let (Reply::IterFailed(e), None) = (&reply, sent_timings) {
                    prop_assume!(e.iter().filter(|&&b| b == b'\t').count() < 4);
                }
                let Ok(Frame::Reply { async_id: got_id, body }) = Frame::parse(wire) else {
                    return Err(TestCaseError::fail(format!("not a reply frame: {wire:?}")));
                };
                prop_assert_eq!(got_id, if style.async_ids { async_id } else { None });
                let (got, got_timings) = Reply::parse(body, kind_of(&reply))
                    .map_err(|e| TestCaseError::fail(format!("{e} in {wire:?}")))?;
                prop_assert_eq!(got_timings, sent_timings);
                prop_assert_eq!(got, as_sent(&reply, style));
            }
        }
    }

    #[test]
    fn codec_splits_streams_anywhere(
        requests in prop::collection::vec(request(), 0..12),
        replies in prop::collection::vec(server_line(), 0..12),
        h in hello(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        crlf in any::<bool>(),
    ) {
        let mut lines = Vec::new();
        let mut hello_line = Vec::new();
        h.encode(&mut hello_line);
        lines.push(hello_line);
        lines.extend(requests.iter().map(encode_request));
        lines.extend(replies.iter().map(|(l, s)| encode_server(l, *s)));
        let mut stream = Vec::new();
        for l in &lines {
            stream.extend_from_slice(strip_lf(l));
            stream.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        points.push(stream.len());

        let want: Vec<&[u8]> = lines.iter().map(|l| strip_lf(l)).collect();
        let mut server = ServerCodec::new();
        let mut client = ClientCodec::default();
        for codec in [&mut server as &mut dyn Decoder<Item = BytesMut, Error = CodecError>, &mut client] {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            for &to in &points {
                buf.extend_from_slice(&stream[from..to]);
                from = to;
                while let Some(line) = codec.decode(&mut buf).unwrap() {
                    got.push(line);
                }
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(got.iter().map(|l| &l[..]).collect::<Vec<_>>(), want.clone());
        }
    }
}
