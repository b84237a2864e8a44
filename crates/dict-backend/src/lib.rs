//! Dict backends behind one trait, [`Dict`]. A backend knows keys, values and transactions;
//! it never sees protocol framing. The server validates keys (`priv/` needs a username,
//! nothing outside `priv/` and `shared/`) before they reach a backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use dict_backend::{Change, CommitResult, Dict, MemoryDict, Transaction};
//!
//! // The in-memory backend, as the unit tests use it; SQL and Redis dicts behave the same
//! // behind the trait (see `dict_backend::open`).
//! let dict = MemoryDict::new();
//! let txn = Transaction {
//!     username: b"alice".to_vec(),
//!     changes: vec![Change::Set {
//!         key: b"priv/quota/storage".to_vec(),
//!         value: b"1024".to_vec(),
//!     }],
//!     ..Default::default()
//! };
//! assert_eq!(dict.commit(txn).await, CommitResult::Ok);
//! let values = dict.lookup(b"priv/quota/storage", b"alice").await.unwrap();
//! assert_eq!(values, Some(vec![b"1024".to_vec()]));
//! # }
//! ```

mod error;
pub mod file;
mod memory;
pub mod redis;
pub mod sql;
mod transaction;

pub use error::{DictError, ErrorKind};
pub use memory::MemoryDict;
pub use transaction::{Change, Transaction};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

/// The key namespace rule lives with the protocol; backends and the server share it.
pub use dict_protocol::namespace::{key_namespace, Namespace, PRIV_PREFIX, SHARED_PREFIX};

/// Iterate flags as the backend sees them (the protocol's bits, decoded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IterateOptions {
    /// Include every deeper level, not only the next one.
    pub recurse: bool,
    /// Sort rows by key.
    pub sort_by_key: bool,
    /// Sort rows by value (when not sorting by key).
    pub sort_by_value: bool,
    /// Keys only: rows come back with one empty value.
    pub no_value: bool,
    /// Only the row whose key equals the path.
    pub exact_key: bool,
    /// Stop after this many rows (0: no limit).
    pub max_rows: u64,
}

impl IterateOptions {
    /// The row of a single-value store (memory, file): `value`, or one empty value when
    /// the caller asked for keys only.
    pub(crate) fn row(&self, key: Vec<u8>, value: &[u8]) -> IterRow {
        let value = if self.no_value {
            Vec::new()
        } else {
            value.to_vec()
        };
        IterRow {
            key,
            values: vec![value],
        }
    }

    /// Orders rows that came sorted by key as asked, and keeps at most `max_rows`.
    pub(crate) fn finish(&self, rows: &mut Vec<IterRow>) {
        if self.sort_by_value && !self.sort_by_key {
            rows.sort_by(|a, b| a.values.cmp(&b.values));
        }
        if self.max_rows > 0 {
            rows.truncate(usize::try_from(self.max_rows).unwrap_or(usize::MAX));
        }
    }
}

/// One iteration row: the full key and its values (one per value column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterRow {
    /// The full key, e.g. `shared/kv/a/b`.
    pub key: Vec<u8>,
    /// Values; a single empty value when the caller asked for no values.
    pub values: Vec<Vec<u8>>,
}

/// One user's values of a `priv/` key, from [`Dict::scan_users`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserValues {
    /// The username the values belong to.
    pub username: Vec<u8>,
    /// What a lookup of the key by this user returns.
    pub values: Vec<Vec<u8>>,
}

/// What a commit did, as Dovecot's commit results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Everything was written.
    Ok,
    /// Written, but an atomic increment found no row to change.
    NotFound,
    /// Nothing was written; the text says why.
    Failed(String),
    /// The outcome is unknown (the backend went away during the commit).
    WriteUncertain(String),
}

/// The text Dovecot uses when a backend lacks an operation.
pub const UNSUPPORTED: &str = "Unsupported operation (dict does not support this feature)";

/// A configured dict: one object per dict name, shared by all connections using that name,
/// so backends pool their own connections.
#[async_trait]
pub trait Dict: Send + Sync + 'static {
    /// All values of `key` (several for multi-column maps), or `None` when there is no such key.
    /// `username` is empty for `shared/` keys.
    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError>;

    /// Whether a lookup's future waits only for its own answer, so that one left unpolled
    /// for a while (its connection waiting to write to a client that does not read) holds
    /// up no other request. The server runs such lookups inside their connection's task,
    /// without a task of their own. Not where one lookup may carry others' (SQL lookups
    /// sent together across connections), nor where a request waits for room in a queue
    /// it shares with others (redis-rs' bounded request channel: an unpolled sender keeps
    /// the room it is given): the default.
    fn lookups_stand_alone(&self) -> bool {
        false
    }

    /// Rows under `path`. The stream ends after the last row or after the first error.
    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>>;

    /// Applies all changes of `txn` atomically where the backend can, in order.
    async fn commit(&self, txn: Transaction) -> CommitResult;

    /// Every user's values of the `priv/` key `key`, in no particular order: for each user
    /// that has the key, what that user's lookup of it returns. The protocol cannot ask
    /// this (a connection only sees its own user's keys); exports such as `quota-clone
    /// export` read the backend directly with it. The default: unsupported.
    fn scan_users(&self, key: &[u8]) -> BoxStream<'static, Result<UserValues, DictError>> {
        let _ = key;
        futures::stream::once(futures::future::ready(Err(DictError::unsupported(
            UNSUPPORTED,
        ))))
        .boxed()
    }

    /// Checks that the backend is reachable and its tables look right; used at start-up and
    /// by the config check. The default has nothing to check.
    async fn check(&self) -> Result<(), DictError> {
        Ok(())
    }
}

/// Opens the backend `spec` names: SQL databases and Redis are connected to on first use
/// (SQLite opens its file now), so this succeeds while a database server is down; a
/// `file:` dict reads its file on first use.
/// `sql` tunes SQL dicts; a Redis dict takes its timeout from its own parameters.
pub async fn open(
    spec: dict_config::DictSpec,
    sql: sql::SqlOptions,
) -> Result<std::sync::Arc<dyn Dict>, DictError> {
    Ok(match spec {
        dict_config::DictSpec::Sql { driver, map_file } => {
            std::sync::Arc::new(sql::SqlDict::connect(driver, map_file, sql).await?)
        }
        dict_config::DictSpec::Redis(params) => {
            std::sync::Arc::new(redis::RedisDict::connect(&params)?)
        }
        dict_config::DictSpec::File(params) => std::sync::Arc::new(file::FileDict::new(params)),
    })
}
