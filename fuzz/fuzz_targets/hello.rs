//! Any bytes as the first line: `Hello::parse` must not panic, and an accepted hello must
//! encode to a line that parses back to the same hello and reply style.
#![no_main]

use dict_protocol::Hello;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(hello) = Hello::parse(line) else { return };
    let mut encoded = Vec::new();
    hello.encode(&mut encoded);
    assert_eq!(encoded.pop(), Some(b'\n'));
    let again = Hello::parse(&encoded).expect("an encoded hello parses");
    assert_eq!(again.reply_style(), hello.reply_style());
    assert_eq!(again, hello);
});
