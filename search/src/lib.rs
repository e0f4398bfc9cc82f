//! The log search language, on its own so that everything that searches
//! logs — the full-text index, `match_all('…')`, the search API — agrees on
//! one grammar and combines queries as trees, never as text.
//!
//! Text goes through [`lexer`] → [`parser`] into an [`Ast`], which
//! [`to_tantivy`] turns into a Tantivy query over a given index's fields.
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*          -- terms are ANDed
//! unary   := ("NOT" | "-") unary | "+" unary | primary
//! primary := "(" or ")" | "*" | value | NAME ":" (value | range | "(" or ")")
//! value   := WORD | WORD"*" | "\"phrase\"" | "\"phrase\""*
//! range   := ("[" | "{") BOUND "TO" BOUND ("]" | "}")
//! ```

mod ast;
mod compile;
mod id_words;
mod lexer;
mod parser;
mod row_blocks;
mod short_keys;
mod shorten;
mod verified_phrase;

pub use ast::Ast;
pub use compile::{prefix_regex, to_tantivy};
pub use id_words::{ID_PREFIX_CHARS, ID_WORDS_TOKENIZER, indexed_word, words_analyzer};
pub use parser::{MAX_DEPTH, parse};
pub use row_blocks::{
    BlockRowsQuery, DIGIT_WORDS_TOKENIZER, RowBlocks, WORDS_NO_DIGITS_TOKENIZER,
    digit_words_analyzer, words_without_digits_analyzer,
};
pub use short_keys::{SHORT_KEYS_TOKENIZER, short_keys_analyzer};
pub use verified_phrase::{PhraseMatcher, TextSource, VerifiedPhraseQuery};

/// Why a search could not be parsed or translated; the message is meant for
/// the person who typed the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

impl SearchError {
    pub(crate) fn new(message: impl Into<String>) -> SearchError {
        SearchError(message.into())
    }
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;
