//! `/metrics` gauges for each share of the memory budget: what it holds
//! now (`loupe_memory_used_bytes{share}`) against what it may hold
//! (`loupe_memory_limit_bytes{share}`), read when scraped; and the
//! process's resident memory (`loupe_process_resident_bytes{kind}`), so
//! what is held outside the shares (flush encoding, connection buffers,
//! the allocator's own) shows as the difference.

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
    let (s, e, c) = (storage.clone(), engine.clone(), storage.clone());
    let shares: [(&str, usize, Reader); 6] = [
        (
            "unflushed",
            config.storage.max_unflushed_bytes,
            Box::new(move || storage.unflushed_share_bytes()),
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
        (
            "compaction",
            config.storage.maintenance.memory_limit,
            Box::new(move || c.compaction_bytes()),
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
    register_resident(registry);
}

/// `loupe_process_resident_bytes{kind="anon"|"file"}` from
/// `/proc/self/status`: anonymous memory (heap, stacks) is what the budget
/// is about; file-backed pages (the binary's code, mapped files) the
/// kernel can drop. Not registered where `/proc` has no such fields.
fn register_resident(registry: &Registry) {
    const KINDS: [(&str, &str); 2] = [("anon", "RssAnon:"), ("file", "RssFile:")];
    if resident_kib("RssAnon:").is_none() {
        return;
    }
    for (kind, field) in KINDS {
        let gauge = registry.gauge(
            "loupe_process_resident_bytes",
            "Resident memory of the process: anon (heap, stacks), which the memory budget is about, and file (code, mapped files).",
            &[("kind", kind)],
        );
        registry.on_render(move || {
            let kib = resident_kib(field).unwrap_or(0);
            gauge.set(i64::try_from(kib.saturating_mul(1024)).unwrap_or(i64::MAX));
        });
    }
}

/// A `kB` field of `/proc/self/status`.
fn resident_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_is_read_from_proc() {
        let anon = resident_kib("RssAnon:").unwrap();
        // This test binary's heap: more than nothing, less than 64 GiB.
        assert!(anon > 0 && anon < 64 << 20, "{anon} kB");
        let registry = Registry::default();
        register_resident(&registry);
        let text = registry.render();
        assert!(
            text.contains("loupe_process_resident_bytes{kind=\"anon\"} "),
            "{text}"
        );
    }
}
