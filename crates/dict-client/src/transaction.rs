//! Transactions. Major 3 streams them as Dovecot 2.3's client does: `B` lazily before the
//! first change, each change sent at once, `C` at commit, `R` at rollback only if `B` went out
//! (protocol-spec §6). Major 4 buffers everything and sends `B`…`C` as one batch at commit, nothing at
//! rollback (protocol-spec §6).

use dict_protocol::{Request, TransactionId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::{check_key, Client};
use crate::connection::Msg;
use crate::{CommitResult, Error, Protocol};

/// An open transaction. Dropping it without [`commit`](Transaction::commit) rolls it back.
pub struct Transaction {
    client: Client,
    id: TransactionId,
    user: Vec<u8>,
    /// Major 4: the lines after `B`, sent at commit.
    batch: Vec<Request<'static>>,
    /// Any S/U/A/T so far.
    changed: bool,
    /// Any S/U/A so far (a timestamp must come before them).
    has_changes: bool,
    has_timestamp: bool,
    /// Major 4: an atomic increment is not idempotent, so the batch is not retried.
    has_inc: bool,
    expire_secs: u32,
    finished: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(client: Client, user: Vec<u8>) -> Transaction {
        let id = client.next_transaction_id();
        Transaction {
            client,
            id,
            user,
            batch: Vec::new(),
            changed: false,
            has_changes: false,
            has_timestamp: false,
            has_inc: false,
            expire_secs: 0,
            finished: false,
        }
    }

    /// The transaction id (unique per client, counting from 1).
    pub fn id(&self) -> TransactionId {
        self.id
    }

    fn push(&mut self, line: Request<'static>) -> Result<(), Error> {
        self.changed = true;
        match self.client.protocol() {
            Protocol::V3 => self.client.send(Msg::TxLine {
                id: self.id,
                user: self.user.clone(),
                line,
            }),
            Protocol::V4 => {
                self.batch.push(line);
                Ok(())
            }
        }
    }

    /// `S`: sets `key` to `value`.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
        let key = key.as_ref();
        check_key(key, &self.user)?;
        self.has_changes = true;
        self.push(Request::Set {
            id: self.id,
            key: key.to_vec().into(),
            value: value.as_ref().to_vec().into(),
        })
    }

    /// `U`: removes `key`.
    pub fn unset(&mut self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let key = key.as_ref();
        check_key(key, &self.user)?;
        self.has_changes = true;
        self.push(Request::Unset {
            id: self.id,
            key: key.to_vec().into(),
        })
    }

    /// `A`: adds `diff` to the number at `key`. A missing key makes the commit
    /// [`CommitResult::NotFound`] on SQL and file backends. A diff of 0 sends nothing, as
    /// in Dovecot.
    pub fn inc(&mut self, key: impl AsRef<[u8]>, diff: i64) -> Result<(), Error> {
        let key = key.as_ref();
        check_key(key, &self.user)?;
        if diff == 0 {
            return Ok(());
        }
        self.has_changes = true;
        self.has_inc = true;
        self.push(Request::AtomicInc {
            id: self.id,
            key: key.to_vec().into(),
            diff,
        })
    }

    /// `T`: the write timestamp. Must come before any change, at most once, with
    /// `secs` > 0 (Dovecot 2.3 asserts on anything else).
    pub fn timestamp(&mut self, secs: i64, nsecs: u32) -> Result<(), Error> {
        if self.has_changes || self.has_timestamp {
            return Err(Error::Unsupported(
                "the timestamp must be set once, before any change",
            ));
        }
        if secs <= 0 || nsecs >= 1_000_000_000 {
            return Err(Error::Unsupported(
                "the timestamp must be positive, with nsecs below 10^9",
            ));
        }
        self.has_timestamp = true;
        self.push(Request::Timestamp {
            id: self.id,
            secs,
            nsecs,
        })
    }

    /// `V`: keep values out of the server's logs. Major 4 only: a 2.3.19 server closes the
    /// connection on `V` (it exists from 2.3.21 on).
    pub fn hide_log_values(&mut self, hide: bool) -> Result<(), Error> {
        if self.client.protocol() != Protocol::V4 {
            return Err(Error::Unsupported(
                "hide-log-values needs protocol major 4 (Dovecot 2.4)",
            ));
        }
        self.push(Request::HideLogValues { id: self.id, hide })
    }

    /// Expiry in seconds for the values written (the third field of 2.4's `B`). Major 4 only.
    pub fn set_expire_secs(&mut self, secs: u32) -> Result<(), Error> {
        if self.client.protocol() != Protocol::V4 {
            return Err(Error::Unsupported(
                "expire_secs needs protocol major 4 (Dovecot 2.4)",
            ));
        }
        self.expire_secs = secs;
        Ok(())
    }

    /// Commits and waits for the result. A transaction with no changes is OK without
    /// talking to the server. A connection lost after the commit was sent gives
    /// [`CommitResult::WriteUncertain`]; one lost before gives [`CommitResult::Failed`].
    pub async fn commit(mut self) -> CommitResult {
        self.finished = true;
        if !self.changed {
            return CommitResult::Ok;
        }
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        let msg = match self.client.protocol() {
            Protocol::V3 => Msg::Commit { id: self.id, reply },
            Protocol::V4 => {
                let mut lines = Vec::with_capacity(self.batch.len() + 2);
                lines.push(Request::Begin {
                    id: self.id,
                    username: Some(self.user.clone().into()),
                    expire_secs: Some(self.expire_secs),
                });
                lines.append(&mut self.batch);
                lines.push(Request::Commit { id: self.id });
                Msg::Batch {
                    lines,
                    retryable: !self.has_inc,
                    reply,
                }
            }
        };
        if let Err(e) = self.client.send(msg) {
            return CommitResult::Failed(e.to_string());
        }
        let result = rx
            .await
            .unwrap_or_else(|_| CommitResult::WriteUncertain(Error::ClientGone.to_string()));
        self.client.warn_if_slow("commit", &self.user, started);
        result
    }

    /// Rolls back: `R` if `B` went out (major 3), nothing otherwise.
    pub fn rollback(mut self) {
        self.finish_rollback();
    }

    fn finish_rollback(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.changed && self.client.protocol() == Protocol::V3 {
            let _ = self.client.send(Msg::Rollback { id: self.id });
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.finish_rollback();
    }
}
