//! Recursive descent from tokens to an [`Ast`]. Nesting (groups and
//! negations) is bounded by [`MAX_DEPTH`], so hostile input gets an error,
//! never a stack overflow.

use std::ops::Bound;

use crate::ast::Ast;
use crate::lexer::{Token, tokens};
use crate::{Result, SearchError};

/// The deepest nesting of parentheses and negations a query may have.
pub const MAX_DEPTH: usize = 64;

/// Parses search text. Empty text is an empty query, which matches nothing.
pub fn parse(text: &str) -> Result<Ast> {
    let tokens = tokens(text)?;
    if tokens.is_empty() {
        return Ok(Ast::And(Vec::new()));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let ast = parser.or(None)?;
    match parser.peek() {
        None => Ok(ast),
        Some(Token::RParen) => Err(SearchError::new("unbalanced ')'")),
        Some(other) => Err(SearchError::new(format!("unexpected {}", describe(other)))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word { text, .. } => format!("'{text}'"),
        Token::Phrase { text, .. } => format!("\"{text}\""),
        Token::Colon => "':'".into(),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::RangeOpen(true) => "'['".into(),
        Token::RangeOpen(false) => "'{'".into(),
        Token::RangeClose(true) => "']'".into(),
        Token::RangeClose(false) => "'}'".into(),
        Token::Minus => "'-'".into(),
        Token::Plus => "'+'".into(),
    }
}

fn is_keyword(token: Option<&Token>, keyword: &str) -> bool {
    matches!(token, Some(Token::Word { text, star: false }) if text == keyword)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SearchError::new(format!(
                "query nests deeper than {MAX_DEPTH} groups or negations"
            )));
        }
        Ok(())
    }

    /// Whether the next token can start an operand.
    fn operand_follows(&self) -> bool {
        match self.peek() {
            None | Some(Token::RParen) => false,
            Some(t) => !is_keyword(Some(t), "OR"),
        }
    }

    fn or(&mut self, field: Option<&str>) -> Result<Ast> {
        let mut alternatives = vec![self.and(field)?];
        while is_keyword(self.peek(), "OR") {
            self.next();
            alternatives.push(self.and(field)?);
        }
        Ok(single_or(alternatives, Ast::Or))
    }

    fn and(&mut self, field: Option<&str>) -> Result<Ast> {
        let mut parts = vec![self.unary(field)?];
        loop {
            if is_keyword(self.peek(), "AND") {
                self.next();
            } else if !self.operand_follows() {
                break;
            }
            parts.push(self.unary(field)?);
        }
        Ok(single_or(parts, Ast::And))
    }

    fn unary(&mut self, field: Option<&str>) -> Result<Ast> {
        if is_keyword(self.peek(), "NOT") || self.peek() == Some(&Token::Minus) {
            self.next();
            self.enter()?;
            let operand = self.unary(field)?;
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(operand)));
        }
        if self.peek() == Some(&Token::Plus) {
            self.next();
        }
        self.primary(field)
    }

    fn group(&mut self, field: Option<&str>) -> Result<Ast> {
        self.enter()?;
        let inner = self.or(field)?;
        self.depth -= 1;
        match self.next() {
            Some(Token::RParen) => Ok(inner),
            _ => Err(SearchError::new("unbalanced '(': expected ')'")),
        }
    }

    fn primary(&mut self, field: Option<&str>) -> Result<Ast> {
        match self.next() {
            None => Err(SearchError::new("the query ends where a term was expected")),
            Some(Token::LParen) => self.group(field),
            Some(Token::Word { text, star }) if self.peek() == Some(&Token::Colon) => {
                self.next();
                if field.is_some() || star || text.is_empty() {
                    return Err(SearchError::new(format!(
                        "'{text}' cannot name a field here"
                    )));
                }
                self.field_value(&text)
            }
            Some(token) => value(token, field),
        }
    }

    fn field_value(&mut self, field: &str) -> Result<Ast> {
        match self.next() {
            Some(Token::LParen) => self.group(Some(field)),
            Some(Token::RangeOpen(inclusive)) => self.range(field, inclusive),
            Some(token @ (Token::Word { .. } | Token::Phrase { .. })) => value(token, Some(field)),
            _ => Err(SearchError::new(format!(
                "'{field}:' must be followed by a value"
            ))),
        }
    }

    fn bound(&mut self, inclusive: bool) -> Result<Bound<String>> {
        let negative = self.peek() == Some(&Token::Minus);
        if negative {
            self.next();
        }
        match self.next() {
            Some(Token::Word { text, star: true }) if text.is_empty() && !negative => {
                Ok(Bound::Unbounded)
            }
            Some(Token::Word { text, star: false } | Token::Phrase { text, star: false }) => {
                let text = if negative { format!("-{text}") } else { text };
                Ok(if inclusive {
                    Bound::Included(text)
                } else {
                    Bound::Excluded(text)
                })
            }
            _ => Err(SearchError::new("a range bound must be a value or '*'")),
        }
    }

    fn range(&mut self, field: &str, lower_inclusive: bool) -> Result<Ast> {
        let lower = self.bound(lower_inclusive)?;
        if !is_keyword(self.peek(), "TO") {
            return Err(SearchError::new("a range reads [lower TO upper]"));
        }
        self.next();
        // The upper bound's inclusiveness is known only at the bracket.
        let upper = self.bound(true)?;
        let upper = match self.next() {
            Some(Token::RangeClose(true)) => upper,
            Some(Token::RangeClose(false)) => match upper {
                Bound::Included(v) => Bound::Excluded(v),
                other => other,
            },
            _ => return Err(SearchError::new("unclosed range: expected ']' or '}'")),
        };
        Ok(Ast::Range {
            field: Some(field.to_string()),
            lower,
            upper,
        })
    }
}

