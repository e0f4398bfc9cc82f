//! Counting a request's records before decoding it. Decoding allocates a
//! struct per record, so a 16 MiB body of millions of empty records would
//! cost gigabytes before any limit could look at it; the protobuf wire
//! format can be walked without allocating, and JSON can be bounded by its
//! object count.

use crate::error::IngestError;
use crate::ingestor::MAX_RECORDS_PER_REQUEST;
use crate::protobuf_fields::{Fields, Value};

/// The nested fields leading to one record: at each level, the field
/// numbers (length-delimited) to descend into; records are counted at the
/// last level.
pub type RecordPath = &'static [&'static [u32]];

/// Records in a protobuf request along `path`, or an error for a body
/// that is not valid protobuf at those levels.
pub fn count_protobuf(bytes: &[u8], path: RecordPath) -> Result<usize, IngestError> {
    let Some((here, deeper)) = path.split_first() else {
        return Ok(1);
    };
    let mut count = 0;
    for field in Fields::new(bytes) {
        let (number, value) = field.map_err(|_| malformed())?;
        if let Value::Bytes(message) = value
            && here.contains(&number)
        {
            count += count_protobuf(message, deeper)?;
        }
    }
    Ok(count)
}

fn malformed() -> IngestError {
    IngestError::InvalidArgument("invalid field encoding or truncated message".into())
}

/// Refuses a protobuf body with more records than a request may hold
/// (`what` names the signal in the error of a malformed one).
pub fn check_protobuf(bytes: &[u8], path: RecordPath, what: &str) -> Result<(), IngestError> {
    let count = count_protobuf(bytes, path).map_err(|e| match e {
        IngestError::InvalidArgument(m) => {
            IngestError::InvalidArgument(format!("malformed protobuf {what}: {m}"))
        }
        other => other,
    })?;
    if count > MAX_RECORDS_PER_REQUEST {
        return Err(IngestError::TooManyRecords {
            count,
            limit: MAX_RECORDS_PER_REQUEST,
        });
    }
    Ok(())
}

/// JSON objects a body may hold (every record is at least one): bounds
/// what decoding allocates without parsing first.
const MAX_JSON_OBJECTS: usize = 4 * MAX_RECORDS_PER_REQUEST;

/// Refuses a JSON body with more objects than [`MAX_JSON_OBJECTS`].
pub fn check_json(bytes: &[u8]) -> Result<(), IngestError> {
    let objects = bytes.iter().filter(|b| **b == b'{').count();
    if objects > MAX_JSON_OBJECTS {
        return Err(IngestError::TooManyRecords {
            count: objects,
            limit: MAX_JSON_OBJECTS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    use super::*;

    const LOGS: RecordPath = &[&[1], &[2], &[2]];

    #[test]
    fn counts_records_without_decoding() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    scope_logs: vec![
                        ScopeLogs {
                            log_records: vec![LogRecord::default(); 3],
                            ..Default::default()
                        },
                        ScopeLogs {
                            log_records: vec![LogRecord {
                                severity_number: 9,
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                ResourceLogs::default(),
            ],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_protobuf(&bytes, LOGS).unwrap(), 4);
        assert!(count_protobuf(&bytes[..bytes.len() - 1], LOGS).is_err());
        assert!(count_protobuf(&[0xff; 12], LOGS).is_err());
        assert_eq!(count_protobuf(&[], LOGS).unwrap(), 0);
    }
}
