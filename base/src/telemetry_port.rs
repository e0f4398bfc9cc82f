//! The port through which crates that must not link the query engine
//! (capacity, alerts) read telemetry: run read-only SQL, get rows back.
//! The binary fills it with the engine, under the SQL API's sandbox and
//! limits, because the SQL may be a user's.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

/// One result row, by column name.
pub type Row = Map<String, Value>;

/// The future [`Telemetry::rows`] returns (boxed, so the trait stays
/// object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something Loupe itself did that users may want to query or alert on
/// (a capacity fallback), stored as a log record of the service `loupe`
/// with `event_name` = `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfEvent {
    /// e.g. `capacity.fallback`.
    pub name: String,
    pub message: String,
    /// Attributes of the record (e.g. the service and region concerned).
    pub attributes: Vec<(String, String)>,
}

/// Where components write [`SelfEvent`]s; the binary stores them as logs.
pub trait SelfEvents: Send + Sync + 'static {
    fn record(&self, event: SelfEvent) -> BoxFuture<'_, Result<(), String>>;
}

/// Runs read-only SQL over `spans`, `logs` and `metrics`.
pub trait Telemetry: Send + Sync + 'static {
    fn rows(&self, sql: String) -> BoxFuture<'_, Result<Vec<Row>, String>>;
}
