//! Decimal number fields, parsed with nom as Dovecot's `str_to_*` functions accept them:
//! digits only (no spaces, no `+`), a leading `-` only for signed fields, no overflow.

use bytes::BufMut;
use nom::bytes::complete::tag;
use nom::character::complete::digit1;
use nom::combinator::{all_consuming, map_res, opt, recognize};
use nom::{IResult, Parser};

fn digits_to<T: std::str::FromStr>(input: &[u8]) -> IResult<&[u8], T> {
    map_res(digit1, |d: &[u8]| {
        // digit1 guarantees ASCII digits, so the str conversion cannot fail.
        std::str::from_utf8(d).map_err(|_| ()).and_then(|s| s.parse::<T>().map_err(|_| ()))
    })
    .parse(input)
}

fn signed_to<T: std::str::FromStr>(input: &[u8]) -> IResult<&[u8], T> {
    map_res(recognize((opt(tag(&b"-"[..])), digit1)), |d: &[u8]| {
        std::str::from_utf8(d).map_err(|_| ()).and_then(|s| s.parse::<T>().map_err(|_| ()))
    })
    .parse(input)
}

/// An unsigned 32-bit field (transaction ids, flags, minor versions).
pub fn parse_u32(field: &[u8]) -> Option<u32> {
    all_consuming(digits_to::<u32>).parse(field).ok().map(|(_, v)| v)
}

/// An unsigned 64-bit field (`max_rows`).
pub fn parse_u64(field: &[u8]) -> Option<u64> {
    all_consuming(digits_to::<u64>).parse(field).ok().map(|(_, v)| v)
}

/// A signed 64-bit field (inc diff, timestamp seconds).
pub fn parse_i64(field: &[u8]) -> Option<i64> {
    all_consuming(signed_to::<i64>).parse(field).ok().map(|(_, v)| v)
}

/// Appends the decimal form of `n`.
pub fn push_u64(dst: &mut impl BufMut, n: u64) {
    let mut buf = itoa::Buffer::new();
    dst.put_slice(buf.format(n).as_bytes());
}

/// Appends the decimal form of `n`, with a `-` when negative.
pub fn push_i64(dst: &mut impl BufMut, n: i64) {
    let mut buf = itoa::Buffer::new();
    dst.put_slice(buf.format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_rules() {
        assert_eq!(parse_u32(b"42"), Some(42));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b"+1"), None);
        assert_eq!(parse_u32(b" 1"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_i64(b"-4"), Some(-4));
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    }
}
