//! A batch as one Arrow IPC stream: how quarantined batches are kept (any
//! Arrow tool reads them), and how WAL records were written before
//! `wal_payload`'s format, so replay needs no knowledge of OTLP.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};
use crate::schema::Signal;

pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(
        Vec::with_capacity(batch.get_array_memory_size()),
        &batch.schema(),
    )?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

pub fn decode(signal: Signal, payload: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let schema = signal.schema();
    let batch =
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| StorageError::Schema {
            signal,
            reason: format!("WAL record: {e}"),
        })?;
    Ok(batch)
}
