//! The production queue: one Redis Stream per queue, read through consumer groups, with
//! XAUTOCLAIM for redelivery after the visibility timeout and a `<stream>:dead` stream for
//! messages that were never acked.
//!
//! Layout of an entry: the field `payload` holds the body, and each header `name` is a field
//! `h:name`, so entries stay readable with `redis-cli XRANGE`.
//!
//! Trimming (crate docs, "Retention") is one Lua script, `trim.lua`: it finds the prefix of
//! the stream every group has acknowledged (before each group's oldest pending id, at or
//! before its last-delivered id) and removes its oldest entries beyond `max_retained` with
//! `XTRIM MINID`. Being one script, it cannot interleave with `XGROUP CREATE` or
//! `XREADGROUP`: a group created meanwhile either counts or comes after the trim and starts
//! from the oldest entry kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamPendingReply, StreamRangeReply,
    StreamReadReply,
};
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Script,
};
use tokio::time::Instant;

use crate::{
    AUTO_TRIM_INTERVAL, Delivery, Headers, MAX_BLOCK, NameKind, Queue, QueueError, QueueOptions,
    dead_letter_headers, dead_letter_stream, parse_message_ids, validate_name,
    validate_stream_and_group, validate_stream_name,
};

const PAYLOAD_FIELD: &str = "payload";
const HEADER_FIELD_PREFIX: &str = "h:";

/// Connecting must fail fast at start-up rather than hang a boot sequence.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Replies to non-blocking commands. Generous: an XAUTOCLAIM over a long pending list takes
/// a while, and a timeout here leaves the outcome unknown.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than its BLOCK a blocking read may take before we give up on the connection.
const BLOCK_REPLY_GRACE: Duration = Duration::from_secs(2);
/// Pauses before retrying a command whose connection dropped; the connection manager is
/// reconnecting meanwhile. Three tries cover a Redis restart or a killed client.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(400),
];
/// Most entries one XAUTOCLAIM may claim; Redis rejects huge counts, and the cursor loop
/// fetches the rest.
const MAX_CLAIM_BATCH: usize = 1000;
/// Idle blocking connections kept for reuse; more are opened when more consumers block at once.
const MAX_IDLE_BLOCKING_CONNECTIONS: usize = 8;
/// Most entries one run of the trim script removes. The script blocks Redis while it runs
/// (and reads the entries it removes), so a long stream is trimmed in several short runs.
const TRIM_BATCH: u64 = 1000;
/// The trim script; see the module docs.
const TRIM_SCRIPT: &str = include_str!("trim.lua");

/// A [`Queue`] over Redis Streams.
///
/// Non-blocking commands share one multiplexed connection that reconnects by itself. A
/// blocking XREADGROUP would hold up every command queued behind it on that connection, so
/// blocking reads each take a connection of their own from a small pool.
///
/// Commands are retried when their connection dropped. For `publish` that means a message
/// may, rarely, be stored twice (under two ids) if Redis appended it but the reply was lost:
/// delivery is at least once.
pub struct RedisQueue {
    client: redis::Client,
    manager: ConnectionManager,
    blocking_pool: Mutex<Vec<MultiplexedConnection>>,
    key_prefix: String,
    options: QueueOptions,
    trim_script: Script,
    /// Messages published or acked per stream since this queue last trimmed it. One entry per
    /// stream this process wrote to, which is a bounded set (streams are per service or node).
    writes_since_trim: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may hold a password.
        f.debug_struct("RedisQueue")
            .field("key_prefix", &self.key_prefix)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A pending message that XAUTOCLAIM just gave us, with its delivery count.
struct Claimed {
    entry: StreamId,
    delivery_count: u32,
}

impl RedisQueue {
    /// Connects to Redis at `url`; every key is `<key_prefix><stream>` (`bosun:` in production,
    /// a random prefix per test). Fails with [`QueueError::Connect`] if Redis cannot be reached.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)
            .map_err(|e| QueueError::Connect(format!("invalid redis url: {e}")))?;
        // One plain attempt first: the connection manager would retry with back-off for
        // seconds before reporting an unreachable server. The connection is kept as the
        // first blocking one.
        let first_blocking = client
            .get_multiplexed_async_connection_with_config(&blocking_connection_config())
            .await
            .map_err(|e| QueueError::Connect(e.to_string()))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(|e| QueueError::Connect(e.to_string()))?;
        Ok(Self {
            client,
            manager,
            blocking_pool: Mutex::new(vec![first_blocking]),
            key_prefix: key_prefix.to_owned(),
            options,
            trim_script: Script::new(TRIM_SCRIPT),
            writes_since_trim: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, stream: &str) -> String {
        format!("{}{stream}", self.key_prefix)
    }

    fn max_deliveries(&self) -> u32 {
        self.options.max_deliveries.max(1)
    }

    /// Runs `attempt` on the shared connection, again after a short pause when the connection
    /// dropped under it (the manager reconnects in the meantime).
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> RedisResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut retries = RETRY_DELAYS.iter();
        loop {
            match attempt(self.manager.clone()).await {
                Err(e) if e.is_connection_dropped() => match retries.next() {
                    Some(delay) => {
                        tracing::debug!(error = %e, "redis connection dropped, retrying");
                        tokio::time::sleep(*delay).await;
                    }
                    None => return Err(e),
                },
                result => return result,
            }
        }
    }

