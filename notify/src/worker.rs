//! The delivery worker: sends due outbox messages as signed Standard
//! Webhooks POSTs and records each outcome.
//!
//! 2xx is success. Connection errors, timeouts, 408, 429 and 5xx are
//! retried with exponential backoff and jitter — or when the receiver says
//! (`Retry-After`, in seconds or as an HTTP date). 410 Gone disables the
//! endpoint; any other 4xx gives the message up ("dead letter"), since
//! sending it again would get the same answer.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use loupe_base::clock::now_ms;

use loupe_catalog::db::{Db, Location};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::{Notify, watch};

use crate::error::{NotifyError, Result};
use crate::guard::UrlGuard;
use crate::outbox::{self, Due, Outcome};
use crate::signing;

/// How hard the worker tries.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Per-request timeout (connect + response).
    pub request_timeout: Duration,
    /// Wait after the first failure; doubles per attempt, with jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up after this many attempts…
    pub max_attempts: u32,
    /// …or once a message is this old.
    pub max_age: Duration,
    /// How often to look for due messages when nobody calls [`Worker::wake`].
    pub poll: Duration,
    /// PEM certificates trusted for `https://` receivers besides the
    /// system's (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Internal networks deliveries may still go to (the SSRF guard).
    pub allow: crate::guard::AllowList,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            request_timeout: Duration::from_secs(10),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            poll: Duration::from_millis(500),
            ca_file: None,
            allow: crate::guard::AllowList::default(),
        }
    }
}

/// Delivers the outbox of one catalog (SQLite or PostgreSQL).
#[derive(Clone)]
pub struct Worker {
    db: Arc<Db>,
    http: reqwest::Client,
    config: WorkerConfig,
    guard: UrlGuard,
    wake: Arc<Notify>,
}

/// The longest `Retry-After` honoured.
const RETRY_AFTER_CAP_MS: i64 = 3_600_000;

/// Messages attempted per pass; the rest wait for the next one.
const BATCH: usize = 64;

/// The HTTP client deliveries use: rustls (ring) for `https://`, the
/// system's roots plus `ca_file`'s, no redirects (a redirected POST would
/// arrive as a GET without the body, and could lead past the SSRF guard),
/// no proxy from the environment, and names resolved through `guard`.
fn http_client(config: &WorkerConfig, guard: &UrlGuard) -> Result<reqwest::Client> {
    // One process-wide crypto provider; a second install is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .user_agent(concat!("loupe/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(guard.resolver());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| NotifyError::Client(format!("reading CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| NotifyError::Client(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(NotifyError::Client(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| NotifyError::Client(e.to_string()))
}

