//! The per-replica read cache of GetParameter / GetParameters, coherent across replicas.
//!
//! The promise: a read never returns a value older than a write that any replica
//! acknowledged before the read arrived. It is kept with *validity tokens*, not with expiry
//! times or best-effort invalidation messages:
//!
//! - Every parameter name has a token: a random 128-bit value held where every replica sees
//!   it (`<prefix>parameters:cache:<name>` in Redis; an in-process map when one process
//!   serves everything). A write commits, then replaces the token with a fresh random one,
//!   then answers the client.
//! - A read first fetches the tokens of the names it needs — with a request *issued after
//!   the read arrived* — and serves a cached version only when it was stored under the very
//!   token fetched. On a miss it reads the store and caches what it read under that token.
//!   A name without a token gets one only once the store says it exists (so reads of
//!   made-up names leave nothing behind in Redis), and what is cached under the new token is
//!   read again after the token was in place.
//!
//! Why this is exact: a cached version was read from the store after its token was fetched.
//! If a write was acknowledged before our read arrived, its new token was in place before
//! our fetch, so either our token is that one (or newer) and the cached version was read
//! after the write committed, or the tokens differ and we go to the store. Tokens are random,
//! so losing them (Redis restart, eviction, expiry) only causes misses: a new token never
//! equals an old one.
//!
//! Token fetches are batched: one Redis round trip (`MGET`) serves every read that queued
//! while the previous round trips were in flight (a few at once), so tens of thousands of
//! reads per second cost a few thousand round trips. Installing a token is `SET key token NX
//! GET`, which returns the token already there when another replica was first. When Redis cannot be reached, reads bypass the cache and go to the store;
//! when a write cannot replace its tokens it reports `Unavailable` (the change is committed,
//! but not yet visible everywhere) and keeps retrying in the background.
//!
//! SecureString versions are cached as stored, encrypted; decryption happens per read.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_core::ApiError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::store::VersionRecord;

/// A name's validity token.
pub(crate) type Token = u128;

const SHARDS: usize = 16;
/// Longest a read waits for its tokens before going to the store instead.
const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
/// Token fetch round trips in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Names fetched in one Redis round trip at most; more wait for the next one.
const MAX_BATCH_NAMES: usize = 2048;
/// Tokens expire in Redis after a day untouched (a new token is then drawn: one miss).
const TOKEN_TTL_SECONDS: u64 = 24 * 60 * 60;
/// Attempts to replace tokens before a write reports `Unavailable`.
const BUMP_ATTEMPTS: u32 = 3;
const BUMP_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Background retries of a failed token replacement: pause doubles up to this.
const BACKGROUND_RETRY_MAX: Duration = Duration::from_secs(30);
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
    /// Reads that went to the store because tokens could not be fetched.
    pub bypasses: u64,
    /// Token fetch round trips to Redis (each serves a batch of reads).
    pub fetches: u64,
    /// Writes whose tokens could not be replaced at once.
    pub invalidation_failures: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    fetches: AtomicU64,
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
    tokens: Tokens,
    counters: Arc<Counters>,
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

