//! Why an export request failed, and how each transport says so.

use loupe_base::error_kind::ErrorKind;
use loupe_storage::StorageError;

/// A request-level failure. Record-level problems are not errors: they are
/// reported through OTLP `partial_success` while the rest is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("request body exceeds the limit of {limit} bytes{after}")]
    TooLarge { limit: usize, after: &'static str },
    #[error(
        "request holds {count} records; at most {limit} are accepted per request: send smaller batches"
    )]
    TooManyRecords { count: usize, limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for IngestError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Overloaded(m) => {
                IngestError::Overloaded(format!("server is overloaded: {m}"))
            }
            StorageError::ShuttingDown => {
                IngestError::Unavailable("server is shutting down".into())
            }
            e @ StorageError::WalFailed(_) => IngestError::Unavailable(e.to_string()),
            e @ StorageError::RecordTooLarge { .. } => IngestError::InvalidArgument(e.to_string()),
            other => IngestError::Internal(other.to_string()),
        }
    }
}

impl IngestError {
    /// What kind of failure this is; the statuses of both transports
    /// follow from it through `loupe_base::error_kind`'s one mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::InvalidArgument(_) => ErrorKind::Invalid,
            IngestError::TooLarge { .. } | IngestError::TooManyRecords { .. } => {
                ErrorKind::TooLarge
            }
            IngestError::UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            IngestError::Timeout(_) => ErrorKind::RequestTimeout,
            IngestError::Overloaded(_) => ErrorKind::Overloaded,
            IngestError::Unavailable(_) => ErrorKind::Unavailable,
            IngestError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn http_status(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.kind().http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Seconds a client should wait before retrying, for retryable errors.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.kind().retry_after_secs()
    }

    pub fn grpc_status(&self) -> tonic::Status {
        let code = tonic::Code::from_i32(self.kind().grpc_code());
        match self.retry_after_secs() {
            Some(secs) => {
                retry_status(code, self.to_string(), std::time::Duration::from_secs(secs))
            }
            None => tonic::Status::new(code, self.to_string()),
        }
    }
}

/// A gRPC status carrying a `google.rpc.RetryInfo` detail: OTLP exporters
/// (SDKs, the Collector) wait `retry_after` before retrying a
/// RESOURCE_EXHAUSTED or UNAVAILABLE answer that has one. The one place
/// such statuses are built (overload here, rate limits in access control).
pub fn retry_status(
    code: tonic::Code,
    message: impl Into<String>,
    retry_after: std::time::Duration,
) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    tonic::Status::with_error_details(code, message, details)
}
