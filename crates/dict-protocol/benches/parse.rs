//! Parse throughput on a realistic mix of traffic, decoded from one big buffer with the
//! codec's `LineDecoder` as a server or client would:
//!
//! * `requests`: what a server reads: quota_clone transactions (`B`, two `S`, `C`), lookups
//!   of quota and shared keys, a few iterations, a few 2.4-style batches with `U` and `T`.
//! * `replies`: what a client reads: `*<n>` ids, lookup replies (`O`, `M`, `N`), iteration
//!   rows and ends, commit replies, all with async prefixes and timings.
//!
//! Group `parse` reports bytes per second, group `parse_lines` lines per second.
//! `requests_lines_only` splits the request buffer into lines without parsing them: the
//! codec's share, a ceiling for the others. Group `parse_borrowed` parses the same traffic
//! from lines borrowed straight from the buffer (no codec, no copy): the parser alone.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dict_protocol::codec::LineDecoder;
use dict_protocol::{Frame, Reply, ReplyKind, Request, MAX_LINE_LENGTH};
use tokio_util::codec::Decoder;

/// Target size of each buffer.
const BUFFER_BYTES: usize = 1 << 20;

struct Traffic {
    bytes: Vec<u8>,
    lines: u64,
}

fn requests() -> Traffic {
    let mut out = String::new();
    let mut lines = 0;
    let mut id = 0u32;
    while out.len() < BUFFER_BYTES {
        id += 1;
        let user = format!("user{:05}@example.test", id % 5000);
        match id % 10 {
            0..=4 => {
                // quota_clone (2.3): B, S storage, S messages, C
                out += &format!("B{id}\t{user}\nS{id}\tpriv/quota/storage\t{}\nS{id}\tpriv/quota/messages\t{}\nC{id}\n",
                    u64::from(id) * 7919 % 10_000_000, id % 3000);
                lines += 4;
            }
            5 | 6 => {
                out += &format!(
                    "Lpriv/quota/storage\t{user}\nLshared/kv/test/key{}\t\n",
                    id % 97
                );
                lines += 2;
            }
            7 => {
                out += &format!("I0\t0\tshared/kv/test/\t\nLshared/kv/test/esc\x01t{id}\t\n");
                lines += 2;
            }
            8 => {
                // quota_clone (2.4, quota_clone_unset = yes), batched with expire_secs
                out += &format!(
                    "B{id}\t{user}\t0\nU{id}\tpriv/quota/storage\nS{id}\tpriv/quota/storage\t{id}\nU{id}\tpriv/quota/messages\nS{id}\tpriv/quota/messages\t1\nC{id}\n"
                );
                lines += 6;
            }
            _ => {
                out += &format!("B{id}\t\nT{id}\t1700000000\t5\nA{id}\tshared/kv/counter\t-1\nS{id}\tshared/kv/test/v\ta\x01tb\x01nc\nC{id}\n");
                lines += 5;
            }
        }
    }
    Traffic {
        bytes: out.into_bytes(),
        lines,
    }
}

/// The reply stream, and the kind of command behind each async id (index = id).
fn replies() -> (Traffic, Vec<ReplyKind>) {
    let mut out = String::new();
    let mut lines = 0;
    let mut kinds = vec![ReplyKind::Lookup];
    let ts = |n: u32| {
        format!(
            "\t1795903698\t{}\t1795903698\t{}",
            600_000 + n % 1000,
            601_000 + n % 1000
        )
    };
    while out.len() < BUFFER_BYTES {
        let n = kinds.len() as u32;
        match n % 8 {
            0..=2 => {
                kinds.push(ReplyKind::Lookup);
                out += &format!("*{n}\n+{n}\tO{}{}\n", u64::from(n) * 7919, ts(n));
                lines += 2;
            }
            3 => {
                kinds.push(ReplyKind::Lookup);
                out += &format!("*{n}\n+{n}\tM{}\x01t{}{}\n", n, n % 100, ts(n));
                lines += 2;
            }
            4 => {
                kinds.push(ReplyKind::Lookup);
                out += &format!("*{n}\n+{n}\tN{}\n", ts(n));
                lines += 2;
            }
            5 => {
                kinds.push(ReplyKind::Iterate);
                out += &format!("*{n}\n");
                for row in 0..6 {
                    out += &format!("+{n}\tOshared/kv/test/key{row}\tvalue number {row}\n");
                }
                out += &format!("+{n}\t{}\n", ts(n));
                lines += 8;
            }
            _ => {
                kinds.push(ReplyKind::Commit);
                out += &format!("*{n}\n+{n}\tO{n}{}\n", ts(n));
                lines += 2;
            }
        }
    }
    (
        Traffic {
            bytes: out.into_bytes(),
            lines,
        },
        kinds,
    )
}

