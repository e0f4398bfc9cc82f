use loupe_base::error_kind::ErrorKind;
use thiserror::Error;

/// Everything alerting can fail with; [`AlertError::kind`] maps it to a status.
#[derive(Debug, Error)]
pub enum AlertError {
    #[error(transparent)]
    Outbox(#[from] loupe_notify::NotifyError),
    #[error(transparent)]
    CatalogDb(#[from] loupe_catalog::CatalogDbError),
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AlertError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AlertError::Invalid(_) => ErrorKind::Invalid,
            AlertError::NotFound(_) => ErrorKind::NotFound,
            AlertError::Outbox(_) | AlertError::CatalogDb(_) | AlertError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// The crate's result, defaulting to [`AlertError`].
pub type Result<T, E = AlertError> = std::result::Result<T, E>;
