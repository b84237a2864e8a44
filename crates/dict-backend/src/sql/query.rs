//! Statement building: the SQL text of each statement shape,
//! built once per map and shape and cached, and the parameters that go with it, in the
//! same order as the placeholders.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dict_config::{SqlMap, ValueType};

use super::dialect::{Catalog, Dialect, ParamKind, SqlText};

fn kind(ty: ValueType) -> ParamKind {
    match ty {
        // A UUID is bound as its text; PostgreSQL casts it to a `uuid` column's type.
        ValueType::String | ValueType::Uuid => ParamKind::Text,
        ValueType::Int | ValueType::Uint => ParamKind::Int,
        ValueType::Double => ParamKind::Double,
        ValueType::Hexblob => ParamKind::Blob,
    }
}

/// Which rows an iteration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IterMode {
    /// All variables bound: `F1 = P … Fn = P`.
    Exact,
    /// The next level only: the iterated column has no `/`.
    OneLevel,
    /// Everything below the bound variables.
    Recurse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Sort {
    None,
    Key,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    None,
    /// `LIMIT 1`: a map without variables names one row.
    One,
    /// `LIMIT ?`: max_rows less the rows already returned.
    Bound,
}

/// The statement shapes; each is built once per dict and cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    Lookup {
        map: usize,
        private: bool,
    },
    /// `lookups` lookups of one map as one statement: each its own `Lookup` as a
    /// branch `(SELECT <i>, … LIMIT 1)` of a `UNION ALL`, `i` telling whose row it is.
    /// The parameters are those of each lookup in turn.
    LookupBatch {
        map: usize,
        private: bool,
        lookups: usize,
    },
    Delete {
        map: usize,
        private: bool,
    },
    /// One merged INSERT; `maps[i]` supplies the i-th value column.
    Upsert {
        maps: Vec<usize>,
        private: bool,
    },
    /// An `Upsert` or a `Delete` of several rows at once (`rows` of them):
    /// `INSERT … VALUES (…),(…)` and `DELETE … WHERE (keys) IN ((…),(…))`. The
    /// parameters are those of each row in turn (see [`Fold`](super::types::Fold)).
    Rows {
        base: Box<Shape>,
        rows: usize,
    },
    /// A shared map without variables: `UPDATE T SET …` (no WHERE) …
    UpdateAll {
        maps: Vec<usize>,
    },
    /// … and when that changed nothing, a plain INSERT.
    Insert {
        maps: Vec<usize>,
    },
    Inc {
        maps: Vec<usize>,
        private: bool,
    },
    /// Every user's values of one key: the values, then the username column.
    Users {
        map: usize,
    },
    Iterate {
        map: usize,
        private: bool,
        bound: usize,
        mode: IterMode,
        sort: Sort,
        no_value: bool,
        limit: Limit,
    },
}

/// The statements of one dict: its maps, dialect and (PostgreSQL) column types.
#[derive(Debug)]
pub(crate) struct Queries {
    pub dialect: Dialect,
    pub maps: Arc<[SqlMap]>,
    catalog: Catalog,
    cache: Mutex<HashMap<Shape, Arc<str>>>,
}

