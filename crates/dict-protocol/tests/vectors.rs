//! Runs every test vector in `protocol-spec/vectors/*.vec` (format: that folder's README.md).
//!
//! Each vector's line is parsed with the crate, the parsed value is rendered in the canonical
//! notation and compared with `expect:` (or the error with `error:`), and the value is encoded
//! again and compared with the line, unless the vector says `canonical: no`. Every failing
//! vector is reported by file, line and name; a missing folder or fewer than 100 vectors fail.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use dict_protocol::codec::{CodecError, LineDecoder, ServerCodec};
use dict_protocol::escape::{escape, join_escaped, split_unescaped, unescape};
use dict_protocol::{
    CommitReply, Frame, Hello, IterateFlags, LookupReply, ProtocolError, Reply, ReplyKind,
    ReplyStyle, Request, ServerLine, Timings,
};
use tokio_util::codec::Decoder;

const MIN_VECTORS: usize = 100;
const KEYS: &[&str] = &[
    "name",
    "kind",
    "line",
    "expect",
    "error",
    "canonical",
    "encoded",
    "style",
    "reply-kind",
    "chunks",
    "limit",
    "source",
    "note",
];

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors")
}

/// One block of a `.vec` file.
struct Vector {
    file: String,
    line_no: usize,
    fields: BTreeMap<String, String>,
}

impl Vector {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
    fn name(&self) -> &str {
        self.get("name").unwrap_or("<unnamed>")
    }
    fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("missing `{key}:`"))
    }
}

fn read_vectors(path: &Path) -> Result<Vec<Vector>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for (i, raw) in text.lines().enumerate() {
        if raw.starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        let (key, value) = raw
            .split_once(':')
            .ok_or_else(|| format!("{file}:{}: not `key: value`: {raw:?}", i + 1))?;
        let value = value.strip_prefix(' ').unwrap_or(value);
        if !KEYS.contains(&key) {
            return Err(format!("{file}:{}: unknown key `{key}`", i + 1));
        }
        let v = current.get_or_insert_with(|| Vector {
            file: file.clone(),
            line_no: i + 1,
            fields: BTreeMap::new(),
        });
        if v.fields
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(format!("{file}:{}: key `{key}` given twice", i + 1));
        }
    }
    out.extend(current);
    Ok(out)
}

// ---- the byte notation -------------------------------------------------------------------

/// Reads the byte notation: `\t \n \r \\ \" \xNN`, `\{N}` repeating the previous byte to N
/// copies in all, every other character as its UTF-8 bytes.
fn decode_notation(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let next = *b.get(i + 1).ok_or("lone backslash at end")?;
        i += 2;
        match next {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = s.get(i..i + 2).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?);
                i += 2;
            }
            b'{' => {
                let end = s[i..].find('}').ok_or("unclosed \\{")? + i;
                let n: usize = s[i..end]
                    .parse()
                    .map_err(|_| format!("bad repeat count {:?}", &s[i..end]))?;
                let last = *out.last().ok_or("\\{N} with nothing to repeat")?;
                if n == 0 {
                    return Err("\\{0} is not allowed".into());
                }
                out.extend(std::iter::repeat_n(last, n - 1));
                i = end + 1;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
    }
    Ok(out)
}

/// Bytes in the notation, quoted. Runs of 16 or more equal bytes are written once plus `\{N}`.
fn q(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        match b {
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => write!(s, "\\x{b:02x}").unwrap(),
        }
        if run >= 16 {
            write!(s, "\\{{{run}}}").unwrap();
            i += run;
        } else {
            i += 1;
        }
    }
    s.push('"');
    s
}

