//! The syntax tree of a search.

use std::ops::Bound;

/// A parsed search. Leaves name their field, or `None` for the index's
/// default field; callers combine searches with [`Ast::and`] rather than by
/// pasting text together, so quoting and precedence can never go wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    /// Every document (`*`).
    All,
    /// A word: documents whose field holds its tokens (several tokens, as
    /// in `SKU-1234`, must be adjacent).
    Term { field: Option<String>, text: String },
    /// A quoted phrase; `prefix` when followed by `*` (the last word is a
    /// prefix).
    Phrase {
        field: Option<String>,
        text: String,
        prefix: bool,
    },
    /// `stem*`: a word starting with `stem`.
    Prefix { field: Option<String>, stem: String },
    /// `field:[lo TO hi]` (inclusive) or `{lo TO hi}` (exclusive); `*` is
    /// unbounded.
    Range {
        field: Option<String>,
        lower: Bound<String>,
        upper: Bound<String>,
    },
    /// Every child matches. Empty: nothing matches (as an empty query).
    And(Vec<Ast>),
    /// At least one child matches.
    Or(Vec<Ast>),
    /// The child does not match.
    Not(Box<Ast>),
}

impl Ast {
    /// `field` equals `value` exactly, as `field:"value"` would say —
    /// without having to quote `value`.
    pub fn field_is(field: &str, value: &str) -> Ast {
        Ast::Phrase {
            field: Some(field.to_string()),
            text: value.to_string(),
            prefix: false,
        }
    }

    /// Documents matching every one of `parts`; `All` when there are none.
    pub fn and(parts: impl IntoIterator<Item = Ast>) -> Ast {
        let mut all: Vec<Ast> = Vec::new();
        for part in parts {
            match part {
                Ast::All => {}
                Ast::And(inner) if !inner.is_empty() => all.extend(inner),
                other => all.push(other),
            }
        }
        match all.len() {
            0 => Ast::All,
            1 => all.pop().unwrap_or(Ast::All),
            _ => Ast::And(all),
        }
    }

    /// How deeply groups and negations nest (a leaf is 1).
    pub fn depth(&self) -> usize {
        match self {
            Ast::And(children) | Ast::Or(children) => {
                1 + children.iter().map(Ast::depth).max().unwrap_or(0)
            }
            Ast::Not(child) => 1 + child.depth(),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn and_flattens_and_drops_all() {
        let t = |s: &str| Ast::Term {
            field: None,
            text: s.into(),
        };
        assert_eq!(Ast::and([]), Ast::All);
        assert_eq!(Ast::and([Ast::All, t("a")]), t("a"));
        assert_eq!(
            Ast::and([Ast::And(vec![t("a"), t("b")]), t("c")]),
            Ast::And(vec![t("a"), t("b"), t("c")])
        );
    }
}
