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

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `cert.pem` and `key.pem`; returns the certificate's PEM (the test CA).
fn make_certificate(dir: &std::path::Path) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    pem
}

/// A tonic channel over TLS (trusting `ca_pem`) to `addr`.
async fn tls_channel(addr: SocketAddr, ca_pem: &str) -> tonic::transport::Channel {
    use tonic::codegen::{BoxFuture, Service};
    #[derive(Clone)]
    struct Connect(SocketAddr, tokio_rustls::TlsConnector);
    impl Service<tonic::codegen::http::Uri> for Connect {
        type Response =
            hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
        type Error = std::io::Error;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
            let Connect(addr, connector) = self.clone();
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Ok(hyper_util::rt::TokioIo::new(
                    connector.connect(name, tcp).await?,
                ))
            })
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(Connect(addr, connector))
        .await
        .unwrap()
}

#[test]
fn every_listener_speaks_tls_with_the_configured_certificate() {
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certificate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let loupe = start_with_tokens(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let trusting = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // API and UI over HTTPS.
    let health = trusting
        .get(format!("https://127.0.0.1:{}/healthz", loupe.http.port()))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let services = trusting
        .get(format!(
            "https://127.0.0.1:{}/api/v1/services",
            loupe.http.port()
        ))
        .bearer_auth(QUERY)
        .send()
        .unwrap();
    assert_eq!(services.status(), 200);
    // OTLP/HTTP over HTTPS.
    let export = trusting
        .post(format!(
            "https://127.0.0.1:{}/v1/logs",
            loupe.otlp_http.port()
        ))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(INGEST)
        .body(logs_body())
        .send()
        .unwrap();
    assert_eq!(export.status(), 200);
    // OTLP/gRPC over TLS.
    runtime().block_on(async {
        let channel = tls_channel(loupe.grpc, &ca).await;
        let mut client = LogsServiceClient::new(channel);
        let mut request = tonic::Request::new(logs_request("tls-test", ["hi".to_string()]));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {INGEST}").parse().unwrap());
        client.export(request).await.unwrap();
    });
    // Plain HTTP is not answered, and a client without the CA refuses the server.
    assert!(
        loupe
            .client()
            .get(loupe.api_url("/healthz"))
            .send()
            .is_err()
    );
    let untrusting = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://127.0.0.1:{}/healthz", loupe.http.port()))
            .send()
            .is_err()
    );
    let (_, rows) = {
        let r = trusting
            .post(format!("https://127.0.0.1:{}/api/v1/sql", loupe.http.port()))
            .bearer_auth(QUERY)
            .json(&json!({"sql": "SELECT count(*) FROM logs WHERE service IN ('auth-test', 'tls-test')"}))
            .send()
            .unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    assert_eq!(rows["rows"][0][0], 2, "{rows}");
    // `loupe sql` over HTTPS, trusting the CA given.
    let output = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["sql", "--format", "csv", "--url"])
        .arg(format!("https://127.0.0.1:{}", loupe.http.port()))
        .args(["--token", QUERY, "--ca-file"])
        .arg(&cert)
        .arg("SELECT count(*) AS n FROM logs")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "n\n2", "{stdout}");
}

