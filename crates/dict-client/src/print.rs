//! Output formatters that print exactly what `doveadm -f <formatter>` prints
//! (checked byte for byte against doveadm 2.3.19.1 by `tests/doveadm_compat.rs`).
//!
//! Like doveadm's, a formatter gets column headers, then values one at a time, filling rows
//! left to right, then a final [`Printer::flush`]. The quirks are doveadm's:
//! * `tab` writes the header line as headers are added, and its flush ends the header line
//!   even when no value was printed (so `set -f tab` prints `\n`);
//! * `json` prints `[]` when nothing was printed, and no final newline;
//! * `flow` prints `title=value` pairs (bare values for hidden titles), space-separated;
//! * `table` buffers up to 100 rows to size the columns, then pads every value; values are
//!   printed whole even when wider than their column.

use std::io::{self, Write};

/// The formatters of `doveadm -f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `title=value title=value`, one row per line.
    Flow,
    /// A header line of titles, then TAB-separated rows; values printed raw.
    Tab,
    /// `[{"title":"value",…},…]` without a final newline.
    Json,
    /// Space-padded columns sized to the terminal (80 columns when not a terminal).
    Table,
}

impl Format {
    /// The formatter named as in `doveadm -f <name>`.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "flow" => Some(Format::Flow),
            "tab" => Some(Format::Tab),
            "json" => Some(Format::Json),
            "table" => Some(Format::Table),
            _ => None,
        }
    }
}

/// Width of doveadm's table when stdout is not a terminal.
pub const DEFAULT_COLUMNS: usize = 80;
/// Narrowest table doveadm draws on a terminal.
pub const MIN_COLUMNS: usize = 30;
/// Rows the table formatter buffers to size its columns.
const MAX_BUFFER_LINES: usize = 100;

#[derive(Debug, Clone)]
struct Header {
    key: String,
    title: String,
    hidden: bool,
    min_length: usize,
    max_length: usize,
    length: usize,
}

/// One formatter writing to `out`.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    headers: Vec<Header>,
    /// Column of the next value.
    idx: usize,
    /// tab: the header line has been ended.
    header_written: bool,
    /// json: no row started yet.
    first_row: bool,
    flushed: bool,
    /// table: terminal width, buffered values, whether column widths are fixed.
    columns: usize,
    buffered: Vec<Vec<u8>>,
    lengths_set: bool,
}

impl<W: Write> Printer<W> {
    /// A formatter; `columns` is only used by [`Format::Table`].
    pub fn new(out: W, format: Format, columns: usize) -> Self {
        Printer {
            out,
            format,
            headers: Vec::new(),
            idx: 0,
            header_written: false,
            first_row: true,
            flushed: false,
            columns,
            buffered: Vec::new(),
            lengths_set: false,
        }
    }

    /// The formatter in use.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Adds a column. `key` names it in JSON, `title` in the other formats; a hidden title
    /// is left out of flow and table output (tab prints titles regardless).
    pub fn header(&mut self, key: &str, title: &str, hidden: bool) -> io::Result<()> {
        let len = title.len();
        self.headers.push(Header {
            key: key.to_string(),
            title: title.to_string(),
            hidden,
            min_length: len,
            max_length: len,
            length: len,
        });
        if self.format == Format::Tab {
            if self.headers.len() > 1 {
                self.out.write_all(b"\t")?;
            }
            self.out.write_all(title.as_bytes())?;
        }
        Ok(())
    }

    /// A column whose key and title are the same, shown.
    pub fn header_simple(&mut self, name: &str) -> io::Result<()> {
        self.header(name, name, false)
    }

