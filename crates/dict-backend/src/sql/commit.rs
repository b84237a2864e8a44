//! A dict transaction turned into the statements of one SQL transaction
//! (protocol-spec, SQL dict notes).
//!
//! As in Dovecot, changes keep their order; consecutive sets of the same row (same table,
//! namespace, username column, key columns and key values) become one INSERT, consecutive
//! increments of the same row one UPDATE; an unset deletes the whole row. The first
//! unmapped key or badly typed value fails the commit before anything is sent.
//!
//! Where we differ from Dovecot 2.3.19:
//! * An unset of a key that a later set in the same transaction writes again (with no
//!   increment of that key between them) is dropped. Dovecot 2.4's quota_clone_unset sends
//!   `U storage, S storage, U messages, S messages`; Dovecot's own dict-sql then deletes the
//!   row after writing storage and loses it (protocol-spec, SQL dict notes). Here both values end up written. The
//!   price: other columns of that row keep their values instead of being reset.
//! * Setting (or incrementing) the same column twice in one merged statement keeps the last
//!   value (adds the increments) instead of naming the column twice, which the databases
//!   refuse or resolve arbitrarily.
//! * A `shared/` map without variables is written with UPDATE and, when that changed no
//!   row, INSERT (Dovecot produced `ON CONFLICT ()`, a syntax error).

use crate::Change;

use super::dialect::Dialect;
use super::param::{find_map, is_private, key_params, typed_param, Param};
use super::query::{Queries, Shape};
use super::types::{Exec, Fold};

enum Item {
    /// A set's value, already checked against its map's value type.
    Value(Param),
    Diff(i64),
}

