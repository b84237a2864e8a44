//! The handshake line and the reply style it selects (protocol-spec §3).

use std::borrow::Cow;

use bytes::BufMut;

use nom::bytes::complete::tag;
use nom::Parser;

use crate::escape::{escape_into, unescape};
use crate::fields::{first_field, next_field};
use crate::number::{parse_u32, push_u64};
use crate::ProtocolError;

/// Protocol major of Dovecot 2.3.17 – 2.3.21.
pub const MAJOR_V3: u32 = 3;
/// Protocol major of Dovecot 2.4.
pub const MAJOR_V4: u32 = 4;

/// `H<major>\t<minor>\t<value_type>\t<username>\t<dict name>`. The server never answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// 3 (Dovecot 2.3) or 4 (Dovecot 2.4).
    pub major: u32,
    /// Selects the reply style; 2.3 clients send 2, 2.4 clients 0.
    pub minor: u32,
    /// 0 string, 1 uint32; unused since 2.3, but a 2.3 server refuses 2 and above.
    pub value_type: u32,
    /// Ignored by servers since 2.3.17: the user travels with each command.
    pub username: Cow<'a, [u8]>,
    /// The dict name, looked up among the configured dicts.
    pub dict_name: Cow<'a, [u8]>,
}

impl<'a> Hello<'a> {
    /// The hello a Dovecot 2.3.19 client sends for `dict_name`.
    pub fn v3(dict_name: &'a [u8]) -> Self {
        Hello {
            major: MAJOR_V3,
            minor: 2,
            value_type: 0,
            username: Cow::Borrowed(b""),
            dict_name: Cow::Borrowed(dict_name),
        }
    }

    /// The hello a Dovecot 2.4 client sends for `dict_name`.
    pub fn v4(dict_name: &'a [u8]) -> Self {
        Hello {
            major: MAJOR_V4,
            minor: 0,
            ..Hello::v3(dict_name)
        }
    }

    /// Parses and checks a hello line (without its LF) as the 2.3 and 2.4 servers do:
    /// at least five fields, major 3 or 4, numeric minor, and for major 3 a value type
    /// below 2. Fields after the fifth are ignored.
    pub fn parse(line: &'a [u8]) -> Result<Self, ProtocolError> {
        let (fields, _) = tag(&b"H"[..])
            .parse(line)
            .map_err(|_: nom::Err<()>| ProtocolError::NotHello)?;
        // The major is glued to the `H`; fields after the fifth are ignored.
        let (_, (major, minor, value_type, username, dict_name)) =
            (first_field, next_field, next_field, next_field, next_field)
                .parse(fields)
                .map_err(|_| ProtocolError::FieldCount {
                    command: "HELLO",
                    expected: "at least 5",
                    got: crate::fields::count(fields),
                })?;
        let bad = |field| ProtocolError::BadNumber {
            command: "HELLO",
            field,
        };
        let major = parse_u32(&unescape(major)).ok_or(bad("major version"))?;
        if major != MAJOR_V3 && major != MAJOR_V4 {
            return Err(ProtocolError::UnsupportedVersion(major));
        }
        let minor = parse_u32(&unescape(minor)).ok_or(bad("minor version"))?;
        let value_type_field = unescape(value_type);
        let value_type = match parse_u32(&value_type_field) {
            Some(v) => v,
            // 2.4 does not look at the value type at all.
            None if major == MAJOR_V4 => 0,
            None => return Err(bad("value type")),
        };
        if major == MAJOR_V3 && value_type >= 2 {
            return Err(ProtocolError::InvalidValueType(value_type));
        }
        Ok(Hello {
            major,
            minor,
            value_type,
            username: unescape(username),
            dict_name: unescape(dict_name),
        })
    }

    /// Appends the hello line, with its LF.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(b'H');
        push_u64(dst, self.major.into());
        dst.put_u8(b'\t');
        push_u64(dst, self.minor.into());
        dst.put_u8(b'\t');
        push_u64(dst, self.value_type.into());
        dst.put_u8(b'\t');
        escape_into(dst, &self.username);
        dst.put_u8(b'\t');
        escape_into(dst, &self.dict_name);
        dst.put_u8(b'\n');
    }

    /// The reply style the server must use on this connection.
    pub fn reply_style(&self) -> ReplyStyle {
        ReplyStyle::for_version(self.major, self.minor)
    }

    /// Detaches the hello from the line it was parsed from.
    pub fn into_owned(self) -> Hello<'static> {
        Hello {
            username: Cow::Owned(self.username.into_owned()),
            dict_name: Cow::Owned(self.dict_name.into_owned()),
            ..self
        }
    }
}

/// How replies are framed on one connection: a property of the connection, from the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyStyle {
    /// `*<n>` at once, then `+<n>\t<reply>`; replies may come out of order.
    pub async_ids: bool,
    /// Four timing fields after each final reply.
    pub timings: bool,
    /// `M` replies for lookups with two or more values (else only the first value, as `O`).
    pub multi_value: bool,
}

impl ReplyStyle {
    /// Minor 0: replies strictly in command order, bare lines.
    pub const ORDERED: ReplyStyle = ReplyStyle {
        async_ids: false,
        timings: false,
        multi_value: false,
    };
    /// Minor 1: async ids and timings, single-value lookups.
    pub const ASYNC: ReplyStyle = ReplyStyle {
        async_ids: true,
        timings: true,
        multi_value: false,
    };
    /// Minor 2 and above, and every 2.4 connection.
    pub const ASYNC_MULTI: ReplyStyle = ReplyStyle {
        async_ids: true,
        timings: true,
        multi_value: true,
    };

    /// The style a Dovecot server uses for a hello with this major and minor.
    pub fn for_version(major: u32, minor: u32) -> Self {
        match (major, minor) {
            (MAJOR_V4, _) => Self::ASYNC_MULTI,
            (_, 0) => Self::ORDERED,
            (_, 1) => Self::ASYNC,
            _ => Self::ASYNC_MULTI,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_doveadm_hello() {
        let h = Hello::parse(b"H3\t2\t0\t\tsq").unwrap();
        assert_eq!(h, Hello::v3(b"sq"));
        assert_eq!(h.reply_style(), ReplyStyle::ASYNC_MULTI);
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, b"H3\t2\t0\t\tsq\n");
    }

    #[test]
    fn rejects_bad_hellos() {
        assert_eq!(
            Hello::parse(b"H2\t2\t0\t\tx"),
            Err(ProtocolError::UnsupportedVersion(2))
        );
        assert_eq!(
            Hello::parse(b"H3\t2\t2\t\tx"),
            Err(ProtocolError::InvalidValueType(2))
        );
        assert!(matches!(
            Hello::parse(b"H3\t2\t0\tx"),
            Err(ProtocolError::FieldCount { got: 4, .. })
        ));
        assert_eq!(Hello::parse(b"Lkey"), Err(ProtocolError::NotHello));
        assert!(Hello::parse(b"H4\t0\tx\t\tq").is_ok());
    }
}
