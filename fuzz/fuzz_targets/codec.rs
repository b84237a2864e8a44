//! Any byte stream, cut into arbitrary chunks, through the server's line decoder: no panic,
//! the same lines (and the same error) as decoding the stream at once, no LF in a line and
//! no line over the limit. Every line is then parsed as a command, as the server does.
#![no_main]

use bytes::BytesMut;
use dict_protocol::codec::{LineDecoder, ServerCodec};
use dict_protocol::{Request, MAX_LINE_LENGTH};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Lines, then whether decoding ended in an error.
fn decode(dec: &mut dyn Decoder<Item = BytesMut, Error = dict_protocol::codec::CodecError>, stream: &[u8], cuts: &[u8]) -> (Vec<BytesMut>, bool) {
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut rest = stream;
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1);
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => break,
                Err(_) => return (lines, true),
            }
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => return (lines, false),
            Err(_) => return (lines, true),
        }
    }
}

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (limit, cuts, stream) = input;
    // A small limit, so that inputs of fuzzer size reach it, and the server's own.
    let limit = usize::from(limit) + 1;
    for (max, whole, chunked) in [
        (limit, decode(&mut LineDecoder::new(limit), &stream, &[]), decode(&mut LineDecoder::new(limit), &stream, &cuts)),
        (MAX_LINE_LENGTH, decode(&mut ServerCodec::new(), &stream, &[]), decode(&mut ServerCodec::new(), &stream, &cuts)),
    ] {
        assert_eq!(whole, chunked);
        for line in &whole.0 {
            assert!(!line.contains(&b'\n'));
            assert!(line.len() < max);
            let _ = Request::parse(line);
        }
    }
});
