//! The thread compaction's merges run on: started at the first merge and
//! kept for the server's life. Merges are CPU work that must stay off the
//! async workers, and a blocking-pool thread per merge would be
//! short-lived — such threads leave the allocator's memory fragmented,
//! which under load kept resident memory far above what was in use.

use std::sync::Mutex;
use std::sync::mpsc;

use crate::error::{Result, StorageError};

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs one at a time, in order, on one long-lived thread.
#[derive(Default)]
pub(crate) struct MergeThread {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl MergeThread {
    /// Runs `job` on the thread and waits for its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.send(job)?;
        result
            .await
            .map_err(|_| StorageError::Internal("a merge panicked".into()))
    }

    fn send(&self, job: Job) -> Result<()> {
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| StorageError::Internal("merge thread lock poisoned".into()))?;
        let sender = match jobs.as_ref() {
            Some(sender) => sender.clone(),
            None => jobs.insert(spawn()?).clone(),
        };
        sender
            .send(job)
            .map_err(|_| StorageError::Internal("the merge thread has stopped".into()))
    }
}

/// Starts the thread; it ends when its sender is dropped.
fn spawn() -> Result<mpsc::Sender<Job>> {
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("loupe-merge".into())
        .spawn(move || {
            for job in jobs {
                // A panicking merge fails alone (its caller sees the
                // dropped result); the thread stays for the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map_err(|e| StorageError::Internal(format!("starting the merge thread: {e}")))?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_and_a_panic_fails_only_its_job() {
        let thread = MergeThread::default();
        let first = thread.run(|| std::thread::current().id()).await.unwrap();
        let failed = thread.run(|| -> u8 { panic!("a bad merge") }).await;
        assert!(failed.is_err());
        let again = thread.run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(first, again);
        assert_ne!(first, std::thread::current().id());
    }
}
