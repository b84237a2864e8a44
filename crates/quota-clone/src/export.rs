//! Everybody's cloned quota at once, read straight from the backend of a configured dict
//! (the SQL table of its map file, or the Redis keys in Dovecot's layout), for statistics.
//! The dict protocol cannot do this: a connection only ever sees its own user's keys.
//!
//! [`gather`] reads `priv/quota/storage` and `priv/quota/messages` of every user through
//! [`Dict::scan_users`] and joins them by user; [`write`] prints the rows as CSV, a JSON
//! array or JSON lines. Users are sorted by name (bytewise), and held in memory while they
//! are joined (about 100 bytes a user).

use std::collections::BTreeMap;
use std::io::Write;

use dict_backend::{Dict, DictError, UserValues};
use futures::TryStreamExt;
use serde::Serialize;

use crate::{MESSAGES_KEY, STORAGE_KEY};

/// One user's cloned quota. A value is `None` when the user has no such key (or an empty
/// or unreadable one: see [`Export::problems`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaRow {
    /// The username (lossily decoded if it is not UTF-8).
    pub user: String,
    /// `priv/quota/storage`: bytes.
    pub bytes: Option<i64>,
    /// `priv/quota/messages`.
    pub messages: Option<i64>,
}

/// What [`gather`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// One row per user that has either key, sorted by username.
    pub rows: Vec<QuotaRow>,
    /// Values that are not integers and usernames that are not UTF-8: one line each. The
    /// rows are still there, with such a value left out.
    pub problems: Vec<String>,
}

