//! SQL literals for queries Loupe assembles itself from request values.
//! Security-relevant: every value that comes from a request and ends up in
//! SQL text goes through here, so there is one place to get quoting right.

/// A SQL string literal: single quotes around, embedded quotes doubled.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A timestamp literal from ns since the epoch.
pub fn timestamp(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_cannot_be_escaped() {
        assert_eq!(quote("cart"), "'cart'");
        assert_eq!(quote("x' OR '1'='1"), "'x'' OR ''1''=''1'");
        assert_eq!(quote(""), "''");
        assert_eq!(timestamp(-5), "to_timestamp_nanos(-5)");
    }
}
