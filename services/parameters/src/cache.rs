//! The per-replica read cache of GetParameter / GetParameters, coherent across replicas.
//!
//! The promise: a read never returns a value older than a write that any replica
//! acknowledged before the read arrived.
//!
//! Each cached name has a *validity token*, a random 128-bit value in this process: a write
//! (here, or announced by another replica) replaces it, and a cached version is served only
//! under the token it was stored with. A read takes the tokens first, reads the store on a
//! miss, and caches what it read under the token it took — so a read racing a write can
//! only cache under a token the write already replaced. A name without a token gets one
//! only once the store says it exists (reads of made-up names leave nothing behind).
//!
//! Across replicas (`ReadCache::redis`), writes reach the other replicas' tokens through a
//! change log in Redis, and a write is acknowledged only once every replica that may be
//! serving from its cache has applied it — see `lease` for the protocol. Reads never leave
//! the process. A replica that loses Redis stops serving from its cache when its lease runs
//! out (seconds); a write that cannot reach Redis, or every replica, answers `Unavailable`
//! (committed, not yet everywhere).
//!
//! SecureString versions are cached as stored, encrypted; decryption happens per read.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bosun_core::ApiError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::lease::{Forget, Lease};
use crate::store::VersionRecord;

/// A name's validity token.
pub(crate) type Token = u128;

const SHARDS: usize = 16;
/// Local tokens kept at most (Advanced allows 100,000 parameters); the map is dropped when it
/// grows past this (only misses follow).
const MAX_LOCAL_TOKENS: usize = 1 << 17;
/// Memory accounted per cached version besides its strings.
const ENTRY_OVERHEAD: usize = 160;

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Reads that went to the store because this replica's lease was not valid.
    pub bypasses: u64,
    /// Writes the other replicas could not be told of at once.
    pub invalidation_failures: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    invalidation_failures: AtomicU64,
}

/// The read cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ReadCache {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    max_shard_bytes: usize,
    /// Name → current validity token.
    tokens: Mutex<HashMap<String, Token>>,
    /// Set when replicas share the store: without a valid lease, nothing is served cached.
    lease: OnceLock<Lease>,
    counters: Counters,
}

#[derive(Default)]
struct Shard {
    slots: HashMap<String, Slot>,
    bytes: usize,
}

/// The cached versions of one name, all read under `token`.
struct Slot {
    token: Token,
    /// Selector suffix (`""`, `":3"`, `":prod"`) → version.
    versions: HashMap<String, Arc<VersionRecord>>,
    bytes: usize,
}

fn fresh_token() -> Token {
    uuid::Uuid::new_v4().as_u128()
}

fn version_bytes(version: &VersionRecord) -> usize {
    ENTRY_OVERHEAD
        + version.name.len()
        + version.value.len()
        + version.parameter_type.len()
        + version.key_id.len()
        + version.description.len()
        + version.allowed_pattern.len()
        + version.tier.len()
        + version.policies.len()
        + version.data_type.len()
        + version.modified_by.len()
}

impl ReadCache {
    /// A cache for a process that serves every read and write of the store itself (the
    /// all-in-one server on its embedded store). Never use it with several replicas.
    pub fn local(max_bytes: usize) -> Self {
        ReadCache {
            inner: Arc::new(Inner::new(max_bytes)),
        }
    }

