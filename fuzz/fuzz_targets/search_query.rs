//! Log search queries: parsed, compiled to a Tantivy query over the real
//! log index schema and run against an empty index, as `/logs/search`
//! does. Bad queries are refused; nothing may panic or overflow the stack.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loupe_storage::log_index::LogIndex;

fn index() -> &'static LogIndex {
    static INDEX: OnceLock<LogIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        LogIndex::empty().expect("an empty index")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ast) = loupe_search::parse(text) {
        let _ = index().matching_rows(&ast);
    }
});