    /// Runs a command on the shared connection, retrying if the connection dropped.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.with_retries(
            |mut connection| async move { cmd.query_async::<T>(&mut connection).await },
        )
        .await
    }

    /// Runs a pipeline or transaction on the shared connection, retrying if the connection
    /// dropped.
    async fn run_pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> RedisResult<T> {
        self.with_retries(|mut connection| async move {
            pipeline.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// Runs the trim script once on `stream`: removes at most [`TRIM_BATCH`] entries.
    async fn trim_batch(&self, stream: &str) -> Result<u64, QueueError> {
        let key = self.key(stream);
        let key = &key;
        self.with_retries(|mut connection| async move {
            self.trim_script
                .key(key)
                .arg(self.options.max_retained)
                .arg(TRIM_BATCH)
                .invoke_async::<u64>(&mut connection)
                .await
        })
        .await
        .map_err(|e| backend_error(stream, None, "trimming", e))
    }

    /// Trims `stream` completely, in batches.
    async fn trim_stream(&self, stream: &str) -> Result<u64, QueueError> {
        self.writes_since_trim
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
        let mut removed = 0;
        loop {
            let batch = self.trim_batch(stream).await?;
            removed += batch;
            if batch < TRIM_BATCH {
                return Ok(removed);
            }
        }
    }

    /// Counts messages published or acked on `stream`, and trims it (one batch) once enough
    /// have been since last time. The write itself succeeded, so a failed trim is only
    /// logged: the next one catches up.
    async fn record_writes(&self, stream: &str, count: u64) {
        let due = {
            let mut writes = self
                .writes_since_trim
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let since_trim = writes.entry(stream.to_owned()).or_default();
            *since_trim = since_trim.saturating_add(count);
            let due = *since_trim >= AUTO_TRIM_INTERVAL;
            if due {
                *since_trim = 0;
            }
            due
        };
        if due && let Err(e) = self.trim_batch(stream).await {
            tracing::warn!(stream, error = %e, "trimming the stream failed");
        }
    }

    async fn take_blocking_connection(&self) -> RedisResult<MultiplexedConnection> {
        let pooled = self
            .blocking_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(connection) => Ok(connection),
            None => {
                self.client
                    .get_multiplexed_async_connection_with_config(&blocking_connection_config())
                    .await
            }
        }
    }

    fn return_blocking_connection(&self, connection: MultiplexedConnection) {
        let mut pool = self
            .blocking_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_IDLE_BLOCKING_CONNECTIONS {
            pool.push(connection);
        }
    }

    /// Claims messages idle longer than the visibility timeout, up to `max`, walking the
    /// whole pending list with the XAUTOCLAIM cursor. Messages out of deliveries are
    /// dead-lettered on the way and not returned.
    async fn claim_expired(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let key = self.key(stream);
        let min_idle_ms =
            u64::try_from(self.options.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_owned();
        let mut deliveries = Vec::new();
        while deliveries.len() < max {
            let reply: StreamAutoClaimReply = self
                .run(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&key)
                        .arg(group)
                        .arg(consumer)
                        .arg(min_idle_ms)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg((max - deliveries.len()).min(MAX_CLAIM_BATCH)),
                )
                .await
                .map_err(|e| backend_error(stream, Some(group), "claiming expired messages", e))?;
            for claimed in self.delivery_counts(stream, group, reply.claimed).await? {
                if claimed.delivery_count > self.max_deliveries() {
                    self.dead_letter(stream, group, claimed).await?;
                } else {
                    deliveries.push(decode_entry(stream, claimed.entry, claimed.delivery_count));
                }
            }
            // "0-0" means the scan of the pending list wrapped around.
            if reply.next_stream_id == "0-0" {
                break;
            }
            cursor = reply.next_stream_id;
        }
        Ok(deliveries)
    }

    /// Looks up how often each claimed entry has been delivered (XAUTOCLAIM does not say).
    /// Entries no longer pending at all (acked meanwhile) are dropped.
    async fn delivery_counts(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<StreamId>,
    ) -> Result<Vec<Claimed>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(stream);
        let mut pipeline = redis::pipe();
        for entry in &entries {
            pipeline
                .cmd("XPENDING")
                .arg(&key)
                .arg(group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let replies: Vec<StreamPendingCountReply> = self
            .run_pipeline(&pipeline)
            .await
            .map_err(|e| backend_error(stream, Some(group), "reading delivery counts", e))?;
        Ok(entries
            .into_iter()
            .zip(replies)
            .filter_map(|(entry, reply)| {
                let pending = reply.ids.into_iter().find(|p| p.id == entry.id)?;
                Some(Claimed {
                    entry,
                    delivery_count: u32::try_from(pending.times_delivered).unwrap_or(u32::MAX),
                })
            })
            .collect())
    }

    /// Moves a message to `<stream>:dead` and acks it, in one transaction so it is never in
    /// both or neither.
    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        claimed: Claimed,
    ) -> Result<(), QueueError> {
        let original_id = claimed.entry.id.clone();
        // The claim that brought us here counted as a delivery that will never happen.
        let deliveries = claimed.delivery_count.saturating_sub(1);
        let decoded = decode_entry(stream, claimed.entry, deliveries);
        let headers = dead_letter_headers(&decoded.headers, &original_id, group, deliveries);
        let mut transaction = redis::pipe();
        transaction.atomic();
        transaction.add_command(xadd(
            &self.key(&dead_letter_stream(stream)),
            &decoded.payload,
            &headers,
        ));
        transaction
            .cmd("XACK")
            .arg(self.key(stream))
            .arg(group)
            .arg(&original_id)
            .ignore();
        self.run_pipeline::<()>(&transaction).await.map_err(|e| {
            backend_error(stream, Some(group), "moving a message to dead letters", e)
        })?;
        // One message added to the dead-letter stream, one acked in the original.
        self.record_writes(&dead_letter_stream(stream), 1).await;
        self.record_writes(stream, 1).await;
        tracing::warn!(
            stream,
            group,
            message_id = %original_id,
            deliveries,
            "message moved to the dead-letter stream after too many deliveries"
        );
        Ok(())
    }

    /// Reads up to `count` new messages, waiting up to `wait` for some.
    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        // BLOCK 0 would mean forever, so a wait under a millisecond is no wait at all.
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS").arg(self.key(stream)).arg(">");
        let reply: Option<StreamReadReply> = if block_ms == 0 {
            self.run(&cmd).await
        } else {
            self.run_blocking(&cmd, wait).await
        }
        .map_err(|e| backend_error(stream, Some(group), "reading new messages", e))?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| decode_entry(stream, entry, 1))
            .collect())
    }

    /// Runs a blocking command on a connection of its own. A connection found dead (killed,
    /// Redis restarted) is replaced once; if the reply is lost, messages it delivered stay
    /// pending and are redelivered after the visibility timeout.
    async fn run_blocking<T: FromRedisValue>(&self, cmd: &Cmd, wait: Duration) -> RedisResult<T> {
        let mut retried = false;
        loop {
            let mut connection = self.take_blocking_connection().await?;
            match tokio::time::timeout(
                wait + BLOCK_REPLY_GRACE,
                cmd.query_async::<T>(&mut connection),
            )
            .await
            {
                Ok(Ok(value)) => {
                    self.return_blocking_connection(connection);
                    return Ok(value);
                }
                Ok(Err(e)) if e.is_connection_dropped() && !retried => {
                    tracing::debug!(error = %e, "redis blocking connection dropped, reconnecting");
                    retried = true;
                }
                Ok(Err(e)) => {
                    // A server error leaves the connection fine; anything else, do not reuse it.
                    if e.code().is_some() {
                        self.return_blocking_connection(connection);
                    }
                    return Err(e);
                }
                Err(_elapsed) => {
                    return Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no reply to a blocking read in time",
                    )));
                }
            }
        }
    }
}

