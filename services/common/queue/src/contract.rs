//! The contract every [`Queue`] implementation must meet, as async checks that panic on a
//! breach. `tests/contract.rs` runs each check against every implementation; a new backend
//! gets the same suite by calling them too.
//!
//! Each check takes a fresh, empty queue built with [`options`] (short visibility timeout so
//! redelivery tests stay under two seconds, three deliveries before dead-lettering, four
//! acknowledged messages retained per stream).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{
    AUTO_TRIM_INTERVAL, DEAD_LETTER_DELIVERIES_HEADER, DEAD_LETTER_GROUP_HEADER,
    DEAD_LETTER_ORIGINAL_ID_HEADER, Delivery, Headers, NameKind, Queue, QueueError, QueueOptions,
};

/// The options the queue under test must be built with.
pub fn options() -> QueueOptions {
    QueueOptions {
        visibility_timeout: VISIBILITY_TIMEOUT,
        max_deliveries: 3,
        max_retained: MAX_RETAINED,
    }
}

/// Small, so trimming shows with a handful of messages.
const MAX_RETAINED: u64 = 4;

// The checks that call `trim` and count what it removed write fewer than 50 messages to a
// stream, so a queue's own trimming never runs first and changes the count.
const _: () = assert!(
    AUTO_TRIM_INTERVAL >= 50,
    "the trim checks assume no automatic trim within 50 writes"
);

const VISIBILITY_TIMEOUT: Duration = Duration::from_millis(300);
/// Long enough to outlast one visibility timeout comfortably on a loaded machine.
const PAST_VISIBILITY: Duration = Duration::from_millis(450);
/// How long a consumer waiting for a redelivery blocks: several visibility timeouts, so a
/// pass means the queue woke it for the expiry, and a failure is not a slow machine.
const REDELIVERY_BLOCK: Duration = Duration::from_millis(1500);

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

async fn publish_n(queue: &dyn Queue, stream: &str, n: usize) -> Vec<String> {
    let mut published = Vec::with_capacity(n);
    for i in 0..n {
        let payload = format!("message {i}");
        published.push(
            queue
                .publish(stream, payload.as_bytes(), &Headers::new())
                .await
                .expect("publish should succeed"),
        );
    }
    published
}

async fn consume(
    queue: &dyn Queue,
    stream: &str,
    group: &str,
    consumer: &str,
    max: usize,
    block: Duration,
) -> Vec<Delivery> {
    queue
        .consume(stream, group, consumer, max, block)
        .await
        .expect("consume should succeed")
}

async fn pending(queue: &dyn Queue, stream: &str, group: &str) -> u64 {
    queue
        .pending(stream, group)
        .await
        .expect("pending should succeed")
}

async fn ack(queue: &dyn Queue, stream: &str, group: &str, deliveries: &[Delivery]) {
    queue
        .ack(stream, group, &ids(deliveries))
        .await
        .expect("ack should succeed");
}

async fn trim(queue: &dyn Queue, stream: &str) -> u64 {
    queue.trim(stream).await.expect("trim should succeed")
}

async fn ensure_group(queue: &dyn Queue, stream: &str, group: &str) {
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
}

/// Creates `group` and reads (and acks) everything it is given: the messages the stream
/// still keeps, oldest first.
async fn read_as_new_group(queue: &dyn Queue, stream: &str, group: &str) -> Vec<String> {
    ensure_group(queue, stream, group).await;
    let mut seen = Vec::new();
    loop {
        let batch = consume(queue, stream, group, "reader", 100, Duration::ZERO).await;
        if batch.is_empty() {
            return seen;
        }
        ack(queue, stream, group, &batch).await;
        seen.extend(ids(&batch));
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).expect("a test count fits in u64")
}