impl Worker {
    /// Opens its own connection to the catalog at `location` (creating the
    /// outbox tables if needed).
    pub async fn open(location: &Location, config: WorkerConfig) -> Result<Worker> {
        let db = Db::open(location, &[&outbox::SCHEMA], &[&outbox::PG_SCHEMA]).await?;
        let guard = UrlGuard::new(config.allow.clone());
        let http = http_client(&config, &guard)?;
        Ok(Worker {
            db: Arc::new(db),
            http,
            config,
            guard,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The SSRF guard deliveries go through, for checking URLs when they are saved.
    pub fn guard(&self) -> &UrlGuard {
        &self.guard
    }

    /// Asks the worker to look at the outbox now (after an enqueue).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "webhook delivery pass failed");
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Attempts every due message once, concurrently; returns how many.
    pub async fn pass(&self) -> Result<usize> {
        let due = {
            let mut conn = self.db.conn().await?;
            outbox::due(&mut conn, now_ms(), BATCH).await?
        };
        let count = due.len();
        let attempts = due.into_iter().map(|msg| async move {
            let outcome = self.attempt(&msg).await;
            match &outcome {
                Outcome::Delivered { .. } => {
                    tracing::info!(id = %msg.id, url = %redacted(&msg.url), "webhook delivered")
                }
                other => tracing::warn!(id = %msg.id, url = %redacted(&msg.url), outcome = ?other, "webhook not delivered"),
            }
            let recorded = outbox::record(&self.db, &msg, &outcome, now_ms()).await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "recording a webhook attempt failed");
            }
        });
        futures::future::join_all(attempts).await;
        Ok(count)
    }

    async fn attempt(&self, msg: &Due) -> Outcome {
        let now = now_ms();
        if let Err(e) = self.guard.check_literal(&msg.url) {
            tracing::warn!(id = %msg.id, error = %e, "webhook refused by the SSRF guard");
            return Outcome::Failed {
                status: None,
                error: REFUSED.into(),
            };
        }
        let timestamp = now / 1000;
        let mut request = self
            .http
            .post(&msg.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg.id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(msg.body.clone());
        if let Some(secret) = &msg.secret {
            match signing::sign(secret, &msg.id, timestamp, msg.body.as_bytes()) {
                Ok(signature) => request = request.header("webhook-signature", signature),
                Err(e) => {
                    return Outcome::Failed {
                        status: None,
                        error: e.to_string(),
                    };
                }
            }
        }
        match request.send().await {
            Ok(response) => classify(
                response.status(),
                response.headers(),
                msg,
                &self.config,
                now,
            ),
            Err(e) => {
                // The detail (refused, reset, timed out, TLS) stays in the
                // log: shown through the API it would tell a user which
                // internal ports are open. Without the URL, which may
                // carry credentials.
                let e = e.without_url();
                tracing::warn!(id = %msg.id, error = %error_chain(&e), "webhook delivery failed");
                if is_guard_refusal(&e) {
                    return Outcome::Failed {
                        status: None,
                        error: REFUSED.into(),
                    };
                }
                let error = "no HTTP response from the receiver".to_string();
                retry_or_fail(msg, None, error, None, &self.config, now)
            }
        }
    }
}

/// A webhook URL as logs may show it: `scheme://host:port/path`, without
/// user-info or query string (either may hold credentials).
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0),
            u.path()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

/// What the API shows for a delivery the SSRF guard stopped.
const REFUSED: &str = "the receiver's address is internal and not in --webhook-allow";

/// Whether the SSRF guard's resolver is what failed the request.
fn is_guard_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<crate::guard::GuardError>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    msg: &Due,
    config: &WorkerConfig,
    now: i64,
) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: code };
    }
    if code == 410 {
        return Outcome::EndpointGone { status: code };
    }
    let retryable = status.is_server_error() || code == 408 || code == 429;
    if !retryable {
        return Outcome::Failed {
            status: Some(code),
            error: format!("the receiver answered {status}; not retried"),
        };
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after_ms(v, now));
    retry_or_fail(
        msg,
        Some(code),
        format!("the receiver answered {status}"),
        retry_after,
        config,
        now,
    )
}

/// `Retry-After` as a wait in ms: delta-seconds or an HTTP date.
fn retry_after_ms(value: &str, now_ms: i64) -> Option<i64> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(secs.saturating_mul(1000).min(i64::MAX as u64) as i64);
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some((at_ms - now_ms).max(0))
}

fn retry_or_fail(
    msg: &Due,
    status: Option<u16>,
    error: String,
    retry_after_ms: Option<i64>,
    config: &WorkerConfig,
    now: i64,
) -> Outcome {
    let attempts = msg.attempts + 1;
    let age = Duration::from_millis((now - msg.created_at_ms).max(0) as u64);
    if attempts >= config.max_attempts || age >= config.max_age {
        return Outcome::Failed {
            status,
            error: format!("{error}; gave up after {attempts} attempts"),
        };
    }
    let wait = match retry_after_ms {
        // The receiver's word, up to an hour.
        Some(ms) => ms.min(RETRY_AFTER_CAP_MS),
        None => backoff_ms(attempts, config),
    };
    Outcome::Retry {
        next_ms: now + wait,
        status,
        error,
    }
}

