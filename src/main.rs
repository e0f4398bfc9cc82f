//! The `loupe` binary: command-line parsing and wiring only. The work is in
//! the `ingest`, `storage` and `query` crates.

mod access;
mod allocator;
mod background;
mod config;
mod gen_cmd;
mod listen;
mod memory_gauges;
mod routes;
mod serve;
mod sql_client;
mod ui;

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
    let terminated = serve::termination()?;
    let server = serve::Server::start(config).await?;
    let b = server.bound;
    // One line on stdout with the bound addresses, for people and scripts
    // (port 0 picks free ports).
    println!(
        "loupe listening otlp_grpc={} otlp_http={} http={}",
        b.otlp_grpc, b.otlp_http, b.http
    );
    tracing::info!(otlp_grpc = %b.otlp_grpc, otlp_http = %b.otlp_http, http = %b.http, "Loupe is ready");
    let demo = demo.map(|rate| serve::start_demo(b.otlp_grpc, rate, demo_token));
    terminated.await;
    tracing::info!("shutting down: finishing requests and flushing data");
    if let Some(demo) = demo {
        demo.stop().await;
    }
    server.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