/// publish → consume → ack: payload and headers round-trip exactly, ids are stable, acking
/// clears pending and acked messages never come back.
pub async fn check_round_trip_and_ack(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let (stream, group) = ("inbox:node-1", "agents");
    let binary: Vec<u8> = (0..=255u8).collect(); // NUL bytes and invalid UTF-8 included
    let sent_headers = headers(&[
        ("traceparent", TRACEPARENT),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("content-type", "application/x-protobuf"),
        ("note", "spaces, = signs and ünïcödé ✓"),
        ("empty", ""),
    ]);
    let first = queue
        .publish(stream, &binary, &sent_headers)
        .await
        .expect("publish should succeed");
    let second = queue
        .publish(stream, b"", &Headers::new())
        .await
        .expect("publish of an empty message should succeed");
    assert_ne!(first, second, "each message gets its own id");

    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
    let got = consume(queue, stream, group, "agent-a", 10, Duration::ZERO).await;
    assert_eq!(
        ids(&got),
        [first.clone(), second.clone()],
        "delivered in publish order"
    );
    assert_eq!(got[0].stream, stream);
    assert_eq!(
        got[0].payload.as_ref(),
        binary.as_slice(),
        "payload round-trips byte for byte"
    );
    assert_eq!(got[0].headers, sent_headers, "headers round-trip exactly");
    assert_eq!(got[0].delivery_count, 1);
    assert!(got[1].payload.is_empty());
    assert!(got[1].headers.is_empty());
    assert_eq!(pending(queue, stream, group).await, 2);

    queue
        .ack(stream, group, std::slice::from_ref(&first))
        .await
        .expect("ack should succeed");
    assert_eq!(
        pending(queue, stream, group).await,
        1,
        "ack removes from pending"
    );
    // Acking twice, acking unknown ids and acking nothing are all fine.
    queue
        .ack(
            stream,
            group,
            &[first.clone(), second.clone(), "1-1".to_owned()],
        )
        .await
        .expect("acking an already-acked or unknown id is not an error");
    queue
        .ack(stream, group, &[])
        .await
        .expect("acking no ids is not an error");
    assert_eq!(pending(queue, stream, group).await, 0);

    let malformed = queue.ack(stream, group, &["not-an-id".to_owned()]).await;
    assert!(
        matches!(&malformed, Err(QueueError::InvalidId { stream: s, id }) if s == stream && id == "not-an-id"),
        "a malformed id is InvalidId, got {malformed:?}"
    );

    tokio::time::sleep(PAST_VISIBILITY).await;
    let again = consume(queue, stream, group, "agent-b", 10, Duration::ZERO).await;
    assert!(
        again.is_empty(),
        "acked messages are never redelivered, got {again:?}"
    );
}

/// Two groups on one stream each get every message; acking in one leaves the other alone.
pub async fn check_groups_each_get_every_message(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let stream = "events";
    for group in ["audit", "results"] {
        queue
            .ensure_group(stream, group)
            .await
            .expect("ensure_group should succeed");
    }
    let published = publish_n(queue, stream, 5).await;

    let audit = consume(queue, stream, "audit", "worker", 10, Duration::ZERO).await;
    let results = consume(queue, stream, "results", "worker", 10, Duration::ZERO).await;
    assert_eq!(ids(&audit), published, "group audit gets every message");
    assert_eq!(ids(&results), published, "group results gets every message");

    ack(queue, stream, "audit", &audit).await;
    assert_eq!(pending(queue, stream, "audit").await, 0);
    assert_eq!(
        pending(queue, stream, "results").await,
        5,
        "acking in one group does not ack in another"
    );
}

