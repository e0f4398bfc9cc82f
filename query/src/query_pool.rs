//! The threads queries execute on, apart from the ones that receive and
//! acknowledge telemetry: a heavy query then slows other queries, never an
//! exporter's acknowledgement.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::error::QueryError;

/// A small runtime of its own for query execution.
pub struct QueryPool {
    /// Always `Some` until dropped (a runtime cannot be dropped from async
    /// code, so `Drop` shuts it down in the background instead).
    runtime: Option<Runtime>,
}

impl QueryPool {
    /// A pool of `threads` worker threads named `loupe-query`.
    pub fn new(threads: usize) -> Result<QueryPool, QueryError> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("loupe-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("starting the query threads: {e}")))?;
        Ok(QueryPool {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the pool; dropping the returned future (a timeout,
    /// a client that went away) aborts it there too.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let Some(runtime) = &self.runtime else {
            return Err(QueryError::Internal("the query threads are stopped".into()));
        };
        let mut task = AbortOnDrop(runtime.spawn(work));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(QueryError::Internal(format!("query task failed: {e}"))),
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
