//! Webhook signing secrets and the `bosun-signature` header.
//!
//! A secret is 32 random bytes, shown to the operator once as `whsec_<base64url>`. Each
//! attempt carries `bosun-signature: t=<unix seconds>,v1=<hex>` where `<hex>` is the
//! lowercase hex HMAC-SHA256, keyed with the 32 secret bytes, of `<t>.<body>`. To verify a
//! request: decode the base64url after `whsec_`, recompute the HMAC over the `t` of the header,
//! a dot and the raw body, compare in constant time with `v1`, and refuse a `t` far from your
//! clock (see [`verify`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The text every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Secret length in bytes.
pub const SECRET_BYTES: usize = 32;
/// The header names of a delivery.
pub const SIGNATURE_HEADER: &str = "bosun-signature";
pub const WEBHOOK_ID_HEADER: &str = "bosun-webhook-id";
pub const EVENT_ID_HEADER: &str = "bosun-event-id";
pub const ATTEMPT_HEADER: &str = "bosun-delivery-attempt";

/// A signing key. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret([u8; SECRET_BYTES]);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl Drop for SigningSecret {
    fn drop(&mut self) {
        // Best effort: the bytes do not outlive their use in this process.
        self.0.fill(0);
    }
}

impl SigningSecret {
    /// 32 bytes from the operating system's generator.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| "random number generator failed".to_owned())?;
        Ok(SigningSecret(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; SECRET_BYTES]>::try_from(bytes)
            .ok()
            .map(SigningSecret)
    }

    /// Parses the `whsec_<base64url>` text an operator holds.
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(SECRET_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64url>`: the text shown once to the operator.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC pads a key shorter than the hash block (64 bytes) with zeros, so the padded
        // array is the same key, and this constructor cannot fail.
        let mut block = [0u8; 64];
        block[..SECRET_BYTES].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        block.fill(0);
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `bosun-signature` header value for `body` sent at `timestamp` (unix seconds).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let digest = self.mac(timestamp, body).finalize().into_bytes();
        format!("t={timestamp},v1={}", hex::encode(digest))
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature timestamp is outside the tolerance")]
    TooOld,
}

/// Checks a `bosun-signature` header for `body` with the receiver's clock `now` (unix
/// seconds), accepting timestamps within `tolerance_seconds` of it. This is the recipe a
/// receiver follows, in Rust.
pub fn verify(
    secret: &SigningSecret,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_seconds {
        return Err(VerifyError::TooOld);
    }
    let expected = hex::encode(secret.mac(timestamp, body).finalize().into_bytes());
    if signatures
        .iter()
        .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_through_their_text() {
        let secret = SigningSecret::generate().expect("random");
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(SigningSecret::parse(&text), Some(secret.clone()));
        assert_eq!(SigningSecret::parse("whsec_short"), None);
        assert_eq!(SigningSecret::parse(&text[6..]), None);
        assert!(!format!("{secret:?}").contains(&text[6..]));
        assert_ne!(SigningSecret::generate().expect("random"), secret);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let secret = SigningSecret::from_bytes(&[0x0b; 32]).expect("32 bytes");
        let header = secret.sign(1_700_000_000, br#"{"a":1}"#);
        // Independently: HMAC over the same key given as a slice.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0x0b; 32]).expect("any length");
        mac.update(br#"1700000000.{"a":1}"#);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_eq!(expected.len(), 64);
        assert_eq!(expected, expected.to_lowercase());
    }

    #[test]
    fn verification_refuses_other_bodies_secrets_and_old_timestamps() {
        let secret = SigningSecret::generate().expect("random");
        let body = br#"{"event_id":"e1"}"#;
        let header = secret.sign(1000, body);
        assert_eq!(verify(&secret, &header, body, 1010, 300), Ok(()));
        assert_eq!(
            verify(&secret, &header, b"{}", 1010, 300),
            Err(VerifyError::Mismatch)
        );
        let other = SigningSecret::generate().expect("random");
        assert_eq!(
            verify(&other, &header, body, 1010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, &header, body, 2000, 300),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            verify(&secret, "v1=abc", body, 1000, 300),
            Err(VerifyError::Malformed)
        );
    }
}
