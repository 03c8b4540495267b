//! SecureString envelope encryption: AES-256-GCM under a fresh data key per value, the data
//! key wrapped (AES-256-GCM) by a named master key.
//!
//! The value is encrypted with the parameter name as associated data, so a ciphertext copied
//! to another name fails to decrypt. `rewrap` moves a data key to another master key without
//! touching the value ciphertext. Errors never carry plaintext or key material, and `Debug`
//! of keys is redacted.
//!
//! `seal` and `open` lend the same envelope scheme to other services' secrets (webhook signing
//! secrets, say) under a caller-chosen context, with an associated-data prefix of their own so
//! a sealed blob and a parameter value can never be taken for one another.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bosun_core::error::ApiError;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{INVALID_KEY_ID, VALIDATION};
use crate::name::ParameterName;

/// The master key used when a SecureString names none.
pub const DEFAULT_KEY_ID: &str = "alias/bosun/parameters";
/// Longest key id (SSM's `KeyId`: 1–256 of `a-zA-Z0-9:/_-`).
pub const MAX_KEY_ID_LENGTH: usize = 256;

const ENVELOPE_VERSION: u8 = 1;
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const WRAPPED_KEY_BYTES: usize = KEY_BYTES + TAG_BYTES;
/// Associated data prefixes, so a wrapped key can never be taken for a value or back.
const WRAP_AAD: &[u8] = b"bosun-parameters/v1/data-key/";
const VALUE_AAD: &[u8] = b"bosun-parameters/v1/value/";
/// Associated data prefix of `seal`/`open`, distinct from both of the above.
const SEALED_AAD: &[u8] = b"bosun/v1/sealed/";

/// Why a crypto operation failed. Messages name the key id or the parameter, never a value
/// or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key_id {0}: no such master key")]
    UnknownKey(String),
    #[error("key_id: {0}")]
    InvalidKeyId(String),
    #[error("parameter {0}: decryption failed (wrong parameter, wrong key or tampered data)")]
    DecryptFailed(String),
    #[error("sealed data for {0}: opening failed (wrong context, wrong key or tampered data)")]
    OpenFailed(String),
    #[error("envelope: {0}")]
    MalformedEnvelope(&'static str),
    #[error("key file {path}: {problem}")]
    KeyFile { path: String, problem: String },
    #[error("random number generator failed")]
    Random,
    #[error("encryption failed")]
    EncryptFailed,
}

impl From<CryptoError> for ApiError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::UnknownKey(_) => {
                ApiError::invalid("key_id", error.to_string()).with_reason(INVALID_KEY_ID)
            }
            CryptoError::InvalidKeyId(rule) => {
                ApiError::invalid("key_id", rule).with_reason(INVALID_KEY_ID)
            }
            // Stored data that does not decrypt is a server-side fault; internal() logs it.
            other => ApiError::internal(other),
        }
    }
}

/// Checks a key id: 1–256 characters of `a-zA-Z0-9:/_-`.
pub fn check_key_id(key_id: &str) -> Result<(), CryptoError> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LENGTH {
        return Err(CryptoError::InvalidKeyId(format!(
            "must be 1 to {MAX_KEY_ID_LENGTH} characters"
        )));
    }
    if !key_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-'))
    {
        return Err(CryptoError::InvalidKeyId(
            "may contain only letters, digits, ':', '/', '_' and '-'".to_owned(),
        ));
    }
    Ok(())
}

/// Validates a request's `key_id` as SSM's `InvalidKeyId` would.
pub fn validate_key_id(key_id: &str) -> Result<(), ApiError> {
    check_key_id(key_id).map_err(|error| match error {
        CryptoError::InvalidKeyId(rule) => {
            ApiError::invalid("key_id", rule).with_reason(INVALID_KEY_ID)
        }
        other => ApiError::invalid("key_id", other.to_string()).with_reason(VALIDATION),
    })
}

struct MasterKey(SecretBox<[u8; KEY_BYTES]>);

impl MasterKey {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0.expose_secret()))
    }
}

/// Named master keys that wrap data keys. Several may exist (rotation); one is the default.
pub struct MasterKeyRing {
    keys: BTreeMap<String, MasterKey>,
    default_key_id: String,
}

impl fmt::Debug for MasterKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyRing")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("default_key_id", &self.default_key_id)
            .field("keys", &"[redacted]")
            .finish()
    }
}

