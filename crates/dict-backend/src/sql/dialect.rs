//! What differs between SQLite, MySQL/MariaDB and PostgreSQL in the statements we send:
//! placeholders, the upsert clause, and PostgreSQL's typed parameters.
//!
//! Identifiers (tables, columns) are pasted as configured, as Dovecot does; every value is
//! a bound parameter.

use std::collections::HashMap;

/// The SQL flavour of a dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dialect {
    Sqlite,
    Mysql,
    Postgres,
}

/// How a parameter is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// Text (`string` type; also the username).
    Text,
    /// A signed 64-bit number (`int`, `uint`, increments, LIMIT, expire times).
    Int,
    /// A floating point number (`double`).
    Double,
    /// Bytes (`hexblob` type).
    Blob,
}

/// A column's type as PostgreSQL reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnType {
    /// `format_type()`, e.g. `bigint` or `character varying(255)`.
    pub name: String,
    /// `pg_type.typcategory`: `S` string, `N` numeric, `U` user (bytea is `U`), ...
    pub category: char,
}

impl ColumnType {
    fn is_string(&self) -> bool {
        self.category == 'S'
    }

    fn is_bytea(&self) -> bool {
        self.name == "bytea"
    }
}

/// Column types of the mapped tables. Only PostgreSQL needs them: its parameters have
/// types, so a text value bound to a `bigint` column needs a cast that Dovecot got for free
/// by pasting literals. Empty for the other dialects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    tables: HashMap<String, HashMap<String, ColumnType>>,
}

impl Catalog {
    pub fn insert(&mut self, table: &str, columns: HashMap<String, ColumnType>) {
        self.tables.insert(table.to_string(), columns);
    }

    /// The type of `column` (as written in the map file) of `table` (likewise).
    pub fn column(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table)?.get(&ident_name(column))
    }
}

/// The name the database stores for an identifier as written in a map file: quotes
/// removed, unquoted names folded to lower case.
pub(crate) fn ident_name(ident: &str) -> String {
    let quoted = |q: char| ident.len() >= 2 && ident.starts_with(q) && ident.ends_with(q);
    if quoted('"') || quoted('`') {
        ident[1..ident.len() - 1].to_string()
    } else {
        ident.to_ascii_lowercase()
    }
}

/// SQL text under construction: counts placeholders for PostgreSQL's `$n`.
#[derive(Debug)]
pub(crate) struct SqlText<'a> {
    pub dialect: Dialect,
    catalog: &'a Catalog,
    table: &'a str,
    sql: String,
    params: usize,
}

impl<'a> SqlText<'a> {
    pub fn new(dialect: Dialect, catalog: &'a Catalog, table: &'a str) -> Self {
        SqlText {
            dialect,
            catalog,
            table,
            sql: String::with_capacity(128),
            params: 0,
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.sql.push_str(s);
        self
    }

    /// A placeholder for a value compared with or stored into `column` of the table.
    /// SQLite text is cast to TEXT: sqlx can only bind UTF-8 as text, so other bytes are
    /// bound as a BLOB and the cast makes them text again, unchanged, as Dovecot stores
    /// them (a BLOB would neither equal nor sort like that TEXT).
    pub fn param(&mut self, kind: ParamKind, column: Option<&str>) -> &mut Self {
        self.params += 1;
        match self.dialect {
            Dialect::Sqlite if kind == ParamKind::Text => self.sql.push_str("CAST(? AS TEXT)"),
            Dialect::Sqlite | Dialect::Mysql => self.sql.push('?'),
            Dialect::Postgres => {
                let n = self.params;
                let cast = column
                    .and_then(|c| self.catalog.column(self.table, c))
                    .filter(|ty| match kind {
                        ParamKind::Text => !ty.is_string(),
                        ParamKind::Int | ParamKind::Double => ty.category != 'N',
                        ParamKind::Blob => false,
                    });
                match cast {
                    Some(ty) => self.sql.push_str(&format!("CAST(${n} AS {})", ty.name)),
                    None => self.sql.push_str(&format!("${n}")),
                }
            }
        }
        self
    }

    /// A selected column. PostgreSQL results are read as text (as libpq gives them to
    /// Dovecot), except a `bytea` read as hexblob; aliases keep ORDER BY on the columns.
    pub fn select(&mut self, column: &str, hexblob: bool, index: usize) -> &mut Self {
        match self.dialect {
            Dialect::Sqlite | Dialect::Mysql => self.sql.push_str(column),
            Dialect::Postgres => {
                let raw = hexblob
                    && self
                        .catalog
                        .column(self.table, column)
                        .is_some_and(ColumnType::is_bytea);
                if raw {
                    self.sql.push_str(&format!("{column} AS c{index}"));
                } else {
                    self.sql
                        .push_str(&format!("CAST({column} AS text) AS c{index}"));
                }
            }
        }
        self
    }

    /// The one-level filter on the iterated column: it exists and has no `/`. Columns
    /// that cannot hold a `/` (numbers, blobs shown as hex) only need to be non-NULL.
    pub fn one_level_filter(&mut self, column: &str, text_typed: bool) -> &mut Self {
        let string_column = match self.dialect {
            Dialect::Postgres => self
                .catalog
                .column(self.table, column)
                .is_none_or(ColumnType::is_string),
            _ => true,
        };
        if text_typed && string_column {
            self.sql
                .push_str(&format!("{column} LIKE '%' AND {column} NOT LIKE '%/%'"));
        } else {
            self.sql.push_str(&format!("{column} IS NOT NULL"));
        }
        self
    }

    /// The upsert clause for an INSERT of `values` keyed by `keys` (not empty). MySQL
    /// binds the values again (one placeholder each, in order), or, for an INSERT of
    /// several rows (`rows`), takes each row's own (`VALUES(v)`).
    pub fn upsert_rows(
        &mut self,
        keys: &[&str],
        values: &[(&str, ParamKind)],
        rows: bool,
    ) -> &mut Self {
        match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => {
                self.sql
                    .push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET ", keys.join(",")));
                let sets: Vec<String> = values
                    .iter()
                    .map(|(v, _)| format!("{v}=excluded.{v}"))
                    .collect();
                self.sql.push_str(&sets.join(","));
            }
            Dialect::Mysql => {
                self.sql.push_str(" ON DUPLICATE KEY UPDATE ");
                for (i, (v, kind)) in values.iter().enumerate() {
                    if i > 0 {
                        self.sql.push(',');
                    }
                    if rows {
                        self.sql.push_str(&format!("{v}=VALUES({v})"));
                    } else {
                        self.sql.push_str(&format!("{v}="));
                        self.param(*kind, Some(v));
                    }
                }
            }
        }
        self
    }

