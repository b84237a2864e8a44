//! A connection to any of the three databases: a query as a stream of rows of [`Cell`]s,
//! and the statements of one dict commit (or of a batch of them) in one transaction.
//! Binding and cell decoding are per database, in the files beside this one.

mod mysql;
mod postgres;
mod sqlite;

use futures::stream::{BoxStream, StreamExt};
use sqlx::mysql::MySql;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use sqlx::query::Query;
use sqlx::sqlite::Sqlite;
use sqlx::{ColumnIndex, Connection, Database, Encode, Row, Type, TypeInfo, ValueRef};

use super::dialect::Dialect;
use super::param::Param;
use super::types::{Cell, DbError, Exec, Phase};

/// A query with its values bound so far.
type Bound<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// What differs per database: how text is bound, and how a non-NULL cell is decoded.
trait Backend: Database + Sized {
    fn bind_text<'q>(q: Bound<'q, Self>, t: &'q [u8]) -> Result<Bound<'q, Self>, DbError>;
    /// Cell `i` of `row`, not NULL, of the column type sqlx names `type_name`.
    fn cell(row: &Self::Row, i: usize, type_name: &str) -> Result<Cell, DbError>;
}

/// `sql` with `params` bound.
fn query<'q, DB: Backend>(sql: &'q str, params: &'q [Param]) -> Result<Bound<'q, DB>, DbError>
where
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    params.iter().try_fold(sqlx::query::<DB>(sql), |q, p| {
        Ok(match p {
            Param::Text(t) => DB::bind_text(q, t)?,
            Param::Int(i) => q.bind(*i),
            Param::Double(d) => q.bind(*d),
            Param::NullInt => q.bind(None::<i64>),
            Param::Blob(b) => q.bind(b.as_slice()),
        })
    })
}

/// A row's cells, decoded.
fn cells<DB: Backend>(row: &DB::Row) -> Result<Vec<Cell>, DbError>
where
    usize: ColumnIndex<DB::Row>,
{
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Cell::Null);
            }
            // Matched in place: no String per cell on the lookup path.
            let info = raw.type_info();
            DB::cell(row, i, info.name())
        })
        .collect()
}

/// A pooled connection.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Mysql(PoolConnection<MySql>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs `$body` with `$c` bound to the concrete connection and `$db` to its database type.
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Mysql($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
    ($conn:expr, $db:ident, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => {
                type $db = Sqlite;
                $body
            }
            Conn::Mysql($c) => {
                type $db = MySql;
                $body
            }
            Conn::Postgres($c) => {
                type $db = Postgres;
                $body
            }
        }
    };
}

/// Runs the steps of one dict commit on `$exec` (a transaction of database
/// `$db`); the future's output says whether a counted statement touched no row.
macro_rules! run_steps {
    ($db:ty, $exec:expr, $steps:expr) => {
        async {
            let mut missing = false;
            for step in $steps {
                match step {
                    Exec::Run {
                        sql, params, count, ..
                    } => {
                        let done = query::<$db>(sql, params)?.execute(&mut *$exec).await?;
                        if *count && done.rows_affected() == 0 {
                            missing = true;
                        }
                    }
                    Exec::Unchanged => missing = true,
                    Exec::UpdateElseInsert {
                        update,
                        update_params,
                        insert,
                        insert_params,
                    } => {
                        let done = query::<$db>(update, update_params)?
                            .execute(&mut *$exec)
                            .await?;
                        if done.rows_affected() == 0 {
                            query::<$db>(insert, insert_params)?
                                .execute(&mut *$exec)
                                .await?;
                        }
                    }
                }
            }
            Ok::<bool, DbError>(missing)
        }
    };
}