fn blocking_connection_config() -> AsyncConnectionConfig {
    // No response timeout: a blocking read is meant to wait, and `run_blocking` bounds it.
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
}

fn xadd(key: &str, payload: &[u8], headers: &Headers) -> Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("*").arg(PAYLOAD_FIELD).arg(payload);
    for (name, value) in headers {
        cmd.arg(format!("{HEADER_FIELD_PREFIX}{name}")).arg(value);
    }
    cmd
}

/// Turns a stream entry back into a delivery. Fields we did not write are ignored; values
/// that are not UTF-8 (only possible if something else wrote the entry) are decoded lossily
/// rather than blocking the stream with a message no consumer can take.
fn decode_entry(stream: &str, entry: StreamId, delivery_count: u32) -> Delivery {
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    for (field, value) in entry.map {
        let bytes = match redis::from_redis_value::<Vec<u8>>(value) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(
                    stream,
                    message_id = %entry.id,
                    field,
                    error = %e,
                    "ignoring an unreadable stream field"
                );
                continue;
            }
        };
        if field == PAYLOAD_FIELD {
            payload = Bytes::from(bytes);
        } else if let Some(name) = field.strip_prefix(HEADER_FIELD_PREFIX) {
            let value = String::from_utf8(bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    stream,
                    message_id = %entry.id,
                    header = name,
                    "header value is not utf-8"
                );
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            });
            headers.insert(name.to_owned(), value);
        }
    }
    Delivery {
        stream: stream.to_owned(),
        id: entry.id,
        payload,
        headers,
        delivery_count,
    }
}

