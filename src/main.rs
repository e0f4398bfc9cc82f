//! The `loupe` binary: command-line parsing and wiring only. The work is in
//! the `ingest`, `storage` and `query` crates.

mod access;
mod advertise;
mod allocator;
mod background;
mod config;
mod gen_cmd;
mod leader;
mod listen;
mod memory_gauges;
mod roles;
mod routes;
mod serve;
mod sql_client;
mod ui;
mod workers;

use clap::{Parser, Subcommand};

use tracing_subscriber::EnvFilter;

/// Loupe: OpenTelemetry traces, metrics and logs in; Parquet and SQL out.
#[derive(Debug, Parser)]
#[command(name = "loupe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, storage, SQL API.
    Serve(Box<config::ServeArgs>),
    /// Run a SQL query against a running server.
    Sql(sql_client::SqlArgs),
    /// Send a simulated shop's telemetry, with optional injected faults.
    Gen(Box<gen_cmd::GenArgs>),
}

fn main() -> anyhow::Result<()> {
    allocator::return_freed_memory_promptly();
    // Every HTTPS client in the process (webhooks, alerts, `gen` over
    // OTLP/HTTP, `sql`) uses rustls with ring; install it once, first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LOUPE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Sql(args) => sql_client::run(args).await,
            Command::Gen(args) => gen_cmd::run(*args).await,
        }
    })
}

async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    let demo = args.demo.then_some(args.demo_rate);
    let config = args.resolve()?;
    let demo_token = config
        .access
        .tokens
        .iter()
        .find(|t| t.scope == access::Scope::Ingest)
        .map(|t| t.secret.clone());
    if demo.is_some() && config.listen.tls.is_some() {
        anyhow::bail!("--demo sends plain OTLP/gRPC; run it without TLS");
    }
    if demo.is_some() && !config.roles.ingest {
        anyhow::bail!("--demo sends telemetry to this node: it needs the ingest role");
    }
    let terminated = serve::termination()?;
    let server = serve::Server::start(config).await?;
    let b = server.bound;
    // One line on stdout with the bound addresses, for people and scripts
    // (port 0 picks free ports).
    // Without the ingest role there are no OTLP listeners to name.
    match b.otlp {
        Some(otlp) => {
            println!(
                "loupe listening otlp_grpc={} otlp_http={} http={}",
                otlp.grpc, otlp.http, b.http
            );
            tracing::info!(otlp_grpc = %otlp.grpc, otlp_http = %otlp.http, http = %b.http, "Loupe is ready");
        }
        None => match b.worker {
            Some(worker) => {
                println!("loupe listening http={} worker_grpc={worker}", b.http);
                tracing::info!(http = %b.http, worker_grpc = %worker, "Loupe is ready (no ingest role: no OTLP listeners)");
            }
            None => {
                println!("loupe listening http={}", b.http);
                tracing::info!(http = %b.http, "Loupe is ready (no ingest role: no OTLP listeners)");
            }
        },
    }
    let demo = demo
        .zip(b.otlp)
        .map(|(rate, otlp)| serve::start_demo(otlp.grpc, rate, demo_token));
    terminated.await;
    tracing::info!("shutting down: finishing requests and flushing data");
    if let Some(demo) = demo {
        demo.stop().await;
    }
    server.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