impl Conn {
    /// The rows of a query, decoded, as they arrive.
    pub fn fetch<'c>(
        &'c mut self,
        sql: &'c str,
        params: &'c [Param],
    ) -> BoxStream<'c, Result<Vec<Cell>, DbError>> {
        with_conn!(self, DB, c => match query::<DB>(sql, params) {
            Ok(q) => q.fetch(&mut **c).map(|r| r.map_err(DbError::from).and_then(|row| cells::<DB>(&row))).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
    }

    /// The first row of a query, if any.
    pub async fn fetch_first(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Option<Vec<Cell>>, DbError> {
        with_conn!(self, DB, c => {
            let row = query::<DB>(sql, params)?.fetch_optional(&mut **c).await?;
            row.map(|r| cells::<DB>(&r)).transpose()
        })
    }

    /// Runs `steps` in one transaction. Returns whether a counted statement touched no
    /// row. `phase` tells the caller how far it got when this fails or is cancelled.
    pub async fn transaction(
        &mut self,
        steps: &[Exec],
        phase: &mut Phase,
    ) -> Result<bool, DbError> {
        *phase = Phase::Begin;
        // One idempotent statement (a set or an unset, not an increment) needs no
        // BEGIN/COMMIT round trips on a database server: it commits on its own, as Dovecot
        // sends it. If the connection fails under it, it may have been applied, but the
        // caller can run it again on a fresh connection (as after a failed BEGIN) and get
        // the same rows either way. SQLite keeps BEGIN IMMEDIATE (one local writer).
        if let [Exec::Run {
            sql,
            params,
            count: false,
            ..
        }] = steps
        {
            if !matches!(self, Conn::Sqlite(_)) {
                *phase = Phase::Repeatable;
                return with_conn!(self, DB, c => {
                    query::<DB>(sql, params)?.execute(&mut **c).await?;
                    Ok(false)
                });
            }
        }
        with_conn!(self, DB, c => {
            let mut tx = if matches!(self_kind::<DB>(), Dialect::Sqlite) {
                // Take the write lock at once: no deadlock with other processes' readers.
                Connection::begin_with(&mut **c, "BEGIN IMMEDIATE").await?
            } else {
                Connection::begin(&mut **c).await?
            };
            *phase = Phase::Statements;
            let missing = run_steps!(DB, tx, steps).await?;
            *phase = Phase::Committing;
            tx.commit().await?;
            Ok(missing)
        })
    }

    /// A batch of several dict commits' statements (MySQL, PostgreSQL; see
    /// [`batch`](super::batch)), each with the commit its NOTFOUND counts for, in one
    /// transaction. Returns for each of the `commits` whether a counted statement touched
    /// no row. One statement that counts nothing runs alone, without BEGIN/COMMIT (it is
    /// atomic by itself). `phase` says how far it got when this fails or is cancelled.
    pub async fn batch(
        &mut self,
        statements: &[(Exec, usize)],
        commits: usize,
        phase: &mut Phase,
    ) -> Result<Vec<bool>, DbError> {
        *phase = Phase::Begin;
        let mut missing = vec![false; commits];
        if let [(
            Exec::Run {
                sql,
                params,
                count: false,
                ..
            },
            _,
        )] = statements
        {
            *phase = Phase::Repeatable;
            with_conn!(self, DB, c => {
                query::<DB>(sql, params)?.execute(&mut **c).await?;
            });
            return Ok(missing);
        }
        with_conn!(self, DB, c => {
            let mut tx = Connection::begin(&mut **c).await?;
            *phase = Phase::Statements;
            for (step, commit) in statements {
                if run_steps!(DB, tx, std::slice::from_ref(step)).await? {
                    missing[*commit] = true;
                }
            }
            *phase = Phase::Committing;
            tx.commit().await?;
            Ok(missing)
        })
    }

    /// Don't give this connection back to the pool (its state is unknown).
    pub fn discard(&mut self) {
        with_conn!(self, c => c.close_on_drop())
    }
}

/// The dialect of a backend type (lets generic code in `with_conn!` branch on it).
fn self_kind<DB: Database>() -> Dialect {
    match DB::NAME {
        "SQLite" => Dialect::Sqlite,
        "MySQL" => Dialect::Mysql,
        _ => Dialect::Postgres,
    }
}
