//! `loupe gen`: OTLP traces, logs and metrics from a simulated microservice
//! shop — eight services, several instances each in two regions — with
//! injected faults whose ground truth is written down, so that search,
//! problem location, capacity planning and benchmarks have realistic input
//! with a known answer.

mod load_test;
mod metrics;
mod random;
mod runner;
mod scenario;
mod sender;
mod services;
mod shop;
mod telemetry;
mod topology;

pub use runner::{GenConfig, Latency, Report, Signals, run};
pub use scenario::Scenario;
pub use sender::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Endpoint(String),
    #[error("{0}")]
    Config(String),
}
