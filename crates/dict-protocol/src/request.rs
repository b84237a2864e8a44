//! Client → server commands (protocol-spec §4). One letter, then TAB-separated escaped
//! fields, whose shape each command gives as a nom parser.

use std::borrow::Cow;

use bytes::BufMut;

use bitflags::bitflags;

use nom::combinator::{all_consuming as exactly, opt};
use nom::Parser;

use crate::escape::{escape_into, unescape, ESCAPE};
use crate::fields::{self, first_field, next_field, optional_field};
use crate::number::{parse_i64, parse_u32, parse_u64, push_i64, push_u64};
use crate::search::find_byte;
use crate::ProtocolError;

/// A client's transaction id: chosen by the client, scoped to the connection.
pub type TransactionId = u32;

bitflags! {
    /// Iterate flags (`enum dict_iterate_flags`). Unknown bits are kept, not rejected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IterateFlags: u32 {
        /// Include all deeper levels under the path.
        const RECURSE = 0x01;
        /// Sort rows by key.
        const SORT_BY_KEY = 0x02;
        /// Sort rows by value.
        const SORT_BY_VALUE = 0x04;
        /// Keys only; rows still carry one empty value field.
        const NO_VALUE = 0x08;
        /// Only rows whose key equals the path.
        const EXACT_KEY = 0x10;
        /// Client-side async iteration; changes nothing on the server.
        const ASYNC = 0x20;
    }
}

/// One parsed command. Byte fields borrow from the line unless they had to be unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `L<key>[\t<username>]`
    Lookup {
        key: Cow<'a, [u8]>,
        username: Option<Cow<'a, [u8]>>,
    },
    /// `I<flags>\t<max_rows>\t<path>[\t<username>]`
    Iterate {
        flags: IterateFlags,
        max_rows: u64,
        path: Cow<'a, [u8]>,
        username: Option<Cow<'a, [u8]>>,
    },
    /// `B<id>[\t<username>[\t<expire_secs>]]` (expire_secs: 2.4)
    Begin {
        id: TransactionId,
        username: Option<Cow<'a, [u8]>>,
        expire_secs: Option<u32>,
    },
    /// `C<id>`
    Commit { id: TransactionId },
    /// `D<id>` (2.3 servers only): commit answered with an `A` prefix.
    CommitAsync { id: TransactionId },
    /// `R<id>`
    Rollback { id: TransactionId },
    /// `S<id>\t<key>\t<value>`
    Set {
        id: TransactionId,
        key: Cow<'a, [u8]>,
        value: Cow<'a, [u8]>,
    },
    /// `U<id>\t<key>`
    Unset {
        id: TransactionId,
        key: Cow<'a, [u8]>,
    },
    /// `A<id>\t<key>\t<diff>`
    AtomicInc {
        id: TransactionId,
        key: Cow<'a, [u8]>,
        diff: i64,
    },
    /// `T<id>\t<secs>\t<nsecs>`
    Timestamp {
        id: TransactionId,
        secs: i64,
        nsecs: u32,
    },
    /// `V<id>\t<bool>` (2.3.21+ and 2.4): keep values out of logs.
    HideLogValues { id: TransactionId, hide: bool },
}

/// The fields after the command letter: their shape is checked first, with a nom parser,
/// then each raw field is unescaped and read.
struct Args<'a> {
    command: &'static str,
    raw: &'a [u8],
    /// No escape byte anywhere in the line, so every field is borrowed as it is.
    plain: bool,
}