/// Consecutive sets or increments waiting to become one statement.
struct Batch {
    private: bool,
    first_key: Vec<u8>,
    first_map: usize,
    vars: Vec<Vec<u8>>,
    /// Changes merged in (for the error text).
    count: usize,
    /// The first value that failed its type check, also when a later set of the same
    /// column replaced it (Dovecot checks every value): the batch fails when flushed.
    error: Option<String>,
    /// One per value column: the map that names it and the value or diff.
    items: Vec<(usize, Item)>,
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// The statements for `changes`, or the text of the first error. Empty when nothing needs
/// writing.
#[cfg(test)]
pub(crate) fn plan(q: &Queries, username: &[u8], changes: &[Change]) -> Result<Vec<Exec>, String> {
    plan_expiring(q, username, None, changes)
}

/// [`plan`] for a transaction whose values expire at `expire_at` (Unix seconds; from the
/// 2.4 `B` command's expire_secs): sets of a map with `expire_field` write it there, and
/// NULL (never expires) when the transaction has no expiry. Dovecot 2.4 leaves the column
/// untouched then, so a value set again without expiry kept the old expiry time (and an
/// expired one stayed invisible); here setting a value without expiry makes it permanent.
/// Increments and unsets don't touch the column, as in Dovecot.
pub(crate) fn plan_expiring(
    q: &Queries,
    username: &[u8],
    expire_at: Option<i64>,
    changes: &[Change],
) -> Result<Vec<Exec>, String> {
    let maps = &q.maps;
    let elided = elided_unsets(changes);
    let mut steps = Vec::new();
    let mut sets: Option<Batch> = None;
    let mut incs: Option<Batch> = None;
    for (i, change) in changes.iter().enumerate() {
        match change {
            Change::Set { key, value } => {
                if let Some(b) = incs.take() {
                    steps.push(flush_incs(q, username, b)?);
                }
                let (m, vars) = find_map(maps, key)
                    .ok_or_else(|| format!("sql dict set: Invalid/unmapped key: {}", lossy(key)))?;
                let private = is_private(key);
                if sets
                    .as_ref()
                    .is_some_and(|b| !mergeable(q, b, m, private, &vars))
                {
                    steps.push(flush_sets(
                        q,
                        username,
                        expire_at,
                        sets.take().expect("checked"),
                    )?);
                }
                let batch = sets.get_or_insert_with(|| Batch::new(key, m, private, &vars));
                batch.count += 1;
                let value = match typed_param(&maps[m], maps[m].value_types[0], "value", value) {
                    Ok(v) => v,
                    Err(e) => {
                        batch.error.get_or_insert(e);
                        continue;
                    }
                };
                let column = &maps[m].value_fields[0];
                match batch
                    .items
                    .iter_mut()
                    .find(|(bm, _)| maps[*bm].value_fields[0] == *column)
                {
                    Some(item) => *item = (m, Item::Value(value)),
                    None => batch.items.push((m, Item::Value(value))),
                }
            }
            Change::Unset { key } => {
                if elided[i] {
                    continue;
                }
                if let Some(b) = incs.take() {
                    steps.push(flush_incs(q, username, b)?);
                }
                if let Some(b) = sets.take() {
                    steps.push(flush_sets(q, username, expire_at, b)?);
                }
                let (m, vars) = find_map(maps, key)
                    .ok_or_else(|| format!("dict-sql: Invalid/unmapped key: {}", lossy(key)))?;
                let private = is_private(key);
                let mut params = key_params(&maps[m], &vars)
                    .map_err(|e| format!("dict-sql: Failed to delete {}: {e}", lossy(key)))?;
                if private {
                    params.push(Param::Text(username.to_vec()));
                }
                let base = Shape::Delete { map: m, private };
                // The WHERE compares exactly these values, one column each.
                let columns =
                    maps[m].fields.len() + usize::from(private && maps[m].username_field.is_some());
                let fold = (columns == params.len() && columns > 0).then(|| Fold {
                    base: base.clone(),
                    row: columns,
                    key: (0..columns).collect(),
                });
                steps.push(Exec::Run {
                    sql: q.sql(&base),
                    params,
                    count: false,
                    fold,
                });
            }
            Change::Inc { key, diff } => {
                // lib-dict drops a zero increment before the backend sees it.
                if *diff == 0 {
                    continue;
                }
                if let Some(b) = sets.take() {
                    steps.push(flush_sets(q, username, expire_at, b)?);
                }
                let (m, vars) = find_map(maps, key).ok_or_else(|| {
                    format!("sql dict atomic inc: Invalid/unmapped key: {}", lossy(key))
                })?;
                let private = is_private(key);
                let column = &maps[m].value_fields[0];
                let fits = |b: &Batch| {
                    mergeable(q, b, m, private, &vars)
                        && b.items.iter().all(|(bm, item)| match item {
                            Item::Diff(d) if maps[*bm].value_fields[0] == *column => {
                                d.checked_add(*diff).is_some()
                            }
                            _ => true,
                        })
                };
                if incs.as_ref().is_some_and(|b| !fits(b)) {
                    steps.push(flush_incs(q, username, incs.take().expect("checked"))?);
                }
                let batch = incs.get_or_insert_with(|| Batch::new(key, m, private, &vars));
                batch.count += 1;
                match batch
                    .items
                    .iter_mut()
                    .find(|(bm, _)| maps[*bm].value_fields[0] == *column)
                {
                    Some((_, Item::Diff(d))) => *d += *diff,
                    _ => batch.items.push((m, Item::Diff(*diff))),
                }
            }
        }
    }
    if let Some(b) = incs.take() {
        steps.push(flush_incs(q, username, b)?);
    }
    if let Some(b) = sets.take() {
        steps.push(flush_sets(q, username, expire_at, b)?);
    }
    Ok(steps)
}

/// Which unsets to drop: those whose key a later set writes again, with no increment of
/// that key in between.
fn elided_unsets(changes: &[Change]) -> Vec<bool> {
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let Change::Unset { key } = c else {
                return false;
            };
            for later in &changes[i + 1..] {
                match later {
                    Change::Set { key: k, .. } if k == key => return true,
                    Change::Inc { key: k, diff } if k == key && *diff != 0 => return false,
                    _ => {}
                }
            }
            false
        })
        .collect()
}

impl Batch {
    fn new(key: &[u8], map: usize, private: bool, vars: &[&[u8]]) -> Batch {
        Batch {
            private,
            first_key: key.to_vec(),
            first_map: map,
            vars: vars.iter().map(|v| v.to_vec()).collect(),
            count: 0,
            error: None,
            items: Vec::new(),
        }
    }
}