/// The output formats of [`write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `user,bytes,messages` with a header line; a missing value is an empty field.
    Csv,
    /// One JSON array of `{"user":…,"bytes":…,"messages":…}`; a missing value is `null`.
    Json,
    /// One such JSON object per line (for streaming consumers).
    JsonLines,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The backend could not be read; nothing is returned.
    #[error(transparent)]
    Backend(#[from] DictError),
    /// Writing the output failed.
    #[error("writing the export")]
    Output(#[from] std::io::Error),
    /// Encoding a CSV row failed.
    #[error("writing the export")]
    Csv(#[from] csv::Error),
    /// Encoding JSON failed.
    #[error("writing the export")]
    Json(#[from] serde_json::Error),
}

/// Reads every user's `priv/quota/storage` and `priv/quota/messages` from `dict`.
pub async fn gather(dict: &dyn Dict) -> Result<Export, ExportError> {
    let (storage, messages) = futures::try_join!(
        dict.scan_users(STORAGE_KEY.as_bytes())
            .try_collect::<Vec<_>>(),
        dict.scan_users(MESSAGES_KEY.as_bytes())
            .try_collect::<Vec<_>>(),
    )?;
    let mut users: BTreeMap<Vec<u8>, (Option<i64>, Option<i64>)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, found) in [(STORAGE_KEY, storage), (MESSAGES_KEY, messages)] {
        for UserValues { username, values } in found {
            let value = values.into_iter().next().unwrap_or_default();
            let parsed = parse_count(&value);
            if parsed.is_none() && !value.is_empty() {
                problems.push(format!(
                    "user {}: {key} is not an integer: {:?}",
                    String::from_utf8_lossy(&username),
                    String::from_utf8_lossy(&value)
                ));
            }
            let slot = users.entry(username).or_default();
            if key == STORAGE_KEY {
                slot.0 = parsed;
            } else {
                slot.1 = parsed;
            }
        }
    }
    let rows = users
        .into_iter()
        .map(|(name, (bytes, messages))| {
            let user = String::from_utf8_lossy(&name).into_owned();
            if user.as_bytes() != name.as_slice() {
                problems.push(format!("user {user}: the username is not UTF-8"));
            }
            QuotaRow {
                user,
                bytes,
                messages,
            }
        })
        .collect();
    Ok(Export { rows, problems })
}

/// A stored count: decimal, optionally signed; SQL integer columns and the plugin's text
/// both look like this.
fn parse_count(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Writes `rows` to `out` in `format`.
pub fn write(rows: &[QuotaRow], format: Format, out: impl Write) -> Result<(), ExportError> {
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            for row in rows {
                w.serialize(row)?;
            }
            if rows.is_empty() {
                w.write_record(["user", "bytes", "messages"])?;
            }
            w.flush()?;
        }
        Format::Json => {
            let mut out = std::io::BufWriter::new(out);
            serde_json::to_writer(&mut out, rows)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        Format::JsonLines => {
            let mut out = std::io::BufWriter::new(out);
            for row in rows {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dict_backend::{Change, MemoryDict, Transaction};

    async fn set(dict: &MemoryDict, user: &[u8], key: &str, value: &str) {
        let txn = Transaction {
            username: user.to_vec(),
            changes: vec![Change::Set {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            }],
            ..Default::default()
        };
        assert_eq!(dict.commit(txn).await, dict_backend::CommitResult::Ok);
    }

    fn row(user: &str, bytes: Option<i64>, messages: Option<i64>) -> QuotaRow {
        QuotaRow {
            user: user.into(),
            bytes,
            messages,
        }
    }

    #[tokio::test]
    async fn joins_both_keys_by_user() {
        let d = MemoryDict::new();
        set(&d, b"bob", STORAGE_KEY, "2048").await;
        set(&d, b"bob", MESSAGES_KEY, "3").await;
        set(&d, b"alice", STORAGE_KEY, "10").await;
        set(&d, b"carol", MESSAGES_KEY, "7").await;
        set(&d, b"dave", STORAGE_KEY, "lots").await;
        set(&d, b"erin", STORAGE_KEY, "").await;
        set(&d, b"bob", "priv/quota/other", "1").await;
        let e = gather(&d).await.unwrap();
        assert_eq!(
            e.rows,
            vec![
                row("alice", Some(10), None),
                row("bob", Some(2048), Some(3)),
                row("carol", None, Some(7)),
                row("dave", None, None),
                row("erin", None, None),
            ]
        );
        assert_eq!(
            e.problems,
            vec![r#"user dave: priv/quota/storage is not an integer: "lots""#]
        );
    }

    #[tokio::test]
    async fn names_that_are_not_utf8_are_reported() {
        let d = MemoryDict::new();
        set(&d, b"b\xffd", STORAGE_KEY, "1").await;
        let e = gather(&d).await.unwrap();
        assert_eq!(e.rows, vec![row("b\u{fffd}d", Some(1), None)]);
        assert_eq!(e.problems.len(), 1, "{:?}", e.problems);
    }

    fn render(rows: &[QuotaRow], format: Format) -> String {
        let mut out = Vec::new();
        write(rows, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_what_needs_it_and_leaves_missing_values_empty() {
        let rows = [
            row("a,b \"q\"@x", Some(i64::MAX), Some(0)),
            row("c", None, Some(5)),
        ];
        assert_eq!(
            render(&rows, Format::Csv),
            "user,bytes,messages\n\"a,b \"\"q\"\"@x\",9223372036854775807,0\nc,,5\n"
        );
        assert_eq!(render(&[], Format::Csv), "user,bytes,messages\n");
    }

    #[test]
    fn json_has_numbers_and_nulls() {
        let rows = [row("a\"b", Some(1), None)];
        assert_eq!(
            render(&rows, Format::Json),
            "[{\"user\":\"a\\\"b\",\"bytes\":1,\"messages\":null}]\n"
        );
        assert_eq!(render(&[], Format::Json), "[]\n");
        let two = [row("a", Some(1), Some(2)), row("b", Some(-3), None)];
        assert_eq!(
            render(&two, Format::JsonLines),
            "{\"user\":\"a\",\"bytes\":1,\"messages\":2}\n{\"user\":\"b\",\"bytes\":-3,\"messages\":null}\n"
        );
    }

    #[test]
    fn counts_parse_like_sql_and_plugin_text() {
        assert_eq!(parse_count(b"123"), Some(123));
        assert_eq!(parse_count(b"-5"), Some(-5));
        assert_eq!(parse_count(b""), None);
        assert_eq!(parse_count(b"1.5"), None);
        assert_eq!(parse_count(b"99999999999999999999"), None);
    }
}