#[test]
fn webhooks_to_internal_addresses_are_refused_unless_allowed() {
    // No allowlist at all (the harness allows 127.0.0.1; this overrides it).
    let loupe = Loupe::start(&["--webhook-allow", ""]);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:8080/hook",
        "http://192.168.1.1/",
        "http://localhost:9/hook",
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
    ] {
        let (status, body) = api(
            &loupe,
            "PUT",
            "/api/v1/capacity/policies/cart",
            None,
            Some(json!({"webhook_url": url})),
        );
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("--webhook-allow"),
            "{body}"
        );
        let (status, body) = api(
            &loupe,
            "PUT",
            "/api/v1/alerts/receivers/ops",
            None,
            Some(json!({"type": "webhook", "url": url})),
        );
        assert_eq!(status, 400, "{url}: {body}");
    }
    drop(loupe);

    // Allowed when saved, refused when delivered (the check runs again on
    // every delivery, on an IP literal and on the addresses a name resolves
    // to, so re-pointing a name later does not get through): the receiver
    // never hears anything, and the task's error does not say what is
    // listening where.
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&["--webhook-allow", "127.0.0.1,::1"]);
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    for (service, url) in [("cart", receiver.url()), ("email", by_name)] {
        let (status, body) = api(
            &loupe,
            "PUT",
            &format!("/api/v1/capacity/policies/{service}"),
            None,
            Some(
                json!({"webhook_url": url, "webhook_secret": secret, "evaluation_interval": "1h"}),
            ),
        );
        assert_eq!(status, 200, "{body}");
    }
    let loupe = Loupe::start_in(loupe, &["--webhook-allow", ""]);
    for service in ["cart", "email"] {
        let (status, task) = api(
            &loupe,
            "POST",
            "/api/v1/capacity/tasks",
            None,
            Some(json!({"service": service, "to": 3})),
        );
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap().to_string();
        let mut seen = Value::Null;
        let failed = wait_until(deadline_in(Duration::from_secs(20)), || {
            seen = api(
                &loupe,
                "GET",
                &format!("/api/v1/capacity/tasks/{id}"),
                None,
                None,
            )
            .1;
            seen["state"] == "failed"
        });
        assert!(failed, "{service}: {seen}");
        let error = seen["delivery"]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("--webhook-allow"), "{service}: {seen}");
        assert!(!error.contains(&receiver.addr.port().to_string()), "{seen}");
    }
    assert!(receiver.deliveries().is_empty());

    // A receiver that does not answer: the error is the same whatever the
    // reason (refused, reset, timed out), so it cannot map internal ports.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let loupe = Loupe::start_in(loupe, &[]);
    let (status, body) = api(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/cart",
        None,
        Some(
            json!({"webhook_url": closed_url, "webhook_secret": secret, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (_, task) = api(
        &loupe,
        "POST",
        "/api/v1/capacity/tasks",
        None,
        Some(json!({"service": "cart", "to": 4})),
    );
    let id = task["id"].as_str().unwrap().to_string();
    let mut seen = Value::Null;
    let attempted = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = api(
            &loupe,
            "GET",
            &format!("/api/v1/capacity/tasks/{id}"),
            None,
            None,
        )
        .1;
        seen["delivery"]["last_error"].is_string()
    });
    assert!(attempted, "{seen}");
    assert_eq!(
        seen["delivery"]["last_error"], "no HTTP response from the receiver",
        "{seen}"
    );
}

#[test]
fn secrets_are_never_shown_and_manual_tasks_keep_to_the_policy() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let other = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&[]);
    let path = "/api/v1/capacity/policies/cart";
    let (status, saved) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret, "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let (_, got) = api(&loupe, "GET", path, None, None);
    let (_, list) = api(&loupe, "GET", "/api/v1/capacity/policies", None, None);
    for view in [&saved, &got, &list[0]["policy"]] {
        assert_eq!(view["webhook_secret_set"], true, "{view}");
        assert!(view.get("webhook_secret").is_none(), "{view}");
    }
    assert!(!list.to_string().contains(&secret));
    // Saving again with the same URL keeps the secret…
    let (status, _) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200);
    // …a new URL needs it stated again.
    let (status, body) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(json!({"webhook_url": other.url(), "min": 2, "max": 10, "evaluation_interval": "1h"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("webhook_secret"),
        "{body}"
    );
    let (status, _) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret, "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200);
    // A generated secret is shown once, in the answer that made it.
    let (_, fresh) = api(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/email",
        None,
        Some(json!({"webhook_url": receiver.url(), "evaluation_interval": "1h"})),
    );
    assert!(
        fresh["generated_webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "{fresh}"
    );
    let (_, again) = api(&loupe, "GET", "/api/v1/capacity/policies/email", None, None);
    assert!(again.get("generated_webhook_secret").is_none(), "{again}");
    assert!(again.get("webhook_secret").is_none(), "{again}");

    // Alert receivers: the same rule for a changed URL.
    let rpath = "/api/v1/alerts/receivers/ops";
    let (status, _) = api(
        &loupe,
        "PUT",
        rpath,
        None,
        Some(json!({"type": "webhook", "url": receiver.url(), "secret": secret})),
    );
    assert_eq!(status, 200);
    let (status, body) = api(
        &loupe,
        "PUT",
        rpath,
        None,
        Some(json!({"type": "webhook", "url": other.url()})),
    );
    assert_eq!(status, 400, "{body}");

    // A manual task stays within [min, max] unless forced.
    let tasks = "/api/v1/capacity/tasks";
    for to in [1, 11] {
        let (status, body) = api(
            &loupe,
            "POST",
            tasks,
            None,
            Some(json!({"service": "cart", "to": to})),
        );
        assert_eq!(status, 400, "{to}: {body}");
        assert!(body["error"].as_str().unwrap().contains("force"), "{body}");
    }
    let (status, _) = api(
        &loupe,
        "POST",
        tasks,
        None,
        Some(json!({"service": "cart", "to": 10})),
    );
    assert_eq!(status, 201);
    let (status, body) = api(
        &loupe,
        "POST",
        tasks,
        None,
        Some(json!({"service": "cart", "to": 50, "force": true})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["to"], 50, "{body}");
    assert!(!loupe.log().contains(&secret), "the secret is in the log");
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    let loupe = Loupe::start(&["--header-timeout", "1s", "--max-connections", "4"]);
    // Slowloris: a request head dribbled a byte at a time is cut off
    // after the header timeout, however steadily bytes arrive.
    let mut slow = TcpStream::connect(loupe.http).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"X").is_err() || closed_within(&mut slow, Duration::from_millis(1)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a dribbling client was still connected after 4 s");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A client that connects and says nothing is closed on every listener.
    for addr in [loupe.http, loupe.otlp_http, loupe.grpc] {
        let mut idle = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut idle, Duration::from_secs(4)),
            "{addr} kept a silent client"
        );
    }
    // Beyond the cap, connections are closed at once; the server stays up.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(loupe.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(loupe.http).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(800)),
        "a fifth connection was kept"
    );
    drop(held);
    let healthy = wait_until(deadline_in(Duration::from_secs(5)), || {
        loupe
            .client()
            .get(loupe.api_url("/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(healthy);
    // Ordinary clients are unaffected (this one waits between requests on
    // a kept-alive connection).
    assert_eq!(loupe.count("SELECT count(*) FROM logs"), 0);
}

#[test]
fn ingest_over_a_tokens_rate_limit_gets_429_with_a_retry_hint() {
    let loupe = start_with_tokens(&["--ingest-rate-limit", "1"]);
    let statuses: Vec<reqwest::blocking::Response> = (0..4)
        .map(|_| {
            loupe
                .client()
                .post(loupe.otlp_http_url("/v1/logs"))
                .header("content-type", "application/x-protobuf")
                .bearer_auth(INGEST)
                .body(logs_body())
                .send()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses[0].status(), 200);
    let limited = statuses
        .iter()
        .find(|r| r.status() == 429)
        .expect("no 429 for 4 requests at a limit of 1/s");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");

    // gRPC: RESOURCE_EXHAUSTED with google.rpc.RetryInfo.
    std::thread::sleep(Duration::from_millis(1100));
    let url = loupe.grpc_url();
    let results: Vec<Result<(), tonic::Status>> =
        (0..4).map(|_| grpc_export(&url, Some(INGEST))).collect();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let status = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("no RESOURCE_EXHAUSTED for 4 exports at 1/s");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt;
    let hint = status.get_details_retry_info().expect("no RetryInfo");
    assert!(
        hint.retry_delay
            .is_some_and(|d| d <= Duration::from_secs(1)),
        "{hint:?}"
    );

    // Query traffic is not limited, and the server is fine.
    for _ in 0..5 {
        assert_eq!(
            api(&loupe, "GET", "/api/v1/services", Some(QUERY), None).0,
            200
        );
    }
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
