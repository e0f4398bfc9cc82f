//! From an [`Ast`] to a Tantivy query over one index's fields: each leaf is
//! analysed with its field's own tokenizer, so a query matches what
//! indexing stored.

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;

use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, QueryClone,
    RangeQuery, RegexQuery, TermQuery,
};
use tantivy::schema::{Field, FieldType, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DateTime, Index, Term};

use crate::ast::Ast;
use crate::id_words::{
    ID_PREFIX_CHARS, ID_WORDS_TOKENIZER, full_words_analyzer, indexed_word, shortened_stem,
};
use crate::row_blocks::{BlockRowsQuery, RowBlocks, WORDS_NO_DIGITS_TOKENIZER, in_blocks};
use crate::short_keys::{
    SHORT_KEYS_TOKENIZER, full_keys_analyzer, indexed_key, is_shortened_key, shortened_key_stem,
};
use crate::verified_phrase::{PhraseMatcher, TextSource, VerifiedPhraseQuery};
use crate::{Result, SearchError};

/// The Tantivy query for `ast` on `index`; leaves without a field search
/// `default_field`. Phrases on a text field indexed without positions, and
/// values of a field that keeps long values shortened
/// ([`crate::short_keys`]), are checked against the documents' text from
/// `texts`; words with a digit
/// of a field that keeps them by blocks of rows are looked up in `blocks`
/// ([`crate::row_blocks`]) and checked the same way.
pub fn to_tantivy(
    ast: &Ast,
    index: &Index,
    default_field: Field,
    texts: Option<Arc<dyn TextSource>>,
    blocks: Option<Arc<dyn RowBlocks>>,
) -> Result<Box<dyn Query>> {
    Compiler {
        index,
        default_field,
        texts,
        blocks,
    }
    .query(ast)
}

struct Compiler<'a> {
    index: &'a Index,
    default_field: Field,
    texts: Option<Arc<dyn TextSource>>,
    blocks: Option<Arc<dyn RowBlocks>>,
}

/// Where a leaf looks: a field, and within a JSON field the path.
struct Target<'a> {
    field: Field,
    path: &'a str,
    name: String,
}

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(SearchError::new(message))
}

fn boolean(clauses: Vec<(Occur, Box<dyn Query>)>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(clauses))
}

fn any_of(mut queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    match queries.len() {
        0 => Box::new(EmptyQuery),
        1 => queries.remove(0),
        _ => boolean(queries.into_iter().map(|q| (Occur::Should, q)).collect()),
    }
}

/// The regex of the words starting with `stem` (lowercase).
pub fn prefix_regex(stem: &str) -> String {
    format!("{}.*", regex_escape(stem))
}

/// A regex matching exactly `text`.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn parse_time(text: &str) -> Result<DateTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(DateTime::from_timestamp_nanos)
        .ok_or_else(|| SearchError::new(format!("'{text}' is not an RFC 3339 time")))
}

