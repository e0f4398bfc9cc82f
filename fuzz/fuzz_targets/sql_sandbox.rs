//! The SQL sandbox check the SQL endpoint runs before planning: it must
//! refuse or accept any text without panicking or overflowing the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = loupe_query::check_sql(sql);
    }
});
