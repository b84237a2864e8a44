//! An in-memory dict with dict-file semantics, for unit tests and as the model the
//! other backends are compared with.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    key_namespace, Change, CommitResult, Dict, DictError, IterRow, IterateOptions, Namespace,
    Transaction, UserValues,
};

/// Keys are stored as Redis does: `priv/` keys under `<user>/`, so users do not share them.
#[derive(Debug, Default)]
pub struct MemoryDict {
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryDict {
    /// An empty dict.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The internal key: `shared/x` stays as is, `priv/x` becomes `priv/<user>\0x`.
fn storage_key(key: &[u8], username: &[u8]) -> Vec<u8> {
    match key_namespace(key) {
        Some(Namespace::Private) => {
            let mut k = b"priv/".to_vec();
            k.extend_from_slice(username);
            k.push(0);
            k.extend_from_slice(&key[5..]);
            k
        }
        _ => key.to_vec(),
    }
}

fn public_key(stored: &[u8]) -> Vec<u8> {
    match stored.strip_prefix(b"priv/") {
        Some(rest) => match rest.iter().position(|&b| b == 0) {
            Some(nul) => [&b"priv/"[..], &rest[nul + 1..]].concat(),
            None => stored.to_vec(),
        },
        None => stored.to_vec(),
    }
}

#[async_trait]
impl Dict for MemoryDict {
    fn lookups_stand_alone(&self) -> bool {
        true
    }

    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let data = self.data.lock().expect("memory dict lock");
        Ok(data
            .get(&storage_key(key, username))
            .map(|v| vec![v.clone()]))
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let prefix = storage_key(path, username);
        let data = self.data.lock().expect("memory dict lock");
        let mut rows: Vec<IterRow> = data
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| {
                let rest = &k[prefix.len()..];
                if options.exact_key {
                    rest.is_empty()
                } else {
                    options.recurse || !rest.contains(&b'/')
                }
            })
            .map(|(k, v)| options.row(public_key(k), v))
            .collect();
        options.finish(&mut rows);
        stream::iter(rows.into_iter().map(Ok)).boxed()
    }

    fn scan_users(&self, key: &[u8]) -> BoxStream<'static, Result<UserValues, DictError>> {
        let Some(rest) = key.strip_prefix(crate::PRIV_PREFIX) else {
            let e = DictError::refused("scan_users needs a priv/ key");
            return stream::once(async move { Err(e) }).boxed();
        };
        let data = self.data.lock().expect("memory dict lock");
        let rows: Vec<UserValues> = data
            .range(crate::PRIV_PREFIX.to_vec()..)
            .take_while(|(k, _)| k.starts_with(crate::PRIV_PREFIX))
            .filter_map(|(k, v)| {
                let stored = &k[crate::PRIV_PREFIX.len()..];
                let nul = stored.iter().position(|&b| b == 0)?;
                (&stored[nul + 1..] == rest).then(|| UserValues {
                    username: stored[..nul].to_vec(),
                    values: vec![v.clone()],
                })
            })
            .collect();
        stream::iter(rows.into_iter().map(Ok)).boxed()
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        let mut data = self.data.lock().expect("memory dict lock");
        let mut result = CommitResult::Ok;
        for change in txn.changes {
            let key = storage_key(change.key(), &txn.username);
            match change {
                Change::Set { value, .. } => {
                    data.insert(key, value);
                }
                Change::Unset { .. } => {
                    data.remove(&key);
                }
                Change::Inc { diff, .. } => {
                    if diff == 0 {
                        continue;
                    }
                    let Some(old) = data.get(&key) else {
                        result = CommitResult::NotFound;
                        continue;
                    };
                    let Some(n) = std::str::from_utf8(old)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    else {
                        return CommitResult::Failed(format!(
                            "value of {} is not a number",
                            String::from_utf8_lossy(&key)
                        ));
                    };
                    data.insert(key, n.wrapping_add(diff).to_string().into_bytes());
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inc_on_missing_key_is_notfound_but_rest_commits() {
        let d = MemoryDict::new();
        let txn = Transaction {
            changes: vec![
                Change::Inc {
                    key: b"shared/none".to_vec(),
                    diff: 1,
                },
                Change::Set {
                    key: b"shared/z".to_vec(),
                    value: b"1".to_vec(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(d.commit(txn).await, CommitResult::NotFound);
        assert_eq!(
            d.lookup(b"shared/z", b"").await.unwrap(),
            Some(vec![b"1".to_vec()])
        );
    }

    #[tokio::test]
    async fn scan_users_lists_every_users_value_of_a_key() {
        let d = MemoryDict::new();
        for (user, key, value) in [
            ("u1", "priv/quota/storage", "10"),
            ("u2", "priv/quota/storage", "20"),
            ("u2", "priv/quota/messages", "2"),
            ("u3", "priv/quota/storage/deeper", "x"),
        ] {
            let txn = Transaction {
                username: user.as_bytes().to_vec(),
                changes: vec![Change::Set {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                }],
                ..Default::default()
            };
            assert_eq!(d.commit(txn).await, CommitResult::Ok);
        }
        let rows: Vec<_> = d.scan_users(b"priv/quota/storage").collect().await;
        let rows: Vec<(Vec<u8>, Vec<Vec<u8>>)> = rows
            .into_iter()
            .map(|r| r.map(|u| (u.username, u.values)).unwrap())
            .collect();
        assert_eq!(
            rows,
            vec![
                (b"u1".to_vec(), vec![b"10".to_vec()]),
                (b"u2".to_vec(), vec![b"20".to_vec()])
            ]
        );
        let shared: Vec<_> = d.scan_users(b"shared/x").collect().await;
        assert!(shared[0].is_err());
    }

    #[tokio::test]
    async fn private_keys_are_per_user() {
        let d = MemoryDict::new();
        let txn = Transaction {
            username: b"u1".to_vec(),
            changes: vec![Change::Set {
                key: b"priv/a/b".to_vec(),
                value: b"x".to_vec(),
            }],
            ..Default::default()
        };
        assert_eq!(d.commit(txn).await, CommitResult::Ok);
        assert_eq!(d.lookup(b"priv/a/b", b"u2").await.unwrap(), None);
        let rows: Vec<_> = d
            .iterate(b"priv/a/", b"u1", IterateOptions::default())
            .collect()
            .await;
        assert_eq!(
            rows,
            vec![Ok(IterRow {
                key: b"priv/a/b".to_vec(),
                values: vec![b"x".to_vec()]
            })]
        );
    }
}
