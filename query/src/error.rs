//! Query errors, split by whose fault they are: the caller's (4xx) or ours.

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not allowed on the read-only SQL endpoint.
    #[error("{0}")]
    Forbidden(String),
    /// The SQL does not parse or plan (unknown column, bad syntax, …).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(std::time::Duration),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("too many queries running; retry shortly")]
    Busy,
    #[error("query failed: {0}")]
    Internal(String),
}

impl QueryError {
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            QueryError::Forbidden(_) | QueryError::Invalid(_) => S::BAD_REQUEST,
            QueryError::NotFound(_) => S::NOT_FOUND,
            QueryError::Timeout(_) => S::GATEWAY_TIMEOUT,
            QueryError::ResourcesExhausted(_) => S::UNPROCESSABLE_ENTITY,
            QueryError::Busy => S::TOO_MANY_REQUESTS,
            QueryError::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Classifies a DataFusion error raised while planning or executing.
pub fn from_datafusion(e: DataFusionError) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.to_string()),
        // Spilling is disabled, so a sort or join that outgrows memory
        // surfaces as a disk-manager error: it is still a memory limit.
        root if root.to_string().contains("DiskManager") || root.to_string().contains("spill") => {
            QueryError::ResourcesExhausted(root.to_string())
        }
        DataFusionError::Execution(m) => QueryError::Invalid(m.clone()),
        _ => QueryError::Internal(e.to_string()),
    }
}
