//! Store errors, in domain terms.

/// Why a store operation failed. `Clone`, so that one failure can answer
/// every caller of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist, or the caller may not see it.
    #[error("not found")]
    NotFound,
    /// A username is already registered.
    #[error("username taken")]
    UsernameTaken,
    /// The operation does not apply to this object.
    #[error("{0}")]
    Conflict(&'static str),
    /// The store cannot serve now (I/O error, shutting down, overloaded).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or a corrupted database.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(
                C::DiskFull | C::CannotOpen | C::SystemIoFailure | C::DatabaseBusy | C::DatabaseLocked | C::ReadOnly,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}