impl<'a> Args<'a> {
    #[inline]
    fn new(command: &'static str, raw: &'a [u8]) -> Self {
        Args {
            command,
            raw,
            plain: find_byte(ESCAPE, raw).is_none(),
        }
    }
    /// The raw fields, if they have the `shape` the command's nom parser describes. Dovecot
    /// checks the count before it reads any field, so a wrong shape is a wrong field count.
    #[inline]
    fn shape<O>(
        &self,
        expected: &'static str,
        mut shape: impl Parser<&'a [u8], Output = O, Error = ()>,
    ) -> Result<O, ProtocolError> {
        match shape.parse(self.raw) {
            Ok((_, out)) => Ok(out),
            Err(_) => Err(ProtocolError::FieldCount {
                command: self.command,
                expected,
                got: fields::count(self.raw),
            }),
        }
    }
    #[inline]
    fn unescape(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        if self.plain {
            Cow::Borrowed(raw)
        } else {
            unescape(raw)
        }
    }
    #[inline]
    fn number<T>(
        &self,
        raw: &'a [u8],
        field: &'static str,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<T, ProtocolError> {
        parse(&self.unescape(raw)).ok_or(ProtocolError::BadNumber {
            command: self.command,
            field,
        })
    }
    #[inline]
    fn id(&self, raw: &'a [u8]) -> Result<TransactionId, ProtocolError> {
        self.number(raw, "transaction id", parse_u32)
    }
    /// C, D and R: the first field is the id; fields after it are ignored, as Dovecot does.
    #[inline]
    fn single_id(command: &'static str, raw: &'a [u8]) -> Result<TransactionId, ProtocolError> {
        let a = Args::new(command, raw);
        let id = a.shape("1", first_field)?;
        a.id(id)
    }
}

