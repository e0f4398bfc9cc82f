//! The web UI: plain ES modules under `ui/`, embedded into the binary
//! (read from disk in debug builds, so UI edits need no recompile), served
//! with content types, ETags, caching headers and gzip. Paths that are not
//! files fall back to `index.html`, so the UI's own URLs reload.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use loupe_query::error_response;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// Serves a UI file, or `index.html` for any other path outside `/api/`.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return error_response(StatusCode::NOT_FOUND, "no such endpoint");
    }
    if method != Method::GET && method != Method::HEAD {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "the UI only answers GET");
    }
    let mut name = path.trim_start_matches('/');
    if name.is_empty() {
        name = "index.html";
    }
    let file = match Assets::get(name) {
        Some(file) => file,
        // A missing file (its last segment has an extension) is a 404; any
        // other path is a UI route.
        None if name.rsplit('/').next().is_some_and(|s| s.contains('.')) => {
            return (StatusCode::NOT_FOUND, "no such file\n").into_response();
        }
        None => {
            name = "index.html";
            match Assets::get(name) {
                Some(file) => file,
                None => return (StatusCode::NOT_FOUND, "UI not built in\n").into_response(),
            }
        }
    };
    let hash = file.metadata.sha256_hash();
    let gzip = compressible(name) && accepts_gzip(&headers);
    let etag = format!("\"{}{}\"", hex_prefix(&hash), if gzip { "-gz" } else { "" });
    let cache = if name.starts_with("vendor/") {
        // Vendored files carry their version in their name.
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if gzip {
            Body::from(gzipped(&hash, &file.data))
        } else {
            Body::from(file.data.into_owned())
        };
        // For HEAD, hyper drops the body and keeps its length.
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(name)),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

type GzCache = Mutex<HashMap<[u8; 32], Bytes>>;

/// Each file is compressed once per content hash.
fn gzipped(hash: &[u8; 32], data: &[u8]) -> Bytes {
    static CACHE: OnceLock<GzCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(hash) {
        return hit.clone();
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let out = Bytes::from(
        enc.write_all(data)
            .and_then(|()| enc.finish())
            .unwrap_or_default(),
    );
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(*hash, out.clone());
    out
}

fn compressible(name: &str) -> bool {
    !name.ends_with(".png") && !name.ends_with(".woff2")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
