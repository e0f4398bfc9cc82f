//! OTLP/protobuf export bodies: decoded and converted to Arrow as the
//! receivers do. The first byte picks the signal. Decoding may refuse a
//! body; nothing may panic, hang or allocate without bound. Spans and log
//! records read in place must also come out exactly as prost decodes and
//! converts them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe_ingest::decode_and_convert;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let _ = match which % 3 {
        0 => {
            loupe_ingest::assert_in_place_matches_prost::<ExportLogsServiceRequest>(body);
            decode_and_convert::<ExportLogsServiceRequest>(body, false)
        }
        1 => {
            loupe_ingest::assert_in_place_matches_prost::<ExportTraceServiceRequest>(body);
            decode_and_convert::<ExportTraceServiceRequest>(body, false)
        }
        _ => decode_and_convert::<ExportMetricsServiceRequest>(body, false),
    };
});