    /// Prints the next value.
    pub fn print(&mut self, value: &[u8]) -> io::Result<()> {
        match self.format {
            Format::Flow => {
                let h = &self.headers[self.idx];
                if !h.hidden {
                    self.out.write_all(h.title.as_bytes())?;
                    self.out.write_all(b"=")?;
                }
                self.out.write_all(value)?;
                self.idx += 1;
                if self.idx < self.headers.len() {
                    self.out.write_all(b" ")
                } else {
                    self.idx = 0;
                    self.out.write_all(b"\n")
                }
            }
            Format::Tab => {
                self.end_tab_header()?;
                if self.idx > 0 {
                    self.out.write_all(b"\t")?;
                }
                self.out.write_all(value)?;
                self.idx += 1;
                if self.idx == self.headers.len() {
                    self.idx = 0;
                    self.out.write_all(b"\n")?;
                }
                Ok(())
            }
            Format::Json => {
                let mut s = Vec::with_capacity(value.len() + 16);
                if self.idx == 0 {
                    s.push(if self.first_row { b'[' } else { b',' });
                    self.first_row = false;
                    s.push(b'{');
                } else {
                    s.push(b',');
                }
                s.push(b'"');
                json_escape_into(&mut s, self.headers[self.idx].key.as_bytes());
                s.extend_from_slice(b"\":\"");
                json_escape_into(&mut s, value);
                s.push(b'"');
                self.idx += 1;
                if self.idx == self.headers.len() {
                    self.idx = 0;
                    s.push(b'}');
                }
                self.out.write_all(&s)
            }
            Format::Table => {
                if !self.lengths_set {
                    if self.buffered.len() / self.headers.len() < MAX_BUFFER_LINES {
                        self.buffered.push(value.to_vec());
                        return Ok(());
                    }
                    self.table_flush_buffer()?;
                }
                self.table_print_next(value)
            }
        }
    }

    /// Ends the output; call once, after the last value.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.format {
            Format::Flow => {
                if self.idx != 0 {
                    self.idx = 0;
                    self.out.write_all(b"\n")?;
                }
            }
            Format::Tab => self.end_tab_header()?,
            Format::Json => {
                if !self.flushed {
                    self.flushed = true;
                    self.out
                        .write_all(if self.first_row { b"[]" } else { b"]" })?;
                }
            }
            Format::Table => {
                if !self.lengths_set && !self.headers.is_empty() {
                    self.table_flush_buffer()?;
                }
            }
        }
        self.out.flush()
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn end_tab_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Sizes the columns from the buffered rows, as doveadm does: each column as wide as its
    /// widest value; if the row is too wide, columns are shrunk from the right; if narrower
    /// than the screen, the last column gets half the spare width.
    fn table_calc_lengths(&mut self) {
        self.lengths_set = true;
        let n = self.headers.len();
        for row in self.buffered.chunks(n) {
            for (h, value) in self.headers.iter_mut().zip(row) {
                let len = char_len(value);
                h.min_length = h.min_length.min(len);
                if h.max_length < len {
                    h.max_length = len;
                    h.length = len;
                }
            }
        }
        // Plus one space between columns.
        let mut total: usize = self.headers.iter().map(|h| h.max_length + 1).sum::<usize>() - 1;
        let columns = self.columns;
        while total > columns {
            let before = total;
            for h in self.headers.iter_mut().rev() {
                let diff = h.length - h.min_length;
                if total.saturating_sub(diff) <= columns {
                    let cut = total - columns;
                    h.length -= cut;
                    total -= cut;
                    break;
                }
                // Only the column that finishes the job counts towards the total; these
                // cuts narrow columns without being counted (doveadm's arithmetic).
                if diff > 0 {
                    h.length -= if diff == 1 { 1 } else { diff / 2 };
                }
            }
            if total == before {
                break;
            }
        }
        if total < columns {
            let last = self.headers.len() - 1;
            self.headers[last].length += (columns - total) / 2;
        }
    }

    fn table_flush_buffer(&mut self) -> io::Result<()> {
        self.table_calc_lengths();
        if self.headers.iter().any(|h| !h.hidden) {
            let mut line = Vec::new();
            for (i, h) in self.headers.iter().enumerate() {
                if i > 0 {
                    line.push(b' ');
                }
                pad_into(&mut line, h.title.as_bytes(), h.length);
            }
            line.push(b'\n');
            self.out.write_all(&line)?;
        }
        for value in std::mem::take(&mut self.buffered) {
            self.table_print_next(&value)?;
        }
        Ok(())
    }

    fn table_print_next(&mut self, value: &[u8]) -> io::Result<()> {
        let h = &self.headers[self.idx];
        // Widths count characters: printf's byte width is corrected by the UTF-8
        // continuation bytes.
        let mut line = Vec::with_capacity(h.length + value.len() + 1);
        pad_into(&mut line, value, h.length + (value.len() - char_len(value)));
        self.idx += 1;
        if self.idx == self.headers.len() {
            self.idx = 0;
            line.push(b'\n');
        } else {
            line.push(b' ');
        }
        self.out.write_all(&line)
    }
}

