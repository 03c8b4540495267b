//! EdDSA JWTs: signing keys and the on-disk key ring, typed claims, issuing and verifying.
//!
//! The verifier pins the algorithm to EdDSA and looks the key up by `kid`, so a token cannot
//! choose how it is checked: `alg: none`, HMAC signed with the public key, RSA and the rest
//! are all refused before any signature is looked at.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::policy::PolicyDocument;
use crate::principal::Principal;

/// Audience of client tokens, which the gateway gives users at login.
pub const CLIENT_AUDIENCE: &str = "bosun";
/// Audience of internal tokens, which the gateway mints per forwarded call.
pub const INTERNAL_AUDIENCE: &str = "bosun-internal";
/// The issuer both kinds of token carry unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "bosun";
/// Longest lifetime (`exp - iat`) an internal token may have. It bounds how long a revoked
/// key or a changed policy keeps working, so the verifier enforces it, not just the issuer.
pub const MAX_INTERNAL_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Clock skew tolerated on `exp` and `nbf` unless `TokenVerifier::with_leeway` says otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);
/// Most leeway a verifier accepts; more would stretch the 60 s internal-token window.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);
/// Tokens longer than this are refused unparsed. Internal tokens carry policy documents, so
/// this is generous, but it bounds the work an unauthenticated caller can cause.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// An Ed25519 private key with its key id. `Debug` prints only the key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    /// Holds the PKCS#8 document; zeroized on drop by jsonwebtoken.
    encoding_key: EncodingKey,
    public_key: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key with a random key id.
    pub fn generate() -> Result<Self, AuthError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| AuthError::Key("could not generate an ed25519 key".to_owned()))?;
        let mut kid_bytes = [0u8; 12];
        aws_lc_rs::rand::fill(&mut kid_bytes)
            .map_err(|_| AuthError::Key("could not generate a key id".to_owned()))?;
        Self::from_pkcs8(&URL_SAFE_NO_PAD.encode(kid_bytes), document.as_ref())
    }

    /// A key from a PKCS#8 (v1 or v2) Ed25519 document.
    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Result<Self, AuthError> {
        validate_kid(kid)?;
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| AuthError::Key(format!("key {kid}: not a pkcs#8 ed25519 key")))?;
        let public_key: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| AuthError::Key(format!("key {kid}: public key is not 32 bytes")))?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            encoding_key: EncodingKey::from_ed_der(der),
            public_key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 document; secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.encoding_key.as_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            public_key: STANDARD.encode(self.public_key),
        }
    }
}

/// Key ids travel in token headers and file names in logs: keep them short and plain.
fn validate_kid(kid: &str) -> Result<(), AuthError> {
    let plain = kid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if kid.is_empty() || kid.len() > 64 || !plain {
        return Err(AuthError::Key(
            "key id must be 1-64 characters of letters, digits, - _ .".to_owned(),
        ));
    }
    Ok(())
}

/// A public key that verifies tokens signed by the `SigningKey` with the same `kid`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyingKey {
    pub kid: String,
    /// Standard base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
}

