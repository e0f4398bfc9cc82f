//! Access on the OTLP/gRPC listener: an interceptor that reads the
//! `authorization: Bearer …` metadata before the message is decoded.

use std::sync::Arc;

use tonic::{Code, Request, Status};

use super::{Access, Denied, Scope};

/// UNAUTHENTICATED, PERMISSION_DENIED, or RESOURCE_EXHAUSTED with a
/// `google.rpc.RetryInfo` hint, as OTLP exporters expect.
pub fn status(denied: &Denied) -> Status {
    match denied {
        Denied::Unauthenticated => Status::new(Code::Unauthenticated, denied.to_string()),
        Denied::Forbidden { .. } => Status::new(Code::PermissionDenied, denied.to_string()),
        Denied::RateLimited { retry_after } => {
            loupe_ingest::retry_status(Code::ResourceExhausted, denied.to_string(), *retry_after)
        }
    }
}

/// The interceptor for `tonic::service::InterceptorLayer`.
pub fn interceptor(
    access: Arc<Access>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |request: Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(super::http::bearer);
        match access.check(token, Scope::Ingest) {
            Ok(()) => Ok(request),
            Err(denied) => Err(status(&denied)),
        }
    }
}
