//! Keyword values that are nearly all distinct — trace ids, above all —
//! indexed by their first [`KEY_PREFIX_CHARS`] characters. A log index
//! held 27 k distinct trace ids per 54 k lines of `loupe gen` traffic; as
//! whole 32-digit terms they were 30 % of the index's bytes, and building
//! their term dictionary was the largest single cost of a log flush
//! (tantivy's FST builder deduplicates every node of every term's unique
//! tail). A value longer than the prefix is indexed as the prefix and a
//! mark (`5b8efff798038103…` as `5b8efff7~`); a search for the value finds
//! the rows under that term and checks each against the column's text, so
//! the answer stays exact (the way [`crate::id_words`] does for words of
//! the body). With 32 bits of prefix, the rows checked are nearly always
//! the value's own.

use std::borrow::Cow;

use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};

use crate::shorten::{self, Shorten};

/// The name an index registers [`short_keys_analyzer`] under.
pub const SHORT_KEYS_TOKENIZER: &str = "raw_lower_short_keys";

/// Characters a long keyword value keeps in the index.
pub const KEY_PREFIX_CHARS: usize = 8;

/// The term a whole value (lowercased) is indexed under. A value may hold
/// the mark itself (`5b8efff7~` is indexed under the same term as
/// `5b8efff798…`): whether a query's value was shortened is decided by its
/// length ([`is_shortened_key`]), never by comparing terms.
pub fn indexed_key(value: &str) -> Cow<'_, str> {
    shorten::indexed(value, shortened_len)
}

/// Whether `value` is indexed shortened, so that the rows under its term
/// hold other values too and must be checked.
pub fn is_shortened_key(value: &str) -> bool {
    shortened_len(value).is_some()
}

/// The term values starting with `stem` are indexed under when such a
/// value was shortened past the stem (the stem is longer than the kept
/// prefix).
pub fn shortened_key_stem(stem: &str) -> Option<String> {
    shorten::stem_term(stem, KEY_PREFIX_CHARS)
}

fn shortened_len(value: &str) -> Option<usize> {
    shorten::prefix_len(value, KEY_PREFIX_CHARS)
}

/// The whole value, lowercased, as one term: how a query's value and the
/// rows checked against it are read.
pub fn full_keys_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

/// [`full_keys_analyzer`] with long values shortened: what a keyword field
/// of nearly distinct values is indexed with.
pub fn short_keys_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .filter(Shorten(shortened_len))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        short_keys_analyzer()
            .token_stream(text)
            .process(&mut |t| out.push(t.text.clone()));
        out
    }

    #[test]
    fn long_values_keep_their_prefix_and_a_mark() {
        assert_eq!(terms("5B8EFFF798038103D269B633813FC60C"), vec!["5b8efff7~"]);
        assert_eq!(terms("5b8efff7"), vec!["5b8efff7"]);
        assert_eq!(terms("x y"), vec!["x y"], "a keyword is one term");
        assert_eq!(terms("ünïcödé-ïd"), vec!["ünïcödé-~"]);
        assert_eq!(indexed_key("5b8efff798"), "5b8efff7~");
        assert_eq!(indexed_key("abc~"), "abc~");
        assert!(
            is_shortened_key("5b8efff7~"),
            "nine characters, mark or not"
        );
        assert!(!is_shortened_key("5b8efff7"));
        assert_eq!(
            shortened_key_stem("5b8efff79").as_deref(),
            Some("5b8efff7~")
        );
        assert_eq!(shortened_key_stem("5b8efff7"), None);
    }
}