/// Can a change of `map` with these key values join `batch` (the same row)?
fn mergeable(q: &Queries, batch: &Batch, map: usize, private: bool, vars: &[&[u8]]) -> bool {
    let (a, b) = (&q.maps[batch.first_map], &q.maps[map]);
    a.table == b.table
        && a.expire_field == b.expire_field
        && batch.private == private
        && (!private || a.username_field == b.username_field)
        && a.fields
            .iter()
            .map(|f| &f.column)
            .eq(b.fields.iter().map(|f| &f.column))
        && batch
            .vars
            .iter()
            .map(Vec::as_slice)
            .eq(vars.iter().copied())
}

fn flush_sets(
    q: &Queries,
    username: &[u8],
    expire_at: Option<i64>,
    b: Batch,
) -> Result<Exec, String> {
    let fail = |e: String| {
        format!(
            "dict-sql: Failed to set {} fields (first {}): {e}",
            b.count,
            lossy(&b.first_key)
        )
    };
    if let Some(e) = &b.error {
        return Err(fail(e.clone()));
    }
    let maps: Vec<usize> = b.items.iter().map(|(m, _)| *m).collect();
    let values: Vec<Param> = b
        .items
        .iter()
        .map(|(_, item)| match item {
            Item::Value(v) => v.clone(),
            Item::Diff(_) => unreachable!("sets hold values"),
        })
        .collect();
    let first = &q.maps[b.first_map];
    let expire = first
        .expire_field
        .as_ref()
        .map(|_| expire_at.map_or(Param::NullInt, Param::Int));
    if first.fields.is_empty() && !b.private {
        let mut values = values;
        values.extend(expire);
        return Ok(Exec::UpdateElseInsert {
            update: q.sql(&Shape::UpdateAll { maps: maps.clone() }),
            update_params: values.clone(),
            insert: q.sql(&Shape::Insert { maps }),
            insert_params: values,
        });
    }
    let mut params = values.clone();
    if b.private {
        params.push(Param::Text(username.to_vec()));
    }
    let user_end = params.len();
    params.extend(expire.clone());
    let fields_start = params.len();
    params.extend(key_params(first, &b.vars).map_err(fail)?);
    let row = params.len();
    if q.dialect == Dialect::Mysql {
        params.extend(values);
        params.extend(expire);
    }
    let base = Shape::Upsert {
        maps,
        private: b.private,
    };
    // The row's key: the username (when the INSERT names its column), then the fields.
    let fold = (!b.private || first.username_field.is_some()).then(|| Fold {
        base: base.clone(),
        row,
        key: (b.items.len()..user_end).chain(fields_start..row).collect(),
    });
    Ok(Exec::Run {
        sql: q.sql(&base),
        params,
        count: false,
        fold,
    })
}

