//! The background work that tells the outside world something: capacity
//! planning and alerting, with the one webhook delivery worker they share
//! (one worker per outbox, so no message is delivered twice). They run on
//! the maintenance leader only. Their state lives in the catalog — the
//! data directory's SQLite file, or PostgreSQL shared by every node, so
//! any node's API shows it and a new leader carries on with it — and they
//! read telemetry through the query engine.

use std::sync::Arc;

use anyhow::Context;
use loupe_alerts::store::AlertStore;
use loupe_alerts::{Alerts, SuspectFinder};
use loupe_base::telemetry_port::{BoxFuture, Row, SelfEvent, SelfEvents, Telemetry};
use loupe_capacity::Capacity;
use loupe_capacity::store::CapacityStore;
use loupe_catalog::db::Location;
use loupe_notify::{Worker, WorkerConfig};
use loupe_query::QueryEngine;
use tokio::sync::watch;

/// Telemetry queries through the engine, under its memory and time limits
/// and the SQL API's sandbox (policies and rules carry users' SQL).
struct EngineTelemetry(Arc<QueryEngine>);

impl Telemetry for EngineTelemetry {
    fn rows(&self, sql: String) -> BoxFuture<'_, Result<Vec<Row>, String>> {
        Box::pin(async move {
            loupe_query::internal_sql::sandboxed_rows(&self.0, &sql)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Loupe's own events, stored as log records of the service `loupe`
/// through the normal ingest path (durable, queryable, alertable).
struct IngestEvents(Arc<loupe_ingest::Ingestor>);

impl SelfEvents for IngestEvents {
    fn record(&self, event: SelfEvent) -> BoxFuture<'_, Result<(), String>> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use prost::Message;
        let text = |key: &str, value: String| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
            ..Default::default()
        };
        let now = u64::try_from(loupe_base::clock::now_nanos()).unwrap_or(0);
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![text("service.name", "loupe".into())],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: now,
                        severity_number: 13,
                        severity_text: "WARN".into(),
                        event_name: event.name,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(event.message)),
                        }),
                        attributes: event
                            .attributes
                            .into_iter()
                            .map(|(k, v)| text(&k, v))
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Box::pin(async move {
            let bytes = request.encoded_len();
            self.0
                .export(
                    loupe_ingest::Payload::Decoded(request),
                    loupe_ingest::Transport::Internal,
                    bytes,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Problem location for alerts: the top suspects of the alert's window,
/// across all services (a service's symptom often has its cause downstream).
struct EngineSuspects(Arc<QueryEngine>);

impl SuspectFinder for EngineSuspects {
    fn suspects(
        &self,
        (start, end): (i64, i64),
        (baseline_start, baseline_end): (i64, i64),
        _service: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let ns = |ms: i64| ms.saturating_mul(1_000_000);
        Box::pin(async move {
            loupe_analysis::problems::top_explanations(
                &self.0,
                (ns(start), ns(end)),
                (ns(baseline_start), ns(baseline_end)),
                3,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}

/// Capacity planning and alerting with their state opened;
/// [`Background::spawn`] starts their loops and the delivery worker.
pub struct Background {
    pub capacity: Arc<Capacity>,
    pub alerts: Arc<Alerts>,
    worker: Worker,
}

/// Opens capacity and alert state and the webhook outbox in the catalog
/// at `catalog` (each with a connection of its own); `external_url` is how people reach this server (for links in
/// notifications); `ca_file` adds trusted certificates for https:// receivers;
/// `allow` lists the internal networks webhooks may reach (the SSRF guard);
/// `suspects_timeout` bounds problem location for a firing alert.
pub async fn open(
    catalog: &Location,
    engine: Arc<QueryEngine>,
    external_url: String,
    ca_file: Option<std::path::PathBuf>,
    allow: loupe_notify::AllowList,
    ingestor: Arc<loupe_ingest::Ingestor>,
    suspects_timeout: std::time::Duration,
) -> anyhow::Result<Background> {
    let at = match catalog {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(_) => "the PostgreSQL catalog".to_string(),
    };
    let telemetry: Arc<dyn Telemetry> = Arc::new(EngineTelemetry(engine.clone()));
    let config = WorkerConfig {
        ca_file,
        allow,
        ..WorkerConfig::default()
    };
    let worker = Worker::open(catalog, config)
        .await
        .with_context(|| format!("opening the webhook outbox in {at}"))?;
    let store = CapacityStore::open(catalog)
        .await
        .with_context(|| format!("opening capacity state in {at}"))?;
    let capacity = Arc::new(
        Capacity::new(Arc::new(store), telemetry.clone(), Some(worker.clone()))
            .with_events(Arc::new(IngestEvents(ingestor))),
    );
    let store = AlertStore::open(catalog)
        .await
        .with_context(|| format!("opening alert state in {at}"))?;
    let alerts = Arc::new(
        Alerts::new(
            Arc::new(store),
            telemetry,
            Some(worker.clone()),
            external_url,
        )
        .with_suspects(Arc::new(EngineSuspects(engine)), suspects_timeout),
    );
    Ok(Background {
        capacity,
        alerts,
        worker,
    })
}

impl Background {
    /// Runs the capacity and alerting loops and the delivery worker while
    /// this node leads maintenance (`leading`), until `stop`.
    pub fn spawn(
        &self,
        leading: &watch::Receiver<bool>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
        let worker = self.worker.clone();
        let capacity = self.capacity.clone();
        let alerts = self.alerts.clone();
        vec![
            tokio::spawn(while_leading(leading.clone(), stop.clone(), move |end| {
                worker.clone().run(end)
            })),
            tokio::spawn(while_leading(leading.clone(), stop.clone(), move |end| {
                capacity.clone().run(end)
            })),
            tokio::spawn(while_leading(leading.clone(), stop.clone(), move |end| {
                let alerts = alerts.clone();
                async move { alerts.run(end).await }
            })),
        ]
    }
}

/// [`crate::leader::while_leading`] as a task result.
async fn while_leading<F, Fut>(
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    job: F,
) -> anyhow::Result<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    crate::leader::while_leading(leading, stop, job).await;
    Ok(())
}
