//! Reads, retried on a fresh connection when a pooled one turns out to be dead: the
//! first row of a lookup, and the rows of an iteration or scan streamed into a channel.

use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use futures::SinkExt;
use tokio::time::{timeout_at, Instant};

use super::param::Param;
use super::state::{DictState, MAX_RETRIES};
use super::types::{Cell, DbError};
use crate::DictError;

/// Rows an iteration may have produced but the client not yet read.
const ITER_BUFFER: usize = 16;

/// The rows a task started on the current runtime sends, as a stream; the channel holds
/// [`ITER_BUFFER`] rows, so a slow reader holds the query back.
pub(super) fn spawn_rows<T, F>(
    what: &str,
    produce: impl FnOnce(mpsc::Sender<Result<T, DictError>>) -> F,
) -> BoxStream<'static, Result<T, DictError>>
where
    T: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        let e = DictError::new(format!("sql dict {what}: no async runtime"));
        return futures::stream::once(async move { Err(e) }).boxed();
    };
    let (tx, rx) = mpsc::channel(ITER_BUFFER);
    runtime.spawn(produce(tx));
    rx.boxed()
}

impl DictState {
    /// The first row of a read, retried on a fresh connection when the connection (not
    /// the statement) failed.
    pub async fn read_first(
        &self,
        sql: &str,
        params: &[Param],
        deadline: Instant,
    ) -> Result<Option<Vec<Cell>>, DbError> {
        if let Some(lookups) = self.db.sqlite_lookups() {
            return lookups.first_row(sql, params);
        }
        let rows = self.read_rows(sql, params, deadline, false).await?;
        Ok(rows.into_iter().next())
    }

    /// The rows of a read (`all`: every row, else only the first), retried on a fresh
    /// connection when the connection (not the statement) failed. MySQL and PostgreSQL.
    pub async fn read_rows(
        &self,
        sql: &str,
        params: &[Param],
        deadline: Instant,
        all: bool,
    ) -> Result<Vec<Vec<Cell>>, DbError> {
        let mut retries = 0;
        loop {
            let mut conn = self.db.acquire(false, deadline).await?;
            let read = async {
                if all {
                    conn.fetch(sql, params).try_collect().await
                } else {
                    conn.fetch_first(sql, params)
                        .await
                        .map(|row| row.into_iter().collect())
                }
            };
            let result = match timeout_at(deadline, read).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout(self.timeout)),
            };
            match result {
                Err(e) if e.is_connection() => {
                    conn.discard();
                    if retries == MAX_RETRIES || matches!(e, DbError::Timeout(_)) {
                        return Err(e);
                    }
                    retries += 1;
                }
                Ok(rows) => {
                    self.db.release(conn);
                    return Ok(rows);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs a read and sends what `row` makes of each row (`None`: nothing) into `tx` as
    /// rows arrive; returns the number sent, or `None` when the receiver went away. Each
    /// row must come within the timeout. A connection failure before the first row is
    /// retried on a fresh connection (the database restarted and the pooled one is dead);
    /// after it, the error is returned.
    pub async fn send_rows<T>(
        &self,
        sql: &str,
        params: &[Param],
        tx: &mut mpsc::Sender<Result<T, DictError>>,
        mut row: impl FnMut(Vec<Cell>) -> Option<T>,
    ) -> Result<Option<u64>, DbError> {
        let mut sent = 0u64;
        let mut retries = 0;
        'attempt: loop {
            let mut conn = self.db.acquire(false, self.deadline()).await?;
            let mut rows = conn.fetch(sql, params);
            let mut first = true;
            loop {
                let next = match tokio::time::timeout(self.timeout, rows.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        drop(rows);
                        conn.discard();
                        return Err(DbError::Timeout(self.timeout));
                    }
                };
                match next {
                    None => {
                        drop(rows);
                        self.db.release(conn);
                        return Ok(Some(sent));
                    }
                    Some(Ok(cells)) => {
                        first = false;
                        if let Some(item) = row(cells) {
                            if tx.send(Ok(item)).await.is_err() {
                                return Ok(None);
                            }
                            sent += 1;
                        }
                    }
                    Some(Err(e)) => {
                        drop(rows);
                        if e.is_connection() {
                            conn.discard();
                            if first && retries < MAX_RETRIES && !matches!(e, DbError::Timeout(_)) {
                                retries += 1;
                                continue 'attempt;
                            }
                        }
                        return Err(e);
                    }
                }
            }
        }
    }
}
