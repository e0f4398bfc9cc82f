use thiserror::Error;

/// Everything capacity can fail with; the API maps each to its status.
#[derive(Debug, Error)]
pub enum CapacityError {
    #[error("capacity state: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Outbox(#[from] loupe_notify::NotifyError),
    #[error(transparent)]
    CatalogDb(#[from] loupe_catalog::CatalogDbError),
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// It is right but cannot be answered from the data (HTTP 422).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    /// A telemetry query failed.
    #[error("telemetry query failed: {0}")]
    Query(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The crate's result, defaulting to [`CapacityError`].
pub type Result<T, E = CapacityError> = std::result::Result<T, E>;
