//! Presence: which gateway replica holds a node's stream, with a time to live so a replica
//! that dies stops attracting pushes. In Redis for fleets of replicas ([`RedisPresence`]), in
//! memory for the all-in-one server ([`MemoryPresence`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bosun_core::ApiError;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

/// Most keys one refresh script call touches; a script blocks Redis while it runs.
const REFRESH_CHUNK: usize = 500;

/// Bounds on connecting and on replies, so a dead Redis fails calls instead of hanging them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Deletes `KEYS[1]` only while it names `ARGV[1]`: a replica never removes another's claim.
const REMOVE_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// For every key: extends it when it is ours or missing (1), leaves it when another replica
/// holds it (0). Returns one flag per key.
const REFRESH_SCRIPT: &str = r"
local result = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == false or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    result[i] = 1
  else
    result[i] = 0
  end
end
return result
";

/// Where nodes are connected: node id → the replica id holding its stream.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Claims `node_id` for `replica_id` for `ttl`, replacing whoever held it.
    async fn set(&self, node_id: &str, replica_id: &str, ttl: Duration) -> Result<(), ApiError>;
    /// The replica holding `node_id`, if any claim is live.
    async fn get(&self, node_id: &str) -> Result<Option<String>, ApiError>;
    /// The replicas holding each of `node_ids` (same order). The default asks one by one;
    /// [`RedisPresence`] asks in one round trip per few hundred nodes.
    async fn get_many(&self, node_ids: &[String]) -> Result<Vec<Option<String>>, ApiError> {
        let mut holders = Vec::with_capacity(node_ids.len());
        for node_id in node_ids {
            holders.push(self.get(node_id).await?);
        }
        Ok(holders)
    }
    /// Removes the claim only if `replica_id` holds it (compare and delete); returns whether
    /// it did.
    async fn remove_if(&self, node_id: &str, replica_id: &str) -> Result<bool, ApiError>;
    /// Extends `replica_id`'s claims on `node_ids` (re-creating expired ones) in one round
    /// trip per few hundred nodes. Returns the nodes another replica holds now: their streams
    /// here were replaced.
    async fn refresh_many(
        &self,
        node_ids: &[String],
        replica_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, ApiError>;
}

fn presence_error(what: &str, error: redis::RedisError) -> ApiError {
    tracing::warn!(%error, "presence: {what} failed");
    ApiError::Unavailable(format!("presence: {what}: {error}"))
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// [`Presence`] in Redis: the key `<prefix>nodes:presence:<node_id>` holds the replica id,
/// with an expiry.
#[derive(Clone)]
pub struct RedisPresence {
    manager: ConnectionManager,
    prefix: String,
    remove_if_script: Script,
    refresh_script: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection holds the URL, which may hold a password.
        formatter
            .debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// Connects to Redis at `url`; keys start with `prefix` (`bosun:` in production).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ApiError> {
        let client = redis::Client::open(url).map_err(|error| {
            ApiError::Unavailable(format!("presence: invalid redis url: {error}"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| {
                ApiError::Unavailable(format!("presence: connect to redis: {error}"))
            })?;
        Ok(Self {
            manager,
            prefix: prefix.to_owned(),
            remove_if_script: Script::new(REMOVE_IF_SCRIPT),
            refresh_script: Script::new(REFRESH_SCRIPT),
        })
    }

    fn key(&self, node_id: &str) -> String {
        format!("{}nodes:presence:{node_id}", self.prefix)
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn set(&self, node_id: &str, replica_id: &str, ttl: Duration) -> Result<(), ApiError> {
        let mut connection = self.manager.clone();
        redis::cmd("SET")
            .arg(self.key(node_id))
            .arg(replica_id)
            .arg("PX")
            .arg(ttl_millis(ttl))
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| presence_error("set", error))
    }

    async fn get(&self, node_id: &str) -> Result<Option<String>, ApiError> {
        let mut connection = self.manager.clone();
        redis::cmd("GET")
            .arg(self.key(node_id))
            .query_async::<Option<String>>(&mut connection)
            .await
            .map_err(|error| presence_error("get", error))
    }

    async fn get_many(&self, node_ids: &[String]) -> Result<Vec<Option<String>>, ApiError> {
        let mut holders = Vec::with_capacity(node_ids.len());
        let mut connection = self.manager.clone();
        for chunk in node_ids.chunks(REFRESH_CHUNK) {
            let mut command = redis::cmd("MGET");
            for node_id in chunk {
                command.arg(self.key(node_id));
            }
            let values: Vec<Option<String>> = command
                .query_async(&mut connection)
                .await
                .map_err(|error| presence_error("get many", error))?;
            holders.extend(values);
        }
        Ok(holders)
    }

    async fn remove_if(&self, node_id: &str, replica_id: &str) -> Result<bool, ApiError> {
        let mut connection = self.manager.clone();
        let removed: i64 = self
            .remove_if_script
            .key(self.key(node_id))
            .arg(replica_id)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| presence_error("remove", error))?;
        Ok(removed > 0)
    }

    async fn refresh_many(
        &self,
        node_ids: &[String],
        replica_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, ApiError> {
        let mut lost = Vec::new();
        let mut connection = self.manager.clone();
        for chunk in node_ids.chunks(REFRESH_CHUNK) {
            let mut invocation = self.refresh_script.prepare_invoke();
            for node_id in chunk {
                invocation.key(self.key(node_id));
            }
            invocation.arg(replica_id).arg(ttl_millis(ttl));
            let flags: Vec<i64> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(|error| presence_error("refresh", error))?;
            lost.extend(
                chunk
                    .iter()
                    .zip(flags)
                    .filter(|(_, kept)| *kept == 0)
                    .map(|(node_id, _)| node_id.clone()),
            );
        }
        Ok(lost)
    }
}

/// [`Presence`] in process, for the all-in-one server (one replica, in-process queue).
#[derive(Debug, Default)]
pub struct MemoryPresence {
    claims: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryPresence {
    /// An empty presence table.
    pub fn new() -> Self {
        Self::default()
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn set(&self, node_id: &str, replica_id: &str, ttl: Duration) -> Result<(), ApiError> {
        self.claims().insert(
            node_id.to_owned(),
            (replica_id.to_owned(), Instant::now() + ttl),
        );
        Ok(())
    }

    async fn get(&self, node_id: &str) -> Result<Option<String>, ApiError> {
        let now = Instant::now();
        let mut claims = self.claims();
        match claims.get(node_id) {
            Some((replica, until)) if *until > now => Ok(Some(replica.clone())),
            Some(_) => {
                claims.remove(node_id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn remove_if(&self, node_id: &str, replica_id: &str) -> Result<bool, ApiError> {
        let mut claims = self.claims();
        if claims
            .get(node_id)
            .is_some_and(|(holder, _)| holder == replica_id)
        {
            claims.remove(node_id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn refresh_many(
        &self,
        node_ids: &[String],
        replica_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, ApiError> {
        let now = Instant::now();
        let until = now + ttl;
        let mut claims = self.claims();
        let mut lost = Vec::new();
        for node_id in node_ids {
            match claims.get_mut(node_id) {
                Some((holder, expiry)) if holder != replica_id && *expiry > now => {
                    lost.push(node_id.clone());
                }
                Some(claim) => *claim = (replica_id.to_owned(), until),
                None => {
                    claims.insert(node_id.clone(), (replica_id.to_owned(), until));
                }
            }
        }
        Ok(lost)
    }
}
