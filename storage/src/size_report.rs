//! Where the bytes of stored logs go, column by column and index field by
//! index field, for a corpus of real lines (`LOUPE_CORPUS`: JSON lines of
//! `{"service", "time_ns", "body"}`). Run by hand:
//! `LOUPE_CORPUS=… cargo test -p loupe-storage --release size_report -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Array, new_null_array,
};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::log_index::LogIndex;
use crate::schema::Signal;
use crate::split_writer::{Effort, encode_splits_with};

fn batch(rows: &[(String, i64, String)]) -> RecordBatch {
    let schema = Signal::Logs.schema();
    let n = rows.len();
    let time = || -> ArrayRef {
        Arc::new(
            TimestampNanosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "time" | "observed_time" => time(),
                "service" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                "body" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.2))),
                "severity_text" => Arc::new(StringArray::from(vec!["INFO"; n])),
                "severity_number" => Arc::new(Int32Array::from(vec![9; n])),
                "flags" => Arc::new(UInt32Array::from(vec![0; n])),
                "scope_name" | "scope_version" => Arc::new(StringArray::from(vec![""; n])),
                "attributes" | "resource_attributes" => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for _ in 0..n {
                        b.append(true).unwrap();
                    }
                    Arc::new(b.finish())
                }
                _ => new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

#[test]
#[ignore = "needs LOUPE_CORPUS; a measurement, run by hand"]
fn size_report() {
    let path = std::env::var("LOUPE_CORPUS").expect("LOUPE_CORPUS");
    let every: usize = std::env::var("LOUPE_CORPUS_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut rows = Vec::new();
    let mut raw = 0usize;
    for (i, line) in file.lines().enumerate() {
        if i % every != 0 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let body = v["body"].as_str().unwrap().to_string();
        raw += body.len() + 1;
        rows.push((
            v["service"].as_str().unwrap().to_string(),
            v["time_ns"].as_i64().unwrap(),
            body,
        ));
    }
    if let Some(group) = std::env::var("LOUPE_GROUP_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // What an index of groups of rows (one document per `group`
        // consecutive lines of a service) would take: the size of the
        // lever "coarser body postings, every candidate row checked".
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut grouped = Vec::new();
        for chunk in rows.chunk_by(|a, b| a.0 == b.0) {
            for g in chunk.chunks(group) {
                let body: Vec<&str> = g.iter().map(|r| r.2.as_str()).collect();
                grouped.push((g[0].0.clone(), g[0].1, body.join("\n")));
            }
        }
        rows = grouped;
        println!("== one document per {group} rows of a service");
    }
    let batches: Vec<RecordBatch> = rows.chunks(8192).map(batch).collect();
    let efforts = match std::env::var("LOUPE_EFFORT").as_deref() {
        Ok("flush") => vec![Effort::Flush],
        _ => vec![Effort::Flush, Effort::Compaction],
    };
    for effort in efforts {
        println!("== {effort:?}");
        report(&batches, raw, effort);
    }
}

fn report(batches: &[RecordBatch], raw: usize, effort: Effort) {
    let mb = |b: f64| b / 1e6;
    let started = std::time::Instant::now();
    let splits = encode_splits_with(Signal::Logs, batches, effort).unwrap();
    let encode = started.elapsed();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let (mut parquet, mut index) = (0usize, 0usize);
    let mut columns: BTreeMap<String, i64> = BTreeMap::new();
    let mut fields: BTreeMap<String, u64> = BTreeMap::new();
    for split in &splits {
        parquet += split.bytes.len();
        let reader = SerializedFileReader::new(bytes::Bytes::from(split.bytes.clone())).unwrap();
        for group in reader.metadata().row_groups() {
            for c in group.columns() {
                *columns.entry(c.column_path().string()).or_default() += c.compressed_size();
            }
        }
        if let Some(bundle) = &split.index {
            index += bundle.len();
            for (k, v) in LogIndex::open(bundle, None)
                .unwrap()
                .space_report()
                .unwrap()
            {
                *fields.entry(k).or_default() += v;
            }
        }
    }
    println!(
        "{} lines, {:.1} MB raw, {} splits, encoded in {encode:?}",
        rows,
        mb(raw as f64),
        splits.len()
    );
    println!(
        "parquet {:.2} MB + index {:.2} MB = {:.2} MB: {:.1}x smaller than raw",
        mb(parquet as f64),
        mb(index as f64),
        mb((parquet + index) as f64),
        raw as f64 / (parquet + index) as f64
    );
    for (name, bytes) in columns.iter().filter(|(_, b)| **b > 1000) {
        println!("  column {name:40} {:>8.3} MB", mb(*bytes as f64));
    }
    for (name, bytes) in fields.iter().filter(|(_, b)| **b > 1000) {
        println!("  index  {name:40} {:>8.3} MB", mb(*bytes as f64));
    }
}
