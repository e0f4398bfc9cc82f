//! The few primitives every Loupe crate needs, kept in one place so that
//! each has exactly one definition: the clock, the grammar of times and
//! durations that every API, flag and config key accepts, the mapping of
//! error kinds to HTTP and gRPC statuses, SQL literal
//! quoting, and the self-metrics registry behind `/metrics`.
//!
//! Nothing here knows about telemetry, storage or HTTP; it sits below every
//! other crate.

pub mod clock;
pub mod duration;
pub mod error_kind;
pub mod self_metrics;
pub mod size;
pub mod sql_literal;
pub mod telemetry_port;
pub mod time_expr;