    /// A cache kept coherent with every other replica through Redis at `url`; keys start with
    /// `key_prefix` (e.g. `bosun:`). It serves nothing cached until its first lease is in.
    pub async fn redis(url: &str, key_prefix: &str, max_bytes: usize) -> Result<Self, ApiError> {
        let client = redis::Client::open(url)
            .map_err(|error| ApiError::Unavailable(format!("read cache: redis url: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|error| ApiError::Unavailable(format!("read cache: redis: {error}")))?;
        let inner = Arc::new(Inner::new(max_bytes));
        let forget: Weak<dyn Forget> = Arc::downgrade(&inner) as Weak<dyn Forget>;
        let lease = Lease::start(client, connection, key_prefix, forget).await;
        if !lease.wait_valid(Duration::from_secs(3)).await {
            tracing::warn!(
                "parameter cache: no lease yet; reads go to the store until there is one"
            );
        }
        let _ = inner.lease.set(lease);
        Ok(ReadCache { inner })
    }

    /// On shutdown: with replicas, gives the lease up so writers elsewhere stop waiting for
    /// this process at once (instead of when its lease runs out).
    pub async fn release(&self) {
        if let Some(lease) = self.inner.lease.get() {
            lease.release().await;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let counters = &self.inner.counters;
        CacheStats {
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            bypasses: counters.bypasses.load(Ordering::Relaxed),
            invalidation_failures: counters.invalidation_failures.load(Ordering::Relaxed),
        }
    }

    fn shard(&self, name: &str) -> &Mutex<Shard> {
        self.inner.shard(name)
    }

    /// Whether cached versions may be served now (always, without replicas).
    fn serving(&self) -> bool {
        let serving = self.inner.lease.get().is_none_or(Lease::valid);
        if !serving {
            self.inner.counters.bypasses.fetch_add(1, Ordering::Relaxed);
        }
        serving
    }

    /// The current tokens of `names` (in order; `None` for a name without one); `None` when
    /// nothing may be served cached now, and the caller reads the store without caching.
    pub(crate) fn tokens(&self, names: &[&str]) -> Option<Vec<Option<Token>>> {
        if !self.serving() {
            return None;
        }
        let map = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        Some(names.iter().map(|name| map.get(*name).copied()).collect())
    }

    /// A token for `name`, which the store just said exists: a fresh one, or the one another
    /// reader installed first. Cache only what is read from the store after this.
    pub(crate) fn install(&self, name: &str) -> Option<Token> {
        if !self.serving() {
            return None;
        }
        let mut map = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_LOCAL_TOKENS {
            map.clear();
        }
        Some(*map.entry(name.to_owned()).or_insert_with(fresh_token))
    }

    /// The version cached for `name` + `selector` under `token`, if any.
    pub(crate) fn get(
        &self,
        name: &str,
        selector: &str,
        token: Token,
    ) -> Option<Arc<VersionRecord>> {
        let shard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
        let found = shard
            .slots
            .get(name)
            .filter(|slot| slot.token == token)
            .and_then(|slot| slot.versions.get(selector))
            .cloned();
        drop(shard);
        let counter = if found.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `version`, read from the store after `token` was fetched.
    pub(crate) fn put(
        &self,
        name: &str,
        selector: &str,
        token: Token,
        version: Arc<VersionRecord>,
    ) {
        let size = version_bytes(&version) + selector.len();
        if size + name.len() > self.inner.max_shard_bytes {
            return;
        }
        let mut guard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
        let shard = &mut *guard;
        let slot = shard.slots.entry(name.to_owned()).or_insert_with(|| {
            shard.bytes += name.len();
            Slot {
                token,
                versions: HashMap::new(),
                bytes: name.len(),
            }
        });
        if slot.token != token {
            // Whichever token is current, a later read compares against it exactly.
            shard.bytes -= slot.bytes - name.len();
            slot.token = token;
            slot.versions.clear();
            slot.bytes = name.len();
        }
        if let Some(previous) = slot.versions.insert(selector.to_owned(), version) {
            let previous_size = version_bytes(&previous) + selector.len();
            slot.bytes -= previous_size;
            shard.bytes -= previous_size;
        }
        slot.bytes += size;
        shard.bytes += size;
        // Evict other names (in the map's arbitrary order) until the shard fits.
        while shard.bytes > self.inner.max_shard_bytes {
            let Some(victim) = shard.slots.keys().find(|key| key.as_str() != name).cloned() else {
                break;
            };
            if let Some(evicted) = shard.slots.remove(&victim) {
                shard.bytes -= evicted.bytes;
            }
        }
    }

    /// Called after a change to `names` committed and before it is acknowledged: drops the
    /// local copies, and with replicas waits until every replica serving from its cache
    /// dropped them. `Err(Unavailable)` means some could not be told yet (the change is
    /// committed; it is announced again in the background).
    pub(crate) async fn invalidate(&self, names: &[String]) -> Result<(), ApiError> {
        if names.is_empty() {
            return Ok(());
        }
        self.inner.forget(names);
        let Some(lease) = self.inner.lease.get() else {
            return Ok(());
        };
        let published = lease.publish(names).await;
        if published.is_err() {
            self.inner
                .counters
                .invalidation_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        published
    }
}

impl Inner {
    fn new(max_bytes: usize) -> Self {
        Inner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_shard_bytes: (max_bytes / SHARDS).max(1),
            tokens: Mutex::default(),
            lease: OnceLock::new(),
            counters: Counters::default(),
        }
    }

    fn shard(&self, name: &str) -> &Mutex<Shard> {
        let index = (self.hasher.hash_one(name) as usize) % SHARDS;
        &self.shards[index]
    }
}

impl Forget for Inner {
    /// New tokens for `names` (reads in flight cache under the old ones, unreachable) and
    /// their cached versions dropped.
    fn forget(&self, names: &[String]) {
        {
            let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_LOCAL_TOKENS {
                map.clear();
            }
            for name in names {
                map.insert(name.clone(), fresh_token());
            }
        }
        for name in names {
            let mut shard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = shard.slots.remove(name.as_str()) {
                shard.bytes -= slot.bytes;
            }
        }
    }

    /// Every token and every cached version dropped.
    fn forget_all(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.slots.clear();
            shard.bytes = 0;
        }
    }
}