/// Exponential backoff with "equal jitter": half fixed, half random, so
/// receivers coming back up are not hit by every sender at once.
fn backoff_ms(attempts: u32, config: &WorkerConfig) -> i64 {
    let base = config.base_backoff.as_millis() as f64;
    let cap = config.max_backoff.as_millis() as f64;
    let exp = (base * 2f64.powi(attempts.saturating_sub(1).min(30) as i32)).min(cap);
    let jitter: f64 = rand::random();
    (exp / 2.0 + exp / 2.0 * jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(attempts: u32) -> Due {
        Due {
            id: "m".into(),
            url: "http://127.0.0.1:9/".into(),
            secret: None,
            body: "{}".into(),
            attempts,
            created_at_ms: 0,
        }
    }

    fn outcome(code: u16, retry_after: Option<&str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v.parse().unwrap());
        }
        classify(
            StatusCode::from_u16(code).unwrap(),
            &headers,
            &due(0),
            &WorkerConfig::default(),
            1_000,
        )
    }

    #[test]
    fn status_codes_map_to_outcomes() {
        assert_eq!(outcome(204, None), Outcome::Delivered { status: 204 });
        assert_eq!(outcome(410, None), Outcome::EndpointGone { status: 410 });
        assert!(matches!(
            outcome(400, None),
            Outcome::Failed {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(outcome(404, None), Outcome::Failed { .. }));
        assert!(matches!(
            outcome(301, None),
            Outcome::Failed {
                status: Some(301),
                ..
            }
        ));
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(outcome(code, None), Outcome::Retry { .. }),
                "{code}"
            );
        }
        assert!(matches!(
            outcome(429, Some("7")),
            Outcome::Retry { next_ms: 8_000, .. }
        ));
        assert!(matches!(
            outcome(503, Some("Thu, 01 Jan 1970 00:00:04 GMT")),
            Outcome::Retry { next_ms: 4_000, .. }
        ));
    }

    /// A real receiver on 127.0.0.1 answering 503 (Retry-After: 0) twice,
    /// then 200: the message arrives, signed, with the same id each time.
    #[tokio::test]
    async fn retries_until_the_receiver_recovers() {
        use axum::http::HeaderMap as Headers;
        use std::sync::Mutex;
        let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let secret = signing::generate_secret();
        let app = {
            let seen = seen.clone();
            let secret = secret.clone();
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: Headers, body: String| async move {
                    let h = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let ts: i64 = h("webhook-timestamp").parse().unwrap_or_default();
                    let ok = signing::verify(
                        &secret,
                        &h("webhook-id"),
                        ts,
                        body.as_bytes(),
                        &h("webhook-signature"),
                    )
                    .unwrap_or(false);
                    let mut seen = seen.lock().unwrap();
                    seen.push((h("webhook-id"), ok));
                    if seen.len() <= 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")]).into_response()
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    }
                }),
            )
        };
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let config = WorkerConfig {
            allow: "127.0.0.1".parse().unwrap(),
            ..WorkerConfig::default()
        };
        let location = Location::Sqlite(path);
        let worker = Worker::open(&location, config).await.unwrap();
        let db = Db::open(&location, &[&outbox::SCHEMA], &[]).await.unwrap();
        let msg = outbox::Message {
            id: "task_1".into(),
            url: format!("http://{addr}/hook"),
            secret: Some(secret),
            event_type: "test".into(),
            body: r#"{"type":"test"}"#.into(),
            supersede_key: None,
        };
        outbox::enqueue(&mut db.conn().await.unwrap(), &msg, now_ms())
            .await
            .unwrap();
        for _ in 0..3 {
            worker.pass().await.unwrap();
        }
        let status = outbox::status(&mut db.conn().await.unwrap(), "task_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, outbox::State::Delivered);
        assert_eq!(status.attempts, 3);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        assert!(
            seen.iter().all(|(id, ok)| id == "task_1" && *ok),
            "{seen:?}"
        );
        server.abort();
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_then_gives_up() {
        let config = WorkerConfig::default();
        for attempts in 1..8 {
            let ms = backoff_ms(attempts, &config);
            let full = 1000 * (1 << (attempts - 1));
            assert!(ms >= full / 2 && ms <= full, "{attempts}: {ms}");
        }
        assert!(backoff_ms(30, &config) <= 300_000);
        let last = retry_or_fail(&due(19), None, "x".into(), None, &config, 1);
        assert!(matches!(last, Outcome::Failed { .. }));
    }

    #[test]
    fn logged_urls_keep_no_credentials() {
        assert_eq!(
            redacted("https://user:s3cret@hooks.example.com:8443/scale/up?token=abc#x"),
            "https://hooks.example.com:8443/scale/up"
        );
        assert_eq!(
            redacted("http://10.0.0.7/hook?key=1"),
            "http://10.0.0.7:80/hook"
        );
        assert_eq!(redacted("not a url"), "<invalid URL>");
    }
}
