//! Reading a table's definition (columns, their types, unique keys) from each database's
//! catalog: for the start-up check and for PostgreSQL's typed parameters.

use sqlx::Row;

use super::db::Conn;
use super::dialect::{ident_name, ColumnType};
use super::types::{DbError, TableInfo};

impl Conn {
    /// Columns and unique keys of `table` (as written in the map file).
    pub async fn table_info(&mut self, table: &str) -> Result<TableInfo, DbError> {
        let mut info = TableInfo::default();
        let (schema, name) = match table.rsplit_once('.') {
            Some((s, t)) => (Some(ident_name(s)), ident_name(t)),
            None => (None, ident_name(table)),
        };
        match self {
            Conn::Sqlite(c) => {
                let schema = schema.unwrap_or_else(|| "main".into());
                let rows = sqlx::query("SELECT name, pk FROM pragma_table_info(?1, ?2)")
                    .bind(&name)
                    .bind(&schema)
                    .fetch_all(&mut **c)
                    .await?;
                let mut pk = Vec::new();
                for r in &rows {
                    let col: String = r.try_get(0)?;
                    let pos: i64 = r.try_get(1)?;
                    if pos > 0 {
                        pk.push((pos, col.to_ascii_lowercase()));
                    }
                    info.columns.insert(col.to_ascii_lowercase(), None);
                }
                if !pk.is_empty() {
                    pk.sort();
                    info.unique_keys
                        .push(pk.into_iter().map(|(_, c)| c).collect());
                }
                let indexes = sqlx::query(
                    "SELECT name FROM pragma_index_list(?1, ?2) WHERE \"unique\" AND partial = 0",
                )
                .bind(&name)
                .bind(&schema)
                .fetch_all(&mut **c)
                .await?;
                for idx in &indexes {
                    let idx: String = idx.try_get(0)?;
                    let cols =
                        sqlx::query("SELECT name FROM pragma_index_info(?1, ?2) ORDER BY seqno")
                            .bind(&idx)
                            .bind(&schema)
                            .fetch_all(&mut **c)
                            .await?;
                    let cols: Result<Vec<Option<String>>, _> =
                        cols.iter().map(|r| r.try_get(0)).collect();
                    // An expression column has no name: such an index can't be a target.
                    if let Some(cols) = cols?.into_iter().collect::<Option<Vec<_>>>() {
                        info.unique_keys
                            .push(cols.into_iter().map(|c| c.to_ascii_lowercase()).collect());
                    }
                }
            }
            Conn::Mysql(c) => {
                let schema_expr = if schema.is_some() { "?" } else { "DATABASE()" };
                let sql = format!(
                    "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {schema_expr} AND TABLE_NAME = ?"
                );
                let mut q = sqlx::query(&sql);
                if let Some(s) = &schema {
                    q = q.bind(s.clone());
                }
                for r in q.bind(&name).fetch_all(&mut **c).await? {
                    let col: String = r.try_get(0)?;
                    info.columns.insert(col.to_ascii_lowercase(), None);
                }
                let sql = format!(
                    "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
                     WHERE TABLE_SCHEMA = {schema_expr} AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
                );
                let mut q = sqlx::query(&sql);
                if let Some(s) = &schema {
                    q = q.bind(s.clone());
                }
                let mut keys: Vec<(String, Vec<String>)> = Vec::new();
                for r in q.bind(&name).fetch_all(&mut **c).await? {
                    let (idx, col): (String, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
                    let col = col.unwrap_or_default().to_ascii_lowercase();
                    match keys.last_mut() {
                        Some((last, cols)) if *last == idx => cols.push(col),
                        _ => keys.push((idx, vec![col])),
                    }
                }
                info.unique_keys = keys.into_iter().map(|(_, cols)| cols).collect();
            }
            Conn::Postgres(c) => {
                let rows = sqlx::query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                )
                .bind(table)
                .fetch_all(&mut **c)
                .await?;
                for r in &rows {
                    let (col, name, category): (String, String, String) =
                        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    let category = category.chars().next().unwrap_or('X');
                    info.columns
                        .insert(col, Some(ColumnType { name, category }));
                }
                let rows = sqlx::query(
                    "SELECT array_to_string(ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o), ',') \
                     FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                     AND i.indpred IS NULL AND i.indexprs IS NULL",
                )
                .bind(table)
                .fetch_all(&mut **c)
                .await?;
                for r in &rows {
                    let cols: String = r.try_get(0)?;
                    info.unique_keys
                        .push(cols.split(',').map(str::to_string).collect());
                }
            }
        }
        Ok(info)
    }
}
