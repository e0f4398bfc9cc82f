//! `loupe serve`: opens storage (replaying the WAL), starts what the
//! node's roles call for — the OTLP receivers (`ingest`), the query APIs
//! (`query`), competing for the maintenance lead (`compact`) — and the
//! operational API, and on SIGINT/SIGTERM stops accepting, lets in-flight
//! requests finish, flushes everything and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loupe_base::self_metrics::Registry;
use loupe_catalog::db::Location;
use loupe_ingest::Ingestor;
use loupe_query::QueryEngine;
use loupe_storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access::http::Listener;
use crate::access::{self, Access};
use crate::advertise::advertised;
use crate::config::ServeConfig;
use crate::listen::{self, Hardening};
use crate::routes;

/// Addresses actually bound (they differ from the configured ones for port
/// 0); no OTLP ones on a node without the `ingest` role.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub otlp: Option<Otlp>,
    pub http: SocketAddr,
    /// The gRPC listener serving the distributed-query worker (the OTLP/gRPC
    /// one on an ingest node); `None` on a single node.
    pub worker: Option<SocketAddr>,
}

/// The OTLP listeners' addresses.
#[derive(Debug, Clone, Copy)]
pub struct Otlp {
    pub grpc: SocketAddr,
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

/// How often a node on a PostgreSQL catalog refreshes its `nodes` row.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps this node's membership row fresh until `stop`.
async fn heartbeat(
    db: Arc<loupe_catalog::pg::PgDb>,
    node: String,
    addrs: loupe_catalog::pg::NodeAddrs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return Ok(()),
        }
        let beat = tokio::time::timeout(
            HEARTBEAT_INTERVAL,
            loupe_catalog::pg::heartbeat(&db, &node, &addrs),
        )
        .await;
        match beat {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "node heartbeat failed; will retry"),
            Err(_) => tracing::warn!("node heartbeat timed out; will retry"),
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Server {
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        let registry = Registry::default();
        let data_dir = config.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let catalog = catalog_location(&config)?;
        let access = Arc::new(
            Access::open(
                &catalog,
                &config.access.tokens,
                config.access.ingest_rate_limit,
            )
            .await
            .context("opening access tokens")?,
        );
        refuse_open_exposure(&config, &access)?;
        let rules = Hardening::new(&config.listen)?;
        let storage = Storage::open(config.storage.clone(), &registry)
            .await
            .with_context(|| format!("opening data directory {}", data_dir.display()))?;
        let window = loupe_ingest::AcceptWindow {
            past: config.storage.maintenance.retention,
            future: config.accept_future,
        };
        let ingestor = Arc::new(Ingestor::new(
            storage.clone(),
            &registry,
            window,
            config.ingest_in_flight_bytes,
        ));
        let cluster = crate::workers::cluster_for(&storage, &access, &rules);
        let mut engine = QueryEngine::new(storage.clone(), config.query.clone(), &registry)?;
        if let Some(cluster) = &cluster {
            engine = engine.with_cluster(cluster.clone());
        }
        let engine = Arc::new(engine);
        let worker = engine.worker()?;
        crate::memory_gauges::register(
            &registry,
            &config,
            storage.clone(),
            ingestor.clone(),
            engine.clone(),
        );

        let roles = config.roles;
        // One gRPC listener: OTLP on an ingest node, the worker on every
        // node of a cluster (a node without the ingest role opens the
        // `--otlp-grpc` address for the worker alone).
        let grpc_listener = if roles.ingest || worker.is_some() {
            Some(bind(config.otlp_grpc, "gRPC").await?)
        } else {
            None
        };
        let otlp_http_listener = if roles.ingest {
            Some(bind(config.otlp_http, "OTLP/HTTP").await?)
        } else {
            None
        };
        let api_listener = bind(config.http, "the API").await?;
        let grpc_addr = grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let bound = Bound {
            otlp: match (grpc_addr, &otlp_http_listener) {
                (Some(grpc), Some(http)) => Some(Otlp {
                    grpc,
                    http: http.local_addr()?,
                }),
                _ => None,
            },
            http: api_listener.local_addr()?,
            worker: grpc_addr.filter(|_| worker.is_some()),
        };

        let scheme = if rules.tls() { "https" } else { "http" };
        let background = crate::background::open(
            &catalog,
            engine.clone(),
            format!("{scheme}://{}", bound.http),
            config.webhook_ca_file.clone(),
            config.webhook_allow.clone(),
            ingestor.clone(),
            config.alert_suspects_timeout,
        )
        .await?;

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Location::Postgres(_) = catalog {
            tasks.push(tokio::spawn(
                access
                    .clone()
                    .reload_every(access::SHARED_RELOAD, stop_rx.clone()),
            ));
        }

        if let Some(grpc_listener) = grpc_listener {
            let mut routes = tonic::service::Routes::default();
            if roles.ingest {
                routes = loupe_ingest::grpc_routes(
                    ingestor.clone(),
                    config.max_request_bytes,
                    access::grpc::interceptor(access.clone()),
                );
            }
            if let Some(worker) = worker {
                routes = routes.add_service(worker.into_worker_server());
            }
            let incoming = listen::grpc_incoming(grpc_listener, &rules, stop_rx.clone());
            let grpc_stop = stopped(stop_rx.clone());
            let request_timeout = config.request_timeout;
            let keepalive = Some(rules.http2_keepalive);
            let max_streams = rules.http2_max_streams;
            tasks.push(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .timeout(request_timeout)
                    .http2_keepalive_interval(keepalive)
                    .http2_keepalive_timeout(keepalive)
                    .max_concurrent_streams(Some(max_streams))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, grpc_stop)
                    .await
                    .context("gRPC server")
            }));
        }
        if let Some(http_listener) = otlp_http_listener {
            let otlp_http = access::http::guard(
                loupe_ingest::http::router(
                    ingestor,
                    config.max_request_bytes,
                    config.request_timeout,
                ),
                access.clone(),
                Listener::Otlp,
            );
            tasks.push(tokio::spawn(listen::serve_http(
                http_listener,
                otlp_http,
                rules.clone(),
                stop_rx.clone(),
            )));
        }

        let (leading, leader_tasks) = crate::leader::start(
            &storage,
            roles.compact,
            &config.storage.catalog_url,
            &registry,
            &stop_rx,
        )
        .await?;
        tasks.extend(leader_tasks);
        tasks.extend(background.spawn(&leading, &stop_rx));
        if let Some(db) = storage.postgres() {
            let addrs = loupe_catalog::pg::NodeAddrs {
                http_addr: advertised(bound.http, &config.advertise_host),
                grpc_addr: bound
                    .worker
                    .map(|a| advertised(a, &config.advertise_host))
                    .unwrap_or_default(),
                roles: roles.to_string(),
            };
            let node = storage.node_id().to_string();
            tasks.push(tokio::spawn(heartbeat(
                db.clone(),
                node,
                addrs,
                stop_rx.clone(),
            )));
            if let Some(cluster) = cluster {
                tasks.push(tokio::spawn(crate::workers::follow(
                    db,
                    cluster,
                    stop_rx.clone(),
                )));
            }
        }
        let status = routes::NodeStatus {
            roles,
            http_addr: advertised(bound.http, &config.advertise_host),
            leading,
        };
        let mut api = routes::ops_router(storage.clone(), registry, status);
        if roles.query {
            api = routes::query_router(
                engine,
                background.capacity.clone(),
                background.alerts.clone(),
            )
            .merge(api);
        } else {
            api = api.fallback(routes::not_a_query_node);
        }
        let api = api.merge(access::http::routes(access.clone(), rules.tls()));
        let api = access::http::guard(api, access, Listener::Api);
        tasks.push(tokio::spawn(listen::serve_http(
            api_listener,
            api,
            rules,
            stop_rx,
        )));

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

