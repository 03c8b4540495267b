//! Queues for Bosun: one at-least-once [`Queue`] trait with consumer groups, visibility
//! timeouts and dead letters, over Redis Streams ([`RedisQueue`]) and in process ([`MemoryQueue`]).
//!
//! Every queue in Bosun (node inboxes, results, events) goes through this trait. Delivery is
//! at least once: a message that is not acked within the visibility timeout is handed to
//! another consumer, so handlers must be idempotent by [`Delivery::id`], which stays the same
//! across redeliveries. After [`QueueOptions::max_deliveries`] deliveries without an ack the
//! message moves to the dead-letter stream `<stream>:dead`.
//!
//! # Retention
//!
//! Streams are trimmed, but never of a message some consumer group still needs. A message
//! is *acknowledged* when every group of its stream has acked it: it lies at or before the
//! group's last-delivered id and is not in the group's pending list. A stream keeps its
//! newest [`QueueOptions::max_retained`] messages, and besides those every message from the
//! oldest one some group has not acknowledged onwards; only the oldest acknowledged
//! messages beyond that bound are removed, from the front of the stream. So a group that is
//! slow, or that was created and never reads, holds back trimming of its stream rather than
//! lose messages. A stream without groups (and so every dead-letter stream, which operators
//! read with [`Queue::dead_letters`]) simply keeps its newest `max_retained` messages.
//!
//! Queues trim by themselves: after every [`AUTO_TRIM_INTERVAL`] messages published to or
//! acked on a stream (counted per queue instance), that call also trims the stream, so
//! services never need to. [`Queue::trim`] trims on demand. A group created after a trim
//! starts from the oldest message still kept.
//!
//! Both implementations are checked by the same suite in [`contract`].

pub mod contract;
mod error;
mod memory_queue;
mod redis_queue;

use std::time::Duration;

use bytes::Bytes;

pub use error::{NameKind, QueueError};
pub use memory_queue::MemoryQueue;
pub use redis_queue::RedisQueue;

/// Message headers. Carries the W3C `traceparent` / `tracestate` of the publisher, so a
/// consumer can continue its trace, and anything else a sender wants to say beside the payload.
pub type Headers = std::collections::BTreeMap<String, String>;

/// Suffix of the dead-letter stream: messages of `inbox:n1` that were never acked end up in
/// `inbox:n1:dead`.
pub const DEAD_LETTER_SUFFIX: &str = ":dead";
/// Dead-letter header: the id the message had in its original stream.
pub const DEAD_LETTER_ORIGINAL_ID_HEADER: &str = "bosun-dead-letter-original-id";
/// Dead-letter header: the consumer group that failed to ack the message.
pub const DEAD_LETTER_GROUP_HEADER: &str = "bosun-dead-letter-group";
/// Dead-letter header: how many times the message was delivered without an ack.
pub const DEAD_LETTER_DELIVERIES_HEADER: &str = "bosun-dead-letter-deliveries";

/// The longest a single [`Queue::consume`] call waits for messages, whatever `block` asks for.
/// Consumers loop anyway; a bounded wait lets them notice shutdown and keeps a caller's
/// `Duration::MAX` from overflowing a deadline.
pub const MAX_BLOCK: Duration = Duration::from_secs(30);

/// A queue trims a stream by itself (see [`Queue::trim`]) once this many messages were
/// published to it or acked on it since its last trim, counted per queue instance. A stream
/// so holds at most about this many more messages than [`QueueOptions::max_retained`] plus
/// the ones not yet acknowledged.
pub const AUTO_TRIM_INTERVAL: u64 = 100;

/// The longest a stream, group or consumer name may be.
pub const MAX_NAME_LEN: usize = 200;

/// One message handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The stream the message was read from, without any key prefix.
    pub stream: String,
    /// The message id, stable across redeliveries: handlers deduplicate on it.
    pub id: String,
    /// The message body, exactly as published.
    pub payload: Bytes,
    /// The headers, exactly as published (plus the dead-letter headers in a dead letter).
    pub headers: Headers,
    /// 1 on first delivery, 2 on the first redelivery, and so on. 0 in messages returned by
    /// [`Queue::dead_letters`], because reading a dead letter is not a delivery; the number
    /// of failed deliveries is in the [`DEAD_LETTER_DELIVERIES_HEADER`] header.
    pub delivery_count: u32,
}

/// How a queue redelivers and gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// Unacked messages become redeliverable to other consumers after this.
    pub visibility_timeout: Duration,
    /// After this many deliveries without ack the message moves to the dead-letter stream
    /// `<stream>:dead`.
    pub max_deliveries: u32,
    /// How many messages a stream (dead-letter streams included) keeps once every consumer
    /// group has acknowledged them: trimming removes the oldest acknowledged messages beyond
    /// this, and never a message some group has not acknowledged. See the crate docs,
    /// "Retention". 0 keeps only what some group still needs.
    ///
    /// A count rather than an age, because the point is to bound Redis memory, and only a
    /// count does that through a burst; it is also exact and cheap (`XTRIM MINID` from the
    /// front). Ids are millisecond timestamps, so an age limit could be added as a further
    /// bound on the same trim.
    pub max_retained: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            // Enough recent history for operators and for a group added later, while a
            // stream of ~1 KiB messages stays around 10 MiB; per-node inboxes multiply this by
            // the size of the fleet, which is why it is not larger.
            max_retained: 10_000,
        }
    }
}

