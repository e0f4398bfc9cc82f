//! Why an export request failed, and how each transport says so.

use loupe_storage::StorageError;

/// A request-level failure. Record-level problems are not errors: they are
/// reported through OTLP `partial_success` while the rest is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("request body exceeds the limit of {limit} bytes{after}")]
    TooLarge { limit: usize, after: &'static str },
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
            other => IngestError::Internal(other.to_string()),
        }
    }
}

impl IngestError {
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            IngestError::InvalidArgument(_) => S::BAD_REQUEST,
            IngestError::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => S::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Timeout(_) => S::REQUEST_TIMEOUT,
            IngestError::Overloaded(_) => S::TOO_MANY_REQUESTS,
            IngestError::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before retrying, for retryable errors.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            IngestError::Overloaded(_) => Some(1),
            IngestError::Unavailable(_) => Some(5),
            _ => None,
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            IngestError::InvalidArgument(_) | IngestError::UnsupportedMediaType(_) => {
                Code::InvalidArgument
            }
            IngestError::TooLarge { .. } | IngestError::Overloaded(_) => Code::ResourceExhausted,
            IngestError::Unavailable(_) => Code::Unavailable,
            IngestError::Timeout(_) => Code::DeadlineExceeded,
            IngestError::Internal(_) => Code::Internal,
        };
        match self.retry_after_secs() {
            Some(secs) => {
                use tonic_types::{ErrorDetails, StatusExt};
                let details =
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(secs)));
                tonic::Status::with_error_details(code, self.to_string(), details)
            }
            None => tonic::Status::new(code, self.to_string()),
        }
    }
}
