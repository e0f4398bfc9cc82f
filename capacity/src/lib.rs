//! Capacity planning: how much load one instance carries (fitted from load
//! tests), how much load there is now (from the stored telemetry), how many
//! instances that needs (the Kubernetes HPA algorithm, exactly, with
//! scheduled floors), and scale tasks sent to the platform as signed
//! webhooks through the notify outbox.

pub mod api;
pub mod baseline;
pub mod cron;
pub mod decision;
mod error;
pub mod evaluator;
pub mod hpa;
pub mod load;
pub mod policy;
pub mod schedule;
pub mod store;
pub mod task;
pub mod usl;

pub use error::{CapacityError, Result};
pub use evaluator::Capacity;
