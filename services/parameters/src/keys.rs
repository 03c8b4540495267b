//! The master key ring a running service uses, picked up again from its file when it
//! changes — so `bosun rotate-parameter-key` takes effect on running processes without a
//! restart.
//!
//! Two things trigger a re-read: a value wrapped under a key id the ring does not hold yet
//! (another process rotated and re-wrapped it), and, for writes, a change of the file's
//! modification time noticed at most every [`CHECK_EVERY`]. A file that cannot be read or
//! parsed keeps the ring already loaded (logged): a half-edited file never takes keys away.
//! Keys are only ever added by a reload as far as stored data is concerned, because rotation
//! keeps old keys in the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use secrecy::zeroize::Zeroizing;

use crate::crypto::{CryptoError, MasterKeyRing};

/// How often writes look at the key file's modification time.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Re-reads forced by unknown key ids are at most this frequent, so a flood of reads of a
/// value under a truly unknown key cannot turn into a flood of file reads.
const FORCED_RELOAD_EVERY: Duration = Duration::from_millis(200);

/// Where the service gets its key ring.
pub struct KeySource {
    ring: RwLock<Arc<MasterKeyRing>>,
    file: Option<KeyFile>,
}

struct KeyFile {
    path: PathBuf,
    check_every: Duration,
    seen: Mutex<Seen>,
}

struct Seen {
    modified: Option<SystemTime>,
    checked_at: Instant,
    forced_at: Option<Instant>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeySource {
    /// A ring that never changes (tests, tools).
    pub fn fixed(ring: Arc<MasterKeyRing>) -> Self {
        KeySource {
            ring: RwLock::new(ring),
            file: None,
        }
    }

    /// The ring in `path` (created with one fresh key when missing), re-read when it changes.
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let ring = MasterKeyRing::load_or_create(path)?;
        Ok(KeySource {
            ring: RwLock::new(Arc::new(ring)),
            file: Some(KeyFile {
                path: path.to_owned(),
                check_every: CHECK_EVERY,
                seen: Mutex::new(Seen {
                    modified: modified(path),
                    checked_at: Instant::now(),
                    forced_at: None,
                }),
            }),
        })
    }

    /// Looks at the file's modification time at most every `every` (default [`CHECK_EVERY`]).
    pub fn check_every(mut self, every: Duration) -> Self {
        if let Some(file) = &mut self.file {
            file.check_every = every;
        }
        self
    }

    fn loaded(&self) -> Arc<MasterKeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The ring, re-read first when its file changed since the last look (looked at no more
    /// than every [`CHECK_EVERY`]).
    pub fn current(&self) -> Arc<MasterKeyRing> {
        if let Some(file) = &self.file {
            let mut seen = file.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.checked_at.elapsed() >= file.check_every {
                seen.checked_at = Instant::now();
                let now = modified(&file.path);
                if now != seen.modified {
                    seen.modified = now;
                    self.reload(&file.path);
                }
            }
        }
        self.loaded()
    }

    /// The ring after re-reading the file now, because something needed a key it lacks.
    pub fn refreshed(&self) -> Arc<MasterKeyRing> {
        if let Some(file) = &self.file {
            let mut seen = file.seen.lock().unwrap_or_else(|p| p.into_inner());
            let due = seen
                .forced_at
                .is_none_or(|at| at.elapsed() >= FORCED_RELOAD_EVERY);
            if due {
                seen.forced_at = Some(Instant::now());
                seen.checked_at = Instant::now();
                seen.modified = modified(&file.path);
                self.reload(&file.path);
            }
        }
        self.loaded()
    }

    fn reload(&self, path: &Path) {
        // Read only: a missing file must not be replaced by a fresh ring here.
        let loaded = std::fs::read(path)
            .map_err(|error| CryptoError::KeyFile {
                path: path.display().to_string(),
                problem: error.to_string(),
            })
            .and_then(|bytes| MasterKeyRing::from_json(&Zeroizing::new(bytes)));
        match loaded {
            Ok(ring) => {
                let ids: Vec<&str> = ring.key_ids().collect();
                tracing::info!(
                    key_file = %path.display(),
                    default_key_id = ring.default_key_id(),
                    key_ids = ?ids,
                    "parameters key ring reloaded"
                );
                *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
            }
            Err(error) => {
                tracing::error!(%error, "parameters key ring: keeping the loaded keys");
            }
        }
    }

    /// Runs `operation` on the current ring, and once more on a re-read ring when it needed a
    /// key the loaded one does not hold.
    pub fn with_ring<T>(
        &self,
        operation: impl Fn(&MasterKeyRing) -> Result<T, CryptoError>,
    ) -> Result<T, CryptoError> {
        match operation(&self.current()) {
            Err(CryptoError::UnknownKey(_)) if self.file.is_some() => operation(&self.refreshed()),
            other => other,
        }
    }
}
