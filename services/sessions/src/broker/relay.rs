//! Between replicas: a client whose `Connect` landed on a replica that is not the session's
//! hub is relayed through two Redis streams.
//!
//! Keys (all under the deployment's prefix):
//! - `sessions:<id>:c2a` — client → hub. Records `k=a` (attach), `k=f` (a frame), `k=d`
//!   (detach), each with the client's attach epoch `e`.
//! - `sessions:<id>:a2c` — hub → client. Records `k=f` (a frame for epoch `e`), `k=r` (epoch
//!   `e` was replaced by a client attached at the hub itself), `k=c` (the session is over; a
//!   `Closed` frame, for every epoch).
//! - `sessions:<id>:epoch` — `INCR`ed by each remote attach: the newest attachment wins, and
//!   readers and writers of older epochs are ignored (a record of a newer epoch tells an old
//!   client it was replaced).
//! - `sessions:<id>:hub` — which hub (replica + generation) owns the session; a new hub
//!   claims it, an old one that sees another claim steps down.
//!
//! Streams are capped (`MAXLEN ~`) at a few windows and expire unless refreshed; when the
//! session ends the hub writes `k=c` and lets the keys expire shortly after (so a reader
//! still gets the `Closed`). Blocking reads (`XREAD BLOCK`) use their own connection, never
//! the shared multiplexed one.

use std::collections::HashMap;
use std::time::Duration;

use bosun_core::ApiError;
use bosun_proto::sessions::v1::{Frame, frame};
use prost::Message as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{End, Shared, closed_frame, ended_reason, ready_frame, received, shutting_down};
use crate::store::SessionRecord;

/// How a gateway replica reaches Redis for cross-replica relaying.
#[derive(Clone)]
pub struct RelayRedis {
    pub url: String,
    /// Every key starts with it (`bosun:` in production).
    pub prefix: String,
}

impl std::fmt::Debug for RelayRedis {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        formatter
            .debug_struct("RelayRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Entries kept per stream: a few windows, so a reader as far behind as the ends' windows
/// allow never loses an entry to trimming.
const STREAM_MAXLEN: usize = 4 * bosun_session::WINDOW_PACKETS;
/// Keys of a live session live this long unless refreshed (every touch interval).
const KEY_TTL: Duration = Duration::from_secs(600);
/// After the end, long enough for a remote reader to see the `Closed` record.
const CLOSED_LINGER: Duration = Duration::from_secs(30);
/// One blocking read waits at most this long, and returns at most this many records.
const READ_BLOCK: Duration = Duration::from_secs(1);
const READ_COUNT: usize = 64;
/// Records read ahead of the consumer.
const READ_CAPACITY: usize = 32;
/// Pause after a failed read before reconnecting.
const READ_RETRY: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Extends the hub claim `KEYS[1]` while it is `ARGV[1]` (or missing); 0 when another hub
/// holds it.
const REFRESH_CLAIM_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// What one stream record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordKind {
    Attach,
    Frame,
    Detach,
    Replaced,
    Closed,
}

impl RecordKind {
    fn code(self) -> &'static str {
        match self {
            Self::Attach => "a",
            Self::Frame => "f",
            Self::Detach => "d",
            Self::Replaced => "r",
            Self::Closed => "c",
        }
    }

    fn parse(code: &[u8]) -> Option<Self> {
        Some(match code {
            b"a" => Self::Attach,
            b"f" => Self::Frame,
            b"d" => Self::Detach,
            b"r" => Self::Replaced,
            b"c" => Self::Closed,
            _ => return None,
        })
    }
}

/// One record read from a stream.
#[derive(Debug)]
pub(super) struct Record {
    pub id: StreamId,
    pub epoch: u64,
    pub kind: RecordKind,
    pub frame: Option<Frame>,
}

/// A Redis stream entry id, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct StreamId(u64, u64);