/// The key file and config format: `{"default_key_id": "...", "keys": {"<key id>": "<base64>"}}`.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(default = "default_key_id")]
    default_key_id: String,
    keys: BTreeMap<String, String>,
}

fn default_key_id() -> String {
    DEFAULT_KEY_ID.to_owned()
}

fn random_key() -> Result<Zeroizing<[u8; KEY_BYTES]>, CryptoError> {
    let mut key = Key::<Aes256Gcm>::try_generate().map_err(|_| CryptoError::Random)?;
    let bytes = Zeroizing::new(<[u8; KEY_BYTES]>::from(key));
    key.fill(0);
    Ok(bytes)
}

fn random_nonce() -> Result<[u8; NONCE_BYTES], CryptoError> {
    aes_gcm::aead::Nonce::<Aes256Gcm>::try_generate()
        .map(<[u8; NONCE_BYTES]>::from)
        .map_err(|_| CryptoError::Random)
}

fn key_file_error(path: &Path, problem: impl fmt::Display) -> CryptoError {
    CryptoError::KeyFile {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

impl MasterKeyRing {
    /// An empty ring whose default is `default_key_id`; add keys with `insert` or `generate`.
    pub fn new(default_key_id: &str) -> Result<Self, CryptoError> {
        check_key_id(default_key_id)?;
        Ok(MasterKeyRing {
            keys: BTreeMap::new(),
            default_key_id: default_key_id.to_owned(),
        })
    }

    /// A ring with one fresh random key under `DEFAULT_KEY_ID` (embedded mode, tests).
    pub fn generate_default() -> Result<Self, CryptoError> {
        let mut ring = Self::new(DEFAULT_KEY_ID)?;
        ring.generate(DEFAULT_KEY_ID)?;
        Ok(ring)
    }

    /// Adds (or replaces) a master key.
    pub fn insert(&mut self, key_id: &str, key: [u8; KEY_BYTES]) -> Result<(), CryptoError> {
        check_key_id(key_id)?;
        self.keys
            .insert(key_id.to_owned(), MasterKey(SecretBox::new(Box::new(key))));
        Ok(())
    }

    /// Adds a fresh random master key named `key_id` (the first step of a rotation).
    pub fn generate(&mut self, key_id: &str) -> Result<(), CryptoError> {
        let key = random_key()?;
        self.insert(key_id, *key)
    }

    pub fn default_key_id(&self) -> &str {
        &self.default_key_id
    }

    pub fn set_default_key_id(&mut self, key_id: &str) -> Result<(), CryptoError> {
        if !self.keys.contains_key(key_id) {
            return Err(CryptoError::UnknownKey(key_id.to_owned()));
        }
        self.default_key_id = key_id.to_owned();
        Ok(())
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Loads a ring from configuration bytes in the key file's JSON format.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CryptoError> {
        Self::from_json_at(bytes, Path::new("<config>"))
    }

    fn from_json_at(bytes: &[u8], path: &Path) -> Result<Self, CryptoError> {
        // serde_json's message may quote input; the key file holds keys, so do not echo it.
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|_| {
            key_file_error(
                path,
                "is not a valid key file (JSON with default_key_id and keys)",
            )
        })?;
        let mut ring = Self::new(&file.default_key_id)?;
        for (key_id, encoded) in &file.keys {
            let decoded = Zeroizing::new(
                BASE64
                    .decode(encoded)
                    .map_err(|_| key_file_error(path, format!("key {key_id} is not base64")))?,
            );
            let key: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
                key_file_error(path, format!("key {key_id} must be {KEY_BYTES} bytes"))
            })?;
            ring.insert(key_id, key)?;
        }
        if !ring.contains(&ring.default_key_id) {
            return Err(key_file_error(
                path,
                format!("default key {} is not among the keys", ring.default_key_id),
            ));
        }
        Ok(ring)
    }

    /// The key file JSON. It holds key material: write it only to a 0600 file.
    pub fn to_json(&self) -> SecretString {
        let file = KeyFile {
            default_key_id: self.default_key_id.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, key)| (id.clone(), BASE64.encode(key.0.expose_secret())))
                .collect(),
        };
        // Serialising a map of strings cannot fail.
        SecretString::from(serde_json::to_string_pretty(&file).unwrap_or_default())
    }

    /// Loads the key file at `path`, or creates it with one fresh default key when missing:
    /// the directory 0700, the file 0600, written before anyone can read it.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                check_private(path)?;
                return Self::from_json_at(&bytes, path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(key_file_error(path, error)),
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|e| key_file_error(path, e))?;
        }
        let ring = Self::generate_default()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(file) => file,
            // Another process created it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes =
                    Zeroizing::new(std::fs::read(path).map_err(|e| key_file_error(path, e))?);
                return Self::from_json_at(&bytes, path);
            }
            Err(error) => return Err(key_file_error(path, error)),
        };
        file.write_all(ring.to_json().expose_secret().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| key_file_error(path, e))?;
        Ok(ring)
    }

    fn key(&self, key_id: &str) -> Result<&MasterKey, CryptoError> {
        self.keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))
    }

    /// Encrypts `plaintext` for parameter `name` under a fresh data key wrapped by `key_id`.
    pub fn encrypt(
        &self,
        name: &ParameterName,
        plaintext: &str,
        key_id: &str,
    ) -> Result<Envelope, CryptoError> {
        self.seal_with_aad(&value_aad(name.as_str()), plaintext.as_bytes(), key_id)
    }

    /// Seals `plaintext` for `context` (a webhook id, say) under a fresh data key wrapped by
    /// `key_id`. Only `open` with the same context opens it; neither `decrypt` nor `open`
    /// with another context does.
    pub fn seal(
        &self,
        context: &str,
        plaintext: &[u8],
        key_id: &str,
    ) -> Result<Envelope, CryptoError> {
        self.seal_with_aad(&sealed_aad(context), plaintext, key_id)
    }

    /// Opens what `seal` sealed for `context`.
    pub fn open(
        &self,
        context: &str,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open_with_aad(&sealed_aad(context), envelope, || {
            CryptoError::OpenFailed(context.to_owned())
        })
    }

    /// The envelope scheme shared by `encrypt` and `seal`: a fresh data key encrypts the
    /// plaintext with `aad`, and is itself wrapped by the master key `key_id`.
    fn seal_with_aad(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        key_id: &str,
    ) -> Result<Envelope, CryptoError> {
        let master = self.key(key_id)?;
        let data_key = random_key()?;
        let wrap_nonce = random_nonce()?;
        let wrapped_key = master
            .cipher()
            .encrypt(
                &Nonce::from(wrap_nonce),
                Payload {
                    msg: data_key.as_slice(),
                    aad: &wrap_aad(key_id),
                },
            )
            .map_err(|_| CryptoError::EncryptFailed)?;
        let value_nonce = random_nonce()?;
        let ciphertext = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key))
            .encrypt(
                &Nonce::from(value_nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::EncryptFailed)?;
        Ok(Envelope {
            key_id: key_id.to_owned(),
            wrap_nonce,
            wrapped_key,
            value_nonce,
            ciphertext,
        })
    }

    /// The inverse of `seal_with_aad`; every failure is `failure()`, so nothing tells a
    /// wrong key from a wrong context or tampering.
    fn open_with_aad(
        &self,
        aad: &[u8],
        envelope: &Envelope,
        failure: impl Fn() -> CryptoError,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let data_key = self.unwrap_data_key(envelope, &failure)?;
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key))
            .decrypt(
                &Nonce::from(envelope.value_nonce),
                Payload {
                    msg: &envelope.ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| failure())
    }

    fn unwrap_data_key(
        &self,
        envelope: &Envelope,
        failure: impl Fn() -> CryptoError,
    ) -> Result<Zeroizing<[u8; KEY_BYTES]>, CryptoError> {
        let master = self.key(&envelope.key_id)?;
        let data_key = Zeroizing::new(
            master
                .cipher()
                .decrypt(
                    &Nonce::from(envelope.wrap_nonce),
                    Payload {
                        msg: &envelope.wrapped_key,
                        aad: &wrap_aad(&envelope.key_id),
                    },
                )
                .map_err(|_| failure())?,
        );
        let key: [u8; KEY_BYTES] = data_key.as_slice().try_into().map_err(|_| failure())?;
        Ok(Zeroizing::new(key))
    }

    /// Decrypts a value stored for parameter `name`.
    pub fn decrypt(
        &self,
        name: &ParameterName,
        envelope: &Envelope,
    ) -> Result<SecretString, CryptoError> {
        let failure = || CryptoError::DecryptFailed(name.to_string());
        let plaintext = self.open_with_aad(&value_aad(name.as_str()), envelope, failure)?;
        // Values were encrypted from `&str`, so invalid UTF-8 means corruption.
        let text = std::str::from_utf8(&plaintext).map_err(|_| failure())?;
        Ok(SecretString::from(text.to_owned()))
    }

    /// Re-wraps the envelope's data key under `new_key_id`; the value ciphertext and its
    /// nonce are unchanged, so rotation never touches a value.
    pub fn rewrap(&self, envelope: &Envelope, new_key_id: &str) -> Result<Envelope, CryptoError> {
        let new_master = self.key(new_key_id)?;
        let data_key = self.unwrap_data_key(envelope, || {
            CryptoError::MalformedEnvelope("data key does not unwrap under its master key")
        })?;
        let wrap_nonce = random_nonce()?;
        let wrapped_key = new_master
            .cipher()
            .encrypt(
                &Nonce::from(wrap_nonce),
                Payload {
                    msg: data_key.as_slice(),
                    aad: &wrap_aad(new_key_id),
                },
            )
            .map_err(|_| CryptoError::EncryptFailed)?;
        Ok(Envelope {
            key_id: new_key_id.to_owned(),
            wrap_nonce,
            wrapped_key,
            value_nonce: envelope.value_nonce,
            ciphertext: envelope.ciphertext.clone(),
        })
    }
}

