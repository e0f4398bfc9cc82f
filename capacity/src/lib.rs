//! Capacity planning: how much load one instance carries (fitted from load
//! tests), how many instances the live load needs (the Kubernetes HPA
//! algorithm, exactly), and signed webhooks to tell the platform.

pub mod hpa;
pub mod signing;
pub mod usl;
