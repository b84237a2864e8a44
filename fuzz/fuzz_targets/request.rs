//! Any bytes as a command line: `Request::parse` must not panic, and what it accepts must
//! encode to a line that parses back to the same command.
#![no_main]

use dict_protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(req) = Request::parse(line) else { return };
    // `L` with an empty key and no username (from e.g. "L\x01") has no encoding: the line
    // `L` alone has zero fields.
    if matches!(&req, Request::Lookup { key, username: None } if key.is_empty()) {
        return;
    }
    let mut encoded = Vec::new();
    req.encode(&mut encoded);
    assert_eq!(encoded.pop(), Some(b'\n'));
    assert!(!encoded.contains(&b'\n'), "LF inside an encoded line");
    let again = Request::parse(&encoded).expect("an encoded request parses");
    assert_eq!(again, req);
});
