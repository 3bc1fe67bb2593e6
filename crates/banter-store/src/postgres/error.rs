//! PostgreSQL errors, classified once into [`StoreError`] kinds.
//!
//! The line drawn: whatever says "the database cannot serve right now" (no
//! connection, a connection lost, a timeout, a server shutting down or out of
//! resources, a lock conflict the caller may retry) is `Unavailable`, which the
//! server reports as "retry later"; anything else is a bug or a broken schema,
//! and is `Internal`. Domain meanings of particular errors (a unique violation
//! on a username) are given where the statement is run, not here.

use crate::StoreError;
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(describe(&e))
        } else {
            StoreError::Internal(describe(&e))
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            // Every failure to hand out a connection (none free in time, none
            // could be opened, the pool is closed) means the store cannot serve now.
            PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::Closed | PoolError::PostCreateHook(_) => {
                StoreError::Unavailable(format!("PostgreSQL connection: {e}"))
            }
            PoolError::NoRuntimeSpecified => StoreError::Internal(e.to_string()),
        }
    }
}

/// Whether the error means "retry later" rather than "this is a bug".
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => is_transient(code),
        // Not an error reported by the server: the connection closed or its
        // socket failed. The remaining client-side errors (a column of the
        // wrong type, a wrong parameter count) are bugs, and carry no I/O error.
        None => e.is_closed() || has_io_source(e),
    }
}

/// A failed connection attempt: whatever the server did not reject
/// explicitly (refused, timed out, closed during the handshake) is
/// `Unavailable`, like every failure to open a pooled connection.
pub(super) fn from_connect(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(code) if !is_transient(code) => StoreError::Internal(describe(&e)),
        _ => StoreError::Unavailable(describe(&e)),
    }
}

/// SQLSTATEs that say the server cannot serve now, not that the request is wrong.
fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources (too many
    // connections, disk full, out of memory); 57P: the server is shutting down
    // or starting up.
    class == "08"
        || class == "53"
        || code.code().starts_with("57P")
        || [
            // `statement_timeout` fired, or the statement was cancelled.
            SqlState::QUERY_CANCELED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            // A standby that has not been promoted yet, during a failover.
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error with the server's message, which `Display` alone leaves out ("db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL {}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("PostgreSQL: {e}: {source}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

/// Whether the statement failed on a unique constraint.
pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_states_are_recognized() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
            SqlState::T_R_DEADLOCK_DETECTED,
        ] {
            assert!(is_transient(&code), "{}", code.code());
        }
        for code in [SqlState::UNIQUE_VIOLATION, SqlState::SYNTAX_ERROR, SqlState::UNDEFINED_TABLE] {
            assert!(!is_transient(&code), "{}", code.code());
        }
    }
}
