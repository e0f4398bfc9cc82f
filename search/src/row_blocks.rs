//! Words holding a digit — the parts of a line's own timestamp, counters,
//! ports, addresses, ids — were three fifths of a log index's postings on
//! real lines (450 k lines: 6.2 of 10.6 MB), and most of them cost many
//! bits each, being spread thinly over the rows. Such words are therefore
//! indexed not per row but per block of consecutive rows, in a small index
//! of their own whose documents are the blocks ([`RowBlocks`]): a search
//! for one finds the blocks holding it, and every row of those blocks is
//! checked against its text ([`crate::VerifiedPhraseQuery`]), so the answer
//! stays exact. Words without a digit keep their postings per row.

use std::fmt;
use std::sync::Arc;

use tantivy::query::{
    BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, Token, TokenFilter, TokenStream,
    Tokenizer,
};
use tantivy::{BitSet, DocId, Score, SegmentReader, TantivyError};

use crate::id_words::shorten_ids;

/// The tokenizer of a field that holds only the words without a digit
/// (the others are in its [`RowBlocks`]).
pub const WORDS_NO_DIGITS_TOKENIZER: &str = "words_no_digits";

/// The tokenizer of the blocks' field: only the words with a digit,
/// shortened as [`crate::indexed_word`] does.
pub const DIGIT_WORDS_TOKENIZER: &str = "digit_words";

/// Which blocks of rows hold a word with a digit. Block `b` holds rows
/// `b * rows_per_block()` up to the next block's first row; the index it
/// belongs to numbers its documents as its rows (one segment, written in
/// row order).
pub trait RowBlocks: Send + Sync + fmt::Debug {
    /// Rows per block (the last block of an index may hold fewer).
    fn rows_per_block(&self) -> u32;

    /// The blocks, ascending, holding a word that is indexed as `term`
    /// or, with `prefix`, whose indexed term starts with `term`.
    fn blocks(&self, term: &str, prefix: bool) -> tantivy::Result<Vec<u32>>;
}

fn has_digit(word: &str) -> bool {
    word.bytes().any(|b| b.is_ascii_digit())
}

/// Whether a word (as the full-word analyzer emits it) is indexed in the
/// blocks rather than per row.
pub fn in_blocks(word: &str) -> bool {
    has_digit(word)
}

/// The body's analyzer ([`crate::words_analyzer`]) keeping only the words
/// without a digit: what a field of [`WORDS_NO_DIGITS_TOKENIZER`] indexes.
pub fn words_without_digits_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(KeepDigits(false))
        .build()
}

/// The body's analyzer keeping only the words with a digit, shortened:
/// what the blocks' field indexes.
pub fn digit_words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(KeepDigits(true))
        .filter(shorten_ids())
        .build()
}

/// Keeps the tokens that hold a digit (`true`) or those that do not.
#[derive(Clone)]
struct KeepDigits(bool);

impl TokenFilter for KeepDigits {
    type Tokenizer<T: Tokenizer> = KeepDigitsFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> KeepDigitsFilter<T> {
        KeepDigitsFilter(tokenizer, self.0)
    }
}

#[derive(Clone)]
struct KeepDigitsFilter<T>(T, bool);

impl<T: Tokenizer> Tokenizer for KeepDigitsFilter<T> {
    type TokenStream<'a> = KeepDigitsStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        KeepDigitsStream(self.0.token_stream(text), self.1)
    }
}

struct KeepDigitsStream<S>(S, bool);

impl<S: TokenStream> TokenStream for KeepDigitsStream<S> {
    fn advance(&mut self) -> bool {
        while self.0.advance() {
            if has_digit(&self.0.token().text) == self.1 {
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

/// Every row of the blocks holding a word with a digit: candidates only,
/// to be checked against their text (never an answer by itself).
#[derive(Clone, Debug)]
pub struct BlockRowsQuery {
    blocks: Arc<dyn RowBlocks>,
    term: String,
    prefix: bool,
}

impl BlockRowsQuery {
    /// Rows of the blocks holding a word indexed as `term` (or, with
    /// `prefix`, as a term starting with it).
    pub fn new(blocks: Arc<dyn RowBlocks>, term: String, prefix: bool) -> Self {
        BlockRowsQuery {
            blocks,
            term,
            prefix,
        }
    }
}

impl Query for BlockRowsQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl BlockRowsQuery {
    fn rows(&self, reader: &SegmentReader) -> tantivy::Result<BitSet> {
        let max_doc = reader.max_doc();
        let per_block = self.blocks.rows_per_block().max(1);
        let mut rows = BitSet::with_max_value(max_doc);
        for block in self.blocks.blocks(&self.term, self.prefix)? {
            let start = block.saturating_mul(per_block);
            let end = start.saturating_add(per_block).min(max_doc);
            for doc in start..end {
                rows.insert(doc);
            }
        }
        Ok(rows)
    }
}

impl Weight for BlockRowsQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ConstScorer::new(
            BitSetDocSet::from(self.rows(reader)?),
            boost,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.rows(reader)?.contains(doc) {
            Ok(Explanation::new("in a block holding the word", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!(
                "document {doc} is in no block holding '{}'",
                self.term
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(mut analyzer: TextAnalyzer, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        analyzer
            .token_stream(text)
            .process(&mut |t| out.push(t.text.clone()));
        out
    }

    #[test]
    fn words_split_by_whether_they_hold_a_digit() {
        let line = "2023-01-29 GET /api/v2 took 1674981742383 ms e12345 OK";
        assert_eq!(
            terms(words_without_digits_analyzer(), line),
            vec!["get", "api", "took", "ms", "ok"]
        );
        assert_eq!(
            terms(digit_words_analyzer(), line),
            vec!["2023", "01", "29", "v2", "1674~", "e123~"]
        );
        assert!(in_blocks("v2") && !in_blocks("api"));
    }
}
