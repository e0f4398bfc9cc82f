//! What the SQL endpoint accepts: a single read-only query. Everything that
//! could write, change settings or read files outside the catalog is
//! refused here, with a message that says what was refused, before
//! DataFusion plans anything (which refuses DDL/DML/statements too).

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Statement, visit_relations};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::QueryError;

/// Table functions that read files; none is registered, but name them
/// clearly in case a future DataFusion default adds one.
const FILE_FUNCTIONS: &[&str] = &[
    "read_parquet",
    "read_csv",
    "read_json",
    "read_ndjson",
    "read_avro",
    "read_arrow",
    "parquet_scan",
    "parquet_metadata",
    "read_text",
    "read_blob",
];

/// Operators one statement may hold at most. Each binary operator is one
/// more level in the expression tree DataFusion plans recursively, so a
/// long chain (`1+1+…+1`) would overflow the stack; no hand-written query
/// comes near this.
const MAX_OPERATORS: usize = 256;

/// Parentheses may nest this deep at most, for the same reason.
const MAX_NESTING: usize = 64;

/// Refuses SQL whose expression trees would be too deep to plan safely,
/// judged from its tokens before anything recursive sees it.
fn check_depth(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    for token in &tokens {
        match token {
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq => operators += 1,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => operators += 1,
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(QueryError::Invalid(format!(
            "parentheses nest {deepest} deep; at most {MAX_NESTING} are allowed"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(QueryError::Invalid(format!(
            "the query has {operators} operators; at most {MAX_OPERATORS} are allowed (use IN lists or several queries)"
        )));
    }
    Ok(())
}

/// Checks `sql` and returns the one statement it holds.
pub fn check(sql: &str) -> Result<DfStatement, QueryError> {
    check_depth(sql)?;
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => return Err(QueryError::Invalid("empty query".into())),
        (Some(_), false) => {
            return Err(QueryError::Invalid("send one statement per request".into()));
        }
    };
    check_statement(&statement, sql)?;
    Ok(statement)
}

fn forbidden(kind: &str) -> QueryError {
    QueryError::Forbidden(format!(
        "{kind} is not allowed: the SQL endpoint is read-only and accepts only SELECT, WITH, EXPLAIN, SHOW and DESCRIBE"
    ))
}

/// The leading keywords of a statement, to name it in errors.
fn statement_kind(sql: &str) -> String {
    let words: Vec<String> = sql
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_uppercase()
        })
        .skip_while(|w| matches!(w.as_str(), "EXPLAIN" | "ANALYZE" | "VERBOSE"))
        .take(3)
        .collect();
    match words.first().map(String::as_str) {
        Some("CREATE" | "DROP" | "ALTER") if words.len() > 1 => {
            let n = if words.get(1).map(String::as_str) == Some("EXTERNAL") {
                3
            } else {
                2
            };
            words[..n.min(words.len())].join(" ")
        }
        Some(w) => w.to_string(),
        None => "this statement".into(),
    }
}

fn check_statement(statement: &DfStatement, sql: &str) -> Result<(), QueryError> {
    match statement {
        DfStatement::Statement(s) => check_sql_statement(s, sql),
        DfStatement::Explain(e) => check_statement(&e.statement, sql),
        DfStatement::CreateExternalTable(_) => Err(forbidden("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(forbidden("COPY")),
        DfStatement::Reset(_) => Err(forbidden("RESET")),
    }
}

fn check_sql_statement(statement: &Statement, sql: &str) -> Result<(), QueryError> {
    match statement {
        Statement::Query(_) => check_relations(statement),
        Statement::Explain { statement, .. } => check_sql_statement(statement, sql),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(()),
        Statement::Set(_) => Err(forbidden("SET")),
        Statement::Copy { .. } => Err(forbidden("COPY")),
        _ => Err(forbidden(&statement_kind(sql))),
    }
}

/// Refuses file-reading table functions and tables named by a path.
fn check_relations(statement: &Statement) -> Result<(), QueryError> {
    let flow = visit_relations(statement, |name| {
        let text = name.to_string();
        let lower = text.to_ascii_lowercase();
        let base = lower.rsplit('.').next().unwrap_or(&lower).trim_matches('"');
        if FILE_FUNCTIONS.contains(&base) {
            return ControlFlow::Break(format!(
                "table function {text} is not allowed: queries read only logs, spans and metrics"
            ));
        }
        if text.contains('/') || text.contains('\\') || text.contains("://") {
            return ControlFlow::Break(format!(
                "reading files ({text}) is not allowed: queries read only logs, spans and metrics"
            ));
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(msg) => Err(QueryError::Forbidden(msg)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_operator_chains_and_deep_nesting_are_refused_before_parsing() {
        let ok = format!("SELECT {}", vec!["1"; 200].join("+"));
        assert!(check(&ok).is_ok());
        let deep = format!("SELECT {}", vec!["1"; 5_000].join("+"));
        assert!(matches!(check(&deep), Err(QueryError::Invalid(m)) if m.contains("operators")));
        let nested = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(matches!(check(&nested), Err(QueryError::Invalid(m)) if m.contains("nest")));
        // IN lists are flat, however long.
        let list: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
        assert!(check(&format!("SELECT 1 WHERE 1 IN ({})", list.join(","))).is_ok());
    }

    #[test]
    fn accepts_read_only_statements() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT * FROM logs",
            "SHOW TABLES",
            "DESCRIBE logs",
            "SELECT count(*) FROM spans WHERE attributes['a'] = '1'",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn refuses_writes_settings_and_files_naming_the_kind() {
        let cases = [
            ("CREATE TABLE t (a INT)", "CREATE TABLE is not allowed"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE is not allowed",
            ),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW is not allowed"),
            ("DROP TABLE logs", "DROP TABLE is not allowed"),
            (
                "INSERT INTO logs SELECT * FROM logs",
                "INSERT is not allowed",
            ),
            ("DELETE FROM logs", "DELETE is not allowed"),
            ("UPDATE logs SET body = 'x'", "UPDATE is not allowed"),
            ("COPY logs TO '/tmp/x.parquet'", "COPY is not allowed"),
            (
                "SET datafusion.execution.batch_size = 1",
                "SET is not allowed",
            ),
            (
                "SELECT * FROM read_parquet('/etc/passwd')",
                "table function read_parquet is not allowed",
            ),
            ("SELECT * FROM '/etc/passwd'", "reading files"),
            ("EXPLAIN DELETE FROM logs", "DELETE is not allowed"),
            ("SELECT 1; SELECT 2", "one statement"),
        ];
        for (sql, want) in cases {
            let err = check(sql).expect_err(sql).to_string();
            assert!(err.contains(want), "{sql}: {err}");
        }
    }
}