/// `%-*s`: the bytes, then spaces up to `width` bytes.
fn pad_into(out: &mut Vec<u8>, value: &[u8], width: usize) {
    out.extend_from_slice(value);
    out.extend(std::iter::repeat_n(b' ', width.saturating_sub(value.len())));
}

/// Characters of a UTF-8 string: the bytes that are not continuation bytes.
fn char_len(value: &[u8]) -> usize {
    value.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

/// JSON string escaping as doveadm's: `\b \f \n \r \t \" \\`, other control bytes as
/// `\u00XX`, U+2028/U+2029 as `\u2028`/`\u2029`, other UTF-8 as is, and each byte of
/// invalid UTF-8 as U+FFFD.
pub fn json_escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, headers: &[(&str, &str, bool)], values: &[&[u8]]) -> Vec<u8> {
        let mut p = Printer::new(Vec::new(), format, DEFAULT_COLUMNS);
        for (k, t, h) in headers {
            p.header(k, t, *h).unwrap();
        }
        for v in values {
            p.print(v).unwrap();
        }
        p.flush().unwrap();
        p.into_inner()
    }

    #[test]
    fn get_outputs() {
        let h = [("value", "", true)];
        assert_eq!(run(Format::Flow, &h, &[b"123"]), b"123\n");
        assert_eq!(run(Format::Tab, &h, &[b"123"]), b"\n123\n");
        assert_eq!(run(Format::Json, &h, &[b"123"]), br#"[{"value":"123"}]"#);
        let mut table = b"123".to_vec();
        table.extend(std::iter::repeat_n(b' ', 38));
        table.push(b'\n');
        assert_eq!(run(Format::Table, &h, &[b"123"]), table);
        assert_eq!(run(Format::Table, &h, &[]), b"");
        assert_eq!(run(Format::Json, &h, &[]), b"[]");
        assert_eq!(run(Format::Tab, &[], &[]), b"\n");
    }

    #[test]
    fn iter_outputs() {
        let h = [("key", "key", false), ("value", "value", false)];
        let rows: [&[u8]; 4] = [b"shared/a", b"1", b"shared/b", b"x\ty"];
        assert_eq!(
            run(Format::Tab, &h, &rows),
            b"key\tvalue\nshared/a\t1\nshared/b\tx\ty\n"
        );
        assert_eq!(
            run(Format::Flow, &h, &rows),
            b"key=shared/a value=1\nkey=shared/b value=x\ty\n"
        );
        assert_eq!(
            run(Format::Json, &h, &rows),
            br#"[{"key":"shared/a","value":"1"},{"key":"shared/b","value":"x\ty"}]"#
        );
    }

    #[test]
    fn json_escapes_like_doveadm() {
        let mut out = Vec::new();
        json_escape_into(&mut out, b"q\"\\/\xc3\xa9\x01\x7f\xff\xe2\x80\xa8");
        assert_eq!(out, "q\\\"\\\\/é\\u0001\x7f\u{fffd}\\u2028".as_bytes());
    }

    #[test]
    fn table_shrinks_wide_rows() {
        let h = [("key", "key", false), ("value", "value", false)];
        let long = vec![b'v'; 100];
        let out = run(Format::Table, &h, &[b"shared/k", &long]);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        // key column: 8 wide; value column cut so the row is 80 wide; values stay whole.
        assert_eq!(
            lines.next().unwrap(),
            format!("{:<8} {:<71}", "key", "value")
        );
        assert_eq!(
            lines.next().unwrap(),
            format!("shared/k {}", "v".repeat(100))
        );
    }
}
