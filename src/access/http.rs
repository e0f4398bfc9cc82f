//! Access on the HTTP listeners: a middleware that asks each request for
//! the scope its route needs, the UI's login (the token kept in an
//! HttpOnly, SameSite=Strict cookie, so page scripts never hold it and
//! other sites cannot use it), and the token API under `/api/v1/tokens`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Access, Denied, Scope};

/// The cookie the UI's login sets.
const COOKIE: &str = "loupe_token";

/// Which listener a gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// OTLP/HTTP: every request needs `ingest`.
    Otlp,
    /// The API and UI: the scope depends on the route ([`api_scope`]).
    Api,
}

#[derive(Clone)]
struct Gate {
    access: Arc<Access>,
    listener: Listener,
}

/// Wraps `router` so every request is checked before it is handled.
pub fn guard(router: Router, access: Arc<Access>, listener: Listener) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Gate { access, listener },
        gate,
    ))
}

/// The scope an API request needs, or `None` for what anyone may fetch:
/// health, readiness, logging in and out, and the UI's files (they hold no
/// data; the API calls they make are checked).
pub fn api_scope(method: &Method, path: &str) -> Option<Scope> {
    if matches!(
        path,
        "/healthz" | "/readyz" | "/api/v1/login" | "/api/v1/logout"
    ) {
        return None;
    }
    if path == "/api/v1/tokens" || path.starts_with("/api/v1/tokens/") {
        return Some(Scope::Admin);
    }
    let changes_state = path == "/api/v1/alerts"
        || path.starts_with("/api/v1/alerts/")
        || path.starts_with("/api/v1/capacity/");
    if changes_state && method != Method::GET && method != Method::HEAD {
        return Some(Scope::Admin);
    }
    if path.starts_with("/api/") || path == "/api" || path == "/metrics" {
        return Some(Scope::Query);
    }
    None
}

async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let needs = match gate.listener {
        Listener::Otlp => Some(Scope::Ingest),
        Listener::Api => api_scope(request.method(), request.uri().path()),
    };
    let Some(needs) = needs else {
        return next.run(request).await;
    };
    let token = presented(request.headers());
    match gate.access.check(token.as_deref(), needs) {
        Ok(()) => next.run(request).await,
        Err(denied) => refuse(&denied),
    }
}

/// The token in `Authorization: Bearer …`, else in the login cookie.
pub fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return bearer(value).map(str::to_string);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_string())
        })
}

/// The token of an `Authorization` value (`Bearer <token>`, scheme in any case).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// 401, 403 or 429 (with `Retry-After`), with the usual JSON error body.
fn refuse(denied: &Denied) -> Response {
    let status = match denied {
        Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
        Denied::Forbidden { .. } => StatusCode::FORBIDDEN,
        Denied::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": denied.to_string()}).to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    match denied {
        Denied::Unauthenticated => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Denied::RateLimited { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Denied::Forbidden { .. } => {}
    }
    response
}

#[derive(Clone)]
struct Tokens {
    access: Arc<Access>,
    /// Whether the API is served over TLS (the cookie is then `Secure`).
    tls: bool,
}

/// Login, logout and the token API, to merge into the API router (which
/// [`guard`] then protects: the token API needs `admin`).
pub fn routes(access: Arc<Access>, tls: bool) -> Router {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(delete_token))
        .with_state(Tokens { access, tls })
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": message.to_string()}).to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

fn cookie(value: &str, max_age: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// `{"token": "…"}`: a query or admin token becomes the UI's cookie.
async fn login(State(t): State<Tokens>, body: String) -> Response {
    let Ok(Login { token }) = serde_json::from_str::<Login>(&body) else {
        return error(StatusCode::BAD_REQUEST, "send {\"token\": \"…\"}");
    };
    let token = token.trim();
    match t.access.scope_of(token) {
        None if t.access.required() => error(StatusCode::UNAUTHORIZED, Denied::Unauthenticated),
        Some(Scope::Ingest) => error(
            StatusCode::FORBIDDEN,
            "an ingest token cannot open the UI: use a query or admin token",
        ),
        _ => match cookie(token, 30 * 86_400, t.tls) {
            Some(value) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, value)]).into_response(),
            None => error(
                StatusCode::BAD_REQUEST,
                "the token has characters a cookie cannot hold",
            ),
        },
    }
}

async fn logout(State(t): State<Tokens>) -> Response {
    match cookie("", 0, t.tls) {
        Some(value) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, value)]).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn list_tokens(State(t): State<Tokens>) -> Response {
    match t.access.list().await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scope: Scope,
    #[serde(default)]
    name: String,
}

/// `{"scope": "ingest"|"query"|"admin", "name": "…"}` → 201 with the
/// token's secret, shown this once.
async fn create_token(State(t): State<Tokens>, body: String) -> Response {
    let request: NewToken = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")),
    };
    if request.name.len() > 200 {
        return error(StatusCode::BAD_REQUEST, "name: at most 200 characters");
    }
    match t.access.create(&request.name, request.scope).await {
        Ok((info, secret)) => {
            let mut value = serde_json::to_value(info).unwrap_or_default();
            value["token"] = json!(secret);
            (StatusCode::CREATED, axum::Json(value)).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn delete_token(State(t): State<Tokens>, Path(id): Path<String>) -> Response {
    match t.access.delete(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no token {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_scope() {
        let get = Method::GET;
        let put = Method::PUT;
        let post = Method::POST;
        assert_eq!(api_scope(&get, "/healthz"), None);
        assert_eq!(api_scope(&post, "/api/v1/login"), None);
        assert_eq!(api_scope(&get, "/"), None);
        assert_eq!(api_scope(&get, "/js/main.js"), None);
        assert_eq!(api_scope(&get, "/metrics"), Some(Scope::Query));
        assert_eq!(api_scope(&post, "/api/v1/sql"), Some(Scope::Query));
        assert_eq!(
            api_scope(&get, "/api/v1/capacity/policies"),
            Some(Scope::Query)
        );
        assert_eq!(
            api_scope(&put, "/api/v1/capacity/policies/x"),
            Some(Scope::Admin)
        );
        assert_eq!(
            api_scope(&post, "/api/v1/capacity/tasks"),
            Some(Scope::Admin)
        );
        assert_eq!(
            api_scope(&Method::DELETE, "/api/v1/alerts/rules/x"),
            Some(Scope::Admin)
        );
        assert_eq!(api_scope(&get, "/api/v1/tokens"), Some(Scope::Admin));
        assert_eq!(api_scope(&get, "/api/v1/nonsense"), Some(Scope::Query));
    }

    #[test]
    fn tokens_are_read_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; loupe_token=xyz".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("xyz"));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