impl Compiler<'_> {
    fn query(&self, ast: &Ast) -> Result<Box<dyn Query>> {
        match ast {
            Ast::All => Ok(Box::new(AllQuery)),
            Ast::And(children) if children.is_empty() => Ok(Box::new(EmptyQuery)),
            Ast::And(children) => {
                let mut clauses = Vec::with_capacity(children.len() + 1);
                for child in children {
                    clauses.push(match child {
                        Ast::Not(inner) => (Occur::MustNot, self.query(inner)?),
                        other => (Occur::Must, self.query(other)?),
                    });
                }
                Ok(boolean(only_negative_means_all_but(clauses)))
            }
            Ast::Or(children) => Ok(any_of(
                children
                    .iter()
                    .map(|c| self.query(c))
                    .collect::<Result<_>>()?,
            )),
            // A negation alone excludes from everything.
            Ast::Not(inner) => Ok(boolean(only_negative_means_all_but(vec![(
                Occur::MustNot,
                self.query(inner)?,
            )]))),
            Ast::Term { field, text } => self.term(&self.target(field.as_deref())?, text, false),
            Ast::Phrase {
                field,
                text,
                prefix: false,
            } => self.term(&self.target(field.as_deref())?, text, true),
            Ast::Phrase {
                field,
                text,
                prefix: true,
            } => self.phrase_prefix(&self.target(field.as_deref())?, text),
            Ast::Prefix { field, stem } => self.prefix(&self.target(field.as_deref())?, stem),
            Ast::Range {
                field,
                lower,
                upper,
            } => self.range(&self.target(field.as_deref())?, lower, upper),
        }
    }

    fn target<'a>(&'a self, name: Option<&'a str>) -> Result<Target<'a>> {
        let schema = self.index.schema();
        let Some(name) = name else {
            return Ok(Target {
                field: self.default_field,
                path: "",
                name: schema.get_field_name(self.default_field).to_string(),
            });
        };
        let (field, path) = match schema.get_field(name) {
            Ok(field) => (field, ""),
            Err(_) => match name.split_once('.') {
                Some((head, path)) if !path.is_empty() => match schema.get_field(head) {
                    Ok(field)
                        if matches!(
                            schema.get_field_entry(field).field_type(),
                            FieldType::JsonObject(_)
                        ) =>
                    {
                        (field, path)
                    }
                    _ => return fail(format!("no field '{name}'")),
                },
                _ => return fail(format!("no field '{name}'")),
            },
        };
        // A date column alone answers ranges and values by a scan.
        let entry = schema.get_field_entry(field);
        let searchable = entry.is_indexed()
            || matches!(entry.field_type(), FieldType::JsonObject(_))
            || (entry.is_fast() && matches!(entry.field_type(), FieldType::Date(_)));
        if !searchable {
            return fail(format!("field '{name}' is not searchable"));
        }
        Ok(Target {
            field,
            path,
            name: name.to_string(),
        })
    }

    /// The field's analysed tokens of `text`, as terms with positions.
    fn text_terms(&self, target: &Target<'_>, text: &str) -> Result<Vec<(usize, Term)>> {
        let mut analyzer = self.analyzer(target)?;
        let json = self.json_base(target);
        let mut terms = Vec::new();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |token| {
            let term = match &json {
                Some(base) => {
                    let mut term = base.clone();
                    term.append_type_and_str(&token.text);
                    term
                }
                None => Term::from_field_text(target.field, &token.text),
            };
            terms.push((token.position, term));
        });
        Ok(terms)
    }

    /// The name of the tokenizer the field is indexed with, if text.
    fn tokenizer_name(&self, target: &Target<'_>) -> Option<String> {
        match self
            .index
            .schema()
            .get_field_entry(target.field)
            .field_type()
        {
            FieldType::Str(o) => o.get_indexing_options().map(|i| i.tokenizer().to_string()),
            _ => None,
        }
    }

    /// How the field shortens terms in its index, if it does: such a term
    /// is found through its shortened term and checked against the text.
    /// A field keeping words with a digit by blocks shortens them there.
    fn shortening(&self, target: &Target<'_>) -> Option<Shortening> {
        match self.tokenizer_name(target)?.as_str() {
            ID_WORDS_TOKENIZER | WORDS_NO_DIGITS_TOKENIZER => Some(Shortening::Ids),
            SHORT_KEYS_TOKENIZER => Some(Shortening::Keys),
            _ => None,
        }
    }

    /// Whether a whole word's term holds other words too (it is
    /// shortened), so that its rows must be checked.
    fn is_shortened(&self, target: &Target<'_>, word: &str) -> bool {
        self.shortening(target)
            .is_some_and(|s| s.is_shortened(word))
    }

    /// Where the field's words with a digit are, when not in its own
    /// postings ([`crate::row_blocks`]).
    fn digit_blocks(&self, target: &Target<'_>) -> Result<Option<Arc<dyn RowBlocks>>> {
        if self.tokenizer_name(target).as_deref() != Some(WORDS_NO_DIGITS_TOKENIZER) {
            return Ok(None);
        }
        match &self.blocks {
            Some(blocks) => Ok(Some(blocks.clone())),
            None => fail(format!(
                "field '{}' cannot match words with a digit",
                target.name
            )),
        }
    }

    /// The query narrowing a verified phrase to the rows that may hold
    /// `word` (a whole word): its term's rows, or its blocks' rows.
    fn candidate(&self, target: &Target<'_>, term: Term) -> Result<(String, Box<dyn Query>)> {
        let word = term.value().as_str().map(str::to_string);
        if let Some(word) = word.as_deref()
            && in_blocks(word)
            && let Some(blocks) = self.digit_blocks(target)?
        {
            let indexed = indexed_word(word).into_owned();
            let key = format!("b:{indexed}");
            return Ok((key, Box::new(BlockRowsQuery::new(blocks, indexed, false))));
        }
        let term = self.indexed_term(target, term);
        Ok((
            format!("t:{term:?}"),
            Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
        ))
    }

    /// How the words of a query on the field are split: as the field's
    /// analyzer does, but with words whole where it shortens them.
    fn analyzer(&self, target: &Target<'_>) -> Result<TextAnalyzer> {
        if let Some(shortening) = self.shortening(target) {
            return Ok(shortening.whole_analyzer());
        }
        self.index
            .tokenizer_for_field(target.field)
            .map_err(|e| SearchError::new(e.to_string()))
    }

    /// The term a whole word of the field is indexed under.
    fn indexed_term(&self, target: &Target<'_>, term: Term) -> Term {
        let indexed = match (self.shortening(target), term.value().as_str()) {
            (Some(shortening), Some(word)) => shortening.indexed(word).into_owned(),
            _ => return term,
        };
        Term::from_field_text(target.field, &indexed)
    }

    fn json_base(&self, target: &Target<'_>) -> Option<Term> {
        match self
            .index
            .schema()
            .get_field_entry(target.field)
            .field_type()
        {
            FieldType::JsonObject(options) => Some(Term::from_field_json_path(
                target.field,
                target.path,
                options.is_expand_dots_enabled(),
            )),
            _ => None,
        }
    }

    fn has_positions(&self, target: &Target<'_>) -> bool {
        match self
            .index
            .schema()
            .get_field_entry(target.field)
            .field_type()
        {
            FieldType::Str(o) => o
                .get_indexing_options()
                .is_some_and(|i| i.index_option().has_positions()),
            FieldType::JsonObject(o) => o
                .get_text_indexing_options()
                .is_some_and(|i| i.index_option().has_positions()),
            _ => false,
        }
    }

    /// Documents whose text holds the tokens of `text` in a row.
    fn tokens_query(&self, target: &Target<'_>, text: &str) -> Result<Option<Box<dyn Query>>> {
        let mut terms = self.text_terms(target, text)?;
        let shortened = |term: &Term| {
            term.value()
                .as_str()
                .is_some_and(|w| self.is_shortened(target, w))
        };
        let blocked = |term: &Term| term.value().as_str().is_some_and(in_blocks);
        Ok(match terms.len() {
            0 => None,
            // A word with a digit is found by its blocks: check their rows.
            1 if blocked(&terms[0].1) && self.digit_blocks(target)?.is_some() => {
                Some(self.verified_phrase(target, terms, false)?)
            }
            // A shortened word's term also holds other words: check each row.
            1 if shortened(&terms[0].1) => Some(self.verified_phrase(target, terms, false)?),
            1 => Some(Box::new(TermQuery::new(
                terms.remove(0).1,
                IndexRecordOption::Basic,
            ))),
            _ if self.has_positions(target) => Some(Box::new(PhraseQuery::new_with_offset(terms))),
            _ => Some(self.verified_phrase(target, terms, false)?),
        })
    }

    /// A phrase on a text field without positions: documents holding all
    /// its words, each checked against its text.
    fn verified_phrase(
        &self,
        target: &Target<'_>,
        terms: Vec<(usize, Term)>,
        prefix: bool,
    ) -> Result<Box<dyn Query>> {
        let cannot = || fail(format!("field '{}' cannot match phrases", target.name));
        let Some(texts) = self.texts.clone() else {
            return cannot();
        };
        if !target.path.is_empty() {
            return cannot();
        }
        let words = terms
            .iter()
            .map(|(offset, term)| {
                term.value()
                    .as_str()
                    .map(|w| (*offset, w.to_string()))
                    .ok_or_else(|| SearchError::new("phrase words must be text"))
            })
            .collect::<Result<Vec<_>>>()?;
        let analyzer = self.analyzer(target)?;
        // A prefix's last word narrows nothing by itself: the check does it.
        let required = terms.len() - usize::from(prefix);
        let mut candidates = terms
            .into_iter()
            .take(required)
            .map(|(_, t)| self.candidate(target, t))
            .collect::<Result<Vec<_>>>()?;
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        candidates.dedup_by(|a, b| a.0 == b.0);
        Ok(Box::new(VerifiedPhraseQuery::with_candidates(
            candidates
                .into_iter()
                .map(|(_, q)| (Occur::Must, q))
                .collect(),
            PhraseMatcher::new(analyzer, words, prefix),
            texts,
            target.name.clone(),
        )))
    }

    /// A single value: a word, or (`phrase`) a quoted one.
    fn term(&self, target: &Target<'_>, text: &str, phrase: bool) -> Result<Box<dyn Query>> {
        let schema = self.index.schema();
        let field = target.field;
        let typed = |term: Option<Term>, kind: &str| -> Result<Box<dyn Query>> {
            match term {
                Some(term) => Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic))),
                None => fail(format!(
                    "field '{}' holds {kind}, not '{text}'",
                    target.name
                )),
            }
        };
        match schema.get_field_entry(field).field_type() {
            FieldType::I64(_) => typed(
                text.parse().ok().map(|v| Term::from_field_i64(field, v)),
                "integers",
            ),
            FieldType::U64(_) => typed(
                text.parse().ok().map(|v| Term::from_field_u64(field, v)),
                "integers",
            ),
            FieldType::F64(_) => typed(
                text.parse().ok().map(|v| Term::from_field_f64(field, v)),
                "numbers",
            ),
            // Indexed dates are terms to the second; a date column keeps
            // its own precision.
            FieldType::Date(_) if schema.get_field_entry(field).is_indexed() => {
                Ok(Box::new(TermQuery::new(
                    Term::from_field_date_for_search(field, parse_time(text)?),
                    IndexRecordOption::Basic,
                )))
            }
            FieldType::Date(_) => Ok(Box::new(TermQuery::new(
                Term::from_field_date(field, parse_time(text)?),
                IndexRecordOption::Basic,
            ))),
            FieldType::JsonObject(_) => {
                // A JSON value may have been indexed as a number or as text.
                let mut alternatives: Vec<Box<dyn Query>> = Vec::new();
                if !phrase && let Some(term) = self.json_number(target, text) {
                    alternatives.push(Box::new(TermQuery::new(term, IndexRecordOption::Basic)));
                }
                alternatives.extend(self.tokens_query(target, text)?);
                Ok(any_of(alternatives))
            }
            FieldType::Str(_) => Ok(self
                .tokens_query(target, text)?
                .unwrap_or_else(|| Box::new(EmptyQuery))),
            _ => fail(format!(
                "field '{}' cannot be searched by value",
                target.name
            )),
        }
    }

    /// `text` as a JSON number term, when it is one.
    fn json_number(&self, target: &Target<'_>, text: &str) -> Option<Term> {
        let mut term = self.json_base(target)?;
        if let Ok(i) = text.parse::<i64>() {
            term.append_type_and_fast_value(i);
        } else if let Ok(f) = text.parse::<f64>()
            && f.is_finite()
        {
            term.append_type_and_fast_value(f);
        } else {
            return None;
        }
        Some(term)
    }

    fn prefix(&self, target: &Target<'_>, stem: &str) -> Result<Box<dyn Query>> {
        if !matches!(
            self.index
                .schema()
                .get_field_entry(target.field)
                .field_type(),
            FieldType::Str(_)
        ) {
            return fail(format!(
                "prefix search works on text fields, not '{}'",
                target.name
            ));
        }
        let stem = stem.to_lowercase();
        let pattern = format!("{}.*", regex_escape(&stem));
        let whole = RegexQuery::from_pattern(&pattern, target.field)
            .map(|q| Box::new(q) as Box<dyn Query>)
            .map_err(|e| SearchError::new(e.to_string()))?;
        // Words with a digit starting with the stem are in blocks under a
        // term starting with the stem's first characters: the rows of
        // those blocks that the whole words did not already match are
        // checked.
        if let Some(blocks) = self.digit_blocks(target)? {
            let Some(texts) = self.texts.clone() else {
                return fail(format!("field '{}' cannot match this prefix", target.name));
            };
            let key: String = stem.chars().take(ID_PREFIX_CHARS).collect();
            let with_digit = VerifiedPhraseQuery::with_candidates(
                vec![
                    (
                        Occur::Must,
                        Box::new(BlockRowsQuery::new(blocks, key, true)) as Box<dyn Query>,
                    ),
                    (Occur::MustNot, whole.box_clone()),
                ],
                PhraseMatcher::new(self.analyzer(target)?, vec![(0, stem)], true),
                texts,
                target.name.clone(),
            );
            return Ok(any_of(vec![whole, Box::new(with_digit)]));
        }
        // Words of the stem shortened past it are under the stem's own
        // shortened term: those rows are checked.
        let shortening = self.shortening(target);
        match shortening.and_then(|s| s.stem_term(&stem)) {
            Some(short) => {
                let Some(texts) = self.texts.clone() else {
                    return fail(format!("field '{}' cannot match this prefix", target.name));
                };
                let shortened = VerifiedPhraseQuery::new(
                    vec![Term::from_field_text(target.field, &short)],
                    PhraseMatcher::new(self.analyzer(target)?, vec![(0, stem)], true),
                    texts,
                    target.name.clone(),
                );
                // A keyword's whole terms are too short to start with the
                // stem, and a shortened term the pattern matches is the
                // checked one.
                if shortening == Some(Shortening::Keys) {
                    return Ok(Box::new(shortened));
                }
                Ok(any_of(vec![whole, Box::new(shortened)]))
            }
            None => Ok(whole),
        }
    }

    fn phrase_prefix(&self, target: &Target<'_>, text: &str) -> Result<Box<dyn Query>> {
        let mut terms = self.text_terms(target, text)?;
        match terms.len() {
            0 => fail("a phrase prefix needs a word"),
            1 => {
                let stem = terms.remove(0).1;
                match stem.value().as_str() {
                    Some(stem) if target.path.is_empty() => self.prefix(target, stem),
                    _ => fail(format!(
                        "prefix search works on text fields, not '{}'",
                        target.name
                    )),
                }
            }
            _ if self.has_positions(target) => {
                Ok(Box::new(PhrasePrefixQuery::new_with_offset(terms)))
            }
            _ => self.verified_phrase(target, terms, true),
        }
    }

    fn bound_term(&self, target: &Target<'_>, text: &str) -> Result<Term> {
        let field = target.field;
        let bad = |kind: &str| SearchError::new(format!("'{text}' is not {kind}"));
        Ok(
            match self.index.schema().get_field_entry(field).field_type() {
                FieldType::I64(_) => {
                    Term::from_field_i64(field, text.parse().map_err(|_| bad("an integer"))?)
                }
                FieldType::U64(_) => {
                    Term::from_field_u64(field, text.parse().map_err(|_| bad("an integer"))?)
                }
                FieldType::F64(_) => {
                    Term::from_field_f64(field, text.parse().map_err(|_| bad("a number"))?)
                }
                FieldType::Date(_) => Term::from_field_date(field, parse_time(text)?),
                FieldType::JsonObject(_) => match self.json_number(target, text) {
                    Some(term) => term,
                    None => {
                        let mut term = self.json_base(target).ok_or_else(|| bad("a value"))?;
                        term.append_type_and_str(text);
                        term
                    }
                },
                FieldType::Str(_) if self.shortening(target).is_some() => {
                    return fail(format!("field '{}' has no ranges", target.name));
                }
                FieldType::Str(_) => {
                    let mut terms = self.text_terms(target, text)?;
                    if terms.len() != 1 {
                        return fail(format!("range bound '{text}' must be a single word"));
                    }
                    terms.remove(0).1
                }
                _ => return fail(format!("field '{}' has no ranges", target.name)),
            },
        )
    }

    fn range(
        &self,
        target: &Target<'_>,
        lower: &Bound<String>,
        upper: &Bound<String>,
    ) -> Result<Box<dyn Query>> {
        let bound = |b: &Bound<String>| -> Result<Bound<Term>> {
            Ok(match b {
                Bound::Included(v) => Bound::Included(self.bound_term(target, v)?),
                Bound::Excluded(v) => Bound::Excluded(self.bound_term(target, v)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        let (lower, upper) = (bound(lower)?, bound(upper)?);
        if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
            return fail("a range needs at least one bound");
        }
        Ok(Box::new(RangeQuery::new(lower, upper)))
    }
}

/// How a field's index shortens terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shortening {
    /// Words with a digit ([`crate::id_words`]).
    Ids,
    /// Long keyword values ([`crate::short_keys`]).
    Keys,
}

impl Shortening {
    /// The term `word` is indexed under.
    fn indexed(self, word: &str) -> Cow<'_, str> {
        match self {
            Shortening::Ids => indexed_word(word),
            Shortening::Keys => indexed_key(word),
        }
    }

    /// Whether `word`'s term holds other words too.
    fn is_shortened(self, word: &str) -> bool {
        match self {
            Shortening::Ids => indexed_word(word) != word,
            Shortening::Keys => is_shortened_key(word),
        }
    }

    /// The shortened term words starting with `stem` may be under.
    fn stem_term(self, stem: &str) -> Option<String> {
        match self {
            Shortening::Ids => shortened_stem(stem),
            Shortening::Keys => shortened_key_stem(stem),
        }
    }

    /// How a query's words and the checked texts are split: as the
    /// field's analyzer does, with nothing shortened.
    fn whole_analyzer(self) -> TextAnalyzer {
        match self {
            Shortening::Ids => full_words_analyzer(),
            Shortening::Keys => full_keys_analyzer(),
        }
    }
}

/// A conjunction of exclusions alone would match nothing; it means "all
/// but", as in Tantivy's own parser.
fn only_negative_means_all_but(
    mut clauses: Vec<(Occur, Box<dyn Query>)>,
) -> Vec<(Occur, Box<dyn Query>)> {
    if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    clauses
}
