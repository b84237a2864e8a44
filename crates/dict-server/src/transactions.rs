//! The open transactions of one connection, keyed by the client's ids. Changes are only
//! buffered here; nothing reaches a backend before the commit.

use std::collections::HashMap;

use dict_backend::{Change, Transaction};
use dict_protocol::namespace::{self, KeyRefusal};
use dict_protocol::TransactionId;

use crate::budget::{BudgetError, ConnectionBudget, CHANGE_OVERHEAD};

/// Open transactions one connection may hold (Dovecot has no limit; this bounds memory).
pub const MAX_OPEN_TRANSACTIONS: usize = 1000;
/// Changes one transaction may buffer.
pub const MAX_CHANGES: usize = 100_000;

/// Why a command closes the connection; the text goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// `B` with an id that is already open.
    #[error("Transaction ID {0} already exists")]
    AlreadyExists(TransactionId),
    /// A command for an id that is not open.
    #[error("Transaction ID {0} doesn't exist")]
    Unknown(TransactionId),
    /// Too many transactions or changes buffered.
    #[error("{0}")]
    Limit(&'static str),
    /// A key the dict cannot accept.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The bytes buffered in open transactions reached a cap.
    #[error(transparent)]
    Memory(#[from] BudgetError),
}

/// A key Dovecot 2.3.19 would crash on; we close the connection instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither `priv/` nor `shared/`.
    #[error("key must start with priv/ or shared/: {0}")]
    BadPrefix(String),
    /// `priv/` without a username.
    #[error("private dict key requires username: {0}")]
    NoUsername(String),
}

/// Checks a key (or iterate path) against the namespace rule (protocol-spec §4, §9).
pub fn check_key(key: &[u8], username: &[u8]) -> Result<(), KeyError> {
    let key_text = || String::from_utf8_lossy(key).into_owned();
    match namespace::check_key(key, username) {
        Ok(_) => Ok(()),
        Err(KeyRefusal::NoNamespace) => Err(KeyError::BadPrefix(key_text())),
        Err(KeyRefusal::NoUsername) => Err(KeyError::NoUsername(key_text())),
    }
}

/// Open transactions by id, and the bytes they hold.
#[derive(Debug)]
pub struct Transactions {
    open: HashMap<TransactionId, (Transaction, usize)>,
    budget: ConnectionBudget,
}

impl Transactions {
    /// No open transaction yet; changes may hold at most what `budget` allows.
    pub fn new(budget: ConnectionBudget) -> Self {
        Transactions {
            open: HashMap::new(),
            budget,
        }
    }

    /// `B`
    pub fn begin(
        &mut self,
        id: TransactionId,
        username: Vec<u8>,
        expire_secs: Option<u32>,
    ) -> Result<(), TransactionError> {
        if self.open.contains_key(&id) {
            return Err(TransactionError::AlreadyExists(id));
        }
        if self.open.len() >= MAX_OPEN_TRANSACTIONS {
            return Err(TransactionError::Limit("too many open transactions"));
        }
        let bytes = CHANGE_OVERHEAD + username.len();
        self.budget.reserve(bytes)?;
        self.open.insert(
            id,
            (
                Transaction {
                    username,
                    expire_secs: expire_secs.filter(|&e| e > 0),
                    ..Default::default()
                },
                bytes,
            ),
        );
        Ok(())
    }

    fn get(&mut self, id: TransactionId) -> Result<&mut Transaction, TransactionError> {
        self.open
            .get_mut(&id)
            .map(|(txn, _)| txn)
            .ok_or(TransactionError::Unknown(id))
    }

    /// `S`, `U`, `A`: buffers a change after checking its key.
    pub fn change(&mut self, id: TransactionId, change: Change) -> Result<(), TransactionError> {
        let (txn, held) = self
            .open
            .get_mut(&id)
            .ok_or(TransactionError::Unknown(id))?;
        check_key(change.key(), &txn.username)?;
        if txn.changes.len() >= MAX_CHANGES {
            return Err(TransactionError::Limit(
                "too many changes in one transaction",
            ));
        }
        let bytes = CHANGE_OVERHEAD + change_bytes(&change);
        self.budget.reserve(bytes)?;
        *held += bytes;
        txn.changes.push(change);
        Ok(())
    }

    /// `T`: kept for backends that can use it. Dovecot asserts on a second `T` or one after
    /// changes; we simply keep the last one.
    pub fn timestamp(
        &mut self,
        id: TransactionId,
        secs: i64,
        nsecs: u32,
    ) -> Result<(), TransactionError> {
        self.get(id)?.timestamp = Some((secs, nsecs));
        Ok(())
    }

    /// `V`
    pub fn hide_log_values(
        &mut self,
        id: TransactionId,
        hide: bool,
    ) -> Result<(), TransactionError> {
        self.get(id)?.hide_log_values = hide;
        Ok(())
    }

    /// `C`, `D`, `R`: takes the transaction out of the table.
    pub fn finish(&mut self, id: TransactionId) -> Result<Transaction, TransactionError> {
        let (txn, held) = self.open.remove(&id).ok_or(TransactionError::Unknown(id))?;
        self.budget.release(held);
        Ok(txn)
    }

    /// Transactions still open (rolled back when the connection ends).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The bytes a change buffers.
fn change_bytes(change: &Change) -> usize {
    match change {
        Change::Set { key, value } => key.len() + value.len(),
        Change::Unset { key } | Change::Inc { key, .. } => key.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ServerBudget;

    fn transactions(limit: usize) -> Transactions {
        Transactions::new(ConnectionBudget::new(ServerBudget::new(usize::MAX), limit))
    }

    #[test]
    fn key_rules() {
        assert!(check_key(b"shared/x", b"").is_ok());
        assert!(check_key(b"priv/x", b"u").is_ok());
        assert!(matches!(
            check_key(b"priv/x", b""),
            Err(KeyError::NoUsername(_))
        ));
        assert!(matches!(
            check_key(b"foo/bar", b"u"),
            Err(KeyError::BadPrefix(_))
        ));
    }

    #[test]
    fn ids_must_be_open_and_unique() {
        let mut t = transactions(usize::MAX);
        t.begin(1, b"u".to_vec(), None).unwrap();
        assert_eq!(
            t.begin(1, vec![], None),
            Err(TransactionError::AlreadyExists(1))
        );
        assert_eq!(t.finish(2).unwrap_err(), TransactionError::Unknown(2));
        t.change(
            1,
            Change::Set {
                key: b"priv/a".to_vec(),
                value: b"1".to_vec(),
            },
        )
        .unwrap();
        assert_eq!(t.finish(1).unwrap().changes.len(), 1);
        assert_eq!(t.finish(1).unwrap_err(), TransactionError::Unknown(1));
    }

    #[test]
    fn buffered_bytes_are_capped_and_given_back() {
        let mut t = transactions(1000);
        let set = |n: usize| Change::Set {
            key: b"shared/k".to_vec(),
            value: vec![b'x'; n],
        };
        t.begin(1, vec![], None).unwrap();
        t.change(1, set(500)).unwrap();
        assert!(matches!(
            t.change(1, set(500)),
            Err(TransactionError::Memory(BudgetError::Connection {
                limit: 1000
            }))
        ));
        // A rollback gives the bytes back.
        t.finish(1).unwrap();
        t.begin(2, vec![], None).unwrap();
        t.change(2, set(800)).unwrap();
    }
}