/// Refuses a key file others can read or write, as ssh does with private keys.
fn check_private(path: &Path) -> Result<(), CryptoError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| key_file_error(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(key_file_error(
                path,
                format!(
                    "mode {:o} lets others access master keys, expected 600",
                    mode & 0o777
                ),
            ));
        }
    }
    Ok(())
}

fn wrap_aad(key_id: &str) -> Vec<u8> {
    [WRAP_AAD, key_id.as_bytes()].concat()
}

fn value_aad(name: &str) -> Vec<u8> {
    [VALUE_AAD, name.as_bytes()].concat()
}

fn sealed_aad(context: &str) -> Vec<u8> {
    [SEALED_AAD, context.as_bytes()].concat()
}

/// A stored SecureString value. Bytes layout (version 1):
/// `1 | key_id length (u16 BE) | key_id | wrap nonce (12) | wrapped key (48) | value nonce (12) | ciphertext+tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    key_id: String,
    wrap_nonce: [u8; NONCE_BYTES],
    wrapped_key: Vec<u8>,
    value_nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_id", &self.key_id)
            .field("ciphertext_bytes", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// The master key that wraps the data key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The value ciphertext (with its tag), for checks that rotation leaves it alone.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let key_id = self.key_id.as_bytes();
        let mut out = Vec::with_capacity(
            3 + key_id.len() + 2 * NONCE_BYTES + self.wrapped_key.len() + self.ciphertext.len(),
        );
        out.push(ENVELOPE_VERSION);
        // Key ids are at most 256 bytes (checked when the key was added), so this fits.
        let length = u16::try_from(key_id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(key_id);
        out.extend_from_slice(&self.wrap_nonce);
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.value_nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let too_short = || CryptoError::MalformedEnvelope("truncated");
        let (&version, rest) = bytes
            .split_first()
            .ok_or(CryptoError::MalformedEnvelope("empty"))?;
        if version != ENVELOPE_VERSION {
            return Err(CryptoError::MalformedEnvelope("unknown version"));
        }
        let (length, rest) = rest.split_at_checked(2).ok_or_else(too_short)?;
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let (key_id, rest) = rest
            .split_at_checked(length)
            .ok_or(CryptoError::MalformedEnvelope("truncated key id"))?;
        let key_id = std::str::from_utf8(key_id)
            .map_err(|_| CryptoError::MalformedEnvelope("key id is not utf-8"))?;
        check_key_id(key_id).map_err(|_| CryptoError::MalformedEnvelope("invalid key id"))?;
        let (wrap_nonce, rest) = rest.split_at_checked(NONCE_BYTES).ok_or_else(too_short)?;
        let (wrapped_key, rest) = rest
            .split_at_checked(WRAPPED_KEY_BYTES)
            .ok_or_else(too_short)?;
        let (value_nonce, ciphertext) = rest.split_at_checked(NONCE_BYTES).ok_or_else(too_short)?;
        if ciphertext.len() < TAG_BYTES {
            return Err(too_short());
        }
        Ok(Envelope {
            key_id: key_id.to_owned(),
            wrap_nonce: wrap_nonce.try_into().map_err(|_| too_short())?,
            wrapped_key: wrapped_key.to_vec(),
            value_nonce: value_nonce.try_into().map_err(|_| too_short())?,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Base64 of `to_bytes`: what a read without decryption returns.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.to_bytes())
    }

    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|_| CryptoError::MalformedEnvelope("not base64"))?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_layout_matches_the_documented_sizes() {
        let ring = MasterKeyRing::generate_default().expect("ring");
        let name = ParameterName::parse("/p").expect("name");
        let envelope = ring.encrypt(&name, "abc", DEFAULT_KEY_ID).expect("encrypt");
        let bytes = envelope.to_bytes();
        let expected = 1
            + 2
            + DEFAULT_KEY_ID.len()
            + NONCE_BYTES
            + WRAPPED_KEY_BYTES
            + NONCE_BYTES
            + 3
            + TAG_BYTES;
        assert_eq!(bytes.len(), expected);
        assert_eq!(bytes[0], ENVELOPE_VERSION);
    }

    #[test]
    fn wrap_and_value_associated_data_never_collide() {
        // The same text as a key id and as a name gives different associated data, so a
        // wrapped key can never be accepted as a value ciphertext or the reverse.
        assert_ne!(wrap_aad("/p"), value_aad("/p"));
        assert_ne!(sealed_aad("/p"), value_aad("/p"));
        assert_ne!(sealed_aad("/p"), wrap_aad("/p"));
    }

    #[test]
    fn sealed_bytes_open_only_in_their_context() {
        let ring = MasterKeyRing::generate_default().expect("ring");
        let secret = [7u8, 0, 255, 3];
        let envelope = ring
            .seal("webhook-1", &secret, DEFAULT_KEY_ID)
            .expect("seal");
        assert_ne!(envelope.ciphertext()[..secret.len()], secret);
        let opened = ring.open("webhook-1", &envelope).expect("open");
        assert_eq!(opened.as_slice(), secret);
        // Through the stored form too.
        let stored = Envelope::from_base64(&envelope.to_base64()).expect("parses");
        assert_eq!(
            ring.open("webhook-1", &stored).expect("open").as_slice(),
            secret
        );
        assert!(matches!(
            ring.open("webhook-2", &envelope),
            Err(CryptoError::OpenFailed(context)) if context == "webhook-2"
        ));
    }

    #[test]
    fn sealed_blobs_and_parameter_values_never_swap() {
        let ring = MasterKeyRing::generate_default().expect("ring");
        let name = ParameterName::parse("/p").expect("name");
        // The same context text as the parameter name: still no crossing over.
        let sealed = ring.seal("/p", b"abc", DEFAULT_KEY_ID).expect("seal");
        assert!(matches!(
            ring.decrypt(&name, &sealed),
            Err(CryptoError::DecryptFailed(_))
        ));
        let value = ring.encrypt(&name, "abc", DEFAULT_KEY_ID).expect("encrypt");
        assert!(matches!(
            ring.open("/p", &value),
            Err(CryptoError::OpenFailed(_))
        ));
    }

    #[test]
    fn sealed_blobs_survive_rewrap_and_fail_under_another_ring() {
        let mut ring = MasterKeyRing::generate_default().expect("ring");
        let sealed = ring.seal("ctx", b"secret", DEFAULT_KEY_ID).expect("seal");
        ring.generate("alias/next").expect("second key");
        let rewrapped = ring.rewrap(&sealed, "alias/next").expect("rewrap");
        assert_eq!(rewrapped.key_id(), "alias/next");
        assert_eq!(
            ring.open("ctx", &rewrapped).expect("open").as_slice(),
            b"secret"
        );
        let other = MasterKeyRing::generate_default().expect("another ring");
        assert!(matches!(
            other.open("ctx", &sealed),
            Err(CryptoError::OpenFailed(_))
        ));
        assert!(matches!(
            ring.seal("ctx", b"x", "alias/missing"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampered_sealed_blobs_do_not_open() {
        let ring = MasterKeyRing::generate_default().expect("ring");
        let sealed = ring.seal("ctx", b"secret", DEFAULT_KEY_ID).expect("seal");
        let mut bytes = sealed.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = Envelope::from_bytes(&bytes).expect("still well formed");
        assert!(matches!(
            ring.open("ctx", &tampered),
            Err(CryptoError::OpenFailed(_))
        ));
    }
}