/// Consumers of one group share the messages: each goes to exactly one of them.
pub async fn check_consumers_share_without_duplicates(queue: Arc<dyn Queue>) {
    let (stream, group) = ("results", "collectors");
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
    let published = publish_n(queue.as_ref(), stream, 10).await;

    let a = consume(queue.as_ref(), stream, group, "a", 4, Duration::ZERO).await;
    let b = consume(queue.as_ref(), stream, group, "b", 10, Duration::ZERO).await;
    let a_more = consume(queue.as_ref(), stream, group, "a", 10, Duration::ZERO).await;
    assert_eq!(a.len(), 4, "max is respected");
    assert_eq!(b.len(), 6, "the second consumer gets the rest");
    assert!(a_more.is_empty(), "nothing is left for a, got {a_more:?}");
    let mut all: Vec<String> = ids(&a).into_iter().chain(ids(&b)).collect();
    all.sort();
    let mut expected = published;
    expected.sort();
    assert_eq!(all, expected, "every message exactly once across the group");
    ack(queue.as_ref(), stream, group, &a).await;
    ack(queue.as_ref(), stream, group, &b).await;

    // The same, with consumers racing each other.
    let published: BTreeSet<String> = publish_n(queue.as_ref(), stream, 40)
        .await
        .into_iter()
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let consumer = format!("racer-{worker}");
                let mut seen = Vec::new();
                loop {
                    let batch = consume(
                        queue.as_ref(),
                        stream,
                        group,
                        &consumer,
                        3,
                        Duration::from_millis(100),
                    )
                    .await;
                    if batch.is_empty() {
                        return seen;
                    }
                    ack(queue.as_ref(), stream, group, &batch).await;
                    seen.extend(ids(&batch));
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for worker in workers {
        seen.extend(worker.await.expect("consumer task should not panic"));
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no message went to two consumers");
    assert_eq!(
        unique, published,
        "racing consumers together got every message"
    );
    assert_eq!(pending(queue.as_ref(), stream, group).await, 0);
}

/// A consumer that takes a message and dies: after the visibility timeout the message goes
/// to another consumer with the same id and delivery_count 2, even while that consumer is
/// blocked waiting; expired messages come before new ones; acking then clears it.
pub async fn check_redelivery_after_visibility_timeout(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let (stream, group) = ("inbox:node-2", "agents");
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
    let sent_headers = headers(&[("traceparent", TRACEPARENT)]);
    let id = queue
        .publish(stream, b"run command", &sent_headers)
        .await
        .expect("publish should succeed");

    let doomed = consume(queue, stream, group, "doomed", 1, Duration::ZERO).await;
    assert_eq!(ids(&doomed), [id.as_str()]);
    assert_eq!(doomed[0].delivery_count, 1);
    let too_early = consume(queue, stream, group, "survivor", 1, Duration::ZERO).await;
    assert!(
        too_early.is_empty(),
        "not redelivered before the visibility timeout, got {too_early:?}"
    );

    let redelivered = consume(queue, stream, group, "survivor", 1, REDELIVERY_BLOCK).await;
    assert_eq!(
        ids(&redelivered),
        [id.as_str()],
        "redelivered to the waiting consumer"
    );
    assert_eq!(redelivered[0].delivery_count, 2);
    assert_eq!(redelivered[0].payload.as_ref(), b"run command");
    assert_eq!(redelivered[0].headers, sent_headers);
    assert_eq!(pending(queue, stream, group).await, 1);
    ack(queue, stream, group, &redelivered).await;
    assert_eq!(
        pending(queue, stream, group).await,
        0,
        "acking the redelivery clears it"
    );

    // Expired messages are handed out before new ones.
    let expiring = queue
        .publish(stream, b"second", &Headers::new())
        .await
        .expect("publish should succeed");
    let dies_again = consume(queue, stream, group, "doomed-2", 1, Duration::ZERO).await;
    assert_eq!(ids(&dies_again), [expiring.as_str()]);
    let fresh = queue
        .publish(stream, b"third", &Headers::new())
        .await
        .expect("publish should succeed");
    tokio::time::sleep(PAST_VISIBILITY).await;
    let both = consume(queue, stream, group, "survivor", 10, Duration::ZERO).await;
    assert_eq!(
        ids(&both),
        [expiring, fresh],
        "the expired message first, then the new one"
    );
    assert_eq!(
        both.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        [2, 1]
    );
    ack(queue, stream, group, &both).await;
    assert_eq!(pending(queue, stream, group).await, 0);
    let nothing = consume(queue, stream, group, "survivor", 10, Duration::ZERO).await;
    assert!(
        nothing.is_empty(),
        "the first message did not come back, got {nothing:?}"
    );
}

/// With max_deliveries 3, a message never acked is delivered three times, then moves to the
/// dead-letter stream with its payload and its origin in headers, and is gone from the group.
pub async fn check_dead_letter_after_max_deliveries(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let (stream, group) = ("inbox:node-3", "agents");
    assert_eq!(
        options().max_deliveries,
        3,
        "this check assumes three deliveries"
    );
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
    let sent_headers = headers(&[("traceparent", TRACEPARENT)]);
    let poison = queue
        .publish(stream, b"\x00poison\xff", &sent_headers)
        .await
        .expect("publish should succeed");
    let healthy = queue
        .publish(stream, b"fine", &Headers::new())
        .await
        .expect("publish should succeed");
    assert!(
        queue
            .dead_letters(stream, 10)
            .await
            .expect("dead_letters should succeed")
            .is_empty(),
        "no dead letters before any failure"
    );

    let first = consume(queue, stream, group, "c1", 10, Duration::ZERO).await;
    assert_eq!(ids(&first), [poison.clone(), healthy.clone()]);
    ack(queue, stream, group, &first[1..]).await;
    for (consumer, expected_count) in [("c2", 2), ("c3", 3)] {
        let again = consume(queue, stream, group, consumer, 10, REDELIVERY_BLOCK).await;
        assert_eq!(ids(&again), [poison.as_str()], "delivery {expected_count}");
        assert_eq!(again[0].delivery_count, expected_count);
    }
    let after_limit = consume(queue, stream, group, "c4", 10, PAST_VISIBILITY).await;
    assert!(
        after_limit.is_empty(),
        "no fourth delivery with max_deliveries 3, got {after_limit:?}"
    );
    assert_eq!(
        pending(queue, stream, group).await,
        0,
        "dead letters are acked"
    );

    let dead = queue
        .dead_letters(stream, 10)
        .await
        .expect("dead_letters should succeed");
    assert_eq!(
        dead.len(),
        1,
        "exactly the poison message is dead, got {dead:?}"
    );
    let letter = &dead[0];
    assert_eq!(letter.stream, format!("{stream}:dead"));
    assert_eq!(letter.payload.as_ref(), b"\x00poison\xff", "payload intact");
    assert_eq!(
        letter.headers.get("traceparent").map(String::as_str),
        Some(TRACEPARENT)
    );
    assert_eq!(
        letter.headers.get(DEAD_LETTER_ORIGINAL_ID_HEADER),
        Some(&poison),
        "original id recorded"
    );
    assert_eq!(
        letter
            .headers
            .get(DEAD_LETTER_GROUP_HEADER)
            .map(String::as_str),
        Some(group)
    );
    assert_eq!(
        letter
            .headers
            .get(DEAD_LETTER_DELIVERIES_HEADER)
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        letter.delivery_count, 0,
        "reading a dead letter is not a delivery"
    );

    tokio::time::sleep(PAST_VISIBILITY).await;
    let later = consume(queue, stream, group, "c5", 10, Duration::ZERO).await;
    assert!(
        later.is_empty(),
        "a dead letter is never delivered again, got {later:?}"
    );
    assert_eq!(
        queue
            .dead_letters(stream, 10)
            .await
            .expect("dead_letters should succeed")
            .len(),
        1,
        "dead-lettered once only"
    );
    assert!(
        queue
            .dead_letters("inbox:other", 10)
            .await
            .expect("dead_letters of an unknown stream should succeed")
            .is_empty()
    );
}

/// Messages published before the group existed are delivered; `ensure_group` is idempotent
/// and does not rewind a group; a group created later starts from the beginning too.
pub async fn check_messages_before_group_are_delivered(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let stream = "inbox:node-4";
    let published = publish_n(queue, stream, 3).await;

    queue
        .ensure_group(stream, "agents")
        .await
        .expect("ensure_group should succeed");
    let got = consume(queue, stream, "agents", "a", 10, Duration::ZERO).await;
    assert_eq!(
        ids(&got),
        published,
        "nothing published before the group is lost"
    );
    ack(queue, stream, "agents", &got).await;

    queue
        .ensure_group(stream, "agents")
        .await
        .expect("ensure_group on an existing group should succeed");
    let again = consume(queue, stream, "agents", "a", 10, Duration::ZERO).await;
    assert!(
        again.is_empty(),
        "ensure_group does not rewind a group, got {again:?}"
    );

    queue
        .ensure_group(stream, "late")
        .await
        .expect("ensure_group should succeed");
    let late = consume(queue, stream, "late", "a", 10, Duration::ZERO).await;
    assert_eq!(
        ids(&late),
        published,
        "a late group reads from the beginning"
    );
}

/// A blocked consumer is woken by a publish rather than sleeping out its whole block.
pub async fn check_blocking_consume_wakes_on_publish(queue: Arc<dyn Queue>) {
    let (stream, group) = ("inbox:node-5", "agents");
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");
    let block = Duration::from_secs(5);
    let waiter = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = consume(queue.as_ref(), stream, group, "waiter", 10, block).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = queue
        .publish(stream, b"wake up", &Headers::new())
        .await
        .expect("publish should succeed");
    let (got, waited) = waiter.await.expect("consumer task should not panic");
    assert_eq!(ids(&got), [id]);
    // Coarse on purpose: the point is "woken", not "fast".
    assert!(
        waited < block - Duration::from_secs(1),
        "consume slept out its block ({waited:?})"
    );

    let started = Instant::now();
    let empty = consume(
        queue.as_ref(),
        stream,
        group,
        "waiter",
        10,
        Duration::from_millis(200),
    )
    .await;
    assert!(empty.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "an empty consume waits for its block"
    );
}

/// Consuming or counting in a group that was never created fails with GroupNotFound; acking
/// there and reading dead letters of an unknown stream are harmless; max 0 returns nothing.
pub async fn check_missing_groups_and_empty_reads(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    for stream in ["never-published", "published"] {
        if stream == "published" {
            queue
                .publish(stream, b"x", &Headers::new())
                .await
                .expect("publish should succeed");
        }
        let consumed = queue
            .consume(stream, "ghosts", "c", 10, Duration::ZERO)
            .await;
        assert!(
            matches!(&consumed, Err(QueueError::GroupNotFound { stream: s, group }) if s == stream && group == "ghosts"),
            "consume without ensure_group on {stream}: {consumed:?}"
        );
        let counted = queue.pending(stream, "ghosts").await;
        assert!(
            matches!(&counted, Err(QueueError::GroupNotFound { .. })),
            "pending without ensure_group on {stream}: {counted:?}"
        );
        queue
            .ack(stream, "ghosts", &["1-1".to_owned()])
            .await
            .expect("acking in a missing group is not an error");
    }
    assert_eq!(
        trim(queue, "never-published").await,
        0,
        "trimming an unknown stream removes nothing"
    );
    let err = queue
        .consume("published", "ghosts", "c", 1, Duration::ZERO)
        .await
        .expect_err("the group does not exist");
    assert_eq!(
        err.to_string(),
        "stream published: consumer group ghosts does not exist"
    );

    queue
        .ensure_group("published", "present")
        .await
        .expect("ensure_group should succeed");
    let none = consume(
        queue,
        "published",
        "present",
        "c",
        0,
        Duration::from_secs(5),
    )
    .await;
    assert!(none.is_empty(), "max 0 returns nothing at once");
    assert_eq!(
        pending(queue, "published", "present").await,
        0,
        "max 0 delivers nothing"
    );
}

/// Invalid stream, group and consumer names are rejected with InvalidName on every operation.
pub async fn check_invalid_names_are_rejected(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let too_long = "s".repeat(201);
    let bad_names = [
        "",
        "with space",
        "a/b",
        "glob*",
        "new\nline",
        "ünï",
        too_long.as_str(),
    ];
    let is_invalid = |result: Result<(), QueueError>, kind: NameKind, name: &str| {
        assert!(
            matches!(&result, Err(QueueError::InvalidName { kind: k, name: n, .. }) if *k == kind && n == name),
            "{kind} name {name:?} should be rejected, got {result:?}"
        );
    };
    let ok = Duration::ZERO;
    for bad in bad_names {
        let no_headers = Headers::new();
        is_invalid(
            queue.publish(bad, b"x", &no_headers).await.map(drop),
            NameKind::Stream,
            bad,
        );
        is_invalid(queue.ensure_group(bad, "g").await, NameKind::Stream, bad);
        is_invalid(
            queue.consume(bad, "g", "c", 1, ok).await.map(drop),
            NameKind::Stream,
            bad,
        );
        is_invalid(queue.ack(bad, "g", &[]).await, NameKind::Stream, bad);
        is_invalid(
            queue.pending(bad, "g").await.map(drop),
            NameKind::Stream,
            bad,
        );
        is_invalid(
            queue.dead_letters(bad, 1).await.map(drop),
            NameKind::Stream,
            bad,
        );
        is_invalid(queue.trim(bad).await.map(drop), NameKind::Stream, bad);

        is_invalid(queue.ensure_group("s", bad).await, NameKind::Group, bad);
        is_invalid(
            queue.consume("s", bad, "c", 1, ok).await.map(drop),
            NameKind::Group,
            bad,
        );
        is_invalid(queue.ack("s", bad, &[]).await, NameKind::Group, bad);
        is_invalid(
            queue.pending("s", bad).await.map(drop),
            NameKind::Group,
            bad,
        );

        is_invalid(
            queue.consume("s", "g", bad, 1, ok).await.map(drop),
            NameKind::Consumer,
            bad,
        );
    }
    let longest = "s".repeat(200);
    queue
        .publish(&longest, b"x", &Headers::new())
        .await
        .expect("a 200-character stream name is valid");
}

/// Once every group has acked, trim keeps the newest `max_retained` messages and removes
/// the older ones; messages not yet delivered, or delivered and pending, are not removed;
/// a group created after the trim reads every kept message; the old group is not rewound.
pub async fn check_trim_removes_acknowledged_messages(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let (stream, group) = ("events:trim-acked", "audit");
    ensure_group(queue, stream, group).await;
    let published = publish_n(queue, stream, 10).await;
    assert_eq!(
        trim(queue, stream).await,
        0,
        "messages not yet delivered are not trimmed"
    );

    let got = consume(queue, stream, group, "a", 10, Duration::ZERO).await;
    assert_eq!(ids(&got), published);
    assert_eq!(
        trim(queue, stream).await,
        0,
        "pending messages are not trimmed"
    );

    ack(queue, stream, group, &got).await;
    assert_eq!(
        trim(queue, stream).await,
        10 - MAX_RETAINED,
        "acknowledged messages beyond max_retained are trimmed"
    );
    assert_eq!(
        trim(queue, stream).await,
        0,
        "a second trim removes nothing"
    );

    let kept = read_as_new_group(queue, stream, "late").await;
    assert_eq!(
        kept,
        published[6..],
        "a group created after trimming reads every kept message, the newest ones"
    );

    let next = queue
        .publish(stream, b"after the trim", &Headers::new())
        .await
        .expect("publish should succeed");
    let more = consume(queue, stream, group, "a", 10, Duration::ZERO).await;
    assert_eq!(ids(&more), [next], "the trimmed group goes on where it was");
}

/// A message still pending in one group survives a trim that other groups would allow, and
/// so does everything after it; it is redelivered intact after its visibility timeout.
pub async fn check_trim_keeps_messages_pending_in_any_group(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let stream = "events:trim-pending";
    for group in ["fast", "slow"] {
        ensure_group(queue, stream, group).await;
    }
    let published = publish_n(queue, stream, 10).await;
    let fast = consume(queue, stream, "fast", "f", 10, Duration::ZERO).await;
    ack(queue, stream, "fast", &fast).await;
    let slow = consume(queue, stream, "slow", "s", 10, Duration::ZERO).await;
    assert_eq!(ids(&slow), published);
    let (unacked, acked): (Vec<Delivery>, Vec<Delivery>) = slow
        .into_iter()
        .partition(|d| d.id == published[2] || d.id == published[7]);
    ack(queue, stream, "slow", &acked).await;

    assert_eq!(
        trim(queue, stream).await,
        2,
        "only the messages before the oldest pending one are trimmed"
    );
    assert_eq!(pending(queue, stream, "slow").await, 2);
    assert_eq!(
        read_as_new_group(queue, stream, "late").await,
        published[2..],
        "the pending message and everything after it are kept"
    );

    let redelivered = consume(queue, stream, "slow", "s2", 10, REDELIVERY_BLOCK).await;
    assert_eq!(
        ids(&redelivered),
        ids(&unacked),
        "pending messages survive trimming and are redelivered"
    );
    assert_eq!(
        redelivered
            .iter()
            .map(|d| d.payload.as_ref())
            .collect::<Vec<_>>(),
        [b"message 2".as_slice(), b"message 7".as_slice()],
        "payloads intact"
    );
    ack(queue, stream, "slow", &redelivered).await;
    assert_eq!(
        trim(queue, stream).await,
        8 - MAX_RETAINED,
        "once acked by every group they are trimmed too"
    );
}

/// A group that has not read anything holds back trimming: it still gets every message,
/// and trimming follows as it acks.
pub async fn check_trim_waits_for_a_group_that_has_not_read(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let stream = "events:trim-idle";
    for group in ["reader", "idle"] {
        ensure_group(queue, stream, group).await;
    }
    let published = publish_n(queue, stream, 10).await;
    let read = consume(queue, stream, "reader", "r", 10, Duration::ZERO).await;
    ack(queue, stream, "reader", &read).await;
    assert_eq!(
        trim(queue, stream).await,
        0,
        "a group that has not read holds back trimming"
    );

    let idle = consume(queue, stream, "idle", "i", 10, Duration::ZERO).await;
    assert_eq!(
        ids(&idle),
        published,
        "the idle group still gets every message"
    );
    ack(queue, stream, "idle", &idle[..5]).await;
    assert_eq!(
        trim(queue, stream).await,
        5,
        "the messages both groups acked are trimmed"
    );
    ack(queue, stream, "idle", &idle[5..]).await;
    assert_eq!(
        trim(queue, stream).await,
        5 - MAX_RETAINED,
        "then down to max_retained"
    );
}

/// A stream without groups keeps its newest `max_retained` messages, which a group created
/// afterwards reads.
pub async fn check_trim_of_a_stream_without_groups(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let stream = "events:trim-no-groups";
    let published = publish_n(queue, stream, 10).await;
    assert_eq!(trim(queue, stream).await, 10 - MAX_RETAINED);
    assert_eq!(
        read_as_new_group(queue, stream, "late").await,
        published[6..],
        "a group created after trimming reads the newest messages"
    );
}

/// Dead letters are kept for operators, but bounded by the same retention: trimming keeps
/// the newest `max_retained` of them.
pub async fn check_dead_letters_are_bounded(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let (stream, group) = ("inbox:trim-dead", "agents");
    ensure_group(queue, stream, group).await;
    let published = publish_n(queue, stream, 7).await;
    // Never ack: three deliveries each, then every message is dead.
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut dead = Vec::new();
    while dead.len() < published.len() && Instant::now() < give_up {
        consume(queue, stream, group, "doomed", 100, REDELIVERY_BLOCK).await;
        dead = queue
            .dead_letters(stream, 100)
            .await
            .expect("dead_letters should succeed");
    }
    assert_eq!(dead.len(), published.len(), "every message is dead");

    assert_eq!(
        trim(queue, stream).await,
        2 * (7 - MAX_RETAINED),
        "trim bounds both the stream (all dead letters are acked) and its dead letters"
    );
    let kept = queue
        .dead_letters(stream, 100)
        .await
        .expect("dead_letters should succeed");
    assert_eq!(
        ids(&kept),
        ids(&dead[3..]),
        "the newest dead letters are kept"
    );
    assert_eq!(
        kept.iter()
            .map(|letter| letter.headers.get(DEAD_LETTER_ORIGINAL_ID_HEADER))
            .collect::<Vec<_>>(),
        dead[3..]
            .iter()
            .map(|letter| letter.headers.get(DEAD_LETTER_ORIGINAL_ID_HEADER))
            .collect::<Vec<_>>(),
        "kept dead letters are intact"
    );
}

/// Without anyone calling `trim`, a stream stays within `max_retained` plus
/// [`AUTO_TRIM_INTERVAL`] messages, with or without groups, and keeps the newest.
pub async fn check_streams_trim_themselves(queue: Arc<dyn Queue>) {
    let queue = queue.as_ref();
    let rounds = usize::try_from(3 * AUTO_TRIM_INTERVAL).expect("a small count fits");
    let bound = MAX_RETAINED + AUTO_TRIM_INTERVAL;

    let (stream, group) = ("events:auto-trim", "worker");
    ensure_group(queue, stream, group).await;
    let mut published = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let payload = format!("message {i}");
        published.push(
            queue
                .publish(stream, payload.as_bytes(), &Headers::new())
                .await
                .expect("publish should succeed"),
        );
        let got = consume(queue, stream, group, "w", 1, Duration::ZERO).await;
        ack(queue, stream, group, &got).await;
    }
    let kept = read_as_new_group(queue, stream, "late").await;
    assert!(
        count(kept.len()) <= bound,
        "an acked stream trims itself to at most {bound}, kept {}",
        kept.len()
    );
    assert_eq!(
        kept,
        published[published.len() - kept.len()..],
        "the newest messages are kept"
    );

    let stream = "events:auto-trim-no-groups";
    let published = publish_n(queue, stream, rounds).await;
    let kept = read_as_new_group(queue, stream, "late").await;
    assert!(
        count(kept.len()) <= bound,
        "a stream without groups trims itself to at most {bound}, kept {}",
        kept.len()
    );
    assert_eq!(
        kept,
        published[published.len() - kept.len()..],
        "the newest messages are kept"
    );
}
