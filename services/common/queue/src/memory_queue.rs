//! The in-process queue of the embedded all-in-one server, with the same semantics as the
//! Redis one: independent groups, visibility timeout, delivery counts and dead letters.
//!
//! Messages live only as long as the process. Streams are trimmed by the same rules as the
//! Redis ones (crate docs, "Retention"), under the one lock, so a trim never races a group
//! being created or a message being delivered.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    AUTO_TRIM_INTERVAL, Delivery, Headers, MAX_BLOCK, NameKind, Queue, QueueError, QueueOptions,
    dead_letter_headers, dead_letter_stream, parse_message_ids, validate_name,
    validate_stream_and_group, validate_stream_name,
};

/// `(milliseconds, sequence)`, ordered like the Redis stream ids it imitates.
type MessageId = (u64, u64);

fn format_id((ms, seq): MessageId) -> String {
    format!("{ms}-{seq}")
}

struct Entry {
    payload: Bytes,
    headers: Headers,
}

struct PendingEntry {
    consumer: String,
    delivered_at: Instant,
    delivery_count: u32,
}

#[derive(Default)]
struct Group {
    /// The last id handed out as new; (0, 0) is before every id we generate.
    last_delivered: MessageId,
    /// Delivered but not acked, by id.
    pending: BTreeMap<MessageId, PendingEntry>,
}

#[derive(Default)]
struct Stream {
    entries: BTreeMap<MessageId, Entry>,
    last_id: MessageId,
    groups: HashMap<String, Group>,
    /// Wakes blocked consumers when a message is appended. Streams are never removed, so a
    /// consumer may hold on to this across lock releases.
    notify: Arc<Notify>,
    /// Messages published or acked since the last trim; at [`AUTO_TRIM_INTERVAL`] the stream
    /// trims itself.
    writes_since_trim: u64,
}

impl Stream {
    /// Removes the oldest messages beyond `max_retained` that every group has acknowledged.
    /// Stops at the first one some group still needs: trimming only ever cuts a prefix, like
    /// `XTRIM MINID`, so both implementations keep the same messages.
    fn trim(&mut self, max_retained: u64) -> u64 {
        let groups: Vec<(MessageId, Option<MessageId>)> = self
            .groups
            .values()
            .map(|group| (group.last_delivered, group.pending.keys().next().copied()))
            .collect();
        let acknowledged_by_all = |id: &MessageId| {
            groups.iter().all(|(last_delivered, oldest_pending)| {
                id <= last_delivered && oldest_pending.is_none_or(|pending| *id < pending)
            })
        };
        let mut removed = 0;
        while u64::try_from(self.entries.len()).unwrap_or(u64::MAX) > max_retained {
            match self.entries.first_key_value() {
                Some((id, _)) if acknowledged_by_all(id) => {
                    self.entries.pop_first();
                    removed += 1;
                }
                _ => break,
            }
        }
        removed
    }

    /// Counts messages published or acked, and trims once enough have been since last time.
    fn record_writes(&mut self, count: u64, max_retained: u64) {
        self.writes_since_trim = self.writes_since_trim.saturating_add(count);
        if self.writes_since_trim >= AUTO_TRIM_INTERVAL {
            self.writes_since_trim = 0;
            self.trim(max_retained);
        }
    }
}

