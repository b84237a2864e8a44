//! Dovecot 2.4's `sqlite_synchronous` and `sqlite_journal_mode`: how a SQLite dict's file is
//! written. A 2.4 `dict_server { }` block sets them per dict; for 2.3 configs (whose
//! `connect` is only the path) the TOML file's `[sql]` section sets them for every SQLite
//! dict.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// `sqlite_synchronous`: `PRAGMA synchronous` of the connection that writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SqliteSynchronous {
    /// No pragma: SQLite's compiled-in default (FULL on Debian).
    Default,
    Off,
    Normal,
    Full,
    Extra,
}

/// `sqlite_journal_mode`: `PRAGMA journal_mode` of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SqliteJournalMode {
    /// Rollback journal, deleted after each transaction: readers wait for a commit.
    Delete,
    /// Write-ahead log (Dovecot 2.4's default, and ours): readers go on during a commit.
    Wal,
}

/// The two settings of one SQLite dict; `None` where its configuration says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Option<SqliteSynchronous>,
    pub journal_mode: Option<SqliteJournalMode>,
}

impl SqliteOptions {
    /// Takes from `defaults` what this dict's own configuration left unset.
    pub fn or(self, defaults: SqliteOptions) -> SqliteOptions {
        SqliteOptions {
            synchronous: self.synchronous.or(defaults.synchronous),
            journal_mode: self.journal_mode.or(defaults.journal_mode),
        }
    }
}

impl SqliteSynchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteSynchronous::Default => "default",
            SqliteSynchronous::Off => "off",
            SqliteSynchronous::Normal => "normal",
            SqliteSynchronous::Full => "full",
            SqliteSynchronous::Extra => "extra",
        }
    }
}

impl SqliteJournalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteJournalMode::Delete => "delete",
            SqliteJournalMode::Wal => "wal",
        }
    }
}

impl FromStr for SqliteSynchronous {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "default" => SqliteSynchronous::Default,
            "off" => SqliteSynchronous::Off,
            "normal" => SqliteSynchronous::Normal,
            "full" => SqliteSynchronous::Full,
            "extra" => SqliteSynchronous::Extra,
            other => {
                return Err(format!(
                "sqlite_synchronous: invalid value '{other}' (expected default, off, normal, full or extra)"
            ))
            }
        })
    }
}

impl FromStr for SqliteJournalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delete" => Ok(SqliteJournalMode::Delete),
            "wal" => Ok(SqliteJournalMode::Wal),
            other => Err(format!(
                "sqlite_journal_mode: invalid value '{other}' (expected delete or wal)"
            )),
        }
    }
}

impl TryFrom<String> for SqliteSynchronous {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl TryFrom<String> for SqliteJournalMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for SqliteSynchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SqliteJournalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_dovecot_spells_them() {
        for s in ["default", "off", "normal", "full", "extra"] {
            assert_eq!(s.parse::<SqliteSynchronous>().unwrap().as_str(), s);
        }
        for s in ["delete", "wal"] {
            assert_eq!(s.parse::<SqliteJournalMode>().unwrap().as_str(), s);
        }
        assert!("FULL"
            .parse::<SqliteSynchronous>()
            .unwrap_err()
            .contains("invalid value 'FULL'"));
        assert!("truncate"
            .parse::<SqliteJournalMode>()
            .unwrap_err()
            .contains("expected delete or wal"));
    }

    #[test]
    fn own_settings_win_over_defaults() {
        let own = SqliteOptions {
            synchronous: Some(SqliteSynchronous::Off),
            journal_mode: None,
        };
        let defaults = SqliteOptions {
            synchronous: Some(SqliteSynchronous::Full),
            journal_mode: Some(SqliteJournalMode::Delete),
        };
        assert_eq!(
            own.or(defaults),
            SqliteOptions {
                synchronous: Some(SqliteSynchronous::Off),
                journal_mode: Some(SqliteJournalMode::Delete),
            }
        );
    }
}
