//! Writes announced to storage before they are ready to append: a request
//! says so when it starts converting, and stops counting once its append is
//! queued for the WAL (or it fails). The WAL writer waits a little for
//! announced writes before it fsyncs a group, so one fsync covers them too
//! (see [`crate::writer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many writes are announced and not yet queued for the WAL.
#[derive(Debug, Default)]
pub(crate) struct Announcements(AtomicUsize);

impl Announcements {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One announced write; it stops counting when dropped. Taken by
/// [`crate::Storage::announce_write`] and given to
/// [`crate::Storage::append_announced`], which drops it once the append is
/// queued.
#[must_use = "an announcement counts until it is dropped"]
pub struct AnnouncedWrite {
    of: Arc<crate::shared::Shared>,
}

impl AnnouncedWrite {
    pub(crate) fn new(of: Arc<crate::shared::Shared>) -> AnnouncedWrite {
        of.announced.0.fetch_add(1, Ordering::AcqRel);
        AnnouncedWrite { of }
    }
}

impl Drop for AnnouncedWrite {
    fn drop(&mut self) {
        self.of.announced.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for AnnouncedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnnouncedWrite")
    }
}
