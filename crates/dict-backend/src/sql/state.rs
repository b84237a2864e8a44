//! The state one SQL dict's operations share: its maps, pools, statements and timeout.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dict_config::{SqlDriver, SqlMap};
use tokio::time::{timeout_at, Instant};

use super::dialect::Catalog;
use super::group::GroupCommit;
use super::lookup_queue::LookupBatcher;
use super::pool::Db;
use super::query::Queries;
use super::types::DbError;

/// How often an operation is retried on a fresh connection when a pooled one turns out
/// to be dead (the database restarted) and nothing can have been applied.
pub(super) const MAX_RETRIES: usize = 8;

/// One SQL dict, behind the [`SqlDict`](super::SqlDict) handle.
#[derive(Debug)]
pub(super) struct DictState {
    pub driver: SqlDriver,
    pub map_file: PathBuf,
    pub maps: Arc<[SqlMap]>,
    pub db: Db,
    /// Commits arriving while another is applied wait here and are applied together.
    pub group: GroupCommit,
    /// Lookups arriving while another of their map is in flight wait here and go out
    /// together (MySQL, PostgreSQL).
    pub lookups: LookupBatcher,
    /// Built on first use: PostgreSQL's statements depend on the column types.
    pub queries: tokio::sync::OnceCell<Arc<Queries>>,
    pub timeout: Duration,
}

impl DictState {
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Whether the statements are built and kept: [`DictState::queries`] answers at once.
    pub fn queries_ready(&self) -> bool {
        self.queries.get().is_some()
    }

    /// The statements of this dict. PostgreSQL's depend on the column types, read from
    /// the database on first use; they are kept once every mapped table was found (until
    /// then each operation reads them again, so tables created later are picked up).
    pub async fn queries(&self, deadline: Instant) -> Result<Arc<Queries>, DbError> {
        if let Some(q) = self.queries.get() {
            return Ok(q.clone());
        }
        let load = async {
            let mut conn = self.db.acquire(false, deadline).await?;
            let mut catalog = Catalog::default();
            let mut complete = true;
            let tables: BTreeSet<&str> = self.maps.iter().map(|m| m.table.as_str()).collect();
            for table in tables {
                let info = conn.table_info(table).await?;
                complete &= !info.columns.is_empty();
                catalog.insert(
                    table,
                    info.columns
                        .into_iter()
                        .filter_map(|(c, t)| Some((c, t?)))
                        .collect(),
                );
            }
            Ok::<_, DbError>((
                Arc::new(Queries::new(self.db.dialect(), self.maps.clone(), catalog)),
                complete,
            ))
        };
        let (queries, complete) = match timeout_at(deadline, load).await {
            Ok(r) => r?,
            Err(_) => return Err(DbError::Timeout(self.timeout)),
        };
        if complete {
            let _ = self.queries.set(queries.clone());
        }
        Ok(queries)
    }
}
