//! Iteration: the queries an iteration path plans, one per matching map, and their rows
//! rebuilt into keys and streamed to the client.

use std::sync::Arc;

use dict_config::SqlMap;
use futures::channel::mpsc;
use futures::SinkExt;

use super::dialect::Dialect;
use super::expire::unix_now;
use super::param::{has_non_utf8, is_private, key_params, Param};
use super::pattern::{self, match_path, rebuild_key, MatchKind};
use super::query::{IterMode, Limit, Shape, Sort};
use super::state::DictState;
use super::types::{cell_text, row_values, DbError, NOT_UTF8};
use crate::{DictError, IterRow, IterateOptions};

/// One query of an iteration.
struct IterQuery {
    map: usize,
    consumed: usize,
    rest: usize,
    slash: bool,
    shape: Shape,
    params: Vec<Param>,
    limit: Limit,
}

/// The queries of an iteration over `path`, in map order; an `Err` ends the list (the
/// rows of the queries before it are still returned, as in Dovecot).
fn plan_iterate(
    maps: &[SqlMap],
    path: &[u8],
    username: &[u8],
    opts: &IterateOptions,
) -> Vec<Result<IterQuery, String>> {
    let fail = |e: &str| {
        format!(
            "sql dict iterate failed for {}: {e}",
            String::from_utf8_lossy(path)
        )
    };
    let private = is_private(path);
    let exact = opts.exact_key && !opts.recurse;
    let sort = if opts.sort_by_key {
        Sort::Key
    } else if opts.sort_by_value {
        Sort::Value
    } else {
        Sort::None
    };
    let mut plans = Vec::new();
    let mut matched = false;
    for (i, map) in maps.iter().enumerate() {
        if private && map.username_field.is_none() {
            continue;
        }
        let pattern = map.normalized_pattern.as_bytes();
        let Some(m) = match_path(pattern, path, opts.recurse) else {
            continue;
        };
        let n = map.fields.len();
        if !opts.recurse && m.values.len() + 1 < n {
            continue;
        }
        matched = true;
        let (mode, bound) = match m.kind {
            MatchKind::Full => (IterMode::Exact, n),
            MatchKind::LastVariable if exact => (IterMode::Exact, n),
            // A catch-all (`priv/$key`) after a map that lists this path: its last
            // variable would take the rest of the path as one key. Dovecot fails the
            // whole iteration here; we list the earlier maps' rows (protocol-spec §9).
            MatchKind::LastVariable if !plans.is_empty() => continue,
            MatchKind::LastVariable => {
                plans.push(Err(fail(&format!(
                    "Key continues past the matched pattern {}",
                    map.normalized_pattern
                ))));
                return plans;
            }
            // EXACT_KEY on a prefix: no row has the path as its key.
            MatchKind::Prefix if exact => return plans,
            MatchKind::Prefix if opts.recurse => (IterMode::Recurse, m.values.len()),
            MatchKind::Prefix => (IterMode::OneLevel, m.values.len()),
        };
        let mut params = match key_params(map, &m.values[..bound]) {
            Ok(p) => p,
            Err(e) => {
                plans.push(Err(fail(&e)));
                return plans;
            }
        };
        if private {
            params.push(Param::Text(username.to_vec()));
        }
        if map.expire_field.is_some() {
            params.push(Param::Int(unix_now()));
        }
        let limit = if n == 0 {
            Limit::One
        } else if opts.max_rows > 0 {
            Limit::Bound
        } else {
            Limit::None
        };
        let shape = Shape::Iterate {
            map: i,
            private,
            bound,
            mode,
            sort,
            no_value: opts.no_value,
            limit,
        };
        plans.push(Ok(IterQuery {
            map: i,
            consumed: m.consumed,
            rest: m.rest,
            slash: m.slash,
            shape,
            params,
            limit,
        }));
        // EXACT_KEY, also with RECURSE: the first map that matches the path only.
        if opts.exact_key {
            break;
        }
    }
    if !matched {
        plans.push(Err(fail("Invalid/unmapped path")));
    }
    plans
}

pub(super) type RowSender = mpsc::Sender<Result<IterRow, DictError>>;

impl DictState {
    /// Feeds the rows of an iteration into `tx`; stops early when the receiver is gone.
    pub async fn iterate_into(
        self: Arc<Self>,
        path: Vec<u8>,
        username: Vec<u8>,
        opts: IterateOptions,
        mut tx: RowSender,
    ) {
        if let Err(e) = self.iterate_to(&path, &username, &opts, &mut tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    /// [`DictState::iterate_into`]; an error is the last thing to send.
    async fn iterate_to(
        &self,
        path: &[u8],
        username: &[u8],
        opts: &IterateOptions,
        tx: &mut RowSender,
    ) -> Result<(), DictError> {
        const FAILED: &str = "dict sql iterate failed: ";
        let queries = self
            .queries(self.deadline())
            .await
            .map_err(|e| e.context(FAILED))?;
        let mut sent: u64 = 0;
        for plan in plan_iterate(&self.maps, path, username, opts) {
            let q = plan.map_err(DictError::refused)?;
            if opts.max_rows > 0 && sent >= opts.max_rows {
                return Ok(());
            }
            let mut params = q.params.clone();
            if q.limit == Limit::Bound {
                params.push(Param::Int(
                    i64::try_from(opts.max_rows - sent).unwrap_or(i64::MAX),
                ));
            }
            if queries.dialect == Dialect::Postgres && has_non_utf8(params.iter()) {
                return Err(DictError::refused(format!("{FAILED}{NOT_UTF8}")));
            }
            let sql = queries.sql(&q.shape);
            match self.run_iter_query(path, opts, &q, &sql, &params, tx).await {
                Ok(Some(rows)) => sent += rows,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.context(FAILED)),
            }
        }
        Ok(())
    }

    /// Runs one query of an iteration; the number of rows sent, or `None` when the
    /// receiver went away. A connection failure before the first row is retried.
    async fn run_iter_query(
        &self,
        path: &[u8],
        opts: &IterateOptions,
        q: &IterQuery,
        sql: &str,
        params: &[Param],
        tx: &mut RowSender,
    ) -> Result<Option<u64>, DbError> {
        let map = &self.maps[q.map];
        let pattern = map.normalized_pattern.as_bytes();
        let m = pattern::PathMatch {
            values: Vec::new(),
            consumed: q.consumed,
            rest: q.rest,
            slash: q.slash,
            kind: MatchKind::Prefix,
        };
        let key_fields = m.rest_vars(pattern);
        let selected_keys = match &q.shape {
            Shape::Iterate { bound, .. } if *bound == map.fields.len() => map.fields.len().min(1),
            Shape::Iterate { bound, .. } => map.fields.len() - bound,
            _ => 0,
        };
        self.send_rows(sql, params, tx, |cells| {
            let mut cells = cells.into_iter();
            let values = if opts.no_value {
                vec![Vec::new()]
            } else {
                row_values(map, &mut cells)
            };
            let first_key = map.fields.len() - selected_keys;
            let keys: Vec<Option<Vec<u8>>> = map.fields[first_key..]
                .iter()
                .map(|f| cells.next().and_then(|c| cell_text(c, f.value_type)))
                .collect();
            // The rest of the pattern names the last `key_fields` selected columns.
            let keys = &keys[keys.len().saturating_sub(key_fields)..];
            let key = rebuild_key(path, pattern, &m, keys);
            Some(IterRow { key, values })
        })
        .await
    }
}
