//! The file a `file:` dict lives in, as Dovecot's dict-file reads and writes it: a key line,
//! then its value line, and so on. Both lines are tab-escaped (0x01, TAB, CR, LF as 0x01
//! plus a letter), so every value fits on one line.

use std::collections::BTreeMap;

use dict_protocol::escape::{escape_into, unescape};

/// Key → value, sorted by key.
pub type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Reads the file's contents the way Dovecot does: lines end at LF (a CR before it is
/// dropped), a last line without LF is ignored, a key without a value line is dropped,
/// and a key given twice keeps its last value.
pub fn parse(text: &[u8]) -> Entries {
    let mut entries = Entries::new();
    let mut lines = complete_lines(text);
    while let (Some(key), Some(value)) = (lines.next(), lines.next()) {
        entries.insert(unescape(key).into_owned(), unescape(value).into_owned());
    }
    entries
}

fn complete_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    // Only lines that end in LF: a trailing piece after the last LF is not a line.
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text[..end].split_inclusive(|&b| b == b'\n').map(|line| {
        let line = &line[..line.len() - 1];
        line.strip_suffix(b"\r").unwrap_or(line)
    })
}

/// The file's new contents: every entry as an escaped key line and value line.
pub fn serialize(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (key, value) in entries {
        escape_into(&mut out, key);
        out.push(b'\n');
        escape_into(&mut out, value);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &[u8]) -> Vec<(String, String)> {
        parse(text)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn key_and_value_lines_alternate() {
        assert_eq!(
            pairs(b"shared/a\n1\npriv/quota/storage\n200\n"),
            vec![
                ("priv/quota/storage".into(), "200".into()),
                ("shared/a".into(), "1".into())
            ]
        );
        // CRLF, a key without value, an unterminated last line, a repeated key
        assert_eq!(
            pairs(b"shared/a\r\nx\r\nshared/a\ny\nshared/b\n"),
            vec![("shared/a".into(), "y".into())]
        );
        assert_eq!(pairs(b"shared/a\n1"), vec![]);
        assert_eq!(
            pairs(b"\n\nshared/e\n\n"),
            vec![("".into(), "".into()), ("shared/e".into(), "".into())]
        );
        assert_eq!(pairs(b""), vec![]);
    }

    #[test]
    fn escapes_round_trip() {
        let mut entries = Entries::new();
        entries.insert(b"shared/t\tab".to_vec(), b"line1\nline2\r\x01\t".to_vec());
        entries.insert(b"shared/plain".to_vec(), Vec::new());
        let text = serialize(&entries);
        assert_eq!(
            text,
            b"shared/plain\n\nshared/t\x01tab\nline1\x01nline2\x01r\x011\x01t\n".to_vec()
        );
        assert_eq!(parse(&text), entries);
    }
}
