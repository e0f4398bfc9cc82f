//! The SSRF guard: webhook and receiver URLs come from API users, so
//! without a check anyone who may save a policy could make Loupe POST to
//! the cloud metadata service (169.254.169.254), a database on the private
//! network or Loupe's own loopback ports. Addresses that are loopback,
//! link-local, private (RFC 1918, unique-local, CGNAT), unspecified,
//! multicast or broadcast are refused unless an operator allows them
//! (`--webhook-allow 10.1.2.0/24,127.0.0.1`).
//!
//! The check runs twice: when the URL is saved ([`UrlGuard::check_url`],
//! so the user hears about it at once) and at every delivery, on the
//! addresses the connection will actually use ([`UrlGuard::resolver`]), so
//! a name that resolves to a public address when saved and to a private
//! one later (DNS rebinding) is still refused.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

/// Networks an operator allows besides public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

/// A malformed allowlist entry.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network (e.g. 10.1.0.0/16)")]
pub struct AllowListError(String);

impl FromStr for AllowList {
    type Err = AllowListError;
    /// A comma-separated list of addresses and CIDR networks (empty: none).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| AllowListError(item.to_string()))?,
            };
            nets.push(net);
        }
        Ok(AllowList(nets))
    }
}

/// The config file takes the flag's text (`"10.0.0.0/8,127.0.0.1"`).
impl<'de> serde::Deserialize<'de> for AllowList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl AllowList {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Why a URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{0:?} is not a valid http:// or https:// URL")]
    BadUrl(String),
    #[error(
        "{host} resolves to {ip}, a loopback, link-local or private address; webhooks may only go there if it is in --webhook-allow (LOUPE_WEBHOOK_ALLOW)"
    )]
    NotAllowed { host: String, ip: IpAddr },
}

/// Whether `ip` is an internal address (loopback, link-local, private,
/// unspecified, multicast, broadcast, CGNAT, unique-local).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

/// Checks hosts and addresses against the rules and the allowlist.
#[derive(Debug, Clone, Default)]
pub struct UrlGuard {
    allow: Arc<AllowList>,
}

impl UrlGuard {
    pub fn new(allow: AllowList) -> UrlGuard {
        UrlGuard {
            allow: Arc::new(allow),
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        !is_internal(ip) || self.allow.contains(ip)
    }

    /// The URL's host and port, and its address when the host is an IP literal.
    fn parse(url: &str) -> Result<(String, u16, Option<IpAddr>), GuardError> {
        let bad = || GuardError::BadUrl(url.to_string());
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad());
        }
        let port = parsed.port_or_known_default().ok_or_else(bad)?;
        let (host, ip) = match parsed.host().ok_or_else(bad)? {
            url::Host::Domain(d) => (d.to_string(), None),
            url::Host::Ipv4(v4) => (v4.to_string(), Some(IpAddr::V4(v4))),
            url::Host::Ipv6(v6) => (v6.to_string(), Some(IpAddr::V6(v6))),
        };
        Ok((host, port, ip))
    }

    /// The check at delivery time that the resolver cannot make: a URL whose
    /// host is an IP literal never goes through DNS.
    pub fn check_literal(&self, url: &str) -> Result<(), GuardError> {
        match Self::parse(url)? {
            (host, _, Some(ip)) if !self.allows(ip) => Err(GuardError::NotAllowed { host, ip }),
            _ => Ok(()),
        }
    }

    /// The check when a URL is saved: every address its host resolves to
    /// now must be allowed. A name that does not resolve (yet) is accepted;
    /// delivery checks again.
    pub async fn check_url(&self, url: &str) -> Result<(), GuardError> {
        let (host, port, ip) = Self::parse(url)?;
        if ip.is_some() {
            return self.check_literal(url);
        }
        let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await else {
            return Ok(());
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        for addr in addrs {
            if !self.allows(addr.ip()) {
                return Err(GuardError::NotAllowed {
                    host,
                    ip: addr.ip(),
                });
            }
        }
        Ok(())
    }

    /// A DNS resolver for the delivery client that drops the addresses the
    /// guard refuses, so the connection only ever goes to an allowed one.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The system resolver filtered by a [`UrlGuard`].
pub struct GuardedResolver(UrlGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => return Err(Box::new(e) as BoxError),
            };
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.allows(a.ip()))
                .collect();
            match (allowed.is_empty(), addrs.first()) {
                (true, Some(first)) => Err(Box::new(GuardError::NotAllowed {
                    host,
                    ip: first.ip(),
                }) as BoxError),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let guard = UrlGuard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!guard.allows(ip.parse().unwrap()), "{ip} allowed");
        }
        for ip in ["93.184.216.34", "2606:4700::1", "8.8.8.8"] {
            assert!(guard.allows(ip.parse().unwrap()), "{ip} refused");
        }
        let allow: AllowList = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let guard = UrlGuard::new(allow);
        assert!(guard.allows("127.0.0.1".parse().unwrap()));
        assert!(guard.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(guard.allows("10.9.9.9".parse().unwrap()));
        assert!(!guard.allows("127.0.0.2".parse().unwrap()));
        assert!(!guard.allows("169.254.169.254".parse().unwrap()));
        assert!("nonsense".parse::<AllowList>().is_err());
        assert_eq!("".parse::<AllowList>().unwrap(), AllowList::default());
    }

    #[tokio::test]
    async fn literal_and_resolved_hosts_are_checked() {
        let guard = UrlGuard::default();
        assert!(matches!(
            guard
                .check_url("http://169.254.169.254/latest/meta-data")
                .await,
            Err(GuardError::NotAllowed { .. })
        ));
        assert!(guard.check_url("http://[::1]:80/").await.is_err());
        assert!(guard.check_url("http://localhost:9/").await.is_err());
        assert!(guard.check_url("ftp://x/").await.is_err());
        // A public literal is fine; an unresolvable name is left to delivery.
        assert!(guard.check_url("http://93.184.216.34/").await.is_ok());
        assert!(
            guard
                .check_url("http://no-such-host.invalid/")
                .await
                .is_ok()
        );
    }
}
