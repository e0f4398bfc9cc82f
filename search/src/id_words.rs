//! Words holding a digit — trace and span ids, UUID parts, hashes, long
//! numbers — are four fifths of a log index's distinct terms (428 k terms
//! in 450 k real lines, 5 MB of term dictionary), and almost every one of
//! them is in a single line. The body is indexed with such a word cut to
//! its first [`ID_PREFIX_CHARS`] characters and marked (`ffc8ca7e4c8f…` is
//! indexed as `ffc8~`), which leaves one term per prefix; a search for the
//! word finds the rows holding a word of that prefix and checks each
//! against its text, so the answer stays exact (the way phrases are,
//! [`crate::verified_phrase`]).

use std::borrow::Cow;

use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

use crate::shorten::{self, Shorten};

/// The name an index registers [`words_analyzer`] under; a field with this
/// tokenizer is searched through [`indexed_word`].
pub const ID_WORDS_TOKENIZER: &str = "words_short_ids";

/// Characters an id-like word keeps in the index.
pub const ID_PREFIX_CHARS: usize = 4;

/// The term `word` (as the default analyzer emits it: lowercased, letters
/// and digits only) is indexed under: itself, or its prefix and a mark
/// when it holds a digit and is longer than [`ID_PREFIX_CHARS`]. The
/// tokenizer never puts the mark in a word, so a shortened word is never
/// mistaken for a short word of the text.
pub fn indexed_word(word: &str) -> Cow<'_, str> {
    shorten::indexed(word, shortened_len)
}

/// The term a word starting with `stem` is indexed under when such a word
/// may have been shortened past the stem (the stem is longer than the
/// kept prefix): the stem's prefix and the mark.
pub fn shortened_stem(stem: &str) -> Option<String> {
    shorten::stem_term(stem, ID_PREFIX_CHARS)
}

/// Bytes of `word` kept when it is shortened, if it is.
fn shortened_len(word: &str) -> Option<usize> {
    if !word.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    shorten::prefix_len(word, ID_PREFIX_CHARS)
}

/// The token filter that shortens id-like words ([`indexed_word`]).
pub(crate) fn shorten_ids() -> Shorten {
    Shorten(shortened_len)
}

/// Tantivy's default analyzer (words of letters and digits, at most 40
/// bytes, lowercased) with id-like words shortened: what `body` is indexed
/// with.
pub fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(shorten_ids())
        .build()
}

/// [`words_analyzer`] without the shortening: how a query's words and
/// the rows checked against them are split.
pub fn full_words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        let mut analyzer = words_analyzer();
        let mut out = Vec::new();
        analyzer
            .token_stream(text)
            .process(&mut |t| out.push(t.text.clone()));
        out
    }

    #[test]
    fn only_long_words_with_a_digit_are_shortened() {
        assert_eq!(
            terms("TraceID: ffc8ca7e4c8f06c7 code 2023 E12345 Connection ünï42x"),
            vec![
                "traceid",
                "ffc8~",
                "code",
                "2023",
                "e123~",
                "connection",
                "ünï4~"
            ]
        );
        assert_eq!(indexed_word("ffc8ca7e"), "ffc8~");
        assert_eq!(indexed_word("2023"), "2023");
        assert_eq!(indexed_word("connection"), "connection");
        assert_eq!(shortened_stem("conne").as_deref(), Some("conn~"));
        assert_eq!(shortened_stem("conn"), None);
    }
}
