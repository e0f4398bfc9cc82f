//! Access: tokens and scopes on every listener (HTTP and gRPC), the UI's
//! login cookie, tokens made through the API, refusing to listen beyond
//! loopback without a token, TLS, the SSRF guard on webhook URLs, secrets
//! never shown, connection hardening and per-token ingest rate limits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::harness::{Loupe, deadline_in, init_tls, wait_until};
use crate::otlp_proto::logs_request;
use crate::webhook_receiver::Receiver;

mod connections;
mod tls;
mod webhooks;

const INGEST: &str = "ingest-secret-0123456789";
const QUERY: &str = "query-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789";

fn tokens() -> Vec<String> {
    [("ingest", INGEST), ("query", QUERY), ("admin", ADMIN)]
        .iter()
        .flat_map(|(scope, secret)| ["--token".to_string(), format!("{scope}:{secret}")])
        .collect()
}

fn start_with_tokens(extra: &[&str]) -> Loupe {
    let mut args = tokens();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Loupe::start(&args)
}

fn with_token(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

/// `(status, JSON body)` of an API call with `token`.
fn api(
    loupe: &Loupe,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = loupe.api_url(path);
    let c = loupe.client();
    let request = match method {
        "PUT" => c.put(url),
        "POST" => c.post(url),
        "DELETE" => c.delete(url),
        _ => c.get(url),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let response = with_token(request, token).send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn logs_body() -> Vec<u8> {
    logs_request("auth-test", ["hello".to_string()]).encode_to_vec()
}

fn otlp_http_status(loupe: &Loupe, token: Option<&str>) -> u16 {
    let request = loupe
        .client()
        .post(loupe.otlp_http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(logs_body());
    with_token(request, token).send().unwrap().status().as_u16()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One OTLP/gRPC logs export with `token` in the `authorization` metadata.
fn grpc_export(url: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    runtime().block_on(async {
        let mut client = LogsServiceClient::connect(url.to_string())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(logs_request("auth-test", ["hi".to_string()]));
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        client.export(request).await.map(|_| ())
    })
}

#[test]
fn every_scope_is_checked_on_every_listener() {
    let receiver = Receiver::start(&loupe_notify::signing::generate_secret(), 204);
    let loupe = start_with_tokens(&[]);

    // API: 401 without a token (with the header saying how), 403 with the
    // wrong scope, and admin for changes.
    let (status, body) = api(&loupe, "GET", "/api/v1/services", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let unauthorized = loupe
        .client()
        .get(loupe.api_url("/metrics"))
        .send()
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        api(
            &loupe,
            "GET",
            "/api/v1/services",
            Some("wrong-token-0123456789"),
            None
        )
        .0,
        401
    );
    assert_eq!(
        api(&loupe, "GET", "/api/v1/services", Some(INGEST), None).0,
        403
    );
    assert_eq!(
        api(&loupe, "GET", "/api/v1/services", Some(QUERY), None).0,
        200
    );
    assert_eq!(
        api(&loupe, "GET", "/api/v1/services", Some(ADMIN), None).0,
        200
    );
    let sql = Some(json!({"sql": "SELECT 1"}));
    assert_eq!(api(&loupe, "POST", "/api/v1/sql", None, sql.clone()).0, 401);
    assert_eq!(
        api(&loupe, "POST", "/api/v1/sql", Some(INGEST), sql.clone()).0,
        403
    );
    assert_eq!(api(&loupe, "POST", "/api/v1/sql", Some(QUERY), sql).0, 200);
    let policy = Some(json!({"webhook_url": receiver.url(), "evaluation_interval": "1h"}));
    let path = "/api/v1/capacity/policies/cart";
    assert_eq!(api(&loupe, "PUT", path, None, policy.clone()).0, 401);
    assert_eq!(
        api(&loupe, "PUT", path, Some(INGEST), policy.clone()).0,
        403
    );
    assert_eq!(api(&loupe, "PUT", path, Some(QUERY), policy.clone()).0, 403);
    assert_eq!(api(&loupe, "PUT", path, Some(ADMIN), policy).0, 200);
    assert_eq!(api(&loupe, "GET", path, Some(QUERY), None).0, 200);
    let task = Some(json!({"service": "cart", "to": 2}));
    assert_eq!(
        api(&loupe, "POST", "/api/v1/capacity/tasks", Some(QUERY), task).0,
        403
    );
    let rule = Some(json!({"sql": "SELECT 1 AS n", "every": "1h"}));
    assert_eq!(
        api(&loupe, "PUT", "/api/v1/alerts/rules/r", Some(QUERY), rule).0,
        403
    );
    assert_eq!(
        api(&loupe, "GET", "/api/v1/tokens", Some(QUERY), None).0,
        403
    );
    // Health, readiness and the UI's files need nothing.
    assert_eq!(api(&loupe, "GET", "/healthz", None, None).0, 200);
    assert_eq!(api(&loupe, "GET", "/readyz", None, None).0, 200);
    let page = loupe.client().get(loupe.api_url("/")).send().unwrap();
    assert_eq!(page.status(), 200);

    // OTLP/HTTP needs ingest.
    assert_eq!(otlp_http_status(&loupe, None), 401);
    assert_eq!(otlp_http_status(&loupe, Some(QUERY)), 403);
    assert_eq!(otlp_http_status(&loupe, Some(ADMIN)), 403);
    assert_eq!(otlp_http_status(&loupe, Some(INGEST)), 200);

    // OTLP/gRPC needs ingest, in the `authorization` metadata.
    let url = loupe.grpc_url();
    let code = |token| grpc_export(&url, token).err().map(|s| s.code());
    assert_eq!(code(None), Some(tonic::Code::Unauthenticated));
    assert_eq!(
        code(Some("wrong-token-0123456789")),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(code(Some(QUERY)), Some(tonic::Code::PermissionDenied));
    assert_eq!(code(Some(INGEST)), None);

    // Only the two authorised exports were stored.
    let (_, rows) = api(
        &loupe,
        "POST",
        "/api/v1/sql",
        Some(QUERY),
        Some(json!({"sql": "SELECT count(*) FROM logs WHERE service = 'auth-test'"})),
    );
    assert_eq!(rows["rows"][0][0], 2, "{rows}");

    // The UI logs in: the token goes into an HttpOnly, SameSite=Strict cookie.
    let (status, _) = api(
        &loupe,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"token": "nope-nope-nope-nope"})),
    );
    assert_eq!(status, 401);
    let (status, _) = api(
        &loupe,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"token": INGEST})),
    );
    assert_eq!(status, 403);
    let login = loupe
        .client()
        .post(loupe.api_url("/api/v1/login"))
        .json(&json!({"token": QUERY}))
        .send()
        .unwrap();
    assert_eq!(login.status(), 204);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let with_cookie = loupe
        .client()
        .get(loupe.api_url("/api/v1/services"))
        .header("cookie", &pair)
        .send()
        .unwrap();
    assert_eq!(with_cookie.status(), 200);
    let admin_with_query_cookie = loupe
        .client()
        .get(loupe.api_url("/api/v1/tokens"))
        .header("cookie", &pair)
        .send()
        .unwrap();
    assert_eq!(admin_with_query_cookie.status(), 403);

    // Tokens made through the API work at once, are listed without their
    // secret, are stored only hashed, and stop working when deleted.
    let (status, made) = api(
        &loupe,
        "POST",
        "/api/v1/tokens",
        Some(ADMIN),
        Some(json!({"scope": "ingest", "name": "checkout"})),
    );
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().unwrap().to_string();
    assert_eq!(otlp_http_status(&loupe, Some(&secret)), 200);
    assert_eq!(code(Some(&secret)), None);
    let (_, list) = api(&loupe, "GET", "/api/v1/tokens", Some(ADMIN), None);
    assert_eq!(list[0]["name"], "checkout", "{list}");
    assert_eq!(list[0]["scope"], "ingest", "{list}");
    assert!(!list.to_string().contains(&secret), "{list}");
    for file in std::fs::read_dir(loupe.data_dir()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("catalog") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the token in the clear",
                path.display()
            );
        }
    }
    let id = made["id"].as_str().unwrap();
    let (status, _) = api(
        &loupe,
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(otlp_http_status(&loupe, Some(&secret)), 401);

    // No secret ever reaches the log.
    let log = loupe.log();
    for secret in [INGEST, QUERY, ADMIN, secret.as_str()] {
        assert!(!log.contains(secret), "a token is in the log:\n{log}");
    }
}

