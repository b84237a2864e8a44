//! Transactions for the Redis suites, built from short calls.

// Each test binary uses a part of it.
#![allow(dead_code)]

use dict_backend::{Change, Transaction};

pub fn txn(user: &str, changes: Vec<Change>) -> Transaction {
    Transaction {
        username: user.as_bytes().to_vec(),
        changes,
        ..Transaction::default()
    }
}

pub fn set(key: &str, value: &str) -> Change {
    Change::Set {
        key: key.into(),
        value: value.into(),
    }
}

pub fn inc(key: &str, diff: i64) -> Change {
    Change::Inc {
        key: key.into(),
        diff,
    }
}
