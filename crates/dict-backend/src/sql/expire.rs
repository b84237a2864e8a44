//! Dovecot 2.4's `expire_field`: the time sets and reads compare with, and the scan that
//! deletes expired rows every interval while the dict exists.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::timeout_at;

use super::dialect::{Catalog, ParamKind, SqlText};
use super::param::Param;
use super::state::DictState;
use super::types::{DbError, Exec, Phase};
use crate::DictError;

/// The current Unix time in seconds, what `expire_field` values are compared with.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl DictState {
    /// Deletes the rows whose `expire_field` time has passed, in every map that has one:
    /// `DELETE FROM T WHERE E <= <now>`, now in Unix seconds like the values sets write.
    /// (Dovecot 2.4.0–2.4.4's dict-expire binds now in *microseconds* here, so it deletes
    /// every row that has an expiry time at all, expired or not; we don't copy that.)
    pub async fn expire_scan(&self) -> Result<(), DictError> {
        let mut steps = Vec::new();
        let mut seen = BTreeSet::new();
        let catalog = Catalog::default();
        for map in self.maps.iter() {
            let Some(expire) = &map.expire_field else {
                continue;
            };
            if !seen.insert((map.table.as_str(), expire.as_str())) {
                continue;
            }
            let mut sql = SqlText::new(self.db.dialect(), &catalog, &map.table);
            sql.push("DELETE FROM ")
                .push(&map.table)
                .push(" WHERE ")
                .push(expire)
                .push(" <= ")
                .param(ParamKind::Int, None);
            steps.push(Exec::Run {
                sql: sql.finish().into(),
                params: vec![Param::Int(unix_now())],
                count: false,
                fold: None,
            });
        }
        if steps.is_empty() {
            return Ok(());
        }
        let deadline = self.deadline();
        let fail = |e: DbError| e.context("sql dict: expire scan failed: ");
        let mut conn = self.db.acquire(true, deadline).await.map_err(fail)?;
        let mut phase = Phase::Begin;
        match timeout_at(deadline, conn.transaction(&steps, &mut phase)).await {
            Ok(r) => r.map(|_| ()).map_err(fail),
            Err(_) => Err(fail(DbError::Timeout(self.timeout))),
        }
    }
}

/// Runs [`DictState::expire_scan`] every `every` while the dict exists, when one of its
/// maps has an `expire_field` and a tokio runtime is running.
pub(super) fn spawn_expire_scans(state: &Arc<DictState>, every: Duration) {
    if !state.maps.iter().any(|m| m.expire_field.is_some()) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<DictState> = Arc::downgrade(state);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { return };
            if let Err(e) = state.expire_scan().await {
                tracing::warn!(map_file = %state.map_file.display(), "{e}");
            }
        }
    });
}
