//! The node's identity and where it lives on disk: `identity.json` and `key.pk8` in the state
//! directory (mode 0700; files 0600), written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Default state directory (systemd's `StateDirectory=bosun-agent`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bosun-agent";
const IDENTITY_FILE: &str = "identity.json";
const KEY_FILE: &str = "key.pk8";

/// What a registered node is: its id, the server it registered with, its signing key.
#[derive(Clone)]
pub struct Identity {
    /// `mi-` and 17 hex digits.
    pub node_id: String,
    /// The URL the node registered at and connects to by default.
    pub server_url: String,
    key: Arc<Ed25519KeyPair>,
    pkcs8: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("server_url", &self.server_url)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// An identity from a PKCS#8 Ed25519 key (as `key.pk8` holds it).
    pub fn new(node_id: String, server_url: String, pkcs8: Vec<u8>) -> Result<Self, AgentError> {
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| AgentError::InvalidState("key.pk8 is not a PKCS#8 Ed25519 key".into()))?;
        Ok(Self {
            node_id,
            server_url,
            key: Arc::new(key),
            pkcs8: Arc::new(pkcs8),
        })
    }

    /// The raw 32-byte public key, as registered.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The proof for a connect challenge: the signature over
    /// `"bosun-agent-connect-v1\n" || node_id || "\n" || nonce`.
    pub fn sign_challenge(&self, nonce: &[u8]) -> Vec<u8> {
        self.key
            .sign(&challenge_message(&self.node_id, nonce))
            .as_ref()
            .to_vec()
    }

    /// The proof for a session attach challenge: the signature over
    /// [`bosun_session::attach_message`]`(session_id, node_id, nonce)`.
    pub fn sign_session_attach(&self, session_id: &str, nonce: &[u8]) -> Vec<u8> {
        self.key
            .sign(&bosun_session::attach_message(
                session_id,
                &self.node_id,
                nonce,
            ))
            .as_ref()
            .to_vec()
    }

    /// The private key in PKCS#8, for saving.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// The bytes a node signs to answer a `Challenge`.
pub fn challenge_message(node_id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut message = b"bosun-agent-connect-v1\n".to_vec();
    message.extend_from_slice(node_id.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce);
    message
}

/// A fresh Ed25519 key in PKCS#8.
pub fn generate_key() -> Result<Vec<u8>, AgentError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|document| document.as_ref().to_vec())
        .map_err(|_| AgentError::InvalidState("cannot generate an Ed25519 key".into()))
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    node_id: String,
    server_url: String,
}

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The directory at `root` (not created until something is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (0700) if needed and tightens its mode if it is wider.
    pub fn create(&self) -> Result<(), AgentError> {
        create_private_dir(&self.root)
    }

    /// Whether an identity is saved here.
    pub fn has_identity(&self) -> bool {
        self.root.join(IDENTITY_FILE).exists() || self.root.join(KEY_FILE).exists()
    }

    /// Reads the saved identity.
    pub fn load_identity(&self) -> Result<Identity, AgentError> {
        let identity_path = self.root.join(IDENTITY_FILE);
        let text = fs::read(&identity_path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                AgentError::NotRegistered(self.root.clone())
            } else {
                AgentError::io(&identity_path, error)
            }
        })?;
        let file: IdentityFile = serde_json::from_slice(&text).map_err(|error| {
            AgentError::InvalidState(format!("{}: {error}", identity_path.display()))
        })?;
        let key_path = self.root.join(KEY_FILE);
        let pkcs8 = fs::read(&key_path).map_err(|error| AgentError::io(&key_path, error))?;
        Identity::new(file.node_id, file.server_url, pkcs8)
    }

    /// Saves `identity`: the key first, then `identity.json`, each atomically. Refuses to
    /// replace a saved identity unless `force`; replacing one also drops the old node's
    /// journal, pending results and work directories (they belong to the old node id).
    pub fn save_identity(&self, identity: &Identity, force: bool) -> Result<(), AgentError> {
        if self.has_identity() {
            if !force {
                return Err(AgentError::AlreadyRegistered(self.root.clone()));
            }
            for old in ["journal", "running", "outbox", "work"] {
                let path = self.root.join(old);
                match fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(AgentError::io(&path, error)),
                }
            }
        }
        self.create()?;
        write_atomically(&self.root.join(KEY_FILE), identity.pkcs8())?;
        let file = IdentityFile {
            node_id: identity.node_id.clone(),
            server_url: identity.server_url.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|error| AgentError::InvalidState(error.to_string()))?;
        json.push(b'\n');
        write_atomically(&self.root.join(IDENTITY_FILE), &json)
    }
}

/// Creates `path` (and parents) with mode 0700, and narrows an existing one to 0700.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), AgentError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|error| AgentError::io(path, error))?;
    let metadata = fs::metadata(path).map_err(|error| AgentError::io(path, error))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|error| AgentError::io(path, error))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` (mode 0600) so that a crash leaves either the old file or the new
/// one: a temporary file beside it, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let directory = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        File::open(directory)?.sync_all()
    })();
    result.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        AgentError::io(path, error)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let identity = Identity::new(
            "mi-0123456789abcdef0".into(),
            "http://x".into(),
            generate_key().unwrap(),
        )
        .unwrap();
        state.save_identity(&identity, false).unwrap();
        let loaded = state.load_identity().unwrap();
        assert_eq!(loaded.node_id, identity.node_id);
        assert_eq!(loaded.public_key(), identity.public_key());
        let mode = |path: PathBuf| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(state.path().to_path_buf()), 0o700);
        assert_eq!(mode(state.path().join("key.pk8")), 0o600);
        assert_eq!(mode(state.path().join("identity.json")), 0o600);
        assert!(matches!(
            state.save_identity(&identity, false),
            Err(AgentError::AlreadyRegistered(_))
        ));
        fs::create_dir(state.path().join("outbox")).unwrap();
        fs::write(state.path().join("outbox/old.pb"), b"x").unwrap();
        state.save_identity(&identity, true).unwrap();
        assert!(
            !state.path().join("outbox").exists(),
            "the old node's results are dropped"
        );
        assert!(!format!("{identity:?}").contains("pkcs8"));
    }
}