/// `loupe serve` with `args` and its own data dir; returns its exit status
/// and stderr if it exits within 30 s, or `None` (and kills it) if it
/// prints that it is listening.
fn serve_outcome(args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("LOUPE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 15];
    let read = stdout.read_exact(&mut first);
    if read.is_ok() && &first == b"loupe listening" {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Some((status, stderr))
}

#[test]
fn refuses_to_listen_beyond_loopback_without_a_token() {
    let open = [
        "--otlp-grpc",
        "127.0.0.1:0",
        "--otlp-http",
        "127.0.0.1:0",
        "--http",
        "0.0.0.0:0",
    ];
    let (status, stderr) = serve_outcome(&open).expect("started on 0.0.0.0 without a token");
    assert!(!status.success());
    for hint in ["0.0.0.0", "--token", "LOUPE_TOKENS", "--insecure-no-auth"] {
        assert!(stderr.contains(hint), "no {hint} in: {stderr}");
    }
    // The gRPC listener counts too.
    let grpc_open = [
        "--otlp-grpc",
        "0.0.0.0:0",
        "--otlp-http",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ];
    assert!(serve_outcome(&grpc_open).is_some());
    // A token, or the explicit opt-out, lets it start.
    let mut with_token = open.to_vec();
    with_token.extend(["--token", "admin:admin-secret-0123456789"]);
    assert!(serve_outcome(&with_token).is_none());
    let mut insecure = open.to_vec();
    insecure.push("--insecure-no-auth");
    assert!(serve_outcome(&insecure).is_none());
    // Loopback without tokens works as before.
    assert!(
        serve_outcome(&[
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0"
        ])
        .is_none()
    );
}

#[test]
fn the_ui_logs_in_with_a_token_kept_in_an_httponly_cookie() {
    let loupe = start_with_tokens(&[]);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let mut b = Browser::start(&shots);
    b.navigate(&format!("http://{}/services", loupe.http));
    let wait = Duration::from_secs(30);
    b.wait_for(
        "document.querySelector('form.login input[name=token]') !== null",
        wait,
        "the login form after a 401",
    );
    b.screenshot("access-login");
    b.type_into("form.login input[name=token]", "not-a-token-0123456789");
    b.click("form.login button[type=submit]");
    b.wait_for(
        "document.querySelector('form.login [role=alert]').textContent.includes('token')",
        wait,
        "the refusal shown",
    );
    b.type_into("form.login input[name=token]", QUERY);
    b.click("form.login button[type=submit]");
    b.wait_for(
        "document.readyState === 'complete' && document.querySelector('form.login') === null \
         && document.querySelector('.page.services') !== null && !document.querySelector('.state.error')",
        wait,
        "the services page after logging in",
    );
    // The token is in an HttpOnly cookie: the page's scripts cannot read it.
    assert_eq!(b.eval("document.cookie"), json!(""));
    let status = b.eval("fetch('/api/v1/services').then(r => r.status)");
    assert_eq!(status, json!(200));
}
