//! What kind of failure an error is, and the one mapping from that to an
//! HTTP status and a gRPC code. Every crate's error type says which kind
//! each of its variants is; no crate maps errors to statuses on its own, so
//! the same failure answers the same way on every API.

/// Whose fault a failure is and what the client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something impossible (400).
    Invalid,
    /// Valid, but not allowed here, whoever asks (403 / PERMISSION_DENIED).
    Forbidden,
    /// What was asked for does not exist (404).
    NotFound,
    /// The body is larger than allowed (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// The body's content type is not understood (415).
    UnsupportedMediaType,
    /// Well-formed, but cannot be answered from the data or within the
    /// limits (422 / FAILED_PRECONDITION).
    Unprocessable,
    /// The client took too long to send its request (408).
    RequestTimeout,
    /// Too much load right now; retry later (429 / RESOURCE_EXHAUSTED).
    Overloaded,
    /// Our work took longer than its limit (504 / DEADLINE_EXCEEDED).
    Timeout,
    /// Temporarily unable to serve: shutting down, WAL failed (503).
    Unavailable,
    /// Something we depend on answered badly (502).
    Upstream,
    /// A bug or an unexpected failure of ours (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::TooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Overloaded => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Upstream => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The gRPC status code (numbers as in `google.rpc.Code`).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::Invalid | ErrorKind::UnsupportedMediaType => 3, // INVALID_ARGUMENT
            ErrorKind::RequestTimeout | ErrorKind::Timeout => 4,       // DEADLINE_EXCEEDED
            ErrorKind::NotFound => 5,                                  // NOT_FOUND
            ErrorKind::Forbidden => 7,                                 // PERMISSION_DENIED
            ErrorKind::TooLarge | ErrorKind::Overloaded => 8,          // RESOURCE_EXHAUSTED
            ErrorKind::Unprocessable => 9,                             // FAILED_PRECONDITION
            ErrorKind::Internal => 13,                                 // INTERNAL
            ErrorKind::Unavailable | ErrorKind::Upstream => 14,        // UNAVAILABLE
        }
    }

    /// The HTTP status as a `StatusCode`.
    pub fn status(self) -> http::StatusCode {
        http::StatusCode::from_u16(self.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The answer every API gives for a failure of this kind:
    /// `{"error": message}` with the kind's status (a tuple axum answers as is).
    pub fn reply(
        self,
        message: impl std::fmt::Display,
    ) -> (
        http::StatusCode,
        [(http::HeaderName, &'static str); 1],
        String,
    ) {
        let body = serde_json::json!({"error": message.to_string()});
        (
            self.status(),
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
    }

    /// Seconds a client should wait before retrying, for retryable kinds.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            ErrorKind::Overloaded => Some(1),
            ErrorKind::Unavailable => Some(5),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_4xx_and_ours_5xx() {
        for kind in [
            ErrorKind::Invalid,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::TooLarge,
            ErrorKind::UnsupportedMediaType,
            ErrorKind::Unprocessable,
            ErrorKind::RequestTimeout,
            ErrorKind::Overloaded,
        ] {
            assert!((400..500).contains(&kind.http_status()), "{kind:?}");
        }
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::Upstream,
            ErrorKind::Internal,
        ] {
            assert!((500..600).contains(&kind.http_status()), "{kind:?}");
        }
        assert_eq!(ErrorKind::Overloaded.grpc_code(), 8);
        assert_eq!(ErrorKind::Forbidden.http_status(), 403);
        assert_eq!(ErrorKind::Forbidden.grpc_code(), 7);
        assert_eq!(ErrorKind::Overloaded.retry_after_secs(), Some(1));
    }
}