/// An at-least-once queue of named streams, read through consumer groups.
///
/// Each group sees every message of its stream; within a group each message goes to one
/// consumer at a time. Stream, group and consumer names are checked with the rules of
/// [`validate_stream_name`] and rejected with [`QueueError::InvalidName`].
#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Appends a message; returns its id.
    async fn publish(
        &self,
        stream: &str,
        payload: &[u8],
        headers: &Headers,
    ) -> Result<String, QueueError>;

    /// Creates the consumer group if missing (idempotent), starting from the beginning of the
    /// stream, so nothing published before the group existed and still kept is lost (a
    /// stream without groups keeps its newest [`QueueOptions::max_retained`] messages).
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), QueueError>;

    /// Returns up to `max` messages for this consumer: first messages whose visibility timeout
    /// expired while pending at another (or this) consumer (claimed to this consumer,
    /// delivery_count incremented), then new ones; waits up to `block` (at most [`MAX_BLOCK`])
    /// when none, and a message whose visibility timeout expires during the wait is returned.
    /// Messages that would exceed max_deliveries are moved to `<stream>:dead` (with headers
    /// recording original id, group, deliveries) and acked instead of returned.
    ///
    /// Fails with [`QueueError::GroupNotFound`] if [`Queue::ensure_group`] was never called.
    async fn consume(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Acknowledges; acking an unknown or already-acked id, or acking in a group that does
    /// not exist, is not an error. An id that is not of the form `<ms>-<seq>` is
    /// [`QueueError::InvalidId`].
    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), QueueError>;

    /// Number of messages delivered but not yet acked in the group (for metrics and tests).
    async fn pending(&self, stream: &str, group: &str) -> Result<u64, QueueError>;

    /// Reads messages from the dead-letter stream of `stream` (oldest first, up to `max`), for
    /// operators and tests.
    async fn dead_letters(&self, stream: &str, max: usize) -> Result<Vec<Delivery>, QueueError>;

    /// Trims `stream` and its dead-letter stream now, by the rules of the crate docs
    /// ("Retention"): removes the oldest messages beyond [`QueueOptions::max_retained`] that
    /// every consumer group has acknowledged, and never one that some group has not. Returns
    /// how many messages were removed from both streams together; an unknown stream is 0.
    ///
    /// Queues also trim by themselves every [`AUTO_TRIM_INTERVAL`] messages published or
    /// acked on a stream, so services need not call this; it is for operators and tests.
    async fn trim(&self, stream: &str) -> Result<u64, QueueError>;
}

/// Checks a stream name: non-empty, at most [`MAX_NAME_LEN`] characters, only
/// `[A-Za-z0-9:_.-]`. The same rules keep Redis keys readable and free of glob characters.
pub fn validate_stream_name(name: &str) -> Result<(), QueueError> {
    validate_name(NameKind::Stream, name)
}

pub(crate) fn validate_name(kind: NameKind, name: &str) -> Result<(), QueueError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 200 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-'))
    {
        Some("may contain only A-Z, a-z, 0-9, ':', '_', '.' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(QueueError::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks the stream and group names every group operation takes.
pub(crate) fn validate_stream_and_group(stream: &str, group: &str) -> Result<(), QueueError> {
    validate_name(NameKind::Stream, stream)?;
    validate_name(NameKind::Group, group)
}

/// Parses a message id of the Redis form `<milliseconds>-<sequence>`. Both implementations
/// use that form, so ids look the same whichever backend produced them.
pub(crate) fn parse_message_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(ms) || !all_digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Checks every id of an ack before touching the backend, so a bad id fails the same way on
/// both implementations.
pub(crate) fn parse_message_ids(
    stream: &str,
    ids: &[String],
) -> Result<Vec<(u64, u64)>, QueueError> {
    ids.iter()
        .map(|id| {
            parse_message_id(id).ok_or_else(|| QueueError::InvalidId {
                stream: stream.to_owned(),
                id: id.clone(),
            })
        })
        .collect()
}

/// The name of the dead-letter stream of `stream`.
pub(crate) fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}{DEAD_LETTER_SUFFIX}")
}

/// The headers a dead letter carries: the original ones plus where it came from.
pub(crate) fn dead_letter_headers(
    original: &Headers,
    original_id: &str,
    group: &str,
    deliveries: u32,
) -> Headers {
    let mut headers = original.clone();
    headers.insert(
        DEAD_LETTER_ORIGINAL_ID_HEADER.to_owned(),
        original_id.to_owned(),
    );
    headers.insert(DEAD_LETTER_GROUP_HEADER.to_owned(), group.to_owned());
    headers.insert(
        DEAD_LETTER_DELIVERIES_HEADER.to_owned(),
        deliveries.to_string(),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_documented_rules() {
        for good in [
            "inbox:node-1",
            "a",
            "results.v1_x",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert!(
                validate_stream_name(good).is_ok(),
                "{good:?} should be valid"
            );
        }
        for bad in [
            "",
            "has space",
            "a/b",
            "glob*",
            "tab\t",
            "ünï",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(
                matches!(
                    validate_stream_name(bad),
                    Err(QueueError::InvalidName {
                        kind: NameKind::Stream,
                        ..
                    })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn invalid_name_message_names_the_stream() {
        let err = validate_stream_name("a b").expect_err("a space is not allowed");
        assert_eq!(
            err.to_string(),
            "invalid stream name \"a b\": may contain only A-Z, a-z, 0-9, ':', '_', '.' and '-'"
        );
    }

    #[test]
    fn message_ids_parse_only_in_redis_form() {
        assert_eq!(
            parse_message_id("1700000000000-3"),
            Some((1_700_000_000_000, 3))
        );
        assert_eq!(parse_message_id("0-0"), Some((0, 0)));
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert_eq!(parse_message_id(bad), None, "{bad:?} should not parse");
        }
    }

    #[test]
    fn default_options_match_the_design() {
        let options = QueueOptions::default();
        assert_eq!(options.visibility_timeout, Duration::from_secs(30));
        assert_eq!(options.max_deliveries, 5);
        assert_eq!(options.max_retained, 10_000);
    }
}