    pub fn finish(self) -> String {
        self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let cat = Catalog::default();
        let mut s = SqlText::new(Dialect::Sqlite, &cat, "t");
        s.push("a = ")
            .param(ParamKind::Text, Some("a"))
            .push(" AND b = ")
            .param(ParamKind::Int, None);
        assert_eq!(s.finish(), "a = CAST(? AS TEXT) AND b = ?");
        let mut s = SqlText::new(Dialect::Postgres, &cat, "t");
        s.push("a = ")
            .param(ParamKind::Text, Some("a"))
            .push(" AND b = ")
            .param(ParamKind::Int, None);
        assert_eq!(s.finish(), "a = $1 AND b = $2");
    }

    #[test]
    fn postgres_casts_follow_column_types() {
        let mut cat = Catalog::default();
        let ty = |name: &str, category| ColumnType {
            name: name.into(),
            category,
        };
        cat.insert(
            "quota",
            HashMap::from([
                ("bytes".to_string(), ty("bigint", 'N')),
                ("username".to_string(), ty("character varying(255)", 'S')),
                ("blob".to_string(), ty("bytea", 'U')),
            ]),
        );
        let mut s = SqlText::new(Dialect::Postgres, &cat, "quota");
        s.param(ParamKind::Text, Some("bytes"))
            .push(",")
            .param(ParamKind::Text, Some("USERNAME"));
        s.push(",")
            .param(ParamKind::Int, Some("username"))
            .push(",")
            .param(ParamKind::Int, Some("bytes"));
        assert_eq!(
            s.finish(),
            "CAST($1 AS bigint),$2,CAST($3 AS character varying(255)),$4"
        );
        let mut s = SqlText::new(Dialect::Postgres, &cat, "quota");
        s.select("bytes", false, 0)
            .push(",")
            .select("blob", true, 1)
            .push(",")
            .select("\"blob\"", false, 2);
        assert_eq!(
            s.finish(),
            "CAST(bytes AS text) AS c0,blob AS c1,CAST(\"blob\" AS text) AS c2"
        );
        let mut s = SqlText::new(Dialect::Postgres, &cat, "quota");
        s.one_level_filter("bytes", true)
            .push(" / ")
            .one_level_filter("username", true);
        assert_eq!(
            s.finish(),
            "bytes IS NOT NULL / username LIKE '%' AND username NOT LIKE '%/%'"
        );
    }

    #[test]
    fn upserts() {
        let cat = Catalog::default();
        let vals = [("bytes", ParamKind::Int), ("messages", ParamKind::Int)];
        let mut s = SqlText::new(Dialect::Sqlite, &cat, "quota");
        s.upsert_rows(&["username"], &vals, false);
        assert_eq!(
            s.finish(),
            " ON CONFLICT (username) DO UPDATE SET bytes=excluded.bytes,messages=excluded.messages"
        );
        let mut s = SqlText::new(Dialect::Mysql, &cat, "quota");
        s.upsert_rows(&["username"], &vals, false);
        assert_eq!(s.finish(), " ON DUPLICATE KEY UPDATE bytes=?,messages=?");
        let mut s = SqlText::new(Dialect::Mysql, &cat, "quota");
        s.upsert_rows(&["username"], &vals, true);
        assert_eq!(
            s.finish(),
            " ON DUPLICATE KEY UPDATE bytes=VALUES(bytes),messages=VALUES(messages)"
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(ident_name("Bytes"), "bytes");
        assert_eq!(ident_name("\"Bytes\""), "Bytes");
        assert_eq!(ident_name("`x`"), "x");
    }
}