/// The codec alone, as a ceiling for the figures above.
fn split_lines(mut buf: BytesMut) -> usize {
    let mut dec = LineDecoder::new(MAX_LINE_LENGTH);
    let mut n = 0;
    while let Some(line) = dec.decode(&mut buf).unwrap() {
        black_box(&line);
        n += 1;
    }
    n
}

fn parse_requests(mut buf: BytesMut) -> usize {
    let mut dec = LineDecoder::new(MAX_LINE_LENGTH);
    let mut n = 0;
    while let Some(line) = dec.decode(&mut buf).unwrap() {
        let req = Request::parse(&line).unwrap();
        black_box(&req);
        n += 1;
    }
    n
}

fn parse_replies(mut buf: BytesMut, kinds: &[ReplyKind]) -> usize {
    let mut dec = LineDecoder::new(MAX_LINE_LENGTH);
    let mut n = 0;
    while let Some(line) = dec.decode(&mut buf).unwrap() {
        match Frame::parse(&line).unwrap() {
            Frame::AsyncId(id) => {
                black_box(id);
            }
            Frame::Reply { async_id, body } => {
                let kind = kinds[async_id.unwrap() as usize];
                let reply = Reply::parse(body, kind).unwrap();
                black_box(&reply);
            }
        }
        n += 1;
    }
    n
}

/// The lines of `buf`, borrowed (the parser's view when the caller owns the read buffer).
fn borrowed_lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', buf).map(move |end| {
        let line = &buf[start..end];
        start = end + 1;
        line
    })
}

fn parse_requests_borrowed(buf: &[u8]) -> usize {
    let mut n = 0;
    for line in borrowed_lines(buf) {
        black_box(Request::parse(line).unwrap());
        n += 1;
    }
    n
}

fn parse_replies_borrowed(buf: &[u8], kinds: &[ReplyKind]) -> usize {
    let mut n = 0;
    for line in borrowed_lines(buf) {
        match Frame::parse(line).unwrap() {
            Frame::AsyncId(id) => {
                black_box(id);
            }
            Frame::Reply { async_id, body } => {
                let kind = kinds[async_id.unwrap() as usize];
                black_box(Reply::parse(body, kind).unwrap());
            }
        }
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let req = requests();
    let (rep, kinds) = replies();
    // Check once that the whole buffers parse, and that the line counts are right.
    assert_eq!(
        parse_requests(BytesMut::from(&req.bytes[..])) as u64,
        req.lines
    );
    assert_eq!(
        parse_replies(BytesMut::from(&rep.bytes[..]), &kinds) as u64,
        rep.lines
    );

    for (group, per_line) in [("parse", false), ("parse_lines", true)] {
        let mut g = c.benchmark_group(group);
        let tp = |t: &Traffic| {
            if per_line {
                Throughput::Elements(t.lines)
            } else {
                Throughput::Bytes(t.bytes.len() as u64)
            }
        };
        g.throughput(tp(&req));
        g.bench_function("requests", |b| {
            b.iter_batched(
                || BytesMut::from(&req.bytes[..]),
                parse_requests,
                BatchSize::LargeInput,
            )
        });
        g.bench_function("requests_lines_only", |b| {
            b.iter_batched(
                || BytesMut::from(&req.bytes[..]),
                split_lines,
                BatchSize::LargeInput,
            )
        });
        g.throughput(tp(&rep));
        g.bench_function("replies", |b| {
            b.iter_batched(
                || BytesMut::from(&rep.bytes[..]),
                |buf| parse_replies(buf, &kinds),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }

    assert_eq!(parse_requests_borrowed(&req.bytes) as u64, req.lines);
    assert_eq!(parse_replies_borrowed(&rep.bytes, &kinds) as u64, rep.lines);
    let mut g = c.benchmark_group("parse_borrowed");
    g.throughput(Throughput::Bytes(req.bytes.len() as u64));
    g.bench_function("requests", |b| {
        b.iter(|| parse_requests_borrowed(&req.bytes))
    });
    g.throughput(Throughput::Bytes(rep.bytes.len() as u64));
    g.bench_function("replies", |b| {
        b.iter(|| parse_replies_borrowed(&rep.bytes, &kinds))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
