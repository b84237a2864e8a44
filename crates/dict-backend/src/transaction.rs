//! A dict transaction as the server buffers it: changes are kept in order and handed to the
//! backend whole at commit, so any number of transactions may be open on one connection.

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `S`: set `key` to `value`.
    Set { key: Vec<u8>, value: Vec<u8> },
    /// `U`: remove `key`.
    Unset { key: Vec<u8> },
    /// `A`: add `diff` to the number stored at `key`.
    Inc { key: Vec<u8>, diff: i64 },
}

impl Change {
    /// The key this change touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Set { key, .. } | Change::Unset { key } | Change::Inc { key, .. } => key,
        }
    }
}

/// A transaction ready to commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The user of `priv/` keys (empty when `B` carried none).
    pub username: Vec<u8>,
    /// 2.4: expiry in seconds for the values written (from `B`); 0 or `None` means none.
    pub expire_secs: Option<u32>,
    /// `T`: the write timestamp the client asked for (secs, nsecs).
    pub timestamp: Option<(i64, u32)>,
    /// `V`: keep values out of logs.
    pub hide_log_values: bool,
    /// The changes, in the order the client sent them.
    pub changes: Vec<Change>,
}
