//! Phrases on a field indexed without positions: the index narrows a
//! phrase to the documents holding all of its words, and each of those is
//! then checked against its text, which the caller supplies (for logs, the
//! `body` column of the Parquet file the index sits beside). The answer is
//! as exact as a positional index's, for a fraction of its size: positions
//! were the largest part of the log index.

use std::fmt;
use std::sync::Arc;

use tantivy::query::{
    BitSetDocSet, BooleanQuery, ConstScorer, EnableScoring, Explanation, Occur, Query, Scorer,
    TermQuery, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TERMINATED, Term};

/// The text of indexed documents, for checking phrases.
pub trait TextSource: Send + Sync + fmt::Debug {
    /// Calls `each(i, text)` for every `docs[i]` of `segment` that has
    /// text in `column` (the checked field's name), in any order.
    fn texts(
        &self,
        segment: &SegmentReader,
        column: &str,
        docs: &[DocId],
        each: &mut dyn FnMut(usize, &str),
    ) -> tantivy::Result<()>;
}

/// Documents are checked this many at a time, so the texts held at once
/// stay bounded however many documents hold a phrase's words.
const CHECK_BATCH: usize = 4096;

/// Words in a row, as a field's analyzer splits text.
#[derive(Clone)]
pub struct PhraseMatcher {
    analyzer: TextAnalyzer,
    /// `(offset, word)`, offsets as the analyzer placed the phrase's words.
    words: Vec<(usize, String)>,
    /// The last word is a prefix (`"connection res"*`).
    prefix: bool,
    /// The longest run of ASCII digits of each word that has one: a text
    /// without one of them holds no such word, whatever its case (no
    /// character lowercases to a digit), so it is rejected without being
    /// split into words. Words with a digit are checked on whole blocks
    /// of rows ([`crate::row_blocks`]), most of which lack them.
    digit_runs: Vec<String>,
}

impl fmt::Debug for PhraseMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhraseMatcher")
            .field("words", &self.words)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl PhraseMatcher {
    pub fn new(analyzer: TextAnalyzer, words: Vec<(usize, String)>, prefix: bool) -> Self {
        let digit_runs = words
            .iter()
            .filter_map(|(_, word)| {
                word.split(|c: char| !c.is_ascii_digit())
                    .max_by_key(|run| run.len())
                    .filter(|run| !run.is_empty())
                    .map(str::to_string)
            })
            .collect();
        PhraseMatcher {
            analyzer,
            words,
            prefix,
            digit_runs,
        }
    }

    /// Whether `text` holds the phrase: its words at the same relative
    /// positions, the last one only as a prefix when asked.
    pub fn matches(&self, text: &str) -> bool {
        let Some((first_offset, _)) = self.words.first() else {
            return false;
        };
        if self
            .digit_runs
            .iter()
            .any(|run| !text.contains(run.as_str()))
        {
            return false;
        }
        let mut analyzer = self.analyzer.clone();
        let mut tokens: Vec<(usize, String)> = Vec::new();
        analyzer
            .token_stream(text)
            .process(&mut |t| tokens.push((t.position, t.text.clone())));
        let at = |position: usize| {
            tokens
                .binary_search_by_key(&position, |(p, _)| *p)
                .ok()
                .map(|i| tokens[i].1.as_str())
        };
        let last = self.words.len() - 1;
        tokens.iter().any(|(start, _)| {
            let Some(base) = start.checked_sub(*first_offset) else {
                return false;
            };
            self.words.iter().enumerate().all(|(i, (offset, word))| {
                at(base + offset).is_some_and(|token| {
                    if self.prefix && i == last {
                        token.starts_with(word.as_str())
                    } else {
                        token == word
                    }
                })
            })
        })
    }
}

/// Documents holding every one of `terms` and, checked against their
/// text, the phrase itself.
#[derive(Clone, Debug)]
pub struct VerifiedPhraseQuery {
    candidates: BooleanQuery,
    matcher: PhraseMatcher,
    source: Arc<dyn TextSource>,
    column: String,
}

impl VerifiedPhraseQuery {
    /// `terms` narrow the candidates (all must be present); `matcher`
    /// decides on the text of `column`.
    pub fn new(
        terms: Vec<Term>,
        matcher: PhraseMatcher,
        source: Arc<dyn TextSource>,
        column: String,
    ) -> Self {
        let clauses = terms
            .into_iter()
            .map(|t| {
                (
                    Occur::Must,
                    Box::new(TermQuery::new(t, IndexRecordOption::Basic)) as Box<dyn Query>,
                )
            })
            .collect();
        VerifiedPhraseQuery::with_candidates(clauses, matcher, source, column)
    }

