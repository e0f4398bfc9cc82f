//! Splits search text into tokens. Whitespace of any kind separates words;
//! a backslash escapes the next character, inside quotes and out.

use crate::{Result, SearchError};

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// An unquoted word; `star` when it ended in an unescaped `*`.
    Word {
        text: String,
        star: bool,
    },
    /// A quoted phrase, escapes resolved; `star` when `*` followed the
    /// closing quote.
    Phrase {
        text: String,
        star: bool,
    },
    Colon,
    LParen,
    RParen,
    /// `[` (true) or `{` (false).
    RangeOpen(bool),
    /// `]` (true) or `}` (false).
    RangeClose(bool),
    /// `-` before a word: exclude.
    Minus,
    /// `+` before a word: require (the default anyway).
    Plus,
}

/// Whether `c` ends a word. A colon does only in a field name: values and
/// range bounds may hold colons (`time:[2026-11-26T14:00:00Z TO *]`).
fn special(c: char, value: bool) -> bool {
    c.is_whitespace()
        || matches!(c, '(' | ')' | '"' | '[' | ']' | '{' | '}')
        || (c == ':' && !value)
}

/// The tokens of `text`.
pub fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut in_range = false;
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ':' | '[' | ']' | '{' | '}' => {
                chars.next();
                in_range = match c {
                    '[' | '{' => true,
                    ']' | '}' => false,
                    _ => in_range,
                };
                out.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    ':' => Token::Colon,
                    '[' => Token::RangeOpen(true),
                    '{' => Token::RangeOpen(false),
                    ']' => Token::RangeClose(true),
                    _ => Token::RangeClose(false),
                });
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                loop {
                    match chars.next() {
                        None => return Err(SearchError::new("unterminated quoted phrase")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => phrase.push(escaped),
                            None => return Err(SearchError::new("unterminated quoted phrase")),
                        },
                        Some(other) => phrase.push(other),
                    }
                }
                let star = chars.next_if_eq(&'*').is_some();
                out.push(Token::Phrase { text: phrase, star });
            }
            // After `field:` a sign belongs to the value (`n:-5`).
            '-' | '+' if !matches!(out.last(), Some(Token::Colon)) => {
                chars.next();
                // A sign is an operator only when a term follows it.
                if chars
                    .peek()
                    .is_some_and(|n| !n.is_whitespace() && *n != ')')
                {
                    out.push(if c == '-' { Token::Minus } else { Token::Plus });
                } else {
                    return Err(SearchError::new(format!("'{c}' must precede a term")));
                }
            }
            _ => {
                let value = in_range || matches!(out.last(), Some(Token::Colon));
                out.push(word(&mut chars, value)?)
            }
        }
    }
    Ok(out)
}

fn word(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, value: bool) -> Result<Token> {
    let mut text = String::new();
    let mut star = false;
    while let Some(&c) = chars.peek() {
        if special(c, value) {
            break;
        }
        chars.next();
        star = false;
        match c {
            '\\' => match chars.next() {
                Some(escaped) => text.push(escaped),
                None => return Err(SearchError::new("a trailing '\\' escapes nothing")),
            },
            '*' if chars.peek().is_none_or(|n| special(*n, value)) => star = true,
            other => text.push(other),
        }
    }
    Ok(Token::Word { text, star })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Token {
        Token::Word {
            text: text.into(),
            star: false,
        }
    }

    #[test]
    fn words_phrases_and_operators() {
        assert_eq!(
            tokens("a\tb\n-c (d)").unwrap(),
            vec![
                w("a"),
                w("b"),
                Token::Minus,
                w("c"),
                Token::LParen,
                w("d"),
                Token::RParen
            ]
        );
        assert_eq!(
            tokens(r#""say \"hi\""* x-y"#).unwrap(),
            vec![
                Token::Phrase {
                    text: r#"say "hi""#.into(),
                    star: true
                },
                w("x-y")
            ]
        );
        assert_eq!(
            tokens("service:pay*").unwrap(),
            vec![
                w("service"),
                Token::Colon,
                Token::Word {
                    text: "pay".into(),
                    star: true
                }
            ]
        );
        assert_eq!(
            tokens("n:[-5 TO *}").unwrap(),
            vec![
                w("n"),
                Token::Colon,
                Token::RangeOpen(true),
                Token::Minus,
                w("5"),
                w("TO"),
                Token::Word {
                    text: String::new(),
                    star: true
                },
                Token::RangeClose(false)
            ]
        );
        assert!(tokens("\"open").is_err());
        assert!(tokens("a -").is_err());
    }
}
