//! A dict transaction as one `MULTI … EXEC`, as Dovecot's dict-redis sends it: `SET`, `DEL` and
//! `INCRBY` in the client's order, each `SET`/`INCRBY` followed by `EXPIRE` when the dict or
//! the transaction has an expiry.
//!
//! Redis does not undo the other commands of an `EXEC` when one of them fails at run time
//! (`INCRBY` on a value that is not a number, or on a list). Dovecot reports such a commit
//! as failed with the rest applied. We check first: a transaction with increments reads the
//! type and value of each key it increments (`TYPE …`, `MGET …`, one round trip), replays
//! its changes on those values, and fails without sending anything if an increment could
//! not work. Only a writer racing between that check and `EXEC` still gets the
//! partial result, reported as `Failed` like Dovecot.

use std::collections::HashMap;

use redis::{Pipeline, Value};

use super::keys::KeyLayout;
use crate::{Change, Transaction};

/// One Redis write, in dict terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set { key: Vec<u8>, value: Vec<u8> },
    Del { key: Vec<u8> },
    IncrBy { key: Vec<u8>, diff: i64 },
}

/// What a key held before the transaction, as far as an increment cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Before {
    Missing,
    String(Vec<u8>),
    /// A list, hash, …: `INCRBY` on it fails with WRONGTYPE.
    OtherType(String),
}

/// The Redis commands of one transaction.
#[derive(Debug)]
pub(crate) struct CommitPlan {
    ops: Vec<Op>,
    expire_secs: Option<u32>,
    /// Keys incremented before anything in the transaction sets or deletes them: their
    /// current value decides whether the increments can work.
    check_keys: Vec<Vec<u8>>,
}

impl CommitPlan {
    /// `expire_secs` is the transaction's own expiry if it has one, else the dict's.
    pub(crate) fn new(
        layout: &KeyLayout,
        txn: &Transaction,
        expire_secs: Option<u32>,
    ) -> Result<CommitPlan, String> {
        let mut ops = Vec::with_capacity(txn.changes.len());
        let mut check_keys = Vec::new();
        let mut written = std::collections::HashSet::new();
        for change in &txn.changes {
            let key = layout
                .redis_key(change.key(), &txn.username)
                .ok_or_else(|| {
                    format!(
                        "redis: key must begin with priv/ or shared/: {}",
                        String::from_utf8_lossy(change.key())
                    )
                })?;
            let op = match change {
                Change::Set { value, .. } => Op::Set {
                    key,
                    value: value.clone(),
                },
                Change::Unset { .. } => Op::Del { key },
                // dict.c drops an increment by 0 before any backend sees it.
                Change::Inc { diff: 0, .. } => continue,
                Change::Inc { diff, .. } => Op::IncrBy { key, diff: *diff },
            };
            match &op {
                Op::IncrBy { key, .. } if !written.contains(key) => {
                    if !check_keys.contains(key) {
                        check_keys.push(key.clone());
                    }
                }
                Op::Set { key, .. } | Op::Del { key } => {
                    written.insert(key.clone());
                }
                Op::IncrBy { .. } => {}
            }
            ops.push(op);
        }
        Ok(CommitPlan {
            ops,
            expire_secs,
            check_keys,
        })
    }

    /// Nothing to send: the commit is OK without talking to Redis.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Running it twice leaves the same keys as running it once: no `INCRBY`.
    pub(crate) fn is_repeatable(&self) -> bool {
        !self.ops.iter().any(|op| matches!(op, Op::IncrBy { .. }))
    }

