//! Alerting: SQL rules evaluated with Prometheus semantics (pending →
//! firing after `for`, resolved, `keep_firing_for`), notifications grouped
//! and paced as Alertmanager does and sent as Alertmanager's webhook body
//! (or to a real Alertmanager) through notify's durable, signed outbox.
//! Telemetry is read through a port, so this crate never links DataFusion.

pub mod api;
pub mod engine;
mod error;
pub mod grouping;
pub mod lifecycle;
pub mod receiver;
pub mod rule;
pub mod store;
mod templates;

pub use engine::{Alerts, SuspectFinder};
pub use error::{AlertError, Result};
pub use lifecycle::AlertState;