/// Several signing keys, one active. Older keys stay so that tokens they signed keep
/// verifying until they expire; `retire` drops one for good.
pub struct KeyRing {
    keys: Vec<SigningKey>,
    /// Index into `keys`; always valid.
    active: usize,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active().kid)
            .field(
                "keys",
                &self.keys.iter().map(|key| &key.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The key ring file: `{"active": "<kid>", "keys": [{"kid": "...", "pkcs8": "<base64>"}]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRingFile {
    active: String,
    keys: Vec<KeyFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kid: String,
    pkcs8: String,
}

impl KeyRing {
    /// A ring with one fresh key.
    pub fn generate() -> Result<Self, AuthError> {
        Ok(KeyRing {
            keys: vec![SigningKey::generate()?],
            active: 0,
        })
    }

    /// Loads the ring at `path`, or makes a new one there (and its directory) if there is no
    /// file. Two processes racing to create it end up with the same ring: the file is
    /// published with a hard link, which fails if another got there first.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        if path.exists() {
            return Self::load(path);
        }
        let ring = Self::generate()?;
        let temporary = ring.write_temporary(path)?;
        let published = std::fs::hard_link(&temporary, path);
        // The temporary name is ours alone; failing to remove it leaves litter, not danger.
        let _ = std::fs::remove_file(&temporary);
        match published {
            Ok(()) => {
                tracing::info!(path = %path.display(), kid = %ring.active().kid, "created key ring");
                Ok(ring)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(error) => Err(AuthError::Key(format!(
                "key ring {}: could not create: {error}",
                path.display()
            ))),
        }
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|error| {
            AuthError::Key(format!(
                "key ring {}: could not read: {error}",
                path.display()
            ))
        })?;
        warn_if_readable_by_others(path);
        // Only the position is reported: serde messages can quote values, which are secret.
        let file: KeyRingFile = serde_json::from_slice(&bytes).map_err(|error| {
            AuthError::Key(format!(
                "key ring {}: malformed at line {} column {}",
                path.display(),
                error.line(),
                error.column()
            ))
        })?;
        let mut keys: Vec<SigningKey> = Vec::with_capacity(file.keys.len());
        for key in &file.keys {
            let der = STANDARD.decode(&key.pkcs8).map_err(|_| {
                AuthError::Key(format!(
                    "key ring {}: key {} is not valid base64",
                    path.display(),
                    key.kid
                ))
            })?;
            if keys.iter().any(|existing| existing.kid == key.kid) {
                return Err(AuthError::Key(format!(
                    "key ring {}: key id {} appears twice",
                    path.display(),
                    key.kid
                )));
            }
            keys.push(SigningKey::from_pkcs8(&key.kid, &der)?);
        }
        let active = keys
            .iter()
            .position(|key| key.kid == file.active)
            .ok_or_else(|| {
                AuthError::Key(format!(
                    "key ring {}: active key {} is not in the ring",
                    path.display(),
                    file.active
                ))
            })?;
        Ok(KeyRing { keys, active })
    }

    /// Writes the ring to `path` atomically (temporary file, then rename), mode 0600, making
    /// the directory (mode 0700) if needed.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let temporary = self.write_temporary(path)?;
        std::fs::rename(&temporary, path).map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            AuthError::Key(format!(
                "key ring {}: could not replace: {error}",
                path.display()
            ))
        })
    }

    /// Writes the ring next to `path` under a unique temporary name and returns that name.
    fn write_temporary(&self, path: &Path) -> Result<std::path::PathBuf, AuthError> {
        let io_error = |what: &str, error: std::io::Error| {
            AuthError::Key(format!(
                "key ring {}: could not {what}: {error}",
                path.display()
            ))
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .map_err(|error| io_error("create its directory", error))?;
        }
        let file = KeyRingFile {
            active: self.active().kid.clone(),
            keys: self
                .keys
                .iter()
                .map(|key| KeyFile {
                    kid: key.kid.clone(),
                    pkcs8: STANDARD.encode(key.pkcs8_der()),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|error| AuthError::Key(format!("key ring: could not encode: {error}")))?;
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| AuthError::Key("could not generate a file name".to_owned()))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".tmp-{}", URL_SAFE_NO_PAD.encode(suffix)));
        let temporary = std::path::PathBuf::from(temporary);

        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Created 0600 rather than chmod-ed afterwards, so the keys are never readable by others.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temporary).and_then(|mut handle| {
            handle.write_all(&json)?;
            handle.sync_all()
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_error("write", error));
        }
        Ok(temporary)
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    /// Makes a new key active; the old ones stay for verification.
    pub fn rotate(&mut self) -> Result<(), AuthError> {
        self.keys.push(SigningKey::generate()?);
        self.active = self.keys.len() - 1;
        Ok(())
    }

    /// Drops a non-active key, so tokens it signed stop verifying once services reload keys.
    pub fn retire(&mut self, kid: &str) -> Result<(), AuthError> {
        if self.active().kid == kid {
            return Err(AuthError::Key(format!("key {kid} is active; rotate first")));
        }
        let index = self
            .keys
            .iter()
            .position(|key| key.kid == kid)
            .ok_or_else(|| AuthError::Key(format!("key {kid} is not in the ring")))?;
        self.keys.remove(index);
        if index < self.active {
            self.active -= 1;
        }
        Ok(())
    }

    /// Public halves of every key in the ring, for verifiers.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().map(SigningKey::verifying_key).collect()
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "key ring is readable by group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The claims of both client and internal tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// A `Principal` string, e.g. `user/alice`.
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// Login session or API key id.
    #[serde(default)]
    pub sid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Resolved policies of the roles; only internal tokens carry them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyDocument>,
}

/// Signs tokens with one key.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    header: Header,
}

impl TokenIssuer {
    pub fn new(key: SigningKey, issuer: &str) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        TokenIssuer {
            key,
            issuer: issuer.to_owned(),
            header,
        }
    }

    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    /// Issues a token for `principal`, valid from now for `ttl`, with a fresh `jti`.
    ///
    /// Internal tokens (`INTERNAL_AUDIENCE`) must have `ttl` ≤ `MAX_INTERNAL_TOKEN_TTL`:
    /// verifiers refuse longer ones.
    pub fn issue(
        &self,
        principal: &Principal,
        audience: &str,
        session_id: &str,
        roles: Vec<String>,
        policies: Vec<PolicyDocument>,
        ttl: Duration,
    ) -> Result<(String, Claims), AuthError> {
        let now = chrono::Utc::now().timestamp();
        let exp = i64::try_from(ttl.as_secs())
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .ok_or_else(|| AuthError::Key("token lifetime out of range".to_owned()))?;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: principal.to_string(),
            exp,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id.to_owned(),
            roles,
            policies,
        };
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }

    /// Signs `claims` as they are. `issue` is the normal way; this exists for callers that
    /// need exact control of the claims, such as tests of expiry.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&self.header, claims, &self.key.encoding_key).map_err(|error| {
            AuthError::Key(format!("key {}: could not sign: {error}", self.key.kid))
        })
    }
}

/// Verifies tokens against a fixed set of public keys, for one issuer.
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    issuer: String,
    leeway_seconds: u64,
    /// Signature checks done, for tests and metrics: shows whether caches work.
    verifications: AtomicU64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier trusting `keys`, with `DEFAULT_LEEWAY`.
    pub fn new(keys: &[VerifyingKey], issuer: &str) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::Key("no verifying keys given".to_owned()));
        }
        let mut by_kid: HashMap<String, DecodingKey> = HashMap::new();
        let mut raw_by_kid: HashMap<&str, Vec<u8>> = HashMap::new();
        for key in keys {
            validate_kid(&key.kid)?;
            let raw = STANDARD.decode(&key.public_key).map_err(|_| {
                AuthError::Key(format!("key {}: public key is not valid base64", key.kid))
            })?;
            if raw.len() != 32 {
                return Err(AuthError::Key(format!(
                    "key {}: public key must be 32 bytes",
                    key.kid
                )));
            }
            if let Some(existing) = raw_by_kid.get(key.kid.as_str()) {
                if *existing != raw {
                    return Err(AuthError::Key(format!(
                        "key id {} names two different keys",
                        key.kid
                    )));
                }
                continue;
            }
            by_kid.insert(key.kid.clone(), DecodingKey::from_ed_der(&raw));
            raw_by_kid.insert(&key.kid, raw);
        }
        Ok(TokenVerifier {
            keys: by_kid,
            issuer: issuer.to_owned(),
            leeway_seconds: DEFAULT_LEEWAY.as_secs(),
            verifications: AtomicU64::new(0),
        })
    }

    /// Sets the clock skew tolerated on `exp` and `nbf`; capped at `MAX_LEEWAY`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway_seconds = leeway.min(MAX_LEEWAY).as_secs();
        self
    }

    /// How many signatures this verifier has checked.
    pub fn verification_count(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Verifies `token` for `audience` and returns its claims.
    ///
    /// Every failure is `InvalidToken` with a generic reason, or `Expired`; none carries
    /// token content.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, AuthError> {
        let invalid = |reason: &str| AuthError::InvalidToken(reason.to_owned());
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too large"));
        }
        // The header is read first only to pick the key; `decode` checks the algorithm again.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("unsupported algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("missing key id"))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| invalid("unknown key id"))?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = self.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);

        self.verifications.fetch_add(1, Ordering::Relaxed);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => invalid("token not yet valid"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidAudience => invalid("wrong audience"),
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidAlgorithm => invalid("unsupported algorithm"),
                ErrorKind::MissingRequiredClaim(_) => invalid("missing required claim"),
                _ => invalid("malformed token"),
            })?
            .claims;
        // The library compared `aud` as a set; `Claims.aud` is one string, so this is the
        // same check, kept explicit because the audience is what separates token kinds.
        if claims.aud != audience {
            return Err(invalid("wrong audience"));
        }
        if audience == INTERNAL_AUDIENCE
            && claims.exp.saturating_sub(claims.iat) > MAX_INTERNAL_TOKEN_TTL.as_secs() as i64
        {
            return Err(invalid("internal token lifetime exceeds 60 s"));
        }
        Ok(claims)
    }
}
