//! `loupe sql`: sends a query to a running server's SQL API and prints the
//! result as a table, JSON or CSV.

use std::io::Cursor;
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::ipc::reader::StreamReader;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT service, count(*) FROM logs GROUP BY service".
    pub sql: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Base URL of the Loupe API.
    #[arg(long, env = "LOUPE_URL", default_value = "http://127.0.0.1:7080")]
    pub url: String,
    /// Access token (query or admin scope) when the server asks for one.
    #[arg(long, env = "LOUPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificates to trust for an https:// URL besides the system's
    /// (a server with a private CA).
    #[arg(long, env = "LOUPE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let accept = match args.format {
        Format::Table => "application/vnd.apache.arrow.stream",
        Format::Json => "application/json",
        Format::Csv => "text/csv",
    };
    let url = format!("{}/api/v1/sql", args.url.trim_end_matches('/'));
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(args.timeout_secs));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not PEM", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build()?;
    let mut request = client.post(&url).header("accept", accept);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .json(&serde_json::json!({ "sql": args.sql }))
        .send()
        .await
        .with_context(|| format!("cannot reach Loupe at {url}"))?;
    let status = response.status();
    let truncated = response.headers().contains_key("x-loupe-truncated");
    let body = response.bytes().await.context("reading the response")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{message} (HTTP {status})");
    }
    match args.format {
        Format::Table => {
            let reader =
                StreamReader::try_new(Cursor::new(body), None).context("decoding Arrow result")?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            println!("{rows} row{}", if rows == 1 { "" } else { "s" });
        }
        Format::Json => {
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Csv => print!("{}", String::from_utf8_lossy(&body)),
    }
    if truncated {
        eprintln!("note: the result was cut at the server's row limit");
    }
    Ok(())
}