/// A [`Queue`] held in memory, for the embedded server and tests.
pub struct MemoryQueue {
    options: QueueOptions,
    streams: Mutex<HashMap<String, Stream>>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// An empty queue. `max_deliveries` below 1 acts as 1.
    pub fn new(options: QueueOptions) -> Self {
        Self {
            options,
            streams: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // Every critical section leaves the maps consistent before anything that could panic,
        // so a poisoned lock still guards usable state; keep serving rather than fail forever.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_deliveries(&self) -> u32 {
        self.options.max_deliveries.max(1)
    }

    /// One non-blocking pass of `consume`: claims expired messages, dead-letters those out of
    /// deliveries, then takes new ones. Also returns when the next pending message expires,
    /// so a blocked consumer can wake for it.
    fn consume_now(
        &self,
        streams: &mut HashMap<String, Stream>,
        stream_name: &str,
        group_name: &str,
        consumer: &str,
        max: usize,
        now: Instant,
    ) -> Result<(Vec<Delivery>, Option<Instant>), QueueError> {
        let group_not_found = || QueueError::GroupNotFound {
            stream: stream_name.to_owned(),
            group: group_name.to_owned(),
        };
        let stream = streams.get_mut(stream_name).ok_or_else(group_not_found)?;
        let group = stream
            .groups
            .get_mut(group_name)
            .ok_or_else(group_not_found)?;
        let visibility = self.options.visibility_timeout;
        let expired = |pending: &PendingEntry| {
            pending
                .delivered_at
                .checked_add(visibility)
                .is_some_and(|visible_at| visible_at <= now)
        };

        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        let expired_ids: Vec<MessageId> = group
            .pending
            .iter()
            .filter(|(_, pending)| expired(pending))
            .map(|(id, _)| *id)
            .collect();
        for id in expired_ids {
            if deliveries.len() >= max {
                break;
            }
            let Some(entry) = stream.entries.get(&id) else {
                // Trimming never removes a pending entry, but a pending id without an entry
                // could only be dropped, as Redis does for deleted entries.
                group.pending.remove(&id);
                continue;
            };
            let Some(pending) = group.pending.get_mut(&id) else {
                continue;
            };
            let next_count = pending.delivery_count.saturating_add(1);
            if next_count > self.max_deliveries() {
                dead.push((
                    id,
                    entry.payload.clone(),
                    dead_letter_headers(
                        &entry.headers,
                        &format_id(id),
                        group_name,
                        pending.delivery_count,
                    ),
                ));
                group.pending.remove(&id);
                continue;
            }
            pending.consumer = consumer.to_owned();
            pending.delivered_at = now;
            pending.delivery_count = next_count;
            deliveries.push(Delivery {
                stream: stream_name.to_owned(),
                id: format_id(id),
                payload: entry.payload.clone(),
                headers: entry.headers.clone(),
                delivery_count: next_count,
            });
        }

        let room = max - deliveries.len();
        let new: Vec<(MessageId, &Entry)> = stream
            .entries
            .range((Bound::Excluded(group.last_delivered), Bound::Unbounded))
            .take(room)
            .map(|(id, entry)| (*id, entry))
            .collect();
        for (id, entry) in new {
            group.last_delivered = id;
            group.pending.insert(
                id,
                PendingEntry {
                    consumer: consumer.to_owned(),
                    delivered_at: now,
                    delivery_count: 1,
                },
            );
            deliveries.push(Delivery {
                stream: stream_name.to_owned(),
                id: format_id(id),
                payload: entry.payload.clone(),
                headers: entry.headers.clone(),
                delivery_count: 1,
            });
        }

        let next_expiry = group
            .pending
            .values()
            .filter_map(|pending| pending.delivered_at.checked_add(visibility))
            .min();

        if !dead.is_empty() {
            // Dead-lettering acks, which counts towards trimming like any ack.
            stream.record_writes(
                u64::try_from(dead.len()).unwrap_or(u64::MAX),
                self.options.max_retained,
            );
            let dead_name = dead_letter_stream(stream_name);
            for (id, payload, headers) in dead {
                tracing::warn!(
                    stream = stream_name,
                    group = group_name,
                    message_id = %format_id(id),
                    "message moved to the dead-letter stream after too many deliveries"
                );
                append(
                    streams,
                    &dead_name,
                    payload,
                    headers,
                    self.options.max_retained,
                );
            }
        }
        Ok((deliveries, next_expiry))
    }
}

/// Appends to a stream, creating it if needed, with an id that grows like Redis's: the clock
/// in milliseconds, with a sequence number for ids in the same millisecond or if the clock
/// went backwards. Trims the stream every [`AUTO_TRIM_INTERVAL`] writes.
fn append(
    streams: &mut HashMap<String, Stream>,
    stream_name: &str,
    payload: Bytes,
    headers: Headers,
    max_retained: u64,
) -> String {
    let stream = streams.entry(stream_name.to_owned()).or_default();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let (last_ms, last_seq) = stream.last_id;
    let id = if now_ms > last_ms {
        (now_ms, 0)
    } else {
        match last_seq.checked_add(1) {
            Some(seq) => (last_ms, seq),
            None => (last_ms.saturating_add(1), 0),
        }
    };
    stream.last_id = id;
    stream.entries.insert(id, Entry { payload, headers });
    stream.notify.notify_waiters();
    stream.record_writes(1, max_retained);
    format_id(id)
}

#[async_trait::async_trait]
impl Queue for MemoryQueue {
    async fn publish(
        &self,
        stream: &str,
        payload: &[u8],
        headers: &Headers,
    ) -> Result<String, QueueError> {
        validate_stream_name(stream)?;
        let mut streams = self.lock();
        Ok(append(
            &mut streams,
            stream,
            Bytes::copy_from_slice(payload),
            headers.clone(),
            self.options.max_retained,
        ))
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), QueueError> {
        validate_stream_and_group(stream, group)?;
        let mut streams = self.lock();
        streams
            .entry(stream.to_owned())
            .or_default()
            .groups
            .entry(group.to_owned())
            .or_default();
        Ok(())
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
        let notify = self
            .lock()
            .get(stream)
            .map(|s| Arc::clone(&s.notify))
            .ok_or_else(|| QueueError::GroupNotFound {
                stream: stream.to_owned(),
                group: group.to_owned(),
            })?;
        loop {
            // Register for wake-ups before looking, so a publish between our look and our
            // wait is not missed; a spurious wake-up only costs another look.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let now = Instant::now();
            let (deliveries, next_expiry) = {
                let mut streams = self.lock();
                self.consume_now(&mut streams, stream, group, consumer, max, now)?
            };
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            let wake_at = next_expiry.map_or(deadline, |expiry| expiry.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), QueueError> {
        validate_stream_and_group(stream, group)?;
        let ids = parse_message_ids(stream, ids)?;
        let mut streams = self.lock();
        let Some(stream) = streams.get_mut(stream) else {
            return Ok(());
        };
        let Some(group) = stream.groups.get_mut(group) else {
            return Ok(());
        };
        let acked = ids
            .iter()
            .filter(|&id| group.pending.remove(id).is_some())
            .count();
        stream.record_writes(
            u64::try_from(acked).unwrap_or(u64::MAX),
            self.options.max_retained,
        );
        Ok(())
    }

    async fn pending(&self, stream: &str, group: &str) -> Result<u64, QueueError> {
        validate_stream_and_group(stream, group)?;
        let streams = self.lock();
        let group_state = streams
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .ok_or_else(|| QueueError::GroupNotFound {
                stream: stream.to_owned(),
                group: group.to_owned(),
            })?;
        Ok(u64::try_from(group_state.pending.len()).unwrap_or(u64::MAX))
    }

    async fn dead_letters(&self, stream: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        validate_stream_name(stream)?;
        let dead_name = dead_letter_stream(stream);
        let streams = self.lock();
        let Some(dead) = streams.get(&dead_name) else {
            return Ok(Vec::new());
        };
        Ok(dead
            .entries
            .iter()
            .take(max)
            .map(|(id, entry)| Delivery {
                stream: dead_name.clone(),
                id: format_id(*id),
                payload: entry.payload.clone(),
                headers: entry.headers.clone(),
                delivery_count: 0,
            })
            .collect())
    }

    async fn trim(&self, stream: &str) -> Result<u64, QueueError> {
        validate_stream_name(stream)?;
        let max_retained = self.options.max_retained;
        let mut streams = self.lock();
        let mut removed = 0;
        for name in [stream.to_owned(), dead_letter_stream(stream)] {
            if let Some(stream) = streams.get_mut(&name) {
                stream.writes_since_trim = 0;
                removed += stream.trim(max_retained);
            }
        }
        Ok(removed)
    }
}
