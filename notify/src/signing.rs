//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "{id}.{timestamp}.{body}">`, keyed by the base64 part of a `whsec_`
//! secret — so any Standard Webhooks library can verify Loupe's calls.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A webhook secret that is not `whsec_` and base64: refused when the
/// policy is saved, not when the first webhook is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSecret(pub String);

impl std::fmt::Display for BadSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "webhook secret must be whsec_ followed by base64: {}",
            self.0
        )
    }
}

impl std::error::Error for BadSecret {}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| BadSecret("missing whsec_ prefix".into()))?;
    STANDARD.decode(b64).map_err(|e| BadSecret(e.to_string()))
}

/// The MAC over `{id}.{timestamp}.{body}`, ready to finalize or verify.
fn message_mac(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Hmac<Sha256>, BadSecret> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| BadSecret(e.to_string()))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The `webhook-signature` header value.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let mac = message_mac(secret, id, timestamp, body)?;
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// A new random `whsec_` secret (24 bytes), for endpoints configured
/// without one.
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Whether `header` (a `webhook-signature` value, possibly several
/// space-separated `v1,…` signatures) matches the message.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<bool, BadSecret> {
    let mac = message_mac(secret, id, timestamp, body)?;
    // Compared in constant time (the MAC's own verify), so response timing
    // reveals nothing about how much of a forged signature was right.
    Ok(header
        .split(' ')
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let signature = sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(sign("nope", "id", 1, b"").is_err());
        assert!(
            verify(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
                "v1,bm9wZQ== v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            )
            .unwrap()
        );
        let secret = generate_secret();
        assert!(secret_key(&secret).is_ok_and(|k| k.len() == 24));
    }

    #[test]
    fn refuses_wrong_truncated_and_malformed_signatures() {
        let (secret, id, ts, body) = ("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_1", 7, b"{}");
        let good = sign(secret, id, ts, body).unwrap();
        assert!(verify(secret, id, ts, body, &good).unwrap());
        let tag = good.strip_prefix("v1,").unwrap();
        for bad in [
            String::new(),
            tag.to_string(),
            format!("v2,{tag}"),
            format!("v1,{}", &tag[..tag.len() - 4]),
            "v1,not base64!".to_string(),
            good.replace(&tag[..4], "AAAA"),
        ] {
            assert!(
                !verify(secret, id, ts, body, &bad).unwrap(),
                "{bad:?} accepted"
            );
        }
        assert!(!verify(secret, id, ts + 1, body, &good).unwrap());
    }
}
