//! Loupe's storage layer: write-ahead log, memtables, Parquet splits and the
//! catalog that names them. Ingest appends Arrow batches; query reads
//! consistent snapshots of splits plus memtable.

mod catalog;
mod catalog_pg;
mod compaction_memory;
mod error;
mod file_order;
mod index_cache;
mod indexed_attributes;
mod instance;
mod interleave;
mod ipc;
mod log_bodies;
mod log_bundle;
pub mod log_index;
mod maintenance;
mod memtable;
mod merge;
mod merge_thread;
mod read_cache;
mod schema;
mod shared;
mod split_files;
mod split_follow;
mod split_store;
mod split_writer;
mod store;
pub mod trace_index;
mod wal;
mod wal_payload;
mod writer;

#[cfg(test)]
mod size_report;
#[cfg(test)]
mod test_batches;

pub use catalog::{Catalog, SplitMeta, SqliteCatalog, WalProgress};
pub use catalog_pg::{PG_SCHEMA, PgCatalog};
pub use error::{Result, StorageError};
pub use maintenance::MaintenanceConfig;
pub use memtable::{FLUSHED_GRACE, MemBatch};
pub use schema::{DIMENSIONS, INSTANCE, INSTANCE_KEY, Signal, attributes_type, timestamp_type};
pub use shared::TableSnapshot;
pub use split_store::STORE_URL;
pub use split_writer::{ROW_GROUP_ROWS, row_group_rows};
pub use store::{Storage, StorageConfig};
pub use wal::SyncMode;