fn backend_error(
    stream: &str,
    group: Option<&str>,
    operation: &'static str,
    error: RedisError,
) -> QueueError {
    match group {
        Some(group) if error.code() == Some("NOGROUP") => QueueError::GroupNotFound {
            stream: stream.to_owned(),
            group: group.to_owned(),
        },
        _ => QueueError::Backend {
            stream: stream.to_owned(),
            operation,
            message: error.to_string(),
        },
    }
}

#[async_trait::async_trait]
impl Queue for RedisQueue {
    async fn publish(
        &self,
        stream: &str,
        payload: &[u8],
        headers: &Headers,
    ) -> Result<String, QueueError> {
        validate_stream_name(stream)?;
        let id = self
            .run(&xadd(&self.key(stream), payload, headers))
            .await
            .map_err(|e| backend_error(stream, None, "publishing", e))?;
        self.record_writes(stream, 1).await;
        Ok(id)
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), QueueError> {
        validate_stream_and_group(stream, group)?;
        let result: RedisResult<()> = self
            .run(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(self.key(stream))
                    .arg(group)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match result {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(backend_error(
                stream,
                Some(group),
                "creating the consumer group",
                e,
            )),
            // BUSYGROUP: the group exists, which is all we wanted.
            _ => Ok(()),
        }
    }

    async fn consume(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        validate_stream_and_group(stream, group)?;
        validate_name(NameKind::Consumer, consumer)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + block.min(MAX_BLOCK);
        // XREADGROUP only wakes for new messages, so block in slices and look for expired
        // ones in between: a message whose consumer died is picked up within a slice.
        let slice = (self.options.visibility_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            let mut deliveries = self.claim_expired(stream, group, consumer, max).await?;
            let room = max - deliveries.len();
            if room > 0 {
                let wait = if deliveries.is_empty() {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(slice)
                } else {
                    Duration::ZERO
                };
                deliveries.extend(self.read_new(stream, group, consumer, room, wait).await?);
            }
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), QueueError> {
        validate_stream_and_group(stream, group)?;
        parse_message_ids(stream, ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        // XACK answers 0, not an error, for unknown ids and for a missing key or group.
        let acked = self
            .run::<u64>(redis::cmd("XACK").arg(self.key(stream)).arg(group).arg(ids))
            .await
            .map_err(|e| backend_error(stream, Some(group), "acking", e))?;
        self.record_writes(stream, acked).await;
        Ok(())
    }

    async fn pending(&self, stream: &str, group: &str) -> Result<u64, QueueError> {
        validate_stream_and_group(stream, group)?;
        let reply: StreamPendingReply = self
            .run(redis::cmd("XPENDING").arg(self.key(stream)).arg(group))
            .await
            .map_err(|e| backend_error(stream, Some(group), "counting pending messages", e))?;
        Ok(u64::try_from(reply.count()).unwrap_or(u64::MAX))
    }

    async fn dead_letters(&self, stream: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        validate_stream_name(stream)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let dead_name = dead_letter_stream(stream);
        let reply: StreamRangeReply = self
            .run(
                redis::cmd("XRANGE")
                    .arg(self.key(&dead_name))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max),
            )
            .await
            .map_err(|e| backend_error(stream, None, "reading dead letters", e))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| decode_entry(&dead_name, entry, 0))
            .collect())
    }

    async fn trim(&self, stream: &str) -> Result<u64, QueueError> {
        validate_stream_name(stream)?;
        let removed = self.trim_stream(stream).await?;
        Ok(removed + self.trim_stream(&dead_letter_stream(stream)).await?)
    }
}
