//! Loupe's query layer: DataFusion SQL over the `logs`, `spans` and
//! `metrics` tables (catalog splits UNION memtable), sandboxed and bounded,
//! and the HTTP API that serves it.

pub mod api;
mod engine;
mod error;
mod errors;
pub mod internal_sql;
pub mod logs_api;
mod output;
mod patterns;
pub mod problems;
mod sandbox;
mod search;
mod table;
mod time_bounds;
mod time_param;
mod trace_tree;
pub mod traces_api;

pub use engine::{QueryConfig, QueryEngine, QueryOutput};
pub use error::QueryError;
