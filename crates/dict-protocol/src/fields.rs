//! The field grammar of a line (protocol-spec §2) as nom parsers over `&[u8]`: a field runs
//! to the next TAB, fields are joined by single TABs, and nothing is copied. The command,
//! hello and reply parsers are built from these.
//!
//! Errors are `()`: a shape either fits or not, and the caller knows which rule it was
//! checking (a field count, a reply shape) and reports that.

use nom::combinator::opt;
use nom::sequence::preceded;
use nom::{IResult, Parser};

use crate::search::find_byte;

/// What these parsers return: the input left over and the value, or `()`.
pub(crate) type Parsed<'a, O> = IResult<&'a [u8], O, ()>;

/// One raw (still escaped) field: everything up to the next TAB or the end. Never fails;
/// the TAB search reads a word at a time, and hands long inputs to memchr.
#[inline(always)]
pub(crate) fn field(input: &[u8]) -> Parsed<'_, &[u8]> {
    let end = find_byte(b'\t', input).unwrap_or(input.len());
    Ok((&input[end..], &input[..end]))
}

/// The first field of a list. An empty input has zero fields (not one empty field), so it
/// fails there.
#[inline(always)]
pub(crate) fn first_field(input: &[u8]) -> Parsed<'_, &[u8]> {
    if input.is_empty() {
        return Err(nom::Err::Error(()));
    }
    field(input)
}

/// The TAB that separates two fields.
#[inline(always)]
pub(crate) fn tab(input: &[u8]) -> Parsed<'_, ()> {
    match input.split_first() {
        Some((b'\t', rest)) => Ok((rest, ())),
        _ => Err(nom::Err::Error(())),
    }
}

/// A further field: a TAB, then the field.
#[inline(always)]
pub(crate) fn next_field(input: &[u8]) -> Parsed<'_, &[u8]> {
    preceded(tab, field).parse(input)
}

/// A further field if there is one.
#[inline(always)]
pub(crate) fn optional_field(input: &[u8]) -> Parsed<'_, Option<&[u8]>> {
    opt(next_field).parse(input)
}

/// The number of fields in `fields` (zero when empty), for error messages.
pub(crate) fn count(fields: &[u8]) -> usize {
    if fields.is_empty() {
        0
    } else {
        memchr::memchr_iter(b'\t', fields).count() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::combinator::all_consuming;

    #[test]
    fn fields_split_on_every_tab() {
        assert_eq!(field(b"a\tb"), Ok((&b"\tb"[..], &b"a"[..])));
        assert_eq!(field(b""), Ok((&b""[..], &b""[..])));
        assert!(first_field(b"").is_err());
        assert_eq!(first_field(b"\t"), Ok((&b"\t"[..], &b""[..])));
        let mut three = all_consuming((first_field, next_field, next_field));
        assert_eq!(
            three.parse(&b"\t\t"[..]),
            Ok((&b""[..], (&b""[..], &b""[..], &b""[..])))
        );
        assert_eq!(optional_field(b""), Ok((&b""[..], None)));
        assert_eq!(optional_field(b"\tx"), Ok((&b""[..], Some(&b"x"[..]))));
        assert_eq!(count(b""), 0);
        assert_eq!(count(b"\t"), 2);
        assert_eq!(count(b"a"), 1);
    }
}
