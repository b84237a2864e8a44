//! [`Dict::scan_users`](crate::Dict::scan_users) for SQL: the map a `priv/` key matches,
//! read for every user at once (`SELECT <values>, <username_field> FROM <table> WHERE
//! <key fields> = ?`), so exports need no connection per user.

use std::sync::Arc;

use dict_config::ValueType;
use futures::SinkExt;

use super::expire::unix_now;
use super::param::{find_map, is_private, key_params, Param};
use super::query::Shape;
use super::state::DictState;
use super::types::DbError;
use super::types::{cell_text, row_values};
use crate::{DictError, UserValues};

type Sender = futures::channel::mpsc::Sender<Result<UserValues, DictError>>;

impl DictState {
    /// Feeds every user's values of `key` into `tx`; stops when the receiver is gone.
    pub(super) async fn scan_users_into(self: Arc<Self>, key: Vec<u8>, mut tx: Sender) {
        if let Err(e) = self.scan_users_to(&key, &mut tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn scan_users_to(&self, key: &[u8], tx: &mut Sender) -> Result<(), DictError> {
        let prefix = format!(
            "sql dict: reading every user's {} failed: ",
            String::from_utf8_lossy(key)
        );
        let refused = |e: &str| DictError::refused(format!("{prefix}{e}"));
        if !is_private(key) {
            return Err(refused("not a priv/ key"));
        }
        let Some((m, vars)) = find_map(&self.maps, key) else {
            return Err(refused("Invalid/unmapped key"));
        };
        let mut params = key_params(&self.maps[m], &vars).map_err(|e| refused(&e))?;
        if self.maps[m].expire_field.is_some() {
            params.push(Param::Int(unix_now()));
        }
        self.run_scan(m, &params, tx)
            .await
            .map_err(|e| e.context(&prefix))
    }

    /// Runs the query and sends its rows.
    async fn run_scan(&self, m: usize, params: &[Param], tx: &mut Sender) -> Result<(), DbError> {
        let map = &self.maps[m];
        let queries = self.queries(self.deadline()).await?;
        let sql = queries.sql(&Shape::Users { map: m });
        self.send_rows(&sql, params, tx, |cells| {
            let mut cells = cells.into_iter();
            let values = row_values(map, &mut cells);
            // A row without a username belongs to nobody: no lookup can find it.
            let username = cells.next().and_then(|c| cell_text(c, ValueType::String))?;
            Some(UserValues { username, values })
        })
        .await
        .map(|_| ())
    }
}
