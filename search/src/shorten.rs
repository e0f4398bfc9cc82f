//! Cutting a term to its first characters and a mark, the one mechanism
//! behind [`crate::id_words`] (words with a digit, in `body`) and
//! [`crate::short_keys`] (nearly distinct keyword values): many rare terms
//! become one term per prefix, and a search checks the rows under it
//! against their text. Each of them only says which terms are cut, and
//! where ([`Rule`]).

use std::borrow::Cow;

use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};

/// Ends a shortened term.
const MARK: char = '~';

/// Bytes of a term kept when it is shortened, or `None` when it is kept
/// whole.
pub(crate) type Rule = fn(&str) -> Option<usize>;

/// Bytes of the first `chars` characters of `text`, when it has more.
pub(crate) fn prefix_len(text: &str, chars: usize) -> Option<usize> {
    text.char_indices().nth(chars).map(|(i, _)| i)
}

/// The term `text` is indexed under by `rule`.
pub(crate) fn indexed(text: &str, rule: Rule) -> Cow<'_, str> {
    match rule(text) {
        Some(len) => Cow::Owned(format!("{}{MARK}", &text[..len])),
        None => Cow::Borrowed(text),
    }
}

/// The shortened term that terms starting with `stem` are under when
/// they are cut to `chars` characters and the stem is longer than that.
pub(crate) fn stem_term(stem: &str, chars: usize) -> Option<String> {
    let len = prefix_len(stem, chars)?;
    Some(format!("{}{MARK}", &stem[..len]))
}

/// The token filter that shortens the terms `rule` cuts ([`indexed`]).
#[derive(Clone)]
pub struct Shorten(pub(crate) Rule);

impl TokenFilter for Shorten {
    type Tokenizer<T: Tokenizer> = ShortenFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> ShortenFilter<T> {
        ShortenFilter(tokenizer, self.0)
    }
}

#[derive(Clone)]
pub struct ShortenFilter<T>(T, Rule);

impl<T: Tokenizer> Tokenizer for ShortenFilter<T> {
    type TokenStream<'a> = ShortenStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        ShortenStream(self.0.token_stream(text), self.1)
    }
}

pub struct ShortenStream<S>(S, Rule);

impl<S: TokenStream> TokenStream for ShortenStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let text = &mut self.0.token_mut().text;
        if let Some(len) = (self.1)(text) {
            text.truncate(len);
            text.push(MARK);
        }
        true
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}
