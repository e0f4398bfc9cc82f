//! Webhook delivery shared by everything in Loupe that tells the outside
//! world something (capacity decisions, alerts): a durable outbox written in
//! the caller's own catalog transaction, a worker that delivers it with
//! retries, and Standard Webhooks signatures.

mod error;
pub mod guard;
pub mod outbox;
pub mod signing;
mod worker;

pub use error::{NotifyError, Result};
pub use guard::{AllowList, GuardError, UrlGuard};
pub use outbox::{Message, State, Status};
pub use worker::{Worker, WorkerConfig};
