use thiserror::Error;

/// Everything the outbox and the worker can fail with.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error(transparent)]
    CatalogDb(#[from] loupe_catalog::CatalogDbError),
    #[error("webhook client: {0}")]
    Client(String),
}

/// The crate's result, defaulting to [`NotifyError`].
pub type Result<T, E = NotifyError> = std::result::Result<T, E>;
