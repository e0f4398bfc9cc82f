//! A batch as one Arrow IPC stream: how quarantined batches are kept (any
//! Arrow tool reads them), how each part of a WAL record is written, and
//! how whole WAL records were written before `wal_payload`'s format, so
//! replay needs no knowledge of OTLP.

use std::io::Cursor;

use arrow::ipc::MetadataVersion;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};
use crate::instance;
use crate::schema::Signal;

pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    append_stream(Vec::with_capacity(batch.get_array_memory_size()), batch)
}

/// Appends `batch` to `out` as a whole IPC stream (schema, batch, end).
/// Buffers are aligned to 8 bytes, not the writer's default 64: that is
/// enough for every type in the schemas, and a one-row request no longer
/// pads each of its ~50 buffers to 64 bytes.
pub fn append_stream(out: Vec<u8>, batch: &RecordBatch) -> Result<Vec<u8>> {
    let options = IpcWriteOptions::try_new(8, false, MetadataVersion::V5)?;
    let mut writer = StreamWriter::try_new_with_options(out, &batch.schema(), options)?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// Reads a stream [`encode`] wrote as `signal`'s batch; a stream written
/// before the table's `instance` column gets it ([`instance::complete`]).
pub fn decode(signal: Signal, payload: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let batch =
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| StorageError::Schema {
            signal,
            reason: format!("WAL record: {e}"),
        })?;
    instance::complete(signal, batch)
}