fn flush_incs(q: &Queries, username: &[u8], mut b: Batch) -> Result<Exec, String> {
    let fail = |e: String| {
        format!(
            "dict-sql: Failed to increase {} fields (first {}): {e}",
            b.count,
            lossy(&b.first_key)
        )
    };
    let key = key_params(&q.maps[b.first_map], &b.vars).map_err(fail)?;
    if q.dialect == Dialect::Mysql {
        // Increments that cancel out change nothing, and MySQL counts changed rows (as
        // Dovecot's statements show: `SET v=v+5,v=v+-5` is NOTFOUND there).
        b.items.retain(|(_, item)| !matches!(item, Item::Diff(0)));
        if b.items.is_empty() {
            return Ok(Exec::Unchanged);
        }
    }
    let maps: Vec<usize> = b.items.iter().map(|(m, _)| *m).collect();
    let mut params: Vec<Param> = b
        .items
        .iter()
        .map(|(_, item)| match item {
            Item::Diff(d) => Param::Int(*d),
            Item::Value(_) => unreachable!("increments hold diffs"),
        })
        .collect();
    params.extend(key);
    if b.private {
        params.push(Param::Text(username.to_vec()));
    }
    Ok(Exec::Run {
        sql: q.sql(&Shape::Inc {
            maps,
            private: b.private,
        }),
        params,
        count: true,
        fold: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dict_config::SqlMapFile;

    use super::*;
    use crate::sql::dialect::Catalog;

    const MAPS: &str = "connect = x\n\
        map {\n pattern = priv/quota/storage\n table = quota\n username_field = username\n value_field = bytes\n value_type = uint\n}\n\
        map {\n pattern = priv/quota/messages\n table = quota\n username_field = username\n value_field = messages\n value_type = uint\n}\n\
        map {\n pattern = shared/kv/$scope/$name\n table = kv\n value_field = value\n fields {\n scope = $scope\n name = $name\n }\n}\n\
        map {\n pattern = shared/single\n table = single\n value_field = v\n}\n";

    fn q() -> Queries {
        let maps = SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/m.conf")
            .unwrap()
            .maps;
        Queries::new(Dialect::Sqlite, Arc::from(maps), Catalog::default())
    }

    fn set(k: &str, v: &str) -> Change {
        Change::Set {
            key: k.into(),
            value: v.into(),
        }
    }
    fn unset(k: &str) -> Change {
        Change::Unset { key: k.into() }
    }
    fn inc(k: &str, d: i64) -> Change {
        Change::Inc {
            key: k.into(),
            diff: d,
        }
    }

    /// (sql, params) of each step, for comparison.
    fn sqls(steps: &[Exec]) -> Vec<(String, Vec<Param>)> {
        steps
            .iter()
            .map(|s| match s {
                Exec::Run { sql, params, .. } => (sql.to_string(), params.clone()),
                Exec::UpdateElseInsert {
                    update,
                    update_params,
                    insert,
                    ..
                } => (format!("{update} / {insert}"), update_params.clone()),
                Exec::Unchanged => ("unchanged".into(), Vec::new()),
            })
            .collect()
    }

    #[test]
    fn consecutive_sets_merge() {
        let steps = plan(
            &q(),
            b"u",
            &[
                set("priv/quota/storage", "1"),
                set("priv/quota/messages", "2"),
            ],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps),
            vec![(
                "INSERT INTO quota (bytes,messages,username) VALUES (?,?,CAST(? AS TEXT)) ON CONFLICT (username) DO UPDATE SET bytes=excluded.bytes,messages=excluded.messages".into(),
                vec![Param::Int(1), Param::Int(2), Param::Text(b"u".to_vec())]
            )]
        );
        // different key values: two statements; the same column twice: the last wins
        let steps = plan(
            &q(),
            b"",
            &[
                set("shared/kv/a/b", "1"),
                set("shared/kv/a/c", "2"),
                set("shared/kv/a/c", "3"),
            ],
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            sqls(&steps)[1].1,
            vec![
                Param::Text(b"3".to_vec()),
                Param::Text(b"a".to_vec()),
                Param::Text(b"c".to_vec())
            ]
        );
    }

    #[test]
    fn unset_then_set_keeps_both_values() {
        let changes = [
            unset("priv/quota/storage"),
            set("priv/quota/storage", "10"),
            unset("priv/quota/messages"),
            set("priv/quota/messages", "2"),
        ];
        let steps = plan(&q(), b"u", &changes).unwrap();
        assert_eq!(sqls(&steps).len(), 1);
        assert_eq!(
            sqls(&steps)[0].1,
            vec![Param::Int(10), Param::Int(2), Param::Text(b"u".to_vec())]
        );
        // an unset not followed by a set of its key stays
        let steps = plan(
            &q(),
            b"u",
            &[set("priv/quota/storage", "1"), unset("priv/quota/messages")],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps)[1].0,
            "DELETE FROM quota WHERE username = CAST(? AS TEXT)"
        );
        // an increment in between keeps the unset
        assert_eq!(
            elided_unsets(&[unset("k"), inc("k", 1), set("k", "1")]),
            vec![false, false, false]
        );
        assert_eq!(
            elided_unsets(&[unset("k"), inc("k", 0), set("k", "1")]),
            vec![true, false, false]
        );
    }

    #[test]
    fn increments() {
        let steps = plan(
            &q(),
            b"u",
            &[
                inc("priv/quota/storage", 5),
                inc("priv/quota/messages", -1),
                inc("priv/quota/storage", 0),
            ],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps),
            vec![(
                "UPDATE quota SET bytes=bytes+?,messages=messages+? WHERE username = CAST(? AS TEXT)".into(),
                vec![Param::Int(5), Param::Int(-1), Param::Text(b"u".to_vec())]
            )]
        );
        let steps = plan(
            &q(),
            b"u",
            &[inc("priv/quota/storage", 5), inc("priv/quota/storage", 7)],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps)[0].1,
            vec![Param::Int(12), Param::Text(b"u".to_vec())]
        );
        assert!(plan(&q(), b"u", &[inc("priv/nomap", 0)])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(
            plan(&q(), b"", &[set("shared/nomap/x", "v")]).unwrap_err(),
            "sql dict set: Invalid/unmapped key: shared/nomap/x"
        );
        assert_eq!(
            plan(&q(), b"", &[unset("shared/nomap/x")]).unwrap_err(),
            "dict-sql: Invalid/unmapped key: shared/nomap/x"
        );
        assert_eq!(
            plan(&q(), b"", &[inc("priv/quota/nokey", 5)]).unwrap_err(),
            "sql dict atomic inc: Invalid/unmapped key: priv/quota/nokey"
        );
        assert_eq!(
            plan(&q(), b"u", &[set("priv/quota/storage", "abc"), set("priv/quota/messages", "1")]).unwrap_err(),
            "dict-sql: Failed to set 2 fields (first priv/quota/storage): value field's value isn't 64bit unsigned integer: abc (in pattern: priv/quota/storage)"
        );
        // an unmapped set before the bad set is flushed wins, as in Dovecot
        assert_eq!(
            plan(
                &q(),
                b"u",
                &[set("priv/quota/storage", "abc"), set("shared/nomap", "1")]
            )
            .unwrap_err(),
            "sql dict set: Invalid/unmapped key: shared/nomap"
        );
    }

    #[test]
    fn a_bad_value_fails_also_when_a_later_set_replaces_it() {
        let bad = "dict-sql: Failed to set 2 fields (first priv/quota/storage): value field's value isn't 64bit unsigned integer: abc (in pattern: priv/quota/storage)";
        let changes = [
            set("priv/quota/storage", "abc"),
            set("priv/quota/storage", "5"),
        ];
        assert_eq!(plan(&q(), b"u", &changes).unwrap_err(), bad);
        let changes = [
            set("priv/quota/storage", "5"),
            set("priv/quota/storage", "abc"),
        ];
        assert_eq!(plan(&q(), b"u", &changes).unwrap_err(), bad);
    }

    #[test]
    fn mysql_increments_that_cancel_out_are_notfound() {
        let maps = SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/m.conf")
            .unwrap()
            .maps;
        let mysql = Queries::new(Dialect::Mysql, Arc::from(maps), Catalog::default());
        let steps = plan(
            &mysql,
            b"u",
            &[inc("priv/quota/storage", 5), inc("priv/quota/storage", -5)],
        )
        .unwrap();
        assert!(matches!(steps[..], [Exec::Unchanged]));
        // Only the column that changes is counted: NULL + n stays NULL, no row changed.
        let steps = plan(
            &mysql,
            b"u",
            &[
                inc("priv/quota/storage", 5),
                inc("priv/quota/messages", 1),
                inc("priv/quota/storage", -5),
            ],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps),
            vec![(
                "UPDATE quota SET messages=messages+? WHERE username = ? AND (messages IS NOT NULL)"
                    .into(),
                vec![Param::Int(1), Param::Text(b"u".to_vec())]
            )]
        );
        // Databases that count matched rows run it as it is.
        let steps = plan(
            &q(),
            b"u",
            &[inc("priv/quota/storage", 5), inc("priv/quota/storage", -5)],
        )
        .unwrap();
        assert_eq!(
            sqls(&steps)[0].1,
            vec![Param::Int(0), Param::Text(b"u".to_vec())]
        );
    }

    #[test]
    fn shared_map_without_variables() {
        let steps = plan(&q(), b"", &[set("shared/single", "x")]).unwrap();
        assert_eq!(
            sqls(&steps),
            vec![(
                "UPDATE single SET v=CAST(? AS TEXT) / INSERT INTO single (v) VALUES (CAST(? AS TEXT))".into(),
                vec![Param::Text(b"x".to_vec())]
            )]
        );
    }
}
