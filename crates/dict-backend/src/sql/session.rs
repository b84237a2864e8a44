//! libpq's `target_session_attrs`, which sqlx does not have: after connecting, ask the
//! server what it is, and refuse the connection when it is the wrong kind, so that the next
//! host is tried (a standby that is not promoted yet never takes a dict's writes).

use sqlx::postgres::PgConnection;

/// Which servers a PostgreSQL connection may stay on (libpq's values but `any`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionAttrs {
    /// Accepts writes: `SHOW transaction_read_only` is `off`.
    ReadWrite,
    /// Refuses writes: `SHOW transaction_read_only` is `on`.
    ReadOnly,
    /// Not in recovery: `pg_is_in_recovery()` is false.
    Primary,
    /// In recovery (a hot standby).
    Standby,
}

impl SessionAttrs {
    /// A `target_session_attrs` value; `None` for `any`. The error text is meant for a
    /// start-up message.
    pub fn parse(value: &str) -> Result<Option<SessionAttrs>, String> {
        Ok(Some(match value {
            "any" => return Ok(None),
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            // would need a second pass over the hosts; a dict writes, so a standby is
            // rarely what it wants
            "prefer-standby" => {
                return Err("pgsql: target_session_attrs=prefer-standby is not supported".into())
            }
            other => {
                return Err(format!(
                    "pgsql: invalid target_session_attrs value: \"{other}\""
                ))
            }
        }))
    }

    /// Fails unless the server behind `conn` is of this kind.
    pub async fn check(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let (is, wanted) = match self {
            SessionAttrs::ReadWrite | SessionAttrs::ReadOnly => {
                let v: String = sqlx::query_scalar("SHOW transaction_read_only")
                    .fetch_one(&mut *conn)
                    .await?;
                (v == "on", self == SessionAttrs::ReadOnly)
            }
            SessionAttrs::Primary | SessionAttrs::Standby => {
                let v: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                (v, self == SessionAttrs::Standby)
            }
        };
        match is == wanted {
            true => Ok(()),
            false => Err(sqlx::Error::Configuration(
                format!("server is not {} (target_session_attrs)", self.name()).into(),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(SessionAttrs::parse("any"), Ok(None));
        assert_eq!(
            SessionAttrs::parse("read-write"),
            Ok(Some(SessionAttrs::ReadWrite))
        );
        assert_eq!(
            SessionAttrs::parse("standby"),
            Ok(Some(SessionAttrs::Standby))
        );
        assert!(SessionAttrs::parse("prefer-standby")
            .unwrap_err()
            .contains("not supported"));
    }
}
