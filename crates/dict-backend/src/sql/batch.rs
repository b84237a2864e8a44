//! Commits of several connections applied together on MySQL and PostgreSQL: the group
//! that [`GroupCommit`](super::group::GroupCommit) hands over runs as one database
//! transaction, with as few statements as keep its result. Consecutive one-row upserts
//! of the same shape become one multi-row `INSERT … VALUES (…),(…)`, consecutive
//! deletes of one map one `DELETE … WHERE (…) IN (…)`; the same row twice keeps the
//! later values, as applying them in arrival order would. Everything else (increments,
//! whose NOTFOUND is counted per commit, and the statements between) runs in arrival
//! order. A batch of one statement that counts nothing needs no BEGIN/COMMIT.
//!
//! If the database refuses the batch, its commits are applied again one by one, so a bad
//! commit fails alone. If the connection fails once the batch may have been applied, every
//! commit of it is uncertain (`W`).

use super::group::{fail_all, group_deadline, Job, Outcome};
use super::param::Param;
use super::query::{Queries, Shape};
use super::state::DictState;
use super::types::{DbError, Exec, Fold, Phase};

use tokio::time::timeout_at;

/// A statement of a batch before it is written out.
enum Pending<'a> {
    /// A step of commit `commit`, run as it is.
    One(&'a Exec, usize),
    /// One-row statements of the same shape: their rows, each once, in order.
    Rows {
        fold: &'a Fold,
        first: &'a Exec,
        rows: Vec<&'a [Param]>,
    },
}

/// The statements of `commits` (oldest first) as one batch: each with the commit its
/// NOTFOUND counts for, and the commits with a step known to change nothing.
pub(crate) fn fold(q: &Queries, commits: &[&[Exec]]) -> (Vec<(Exec, usize)>, Vec<bool>) {
    let mut unchanged = vec![false; commits.len()];
    let mut pending: Vec<Pending<'_>> = Vec::new();
    for (i, steps) in commits.iter().enumerate() {
        for step in *steps {
            match step {
                Exec::Unchanged => unchanged[i] = true,
                Exec::Run {
                    fold: Some(f),
                    params,
                    ..
                } => {
                    let row = &params[..f.row];
                    if let Some(Pending::Rows { fold, rows, .. }) = pending.last_mut() {
                        if fold.base == f.base && fold.row == f.row {
                            let key = f.key_of(row);
                            match rows.iter_mut().find(|r| f.key_of(r) == key) {
                                // Both rows write the same columns: the later one wins.
                                Some(earlier) => *earlier = row,
                                None => rows.push(row),
                            }
                            continue;
                        }
                    }
                    pending.push(Pending::Rows {
                        fold: f,
                        first: step,
                        rows: vec![row],
                    });
                }
                other => pending.push(Pending::One(other, i)),
            }
        }
    }
    let statements = pending
        .into_iter()
        .map(|p| match p {
            Pending::One(step, i) => (step.clone(), i),
            // Its own row (not one that replaced it): the statement as it is.
            Pending::Rows {
                first: first @ Exec::Run { params, .. },
                rows,
                ..
            } if rows.len() == 1 && std::ptr::eq(rows[0].as_ptr(), params.as_ptr()) => {
                (first.clone(), 0)
            }
            Pending::Rows { fold, rows, .. } => {
                let shape = Shape::Rows {
                    base: Box::new(fold.base.clone()),
                    rows: rows.len(),
                };
                let run = Exec::Run {
                    sql: q.sql(&shape),
                    params: rows.concat(),
                    count: false,
                    fold: None,
                };
                (run, 0)
            }
        })
        .collect();
    (statements, unchanged)
}