fn list<T: AsRef<[u8]>>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|i| q(i.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

// ---- canonical renderings ----------------------------------------------------------------

fn render_flags(flags: IterateFlags) -> String {
    if flags.is_empty() {
        return "0".into();
    }
    let mut parts: Vec<String> = flags.iter_names().map(|(n, _)| n.to_string()).collect();
    let unknown = flags.bits() & !IterateFlags::all().bits();
    if unknown != 0 {
        parts.push(format!("0x{unknown:x}"));
    }
    parts.join("|")
}

fn opt_user(u: &Option<std::borrow::Cow<'_, [u8]>>) -> String {
    u.as_ref()
        .map(|u| format!(" user={}", q(u)))
        .unwrap_or_default()
}

fn render_request(r: &Request<'_>) -> String {
    match r {
        Request::Lookup { key, username } => format!("LOOKUP key={}{}", q(key), opt_user(username)),
        Request::Iterate {
            flags,
            max_rows,
            path,
            username,
        } => {
            format!(
                "ITERATE flags={} max_rows={max_rows} path={}{}",
                render_flags(*flags),
                q(path),
                opt_user(username)
            )
        }
        Request::Begin {
            id,
            username,
            expire_secs,
        } => {
            let e = expire_secs
                .map(|e| format!(" expire_secs={e}"))
                .unwrap_or_default();
            format!("BEGIN id={id}{}{e}", opt_user(username))
        }
        Request::Commit { id } => format!("COMMIT id={id}"),
        Request::CommitAsync { id } => format!("COMMIT_ASYNC id={id}"),
        Request::Rollback { id } => format!("ROLLBACK id={id}"),
        Request::Set { id, key, value } => format!("SET id={id} key={} value={}", q(key), q(value)),
        Request::Unset { id, key } => format!("UNSET id={id} key={}", q(key)),
        Request::AtomicInc { id, key, diff } => {
            format!("ATOMIC_INC id={id} key={} diff={diff}", q(key))
        }
        Request::Timestamp { id, secs, nsecs } => {
            format!("TIMESTAMP id={id} secs={secs} nsecs={nsecs}")
        }
        Request::HideLogValues { id, hide } => format!(
            "HIDE_LOG_VALUES id={id} hide={}",
            if *hide { "yes" } else { "no" }
        ),
    }
}

fn style_name(s: ReplyStyle) -> &'static str {
    match s {
        ReplyStyle::ORDERED => "ordered",
        ReplyStyle::ASYNC => "async",
        ReplyStyle::ASYNC_MULTI => "multi",
        _ => "custom",
    }
}

fn parse_style(s: &str) -> Result<ReplyStyle, String> {
    match s {
        "ordered" => Ok(ReplyStyle::ORDERED),
        "async" => Ok(ReplyStyle::ASYNC),
        "multi" => Ok(ReplyStyle::ASYNC_MULTI),
        other => Err(format!("unknown style `{other}`")),
    }
}

fn parse_reply_kind(s: &str) -> Result<ReplyKind, String> {
    match s {
        "lookup" => Ok(ReplyKind::Lookup),
        "iterate" => Ok(ReplyKind::Iterate),
        "commit" => Ok(ReplyKind::Commit),
        "commit-async" => Ok(ReplyKind::CommitAsync),
        other => Err(format!("unknown reply-kind `{other}`")),
    }
}

fn render_hello(h: &Hello<'_>) -> String {
    format!(
        "HELLO major={} minor={} value_type={} user={} dict={} style={}",
        h.major,
        h.minor,
        h.value_type,
        q(&h.username),
        q(&h.dict_name),
        style_name(h.reply_style())
    )
}

fn render_reply(r: &Reply<'_>) -> String {
    match r {
        Reply::Lookup(LookupReply::Found(v)) => format!("FOUND {}", list(v)),
        Reply::Lookup(LookupReply::NotFound) => "NOT_FOUND".into(),
        Reply::Lookup(LookupReply::Failed(e)) => format!("FAILED {}", q(e)),
        Reply::IterRow { key, values } => format!("ROW {} {}", q(key), list(values)),
        Reply::IterEnd => "END".into(),
        Reply::IterFailed(e) => format!("ITER_FAILED {}", q(e)),
        Reply::Commit {
            id,
            result,
            is_async,
        } => {
            let what = if *is_async { "ASYNC_COMMIT" } else { "COMMIT" };
            let result = match result {
                CommitReply::Ok => "OK".to_string(),
                CommitReply::NotFound => "NOT_FOUND".to_string(),
                CommitReply::Failed(e) => format!("FAILED {}", q(e)),
                CommitReply::WriteUncertain(e) => format!("WRITE_UNCERTAIN {}", q(e)),
            };
            format!("{what} id={id} {result}")
        }
    }
}