/// The one operand itself, or `group` of several: `(a)` is just `a`.
fn single_or(mut operands: Vec<Ast>, group: fn(Vec<Ast>) -> Ast) -> Ast {
    if operands.len() == 1 {
        operands.remove(0)
    } else {
        group(operands)
    }
}

/// A word or phrase as a leaf of `field`.
fn value(token: Token, field: Option<&str>) -> Result<Ast> {
    let field = field.map(str::to_string);
    match token {
        Token::Word { text, star: true } if text.is_empty() => Ok(match field {
            None => Ast::All,
            Some(field) => Ast::Prefix {
                field: Some(field),
                stem: String::new(),
            },
        }),
        // Only a plain word stem is a prefix; `c-55*` searches the words
        // `c` `55`, as it always has.
        Token::Word { text, star: true }
            if text.chars().all(|c| c.is_alphanumeric() || c == '_') =>
        {
            Ok(Ast::Prefix { field, stem: text })
        }
        Token::Word { text, .. } => Ok(Ast::Term { field, text }),
        Token::Phrase { text, star } => Ok(Ast::Phrase {
            field,
            text,
            prefix: star,
        }),
        other => Err(SearchError::new(format!(
            "expected a term, found {}",
            describe(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: Option<&str>, text: &str) -> Ast {
        Ast::Term {
            field: field.map(str::to_string),
            text: text.into(),
        }
    }

    #[test]
    fn precedence_and_implicit_conjunction() {
        assert_eq!(
            parse("a b OR c").unwrap(),
            Ast::Or(vec![
                Ast::And(vec![term(None, "a"), term(None, "b")]),
                term(None, "c")
            ])
        );
        assert_eq!(
            parse("reset AND NOT service:payment").unwrap(),
            Ast::And(vec![
                term(None, "reset"),
                Ast::Not(Box::new(term(Some("service"), "payment")))
            ])
        );
        assert_eq!(
            parse("reset -service:payment").unwrap(),
            parse("reset NOT service:payment").unwrap()
        );
        assert_eq!(
            parse("(a OR b) AND c").unwrap(),
            Ast::And(vec![
                Ast::Or(vec![term(None, "a"), term(None, "b")]),
                term(None, "c")
            ])
        );
        assert_eq!(
            parse("service:(cart OR pay*)").unwrap(),
            Ast::Or(vec![
                term(Some("service"), "cart"),
                Ast::Prefix {
                    field: Some("service".into()),
                    stem: "pay".into()
                }
            ])
        );
    }

    #[test]
    fn leaves() {
        assert_eq!(
            parse("\"x AND NOT y\"").unwrap(),
            Ast::Phrase {
                field: None,
                text: "x AND NOT y".into(),
                prefix: false
            }
        );
        assert_eq!(
            parse(r#"body:"a \"quoted\" word""#).unwrap(),
            Ast::Phrase {
                field: Some("body".into()),
                text: r#"a "quoted" word"#.into(),
                prefix: false
            }
        );
        assert_eq!(parse("c-55*").unwrap(), term(None, "c-55"));
        assert_eq!(parse("*").unwrap(), Ast::All);
        assert_eq!(
            parse("severity_number:[17 TO 24]").unwrap(),
            Ast::Range {
                field: Some("severity_number".into()),
                lower: Bound::Included("17".into()),
                upper: Bound::Included("24".into())
            }
        );
        assert_eq!(
            parse("n:{-5 TO *]").unwrap(),
            Ast::Range {
                field: Some("n".into()),
                lower: Bound::Excluded("-5".into()),
                upper: Bound::Unbounded
            }
        );
        assert_eq!(
            parse("time:[2026-11-26T14:00:00Z TO 2026-11-26T15:00:00Z]").unwrap(),
            Ast::Range {
                field: Some("time".into()),
                lower: Bound::Included("2026-11-26T14:00:00Z".into()),
                upper: Bound::Included("2026-11-26T15:00:00Z".into())
            }
        );
    }

    #[test]
    fn every_readme_example_parses() {
        for q in [
            "timeout",
            "connection reset",
            "\"connection reset\"",
            "\"o-810804\"",
            "\"/api/cart\"",
            "reset OR refused",
            "reset AND NOT service:payment",
            "reset -service:payment",
            "(a OR b) AND c",
            "conn*",
            "service:pay*",
            "service:cart",
            "severity_text:error",
            "trace_id:5b8e",
            "severity_number:[17 TO 24]",
            "attributes.http.route:cart",
            "attributes.http.response.status_code:[500 TO 599]",
            "time:[2026-11-26T14:00:00Z TO 2026-11-26T15:00:00Z]",
            "\"connection reset\" AND NOT service:payment",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn malformed_queries_are_errors() {
        for q in [
            "a AND (", "body:(", "a)", "a OR", "x:[1 TO", "x:[1 5]", "\"open", ":x",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse(&ok).unwrap(), term(None, "a"));
        for deep in [
            format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}a", "NOT ".repeat(100_000)),
            format!("{}a", "-(".repeat(50_000)),
        ] {
            let err = parse(&deep).unwrap_err();
            assert!(err.0.contains("deeper than"), "{err}");
        }
    }
}
