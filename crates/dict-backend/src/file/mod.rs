//! Dovecot's `file:` dict: every key and value in one flat file, read whole and cached
//! until the file is replaced, rewritten whole (under a lock) by every commit. Keys are
//! stored as the client sends them: `priv/` keys are not per user, as in Dovecot.
//!
//! The file format is in [`format`], the locking in [`lock`]. File I/O runs on tokio's
//! blocking threads; one mutex per dict keeps our own commits in order.

mod format;
mod lock;

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dict_config::FileParams;
use futures::stream::{self, BoxStream, StreamExt};

use self::format::Entries;
use crate::{Change, CommitResult, Dict, DictError, IterRow, IterateOptions, Transaction};

/// A `file:` dict.
pub struct FileDict {
    params: Arc<FileParams>,
    cache: Arc<Mutex<Cache>>,
}

/// The file's contents as last read, and which file that was.
#[derive(Default)]
struct Cache {
    read_from: Option<Stamp>,
    entries: Entries,
}

/// Identifies one version of the file: a commit replaces the inode; an edit in place
/// changes size or mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

impl Cache {
    /// Reads the file again unless it is the version read last; a missing file is empty.
    fn refresh(&mut self, path: &Path) -> Result<(), String> {
        match File::open(path) {
            Ok(file) => self.load(&file, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.read_from = None;
                self.entries.clear();
                Ok(())
            }
            Err(e) => Err(format!("dict-file: open({}) failed: {e}", path.display())),
        }
    }

    fn load(&mut self, mut file: &File, path: &Path) -> Result<(), String> {
        let io_failed = |e: io::Error| format!("dict-file: read({}) failed: {e}", path.display());
        let stamp = Stamp::of(&file.metadata().map_err(io_failed)?);
        if self.read_from == Some(stamp) {
            return Ok(());
        }
        let mut text = Vec::new();
        file.rewind().map_err(io_failed)?;
        file.read_to_end(&mut text).map_err(io_failed)?;
        self.entries = format::parse(&text);
        self.read_from = Some(stamp);
        Ok(())
    }
}

impl FileDict {
    /// A dict on `params.path`; nothing is read until first used.
    pub fn new(params: FileParams) -> FileDict {
        FileDict {
            params: Arc::new(params),
            cache: Arc::default(),
        }
    }

    /// Runs `f` on the fresh cache on a blocking thread.
    async fn with_cache<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileParams, &mut Cache) -> T + Send + 'static,
    ) -> Result<T, DictError> {
        let (params, cache) = (self.params.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            f(&params, &mut cache)
        })
        .await
        .map_err(|e| DictError::new(format!("dict-file: {e}")))
    }
}

#[async_trait]
impl Dict for FileDict {
    async fn lookup(
        &self,
        key: &[u8],
        _username: &[u8],
    ) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        let key = key.to_vec();
        self.with_cache(move |params, cache| {
            cache.refresh(&params.path)?;
            Ok(cache.entries.get(&key).map(|v| vec![v.clone()]))
        })
        .await?
        .map_err(|e: String| DictError::database(e))
    }

    fn iterate(
        &self,
        path: &[u8],
        _username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let (params, cache, prefix) = (self.params.clone(), self.cache.clone(), path.to_vec());
        let rows = async move {
            let found = tokio::task::spawn_blocking(move || {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.refresh(&params.path)?;
                Ok(matching_rows(&cache.entries, &prefix, options))
            })
            .await
            .map_err(|e| DictError::new(format!("dict-file: {e}")))?
            .map_err(|e: String| DictError::database(e));
            found.map(|rows: Vec<IterRow>| stream::iter(rows.into_iter().map(Ok)))
        };
        stream::once(rows)
            .flat_map(|found| match found {
                Ok(rows) => rows.boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        let changes = txn.changes;
        self.with_cache(move |params, cache| commit_locked(params, cache, changes))
            .await
            .unwrap_or_else(|e| CommitResult::Failed(e.into_message()))
    }

    /// The file must be readable (or not exist yet).
    async fn check(&self) -> Result<(), DictError> {
        self.with_cache(|params, cache| cache.refresh(&params.path))
            .await?
            .map_err(|e: String| DictError::database(e))
    }
}

/// Rows under `prefix`: one level below it unless `recurse`, or only `prefix` itself for
/// `exact_key`.
fn matching_rows(entries: &Entries, prefix: &[u8], options: IterateOptions) -> Vec<IterRow> {
    let mut rows: Vec<IterRow> = entries
        .range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter(|(k, _)| {
            let rest = &k[prefix.len()..];
            if options.recurse {
                true
            } else if options.exact_key {
                rest.is_empty()
            } else {
                !rest.contains(&b'/')
            }
        })
        .map(|(k, v)| options.row(k.clone(), v))
        .collect();
    options.finish(&mut rows);
    rows
}

/// Takes the lock, reads the file once more, applies `changes` and writes it back.
fn commit_locked(params: &FileParams, cache: &mut Cache, changes: Vec<Change>) -> CommitResult {
    let writer = match lock::Writer::begin(&params.path, params.lock) {
        Ok(w) => w,
        Err(e) => return CommitResult::Failed(e),
    };
    let fresh = match writer.locked_file() {
        Some(file) => cache.load(file, &params.path),
        None => cache.refresh(&params.path),
    };
    if let Err(e) = fresh {
        return CommitResult::Failed(e);
    }
    let mut entries = cache.entries.clone();
    let result = match apply(&mut entries, changes) {
        Ok(result) => result,
        Err(e) => return CommitResult::Failed(e),
    };
    match writer.finish(&format::serialize(&entries)) {
        Ok(meta) => {
            cache.entries = entries;
            cache.read_from = Some(Stamp::of(&meta));
            result
        }
        Err(e) => CommitResult::Failed(e),
    }
}

/// Applies the changes in order. An increment of a missing key changes nothing and makes
/// the result "not found", while the other changes are still written (as Dovecot does).
fn apply(entries: &mut Entries, changes: Vec<Change>) -> Result<CommitResult, String> {
    let mut result = CommitResult::Ok;
    for change in changes {
        match change {
            Change::Set { key, value } => {
                entries.insert(key, value);
            }
            Change::Unset { key } => {
                entries.remove(&key);
            }
            Change::Inc { key, diff } => {
                let Some(old) = entries.get_mut(&key) else {
                    result = CommitResult::NotFound;
                    continue;
                };
                // Dovecot's dict-file assumes a number here; a clear error instead.
                let sum = std::str::from_utf8(old)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|n| n.checked_add(diff))
                    .ok_or_else(|| {
                        format!(
                            "dict-file: can't add {diff} to the value of {}: not a number",
                            String::from_utf8_lossy(&key)
                        )
                    })?;
                *old = sum.to_string().into_bytes();
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests;
