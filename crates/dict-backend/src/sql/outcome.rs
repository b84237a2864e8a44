//! What a failed attempt of a commit means for the client. `F` promises that nothing was
//! written; once an attempt may have reached the database, every later failure is `W`.

use super::types::{DbError, Phase};

/// The next step after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again on a fresh connection.
    Retry,
    /// Nothing was written: `F`.
    Failed,
    /// The changes may have been written: `W`.
    Uncertain,
}

/// After an attempt that got to `phase` and failed with `e`. `maybe_applied`: an earlier
/// attempt of this commit may have been applied; `may_retry`: retries are left.
pub(crate) fn after_failure(
    phase: Phase,
    e: &DbError,
    maybe_applied: bool,
    may_retry: bool,
) -> Next {
    let stale_connection = e.is_connection() && !matches!(e, DbError::Timeout(_));
    match phase {
        // A stale pooled connection: nothing was applied (Begin), or what was applied is
        // applied again alike (Repeatable): try a fresh one.
        Phase::Begin | Phase::Repeatable if stale_connection && may_retry => Next::Retry,
        _ if maybe_applied => Next::Uncertain,
        // Refused before it was sent, or by the database: nothing was applied.
        _ if e.is_refused() || e.is_database() => Next::Failed,
        Phase::Committing | Phase::Repeatable => Next::Uncertain,
        Phase::Begin | Phase::Statements => Next::Failed,
    }
}

/// After getting a connection failed (nothing of this attempt was sent).
pub(crate) fn after_acquire_failure(maybe_applied: bool) -> Next {
    if maybe_applied {
        Next::Uncertain
    } else {
        Next::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset() -> DbError {
        DbError::Sqlx(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }

    fn refused() -> DbError {
        DbError::Invalid("invalid multibyte character".into())
    }

    #[test]
    fn a_statement_that_may_have_run_is_never_answered_failed() {
        // PostgreSQL went down under a one-statement commit: retried on a new connection…
        assert_eq!(
            after_failure(Phase::Repeatable, &reset(), false, true),
            Next::Retry
        );
        // … which can't be had: the first attempt may have been applied.
        assert_eq!(after_acquire_failure(true), Next::Uncertain);
        // Out of retries, or any failure of a later attempt, likewise.
        assert_eq!(
            after_failure(Phase::Repeatable, &reset(), false, false),
            Next::Uncertain
        );
        assert_eq!(
            after_failure(Phase::Begin, &reset(), true, false),
            Next::Uncertain
        );
        assert_eq!(
            after_failure(Phase::Statements, &refused(), true, true),
            Next::Uncertain
        );
        let timeout = DbError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(
            after_failure(Phase::Repeatable, &timeout, false, true),
            Next::Uncertain
        );
        assert_eq!(
            after_failure(Phase::Committing, &reset(), false, true),
            Next::Uncertain
        );
    }

    #[test]
    fn nothing_sent_or_rolled_back_is_failed() {
        assert_eq!(after_acquire_failure(false), Next::Failed);
        assert_eq!(
            after_failure(Phase::Begin, &reset(), false, false),
            Next::Failed
        );
        assert_eq!(
            after_failure(Phase::Begin, &reset(), false, true),
            Next::Retry
        );
        // The database rolls back what a dropped connection left open.
        assert_eq!(
            after_failure(Phase::Statements, &reset(), false, true),
            Next::Failed
        );
        // Refused before it was sent.
        assert_eq!(
            after_failure(Phase::Repeatable, &refused(), false, true),
            Next::Failed
        );
        assert_eq!(
            after_failure(Phase::Statements, &refused(), false, true),
            Next::Failed
        );
    }
}
