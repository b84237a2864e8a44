//! What was wrong with a line. Each variant is one reason Dovecot would close the connection.

use thiserror::Error;

/// A line that could not be parsed. Never a panic: every byte string maps to a value or this.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// An empty line (Dovecot: `Unknown command`).
    #[error("empty line")]
    EmptyLine,
    /// The first byte is not a known command letter.
    #[error("unknown command {}", show_byte(*.0))]
    UnknownCommand(u8),
    /// The command has the wrong number of fields.
    #[error("{command}: broken input: expected {expected} fields, got {got}")]
    FieldCount {
        /// Command name, e.g. `SET`.
        command: &'static str,
        /// The rule, e.g. `3` or `at least 1`.
        expected: &'static str,
        /// Fields present after the command letter.
        got: usize,
    },
    /// A numeric field does not parse, or overflows its type.
    #[error("{command}: invalid {field}")]
    BadNumber {
        /// Command name.
        command: &'static str,
        /// Field name, e.g. `transaction id`.
        field: &'static str,
    },
    /// A boolean field (`V`) that is not a known boolean string.
    #[error("{command}: invalid boolean value")]
    BadBool {
        /// Command name.
        command: &'static str,
    },
    /// The first line is not a hello (`H`).
    #[error("handshake: not a hello line")]
    NotHello,
    /// A hello whose major version this crate does not speak.
    #[error("handshake: unsupported protocol major version {0} (3 and 4 are supported)")]
    UnsupportedVersion(u32),
    /// A 2.3 hello whose value type is not 0 (string) or 1 (uint32).
    #[error("handshake: invalid value type {0}")]
    InvalidValueType(u32),
    /// A server line that matches no reply shape.
    #[error("invalid reply: {0}")]
    BadReply(&'static str),
    /// A line longer than the limit (including its LF).
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in bytes, including the LF.
        limit: usize,
    },
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        (b as char).to_string()
    } else {
        format!("0x{b:02x}")
    }
}