enum Tokens {
    /// One process serves every read and write: tokens live in this map.
    Local(Mutex<HashMap<String, Token>>),
    /// Replicas share tokens through Redis.
    Redis(RedisTokens),
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
        Self::with_tokens(max_bytes, Tokens::Local(Mutex::default()), Arc::default())
    }

    /// A cache kept coherent with every other replica through Redis at `url`; keys start with
    /// `key_prefix` (e.g. `bosun:`).
    pub async fn redis(url: &str, key_prefix: &str, max_bytes: usize) -> Result<Self, ApiError> {
        let client = redis::Client::open(url)
            .map_err(|error| ApiError::Unavailable(format!("read cache: redis url: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(FETCH_TIMEOUT));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| ApiError::Unavailable(format!("read cache: redis: {error}")))?;
        let counters = Arc::new(Counters::default());
        let tokens = RedisTokens::start(connection, key_prefix, Arc::clone(&counters));
        Ok(Self::with_tokens(
            max_bytes,
            Tokens::Redis(tokens),
            counters,
        ))
    }

    fn with_tokens(max_bytes: usize, tokens: Tokens, counters: Arc<Counters>) -> Self {
        ReadCache {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                max_shard_bytes: (max_bytes / SHARDS).max(1),
                tokens,
                counters,
            }),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let counters = &self.inner.counters;
        CacheStats {
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            bypasses: counters.bypasses.load(Ordering::Relaxed),
            fetches: counters.fetches.load(Ordering::Relaxed),
            invalidation_failures: counters.invalidation_failures.load(Ordering::Relaxed),
        }
    }

    fn shard(&self, name: &str) -> &Mutex<Shard> {
        let index = (self.inner.hasher.hash_one(name) as usize) % SHARDS;
        &self.inner.shards[index]
    }

    /// The current tokens of `names` (in order; `None` for a name without one), fetched
    /// after this call began; `None` when they cannot be had, and the caller must read the
    /// store without caching.
    pub(crate) async fn tokens(&self, names: &[&str]) -> Option<Vec<Option<Token>>> {
        let tokens = match &self.inner.tokens {
            Tokens::Local(map) => {
                let map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                Some(names.iter().map(|name| map.get(*name).copied()).collect())
            }
            Tokens::Redis(redis) => redis.fetch(names).await,
        };
        if tokens.is_none() {
            self.inner.counters.bypasses.fetch_add(1, Ordering::Relaxed);
        }
        tokens
    }

    /// A token for `name`, which the store just said exists: a fresh one, or the one another
    /// reader or replica installed first. Cache only what is read from the store after this.
    pub(crate) async fn install(&self, name: &str) -> Option<Token> {
        let token = match &self.inner.tokens {
            Tokens::Local(map) => {
                let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if map.len() >= MAX_LOCAL_TOKENS {
                    map.clear();
                }
                Some(*map.entry(name.to_owned()).or_insert_with(fresh_token))
            }
            Tokens::Redis(redis) => redis.install(name).await,
        };
        if token.is_none() {
            self.inner.counters.bypasses.fetch_add(1, Ordering::Relaxed);
        }
        token
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
    /// local copies and replaces the shared tokens. `Err(Unavailable)` means other replicas
    /// could not be told yet; the replacement is retried in the background until it lands.
    pub(crate) async fn invalidate(&self, names: &[String]) -> Result<(), ApiError> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            let mut shard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = shard.slots.remove(name.as_str()) {
                shard.bytes -= slot.bytes;
            }
        }
        match &self.inner.tokens {
            Tokens::Local(map) => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MAX_LOCAL_TOKENS {
                    map.clear();
                }
                for name in names {
                    map.insert(name.clone(), fresh_token());
                }
                Ok(())
            }
            Tokens::Redis(redis) => {
                let result = redis.bump(names).await;
                if result.is_err() {
                    self.inner
                        .counters
                        .invalidation_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                result
            }
        }
    }
}

// ---- Redis tokens -------------------------------------------------------------------------

struct FetchRequest {
    names: Vec<String>,
    reply: oneshot::Sender<Option<Vec<Option<Token>>>>,
}

struct RedisTokens {
    connection: ConnectionManager,
    key_prefix: String,
    requests: mpsc::UnboundedSender<FetchRequest>,
}

impl RedisTokens {
    fn start(connection: ConnectionManager, key_prefix: &str, counters: Arc<Counters>) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let key_prefix = format!("{key_prefix}parameters:cache:");
        tokio::spawn(fetch_loop(
            connection.clone(),
            key_prefix.clone(),
            receiver,
            counters,
        ));
        RedisTokens {
            connection,
            key_prefix,
            requests,
        }
    }

    async fn fetch(&self, names: &[&str]) -> Option<Vec<Option<Token>>> {
        let (reply, answer) = oneshot::channel();
        let request = FetchRequest {
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            reply,
        };
        self.requests.send(request).ok()?;
        tokio::time::timeout(FETCH_TIMEOUT * 2, answer)
            .await
            .ok()?
            .ok()?
    }

    async fn install(&self, name: &str) -> Option<Token> {
        let offered = fresh_token();
        let mut command = redis::cmd("SET");
        command
            .arg(format!("{}{name}", self.key_prefix))
            .arg(format!("{offered:032x}"))
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(TOKEN_TTL_SECONDS);
        let mut connection = self.connection.clone();
        let install = command.query_async::<Option<String>>(&mut connection);
        match tokio::time::timeout(FETCH_TIMEOUT, install).await {
            // NX installed ours.
            Ok(Ok(None)) => Some(offered),
            Ok(Ok(Some(current))) => parse_token(&current),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    async fn bump(&self, names: &[String]) -> Result<(), ApiError> {
        let unique: BTreeSet<&String> = names.iter().collect();
        let mut last_error = String::new();
        for attempt in 0..BUMP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BUMP_RETRY_PAUSE).await;
            }
            match replace_tokens(&mut self.connection.clone(), &self.key_prefix, &unique).await {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
        }
        tracing::warn!(
            names = unique.len(),
            error = %last_error,
            "parameter cache: could not replace validity tokens; retrying in the background"
        );
        let names: Vec<String> = unique.into_iter().cloned().collect();
        let mut connection = self.connection.clone();
        let prefix = self.key_prefix.clone();
        tokio::spawn(async move {
            let keys: BTreeSet<&String> = names.iter().collect();
            let mut pause = BUMP_RETRY_PAUSE;
            loop {
                tokio::time::sleep(pause).await;
                if replace_tokens(&mut connection, &prefix, &keys)
                    .await
                    .is_ok()
                {
                    tracing::info!(
                        names = keys.len(),
                        "parameter cache: validity tokens replaced"
                    );
                    return;
                }
                pause = (pause * 2).min(BACKGROUND_RETRY_MAX);
            }
        });
        Err(ApiError::Unavailable(
            "the change is committed, but other replicas could not be told of it (Redis is \
             unreachable); they may serve the previous value until it is back"
                .to_owned(),
        ))
    }
}

