//! Who may do what. Every request to a listener presents a token
//! (`Authorization: Bearer …`, gRPC metadata `authorization`, or the UI's
//! HttpOnly cookie) with one of three scopes:
//!
//! - `ingest`: the OTLP receivers (gRPC and HTTP), nothing else;
//! - `query`: every read of the API and `/metrics`;
//! - `admin`: everything `query` may do, plus changing capacity policies,
//!   baselines, schedules and tasks, alert rules and receivers, and tokens.
//!
//! Tokens come from the configuration (`--token`, `LOUPE_TOKENS`, the file)
//! or are created through the API, which stores only their SHA-256 digest.
//! Tokens are random and long, so a plain digest is as good as a slow
//! password hash here, and lets every request be checked in microseconds.
//! Presented tokens are compared by digest in constant time against every
//! known token. With no token at all, nothing is asked (the server then
//! refuses to listen beyond loopback, see `serve.rs`).

pub mod grpc;
pub mod http;
mod rate;
mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use loupe_catalog::db::{Db, Location};
use tokio::sync::watch;

use sha2::{Digest as _, Sha256};

pub use store::TokenInfo;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ingest,
    Query,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may do what `needed` guards (admin
    /// includes query; ingest stands alone, so a token spread to every
    /// application can read nothing).
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || (self == Scope::Admin && needed == Scope::Query)
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "ingest" => Ok(Scope::Ingest),
            "query" => Ok(Scope::Query),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}: use ingest, query or admin"
            )),
        }
    }
}

/// A configured token, `SCOPE:SECRET`. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub scope: Scope,
    pub secret: String,
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:<redacted>", self.scope.as_str())
    }
}

/// Shortest secret accepted in the configuration.
const MIN_SECRET_LEN: usize = 16;

impl FromStr for TokenSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scope, secret) = text
            .trim()
            .split_once(':')
            .ok_or("a token is SCOPE:SECRET, e.g. ingest:3f9c…")?;
        let scope: Scope = scope.parse()?;
        let printable = secret
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b",;\"\\".contains(&b));
        if secret.len() < MIN_SECRET_LEN || !printable {
            return Err(format!(
                "the {} token's secret must be at least {MIN_SECRET_LEN} printable ASCII characters without , ; \" or \\ (e.g. `openssl rand -hex 24`)",
                scope.as_str()
            ));
        }
        Ok(TokenSpec {
            scope,
            secret: secret.to_string(),
        })
    }
}

/// Configured tokens: `"ingest:…,query:…"` (or an array in the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenList(pub Vec<TokenSpec>);

impl FromStr for TokenList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(TokenList)
    }
}

impl<'de> serde::Deserialize<'de> for TokenList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let text = match Form::deserialize(d)? {
            Form::One(text) => text,
            Form::Many(list) => list.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A token's SHA-256.
type Digest = [u8; 32];

fn digest(secret: &str) -> Digest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &Digest, b: &Digest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one nobody knows (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// A known token whose scope does not allow this (403 / PERMISSION_DENIED).
    Forbidden { has: Scope, needs: Scope },
    /// Over the token's ingest rate (429 / RESOURCE_EXHAUSTED).
    RateLimited { retry_after: Duration },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Unauthenticated => {
                f.write_str("missing or unknown token: send `Authorization: Bearer <token>`")
            }
            Denied::Forbidden { has, needs } => write!(
                f,
                "this token's scope is {}; this needs {}",
                has.as_str(),
                needs.as_str()
            ),
            Denied::RateLimited { retry_after } => write!(
                f,
                "this token is over its ingest rate limit; retry in {} s",
                retry_after.as_secs().max(1)
            ),
        }
    }
}

/// The tokens and the ingest rate limiter, shared by every listener.
pub struct Access {
    configured: Vec<(Scope, Digest)>,
    /// Digests of the tokens in the catalog, as last read: every check
    /// reads this copy, never the database.
    stored: RwLock<Vec<(Scope, Digest)>>,
    store: Db,
    limiter: rate::Limiter,
}

/// How often a node on a shared (PostgreSQL) catalog rereads the tokens,
/// so one created or revoked through another node counts here too.
pub const SHARED_RELOAD: Duration = Duration::from_secs(2);

impl Access {
    /// Opens the token table in the catalog at `catalog` and loads it.
    pub async fn open(
        catalog: &Location,
        tokens: &[TokenSpec],
        ingest_rate: f64,
    ) -> anyhow::Result<Access> {
        let db = store::open(catalog).await?;
        let stored = store::digests(&db).await?;
        Ok(Access {
            configured: tokens
                .iter()
                .map(|t| (t.scope, digest(&t.secret)))
                .collect(),
            stored: RwLock::new(stored),
            store: db,
            limiter: rate::Limiter::new(ingest_rate),
        })
    }

    /// Whether any token exists (then every request must present one).
    pub fn required(&self) -> bool {
        !self.configured.is_empty() || !self.stored_digests().is_empty()
    }

