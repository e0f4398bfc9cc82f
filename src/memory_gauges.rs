//! `/metrics` gauges for each share of the memory budget: what it holds
//! now (`loupe_memory_used_bytes{share}`) against what it may hold
//! (`loupe_memory_limit_bytes{share}`), read when scraped.

use std::sync::Arc;

use loupe_base::self_metrics::Registry;
use loupe_ingest::Ingestor;
use loupe_query::QueryEngine;
use loupe_storage::Storage;

use crate::config::ServeConfig;

/// Registers the gauges of every budget share.
pub fn register(
    registry: &Registry,
    config: &ServeConfig,
    storage: Arc<Storage>,
    ingestor: Arc<Ingestor>,
    engine: Arc<QueryEngine>,
) {
    type Reader = Box<dyn Fn() -> usize + Send + Sync>;
    let (s, e) = (storage.clone(), engine.clone());
    let shares: [(&str, usize, Reader); 5] = [
        (
            "unflushed",
            config.storage.max_unflushed_bytes,
            Box::new(move || storage.unflushed_bytes()),
        ),
        (
            "in_flight",
            config.ingest_in_flight_bytes,
            Box::new(move || ingestor.in_flight_bytes()),
        ),
        (
            "queries",
            config.query.memory_limit,
            Box::new(move || engine.memory_reserved()),
        ),
        (
            "log_index_cache",
            config.storage.log_index_cache_bytes,
            Box::new(move || s.log_index_cache_bytes()),
        ),
        (
            "metadata_cache",
            config.query.metadata_cache_bytes,
            Box::new(move || e.metadata_cache_bytes()),
        ),
    ];
    for (share, limit, read) in shares {
        let labels = [("share", share)];
        registry
            .gauge(
                "loupe_memory_limit_bytes",
                "The part of --memory-budget each share may hold.",
                &labels,
            )
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        let used = registry.gauge(
            "loupe_memory_used_bytes",
            "Bytes each share of the memory budget holds now.",
            &labels,
        );
        registry.on_render(move || used.set(i64::try_from(read()).unwrap_or(i64::MAX)));
    }
}
