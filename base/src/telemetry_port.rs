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

/// Runs read-only SQL over `spans`, `logs` and `metrics`.
pub trait Telemetry: Send + Sync + 'static {
    fn rows(&self, sql: String) -> BoxFuture<'_, Result<Vec<Row>, String>>;
}