fn render_timings(t: &Timings) -> String {
    format!(
        " timings={},{},{},{}",
        t.start_secs, t.start_usecs, t.end_secs, t.end_usecs
    )
}

fn render_error(e: &ProtocolError) -> String {
    match e {
        ProtocolError::EmptyLine => "EmptyLine".into(),
        ProtocolError::UnknownCommand(b) => format!("UnknownCommand {}", q(&[*b])),
        ProtocolError::FieldCount {
            command,
            expected,
            got,
        } => {
            format!(
                "FieldCount command={command} expected={} got={got}",
                q(expected.as_bytes())
            )
        }
        ProtocolError::BadNumber { command, field } => {
            format!("BadNumber command={command} field={}", q(field.as_bytes()))
        }
        ProtocolError::BadBool { command } => format!("BadBool command={command}"),
        ProtocolError::NotHello => "NotHello".into(),
        ProtocolError::UnsupportedVersion(v) => format!("UnsupportedVersion {v}"),
        ProtocolError::InvalidValueType(v) => format!("InvalidValueType {v}"),
        ProtocolError::BadReply(m) => format!("BadReply {}", q(m.as_bytes())),
        ProtocolError::LineTooLong { limit } => format!("LineTooLong limit={limit}"),
    }
}

fn render_codec_error(e: &CodecError) -> String {
    match e {
        CodecError::LineTooLong { limit } => format!("LineTooLong limit={limit}"),
        CodecError::Io(e) => format!("Io {e}"),
    }
}

// ---- running one vector ------------------------------------------------------------------

/// What a vector's line turned into: a rendering and its re-encoding, or an error rendering.
enum Outcome {
    Parsed {
        rendered: String,
        encoded: Option<Vec<u8>>,
    },
    Failed(String),
}

fn with_lf(mut v: Vec<u8>) -> Vec<u8> {
    v.push(b'\n');
    v
}

fn run_kind(v: &Vector, line: &[u8]) -> Result<Outcome, String> {
    let kind = v.require("kind")?;
    Ok(match kind {
        "escape" => {
            let value = unescape(line);
            Outcome::Parsed {
                rendered: q(&value),
                encoded: Some(escape(&value).into_owned()),
            }
        }
        "split" => {
            let fields = split_unescaped(line);
            let mut enc = Vec::new();
            join_escaped(&mut enc, &fields);
            Outcome::Parsed {
                rendered: list(&fields),
                encoded: Some(enc),
            }
        }
        "hello" => match Hello::parse(line) {
            Ok(h) => {
                let mut enc = Vec::new();
                h.encode(&mut enc);
                Outcome::Parsed {
                    rendered: render_hello(&h),
                    encoded: Some(enc),
                }
            }
            Err(e) => Outcome::Failed(render_error(&e)),
        },
        "request" => match Request::parse(line) {
            Ok(r) => {
                let mut enc = Vec::new();
                r.encode(&mut enc);
                Outcome::Parsed {
                    rendered: render_request(&r),
                    encoded: Some(enc),
                }
            }
            Err(e) => Outcome::Failed(render_error(&e)),
        },
        "frame" => match Frame::parse(line) {
            Ok(Frame::AsyncId(n)) => {
                let mut enc = Vec::new();
                ServerLine::AsyncId(n).encode(ReplyStyle::ASYNC_MULTI, &mut enc);
                Outcome::Parsed {
                    rendered: format!("ASYNC_ID {n}"),
                    encoded: Some(enc),
                }
            }
            Ok(Frame::Reply { async_id, body }) => {
                let mut enc = Vec::new();
                let mut rendered = String::from("REPLY");
                if let Some(n) = async_id {
                    write!(rendered, " +{n}").unwrap();
                    enc.extend_from_slice(format!("+{n}\t").as_bytes());
                }
                write!(rendered, " body={}", q(body)).unwrap();
                enc.extend_from_slice(body);
                Outcome::Parsed {
                    rendered,
                    encoded: Some(with_lf(enc)),
                }
            }
            Err(e) => Outcome::Failed(render_error(&e)),
        },
        "reply" => {
            let style = parse_style(v.require("style")?)?;
            let kind = parse_reply_kind(v.require("reply-kind")?)?;
            let (async_id, body) = match Frame::parse(line) {
                Ok(Frame::Reply { async_id, body }) => (async_id, body),
                Ok(Frame::AsyncId(_)) => {
                    return Err("a reply vector's line is an async id; use kind: frame".into())
                }
                Err(e) => return Ok(Outcome::Failed(render_error(&e))),
            };
            match Reply::parse(body, kind) {
                Ok((reply, timings)) => {
                    let mut rendered = String::new();
                    if let Some(n) = async_id {
                        write!(rendered, "+{n} ").unwrap();
                    }
                    rendered.push_str(&render_reply(&reply));
                    if let Some(t) = &timings {
                        rendered.push_str(&render_timings(t));
                    }
                    let mut enc = Vec::new();
                    ServerLine::Reply {
                        async_id,
                        reply,
                        timings,
                    }
                    .encode(style, &mut enc);
                    Outcome::Parsed {
                        rendered,
                        encoded: Some(enc),
                    }
                }
                Err(e) => Outcome::Failed(render_error(&e)),
            }
        }
        "codec" => return run_codec(v, line),
        other => return Err(format!("unknown kind `{other}`")),
    })
}