/// Replaces the tokens of `names`, giving up after `FETCH_TIMEOUT` (the connection manager
/// would otherwise hold the call while it reconnects).
async fn replace_tokens(
    connection: &mut ConnectionManager,
    prefix: &str,
    names: &BTreeSet<&String>,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("SET")
            .arg(format!("{prefix}{name}"))
            .arg(format!("{:032x}", fresh_token()))
            .arg("EX")
            .arg(TOKEN_TTL_SECONDS)
            .ignore();
    }
    match tokio::time::timeout(FETCH_TIMEOUT, pipe.query_async::<()>(connection)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
    }
}

/// Serves fetch requests in batches: whatever queued since the last batch left goes out in
/// the next one, so each request is answered by a read issued after it arrived. Up to
/// [`BATCHES_IN_FLIGHT`] batches are in flight at once (pipelined on one connection), so a
/// read waits for at most one round trip plus what is already queued, not for a full
/// previous round trip.
async fn fetch_loop(
    connection: ConnectionManager,
    prefix: String,
    mut receiver: mpsc::UnboundedReceiver<FetchRequest>,
    counters: Arc<Counters>,
) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            first = receiver.recv(), if in_flight.len() < BATCHES_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                let mut names = batch[0].names.len();
                while names < MAX_BATCH_NAMES {
                    match receiver.try_recv() {
                        Ok(request) => {
                            names += request.names.len();
                            batch.push(request);
                        }
                        Err(_) => break,
                    }
                }
                counters.fetches.fetch_add(1, Ordering::Relaxed);
                in_flight.push(fetch_batch(connection.clone(), &prefix, batch));
            }
            Some(()) = futures::StreamExt::next(&mut in_flight), if !in_flight.is_empty() => {}
        }
    }
    while futures::StreamExt::next(&mut in_flight).await.is_some() {}
}

/// One round trip for `batch`: the current token of each name (or none), answered to each
/// request in its own order.
async fn fetch_batch(mut connection: ConnectionManager, prefix: &str, batch: Vec<FetchRequest>) {
    // Each request's names as positions in one list of unique names.
    let mut unique: Vec<String> = Vec::new();
    let positions: Vec<Vec<usize>> = {
        let mut index: HashMap<&str, usize> = HashMap::new();
        batch
            .iter()
            .map(|request| {
                request
                    .names
                    .iter()
                    .map(|name| {
                        *index.entry(name.as_str()).or_insert_with(|| {
                            unique.push(name.clone());
                            unique.len() - 1
                        })
                    })
                    .collect()
            })
            .collect()
    };
    let mut mget = redis::cmd("MGET");
    for name in &unique {
        mget.arg(format!("{prefix}{name}"));
    }
    let answer: Option<Vec<Option<Token>>> = match tokio::time::timeout(
        FETCH_TIMEOUT,
        mget.query_async::<Vec<Option<String>>>(&mut connection),
    )
    .await
    {
        Ok(Ok(current)) if current.len() == unique.len() => current
            .iter()
            .map(|current| match current {
                None => Some(None),
                // A malformed token (not ours) fails the whole answer: read the store.
                Some(text) => parse_token(text).map(Some),
            })
            .collect(),
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::debug!(%error, "parameter cache: token fetch failed; reading the store");
            None
        }
        Err(_) => None,
    };
    for (request, positions) in batch.into_iter().zip(positions) {
        let tokens = answer
            .as_ref()
            .map(|tokens| positions.iter().map(|position| tokens[*position]).collect());
        let _ = request.reply.send(tokens);
    }
}

fn parse_token(text: &str) -> Option<Token> {
    Token::from_str_radix(text, 16).ok()
}