    /// Every Redis key the transaction writes, in order (repeats included).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.ops.iter().map(|op| match op {
            Op::Set { key, .. } | Op::Del { key } | Op::IncrBy { key, .. } => key.as_slice(),
        })
    }

    /// `TYPE` of every checked key, then one `MGET` of them all; `None` when no increment
    /// needs checking.
    pub(crate) fn check_pipeline(&self) -> Option<Pipeline> {
        if self.check_keys.is_empty() {
            return None;
        }
        let mut pipe = redis::pipe();
        for key in &self.check_keys {
            pipe.cmd("TYPE").arg(key);
        }
        pipe.cmd("MGET").arg(&self.check_keys);
        Some(pipe)
    }

    /// Reads the replies of [`CommitPlan::check_pipeline`].
    pub(crate) fn parse_check(&self, replies: Vec<Value>) -> Result<Vec<Before>, String> {
        let n = self.check_keys.len();
        if replies.len() != n + 1 {
            return Err(format!(
                "redis: expected {} replies to the increment check, got {}",
                n + 1,
                replies.len()
            ));
        }
        let mut replies = replies.into_iter();
        let types: Vec<String> = replies
            .by_ref()
            .take(n)
            .map(redis::from_owned_redis_value)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("redis: increment check: {e}"))?;
        let values: Vec<Option<Vec<u8>>> = replies
            .next()
            .map(redis::from_owned_redis_value)
            .transpose()
            .map_err(|e| format!("redis: increment check: {e}"))?
            .unwrap_or_default();
        if values.len() != n {
            return Err("redis: increment check: short MGET reply".into());
        }
        Ok(types
            .into_iter()
            .zip(values)
            .map(|(ty, value)| match (ty.as_str(), value) {
                ("string", Some(v)) => Before::String(v),
                // gone between TYPE and MGET, or never there
                ("none" | "string", _) => Before::Missing,
                (_, _) => Before::OtherType(ty),
            })
            .collect())
    }

    /// Replays the transaction on the values read by the check; an error names the first
    /// increment that Redis would refuse.
    pub(crate) fn verify(&self, before: Vec<Before>) -> Result<(), String> {
        let mut state: HashMap<&[u8], Before> = self
            .check_keys
            .iter()
            .map(Vec::as_slice)
            .zip(before)
            .collect();
        for op in &self.ops {
            match op {
                Op::Set { key, value } => {
                    state.insert(key, Before::String(value.clone()));
                }
                Op::Del { key } => {
                    state.insert(key, Before::Missing);
                }
                Op::IncrBy { key, diff } => {
                    let shown = || String::from_utf8_lossy(key).into_owned();
                    let current = match state.get(key.as_slice()) {
                        None | Some(Before::Missing) => 0,
                        Some(Before::String(v)) => parse_redis_int(v).ok_or_else(|| {
                            format!(
                                "redis: INCRBY {}: value is not an integer or out of range",
                                shown()
                            )
                        })?,
                        Some(Before::OtherType(ty)) => {
                            return Err(format!(
                                "redis: INCRBY {}: key holds a {ty}, not a string",
                                shown()
                            ))
                        }
                    };
                    let next = current.checked_add(*diff).ok_or_else(|| {
                        format!(
                            "redis: INCRBY {}: increment or decrement would overflow",
                            shown()
                        )
                    })?;
                    state.insert(key, Before::String(next.to_string().into_bytes()));
                }
            }
        }
        Ok(())
    }

    /// The whole transaction as `MULTI`, the commands, `EXEC`, written in one go.
    pub(crate) fn pipeline(&self) -> Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in &self.ops {
            match op {
                Op::Set { key, value } => {
                    pipe.cmd("SET").arg(key).arg(value).ignore();
                    self.expire(&mut pipe, key);
                }
                Op::Del { key } => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                Op::IncrBy { key, diff } => {
                    pipe.cmd("INCRBY").arg(key).arg(*diff).ignore();
                    self.expire(&mut pipe, key);
                }
            }
        }
        pipe
    }

    fn expire(&self, pipe: &mut Pipeline, key: &[u8]) {
        if let Some(secs) = self.expire_secs {
            pipe.cmd("EXPIRE").arg(key).arg(secs).ignore();
        }
    }
}

/// A number as Redis's `INCRBY` reads a stored string: an optional `-`, digits without
/// leading zeros, no sign on zero, no spaces, in `i64` range.
pub(crate) fn parse_redis_int(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == s.len(),
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(changes: Vec<Change>) -> Transaction {
        Transaction {
            username: b"u".to_vec(),
            changes,
            ..Default::default()
        }
    }

    fn inc(key: &str, diff: i64) -> Change {
        Change::Inc {
            key: key.as_bytes().to_vec(),
            diff,
        }
    }

    fn set(key: &str, value: &str) -> Change {
        Change::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn redis_integers() {
        for ok in [
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_redis_int(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "x",
            "9223372036854775808",
        ] {
            assert_eq!(parse_redis_int(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn only_increments_of_untouched_keys_are_checked() {
        let layout = KeyLayout::new("p/");
        let plan = CommitPlan::new(
            &layout,
            &txn(vec![
                set("shared/a", "x"),
                inc("shared/a", 1),
                inc("priv/b", 1),
                inc("priv/b", 2),
                inc("shared/c", 0),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(plan.check_keys, vec![b"p/u/b".to_vec()]);
        assert_eq!(plan.ops.len(), 4, "the increment by 0 is dropped");
        // `shared/a` is set to "x" by the transaction itself before its increment
        assert!(plan
            .verify(vec![Before::String(b"5".to_vec())])
            .unwrap_err()
            .contains("INCRBY p/a: value is not an integer"));
    }

    #[test]
    fn verify_replays_the_transaction() {
        let layout = KeyLayout::new("");
        let plan = CommitPlan::new(
            &layout,
            &txn(vec![inc("shared/n", 5), inc("shared/n", i64::MAX - 5)]),
            None,
        )
        .unwrap();
        assert!(plan.verify(vec![Before::Missing]).is_ok());
        assert!(plan
            .verify(vec![Before::String(b"1".to_vec())])
            .unwrap_err()
            .contains("overflow"));
        assert!(plan
            .verify(vec![Before::OtherType("list".into())])
            .unwrap_err()
            .contains("holds a list"));
        let empty = CommitPlan::new(&layout, &txn(vec![inc("shared/n", 0)]), None).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn pipeline_is_multi_exec_with_expire_after_set_and_incrby() {
        let layout = KeyLayout::new("pfx/");
        let plan = CommitPlan::new(
            &layout,
            &txn(vec![
                set("priv/quota/storage", "100"),
                Change::Unset {
                    key: b"shared/x".to_vec(),
                },
                inc("shared/y", -2),
            ]),
            Some(100),
        )
        .unwrap();
        let packed = String::from_utf8(plan.pipeline().get_packed_pipeline()).unwrap();
        let words: Vec<&str> = packed
            .split("\r\n")
            .filter(|w| !w.starts_with(['*', '$']) && !w.is_empty())
            .collect();
        assert_eq!(
            words,
            [
                "MULTI",
                "SET",
                "pfx/u/quota/storage",
                "100",
                "EXPIRE",
                "pfx/u/quota/storage",
                "100",
                "DEL",
                "pfx/x",
                "INCRBY",
                "pfx/y",
                "-2",
                "EXPIRE",
                "pfx/y",
                "100",
                "EXEC"
            ]
        );
    }
}
