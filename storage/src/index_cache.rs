//! Loaded split indexes, kept by file path within a byte budget: a
//! full-text index costs as much memory as its bundle file, a trace-index
//! head a few bytes per block, so counting entries would either waste
//! memory or evict for nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Indexes by path, least recently used evicted first once their weights
/// (bytes, as given at insertion) exceed the budget.
pub(crate) struct IndexCache<T> {
    inner: Mutex<Inner<T>>,
    budget: usize,
}

struct Inner<T> {
    entries: HashMap<String, Entry<T>>,
    bytes: usize,
    clock: u64,
}

struct Entry<T> {
    value: Arc<T>,
    bytes: usize,
    used: u64,
}

impl<T> IndexCache<T> {
    pub(crate) fn new(budget: usize) -> Self {
        IndexCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The weight of the entries kept.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub(crate) fn get(&self, path: &str) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.entries.get_mut(path).map(|e| {
            e.used = now;
            e.value.clone()
        })
    }

    /// Keeps `value`, weighing `bytes`; an entry over the whole budget is
    /// not kept (its caller still has it).
    pub(crate) fn insert(&self, path: String, value: Arc<T>, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.insert(path, Entry { value, bytes, used }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let cache = IndexCache::new(100);
        cache.insert("a".into(), Arc::new(1), 40);
        cache.insert("b".into(), Arc::new(2), 40);
        assert!(cache.get("a").is_some());
        cache.insert("c".into(), Arc::new(3), 40);
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        cache.insert("huge".into(), Arc::new(4), 101);
        assert!(cache.get("huge").is_none());
        cache.insert("a".into(), Arc::new(5), 10);
        assert_eq!(cache.get("a").as_deref(), Some(&5));
    }
}