    /// Documents matching `clauses` (a conjunction: what narrows the
    /// candidates, such as [`crate::BlockRowsQuery`]), each checked by
    /// `matcher` on the text of `column`.
    pub fn with_candidates(
        clauses: Vec<(Occur, Box<dyn Query>)>,
        matcher: PhraseMatcher,
        source: Arc<dyn TextSource>,
        column: String,
    ) -> Self {
        VerifiedPhraseQuery {
            candidates: BooleanQuery::new(clauses),
            matcher,
            source,
            column,
        }
    }
}

impl Query for VerifiedPhraseQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(VerifiedPhraseWeight {
            candidates: self.candidates.weight(enable_scoring)?,
            matcher: self.matcher.clone(),
            source: self.source.clone(),
            column: self.column.clone(),
        }))
    }
}

struct VerifiedPhraseWeight {
    candidates: Box<dyn Weight>,
    matcher: PhraseMatcher,
    source: Arc<dyn TextSource>,
    column: String,
}

impl VerifiedPhraseWeight {
    fn matching(&self, reader: &SegmentReader) -> tantivy::Result<BitSet> {
        let mut scorer = self.candidates.scorer(reader, 1.0)?;
        let mut matching = BitSet::with_max_value(reader.max_doc());
        let mut batch = Vec::with_capacity(CHECK_BATCH);
        let mut doc = scorer.doc();
        loop {
            if doc != TERMINATED {
                batch.push(doc);
                doc = scorer.advance();
            }
            if batch.len() == CHECK_BATCH || (doc == TERMINATED && !batch.is_empty()) {
                self.source
                    .texts(reader, &self.column, &batch, &mut |i, text| {
                        if self.matcher.matches(text) {
                            matching.insert(batch[i]);
                        }
                    })?;
                batch.clear();
            }
            if doc == TERMINATED {
                break;
            }
        }
        Ok(matching)
    }
}

impl Weight for VerifiedPhraseWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = self.matching(reader)?;
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.matching(reader)?.contains(doc) {
            Ok(Explanation::new("phrase checked against the text", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not hold the phrase"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::TokenizerManager;

    fn matcher(words: &[(usize, &str)], prefix: bool) -> PhraseMatcher {
        let analyzer = TokenizerManager::default().get("default").unwrap();
        PhraseMatcher::new(
            analyzer,
            words.iter().map(|(o, w)| (*o, w.to_string())).collect(),
            prefix,
        )
    }

    #[test]
    fn words_must_be_adjacent_and_in_order() {
        let m = matcher(&[(0, "connection"), (1, "reset")], false);
        assert!(m.matches("ERROR Connection reset by peer"));
        assert!(m.matches("connection: reset"), "punctuation is not a word");
        assert!(!m.matches("reset the connection"));
        assert!(!m.matches("connection was reset"));
        assert!(!m.matches("connection resetting"));
        let m = matcher(&[(0, "connection"), (1, "res")], true);
        assert!(m.matches("connection resetting"));
        assert!(!m.matches("connection was reset"));
        let m = matcher(&[(0, "a"), (1, "a"), (2, "b")], false);
        assert!(
            m.matches("a a a b"),
            "a repeated first word still finds the match"
        );
        assert!(!m.matches("a b a b"));
    }

    #[test]
    fn words_with_digits_match_whatever_their_case() {
        let m = matcher(&[(0, "e12345"), (1, "ok")], false);
        assert_eq!(m.digit_runs, vec!["12345"]);
        assert!(m.matches("code E12345 OK"));
        assert!(!m.matches("code e1234 5 ok"));
        assert!(!m.matches("code e123456 ok"));
        let m = matcher(&[(0, "v1"), (1, "2023")], false);
        assert_eq!(m.digit_runs, vec!["1", "2023"]);
        assert!(m.matches("/api/V1/2023"));
        let m = matcher(&[(0, "took"), (1, "16749")], true);
        assert!(m.matches("took 1674981742383 ms"));
        assert!(!m.matches("took 1674 981742383 ms"));
    }
}
