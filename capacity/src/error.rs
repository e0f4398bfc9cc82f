use loupe_base::error_kind::ErrorKind;
use thiserror::Error;

/// Everything capacity can fail with; the API maps each to its status.
#[derive(Debug, Error)]
pub enum CapacityError {
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

impl CapacityError {
    /// What kind of failure this is; `loupe_base::error_kind` maps it to a status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CapacityError::Invalid(_) => ErrorKind::Invalid,
            CapacityError::Unprocessable(_) => ErrorKind::Unprocessable,
            CapacityError::NotFound(_) => ErrorKind::NotFound,
            CapacityError::Query(_) => ErrorKind::Upstream,
            CapacityError::Outbox(_) | CapacityError::CatalogDb(_) | CapacityError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// The crate's result, defaulting to [`CapacityError`].
pub type Result<T, E = CapacityError> = std::result::Result<T, E>;
