//! Query results as JSON, CSV or an Arrow IPC stream.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value, json};

use crate::engine::QueryOutput;

/// `{"columns":[{"name","type"}], "rows":[[…]], "elapsed_ms", "truncated"}`,
/// encoded straight from the batches into one buffer: no intermediate JSON
/// tree, no per-column round trip, so a result costs its batches plus its
/// text and nothing more.
pub fn to_json(out: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let columns: Vec<Value> = out
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let json_error = |e: serde_json::Error| ArrowError::JsonError(e.to_string());
    let mut buf = Vec::new();
    buf.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut buf, &columns).map_err(json_error)?;
    buf.extend_from_slice(b",\"rows\":[");
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut first_row = true;
    for batch in &out.batches {
        let schema = batch.schema();
        let mut encoders = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| make_encoder(field, column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if !first_row {
                buf.push(b',');
            }
            first_row = false;
            buf.push(b'[');
            for (i, encoder) in encoders.iter_mut().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                if encoder.is_null(row) {
                    buf.extend_from_slice(b"null");
                } else {
                    encoder.encode(row, &mut buf);
                }
            }
            buf.push(b']');
        }
    }
    buf.extend_from_slice(b"],\"elapsed_ms\":");
    serde_json::to_writer(&mut buf, &(out.elapsed.as_secs_f64() * 1000.0)).map_err(json_error)?;
    buf.extend_from_slice(b",\"truncated\":");
    buf.extend_from_slice(if out.truncated { b"true" } else { b"false" });
    buf.push(b'}');
    Ok(buf)
}

/// Each row as a list of JSON values in column order, so that two columns
/// with the same name (a self-join) both keep their values.
pub fn to_rows(out: &QueryOutput) -> Result<Vec<Vec<Value>>, ArrowError> {
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for batch in out.batches.iter().filter(|b| b.num_rows() > 0) {
        let first = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
        for column in batch.columns() {
            // One column at a time under a fixed name: JSON objects cannot
            // hold duplicate keys, positions can.
            let single = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "v",
                    column.data_type().clone(),
                    true,
                )])),
                vec![column.clone()],
            )?;
            let mut writer = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(Vec::new());
            writer.write(&single)?;
            writer.finish()?;
            let values: Vec<Map<String, Value>> = serde_json::from_slice(&writer.into_inner())
                .map_err(|e| ArrowError::JsonError(e.to_string()))?;
            for (row, mut value) in rows[first..].iter_mut().zip(values) {
                row.push(value.remove("v").unwrap_or(Value::Null));
            }
        }
    }
    Ok(rows)
}

/// CSV with a header row; nested values (maps, lists) are written as text.
pub fn to_csv(out: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut writer = WriterBuilder::new().with_header(true).build(Vec::new());
    for batch in &out.batches {
        writer.write(&flatten_nested(batch)?)?;
    }
    Ok(writer.into_inner())
}

fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default().with_null("");
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| (!column.is_null(i)).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// An Arrow IPC stream, for clients that want the columns as they are.
pub fn to_arrow_ipc(out: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &out.schema)?;
    for batch in &out.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    writer.into_inner()
}