impl DictState {
    /// Applies a group of commits on MySQL or PostgreSQL and tells each caller its
    /// outcome. A commit alone goes out as it is.
    pub(super) async fn apply_batch(&self, q: &Queries, group: Vec<Job>) {
        if group.len() == 1 {
            let job = group.into_iter().next().expect("a group of one");
            let outcome = self.commit_alone(job.steps(), job.deadline()).await;
            job.finish(outcome);
            return;
        }
        let deadline = group_deadline(&group);
        let commits: Vec<&[Exec]> = group.iter().map(Job::steps).collect();
        let (statements, unchanged) = fold(q, &commits);
        tracing::trace!(
            commits = commits.len(),
            statements = statements.len(),
            "sql batch"
        );
        let mut conn = match self.db.acquire(true, deadline).await {
            Ok(c) => c,
            Err(e) => return fail_all(group, &e, false),
        };
        let mut phase = Phase::Begin;
        let run = conn.batch(&statements, commits.len(), &mut phase);
        let result = match timeout_at(deadline, run).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Timeout(self.timeout)),
        };
        match result {
            Ok(missing) => {
                self.db.release(conn);
                for ((job, missing), unchanged) in group.into_iter().zip(missing).zip(unchanged) {
                    job.finish(Outcome::Applied(missing || unchanged));
                }
            }
            Err(e) => {
                let refused = e.is_database() || e.is_refused();
                if !refused {
                    conn.discard();
                }
                drop(conn);
                match phase {
                    // Nothing of it was applied: each commit on its own, with its own
                    // retries, so that a bad one fails alone.
                    _ if refused => self.one_by_one(group).await,
                    Phase::Begin => self.one_by_one(group).await,
                    // The database rolls back what a lost connection left open.
                    Phase::Statements => fail_all(group, &e, false),
                    Phase::Committing | Phase::Repeatable => fail_all(group, &e, true),
                }
            }
        }
    }

    /// Applies the commits of a refused batch each on its own, in arrival order.
    async fn one_by_one(&self, group: Vec<Job>) {
        tracing::debug!(
            commits = group.len(),
            "sql batch refused, applying its commits one by one"
        );
        for job in group {
            let outcome = self.commit_alone(job.steps(), job.deadline()).await;
            job.finish(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dict_config::SqlMapFile;

    use super::*;
    use crate::sql::commit::plan_expiring;
    use crate::sql::dialect::{Catalog, Dialect};
    use crate::Change;

    const MAPS: &str = "connect = x\n\
        map {\n pattern = priv/quota/storage\n table = quota\n username_field = username\n value_field = bytes\n value_type = uint\n}\n\
        map {\n pattern = priv/quota/messages\n table = quota\n username_field = username\n value_field = messages\n value_type = uint\n}\n\
        map {\n pattern = shared/kv/$name\n table = kv\n value_field = value\n fields {\n name = $name\n }\n}\n";

    fn q(dialect: Dialect) -> Queries {
        let maps = SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/m.conf")
            .unwrap()
            .maps;
        Queries::new(dialect, Arc::from(maps), Catalog::default())
    }

    fn set(k: &str, v: &str) -> Change {
        Change::Set {
            key: k.into(),
            value: v.into(),
        }
    }

    /// The statements of commits given as (username, changes), as (sql, params, commit).
    fn batch(q: &Queries, commits: &[(&str, Vec<Change>)]) -> Vec<(String, Vec<Param>, usize)> {
        let planned: Vec<Vec<Exec>> = commits
            .iter()
            .map(|(u, c)| plan_expiring(q, u.as_bytes(), None, c).unwrap())
            .collect();
        let refs: Vec<&[Exec]> = planned.iter().map(Vec::as_slice).collect();
        fold(q, &refs)
            .0
            .into_iter()
            .map(|(e, i)| match e {
                Exec::Run { sql, params, .. } => (sql.to_string(), params, i),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn text(s: &str) -> Param {
        Param::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn upserts_of_one_shape_become_one_statement_and_the_later_row_wins() {
        let q = q(Dialect::Mysql);
        let quota = |bytes: &str, messages: &str| {
            vec![
                set("priv/quota/storage", bytes),
                set("priv/quota/messages", messages),
            ]
        };
        let got = batch(
            &q,
            &[
                ("a", quota("1", "2")),
                ("b", quota("3", "4")),
                ("a", quota("5", "6")),
            ],
        );
        assert_eq!(
            got,
            vec![(
                "INSERT INTO quota (bytes,messages,username) VALUES (?,?,?),(?,?,?) ON DUPLICATE KEY UPDATE bytes=VALUES(bytes),messages=VALUES(messages)".into(),
                vec![Param::Int(5), Param::Int(6), text("a"), Param::Int(3), Param::Int(4), text("b")],
                0
            )]
        );
        // The same row twice: the later one, as one row.
        let got = batch(&q, &[("a", quota("1", "2")), ("a", quota("5", "6"))]);
        assert_eq!(
            got,
            vec![(
                "INSERT INTO quota (bytes,messages,username) VALUES (?,?,?) ON DUPLICATE KEY UPDATE bytes=VALUES(bytes),messages=VALUES(messages)".into(),
                vec![Param::Int(5), Param::Int(6), text("a")],
                0
            )]
        );
        // One commit alone keeps its own statement.
        assert_eq!(
            batch(&q, &[("a", quota("1", "2"))])[0].0,
            "INSERT INTO quota (bytes,messages,username) VALUES (?,?,?) ON DUPLICATE KEY UPDATE bytes=?,messages=?"
        );
    }

    #[test]
    fn other_statements_keep_their_place() {
        let q = q(Dialect::Postgres);
        let unset = |k: &str| Change::Unset { key: k.into() };
        let inc = |k: &str, diff| Change::Inc {
            key: k.into(),
            diff,
        };
        let got = batch(
            &q,
            &[
                ("", vec![set("shared/kv/x", "1")]),
                ("", vec![unset("shared/kv/x"), unset("shared/kv/y")]),
                ("", vec![unset("shared/kv/x")]),
                ("u", vec![inc("priv/quota/storage", 5)]),
                ("", vec![set("shared/kv/x", "2"), set("shared/kv/y", "3")]),
            ],
        );
        let sqls: Vec<(&str, usize)> = got.iter().map(|(s, _, i)| (s.as_str(), *i)).collect();
        assert_eq!(
            sqls,
            vec![
                ("INSERT INTO kv (value,name) VALUES ($1,$2) ON CONFLICT (name) DO UPDATE SET value=excluded.value", 0),
                ("DELETE FROM kv WHERE (name) IN (($1),($2))", 0),
                ("UPDATE quota SET bytes=bytes+$1 WHERE username = $2", 3),
                ("INSERT INTO kv (value,name) VALUES ($1,$2),($3,$4) ON CONFLICT (name) DO UPDATE SET value=excluded.value", 0),
            ]
        );
        assert_eq!(got[1].1, vec![text("x"), text("y")]);
    }
}