impl StreamId {
    fn parse(text: &str) -> Option<Self> {
        let (millis, sequence) = text.split_once('-')?;
        Some(Self(millis.parse().ok()?, sequence.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}-{}", self.0, self.1)
    }
}

fn relay_error(what: &str, error: &redis::RedisError) -> ApiError {
    tracing::warn!(%error, "session relay: {what} failed");
    ApiError::Unavailable(format!("session relay: {what}: {error}"))
}

/// The Redis side of a replica's broker.
pub(super) struct Relay {
    client: redis::Client,
    writer: ConnectionManager,
    prefix: String,
    refresh_claim: redis::Script,
}

/// The keys of one session.
pub(super) struct Keys {
    pub c2a: String,
    pub a2c: String,
    pub epoch: String,
    pub hub: String,
}

impl Relay {
    pub(super) async fn connect(redis: RelayRedis) -> Result<Self, ApiError> {
        let client = redis::Client::open(redis.url.as_str()).map_err(|error| {
            ApiError::Unavailable(format!("session relay: invalid redis url: {error}"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let writer = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|error| relay_error("connect to redis", &error))?;
        Ok(Self {
            client,
            writer,
            prefix: redis.prefix,
            refresh_claim: redis::Script::new(REFRESH_CLAIM_SCRIPT),
        })
    }

    pub(super) fn keys(&self, session_id: &str) -> Keys {
        let base = format!("{}sessions:{session_id}:", self.prefix);
        Keys {
            c2a: format!("{base}c2a"),
            a2c: format!("{base}a2c"),
            epoch: format!("{base}epoch"),
            hub: format!("{base}hub"),
        }
    }

    /// Appends one record (capped) and keeps the stream alive.
    pub(super) async fn append(
        &self,
        key: &str,
        epoch: u64,
        kind: RecordKind,
        frame: Option<&Frame>,
    ) -> Result<(), ApiError> {
        let mut command = redis::cmd("XADD");
        command
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("e")
            .arg(epoch)
            .arg("k")
            .arg(kind.code());
        if let Some(frame) = frame {
            command.arg("f").arg(frame.encode_to_vec());
        }
        let mut writer = self.writer.clone();
        let _id: Value = command
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("append to a session stream", &error))?;
        Ok(())
    }

    /// The id of the newest entry of `key` (0-0 when empty or missing).
    pub(super) async fn last_id(&self, key: &str) -> Result<StreamId, ApiError> {
        let mut writer = self.writer.clone();
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("read a session stream's end", &error))?;
        Ok(reply
            .ids
            .first()
            .and_then(|entry| StreamId::parse(&entry.id))
            .unwrap_or_default())
    }

    /// A new attach epoch for a remote client of the session.
    pub(super) async fn next_epoch(&self, keys: &Keys) -> Result<u64, ApiError> {
        let mut writer = self.writer.clone();
        let (epoch, _): (u64, Value) = redis::pipe()
            .atomic()
            .incr(&keys.epoch, 1)
            .pexpire(&keys.epoch, millis_i64(KEY_TTL))
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("allocate an attach epoch", &error))?;
        Ok(epoch)
    }

    /// Extends the streams' lives (an active session's keys never expire).
    pub(super) async fn keep_alive(&self, keys: &Keys) -> Result<(), ApiError> {
        self.expire_all(keys, KEY_TTL).await
    }

    /// The session ended: its keys go soon (readers still get the `Closed` record).
    pub(super) async fn linger(&self, keys: &Keys) -> Result<(), ApiError> {
        self.expire_all(keys, CLOSED_LINGER).await?;
        let mut writer = self.writer.clone();
        let _: Value = redis::cmd("PEXPIRE")
            .arg(&keys.hub)
            .arg(millis(CLOSED_LINGER))
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("expire a session's claim", &error))?;
        Ok(())
    }

