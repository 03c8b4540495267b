//! Cache coherence across replicas with leases: reads never leave the process, writes wait
//! until every replica that may be serving from its cache has dropped what they changed.
//!
//! In Redis (keys under `<prefix>parameters:cache:`):
//! - `log`, a stream: one entry per committed write, with the names it changed;
//! - `replicas`, a hash: replica id → `"<applied log id> <lease expiry, Redis ms>"`;
//! - `epoch`, a random string, created when missing: a Redis that lost its data gets a new
//!   one, and every replica starts over.
//!
//! A replica *follows* the log (blocking `XREAD`), drops the changed names from its cache,
//! and renews its lease with the position it applied, at least every [`RENEW_EVERY`]. It
//! serves from its cache only while its lease is valid by its own clock, which ends
//! [`MARGIN`] before the expiry Redis recorded.
//!
//! A write commits, drops the names locally, appends them to the log (entry id `W`), and
//! answers only once every replica whose recorded lease is still running has applied `W`;
//! a replica whose lease ran out is not serving from its cache. So a read never returns a
//! value older than an acknowledged write.
//!
//! A replica whose lease was not continuous — first start, a lapse, a new epoch, or log
//! entries trimmed before it read them — forgets its whole cache and joins at the end of the
//! log in the same script that records its lease: every later entry is written after it was
//! registered, so its writer waits for it. A write that cannot reach Redis, or whose
//! replicas do not all answer within [`WRITE_WAIT`], reports `Unavailable` (committed, not
//! yet everywhere) and is appended again in the background until Redis takes it.
//!
//! Clocks: Redis's `TIME` decides when a recorded lease has run out, each replica's
//! monotonic clock when its own has. The argument holds as long as Redis's wall clock does
//! not jump forward by more than [`MARGIN`] (NTP slews; a manual jump can open a window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bosun_core::ApiError;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};

/// How long a renewal keeps a replica's lease.
const LEASE: Duration = Duration::from_secs(3);
/// Renewals happen at least this often (also the longest blocking read of the log).
const RENEW_EVERY: Duration = Duration::from_millis(500);
/// A replica stops trusting its lease this long before Redis's recorded expiry.
const MARGIN: Duration = Duration::from_millis(500);
/// The longest a write waits for the other replicas before reporting `Unavailable`.
const WRITE_WAIT: Duration = Duration::from_secs(6);
/// Log entries kept (approximately); a replica that falls further behind starts over.
const LOG_LENGTH: u64 = 100_000;
/// Pause after a failed renewal or lost connection before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest a single command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Compares two stream ids (`<ms>-<seq>`, decimal) exactly, as strings.
const COMPARE_IDS: &str = r#"
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms or '0', seq or '0'
end
local function cmp_decimal(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function cmp_id(a, b)
  local a_ms, a_seq = split(a)
  local b_ms, b_seq = split(b)
  local by_ms = cmp_decimal(a_ms, b_ms)
  if by_ms ~= 0 then return by_ms end
  return cmp_decimal(a_seq, b_seq)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// KEYS: epoch, replicas, log. ARGV: replica id, applied id, lease ms, our epoch, a fresh
/// epoch. Records the lease; returns {epoch, continuous (1/0), position}: when the lease
/// was not continuous, the replica must forget everything and continue from `position`
/// (the end of the log, recorded as applied); otherwise `position` is its applied id.
const RENEW: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[1], epoch)
end
local now = now_ms()
local continuous = 1
if epoch ~= ARGV[4] then continuous = 0 end
local previous = redis.call('HGET', KEYS[2], ARGV[1])
if not previous then
  continuous = 0
else
  local expiry = tonumber(string.match(previous, ' (%d+)$') or '0')
  if expiry <= now then continuous = 0 end
end
local applied = ARGV[2]
if continuous == 1 then
  -- Entries trimmed before this replica read them: it cannot know what they changed.
  local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[3])
  if ok then
    for i = 1, #info, 2 do
      if info[i] == 'max-deleted-entry-id' and cmp_id(info[i + 1], applied) > 0 then
        continuous = 0
      end
    end
  end
end
if continuous == 0 then
  applied = '0-0'
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if #last > 0 then applied = last[1][1] end
end
redis.call('HSET', KEYS[2], ARGV[1], applied .. ' ' .. (now + tonumber(ARGV[3])))
return {epoch, continuous, applied}
"#;

/// KEYS: log, epoch. ARGV: replica id, names (JSON), log length. Returns {entry id, epoch
/// or ''}.
const APPEND: &str = r#"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'from', ARGV[1], 'names', ARGV[2])
return {id, redis.call('GET', KEYS[2]) or ''}
"#;