impl Queries {
    pub fn new(dialect: Dialect, maps: Arc<[SqlMap]>, catalog: Catalog) -> Self {
        Queries {
            dialect,
            maps,
            catalog,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The SQL text of `shape`.
    pub fn sql(&self, shape: &Shape) -> Arc<str> {
        if let Some(sql) = self.cache.lock().expect("sql cache lock").get(shape) {
            return sql.clone();
        }
        let sql: Arc<str> = self.build(shape).into();
        self.cache
            .lock()
            .expect("sql cache lock")
            .insert(shape.clone(), sql.clone());
        sql
    }

    fn text<'a>(&'a self, map: &'a SqlMap) -> SqlText<'a> {
        SqlText::new(self.dialect, &self.catalog, &map.table)
    }

    fn build(&self, shape: &Shape) -> String {
        match shape {
            Shape::Lookup { map, private } => {
                let map = &self.maps[*map];
                let mut s = self.text(map);
                s.push("SELECT ");
                self.lookup_rest(&mut s, map, *private);
                if map.fields.is_empty() && !private {
                    // The first row the database returns is the value.
                    s.push(" LIMIT 1");
                }
                s.finish()
            }
            Shape::LookupBatch {
                map,
                private,
                lookups,
            } => {
                let map = &self.maps[*map];
                let mut s = self.text(map);
                for i in 0..*lookups {
                    // Each branch is the single lookup, so the database compares keys
                    // exactly as there (collations, trailing spaces); a lookup takes the
                    // first row, so one row per branch is enough.
                    s.push(if i == 0 {
                        "(SELECT "
                    } else {
                        " UNION ALL (SELECT "
                    })
                    .push(&i.to_string())
                    .push(",");
                    self.lookup_rest(&mut s, map, *private);
                    s.push(" LIMIT 1)");
                }
                s.finish()
            }
            Shape::Users { map } => {
                let map = &self.maps[*map];
                let mut s = self.text(map);
                s.push("SELECT ");
                self.select_values(&mut s, map);
                let username = map.username_field.as_deref().unwrap_or("NULL");
                s.push(",").select(username, false, map.value_fields.len());
                s.push(" FROM ").push(&map.table);
                let wrote =
                    self.where_clause(&mut s, map, map.fields.len(), IterMode::Exact, false);
                self.unexpired(&mut s, map, !wrote);
                s.finish()
            }
            Shape::Delete { map, private } => {
                let map = &self.maps[*map];
                let mut s = self.text(map);
                s.push("DELETE FROM ").push(&map.table);
                let _ = self.where_clause(&mut s, map, map.fields.len(), IterMode::Exact, *private);
                s.finish()
            }
            Shape::Upsert { maps, private } => self.upsert(maps, *private, 1, false),
            Shape::Rows { base, rows } => match base.as_ref() {
                Shape::Upsert { maps, private } => self.upsert(maps, *private, *rows, true),
                Shape::Delete { map, private } => self.delete_rows(*map, *private, *rows),
                other => unreachable!("{other:?} has no form for several rows"),
            },
            Shape::UpdateAll { maps } => {
                let first = &self.maps[maps[0]];
                let mut s = self.text(first);
                s.push("UPDATE ").push(&first.table).push(" SET ");
                for (i, (column, kind)) in self.written(maps).into_iter().enumerate() {
                    if i > 0 {
                        s.push(",");
                    }
                    s.push(column).push("=").param(kind, Some(column));
                }
                s.finish()
            }
            Shape::Insert { maps } => {
                let first = &self.maps[maps[0]];
                let mut s = self.text(first);
                let values = self.written(maps);
                let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
                s.push("INSERT INTO ")
                    .push(&first.table)
                    .push(" (")
                    .push(&columns.join(","))
                    .push(") VALUES (");
                for (i, (column, kind)) in values.into_iter().enumerate() {
                    if i > 0 {
                        s.push(",");
                    }
                    s.param(kind, Some(column));
                }
                s.push(")");
                s.finish()
            }
            Shape::Inc { maps, private } => {
                let first = &self.maps[maps[0]];
                let mut s = self.text(first);
                s.push("UPDATE ").push(&first.table).push(" SET ");
                for (i, &m) in maps.iter().enumerate() {
                    let column = self.maps[m].value_fields[0].as_str();
                    if i > 0 {
                        s.push(",");
                    }
                    s.push(&format!("{column}={column}+"))
                        .param(ParamKind::Int, Some(column));
                }
                let wrote =
                    self.where_clause(&mut s, first, first.fields.len(), IterMode::Exact, *private);
                if self.dialect == Dialect::Mysql {
                    // MySQL counts the rows an UPDATE changed (as Dovecot's client has it):
                    // NULL + n is NULL, so a row whose columns are all NULL counts as not
                    // found. sqlx counts matched rows; this filter counts as Dovecot does.
                    s.push(if wrote { " AND (" } else { " WHERE (" });
                    for (i, &m) in maps.iter().enumerate() {
                        if i > 0 {
                            s.push(" OR ");
                        }
                        s.push(&self.maps[m].value_fields[0]).push(" IS NOT NULL");
                    }
                    s.push(")");
                }
                s.finish()
            }
            Shape::Iterate {
                map,
                private,
                bound,
                mode,
                sort,
                no_value,
                limit,
            } => {
                let map = &self.maps[*map];
                let n = map.fields.len();
                let mut s = self.text(map);
                s.push("SELECT ");
                if !no_value {
                    self.select_values(&mut s, map);
                }
                let first_key = if *bound == n {
                    n.saturating_sub(1)
                } else {
                    *bound
                };
                let mut index = if *no_value { 0 } else { map.value_fields.len() };
                for f in &map.fields[first_key..] {
                    if index > 0 {
                        s.push(",");
                    }
                    s.select(&f.column, f.value_type == ValueType::Hexblob, index);
                    index += 1;
                }
                if index == 0 {
                    // NO_VALUE on a map without variables: select something to count rows.
                    s.push("1");
                }
                s.push(" FROM ").push(&map.table);
                let wrote = self.where_clause(&mut s, map, *bound, *mode, *private);
                self.unexpired(&mut s, map, !wrote);
                match sort {
                    Sort::Key if n > 0 => {
                        let keys: Vec<&str> =
                            map.fields.iter().map(|f| f.column.as_str()).collect();
                        s.push(" ORDER BY ").push(&keys.join(","));
                    }
                    Sort::Value => {
                        s.push(" ORDER BY ").push(&map.value_fields.join(","));
                    }
                    _ => {}
                }
                match limit {
                    Limit::None => {}
                    Limit::One => {
                        s.push(" LIMIT 1");
                    }
                    Limit::Bound => {
                        s.push(" LIMIT ").param(ParamKind::Int, None);
                    }
                }
                s.finish()
            }
        }
    }

    /// A lookup's statement after `SELECT `: the value columns, FROM, WHERE.
    fn lookup_rest(&self, s: &mut SqlText<'_>, map: &SqlMap, private: bool) {
        self.select_values(s, map);
        s.push(" FROM ").push(&map.table);
        let wrote = self.where_clause(s, map, map.fields.len(), IterMode::Exact, private);
        self.unexpired(s, map, !wrote);
    }

    /// `INSERT … VALUES (…)` of `rows` rows, updating the values of a row that exists;
    /// `each_own`: the update takes each row's values (MySQL: `VALUES(v)`), not the
    /// values bound again.
    fn upsert(&self, maps: &[usize], private: bool, rows: usize, each_own: bool) -> String {
        let first = &self.maps[maps[0]];
        let mut s = self.text(first);
        let values = self.first_values(maps);
        let mut columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let username = first.username_field.as_deref().filter(|_| private);
        columns.extend(username);
        columns.extend(first.expire_field.as_deref());
        columns.extend(first.fields.iter().map(|f| f.column.as_str()));
        s.push("INSERT INTO ")
            .push(&first.table)
            .push(" (")
            .push(&columns.join(","))
            .push(") VALUES ");
        for row in 0..rows {
            s.push(if row == 0 { "(" } else { "),(" });
            for (i, (column, kind)) in values.iter().enumerate() {
                if i > 0 {
                    s.push(",");
                }
                s.param(*kind, Some(column));
            }
            if let Some(u) = username {
                s.push(",").param(ParamKind::Text, Some(u));
            }
            if let Some(e) = &first.expire_field {
                s.push(",").param(ParamKind::Int, Some(e));
            }
            for f in &first.fields {
                s.push(",").param(kind(f.value_type), Some(&f.column));
            }
        }
        s.push(")");
        let mut keys: Vec<&str> = first.fields.iter().map(|f| f.column.as_str()).collect();
        keys.extend(username);
        let mut updated = values.clone();
        updated.extend(first.expire_field.as_deref().map(|e| (e, ParamKind::Int)));
        s.upsert_rows(&keys, &updated, each_own);
        s.finish()
    }

    /// `DELETE … WHERE (F1,…,U) IN ((?,…),…)`: the rows of `rows` single deletes (whose
    /// WHERE compares the same columns, in the same order).
    fn delete_rows(&self, map: usize, private: bool, rows: usize) -> String {
        let map = &self.maps[map];
        let mut s = self.text(map);
        let mut columns: Vec<(&str, ParamKind)> = map
            .fields
            .iter()
            .map(|f| (f.column.as_str(), kind(f.value_type)))
            .collect();
        if private {
            columns.extend(map.username_field.as_deref().map(|u| (u, ParamKind::Text)));
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        s.push("DELETE FROM ")
            .push(&map.table)
            .push(" WHERE (")
            .push(&names.join(","))
            .push(") IN (");
        for row in 0..rows {
            s.push(if row == 0 { "(" } else { ",(" });
            for (i, (column, kind)) in columns.iter().enumerate() {
                if i > 0 {
                    s.push(",");
                }
                s.param(*kind, Some(column));
            }
            s.push(")");
        }
        s.push(")");
        s.finish()
    }

    /// The columns a set of a map without variables writes: the value columns, then the
    /// first map's `expire_field`.
    fn written<'a>(&'a self, maps: &[usize]) -> Vec<(&'a str, ParamKind)> {
        let mut columns = self.first_values(maps);
        let first = &self.maps[maps[0]];
        columns.extend(first.expire_field.as_deref().map(|e| (e, ParamKind::Int)));
        columns
    }

    /// Dovecot 2.4's `expire_field`: a read skips rows that expired (`expire <= now`);
    /// NULL never expires. `first` says that no WHERE was written yet. Bound last, after
    /// the username.
    fn unexpired(&self, s: &mut SqlText<'_>, map: &SqlMap, first: bool) {
        if let Some(e) = &map.expire_field {
            s.push(if first { " WHERE (" } else { " AND (" })
                .push(e)
                .push(" IS NULL OR ")
                .push(e)
                .push(" > ")
                .param(ParamKind::Int, Some(e))
                .push(")");
        }
    }

    /// The first value column of each map, with its map's first value type.
    fn first_values<'a>(&'a self, maps: &[usize]) -> Vec<(&'a str, ParamKind)> {
        maps.iter()
            .map(|&m| {
                (
                    self.maps[m].value_fields[0].as_str(),
                    kind(self.maps[m].value_types[0]),
                )
            })
            .collect()
    }

    fn select_values(&self, s: &mut SqlText<'_>, map: &SqlMap) {
        for (i, (column, ty)) in map.value_fields.iter().zip(&map.value_types).enumerate() {
            if i > 0 {
                s.push(",");
            }
            s.select(column, *ty == ValueType::Hexblob, i);
        }
    }

    /// `WHERE F1 = ? AND … AND Fm = ? [AND <one-level filter on Fm+1>] [AND U = ?]`, or
    /// nothing at all when there is nothing to compare.
    fn where_clause(
        &self,
        s: &mut SqlText<'_>,
        map: &SqlMap,
        bound: usize,
        mode: IterMode,
        private: bool,
    ) -> bool {
        let mut first = true;
        let mut and = |s: &mut SqlText<'_>| {
            s.push(if first { " WHERE " } else { " AND " });
            first = false;
        };
        for f in &map.fields[..bound] {
            and(s);
            s.push(&f.column)
                .push(" = ")
                .param(kind(f.value_type), Some(&f.column));
        }
        if mode == IterMode::OneLevel {
            if let Some(f) = map.fields.get(bound) {
                and(s);
                s.one_level_filter(&f.column, f.value_type == ValueType::String);
            }
        }
        if private {
            if let Some(u) = &map.username_field {
                and(s);
                s.push(u).push(" = ").param(ParamKind::Text, Some(u));
            }
        }
        !first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::param::{canonical_uuid, find_map, typed_param, Param};
    use dict_config::SqlMapFile;

    const MAPS: &str = r#"
connect = /tmp/x.db
map {
  pattern = priv/quota/storage
  table = quota
  username_field = username
  value_field = bytes
  value_type = uint
}
map {
  pattern = priv/quota/messages
  table = quota
  username_field = username
  value_field = messages
  value_type = uint
}
map {
  pattern = shared/kv/$scope/$name
  table = kv
  value_field = value
  fields {
    scope = $scope
    name = $name
  }
}
map {
  pattern = priv/kv/$name
  table = userkv
  username_field = username
  value_field = value
  fields {
    name = ${hexblob:name}
  }
}
map {
  pattern = priv/quota/both
  table = quota
  username_field = username
  value_field = bytes,messages
  value_type = uint,uint
}
map {
  pattern = shared/single
  table = single
  value_field = v
}
"#;

    fn queries(dialect: Dialect) -> Queries {
        let file =
            SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/etc/x.conf").unwrap();
        Queries::new(dialect, file.maps.into(), Catalog::default())
    }

    #[test]
    fn every_users_values() {
        let q = queries(Dialect::Sqlite);
        assert_eq!(
            &*q.sql(&Shape::Users { map: 0 }),
            "SELECT bytes,username FROM quota"
        );
        assert_eq!(
            &*q.sql(&Shape::Users { map: 3 }),
            "SELECT value,username FROM userkv WHERE name = ?"
        );
        let q = queries(Dialect::Postgres);
        assert_eq!(
            &*q.sql(&Shape::Users { map: 4 }),
            "SELECT CAST(bytes AS text) AS c0,CAST(messages AS text) AS c1,CAST(username AS text) AS c2 FROM quota"
        );
    }

    #[test]
    fn lookups_and_deletes() {
        let q = queries(Dialect::Sqlite);
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 0,
                private: true
            }),
            "SELECT bytes FROM quota WHERE username = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 4,
                private: true
            }),
            "SELECT bytes,messages FROM quota WHERE username = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 2,
                private: false
            }),
            "SELECT value FROM kv WHERE scope = CAST(? AS TEXT) AND name = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 3,
                private: true
            }),
            "SELECT value FROM userkv WHERE name = ? AND username = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 5,
                private: false
            }),
            "SELECT v FROM single LIMIT 1"
        );
        assert_eq!(
            &*q.sql(&Shape::Delete {
                map: 0,
                private: true
            }),
            "DELETE FROM quota WHERE username = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Delete {
                map: 5,
                private: false
            }),
            "DELETE FROM single"
        );
        let q = queries(Dialect::Postgres);
        assert_eq!(
            &*q.sql(&Shape::Lookup {
                map: 2,
                private: false
            }),
            "SELECT CAST(value AS text) AS c0 FROM kv WHERE scope = $1 AND name = $2"
        );
    }

    #[test]
    fn lookup_batches() {
        let batch = |map, private| Shape::LookupBatch {
            map,
            private,
            lookups: 2,
        };
        let q = queries(Dialect::Mysql);
        assert_eq!(
            &*q.sql(&batch(2, false)),
            "(SELECT 0,value FROM kv WHERE scope = ? AND name = ? LIMIT 1) UNION ALL (SELECT 1,value FROM kv WHERE scope = ? AND name = ? LIMIT 1)"
        );
        assert_eq!(
            &*q.sql(&batch(5, false)),
            "(SELECT 0,v FROM single LIMIT 1) UNION ALL (SELECT 1,v FROM single LIMIT 1)"
        );
        let q = queries(Dialect::Postgres);
        assert_eq!(
            &*q.sql(&batch(4, true)),
            "(SELECT 0,CAST(bytes AS text) AS c0,CAST(messages AS text) AS c1 FROM quota WHERE username = $1 LIMIT 1) UNION ALL (SELECT 1,CAST(bytes AS text) AS c0,CAST(messages AS text) AS c1 FROM quota WHERE username = $2 LIMIT 1)"
        );
    }

    #[test]
    fn writes() {
        let q = queries(Dialect::Sqlite);
        assert_eq!(
            &*q.sql(&Shape::Upsert { maps: vec![0, 1], private: true }),
            "INSERT INTO quota (bytes,messages,username) VALUES (?,?,CAST(? AS TEXT)) ON CONFLICT (username) DO UPDATE SET bytes=excluded.bytes,messages=excluded.messages"
        );
        assert_eq!(
            &*q.sql(&Shape::Upsert { maps: vec![2], private: false }),
            "INSERT INTO kv (value,scope,name) VALUES (CAST(? AS TEXT),CAST(? AS TEXT),CAST(? AS TEXT)) ON CONFLICT (scope,name) DO UPDATE SET value=excluded.value"
        );
        assert_eq!(
            &*q.sql(&Shape::Inc {
                maps: vec![0, 1],
                private: true
            }),
            "UPDATE quota SET bytes=bytes+?,messages=messages+? WHERE username = CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::UpdateAll { maps: vec![5] }),
            "UPDATE single SET v=CAST(? AS TEXT)"
        );
        assert_eq!(
            &*q.sql(&Shape::Insert { maps: vec![5] }),
            "INSERT INTO single (v) VALUES (CAST(? AS TEXT))"
        );
        let q = queries(Dialect::Mysql);
        assert_eq!(
            &*q.sql(&Shape::Upsert { maps: vec![3], private: true }),
            "INSERT INTO userkv (value,username,name) VALUES (?,?,?) ON DUPLICATE KEY UPDATE value=?"
        );
        let q = queries(Dialect::Postgres);
        assert_eq!(
            &*q.sql(&Shape::Upsert { maps: vec![3], private: true }),
            "INSERT INTO userkv (value,username,name) VALUES ($1,$2,$3) ON CONFLICT (name,username) DO UPDATE SET value=excluded.value"
        );
    }

    #[test]
    fn several_rows() {
        let rows = |base: Shape| Shape::Rows {
            base: Box::new(base),
            rows: 2,
        };
        let q = queries(Dialect::Mysql);
        assert_eq!(
            &*q.sql(&rows(Shape::Upsert { maps: vec![0, 1], private: true })),
            "INSERT INTO quota (bytes,messages,username) VALUES (?,?,?),(?,?,?) ON DUPLICATE KEY UPDATE bytes=VALUES(bytes),messages=VALUES(messages)"
        );
        assert_eq!(
            &*q.sql(&rows(Shape::Delete {
                map: 3,
                private: true
            })),
            "DELETE FROM userkv WHERE (name,username) IN ((?,?),(?,?))"
        );
        let q = queries(Dialect::Postgres);
        assert_eq!(
            &*q.sql(&rows(Shape::Upsert { maps: vec![2], private: false })),
            "INSERT INTO kv (value,scope,name) VALUES ($1,$2,$3),($4,$5,$6) ON CONFLICT (scope,name) DO UPDATE SET value=excluded.value"
        );
        assert_eq!(
            &*q.sql(&rows(Shape::Delete {
                map: 2,
                private: false
            })),
            "DELETE FROM kv WHERE (scope,name) IN (($1,$2),($3,$4))"
        );
    }

    #[test]
    fn iterations() {
        let q = queries(Dialect::Sqlite);
        let it = |map, private, bound, mode, sort, no_value, limit| {
            q.sql(&Shape::Iterate {
                map,
                private,
                bound,
                mode,
                sort,
                no_value,
                limit,
            })
            .to_string()
        };
        assert_eq!(
            it(
                2,
                false,
                1,
                IterMode::OneLevel,
                Sort::None,
                false,
                Limit::None
            ),
            "SELECT value,name FROM kv WHERE scope = CAST(? AS TEXT) AND name LIKE '%' AND name NOT LIKE '%/%'"
        );
        assert_eq!(
            it(
                2,
                false,
                0,
                IterMode::Recurse,
                Sort::None,
                false,
                Limit::None
            ),
            "SELECT value,scope,name FROM kv"
        );
        assert_eq!(
            it(2, false, 2, IterMode::Exact, Sort::None, false, Limit::None),
            "SELECT value,name FROM kv WHERE scope = CAST(? AS TEXT) AND name = CAST(? AS TEXT)"
        );
        assert_eq!(
            it(
                3,
                true,
                0,
                IterMode::Recurse,
                Sort::Key,
                false,
                Limit::Bound
            ),
            "SELECT value,name FROM userkv WHERE username = CAST(? AS TEXT) ORDER BY name LIMIT ?"
        );
        // priv/ with nothing bound: the AND Dovecot 2.3.19 forgets is there.
        assert_eq!(
            it(
                3,
                true,
                0,
                IterMode::OneLevel,
                Sort::Value,
                true,
                Limit::None
            ),
            "SELECT name FROM userkv WHERE name IS NOT NULL AND username = CAST(? AS TEXT) ORDER BY value"
        );
        assert_eq!(
            it(0, true, 0, IterMode::Recurse, Sort::Key, true, Limit::One),
            "SELECT 1 FROM quota WHERE username = CAST(? AS TEXT) LIMIT 1"
        );
    }

    #[test]
    fn value_types() {
        let file =
            SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/etc/x.conf").unwrap();
        let m = &file.maps[3];
        assert_eq!(
            typed_param(m, ValueType::Int, "value", b"-12"),
            Ok(Param::Int(-12))
        );
        assert_eq!(
            typed_param(m, ValueType::Uint, "value", b"12"),
            Ok(Param::Int(12))
        );
        assert_eq!(
            typed_param(m, ValueType::Uint, "value", b"-1").unwrap_err(),
            "value field's value isn't 64bit unsigned integer: -1 (in pattern: priv/kv/$)"
        );
        assert!(typed_param(m, ValueType::Int, "value", b"+1").is_err());
        assert!(typed_param(m, ValueType::Int, "value", b"").is_err());
        assert!(typed_param(m, ValueType::Int, "value", b"99999999999999999999").is_err());
        assert_eq!(
            typed_param(m, ValueType::Hexblob, "name", b"6A6b"),
            Ok(Param::Blob(b"jk".to_vec()))
        );
        assert_eq!(
            typed_param(m, ValueType::Hexblob, "name", b"zz").unwrap_err(),
            "name field's value isn't hexblob: zz (in pattern: priv/kv/$)"
        );
        assert!(typed_param(m, ValueType::Hexblob, "name", b"abc").is_err());
    }

    #[test]
    fn expire_field_statements() {
        let conf = "dovecot_config_version = 2.4.1\ndict_server {\n dict d {\n  driver = sql\n  sql_driver = sqlite\n  sqlite_path = /x\n\
            dict_map shared/e/$n {\n   sql_table = e\n   expire_field = exp\n   value_field v {\n   }\n   key_field n {\n    value = $n\n   }\n  }\n\
            dict_map shared/one {\n   sql_table = one\n   expire_field = exp\n   value_field v {\n   }\n  }\n }\n}\n";
        let c = dict_config::DovecotConfig::parse_str(conf, "/d.conf").unwrap();
        let Ok(dict_config::DictSpec::Sql { map_file, .. }) = c.dicts[0].spec() else {
            panic!()
        };
        let q = Queries::new(
            Dialect::Sqlite,
            Arc::from(map_file.maps),
            Catalog::default(),
        );
        assert_eq!(
            q.sql(&Shape::Lookup {
                map: 0,
                private: false
            })
            .as_ref(),
            "SELECT v FROM e WHERE n = CAST(? AS TEXT) AND (exp IS NULL OR exp > ?)"
        );
        assert_eq!(
            q.sql(&Shape::Lookup {
                map: 1,
                private: false
            })
            .as_ref(),
            "SELECT v FROM one WHERE (exp IS NULL OR exp > ?) LIMIT 1"
        );
        assert_eq!(
            q.sql(&Shape::Upsert { maps: vec![0], private: false }).as_ref(),
            "INSERT INTO e (v,exp,n) VALUES (CAST(? AS TEXT),?,CAST(? AS TEXT)) ON CONFLICT (n) DO UPDATE SET v=excluded.v,exp=excluded.exp"
        );
        assert_eq!(
            q.sql(&Shape::UpdateAll { maps: vec![1] }).as_ref(),
            "UPDATE one SET v=CAST(? AS TEXT),exp=?"
        );
        let it = Shape::Iterate {
            map: 0,
            private: false,
            bound: 0,
            mode: IterMode::OneLevel,
            sort: Sort::None,
            no_value: false,
            limit: Limit::Bound,
        };
        assert_eq!(
            q.sql(&it).as_ref(),
            "SELECT v,n FROM e WHERE n LIKE '%' AND n NOT LIKE '%/%' AND (exp IS NULL OR exp > ?) LIMIT ?"
        );
        let mysql = Queries::new(Dialect::Mysql, q.maps.clone(), Catalog::default());
        assert_eq!(
            mysql
                .sql(&Shape::Upsert {
                    maps: vec![0],
                    private: false
                })
                .as_ref(),
            "INSERT INTO e (v,exp,n) VALUES (?,?,?) ON DUPLICATE KEY UPDATE v=?,exp=?"
        );
    }

    #[test]
    fn uuids() {
        assert_eq!(
            canonical_uuid(b"0123456789ABCDEF0123456789abcdef").as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(
            canonical_uuid(b"01234567-89ab-cdef-0123-456789abcdef").as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(
            canonical_uuid(b"01234567-89ab-cdef-0123456789abcdef0"),
            None
        );
        assert_eq!(canonical_uuid(b"0123456789ABCDEF0123456789abcdeg"), None);
    }

    #[test]
    fn maps_are_found_in_order() {
        let file =
            SqlMapFile::parse_str(dict_config::SqlDriver::Sqlite, MAPS, "/etc/x.conf").unwrap();
        assert_eq!(
            find_map(&file.maps, b"priv/quota/messages").map(|m| m.0),
            Some(1)
        );
        assert_eq!(
            find_map(&file.maps, b"shared/kv/a/b/c"),
            Some((2, vec![&b"a"[..], b"b/c"]))
        );
        assert_eq!(find_map(&file.maps, b"shared/nomap/x"), None);
    }
}
