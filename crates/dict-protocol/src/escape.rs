//! Tab-escaping of fields (protocol-spec §2): 0x01, TAB, CR, LF and NUL travel as 0x01 plus
//! a letter.
//!
//! Values are bytes, never `String`: invalid UTF-8 must survive a round trip.

use std::borrow::Cow;

use bytes::BufMut;

use crate::search::find_byte;

/// The escape byte.
pub const ESCAPE: u8 = 0x01;

/// The letter that follows [`ESCAPE`] for a byte that needs escaping.
#[inline]
fn escape_letter(b: u8) -> Option<u8> {
    match b {
        0x01 => Some(b'1'),
        b'\t' => Some(b't'),
        b'\r' => Some(b'r'),
        b'\n' => Some(b'n'),
        0x00 => Some(b'0'),
        _ => None,
    }
}

/// True when `src` contains a byte that must be escaped.
#[inline]
pub fn needs_escape(src: &[u8]) -> bool {
    memchr::memchr3(ESCAPE, b'\t', b'\n', src).is_some() || memchr::memchr2(b'\r', 0, src).is_some()
}

/// Appends `src` to `dst`, escaped. Unescaped runs are copied in one piece.
pub fn escape_into<B: BufMut + ?Sized>(dst: &mut B, src: &[u8]) {
    let mut start = 0;
    for (i, &b) in src.iter().enumerate() {
        if let Some(letter) = escape_letter(b) {
            dst.put_slice(&src[start..i]);
            dst.put_slice(&[ESCAPE, letter]);
            start = i + 1;
        }
    }
    dst.put_slice(&src[start..]);
}

/// `src` escaped; borrowed when nothing needed escaping.
pub fn escape(src: &[u8]) -> Cow<'_, [u8]> {
    if !needs_escape(src) {
        return Cow::Borrowed(src);
    }
    let mut out = Vec::with_capacity(src.len() + 8);
    escape_into(&mut out, src);
    Cow::Owned(out)
}

/// Reverses [`escape`]: `0x01 X` maps `0 1 t r n` back to their bytes, any other X to
/// itself, and a lone trailing 0x01 is dropped (as Dovecot's unescaper does).
pub fn unescape(src: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = find_byte(ESCAPE, src) else {
        return Cow::Borrowed(src);
    };
    let mut out = Vec::with_capacity(src.len());
    out.extend_from_slice(&src[..first]);
    let mut rest = &src[first..];
    while let Some(pos) = find_byte(ESCAPE, rest) {
        out.extend_from_slice(&rest[..pos]);
        match rest.get(pos + 1) {
            None => {
                rest = &[];
                break;
            }
            Some(&letter) => {
                out.push(match letter {
                    b'0' => 0,
                    b'1' => ESCAPE,
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'n' => b'\n',
                    other => other,
                });
                rest = &rest[pos + 2..];
            }
        }
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// The raw (still escaped) TAB-separated fields of `line`. An empty line has zero fields.
pub fn split_raw(line: &[u8]) -> RawFields<'_> {
    RawFields {
        rest: if line.is_empty() { None } else { Some(line) },
    }
}

/// Iterator over the raw fields of a line; see [`split_raw`].
#[derive(Debug, Clone)]
pub struct RawFields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for RawFields<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find_byte(b'\t', rest) {
            Some(pos) => {
                self.rest = Some(&rest[pos + 1..]);
                Some(&rest[..pos])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The unescaped fields of `line` (Dovecot's `t_strsplit_tabescaped`).
pub fn split_unescaped(line: &[u8]) -> Vec<Cow<'_, [u8]>> {
    split_raw(line).map(unescape).collect()
}

/// Joins `fields` with TAB, escaping each one.
pub fn join_escaped<B: BufMut + ?Sized, T: AsRef<[u8]>>(dst: &mut B, fields: &[T]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            dst.put_u8(b'\t');
        }
        escape_into(dst, f.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_each_special_byte() {
        assert_eq!(
            &*escape(b"a\tb\nc\x01d\re\0f"),
            b"a\x01tb\x01nc\x011d\x01re\x010f"
        );
        assert!(matches!(escape(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn unescape_rules() {
        assert_eq!(
            &*unescape(b"a\x01tb\x01nc\x011d\x01re\x010f"),
            b"a\tb\nc\x01d\re\0f"
        );
        assert_eq!(&*unescape(b"a\x01xb"), b"axb");
        assert_eq!(&*unescape(b"ab\x01"), b"ab");
        assert_eq!(&*unescape(b"\x01"), b"");
    }

    #[test]
    fn empty_line_has_zero_fields() {
        assert_eq!(split_raw(b"").count(), 0);
        assert_eq!(split_raw(b"a\t").collect::<Vec<_>>(), vec![&b"a"[..], b""]);
        assert_eq!(split_raw(b"\t").collect::<Vec<_>>(), vec![&b""[..], b""]);
    }
}