    fn stored_digests(&self) -> std::sync::RwLockReadGuard<'_, Vec<(Scope, Digest)>> {
        self.stored.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The scope of `token`, if it is known. Every known digest is
    /// compared, in constant time, whatever matches.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let presented = digest(token);
        let stored = self.stored_digests();
        let mut found = None;
        for (scope, known) in self.configured.iter().chain(stored.iter()) {
            if ct_eq(known, &presented) {
                found = Some(*scope);
            }
        }
        found
    }

    /// Decides a request needing `needs` that presented `token`.
    pub fn check(&self, token: Option<&str>, needs: Scope) -> Result<(), Denied> {
        let key = if self.required() {
            let has = token
                .and_then(|t| self.scope_of(t))
                .ok_or(Denied::Unauthenticated)?;
            if !has.grants(needs) {
                return Err(Denied::Forbidden { has, needs });
            }
            token.map(digest).unwrap_or_default()
        } else {
            Digest::default()
        };
        if needs == Scope::Ingest {
            self.limiter
                .take(key)
                .map_err(|retry_after| Denied::RateLimited { retry_after })?;
        }
        Ok(())
    }

    /// Creates a token; its secret is in the answer and nowhere else.
    pub async fn create(&self, name: &str, scope: Scope) -> anyhow::Result<(TokenInfo, String)> {
        let secret = format!("loupe_{}", hex::encode(rand::random::<[u8; 24]>()));
        let info = store::insert(&self.store, name, scope, &digest(&secret)).await?;
        self.reload().await?;
        Ok((info, secret))
    }

    /// Every token created through the API (never their secrets).
    pub async fn list(&self) -> anyhow::Result<Vec<TokenInfo>> {
        store::list(&self.store).await
    }

    /// Deletes a token created through the API; false if there is none.
    pub async fn delete(&self, id: &str) -> anyhow::Result<bool> {
        let deleted = store::delete(&self.store, id).await?;
        self.reload().await?;
        Ok(deleted)
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let fresh = store::digests(&self.store).await?;
        *self.stored.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Rereads the tokens every `period` until `stop`, for a catalog other
    /// nodes change too; a failed read keeps the last known tokens.
    pub async fn reload_every(
        self: Arc<Self>,
        period: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "rereading access tokens failed; keeping the last ones read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn access(tokens: &str, rate: f64) -> (tempfile::TempDir, Access) {
        let dir = tempfile::tempdir().unwrap();
        let list: TokenList = tokens.parse().unwrap();
        let location = Location::Sqlite(dir.path().join("catalog.sqlite"));
        let access = Access::open(&location, &list.0, rate).await.unwrap();
        (dir, access)
    }

    #[tokio::test]
    async fn scopes_decide_and_admin_includes_query() {
        let (_dir, a) = access(
            "ingest:ingest-secret-0001,query:query-secret-00001,admin:admin-secret-00001",
            0.0,
        )
        .await;
        assert!(a.required());
        assert_eq!(a.check(None, Scope::Query), Err(Denied::Unauthenticated));
        assert_eq!(
            a.check(Some("nope-nope-nope-nope"), Scope::Ingest),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(a.check(Some("ingest-secret-0001"), Scope::Ingest), Ok(()));
        assert_eq!(
            a.check(Some("ingest-secret-0001"), Scope::Query),
            Err(Denied::Forbidden {
                has: Scope::Ingest,
                needs: Scope::Query
            })
        );
        assert_eq!(a.check(Some("admin-secret-00001"), Scope::Query), Ok(()));
        assert!(matches!(
            a.check(Some("query-secret-00001"), Scope::Admin),
            Err(Denied::Forbidden { .. })
        ));
        assert!(matches!(
            a.check(Some("admin-secret-00001"), Scope::Ingest),
            Err(Denied::Forbidden { .. })
        ));
    }

    #[tokio::test]
    async fn created_tokens_are_stored_hashed_and_can_be_revoked() {
        let (dir, a) = access("", 0.0).await;
        assert!(!a.required());
        assert_eq!(a.check(None, Scope::Admin), Ok(()));
        let (info, secret) = a.create("grafana", Scope::Query).await.unwrap();
        assert!(a.required());
        assert_eq!(a.check(Some(&secret), Scope::Query), Ok(()));
        // Only the digest is on disk.
        let raw = std::fs::read(dir.path().join("catalog.sqlite")).unwrap();
        let wal = std::fs::read(dir.path().join("catalog.sqlite-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
        assert_eq!(a.list().await.unwrap()[0].name, "grafana");
        assert!(a.delete(&info.id).await.unwrap());
        assert!(!a.required());
    }

    #[test]
    fn tokens_parse_and_never_print_their_secret() {
        let t: TokenSpec = "admin:0123456789abcdef".parse().unwrap();
        assert_eq!(t.scope, Scope::Admin);
        assert!(!format!("{t:?}").contains("0123"));
        assert!("admin:short".parse::<TokenSpec>().is_err());
        assert!("root:0123456789abcdef".parse::<TokenSpec>().is_err());
        assert!("0123456789abcdef".parse::<TokenSpec>().is_err());
        let list: TokenList = "ingest:0123456789abcdef, query:fedcba9876543210"
            .parse()
            .unwrap();
        assert_eq!(list.0.len(), 2);
        assert!(ct_eq(&digest("a"), &digest("a")));
        assert!(!ct_eq(&digest("a"), &digest("b")));
    }

    #[tokio::test]
    async fn ingest_is_rate_limited_per_token() {
        let (_dir, a) = access("ingest:ingest-secret-0001,ingest:ingest-secret-0002", 2.0).await;
        let one = Some("ingest-secret-0001");
        assert_eq!(a.check(one, Scope::Ingest), Ok(()));
        assert_eq!(a.check(one, Scope::Ingest), Ok(()));
        assert!(matches!(
            a.check(one, Scope::Ingest),
            Err(Denied::RateLimited { .. })
        ));
        // Another token has its own budget.
        assert_eq!(a.check(Some("ingest-secret-0002"), Scope::Ingest), Ok(()));
    }
}