/// KEYS: replicas, epoch. ARGV: entry id, epoch at append, replica id (the writer's own).
/// Returns how many live replicas have not applied the entry yet, or -1 when the epoch
/// changed since the append (Redis lost its data: wait out every lease instead).
const PENDING: &str = r#"
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] or ARGV[2] == '' then return -1 end
local now = now_ms()
local fields = redis.call('HGETALL', KEYS[1])
local pending = 0
for i = 1, #fields, 2 do
  local replica, value = fields[i], fields[i + 1]
  local applied, expiry = string.match(value, '^(%S+) (%d+)$')
  expiry = tonumber(expiry or '0')
  if expiry + 60000 < now then
    redis.call('HDEL', KEYS[1], replica)
  elseif expiry > now and replica ~= ARGV[3] and cmp_id(applied or '0-0', ARGV[1]) < 0 then
    pending = pending + 1
  end
end
return pending
"#;

/// What the cache does when the log says names changed, or that it must start over.
pub(crate) trait Forget: Send + Sync + 'static {
    fn forget(&self, names: &[String]);
    fn forget_all(&self);
}

/// A replica's lease, by its own clock.
struct LeaseState {
    /// Set by `release`: the follower stops and never renews again.
    released: std::sync::atomic::AtomicBool,
    base: Instant,
    /// Nanoseconds after `base` until which the lease holds; 0 when it does not.
    valid_until: AtomicU64,
}

impl LeaseState {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn valid(&self) -> bool {
        self.nanos(Instant::now()) < self.valid_until.load(Ordering::Acquire)
    }

    fn extend(&self, renewal_sent: Instant) {
        let until = renewal_sent + LEASE.saturating_sub(MARGIN);
        self.valid_until.store(self.nanos(until), Ordering::Release);
    }

    fn end(&self) {
        self.valid_until.store(0, Ordering::Release);
    }
}

struct Keys {
    epoch: String,
    replicas: String,
    log: String,
}

/// This replica's side of the protocol: the follower task and the writer's wait.
pub(crate) struct Lease {
    replica_id: String,
    keys: Arc<Keys>,
    connection: ConnectionManager,
    state: Arc<LeaseState>,
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{COMPARE_IDS}\n{body}"))
}

fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Lease {
    /// Connects, and starts following the log on behalf of `cache` (the task ends when the
    /// cache is dropped).
    pub(crate) async fn start(
        client: redis::Client,
        connection: ConnectionManager,
        key_prefix: &str,
        cache: Weak<dyn Forget>,
    ) -> Self {
        let base = format!("{key_prefix}parameters:cache:");
        let keys = Arc::new(Keys {
            epoch: format!("{base}epoch"),
            replicas: format!("{base}replicas"),
            log: format!("{base}log"),
        });
        let state = Arc::new(LeaseState {
            released: std::sync::atomic::AtomicBool::new(false),
            base: Instant::now(),
            valid_until: AtomicU64::new(0),
        });
        let replica_id = random_id();
        tokio::spawn(follow(
            client,
            Arc::clone(&keys),
            replica_id.clone(),
            Arc::clone(&state),
            cache,
        ));
        Lease {
            replica_id,
            keys,
            connection,
            state,
        }
    }

    /// Whether this replica may serve from its cache now.
    pub(crate) fn valid(&self) -> bool {
        self.state.valid()
    }

    /// Gives the lease up (on shutdown): stops serving from the cache and following the log,
    /// and removes this replica from Redis so writers stop waiting for it at once.
    pub(crate) async fn release(&self) {
        self.state.released.store(true, Ordering::Release);
        self.state.end();
        let removed: Result<i64, String> = timed(
            redis::cmd("HDEL")
                .arg(&self.keys.replicas)
                .arg(&self.replica_id)
                .query_async(&mut self.connection.clone()),
        )
        .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "parameter cache: could not give up the lease; it runs out by itself");
        }
    }

    /// Waits up to `limit` for the first lease, so a replica starts serving from its cache
    /// at once; returns whether it holds one.
    pub(crate) async fn wait_valid(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.valid() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Tells every replica that `names` changed (they were dropped locally already), and
    /// waits until each replica that may be serving from its cache has dropped them.
    pub(crate) async fn publish(&self, names: &[String]) -> Result<(), ApiError> {
        let names = serde_json::to_string(names)
            .map_err(|error| ApiError::internal(format!("read cache: {error}")))?;
        let appended = self.append(&names).await;
        let (entry, epoch) = match appended {
            Ok(appended) => appended,
            Err(error) => {
                self.append_in_background(names);
                return Err(not_everywhere(&error));
            }
        };
        let deadline = Instant::now() + WRITE_WAIT;
        let mut pause = Duration::from_micros(500);
        let pending_script = script(PENDING);
        loop {
            let pending: Result<i64, String> = timed(
                pending_script
                    .key(&self.keys.replicas)
                    .key(&self.keys.epoch)
                    .arg(&entry)
                    .arg(&epoch)
                    .arg(&self.replica_id)
                    .invoke_async(&mut self.connection.clone()),
            )
            .await;
            match pending {
                Ok(0) => return Ok(()),
                // Redis lost its data: every lease recorded before has run out after LEASE.
                Ok(-1) => {
                    tokio::time::sleep(LEASE).await;
                    return Ok(());
                }
                Ok(_) | Err(_) if Instant::now() >= deadline => {
                    return Err(not_everywhere("other replicas did not confirm in time"));
                }
                Ok(_) | Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    async fn append(&self, names: &str) -> Result<(String, String), String> {
        append(
            &mut self.connection.clone(),
            &self.keys,
            &self.replica_id,
            names,
        )
        .await
    }

    /// Keeps appending `names` until Redis takes them, so the other replicas hear of the
    /// change once it is reachable again.
    fn append_in_background(&self, names: String) {
        let mut connection = self.connection.clone();
        let keys = Arc::clone(&self.keys);
        let replica_id = self.replica_id.clone();
        tokio::spawn(async move {
            let mut pause = RETRY_PAUSE;
            loop {
                tokio::time::sleep(pause).await;
                if append(&mut connection, &keys, &replica_id, &names)
                    .await
                    .is_ok()
                {
                    tracing::info!("parameter cache: a change delayed by Redis was announced");
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        });
    }
}

fn not_everywhere(why: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "the change is committed, but other replicas could not be told of it ({why}); they \
         may serve the previous value for a few seconds more"
    ))
}

async fn timed<T>(
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

async fn append(
    connection: &mut ConnectionManager,
    keys: &Keys,
    replica_id: &str,
    names: &str,
) -> Result<(String, String), String> {
    timed(
        script(APPEND)
            .key(&keys.log)
            .key(&keys.epoch)
            .arg(replica_id)
            .arg(names)
            .arg(LOG_LENGTH)
            .invoke_async(connection),
    )
    .await
}

/// Follows the log for the cache until the cache is gone: apply what changed, renew the
/// lease with the position applied, read on.
async fn follow(
    client: redis::Client,
    keys: Arc<Keys>,
    replica_id: String,
    state: Arc<LeaseState>,
    cache: Weak<dyn Forget>,
) {
    let renew = script(RENEW);
    let mut epoch = String::new();
    let mut applied = "0-0".to_owned();
    let mut connection: Option<MultiplexedConnection> = None;
    loop {
        if cache.strong_count() == 0 || state.released.load(Ordering::Acquire) {
            return;
        }
        let Some(conn) = connection.as_mut() else {
            // No response timeout on this connection: its XREAD blocks on purpose, and every
            // command on it is bounded here.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(None);
            match timed(client.get_multiplexed_async_connection_with_config(&config)).await {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    tracing::debug!(%error, "parameter cache: cannot reach Redis to follow");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            continue;
        };

        // Renew, with what was applied so far.
        let sent = Instant::now();
        let renewed: Result<(String, i64, String), String> = timed(
            renew
                .key(&keys.epoch)
                .key(&keys.replicas)
                .key(&keys.log)
                .arg(&replica_id)
                .arg(&applied)
                .arg(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
                .arg(&epoch)
                .arg(random_id())
                .invoke_async(conn),
        )
        .await;
        match renewed {
            Ok((current_epoch, continuous, position)) => {
                if continuous == 0 {
                    // Start over: nothing cached so far can be trusted.
                    state.end();
                    if let Some(cache) = cache.upgrade() {
                        cache.forget_all();
                    }
                    epoch = current_epoch;
                    applied = position;
                }
                if state.released.load(Ordering::Acquire) {
                    return;
                }
                state.extend(sent);
            }
            Err(error) => {
                tracing::debug!(%error, "parameter cache: lease renewal failed");
                connection = None;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        }

        // Read what changed since, waiting up to RENEW_EVERY.
        let read: Result<redis::streams::StreamReadReply, String> = match tokio::time::timeout(
            RENEW_EVERY + COMMAND_TIMEOUT,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(u64::try_from(RENEW_EVERY.as_millis()).unwrap_or(500))
                .arg("STREAMS")
                .arg(&keys.log)
                .arg(&applied)
                .query_async(conn),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer".to_owned()),
        };
        match read {
            Ok(reply) => {
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                for stream in reply.keys {
                    for entry in stream.ids {
                        let from: Option<String> = entry.get("from");
                        if from.as_deref() != Some(replica_id.as_str()) {
                            let names: Option<String> = entry.get("names");
                            match names
                                .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
                            {
                                Some(names) => cache.forget(&names),
                                // Not ours to read: forget everything rather than guess.
                                None => cache.forget_all(),
                            }
                        }
                        applied = entry.id;
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "parameter cache: reading the change log failed");
                connection = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
