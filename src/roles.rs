//! What one `loupe serve` process does (`--role`): several processes over
//! a shared bucket and catalog can split the work, each the same binary.

use std::fmt;
use std::str::FromStr;

/// A node's roles; the default is all three (one process does everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// OTLP listeners, WAL, memtable, flushing and publishing splits.
    pub ingest: bool,
    /// The query and analysis APIs and the web UI.
    pub query: bool,
    /// Competing for the maintenance lease: compaction, retention, orphan
    /// collection, capacity evaluation, alert rules, webhook delivery.
    pub compact: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            ingest: true,
            query: true,
            compact: true,
        }
    }
}

/// A `--role` value that names no role, or none at all.
#[derive(Debug)]
pub enum RolesError {
    Unknown(String),
    Empty,
}

impl fmt::Display for RolesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolesError::Unknown(word) => write!(
                f,
                "unknown role {word:?}: the roles are ingest, query and compact (comma-separated)"
            ),
            RolesError::Empty => {
                f.write_str("no role given: name at least one of ingest, query, compact")
            }
        }
    }
}

impl std::error::Error for RolesError {}

impl FromStr for Roles {
    type Err = RolesError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut roles = Roles::NONE;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "ingest" => roles.ingest = true,
                "query" => roles.query = true,
                "compact" => roles.compact = true,
                other => return Err(RolesError::Unknown(other.to_string())),
            }
        }
        if roles == Roles::NONE {
            return Err(RolesError::Empty);
        }
        Ok(roles)
    }
}

impl Roles {
    const NONE: Roles = Roles {
        ingest: false,
        query: false,
        compact: false,
    };
}

impl fmt::Display for Roles {
    /// The canonical list, as the `nodes` row and the API show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.ingest, "ingest"),
            (self.query, "query"),
            (self.compact, "compact"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&on.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_unknown_or_empty() {
        let r: Roles = "query, ingest".parse().unwrap();
        assert_eq!(
            r,
            Roles {
                ingest: true,
                query: true,
                compact: false
            }
        );
        assert_eq!(r.to_string(), "ingest,query");
        assert_eq!(
            "ingest,query,compact".parse::<Roles>().unwrap(),
            Roles::default()
        );
        assert!(matches!(
            "ingest,leader".parse::<Roles>(),
            Err(RolesError::Unknown(w)) if w == "leader"
        ));
        assert!(matches!(" , ".parse::<Roles>(), Err(RolesError::Empty)));
    }
}
