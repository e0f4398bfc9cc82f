//! Typed errors of the storage layer.

use std::path::PathBuf;

/// Everything that can go wrong in storage; callers map these to protocol
/// statuses (overload → 429 / RESOURCE_EXHAUSTED, the rest → 5xx).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The WAL could not write or fsync; it retries by itself (new
    /// segment, backoff) and takes writes again once one succeeds.
    #[error("write-ahead log unavailable, retrying by itself: {0}")]
    WalFailed(String),
    /// One request's data is larger than a WAL record may be: refused
    /// before anything is written or acknowledged.
    #[error(
        "request data is {bytes} bytes once encoded; one write may be at most {limit} bytes: send smaller batches"
    )]
    RecordTooLarge { bytes: usize, limit: usize },
    #[error("storage is overloaded: {0}")]
    Overloaded(String),
    #[error("storage is shutting down")]
    ShuttingDown,
    #[error("catalog: {0}")]
    Catalog(#[from] rusqlite::Error),
    #[error(transparent)]
    CatalogDb(#[from] loupe_catalog::CatalogDbError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("batch does not match the {signal} schema: {reason}")]
    Schema {
        signal: crate::Signal,
        reason: String,
    },
    #[error("invalid search query: {0}")]
    InvalidSearch(String),
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// A reader asked for the memtable rows after a WAL position whose
    /// successors are no longer all in memory (its split list is older
    /// than the flushed batches' grace, or than this process): it must
    /// list the splits again.
    #[error(
        "the {signal} rows after WAL position {after} are no longer all in memory (gone through {gone_through}); list the splits again"
    )]
    RowsGone {
        signal: crate::Signal,
        after: u64,
        gone_through: u64,
    },
    /// A setting names something storage cannot use.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
