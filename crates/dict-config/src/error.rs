//! The one error type of this crate, and the file/line position every message carries.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a setting, section or error comes from, so that messages can point the admin at
/// the exact line (`/etc/dovecot/conf.d/90-dict.conf:12`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based; a continued line (`\` at the end) reports the line it starts on.
    pub line: u32,
}

impl Origin {
    pub fn new(file: impl Into<PathBuf>, line: u32) -> Self {
        Origin {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything that can go wrong while reading configuration. Each message starts with the
/// file and, where one exists, the line, so it can be logged as is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read. `included_from` is the `!include` line that named it, or
    /// `None` for the file the caller asked for.
    #[error("{}can't read {}: {source}", at(.included_from.as_ref()), .path.display())]
    Read {
        path: PathBuf,
        included_from: Option<Origin>,
        #[source]
        source: io::Error,
    },

    /// A syntax or validation error at a known line.
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },

    /// A dict URI that can't be used. `origin` is `None` when the URI did not come from a
    /// file (see [`ConfigError::at`]).
    #[error("{}dict '{name}': {message}", at(.origin.as_ref()))]
    Dict {
        origin: Option<Origin>,
        name: String,
        message: String,
    },
}

fn at(origin: Option<&Origin>) -> String {
    origin.map(|o| format!("{o}: ")).unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn invalid(origin: &Origin, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: origin.clone(),
            message: message.into(),
        }
    }

    /// Attach the place a dict URI was configured, for errors raised by
    /// [`DictUri::parse`](crate::DictUri::parse) which only sees the URI string.
    pub fn at(self, origin: &Origin) -> Self {
        match self {
            ConfigError::Dict {
                origin: None,
                name,
                message,
            } => ConfigError::Dict {
                origin: Some(origin.clone()),
                name,
                message,
            },
            other => other,
        }
    }

    /// The position the error points at, if it has one.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            ConfigError::Read { included_from, .. } => included_from.as_ref(),
            ConfigError::Invalid { origin, .. } => Some(origin),
            ConfigError::Dict { origin, .. } => origin.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_file_and_line() {
        let e = ConfigError::invalid(&Origin::new("/etc/x.conf", 12), "Unknown setting: foo");
        assert_eq!(e.to_string(), "/etc/x.conf:12: Unknown setting: foo");

        let e = ConfigError::Dict {
            origin: None,
            name: "q".into(),
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "dict 'q': boom");
        let e = e.at(&Origin::new("/etc/d.conf", 3));
        assert_eq!(e.to_string(), "/etc/d.conf:3: dict 'q': boom");
    }
}
