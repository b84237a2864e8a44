//! `tokio-util` codecs: LF-terminated lines in, encoded lines out. Parsing a line into a
//! [`Request`] or [`Reply`](crate::Reply) is left to the caller, which can then borrow from it.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::search::find_byte;
use crate::{Hello, ReplyStyle, Request, ServerLine, MAX_LINE_LENGTH};

/// Errors of the codecs.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line longer than the limit, LF included.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit, LF included.
        limit: usize,
    },
}

/// Splits input into lines (without LF; a CR before the LF is dropped too).
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_length: usize,
    /// Where to resume looking for LF, so a slowly arriving line is scanned once.
    scanned: usize,
}

impl LineDecoder {
    /// A decoder refusing lines longer than `max_length` bytes, LF included.
    pub fn new(max_length: usize) -> Self {
        LineDecoder {
            max_length,
            scanned: 0,
        }
    }

    /// True when `buf` holds at least one complete line.
    pub fn has_line(&self, buf: &BytesMut) -> bool {
        memchr::memchr(b'\n', &buf[self.scanned.min(buf.len())..]).is_some()
    }
}

/// The first LF. Most lines are short: look at their first bytes without memchr's call and
/// setup, and let memchr search the rest of the buffer.
#[inline]
fn find_lf(buf: &[u8]) -> Option<usize> {
    const HEAD: usize = 56;
    let (head, tail) = buf.split_at(buf.len().min(HEAD));
    find_byte(b'\n', head).or_else(|| memchr::memchr(b'\n', tail).map(|p| p + HEAD))
}

impl Decoder for LineDecoder {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let start = self.scanned.min(buf.len());
        match find_lf(&buf[start..]) {
            Some(pos) => {
                let end = start + pos;
                if end + 1 > self.max_length {
                    return Err(CodecError::LineTooLong {
                        limit: self.max_length,
                    });
                }
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                Ok(Some(line))
            }
            None if buf.len() >= self.max_length => Err(CodecError::LineTooLong {
                limit: self.max_length,
            }),
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        // A last line without LF is never executed (Dovecot drops it too).
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                buf.clear();
                self.scanned = 0;
                Ok(None)
            }
        }
    }
}

/// The server side: command lines in (64 KiB limit), [`ServerLine`]s out in the
/// connection's [`ReplyStyle`].
#[derive(Debug, Clone)]
pub struct ServerCodec {
    lines: LineDecoder,
    style: ReplyStyle,
}

impl ServerCodec {
    /// A codec with Dovecot's input limit; the style is set once the hello is read.
    pub fn new() -> Self {
        ServerCodec {
            lines: LineDecoder::new(MAX_LINE_LENGTH),
            style: ReplyStyle::ASYNC_MULTI,
        }
    }
    /// Sets the reply style (from the hello).
    pub fn set_style(&mut self, style: ReplyStyle) {
        self.style = style;
    }
    /// The reply style in use.
    pub fn style(&self) -> ReplyStyle {
        self.style
    }
    /// True when a complete line is already buffered (no need to flush replies yet).
    pub fn has_line(&self, buf: &BytesMut) -> bool {
        self.lines.has_line(buf)
    }
}

impl Default for ServerCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder<&ServerLine<'_>> for ServerCodec {
    type Error = CodecError;
    fn encode(&mut self, line: &ServerLine<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        line.encode(self.style, dst);
        Ok(())
    }
}

/// The client side: server lines in (no limit in Dovecot's client; ours defaults to 16 MiB),
/// hello and commands out.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    lines: LineDecoder,
}

impl ClientCodec {
    /// Default limit for one server line.
    pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

    /// A codec accepting server lines up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        ClientCodec {
            lines: LineDecoder::new(max_line),
        }
    }
}

impl Default for ClientCodec {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE)
    }
}

impl Encoder<&Request<'_>> for ClientCodec {
    type Error = CodecError;
    fn encode(&mut self, req: &Request<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        req.encode(dst);
        Ok(())
    }
}

impl Encoder<&Hello<'_>> for ClientCodec {
    type Error = CodecError;
    fn encode(&mut self, hello: &Hello<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        hello.encode(dst);
        Ok(())
    }
}

/// Both codecs read lines with their [`LineDecoder`].
macro_rules! decode_lines {
    ($codec:ty) => {
        impl Decoder for $codec {
            type Item = BytesMut;
            type Error = CodecError;
            fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
                self.lines.decode(buf)
            }
            fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
                self.lines.decode_eof(buf)
            }
        }
    };
}

decode_lines!(ServerCodec);
decode_lines!(ClientCodec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_includes_lf() {
        let mut d = LineDecoder::new(MAX_LINE_LENGTH);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; MAX_LINE_LENGTH - 1]);
        buf.extend_from_slice(b"\n");
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap().len(),
            MAX_LINE_LENGTH - 1
        );
        buf.extend_from_slice(&vec![b'x'; MAX_LINE_LENGTH]);
        buf.extend_from_slice(b"\n");
        assert!(matches!(
            d.decode(&mut buf),
            Err(CodecError::LineTooLong { .. })
        ));
    }

    #[test]
    fn crlf_and_partial_lines() {
        let mut d = LineDecoder::new(100);
        let mut buf = BytesMut::from(&b"Lkey\r\nLpart"[..]);
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], b"Lkey");
        assert!(d.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"ial\n");
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], b"Lpartial");
        buf.extend_from_slice(b"Ltrailing");
        assert!(d.decode_eof(&mut buf).unwrap().is_none());
    }
}
