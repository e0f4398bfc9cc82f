//! `loupe serve`: opens storage (replaying the WAL), starts the OTLP
//! receivers and the API, and on SIGINT/SIGTERM stops accepting, lets
//! in-flight requests finish, flushes everything and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loupe_base::self_metrics::Registry;
use loupe_ingest::Ingestor;
use loupe_query::QueryEngine;
use loupe_storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::routes;

/// Addresses actually bound (they differ from the configured ones for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
}

/// A running server; [`Server::shutdown`] stops it cleanly.
pub struct Server {
    pub bound: Bound,
    pub storage: Arc<Storage>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Server {
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        let registry = Registry::default();
        let data_dir = config.storage.data_dir.clone();
        let storage = Storage::open(config.storage.clone(), &registry)
            .await
            .with_context(|| format!("opening data directory {}", data_dir.display()))?;
        let window = loupe_ingest::AcceptWindow {
            past: config.storage.maintenance.retention,
            future: config.accept_future,
        };
        let ingestor = Arc::new(Ingestor::new(storage.clone(), &registry, window));
        let engine = Arc::new(QueryEngine::new(
            storage.clone(),
            config.query.clone(),
            &registry,
        )?);

        let grpc_listener = bind(config.otlp_grpc, "OTLP/gRPC").await?;
        let http_listener = bind(config.otlp_http, "OTLP/HTTP").await?;
        let api_listener = bind(config.http, "the API").await?;
        let bound = Bound {
            otlp_grpc: grpc_listener.local_addr()?,
            otlp_http: http_listener.local_addr()?,
            http: api_listener.local_addr()?,
        };

        let background = crate::background::open(
            &data_dir,
            engine.clone(),
            format!("http://{}", bound.http),
            config.webhook_ca_file.clone(),
            ingestor.clone(),
        )?;

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let routes = loupe_ingest::grpc_routes(ingestor.clone(), config.max_request_bytes);
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc_stop = stopped(stop_rx.clone());
        let request_timeout = config.request_timeout;
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .timeout(request_timeout)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, grpc_stop)
                .await
                .context("OTLP/gRPC server")
        }));

        let otlp_http =
            loupe_ingest::http::router(ingestor, config.max_request_bytes, config.request_timeout);
        let http_stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            axum::serve(http_listener, otlp_http)
                .with_graceful_shutdown(http_stop)
                .await
                .context("OTLP/HTTP server")
        }));

        tasks.extend(background.spawn(&stop_rx));
        let api = routes::api_router(
            storage.clone(),
            engine,
            registry,
            background.capacity.clone(),
            background.alerts.clone(),
        );
        let api_stop = stopped(stop_rx);
        tasks.push(tokio::spawn(async move {
            axum::serve(api_listener, api)
                .with_graceful_shutdown(api_stop)
                .await
                .context("API server")
        }));

        Ok(Server {
            bound,
            storage,
            stop,
            tasks,
        })
    }

    /// Stops accepting, waits (a bounded time) for in-flight requests, then
    /// flushes all data to Parquet.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
                Err(_) => tracing::warn!("in-flight requests did not finish within 10s"),
            }
        }
        self.storage
            .shutdown()
            .await
            .context("flushing data on shutdown")?;
        Ok(())
    }
}

/// Registers the SIGINT and SIGTERM handlers now — so a signal that
/// arrives while the server is still starting is neither lost nor fatal —
/// and returns a future that resolves at the first of them.
pub fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// The `--demo` workload running in-process.
pub struct Demo {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the simulated shop against this server's OTLP/gRPC port.
pub fn start_demo(otlp_grpc: SocketAddr, rate: f64) -> Demo {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = loupe_gen::GenConfig {
        endpoint: format!("http://{otlp_grpc}"),
        rate,
        scenario: loupe_gen::Scenario::Demo,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        concurrency: 2,
        batch: 10,
        progress: false,
        ..Default::default()
    };
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        match loupe_gen::run(config, flag).await {
            Ok(report) => tracing::info!(
                traces = report.traces,
                errors = report.errors,
                "demo workload stopped"
            ),
            Err(e) => tracing::warn!(error = %e, "demo workload failed"),
        }
    });
    tracing::info!(
        rate,
        "demo workload started: a simulated shop with incidents every few minutes"
    );
    Demo { stop, task }
}

impl Demo {
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}
