//! Decimal number fields, parsed with nom as Dovecot's `str_to_*` functions accept them:
//! digits only (no spaces, no `+`), a leading `-` only for signed fields, no overflow.

use bytes::BufMut;
use nom::bytes::complete::tag;
use nom::combinator::{all_consuming, map_opt, opt};
use nom::{IResult, Parser};

/// ASCII digits as a u64; fails on overflow. One pass: each digit is checked and added.
pub(crate) fn decimal_u64(input: &[u8]) -> IResult<&[u8], u64, ()> {
    let mut n: u64 = 0;
    let mut len = 0;
    for &b in input {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        n = if len < 19 {
            // Up to 19 digits always fit: no need to check every step.
            n * 10 + u64::from(digit)
        } else {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit)))
                .ok_or(nom::Err::Error(()))?
        };
        len += 1;
    }
    if len == 0 {
        return Err(nom::Err::Error(()));
    }
    Ok((&input[len..], n))
}

pub(crate) fn decimal_u32(input: &[u8]) -> IResult<&[u8], u32, ()> {
    map_opt(decimal_u64, |n| u32::try_from(n).ok()).parse(input)
}

/// An optional `-`, then digits; the magnitude is read as u64 and must fit the sign.
fn signed_i64(input: &[u8]) -> IResult<&[u8], i64, ()> {
    let (rest, (minus, magnitude)) = (opt(tag(&b"-"[..])), decimal_u64).parse(input)?;
    let value = match minus {
        Some(_) => 0i64.checked_sub_unsigned(magnitude),
        None => i64::try_from(magnitude).ok(),
    };
    value.map(|v| (rest, v)).ok_or(nom::Err::Error(()))
}

/// An unsigned 32-bit field (transaction ids, flags, minor versions).
#[inline]
pub fn parse_u32(field: &[u8]) -> Option<u32> {
    all_consuming(decimal_u32).parse(field).ok().map(|(_, v)| v)
}

/// An unsigned 64-bit field (`max_rows`).
#[inline]
pub fn parse_u64(field: &[u8]) -> Option<u64> {
    all_consuming(decimal_u64).parse(field).ok().map(|(_, v)| v)
}

/// A signed 64-bit field (inc diff, timestamp seconds).
#[inline]
pub fn parse_i64(field: &[u8]) -> Option<i64> {
    all_consuming(signed_i64).parse(field).ok().map(|(_, v)| v)
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
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"+4"), None);
        assert_eq!(parse_i64(b"--4"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(
            parse_u64(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_u64(b"00000000000000000000000001"), Some(1));
        assert_eq!(parse_u64(b"99999999999999999999"), None);
        assert_eq!(parse_u32(b"1\xff"), None);
    }
}
