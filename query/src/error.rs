//! Query errors, split by whose fault they are: the caller's (4xx) or ours.
//! Every API of the query and analysis crates answers with this type, so a
//! kind of failure maps to one HTTP status everywhere.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use loupe_base::error_kind::ErrorKind;

/// Why a query (or an API built on queries) failed, in the terms its HTTP
/// status needs.
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
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Forbidden(_) => ErrorKind::Forbidden,
            QueryError::Invalid(_) => ErrorKind::Invalid,
            QueryError::NotFound(_) => ErrorKind::NotFound,
            QueryError::Timeout(_) => ErrorKind::Timeout,
            QueryError::ResourcesExhausted(_) => ErrorKind::Unprocessable,
            QueryError::Busy => ErrorKind::Overloaded,
            QueryError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status, through [`ErrorKind`]'s one mapping.
    pub fn http_status(&self) -> StatusCode {
        self.kind().status()
    }
}

/// Lets handlers return `Result<_, QueryError>` and have the error become
/// `{"error": "…"}` with its status, the same way in every API.
impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        self.kind().reply(&self).into_response()
    }
}

/// A JSON error body `{"error": "…"}` with the given status, for failures
/// that are not query errors (a missing route, a body that is not JSON).
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": message.into()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The DataFusion error a wrapped one stands for: context, diagnostics,
/// shared and external wrappers are looked through, so the variant that
/// says what went wrong decides the status.
fn innermost(mut e: &DataFusionError) -> &DataFusionError {
    loop {
        e = match e {
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => inner,
            DataFusionError::Shared(inner) => inner,
            DataFusionError::Collection(list) if !list.is_empty() => &list[0],
            DataFusionError::External(inner) => match inner.downcast_ref::<DataFusionError>() {
                Some(inner) => inner,
                None => return e,
            },
            DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
                datafusion::arrow::error::ArrowError::ExternalError(x) => {
                    match x.downcast_ref::<DataFusionError>() {
                        Some(inner) => inner,
                        None => return e,
                    }
                }
                _ => return e,
            },
            _ => return e,
        };
    }
}

/// Classifies a DataFusion error raised while planning or executing.
/// Spilling is disabled, so a sort or join that outgrows memory fails in
/// the disk manager with `ResourcesExhausted` too: still a memory limit.
pub fn from_datafusion(e: DataFusionError) -> QueryError {
    match innermost(&e) {
        DataFusionError::External(inner) if inner.is::<crate::deadline::TimeLimit>() => {
            match inner.downcast_ref::<crate::deadline::TimeLimit>() {
                Some(limit) => QueryError::Timeout(limit.0),
                None => QueryError::Internal(e.to_string()),
            }
        }
        DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.to_string()),
        DataFusionError::Execution(m) => QueryError::Invalid(m.clone()),
        _ => QueryError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_are_classified_by_their_variant() {
        let oom = DataFusionError::ResourcesExhausted(
            "Memory Exhausted (DiskManager is disabled)".into(),
        )
        .context("sorting");
        assert!(matches!(
            from_datafusion(oom),
            QueryError::ResourcesExhausted(m) if m.contains("DiskManager")
        ));
        let shared = DataFusionError::Shared(std::sync::Arc::new(DataFusionError::Plan(
            "no column x".into(),
        )));
        assert!(matches!(from_datafusion(shared), QueryError::Invalid(_)));
        let external =
            DataFusionError::External(Box::new(DataFusionError::Execution("bad".into())));
        assert!(matches!(from_datafusion(external), QueryError::Invalid(m) if m == "bad"));
        assert!(matches!(
            from_datafusion(DataFusionError::Internal("bug".into())),
            QueryError::Internal(_)
        ));
    }
}
