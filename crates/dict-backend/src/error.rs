//! [`DictError`]: what a backend reports when a lookup, iteration or check fails. Its text
//! is what the client gets in its `F` reply (Dovecot's texts, unchanged); its
//! [`ErrorKind`] says what went wrong, for metrics and for callers that react to it.

use std::fmt;

/// What kind of failure a [`DictError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operation did not finish within its time.
    Timeout,
    /// The backend could not be reached, or the connection to it failed.
    Connection,
    /// The backend (a database, Redis, the dict file) failed or refused the operation.
    Database,
    /// Bad input, refused before anything was sent (an unmapped key, text the database
    /// can't take).
    Refused,
    /// The backend lacks the operation.
    Unsupported,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, e.g. to give each its metric series up front.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Database,
        ErrorKind::Refused,
        ErrorKind::Unsupported,
        ErrorKind::Other,
    ];

    /// The kind as a short lowercase word, e.g. the `kind` label of the error metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Database => "database",
            ErrorKind::Refused => "refused",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lookup, iteration or check failure: a kind and the text the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DictError {
    kind: ErrorKind,
    message: String,
}

impl DictError {
    /// A failure of kind `kind` with this text.
    pub fn with_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        DictError {
            kind,
            message: message.into(),
        }
    }

    /// A failure with this text and no more specific kind ([`ErrorKind::Other`]).
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Other, message)
    }

    /// The operation ran out of time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Timeout, message)
    }

    /// The backend could not be reached.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Connection, message)
    }

    /// The backend failed or refused the operation.
    pub fn database(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Database, message)
    }

    /// Bad input, refused before anything was sent.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Refused, message)
    }

    /// The backend lacks the operation.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Unsupported, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The text the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The text the client gets, owned.
    pub fn into_message(self) -> String {
        self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_message_alone() {
        let e = DictError::timeout("Iteration timed out");
        assert_eq!(e.to_string(), "Iteration timed out");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.kind().as_str(), "timeout");
        assert_eq!(DictError::new("x").kind(), ErrorKind::Other);
        assert_eq!(DictError::refused("x").into_message(), "x");
    }
}