    async fn expire_all(&self, keys: &Keys, ttl: Duration) -> Result<(), ApiError> {
        let mut writer = self.writer.clone();
        let ttl = millis_i64(ttl);
        let _: Value = redis::pipe()
            .pexpire(&keys.c2a, ttl)
            .pexpire(&keys.a2c, ttl)
            .pexpire(&keys.epoch, ttl)
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("set a session's key expiry", &error))?;
        Ok(())
    }

    /// Claims the session for the hub `claim`, replacing whoever held it.
    pub(super) async fn claim(
        &self,
        keys: &Keys,
        claim: &str,
        ttl: Duration,
    ) -> Result<(), ApiError> {
        let mut writer = self.writer.clone();
        let _: Value = redis::cmd("SET")
            .arg(&keys.hub)
            .arg(claim)
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("claim a session", &error))?;
        Ok(())
    }

    /// Extends the claim; false when another hub holds the session now.
    pub(super) async fn refresh_claim(
        &self,
        keys: &Keys,
        claim: &str,
        ttl: Duration,
    ) -> Result<bool, ApiError> {
        let mut writer = self.writer.clone();
        let held: i64 = self
            .refresh_claim
            .key(&keys.hub)
            .arg(claim)
            .arg(millis(ttl))
            .invoke_async(&mut writer)
            .await
            .map_err(|error| relay_error("refresh a session claim", &error))?;
        Ok(held == 1)
    }

    /// Whether `claim` still holds the session (a missing claim counts as held).
    pub(super) async fn holds_claim(&self, keys: &Keys, claim: &str) -> Result<bool, ApiError> {
        let mut writer = self.writer.clone();
        let holder: Option<String> = redis::cmd("GET")
            .arg(&keys.hub)
            .query_async(&mut writer)
            .await
            .map_err(|error| relay_error("read a session claim", &error))?;
        Ok(holder.is_none_or(|holder| holder == claim))
    }

    /// A connection of its own for blocking reads.
    async fn dedicated(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(READ_BLOCK + RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Reads `key` after `after` into a bounded channel until the receiver goes (the task is
    /// aborted or its channel dropped). Waits when the channel is full, so a slow consumer
    /// leaves records in the stream instead of in memory.
    pub(super) fn spawn_reader(
        shared: &std::sync::Arc<Shared>,
        key: String,
        after: StreamId,
    ) -> (JoinHandle<()>, mpsc::Receiver<Record>) {
        let (sender, receiver) = mpsc::channel(READ_CAPACITY);
        let reader_shared = shared.clone();
        let handle = shared.tasks.spawn(async move {
            if let Some(relay) = &reader_shared.relay {
                relay.read_loop(&key, after, &sender).await;
            }
        });
        (handle, receiver)
    }

    async fn read_loop(&self, key: &str, mut after: StreamId, sender: &mpsc::Sender<Record>) {
        let mut connection: Option<MultiplexedConnection> = None;
        while !sender.is_closed() {
            let reading = match connection.as_mut() {
                Some(reading) => reading,
                None => match self.dedicated().await {
                    Ok(opened) => connection.insert(opened),
                    Err(error) => {
                        tracing::warn!(%error, "session relay: connect a reader failed");
                        tokio::time::sleep(READ_RETRY).await;
                        continue;
                    }
                },
            };
            let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(millis(READ_BLOCK))
                .arg("STREAMS")
                .arg(key)
                .arg(after.to_string())
                .query_async(reading)
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => {
                    tracing::warn!(%error, "session relay: read failed");
                    connection = None;
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
            };
            let entries = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|stream| stream.ids);
            for entry in entries {
                let Some(id) = StreamId::parse(&entry.id) else {
                    continue;
                };
                after = id;
                match decode_record(id, &entry.map) {
                    Some(record) => {
                        if sender.send(record).await.is_err() {
                            return;
                        }
                    }
                    None => tracing::warn!(%id, "session relay: malformed record skipped"),
                }
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn millis_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

fn field<'a>(map: &'a HashMap<String, Value>, name: &str) -> Option<&'a [u8]> {
    match map.get(name)? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn decode_record(id: StreamId, map: &HashMap<String, Value>) -> Option<Record> {
    let epoch = std::str::from_utf8(field(map, "e")?).ok()?.parse().ok()?;
    let kind = RecordKind::parse(field(map, "k")?)?;
    let frame = match field(map, "f") {
        Some(bytes) => Some(Frame::decode(bytes).ok()?),
        None => None,
    };
    Some(Record {
        id,
        epoch,
        kind,
        frame,
    })
}

/// Whether a client frame is relayed (the rest are the broker's to send).
pub(super) fn is_relayed(frame: &Frame) -> bool {
    matches!(
        frame.kind,
        Some(frame::Kind::Packet(_) | frame::Kind::Ack(_) | frame::Kind::Resume(_))
    )
}

/// A client whose session's hub is (or will be) on another replica: `Ready`, an `attach`
/// record, then frames both ways through the streams until either side ends.
pub(super) async fn serve_remote_client(
    shared: &std::sync::Arc<Shared>,
    relay: &Relay,
    record: SessionRecord,
    end: End,
) {
    let End {
        mut inbound,
        outbound,
    } = end;
    let keys = relay.keys(&record.session_id);
    let opened = async {
        let epoch = relay.next_epoch(&keys).await?;
        // Read a2c from its end as of now: everything the hub writes for us comes later.
        let start = relay.last_id(&keys.a2c).await?;
        relay
            .append(&keys.c2a, epoch, RecordKind::Attach, None)
            .await?;
        relay.keep_alive(&keys).await?;
        Ok::<_, ApiError>((epoch, start))
    }
    .await;
    let (epoch, start) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _gone = outbound.send(Err(error.into())).await;
            return;
        }
    };
    if outbound.send(Ok(ready_frame(&record))).await.is_err() {
        let _detached = relay
            .append(&keys.c2a, epoch, RecordKind::Detach, None)
            .await;
        return;
    }
    tracing::info!(session_id = %record.session_id, epoch, "client attached through the relay");
    let (reader, mut records) = Relay::spawn_reader(shared, keys.a2c.clone(), start);
    let mut poll = tokio::time::interval(shared.config.hub_touch_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut ended_seen = false;
    let detach = loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => {
                let _gone = outbound.send(Err(shutting_down())).await;
                break true;
            }
            message = inbound.message() => match received(message) {
                Some(frame) if is_relayed(&frame) => {
                    if relay.append(&keys.c2a, epoch, RecordKind::Frame, Some(&frame)).await.is_err() {
                        let _gone = outbound
                            .send(Err(ApiError::Unavailable("session relay failed; reconnect".to_owned()).into()))
                            .await;
                        break true;
                    }
                }
                Some(_) => {}
                None => break true,
            },
            next = records.recv() => {
                let Some(next) = next else { break true };
                match next.kind {
                    RecordKind::Closed => {
                        if let Some(closed) = next.frame {
                            let _gone = outbound.send(Ok(closed)).await;
                        }
                        break false;
                    }
                    _ if next.epoch > epoch => {
                        let _gone = outbound
                            .send(Err(ApiError::Aborted {
                                message: "the session was connected again elsewhere".to_owned(),
                                reason: None,
                            }
                            .into()))
                            .await;
                        break false;
                    }
                    RecordKind::Replaced if next.epoch == epoch => {
                        let _gone = outbound
                            .send(Err(ApiError::Aborted {
                                message: "the session was connected again elsewhere".to_owned(),
                                reason: None,
                            }
                            .into()))
                            .await;
                        break false;
                    }
                    RecordKind::Frame if next.epoch == epoch => {
                        if let Some(frame) = next.frame
                            && outbound.send(Ok(frame)).await.is_err()
                        {
                            break true;
                        }
                    }
                    _ => {}
                }
            }
            _ = poll.tick() => {
                if let Err(error) = relay.keep_alive(&keys).await {
                    tracing::debug!(%error, "session relay: keep-alive failed");
                }
                // The hub tells us when the session ends; this covers a session whose hub
                // never came or died (the reaper ended it). A hub writes its `Closed` just
                // after ending the row, so it gets one more tick to do so.
                if let Ok(Some(now)) = shared.store.get(&record.session_id).await
                    && now.status.is_ended()
                {
                    if ended_seen {
                        let _gone = outbound
                            .send(Ok(closed_frame(
                                now.status,
                                &ended_reason(now.status, &now.details),
                            )))
                            .await;
                        break false;
                    }
                    ended_seen = true;
                }
            }
        }
    };
    reader.abort();
    if detach
        && let Err(error) = relay
            .append(&keys.c2a, epoch, RecordKind::Detach, None)
            .await
    {
        tracing::debug!(%error, "session relay: detach record not written");
    }
}