/// Refuses to listen beyond loopback with no token: Loupe holds every
/// service's logs and sends signed scale orders, so an open port off the
/// machine would hand both to anyone who can reach it.
/// Where the catalog is: the data directory's SQLite file, or the
/// PostgreSQL database `--catalog` names (shared by every node).
fn catalog_location(config: &ServeConfig) -> anyhow::Result<Location> {
    let url = &config.storage.catalog_url;
    if url.is_empty() {
        Ok(Location::Sqlite(
            config.storage.data_dir.join("catalog.sqlite"),
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Location::Postgres(url.clone()))
    } else {
        anyhow::bail!(
            "catalog: expected postgres://… (or nothing for the SQLite file in the data directory)"
        )
    }
}

fn refuse_open_exposure(config: &ServeConfig, access: &Access) -> anyhow::Result<()> {
    if access.required() {
        return Ok(());
    }
    let mut listeners = vec![("the API", config.http)];
    if config.roles.ingest {
        listeners.splice(
            0..0,
            [
                ("OTLP/gRPC", config.otlp_grpc),
                ("OTLP/HTTP", config.otlp_http),
            ],
        );
    } else if !config.storage.catalog_url.is_empty() {
        // The distributed-query worker's listener (see `workers`).
        listeners.insert(0, ("the distributed-query worker", config.otlp_grpc));
    }
    let open = listeners.iter().find(|(_, a)| !a.ip().is_loopback());
    if let Some((what, addr)) = open
        && config.access.insecure_no_auth
    {
        tracing::warn!(%addr, "listening for {what} beyond loopback without any token (--insecure-no-auth)");
    } else if let Some((what, addr)) = open {
        anyhow::bail!(
            "refusing to listen for {what} on {addr} without an access token: anyone who can reach it could read all telemetry and change capacity policies. \
             Set tokens with --token SCOPE:SECRET (repeatable; scopes ingest, query, admin), LOUPE_TOKENS='ingest:SECRET1,admin:SECRET2' \
             or tokens = [\"admin:SECRET\"] in the config file (make secrets with `openssl rand -hex 24`); \
             or pass --insecure-no-auth if something in front of Loupe authenticates every request"
        );
    }
    Ok(())
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

/// Starts the simulated shop against this server's OTLP/gRPC port, with
/// `token` (an ingest token) when the server asks for one.
pub fn start_demo(otlp_grpc: SocketAddr, rate: f64, token: Option<String>) -> Demo {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = loupe_gen::GenConfig {
        endpoint: format!("http://{otlp_grpc}"),
        rate,
        token,
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