/// The boolean strings Dovecot's dict server takes for `V`: `yes`, `y` (any case) and `1` are
/// true, `no` (any case) is false; anything else (`0`, `true`, `off`, …) closes the connection.
fn parse_bool(field: &[u8]) -> Option<bool> {
    if field.eq_ignore_ascii_case(b"yes") || field.eq_ignore_ascii_case(b"y") || field == b"1" {
        Some(true)
    } else if field.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

impl<'a> Request<'a> {
    /// Parses one command line (without its LF), with the argument rules of Dovecot 2.3.19.1;
    /// extra fields are ignored where Dovecot ignores them.
    pub fn parse(line: &'a [u8]) -> Result<Self, ProtocolError> {
        let (&letter, rest) = line.split_first().ok_or(ProtocolError::EmptyLine)?;
        Ok(match letter {
            b'L' => {
                let a = Args::new("LOOKUP", rest);
                let (key, username) = a.shape("at least 1", (first_field, optional_field))?;
                Request::Lookup {
                    key: a.unescape(key),
                    username: username.map(|u| a.unescape(u)),
                }
            }
            b'I' => {
                let a = Args::new("ITERATE", rest);
                // All three fields must be there before any of them is read.
                let (flags, max_rows, path, username) = a.shape(
                    "at least 3",
                    (first_field, next_field, next_field, optional_field),
                )?;
                let flags = IterateFlags::from_bits_retain(a.number(flags, "flags", parse_u32)?);
                let max_rows = a.number(max_rows, "max_rows", parse_u64)?;
                Request::Iterate {
                    flags,
                    max_rows,
                    path: a.unescape(path),
                    username: username.map(|u| a.unescape(u)),
                }
            }
            b'B' => {
                let a = Args::new("BEGIN", rest);
                let (id, more) = a.shape(
                    "at least 1",
                    (first_field, opt((next_field, optional_field))),
                )?;
                let id = a.id(id)?;
                let (username, expire_secs) = match more {
                    None => (None, None),
                    Some((username, expire_secs)) => (
                        Some(a.unescape(username)),
                        match expire_secs {
                            None => None,
                            Some(f) => Some(a.number(f, "expire_secs", parse_u32)?),
                        },
                    ),
                };
                Request::Begin {
                    id,
                    username,
                    expire_secs,
                }
            }
            b'C' => Request::Commit {
                id: Args::single_id("COMMIT", rest)?,
            },
            b'D' => Request::CommitAsync {
                id: Args::single_id("COMMIT_ASYNC", rest)?,
            },
            b'R' => Request::Rollback {
                id: Args::single_id("ROLLBACK", rest)?,
            },
            b'S' => {
                let a = Args::new("SET", rest);
                let (id, key, value) =
                    a.shape("3", exactly((first_field, next_field, next_field)))?;
                Request::Set {
                    id: a.id(id)?,
                    key: a.unescape(key),
                    value: a.unescape(value),
                }
            }
            b'U' => {
                let a = Args::new("UNSET", rest);
                let (id, key) = a.shape("2", exactly((first_field, next_field)))?;
                Request::Unset {
                    id: a.id(id)?,
                    key: a.unescape(key),
                }
            }
            b'A' => {
                let a = Args::new("ATOMIC_INC", rest);
                let (id, key, diff) =
                    a.shape("3", exactly((first_field, next_field, next_field)))?;
                let id = a.id(id)?;
                Request::AtomicInc {
                    id,
                    key: a.unescape(key),
                    diff: a.number(diff, "diff", parse_i64)?,
                }
            }
            b'T' => {
                let a = Args::new("TIMESTAMP", rest);
                let (id, secs, nsecs) =
                    a.shape("3", exactly((first_field, next_field, next_field)))?;
                let id = a.id(id)?;
                let secs = a.number(secs, "seconds", parse_i64)?;
                Request::Timestamp {
                    id,
                    secs,
                    nsecs: a.number(nsecs, "nanoseconds", parse_u32)?,
                }
            }
            b'V' => {
                let a = Args::new("HIDE_LOG_VALUES", rest);
                let (id, hide) = a.shape("2", exactly((first_field, next_field)))?;
                let id = a.id(id)?;
                let hide = parse_bool(&a.unescape(hide)).ok_or(ProtocolError::BadBool {
                    command: "HIDE_LOG_VALUES",
                })?;
                Request::HideLogValues { id, hide }
            }
            other => return Err(ProtocolError::UnknownCommand(other)),
        })
    }

    /// True for the commands that get a reply (and an async id): L, I, C, D.
    pub fn expects_reply(&self) -> bool {
        matches!(
            self,
            Request::Lookup { .. }
                | Request::Iterate { .. }
                | Request::Commit { .. }
                | Request::CommitAsync { .. }
        )
    }

    /// The transaction this command belongs to, if any.
    pub fn transaction_id(&self) -> Option<TransactionId> {
        match self {
            Request::Lookup { .. } | Request::Iterate { .. } => None,
            Request::Begin { id, .. }
            | Request::Commit { id }
            | Request::CommitAsync { id }
            | Request::Rollback { id }
            | Request::Set { id, .. }
            | Request::Unset { id, .. }
            | Request::AtomicInc { id, .. }
            | Request::Timestamp { id, .. }
            | Request::HideLogValues { id, .. } => Some(*id),
        }
    }

    /// Appends the command line, with its LF.
    pub fn encode(&self, dst: &mut impl BufMut) {
        fn field(dst: &mut impl BufMut, f: &[u8]) {
            dst.put_u8(b'\t');
            escape_into(dst, f);
        }
        fn id_line(dst: &mut impl BufMut, letter: u8, id: TransactionId) {
            dst.put_u8(letter);
            push_u64(dst, id.into());
        }
        match self {
            Request::Lookup { key, username } => {
                dst.put_u8(b'L');
                escape_into(dst, key);
                if let Some(u) = username {
                    field(dst, u);
                }
            }
            Request::Iterate {
                flags,
                max_rows,
                path,
                username,
            } => {
                dst.put_u8(b'I');
                push_u64(dst, flags.bits().into());
                dst.put_u8(b'\t');
                push_u64(dst, *max_rows);
                field(dst, path);
                if let Some(u) = username {
                    field(dst, u);
                }
            }
            Request::Begin {
                id,
                username,
                expire_secs,
            } => {
                id_line(dst, b'B', *id);
                match (username, expire_secs) {
                    (None, None) => {}
                    (u, e) => {
                        field(dst, u.as_deref().unwrap_or_default());
                        if let Some(e) = e {
                            dst.put_u8(b'\t');
                            push_u64(dst, (*e).into());
                        }
                    }
                }
            }
            Request::Commit { id } => id_line(dst, b'C', *id),
            Request::CommitAsync { id } => id_line(dst, b'D', *id),
            Request::Rollback { id } => id_line(dst, b'R', *id),
            Request::Set { id, key, value } => {
                id_line(dst, b'S', *id);
                field(dst, key);
                field(dst, value);
            }
            Request::Unset { id, key } => {
                id_line(dst, b'U', *id);
                field(dst, key);
            }
            Request::AtomicInc { id, key, diff } => {
                id_line(dst, b'A', *id);
                field(dst, key);
                dst.put_u8(b'\t');
                push_i64(dst, *diff);
            }
            Request::Timestamp { id, secs, nsecs } => {
                id_line(dst, b'T', *id);
                dst.put_u8(b'\t');
                push_i64(dst, *secs);
                dst.put_u8(b'\t');
                push_u64(dst, (*nsecs).into());
            }
            Request::HideLogValues { id, hide } => {
                id_line(dst, b'V', *id);
                dst.put_slice(if *hide { b"\tyes" } else { b"\tno" });
            }
        }
        dst.put_u8(b'\n');
    }

    /// Detaches the request from the line it was parsed from.
    pub fn into_owned(self) -> Request<'static> {
        fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Request::Lookup { key, username } => Request::Lookup {
                key: own(key),
                username: username.map(own),
            },
            Request::Iterate {
                flags,
                max_rows,
                path,
                username,
            } => Request::Iterate {
                flags,
                max_rows,
                path: own(path),
                username: username.map(own),
            },
            Request::Begin {
                id,
                username,
                expire_secs,
            } => Request::Begin {
                id,
                username: username.map(own),
                expire_secs,
            },
            Request::Commit { id } => Request::Commit { id },
            Request::CommitAsync { id } => Request::CommitAsync { id },
            Request::Rollback { id } => Request::Rollback { id },
            Request::Set { id, key, value } => Request::Set {
                id,
                key: own(key),
                value: own(value),
            },
            Request::Unset { id, key } => Request::Unset { id, key: own(key) },
            Request::AtomicInc { id, key, diff } => Request::AtomicInc {
                id,
                key: own(key),
                diff,
            },
            Request::Timestamp { id, secs, nsecs } => Request::Timestamp { id, secs, nsecs },
            Request::HideLogValues { id, hide } => Request::HideLogValues { id, hide },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(s)
    }

    #[test]
    fn parses_quota_clone_transaction() {
        assert_eq!(
            Request::parse(b"B1\tqc1").unwrap(),
            Request::Begin {
                id: 1,
                username: Some(b(b"qc1")),
                expire_secs: None
            }
        );
        assert_eq!(
            Request::parse(b"S1\tpriv/quota/storage\t38").unwrap(),
            Request::Set {
                id: 1,
                key: b(b"priv/quota/storage"),
                value: b(b"38")
            }
        );
        assert_eq!(Request::parse(b"C1").unwrap(), Request::Commit { id: 1 });
    }

    #[test]
    fn argument_rules() {
        assert!(matches!(
            Request::parse(b"S1\tk"),
            Err(ProtocolError::FieldCount { got: 2, .. })
        ));
        assert!(matches!(
            Request::parse(b"S1\tk\tv\tx"),
            Err(ProtocolError::FieldCount { got: 4, .. })
        ));
        assert!(matches!(
            Request::parse(b"C"),
            Err(ProtocolError::FieldCount { got: 0, .. })
        ));
        assert!(matches!(
            Request::parse(b"A1\tk\tabc"),
            Err(ProtocolError::BadNumber { .. })
        ));
        assert_eq!(Request::parse(b""), Err(ProtocolError::EmptyLine));
        assert_eq!(
            Request::parse(b"Xfoo"),
            Err(ProtocolError::UnknownCommand(b'X'))
        );
        assert!(matches!(
            Request::parse(b"L"),
            Err(ProtocolError::FieldCount { got: 0, .. })
        ));
        assert_eq!(
            Request::parse(b"Lk\tu\textra").unwrap(),
            Request::Lookup {
                key: b(b"k"),
                username: Some(b(b"u"))
            }
        );
    }

    #[test]
    fn encodes_iterate() {
        let r = Request::Iterate {
            flags: IterateFlags::EXACT_KEY | IterateFlags::NO_VALUE,
            max_rows: 0,
            path: b(b"shared/a/"),
            username: Some(b(b"")),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, b"I24\t0\tshared/a/\t\n");
    }
}