/// Feeds `stream` to a decoder in the given chunks, then ends the input.
fn decode_chunks(
    limit: Option<usize>,
    stream: &[u8],
    chunks: &[usize],
) -> (Vec<Vec<u8>>, Option<String>) {
    let mut server = ServerCodec::new();
    let mut lines_dec = limit.map(LineDecoder::new);
    let mut decode = |buf: &mut BytesMut, eof: bool| -> Result<Option<BytesMut>, CodecError> {
        match (&mut lines_dec, eof) {
            (Some(d), false) => d.decode(buf),
            (Some(d), true) => d.decode_eof(buf),
            (None, false) => server.decode(buf),
            (None, true) => server.decode_eof(buf),
        }
    };
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decode(&mut buf, false) {
                Ok(Some(l)) => lines.push(l.to_vec()),
                Ok(None) => break,
                Err(e) => return (lines, Some(render_codec_error(&e))),
            }
        }
    }
    loop {
        match decode(&mut buf, true) {
            Ok(Some(l)) => lines.push(l.to_vec()),
            Ok(None) => return (lines, None),
            Err(e) => return (lines, Some(render_codec_error(&e))),
        }
    }
}

fn run_codec(v: &Vector, stream: &[u8]) -> Result<Outcome, String> {
    let limit = v
        .get("limit")
        .map(|l| l.parse::<usize>().map_err(|_| format!("bad limit {l:?}")))
        .transpose()?;
    let chunks: Vec<usize> = match v.get("chunks") {
        None => Vec::new(),
        Some(c) => c
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .map_err(|_| format!("bad chunk size {n:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let whole = decode_chunks(limit, stream, &[]);
    let mut splits = vec![
        ("given chunks", chunks),
        ("one byte at a time", vec![1; stream.len()]),
    ];
    splits.push(("two halves", vec![stream.len() / 2]));
    for (how, sizes) in splits {
        let got = decode_chunks(limit, stream, &sizes);
        if got != whole {
            return Err(format!(
                "decoding {how} differs from decoding at once: {:?} vs {:?}",
                got, whole
            ));
        }
    }
    let (lines, err) = whole;
    let rendered = list(&lines);
    Ok(match err {
        // Lines decoded before the error are compared with `expect:` by the caller.
        Some(e) => Outcome::Failed(format!("{e}\u{0}{rendered}")),
        None => Outcome::Parsed {
            rendered,
            encoded: None,
        },
    })
}

fn check(v: &Vector) -> Result<(), String> {
    let line = decode_notation(v.require("line")?).map_err(|e| format!("line: {e}"))?;
    let canonical = match v.get("canonical").unwrap_or("yes") {
        "yes" => true,
        "no" => false,
        other => return Err(format!("canonical must be yes or no, not {other:?}")),
    };
    let expect = v.get("expect");
    let error = v.get("error");
    let is_codec = v.get("kind") == Some("codec");
    match (expect, error) {
        (None, None) => return Err("needs `expect:` or `error:`".into()),
        (Some(_), Some(_)) if !is_codec => return Err("has both `expect:` and `error:`".into()),
        _ => {}
    }
    match run_kind(v, &line)? {
        Outcome::Failed(got) => {
            let (got, codec_lines) = match got.split_once('\u{0}') {
                Some((e, lines)) => (e.to_string(), Some(lines.to_string())),
                None => (got, None),
            };
            let Some(want) = error else {
                return Err(format!("expected `{}`, got error `{got}`", expect.unwrap()));
            };
            let same = if want.contains(' ') {
                got == want
            } else {
                got.split(' ').next() == Some(want)
            };
            if !same {
                return Err(format!("expected error `{want}`, got `{got}`"));
            }
            if let (Some(want), Some(got)) = (expect, codec_lines) {
                if want != got {
                    return Err(format!(
                        "lines before the error: expected `{want}`, got `{got}`"
                    ));
                }
            }
        }
        Outcome::Parsed { rendered, encoded } => {
            let Some(want) = expect else {
                return Err(format!(
                    "expected error `{}`, but it parsed as `{rendered}`",
                    error.unwrap()
                ));
            };
            if let (true, Some(e)) = (is_codec, error) {
                return Err(format!(
                    "expected error `{e}`, but decoding succeeded with `{rendered}`"
                ));
            }
            if rendered != want {
                return Err(format!("expected `{want}`\n         got `{rendered}`"));
            }
            if let Some(enc) = encoded {
                // Escape and split vectors re-encode a field or a field list, without LF.
                let lf = !matches!(v.get("kind"), Some("escape" | "split"));
                let original = if lf {
                    with_lf(line.clone())
                } else {
                    line.clone()
                };
                match (canonical, v.get("encoded")) {
                    (true, Some(_)) => {
                        return Err("`encoded:` only goes with `canonical: no`".into())
                    }
                    (true, None) if enc != original => {
                        return Err(format!(
                            "re-encoding gives {} instead of the line {}",
                            q(&enc),
                            q(&original)
                        ))
                    }
                    (false, None) if enc == original => {
                        return Err(
                            "says `canonical: no` but re-encoding gives the same bytes".into()
                        )
                    }
                    (false, Some(e)) => {
                        let want = decode_notation(e).map_err(|e| format!("encoded: {e}"))?;
                        let want = if lf { with_lf(want) } else { want };
                        if enc != want {
                            return Err(format!(
                                "re-encoding gives {} instead of `encoded:` {}",
                                q(&enc),
                                q(&want)
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[test]
fn all_vectors() {
    let dir = vectors_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the vector folder {} cannot be read: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vec"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .vec files in {}", dir.display());

    let mut failures = Vec::new();
    let mut names = HashSet::new();
    let mut count = 0;
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    for path in &files {
        let vectors = match read_vectors(path) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if vectors.is_empty() {
            failures.push(format!("{}: holds no vector", path.display()));
        }
        for v in vectors {
            count += 1;
            *per_kind
                .entry(v.get("kind").unwrap_or("?").to_string())
                .or_default() += 1;
            if !names.insert(v.name().to_string()) {
                failures.push(format!(
                    "{}:{} {}: name used twice",
                    v.file,
                    v.line_no,
                    v.name()
                ));
            }
            if let Err(e) = check(&v) {
                failures.push(format!("{}:{} {}: {e}", v.file, v.line_no, v.name()));
            }
        }
    }
    eprintln!("{count} vectors in {} files: {per_kind:?}", files.len());
    assert!(
        failures.is_empty(),
        "{} of {count} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        count >= MIN_VECTORS,
        "only {count} vectors in {}; at least {MIN_VECTORS} are required",
        dir.display()
    );
}

#[test]
fn notation_round_trips() {
    for bytes in [&b"plain"[..], b"\t\n\r\\\"\x00\x01\xff", &[b'x'; 40]] {
        let shown = q(bytes);
        let inner = &shown[1..shown.len() - 1];
        assert_eq!(decode_notation(inner).unwrap(), bytes, "{shown}");
    }
}
